//! The hash-grid table: L levels of T_l entries of F features, stored
//! level after level, and the checks every table passes before any work.

use crate::{Error, Result};

/// Most levels a table may have.
pub const MAX_LEVELS: usize = 64;
/// Most features per entry.
pub const MAX_FEATURES: usize = 64;

/// The element type of the table as read (and written back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (what tiny-cuda-nn trains in).
    F16,
}

impl Dtype {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

/// A multiresolution hash-grid table.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Entries per level, T_l.
    pub levels: Vec<usize>,
    /// Features per entry, F.
    pub features: usize,
    /// The dtype of the input, kept for the output.
    pub dtype: Dtype,
    /// The array's shape as read: [L, T, F], [Σ T_l, F] or [Σ T_l · F].
    pub shape: Vec<usize>,
    /// Σ T_l · F values, level after level, entry after entry.
    pub data: Vec<f32>,
}

impl Grid {
    /// Checks and builds a table from an array of `shape` and optional
    /// level sizes (needed unless the shape is [L, T, F]; `features` is
    /// needed for a 1-D array only).
    pub fn from_array(
        shape: &[usize],
        data: Vec<f32>,
        dtype: Dtype,
        level_sizes: Option<&[usize]>,
        features: Option<usize>,
    ) -> Result<Grid> {
        let total: usize = shape.iter().product();
        if total != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} holds {total} values, the data has {}",
                data.len()
            )));
        }
        let (levels, f) = match (shape, level_sizes) {
            ([l, t, f], sizes) => {
                if let Some(sizes) = sizes
                    && sizes != vec![*t; *l].as_slice()
                {
                    return Err(Error::Shape(format!(
                        "level sizes {sizes:?} disagree with the [{l}, {t}, {f}] table; give them only for a [N, F] or flat array"
                    )));
                }
                if features.is_some_and(|x| x != *f) {
                    return Err(Error::Shape(format!(
                        "--features {} disagrees with the table's F = {f}",
                        features.unwrap_or(0)
                    )));
                }
                (vec![*t; *l], *f)
            }
            ([n, f], sizes) => {
                if features.is_some_and(|x| x != *f) {
                    return Err(Error::Shape(format!(
                        "--features {} disagrees with the table's F = {f}",
                        features.unwrap_or(0)
                    )));
                }
                (sizes.map_or_else(|| vec![*n], <[usize]>::to_vec), *f)
            }
            ([n], sizes) => {
                let f = features.unwrap_or(2);
                if f == 0 || !n.is_multiple_of(f) {
                    return Err(Error::Shape(format!(
                        "a flat array of {n} values does not split into entries of F = {f} features"
                    )));
                }
                (sizes.map_or_else(|| vec![n / f], <[usize]>::to_vec), f)
            }
            _ => {
                return Err(Error::Shape(format!(
                    "expected a table [L, T, F], [N, F] with level sizes, or a flat [N·F]; found rank {} {shape:?}",
                    shape.len()
                )));
            }
        };
        let grid = Grid {
            levels,
            features: f,
            dtype,
            shape: shape.to_vec(),
            data,
        };
        grid.validate()?;
        Ok(grid)
    }

    /// Checks sizes and values: 1..=64 levels, 1..=64 features, level sizes
    /// that add up to the data, every value finite.
    pub fn validate(&self) -> Result<()> {
        let f = self.features;
        if !(1..=MAX_FEATURES).contains(&f) {
            return Err(Error::Shape(format!(
                "F = {f} features per entry; expected 1..={MAX_FEATURES}"
            )));
        }
        if self.levels.is_empty() || self.levels.len() > MAX_LEVELS {
            return Err(Error::Shape(format!(
                "{} levels; expected 1..={MAX_LEVELS}",
                self.levels.len()
            )));
        }
        if let Some(l) = self.levels.iter().position(|&t| t == 0) {
            return Err(Error::Shape(format!("level {l} has no entries")));
        }
        let entries = self
            .levels
            .iter()
            .try_fold(0usize, |a, &t| a.checked_add(t))
            .ok_or_else(|| Error::Shape("level sizes overflow".into()))?;
        if entries.checked_mul(f) != Some(self.data.len()) {
            return Err(Error::Shape(format!(
                "level sizes add up to {entries} entries × F = {f}, the table has {} values ({} entries)",
                self.data.len(),
                self.data.len() as f64 / f as f64
            )));
        }
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                row: i / f,
                col: i % f,
                value: self.data[i],
            });
        }
        Ok(())
    }

    /// Number of levels L.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Total entries Σ T_l.
    pub fn entries(&self) -> usize {
        self.levels.iter().sum()
    }

    /// Total features Σ T_l · F.
    pub fn values(&self) -> usize {
        self.data.len()
    }

    /// The first entry of each level, and the end.
    pub fn level_starts(&self) -> Vec<usize> {
        let mut at = 0;
        let mut s: Vec<usize> = self
            .levels
            .iter()
            .map(|&t| {
                let o = at;
                at += t;
                o
            })
            .collect();
        s.push(at);
        s
    }

    /// The values of level `l`.
    pub fn level(&self, l: usize) -> &[f32] {
        let s = self.level_starts();
        &self.data[s[l] * self.features..s[l + 1] * self.features]
    }

    /// The same table with other values (a reconstruction).
    pub fn with_data(&self, data: Vec<f32>) -> Result<Grid> {
        let g = Grid {
            data,
            ..self.clone_meta()
        };
        g.validate()?;
        Ok(g)
    }

    fn clone_meta(&self) -> Grid {
        Grid {
            levels: self.levels.clone(),
            features: self.features,
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: Vec::new(),
        }
    }

    /// The size of the table as f16, in bytes: the reference of every ratio.
    pub fn f16_bytes(&self) -> u64 {
        2 * self.data.len() as u64
    }
}

/// Feature NMSE: Σ (x − x̂)² / Σ x², in f64.
pub fn nmse(x: &[f32], y: &[f32]) -> f64 {
    let (mut e, mut s) = (0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        e += ((a - b) as f64).powi(2);
        s += (a as f64).powi(2);
    }
    if s > 0.0 { e / s } else { 0.0 }
}

//! Grouping: g consecutive entries of one level form one vector of
//! d = g·F features, the unit TurboQuant rotates and quantises
//! (docs/THEORY.md §14 for why 2-wide entries need it). A level whose size
//! is not a multiple of g ends in a group padded with zeros; the padding is
//! never written back. Groups never span two levels.

use crate::grid::table::Grid;
use crate::{Error, Result};

/// Most entries per group: d = g·F stays within the dense rotation (1024).
pub const MAX_GROUP: usize = 512;

/// How a table splits into groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// Entries per group, g.
    pub entries: usize,
    /// Features per entry, F.
    pub features: usize,
    /// Groups in each level, ⌈T_l / g⌉.
    pub per_level: Vec<usize>,
}

impl Groups {
    /// The groups of `levels` (entries per level) at g entries of F.
    pub fn new(levels: &[usize], features: usize, g: usize) -> Result<Groups> {
        if !(1..=MAX_GROUP).contains(&g) || g * features < 2 || g * features > 1024 {
            return Err(Error::InvalidArgument(format!(
                "group of {g} entries × F = {features}: d = g·F must be in 2..=1024 (g at most {MAX_GROUP})"
            )));
        }
        Ok(Groups {
            entries: g,
            features,
            per_level: levels.iter().map(|t| t.div_ceil(g)).collect(),
        })
    }

    /// The vector dimension d = g·F.
    pub fn dim(&self) -> usize {
        self.entries * self.features
    }

    /// Total groups.
    pub fn count(&self) -> usize {
        self.per_level.iter().sum()
    }

    /// The level of every group.
    pub fn level_of(&self) -> Vec<u16> {
        self.per_level
            .iter()
            .enumerate()
            .flat_map(|(l, &n)| std::iter::repeat_n(l as u16, n))
            .collect()
    }

    /// Every group as a d-vector, level after level (count × d values).
    pub fn gather(&self, grid: &Grid) -> Vec<f32> {
        let d = self.dim();
        let mut out = vec![0f32; self.count() * d];
        let mut at = 0;
        for l in 0..grid.level_count() {
            let src = grid.level(l);
            out[at..at + src.len()].copy_from_slice(src);
            at += self.per_level[l] * d;
        }
        out
    }

    /// The inverse of [`Groups::gather`]: the table's values from the
    /// group vectors, the padding dropped.
    pub fn scatter(&self, levels: &[usize], vectors: &[f32]) -> Vec<f32> {
        let d = self.dim();
        let f = self.features;
        let mut out = Vec::with_capacity(levels.iter().sum::<usize>() * f);
        let mut at = 0;
        for (l, &t) in levels.iter().enumerate() {
            out.extend_from_slice(&vectors[at..at + t * f]);
            at += self.per_level[l] * d;
        }
        out
    }
}

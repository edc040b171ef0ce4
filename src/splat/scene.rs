//! The in-memory 3D Gaussian Splatting scene: one array per attribute
//! (structure of arrays), in the units the original 3DGS PLY stores.

/// Number of SH-rest coefficients per colour channel at degree `l`:
/// (l+1)² − 1, so 0, 3, 8, 15 for l = 0..=3.
pub const fn rest_per_channel(l: u8) -> usize {
    let n = l as usize + 1;
    n * n - 1
}

/// Dimension of the SH-rest vector at degree `l`: 3·((l+1)² − 1), so
/// 0, 9, 24, 45. This is the d the TurboQuant codec sees.
pub const fn rest_dim(l: u8) -> usize {
    3 * rest_per_channel(l)
}

/// The SH degree whose rest dimension is `dim`, if any.
pub fn degree_for_rest_dim(dim: usize) -> Option<u8> {
    (0..=3u8).find(|&l| rest_dim(l) == dim)
}

/// A scalar type a PLY property can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl ScalarType {
    /// Size in bytes.
    pub const fn size(self) -> usize {
        match self {
            ScalarType::I8 | ScalarType::U8 => 1,
            ScalarType::I16 | ScalarType::U16 => 2,
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::F64 => 8,
        }
    }

    /// The canonical PLY name (`char`, `uchar`, `short`, …, `float`, `double`).
    pub const fn ply_name(self) -> &'static str {
        match self {
            ScalarType::I8 => "char",
            ScalarType::U8 => "uchar",
            ScalarType::I16 => "short",
            ScalarType::U16 => "ushort",
            ScalarType::I32 => "int",
            ScalarType::U32 => "uint",
            ScalarType::F32 => "float",
            ScalarType::F64 => "double",
        }
    }

    /// Parses both PLY spellings (`float` and `float32`, `uchar` and `uint8`, …).
    pub fn from_ply_name(name: &str) -> Option<Self> {
        Some(match name {
            "char" | "int8" => ScalarType::I8,
            "uchar" | "uint8" => ScalarType::U8,
            "short" | "int16" => ScalarType::I16,
            "ushort" | "uint16" => ScalarType::U16,
            "int" | "int32" => ScalarType::I32,
            "uint" | "uint32" => ScalarType::U32,
            "float" | "float32" => ScalarType::F32,
            "double" | "float64" => ScalarType::F64,
            _ => return None,
        })
    }

    /// A stable one-byte code, used by the container to store extra
    /// properties (0..=7 in declaration order).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`ScalarType::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        use ScalarType::*;
        [I8, U8, I16, U16, I32, U32, F32, F64]
            .get(code as usize)
            .copied()
    }
}

/// One per-vertex property the 3DGS layout does not know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraProperty {
    pub name: String,
    pub ty: ScalarType,
}

/// Per-vertex properties outside the 3DGS layout, kept losslessly: the raw
/// values, converted to little-endian, one record of [`Extras::stride`]
/// bytes per Gaussian with the properties in declaration order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    pub properties: Vec<ExtraProperty>,
    pub data: Vec<u8>,
}

impl Extras {
    /// Bytes per Gaussian.
    pub fn stride(&self) -> usize {
        self.properties.iter().map(|p| p.ty.size()).sum()
    }
}

/// A 3D Gaussian Splatting scene.
///
/// Every attribute array has [`Scene::len`] entries. Values are exactly what
/// the 3DGS PLY stores: log scales, pre-sigmoid opacity, the raw
/// (unnormalised) quaternion `rot_0..3` = (w, x, y, z), DC colour as the SH
/// degree-0 coefficient.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scene {
    /// SH degree L in 0..=3.
    pub sh_degree: u8,
    /// `x y z`.
    pub positions: Vec<[f32; 3]>,
    /// `nx ny nz`, when the file had them.
    pub normals: Option<Vec<[f32; 3]>>,
    /// `f_dc_0..2`.
    pub dc: Vec<[f32; 3]>,
    /// `f_rest_*`: [`rest_dim`]`(sh_degree)` values per Gaussian, in the PLY's
    /// channel-major order (red's coefficients, then green's, then blue's).
    pub sh_rest: Vec<f32>,
    /// `opacity`, before the sigmoid.
    pub opacity: Vec<f32>,
    /// `scale_0..2`, natural log of the axis lengths.
    pub scales: Vec<[f32; 3]>,
    /// `rot_0..3` = (w, x, y, z), as stored.
    pub rotations: Vec<[f32; 4]>,
    /// Unknown per-vertex properties, kept losslessly.
    pub extras: Extras,
    /// Header comments (`comment …` lines), kept through a round trip.
    pub comments: Vec<String>,
}

impl Scene {
    /// Number of Gaussians.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the scene has no Gaussians.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// SH-rest dimension d = 3·((L+1)² − 1).
    pub fn rest_dim(&self) -> usize {
        rest_dim(self.sh_degree)
    }

    /// The SH-rest vector of Gaussian `i` (PLY order).
    pub fn rest(&self, i: usize) -> &[f32] {
        let d = self.rest_dim();
        &self.sh_rest[i * d..(i + 1) * d]
    }

    /// Checks that every array has the same length and the SH layout fits the
    /// degree. Returns a message naming the first inconsistent field.
    pub fn check_consistent(&self) -> Result<(), String> {
        let n = self.len();
        if self.sh_degree > 3 {
            return Err(format!("sh_degree {} is above 3", self.sh_degree));
        }
        let lens = [
            ("dc", self.dc.len()),
            ("opacity", self.opacity.len()),
            ("scales", self.scales.len()),
            ("rotations", self.rotations.len()),
        ];
        for (name, len) in lens {
            if len != n {
                return Err(format!("{name} has {len} entries, positions has {n}"));
            }
        }
        if let Some(nrm) = &self.normals
            && nrm.len() != n
        {
            return Err(format!(
                "normals has {} entries, positions has {n}",
                nrm.len()
            ));
        }
        if self.sh_rest.len() != n * self.rest_dim() {
            return Err(format!(
                "sh_rest has {} values, expected {n} × {}",
                self.sh_rest.len(),
                self.rest_dim()
            ));
        }
        if self.extras.data.len() != n * self.extras.stride() {
            return Err(format!(
                "extras has {} bytes, expected {n} × {}",
                self.extras.data.len(),
                self.extras.stride()
            ));
        }
        Ok(())
    }

    /// The same scene at a lower SH degree `l` ≤ the current one. Each
    /// channel keeps its first (l+1)² − 1 coefficients, the bands below l.
    pub fn truncate_sh(&mut self, l: u8) {
        if l >= self.sh_degree {
            return;
        }
        let (old_k, new_k) = (rest_per_channel(self.sh_degree), rest_per_channel(l));
        let (old_d, new_d) = (3 * old_k, 3 * new_k);
        let n = self.len();
        let mut out = Vec::with_capacity(n * new_d);
        for i in 0..n {
            let row = &self.sh_rest[i * old_d..(i + 1) * old_d];
            for c in 0..3 {
                out.extend_from_slice(&row[c * old_k..c * old_k + new_k]);
            }
        }
        self.sh_rest = out;
        self.sh_degree = l;
    }

    /// Keeps only the Gaussians for which `keep(i)` is true, in order.
    pub fn retain_indices(&mut self, keep: &[bool]) {
        assert_eq!(keep.len(), self.len(), "mask length");
        fn filt<T: Copy>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| *x)
                .collect()
        }
        let d = self.rest_dim();
        let stride = self.extras.stride();
        self.positions = filt(&self.positions, keep);
        self.normals = self.normals.as_ref().map(|v| filt(v, keep));
        self.dc = filt(&self.dc, keep);
        self.opacity = filt(&self.opacity, keep);
        self.scales = filt(&self.scales, keep);
        self.rotations = filt(&self.rotations, keep);
        let mut rest = Vec::with_capacity(self.positions.len() * d);
        let mut extra = Vec::with_capacity(self.positions.len() * stride);
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            rest.extend_from_slice(&self.sh_rest[i * d..(i + 1) * d]);
            extra.extend_from_slice(&self.extras.data[i * stride..(i + 1) * stride]);
        }
        self.sh_rest = rest;
        self.extras.data = extra;
    }
}

/// Logistic sigmoid, as 3DGS applies it to `opacity`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Whether a Gaussian with opacity logit `logit` survives pruning at
/// `threshold` (none: every Gaussian does). The one place the prune test
/// `sigmoid(o) ≥ τ` is written.
pub fn survives_prune(logit: f32, threshold: Option<f32>) -> bool {
    threshold.is_none_or(|t| sigmoid(logit) >= t)
}

/// The SH degree-0 constant of the reference rasteriser, Y₀₀ = 1/(2√π).
pub const SH_C0: f32 = 0.282_094_8;

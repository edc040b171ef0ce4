//! The per-vector scale: what it is ([`ScaleMode`]), how it is stored
//! ([`ScaleFormat`]), and the stored scales of a batch ([`Scales`]).

use half::f16;

use crate::{Error, Result};

/// What the stored per-vector scale is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleMode {
    /// s = ‖x‖. The error is exactly the theory's ‖x‖²·‖u − û‖².
    Norm,
    /// s = ⟨x, x̃_dir⟩ / ‖x̃_dir‖², the least-squares optimum along the
    /// decoded direction. Never worse than `Norm` and the default.
    LeastSquares,
}

impl ScaleMode {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScaleMode::Norm => "norm",
            ScaleMode::LeastSquares => "ls",
        }
    }
}

/// How the per-vector scale is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleFormat {
    /// IEEE binary32, 4 bytes per vector.
    F32,
    /// IEEE binary16, 2 bytes per vector.
    F16,
}

impl ScaleFormat {
    /// Bytes per stored scale.
    pub fn bytes(self) -> usize {
        match self {
            ScaleFormat::F32 => 4,
            ScaleFormat::F16 => 2,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScaleFormat::F32 => "f32",
            ScaleFormat::F16 => "f16",
        }
    }
}

/// The stored scales of N vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    /// One f32 per vector.
    F32(Vec<f32>),
    /// One f16 per vector.
    F16(Vec<f16>),
}

impl Scales {
    /// The number of scales.
    pub fn len(&self) -> usize {
        match self {
            Scales::F32(v) => v.len(),
            Scales::F16(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scale i as f32.
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Scales::F32(v) => v[i],
            Scales::F16(v) => v[i].to_f32(),
        }
    }

    /// The storage format.
    pub fn format(&self) -> ScaleFormat {
        match self {
            Scales::F32(_) => ScaleFormat::F32,
            Scales::F16(_) => ScaleFormat::F16,
        }
    }

    /// Little-endian bytes, as stored in files.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Scales::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Scales::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Parses little-endian bytes of the given format.
    pub fn from_le_bytes(format: ScaleFormat, bytes: &[u8]) -> Result<Scales> {
        if !bytes.len().is_multiple_of(format.bytes()) {
            return Err(Error::Shape(format!(
                "{} bytes are not a whole number of {} scales",
                bytes.len(),
                format.name()
            )));
        }
        Ok(match format {
            ScaleFormat::F32 => Scales::F32(
                bytes
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|c| f32::from_le_bytes(*c))
                    .collect(),
            ),
            ScaleFormat::F16 => Scales::F16(
                bytes
                    .as_chunks::<2>()
                    .0
                    .iter()
                    .map(|c| f16::from_le_bytes(*c))
                    .collect(),
            ),
        })
    }
}

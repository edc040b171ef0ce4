//! Key/value tensors in and out: safetensors files (any number of named
//! tensors) and `.npy` arrays (one tensor, named by the file stem), the
//! role of each tensor ([`Role`]: key, value, query or carried), how keys
//! and values pair up ([`assign`]), and the axis layouts that turn a tensor
//! into the `[layers][tokens][heads·head_dim]` rows the codec works on
//! ([`to_canonical`], and back with [`from_canonical`]).
//!
//! Inputs are mapped, not copied: a tensor's bytes are a view of the file
//! until they are converted. Float tensors (f32, f16, bf16) can be coded;
//! every other dtype is carried as raw bytes with its name and shape.

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::format::input::Input;
use crate::format::write_atomic;
use crate::{Error, Result};

mod layout;
mod npy;
mod roles;
mod st;

pub use layout::{Axis, Canonical, Layout, from_canonical, to_canonical};
pub use roles::{Assignment, Group, Role, RoleGlobs, assign, role_from_name};

/// The element type of a tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of a binary32).
    BF16,
    /// Any other safetensors dtype, by its safetensors name (`"I64"`,
    /// `"F64"`, `"BOOL"`, …): carried as raw bytes, never converted.
    Other(String),
}

impl Dtype {
    /// Whether values of this dtype can be converted to f32 and coded.
    pub fn is_float(&self) -> bool {
        !matches!(self, Dtype::Other(_))
    }

    /// The dtype's safetensors name.
    pub fn name(&self) -> &str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::Other(s) => s,
        }
    }

    /// The dtype of a safetensors name; names other than F32, F16 and BF16
    /// become [`Dtype::Other`] and must be a dtype safetensors knows.
    pub fn from_name(name: &str) -> Result<Dtype> {
        Ok(match name {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            other => {
                st::dtype(other)?;
                Dtype::Other(other.to_string())
            }
        })
    }

    /// Bits per element.
    pub fn bits(&self) -> Result<usize> {
        Ok(match self {
            Dtype::F32 => 32,
            Dtype::F16 | Dtype::BF16 => 16,
            Dtype::Other(s) => st::dtype(s)?.bitsize(),
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a tensor's bytes are: a view of the mapped (or read) input, or
/// bytes of its own.
#[derive(Clone)]
enum Data {
    Shared(Arc<Input>, Range<usize>),
    Owned(Vec<u8>),
}

/// One tensor: its name, dtype, shape and little-endian, row-major bytes.
#[derive(Clone)]
pub struct NamedTensor {
    /// The tensor's name (a safetensors key, or an `.npy` file's stem).
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// The shape, outermost axis first.
    pub shape: Vec<usize>,
    data: Data,
}

impl fmt::Debug for NamedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedTensor")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.bytes().len())
            .field("in_place", &self.in_place())
            .finish()
    }
}

impl PartialEq for NamedTensor {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.dtype == other.dtype
            && self.shape == other.shape
            && self.bytes() == other.bytes()
    }
}

/// The number of bytes `shape` of `dtype` takes, or an error naming the
/// tensor when it overflows or splits a byte.
fn byte_len(name: &str, dtype: &Dtype, shape: &[usize]) -> Result<usize> {
    let overflow = || Error::Shape(format!("tensor {name:?}: shape {shape:?} overflows"));
    let n = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(overflow)?;
    let bits = n.checked_mul(dtype.bits()?).ok_or_else(overflow)?;
    if bits % 8 != 0 {
        return Err(Error::Shape(format!(
            "tensor {name:?}: {n} elements of {dtype} do not fill whole bytes"
        )));
    }
    Ok(bits / 8)
}

impl NamedTensor {
    /// A tensor of its own bytes, which must be exactly what `dtype` and
    /// `shape` take.
    pub fn new(
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<NamedTensor> {
        let name = name.into();
        let need = byte_len(&name, &dtype, &shape)?;
        if bytes.len() != need {
            return Err(Error::Shape(format!(
                "tensor {name:?}: {dtype} {shape:?} takes {need} bytes, {} given",
                bytes.len()
            )));
        }
        Ok(NamedTensor {
            name,
            dtype,
            shape,
            data: Data::Owned(bytes),
        })
    }

    /// A view of `range` of an input (checked by the caller to hold exactly
    /// the tensor's bytes).
    pub(crate) fn shared(
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
        input: Arc<Input>,
        range: Range<usize>,
    ) -> NamedTensor {
        NamedTensor {
            name,
            dtype,
            shape,
            data: Data::Shared(input, range),
        }
    }

    /// The raw bytes: little-endian, row-major.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Shared(input, r) => input.get(r.clone()).unwrap_or(&[]),
            Data::Owned(v) => v,
        }
    }

    /// Whether the bytes are a view of the input file (no copy was made).
    pub fn in_place(&self) -> bool {
        matches!(&self.data, Data::Shared(input, _) if matches!(**input, Input::Mapped(..)))
    }

    /// The number of elements (0 for a shape whose product overflows,
    /// which only a shape with an empty axis can be once bytes match it).
    pub fn elements(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |a, &s| a.checked_mul(s))
            .unwrap_or(0)
    }

    /// An error unless the dtype is a float one, naming the tensor.
    pub(crate) fn require_float(&self) -> Result<()> {
        if self.dtype.is_float() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "tensor {:?} has dtype {}; keys, values and queries must be F32, F16 or BF16",
                self.name, self.dtype
            )))
        }
    }

    /// The values as f32 (exact for every F32, F16 and BF16 value).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.require_float()?;
        let mut out = vec![0f32; self.elements()];
        decode(&self.dtype, self.bytes(), 0, &mut out);
        Ok(out)
    }

    /// A tensor of `dtype` (F32, F16 or BF16) holding `values` rounded to
    /// the dtype, to nearest with ties to even. Finite values beyond the
    /// dtype's range saturate at its largest finite value (a
    /// reconstruction a little past an f16 input's range must not become
    /// Inf); NaN and ±Inf are refused.
    pub fn from_f32(
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        values: &[f32],
    ) -> Result<NamedTensor> {
        let name = name.into();
        let t = NamedTensor {
            name,
            dtype,
            shape,
            data: Data::Owned(Vec::new()),
        };
        t.require_float()?;
        if t.elements() != values.len() {
            return Err(Error::Shape(format!(
                "tensor {:?}: {} values do not fill shape {:?}",
                t.name,
                values.len(),
                t.shape
            )));
        }
        if let Some(i) = values.par_iter().position_first(|v| !v.is_finite()) {
            return Err(non_finite(&t.name, &t.shape, i, values[i]));
        }
        let bytes = encode(&t.dtype, values);
        NamedTensor::new(t.name, t.dtype, t.shape, bytes)
    }

    /// An error naming the tensor and the multi-index of its first NaN or
    /// infinity, if it has one. Non-float tensors have none.
    pub fn check_finite(&self) -> Result<()> {
        let b = self.bytes();
        let first = match self.dtype {
            Dtype::F32 => b.par_chunks_exact(4).position_first(|c| {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
            }),
            Dtype::F16 => b
                .par_chunks_exact(2)
                .position_first(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
            Dtype::BF16 => b
                .par_chunks_exact(2)
                .position_first(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
            Dtype::Other(_) => None,
        };
        match first {
            None => Ok(()),
            Some(i) => {
                let mut v = [0f32];
                decode(&self.dtype, b, i, &mut v);
                Err(non_finite(&self.name, &self.shape, i, v[0]))
            }
        }
    }
}

/// The multi-index of flat index `i` in `shape` (row-major).
pub(crate) fn multi_index(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &s) in shape.iter().enumerate().rev() {
        if s > 0 {
            idx[k] = i % s;
            i /= s;
        }
    }
    idx
}

fn non_finite(name: &str, shape: &[usize], i: usize, v: f32) -> Error {
    Error::InvalidArgument(format!(
        "tensor {name:?}: value {v} at index {:?} (shape {shape:?}) is not finite; NaN and ±Inf cannot be compressed",
        multi_index(shape, i)
    ))
}

/// Decodes `out.len()` elements of a float dtype starting at element
/// `start` of `bytes` (which the caller has checked hold them).
pub(crate) fn decode(dtype: &Dtype, bytes: &[u8], start: usize, out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            let b = &bytes[start * 4..(start + out.len()) * 4];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            let b = &bytes[start * 2..(start + out.len()) * 2];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            let b = &bytes[start * 2..(start + out.len()) * 2];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::Other(_) => {}
    }
}

/// Encodes finite f32 values to a float dtype, saturating at its range.
fn encode(dtype: &Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .par_iter()
            .map(|&v| f16::from_f32(v.clamp(f16::MIN.to_f32(), f16::MAX.to_f32())).to_le_bytes())
            .flatten_iter()
            .collect(),
        Dtype::BF16 => values
            .par_iter()
            .map(|&v| bf16::from_f32(v.clamp(bf16::MIN.to_f32(), bf16::MAX.to_f32())).to_le_bytes())
            .flatten_iter()
            .collect(),
        Dtype::Other(_) => Vec::new(),
    }
}

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A safetensors file: any number of named tensors and string metadata.
    Safetensors,
    /// A NumPy `.npy` array: one tensor.
    Npy,
}

impl FileKind {
    /// The kind a path names by its extension (`.safetensors` or `.npy`).
    pub fn from_path(path: &Path) -> Result<FileKind> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("safetensors") {
            Ok(FileKind::Safetensors)
        } else if ext.eq_ignore_ascii_case("npy") {
            Ok(FileKind::Npy)
        } else {
            Err(Error::InvalidArgument(format!(
                "{}: expected a .safetensors or .npy file",
                path.display()
            )))
        }
    }
}

/// The tensors of one file, in file order, and its metadata.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    /// The tensors (safetensors: in the order of their data in the file).
    pub tensors: Vec<NamedTensor>,
    /// The safetensors `__metadata__` string map, if the file had one;
    /// sorted, so that writing it is deterministic.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// The file these tensors view, which [`TensorFile::write`] refuses to
    /// replace.
    source: Option<PathBuf>,
}

impl TensorFile {
    /// Tensors not read from any file.
    pub fn new(tensors: Vec<NamedTensor>) -> TensorFile {
        TensorFile {
            tensors,
            metadata: None,
            source: None,
        }
    }

    /// Reads a `.safetensors` or `.npy` file (by extension). A regular file
    /// is memory-mapped and its tensors are views of it; only as many bytes
    /// as the header declares are read.
    pub fn read(path: &Path) -> Result<TensorFile> {
        let mut f = match FileKind::from_path(path)? {
            FileKind::Safetensors => st::read(path),
            FileKind::Npy => npy::read(path),
        }
        .map_err(|e| e.in_file(path))?;
        f.source = Some(path.to_path_buf());
        Ok(f)
    }

    /// Parses the bytes of a whole file as [`TensorFile::read`] does;
    /// `path` gives the kind (by extension), the `.npy` tensor's name and
    /// the name in messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<TensorFile> {
        let input = Arc::new(Input::Read(bytes.to_vec()));
        match FileKind::from_path(path)? {
            FileKind::Safetensors => st::parse(input, path),
            FileKind::Npy => npy::parse(input, path),
        }
        .map_err(|e| e.in_file(path))
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Writes the tensors to `path` as its extension says, atomically:
    /// nothing is written on failure. An `.npy` holds exactly one tensor
    /// (its name is not kept). Refuses to replace the file these tensors
    /// were read from. Returns the bytes written.
    pub fn write(&self, path: &Path) -> Result<u64> {
        self.write_as(path, FileKind::from_path(path)?)
    }

    /// [`TensorFile::write`] in the given format, whatever the extension
    /// (`path` may be `-` for standard output).
    pub fn write_as(&self, path: &Path, kind: FileKind) -> Result<u64> {
        if let Some(src) = &self.source {
            crate::format::check_distinct(path, &[src.as_path()])?;
        }
        let bytes = self.to_bytes_named(kind, path)?;
        write_atomic(path, |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(|e| Error::io(path, e))
        })
    }

    /// The bytes of the file [`TensorFile::write_as`] writes.
    pub fn to_bytes(&self, kind: FileKind) -> Result<Vec<u8>> {
        self.to_bytes_named(kind, Path::new("-"))
    }

    fn to_bytes_named(&self, kind: FileKind, path: &Path) -> Result<Vec<u8>> {
        match kind {
            FileKind::Safetensors => st::serialize(self, path),
            FileKind::Npy => npy::serialize(self, path),
        }
    }
}

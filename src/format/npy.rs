//! 2-D `.npy` arrays of f32 or f16, as the command line reads and writes them.

use std::io::Write;
use std::path::Path;

use half::f16;
use npyz::{DType, NpyFile, Order, WriterBuilder};
use rayon::prelude::*;

use crate::format::input::{Extent, Input, map_declared};
use crate::format::write_atomic;
use crate::{Error, Result};

/// A row-major [rows, cols] f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows N.
    pub rows: usize,
    /// Row length D.
    pub cols: usize,
    /// N·D values, row-major.
    pub data: Vec<f32>,
}

/// Reads a 2-D C-order `.npy` of f32 or f16 (either byte order) as f32.
/// Only as many bytes as the header declares are read.
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    open_matrix(path).map(MatrixData::into_matrix)
}

/// A matrix as [`open_matrix`] gives it: little-endian f32 data viewed in
/// the mapped file, anything else converted to f32.
pub struct MatrixData {
    /// Number of rows N.
    pub rows: usize,
    /// Row length D.
    pub cols: usize,
    values: Values,
}

enum Values {
    /// The file, and the byte range of its f32 data (aligned, little-endian).
    InPlace(Input, std::ops::Range<usize>),
    Owned(Vec<f32>),
}

impl MatrixData {
    /// The N·D values, row-major.
    pub fn values(&self) -> &[f32] {
        match &self.values {
            Values::InPlace(bytes, r) => bytemuck::cast_slice(&bytes[r.clone()]),
            Values::Owned(v) => v,
        }
    }

    /// Whether the values are a view of the file (no copy was made).
    pub fn in_place(&self) -> bool {
        matches!(self.values, Values::InPlace(..))
    }

    /// The values in memory of their own.
    pub fn into_matrix(self) -> Matrix {
        let data = match self.values {
            Values::Owned(v) => v,
            Values::InPlace(..) => self.values().to_vec(),
        };
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}

/// [`read_matrix`] without copies where the file allows: a regular file is
/// memory-mapped and little-endian f32 data (4-byte aligned in the file, as
/// NumPy's 64-byte header padding makes it) is used where it lies; f16 and
/// big-endian data are converted on the rayon pool. A pipe or device is
/// read as far as its header declares, as [`read_matrix`] always did.
pub fn open_matrix(path: &Path) -> Result<MatrixData> {
    let bytes = map_declared(path, |b| extent(b, path))?;
    let h = checked(&bytes, path)?;
    let range = h.data_start as usize..(h.data_start + h.data_len()) as usize;
    let view = matches!(bytes, Input::Mapped(..))
        && h.width == 4
        && h.little
        && cfg!(target_endian = "little")
        && bytemuck::try_cast_slice::<u8, f32>(&bytes[range.clone()]).is_ok();
    let values = if view {
        Values::InPlace(bytes, range)
    } else {
        Values::Owned(convert(&bytes[range], &h))
    };
    Ok(MatrixData {
        rows: h.rows as usize,
        cols: h.cols as usize,
        values,
    })
}

/// The data of a checked header as f32, in parallel.
fn convert(data: &[u8], h: &Header) -> Vec<f32> {
    match (h.width, h.little) {
        (4, true) => data
            .par_chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (4, false) => data
            .par_chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (_, true) => data
            .par_chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        (_, false) => data
            .par_chunks_exact(2)
            .map(|c| f16::from_be_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// The `.npy` magic string.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Longest header accepted: NumPy writes about a hundred bytes for a plain
/// array, padded to 64; only structured dtypes need more.
const MAX_HEADER: u64 = 4096;

/// A checked header: where the data starts, its shape and element width.
struct Header {
    data_start: u64,
    rows: u64,
    cols: u64,
    width: u64,
    little: bool,
}

impl Header {
    /// Bytes of data the shape declares (checked when parsed).
    fn data_len(&self) -> u64 {
        self.rows * self.cols * self.width
    }
}

/// How many bytes precede the header's text, and the text's length, or
/// `None` when `bytes` is too short to say.
pub(crate) fn preamble(bytes: &[u8], path: &Path) -> Result<Option<(u64, u64)>> {
    if bytes.len() < 10 {
        return Ok(None);
    }
    if &bytes[..6] != MAGIC {
        return Err(Error::format(
            path,
            "magic",
            "not a .npy file: it does not start with \"\\x93NUMPY\"",
        ));
    }
    let (start, text) = match bytes[6] {
        1 => (10, u64::from(u16::from_le_bytes([bytes[8], bytes[9]]))),
        2 | 3 if bytes.len() >= 12 => (
            12,
            u64::from(u32::from_le_bytes([
                bytes[8], bytes[9], bytes[10], bytes[11],
            ])),
        ),
        2 | 3 => return Ok(None),
        v => {
            return Err(Error::format(
                path,
                "version",
                format!("{v} is not a .npy version (1, 2 or 3)"),
            ));
        }
    };
    if text > MAX_HEADER {
        return Err(Error::format(
            path,
            "npy header",
            format!("declares {text} bytes of header; at most {MAX_HEADER} are accepted"),
        ));
    }
    Ok(Some((start, text)))
}

/// How long the file says it is, from the bytes read so far.
fn extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    let Some((start, text)) = preamble(bytes, path)? else {
        return Ok(Extent::Need(if bytes.len() < 10 { 10 } else { 12 }));
    };
    if (bytes.len() as u64) < start + text {
        return Ok(Extent::Need(start + text));
    }
    let h = parse_header(bytes, path)?;
    Ok(Extent::Total(h.data_start + h.data_len()))
}

/// One line from a parser's message, however many it had.
pub(crate) fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses and checks the header: a 2-D C-order array of f32 or f16 whose
/// size fits in memory. `bytes` need hold only the header.
fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    let Some((start, text)) = preamble(bytes, path)? else {
        return Err(bad(
            "npy header",
            format!("the file is {} bytes: truncated", bytes.len()),
        ));
    };
    // A plain array's header is one dict with one shape tuple. Nesting is
    // refused before npyz parses it: its parser takes minutes on a few
    // hundred bytes of nested brackets (found by the npy fuzz target).
    let Some(header) = bytes.get(start as usize..(start + text) as usize) else {
        return Err(bad(
            "npy header",
            format!(
                "declares {text} bytes of header, the file has {}: truncated",
                bytes.len()
            ),
        ));
    };
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    if count(b'[') > 0 || count(b'{') > 1 || count(b'(') > 1 {
        return Err(bad(
            "dtype",
            "structured or nested headers are not supported; expected a plain float32 or float16 array"
                .into(),
        ));
    }
    let npy = NpyFile::new(bytes).map_err(|e| bad("npy header", one_line(e)))?;
    let shape = npy.shape().to_vec();
    if shape.len() != 2 {
        return Err(bad(
            "shape",
            format!("expected a 2-D array [N, D], found shape {shape:?}"),
        ));
    }
    if npy.order() != Order::C {
        return Err(bad(
            "order",
            "Fortran-order arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let DType::Plain(ts) = npy.dtype() else {
        return Err(bad(
            "dtype",
            "structured arrays are not supported; expected float32 or float16".into(),
        ));
    };
    let ty = ts.to_string();
    let width = match ty.get(1..) {
        Some("f4") => 4u64,
        Some("f2") => 2,
        _ => {
            return Err(bad(
                "dtype",
                format!("expected float32 or float16, found {ty}"),
            ));
        }
    };
    let overflow = || bad("shape", format!("{rows} × {cols} overflows"));
    let count = rows.checked_mul(cols).ok_or_else(overflow)?;
    count.checked_mul(width).ok_or_else(overflow)?;
    if usize::try_from(count).is_err() {
        return Err(overflow());
    }
    Ok(Header {
        data_start: start + text,
        rows,
        cols,
        width,
        little: !ty.starts_with('>'),
    })
}

/// Parses the bytes of a whole `.npy` file as [`read_matrix`] does. `path`
/// only names the input in messages.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Matrix> {
    let h = checked(bytes, path)?;
    let start = h.data_start as usize;
    Ok(Matrix {
        rows: h.rows as usize,
        cols: h.cols as usize,
        data: convert(&bytes[start..start + h.data_len() as usize], &h),
    })
}

/// The checked header of a whole file, whose data must all be present.
fn checked(bytes: &[u8], path: &Path) -> Result<Header> {
    let h = parse_header(bytes, path)?;
    // Check the declared size against the bytes present before allocating.
    let (need, have) = (
        h.data_len(),
        bytes.len() as u64 - h.data_start.min(bytes.len() as u64),
    );
    if need > have {
        return Err(Error::format(
            path,
            "data",
            format!(
                "shape [{}, {}] needs {need} bytes of data, the file has {have} after its header: truncated?",
                h.rows, h.cols
            ),
        ));
    }
    Ok(h)
}

/// Writes a row-major [rows, cols] f32 matrix as `.npy`, atomically.
pub fn write_matrix(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    if data.len() != rows * cols {
        return Err(Error::Shape(format!(
            "{} values are not a [{rows}, {cols}] matrix",
            data.len()
        )));
    }
    write_atomic(path, |w: &mut dyn Write| {
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[rows as u64, cols as u64])
            .writer(w)
            .begin_nd()
            .map_err(|e| Error::io(path, e))?;
        writer
            .extend(data.iter().copied())
            .map_err(|e| Error::io(path, e))?;
        writer.finish().map_err(|e| Error::io(path, e))
    })
    .map(drop)
}

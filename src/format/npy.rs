//! 2-D `.npy` arrays of f32 or f16, as the command line reads and writes them.

use std::io::Write;
use std::path::Path;

use half::f16;
use npyz::{DType, NpyFile, Order, WriterBuilder};

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
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path)
}

/// Parses the bytes of a whole `.npy` file as [`read_matrix`] does. `path`
/// only names the input in messages.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Matrix> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    let npy = NpyFile::new(&bytes[..]).map_err(|e| bad("npy header", e.to_string()))?;
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
    let width = match &ty[1..] {
        "f4" => 4u64,
        "f2" => 2,
        other => {
            return Err(bad(
                "dtype",
                format!("expected float32 or float16, found {other}"),
            ));
        }
    };
    // Check the declared size against the bytes present before allocating.
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| bad("shape", format!("{rows} × {cols} overflows")))?;
    let need = count
        .checked_mul(width)
        .ok_or_else(|| bad("shape", format!("{rows} × {cols} overflows")))?;
    let have = bytes.len() as u64;
    if need > have {
        return Err(bad(
            "data",
            format!(
                "shape [{rows}, {cols}] needs {need} bytes of data, the whole file has {have}: truncated?"
            ),
        ));
    }
    let data: Vec<f32> = if width == 4 {
        npy.into_vec::<f32>()
            .map_err(|e| bad("data", e.to_string()))?
    } else {
        npy.into_vec::<f16>()
            .map_err(|e| bad("data", e.to_string()))?
            .into_iter()
            .map(f16::to_f32)
            .collect()
    };
    if data.len() as u64 != count {
        return Err(bad(
            "data",
            format!("expected {count} values, read {}", data.len()),
        ));
    }
    Ok(Matrix {
        rows: rows as usize,
        cols: cols as usize,
        data,
    })
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
}

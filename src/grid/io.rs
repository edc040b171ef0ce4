//! Hash-grid tables in and out: `.npy` (rank 1, 2 or 3) and safetensors
//! (how tiny-cuda-nn and nerfstudio users export them), f16 or f32, read
//! only as far as the header declares and written back in the same shape
//! and dtype.

use std::io::Write;
use std::path::Path;

use half::f16;
use npyz::{DType, NpyFile, Order};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

use crate::format::input::{Extent, map_declared};
// The .npy preamble (magic, version, header length and its 4 KiB limit) is
// the vector reader's; this module adds ranks 1–3 and f16/f32 grids.
use crate::format::npy::{one_line, preamble};
use crate::format::write_atomic;
use crate::grid::table::{Dtype, Grid};
use crate::{Error, Result};

/// Longest safetensors JSON header accepted.
const ST_MAX_HEADER: u64 = 16 << 20;
/// The tensor name written when none is given.
pub const DEFAULT_TENSOR: &str = "grid";

/// How to read a table: the level sizes (unless the array is [L, T, F]),
/// F for a flat array, and the tensor of a safetensors file.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Entries per level.
    pub level_sizes: Option<Vec<usize>>,
    /// Features per entry (flat arrays; default 2).
    pub features: Option<usize>,
    /// The tensor to take from a safetensors file with several.
    pub tensor: Option<String>,
}

/// Whether a path names a safetensors file (by extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Reads an array of rank 1..=3 from `.npy` or `.safetensors` (by
/// extension): its shape, its values as f32 and its dtype.
pub fn read_array(path: &Path, tensor: Option<&str>) -> Result<(Vec<usize>, Vec<f32>, Dtype)> {
    if is_safetensors(path) {
        read_safetensors(path, tensor)
    } else {
        read_npy(path)
    }
}

/// Reads a table from `.npy` or `.safetensors` (by extension).
pub fn read_grid(path: &Path, layout: &Layout) -> Result<Grid> {
    let (shape, data, dtype) = read_array(path, layout.tensor.as_deref())?;
    Grid::from_array(
        &shape,
        data,
        dtype,
        layout.level_sizes.as_deref(),
        layout.features,
    )
    .map_err(|e| e.in_file(path))
}

/// Writes a table as `.npy` or `.safetensors` (by extension), atomically,
/// in its own shape and dtype.
pub fn write_grid(path: &Path, grid: &Grid, tensor: Option<&str>) -> Result<u64> {
    let raw: Vec<u8> = match grid.dtype {
        Dtype::F32 => grid.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => grid
            .data
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
    };
    if is_safetensors(path) {
        let dtype = match grid.dtype {
            Dtype::F32 => StDtype::F32,
            Dtype::F16 => StDtype::F16,
        };
        let view = TensorView::new(dtype, grid.shape.clone(), &raw)
            .map_err(|e| Error::InvalidArgument(format!("safetensors: {e}")))?;
        let bytes = safetensors::serialize([(tensor.unwrap_or(DEFAULT_TENSOR), view)], None)
            .map_err(|e| Error::InvalidArgument(format!("safetensors: {e}")))?;
        return write_atomic(path, |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(|e| Error::io(path, e))
        });
    }
    let descr = match grid.dtype {
        Dtype::F32 => "<f4",
        Dtype::F16 => "<f2",
    };
    let shape: Vec<String> = grid.shape.iter().map(|s| s.to_string()).collect();
    let shape = if shape.len() == 1 {
        format!("({},)", shape[0])
    } else {
        format!("({})", shape.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Padded with spaces and a newline so the data starts on a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    write_atomic(path, |w: &mut dyn Write| {
        let io = |e| Error::io(path, e);
        w.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
        w.write_all(&(header.len() as u16).to_le_bytes())
            .map_err(io)?;
        w.write_all(header.as_bytes()).map_err(io)?;
        w.write_all(&raw).map_err(io)
    })
}

/// A checked `.npy` header.
struct NpyHeader {
    data_start: u64,
    shape: Vec<usize>,
    dtype: Dtype,
}

impl NpyHeader {
    fn data_len(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.bytes() as u64
    }
}

fn npy_header(bytes: &[u8], path: &Path) -> Result<NpyHeader> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    let Some((start, text)) = preamble(bytes, path)? else {
        return Err(bad(
            "npy header",
            format!("the file is {} bytes: truncated", bytes.len()),
        ));
    };
    let header = bytes
        .get(start as usize..(start + text) as usize)
        .ok_or_else(|| bad("npy header", "truncated".into()))?;
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    if count(b'[') > 0 || count(b'{') > 1 || count(b'(') > 1 {
        return Err(bad(
            "dtype",
            "structured or nested headers are not supported; expected a plain float32 or float16 array".into(),
        ));
    }
    let npy = NpyFile::new(bytes).map_err(|e| bad("npy header", one_line(e)))?;
    if npy.order() != Order::C {
        return Err(bad(
            "order",
            "Fortran-order arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let DType::Plain(ts) = npy.dtype() else {
        return Err(bad(
            "dtype",
            "structured arrays are not supported; expected float32 or float16".into(),
        ));
    };
    let ty = ts.to_string();
    let dtype = match ty.as_str() {
        "<f4" => Dtype::F32,
        "<f2" => Dtype::F16,
        _ => {
            return Err(bad(
                "dtype",
                format!("expected little-endian float32 or float16 (<f4, <f2), found {ty}"),
            ));
        }
    };
    let shape = npy.shape();
    if !(1..=3).contains(&shape.len()) {
        return Err(bad(
            "shape",
            format!(
                "expected [L, T, F], [N, F] or [N·F], found rank {} {shape:?}",
                shape.len()
            ),
        ));
    }
    let mut total = dtype.bytes() as u64;
    let mut dims = Vec::with_capacity(shape.len());
    for &s in shape {
        total = total
            .checked_mul(s)
            .ok_or_else(|| bad("shape", format!("{shape:?} overflows")))?;
        dims.push(usize::try_from(s).map_err(|_| bad("shape", format!("{shape:?} overflows")))?);
    }
    Ok(NpyHeader {
        data_start: start + text,
        shape: dims,
        dtype,
    })
}

fn npy_extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    let Some((start, text)) = preamble(bytes, path)? else {
        return Ok(Extent::Need(if bytes.len() < 10 { 10 } else { 12 }));
    };
    if (bytes.len() as u64) < start + text {
        return Ok(Extent::Need(start + text));
    }
    let h = npy_header(bytes, path)?;
    Ok(Extent::Total(h.data_start + h.data_len()))
}

/// Decodes little-endian f32 or f16 bytes to f32.
fn values(raw: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>, Dtype)> {
    let bytes = map_declared(path, |b| npy_extent(b, path))?;
    let h = npy_header(&bytes, path)?;
    let start = h.data_start as usize;
    let need = h.data_len();
    let have = bytes.len().saturating_sub(start) as u64;
    if have != need {
        return Err(Error::format(
            path,
            "data",
            if have < need {
                format!(
                    "shape {:?} needs {need} bytes of data, the file has {have}: truncated",
                    h.shape
                )
            } else {
                "trailing bytes after the data".into()
            },
        ));
    }
    Ok((h.shape.clone(), values(&bytes[start..], h.dtype), h.dtype))
}

fn st_extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    let bad = |why: String| Error::format(path, "safetensors header", why);
    let Some(n) = bytes.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) else {
        return Ok(Extent::Need(8));
    };
    if n > ST_MAX_HEADER {
        return Err(bad(format!(
            "declares {n} bytes of header; at most {ST_MAX_HEADER} are accepted"
        )));
    }
    if (bytes.len() as u64) < 8 + n {
        return Ok(Extent::Need(8 + n));
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n as usize])
        .map_err(|e| bad(format!("not JSON: {}", one_line(e))))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut end = 0u64;
    for (name, t) in obj.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let e = t
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(format!("tensor {name:?} has no data_offsets")))?;
        end = end.max(e);
    }
    Ok(Extent::Total(8 + n + end))
}

fn read_safetensors(path: &Path, tensor: Option<&str>) -> Result<(Vec<usize>, Vec<f32>, Dtype)> {
    let bytes = map_declared(path, |b| st_extent(b, path))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, "safetensors", one_line(e)))?;
    let mut names = st.names();
    names.sort();
    let name = match (tensor, names.as_slice()) {
        (Some(t), _) => t.to_string(),
        (None, [one]) => one.to_string(),
        (None, []) => return Err(Error::format(path, "tensors", "the file holds no tensor")),
        (None, many) => {
            return Err(Error::format(
                path,
                "tensors",
                format!(
                    "it holds {} tensors ({}); choose one with --tensor",
                    many.len(),
                    many.join(", ")
                ),
            ));
        }
    };
    let view = st.tensor(&name).map_err(|_| {
        Error::format(
            path,
            "tensors",
            format!("no tensor {name:?} (it has {})", names.join(", ")),
        )
    })?;
    let dtype = match view.dtype() {
        StDtype::F32 => Dtype::F32,
        StDtype::F16 => Dtype::F16,
        other => {
            return Err(Error::format(
                path,
                "dtype",
                format!("tensor {name:?} is {other:?}; expected F32 or F16"),
            ));
        }
    };
    let shape = view.shape().to_vec();
    if !(1..=3).contains(&shape.len()) {
        return Err(Error::format(
            path,
            "shape",
            format!(
                "expected [L, T, F], [N, F] or [N·F], found rank {} {shape:?}",
                shape.len()
            ),
        ));
    }
    Ok((shape, values(view.data(), dtype), dtype))
}

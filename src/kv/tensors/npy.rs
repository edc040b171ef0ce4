//! `.npy` arrays of any rank as one tensor named by the file's stem. The
//! preamble (magic, version, header length and its limit) is
//! `format::npy`'s; this module adds ranks other than 2 and the integer
//! dtypes that are carried raw. Big-endian data is swapped to little-endian
//! on reading, so that a tensor's bytes always mean the same thing.

use std::path::Path;
use std::sync::Arc;

use npyz::{DType, NpyFile, Order};

use super::{Dtype, NamedTensor, TensorFile, byte_len};
use crate::format::input::{Extent, Input, map_declared};
use crate::format::npy::{one_line, preamble};
use crate::{Error, Result};

/// NumPy's type characters and sizes, and the safetensors dtype of each.
const TYPES: &[(&str, &str)] = &[
    ("f4", "F32"),
    ("f2", "F16"),
    ("f8", "F64"),
    ("i1", "I8"),
    ("i2", "I16"),
    ("i4", "I32"),
    ("i8", "I64"),
    ("u1", "U8"),
    ("u2", "U16"),
    ("u4", "U32"),
    ("u8", "U64"),
    ("b1", "BOOL"),
    ("c8", "C64"),
];

/// A checked header.
struct Header {
    data_start: usize,
    shape: Vec<usize>,
    dtype: Dtype,
    /// Bytes per byte-swapped unit for big-endian data (0: none).
    swap: usize,
    data_len: usize,
}

fn header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    let Some((start, text)) = preamble(bytes, path)? else {
        return Err(bad(
            "npy header",
            format!("the file is {} bytes: truncated", bytes.len()),
        ));
    };
    let end = (start + text) as usize;
    let head = bytes
        .get(start as usize..end)
        .ok_or_else(|| bad("npy header", "truncated".into()))?;
    // One dict with one shape tuple; nesting is refused before npyz parses
    // it (its parser is slow on nested brackets, as the npy fuzz target found).
    let count = |c: u8| head.iter().filter(|&&b| b == c).count();
    if count(b'[') > 0 || count(b'{') > 1 || count(b'(') > 1 {
        return Err(bad(
            "dtype",
            "structured or nested headers are not supported; expected a plain array".into(),
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
            "structured arrays are not supported; expected a plain numeric array".into(),
        ));
    };
    let ty = ts.to_string();
    let (order, code) = ty.split_at(ty.len().min(1));
    let Some(&(_, st)) = TYPES.iter().find(|(c, _)| *c == code) else {
        return Err(bad(
            "dtype",
            format!("{ty} is not supported; expected float32, float16 or a plain integer type"),
        ));
    };
    let dtype = Dtype::from_name(st)?;
    let width = dtype.bits()? / 8;
    let swap = match order {
        ">" if width > 1 => {
            if code.starts_with('c') {
                width / 2
            } else {
                width
            }
        }
        _ => 0,
    };
    let mut shape = Vec::with_capacity(npy.shape().len());
    for &s in npy.shape() {
        shape.push(
            usize::try_from(s).map_err(|_| bad("shape", format!("{:?} overflows", npy.shape())))?,
        );
    }
    let data_len = byte_len(&stem(path), &dtype, &shape)
        .map_err(|_| bad("shape", format!("{shape:?} overflows")))?;
    end.checked_add(data_len)
        .ok_or_else(|| bad("shape", format!("{shape:?} overflows")))?;
    Ok(Header {
        data_start: end,
        shape,
        dtype,
        swap,
        data_len,
    })
}

fn extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    let Some((start, text)) = preamble(bytes, path)? else {
        return Ok(Extent::Need(if bytes.len() < 10 { 10 } else { 12 }));
    };
    if (bytes.len() as u64) < start + text {
        return Ok(Extent::Need(start + text));
    }
    let h = header(bytes, path)?;
    Ok(Extent::Total((h.data_start + h.data_len) as u64))
}

/// The tensor's name: the file's stem.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tensor".into())
}

/// Reads an `.npy` file, mapped where it can be.
pub(super) fn read(path: &Path) -> Result<TensorFile> {
    let input = map_declared(path, |b| extent(b, path))?;
    parse(Arc::new(input), path)
}

/// The tensor of a whole `.npy` file: a view of `input`, or swapped bytes.
pub(super) fn parse(input: Arc<Input>, path: &Path) -> Result<TensorFile> {
    let h = header(&input, path)?;
    let have = input.len().saturating_sub(h.data_start);
    if have != h.data_len {
        return Err(Error::format(
            path,
            "data",
            if have < h.data_len {
                format!(
                    "shape {:?} needs {} bytes of data, the file has {have}: truncated",
                    h.shape, h.data_len
                )
            } else {
                "trailing bytes after the data".into()
            },
        ));
    }
    let range = h.data_start..h.data_start + h.data_len;
    let name = stem(path);
    let tensor = if h.swap > 1 {
        let mut bytes = input[range].to_vec();
        for c in bytes.chunks_exact_mut(h.swap) {
            c.reverse();
        }
        NamedTensor::new(name, h.dtype, h.shape, bytes)?
    } else {
        NamedTensor::shared(name, h.dtype, h.shape, input, range)
    };
    Ok(TensorFile {
        tensors: vec![tensor],
        metadata: None,
        source: None,
    })
}

/// The bytes of an `.npy` file (version 1) holding the file's one tensor.
pub(super) fn serialize(file: &TensorFile, path: &Path) -> Result<Vec<u8>> {
    let [t] = file.tensors.as_slice() else {
        return Err(Error::InvalidArgument(format!(
            "{}: an .npy file holds one tensor, not {}; write safetensors instead",
            path.display(),
            file.tensors.len()
        )));
    };
    let descr = match TYPES.iter().find(|(_, st)| *st == t.dtype.name()) {
        Some((code, _)) if code.ends_with('1') => format!("|{code}"),
        Some((code, _)) => format!("<{code}"),
        None => {
            return Err(Error::InvalidArgument(format!(
                "tensor {:?}: dtype {} has no .npy equivalent; write safetensors instead",
                t.name, t.dtype
            )));
        }
    };
    let dims: Vec<String> = t.shape.iter().map(|s| s.to_string()).collect();
    let shape = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Padded with spaces and a newline so that the data starts 64-aligned.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    // What format::npy's preamble accepts (a rank in the hundreds).
    if header.len() > 4096 {
        return Err(Error::InvalidArgument(format!(
            "tensor {:?}: shape {:?} makes an .npy header over 4096 bytes",
            t.name, t.shape
        )));
    }
    let mut out = Vec::with_capacity(10 + header.len() + t.bytes().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    Ok(out)
}

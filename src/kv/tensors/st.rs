//! safetensors in and out through the `safetensors` crate: its parser checks
//! the header (offsets contiguous, sizes matching shapes, no trailing or
//! missing bytes); this module adds reading only as far as the header
//! declares, views into the mapped file, and a deterministic writer.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

use super::{Dtype, NamedTensor, TensorFile};
use crate::format::input::{Extent, Input, add_len, map_declared};
use crate::format::npy::one_line;
use crate::{Error, Result};

/// Longest JSON header accepted: a cache of hundreds of layers needs a few
/// tens of KiB; the crate's own limit (100 MB) would let a pipe make us
/// read that much before anything is checked.
const MAX_HEADER: u64 = 16 << 20;

/// The safetensors dtype of a name such as `"I64"`.
pub(super) fn dtype(name: &str) -> Result<StDtype> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| Error::InvalidArgument(format!("unknown dtype {name:?}")))
}

fn to_st(d: &Dtype) -> Result<StDtype> {
    match d {
        Dtype::F32 => Ok(StDtype::F32),
        Dtype::F16 => Ok(StDtype::F16),
        Dtype::BF16 => Ok(StDtype::BF16),
        Dtype::Other(s) => dtype(s),
    }
}

fn from_st(d: StDtype) -> Dtype {
    match d {
        StDtype::F32 => Dtype::F32,
        StDtype::F16 => Dtype::F16,
        StDtype::BF16 => Dtype::BF16,
        other => Dtype::Other(other.to_string()),
    }
}

/// How long the file says it is: 8 bytes of header length, the JSON
/// header, and the data up to the largest end offset.
fn extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    let bad = |why: String| Error::format(path, "safetensors header", why);
    let Some(n) = bytes.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) else {
        return Ok(Extent::Need(8));
    };
    if n > MAX_HEADER {
        return Err(bad(format!(
            "declares {n} bytes of header; at most {MAX_HEADER} are accepted"
        )));
    }
    let head = add_len(8, n, path, "safetensors header")?;
    let Some(text) = bytes.get(8..head as usize) else {
        return Ok(Extent::Need(head));
    };
    let json: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| bad(format!("not JSON: {}", one_line(e))))?;
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
    Ok(Extent::Total(add_len(head, end, path, "data_offsets")?))
}

/// Reads a safetensors file, mapped where it can be.
pub(super) fn read(path: &Path) -> Result<TensorFile> {
    let input = map_declared(path, |b| extent(b, path))?;
    parse(Arc::new(input), path)
}

/// The tensors of a whole safetensors file, as views of `input`.
pub(super) fn parse(input: Arc<Input>, path: &Path) -> Result<TensorFile> {
    let (n, meta) = SafeTensors::read_metadata(&input)
        .map_err(|e| Error::format(path, "safetensors", one_line(e)))?;
    let base = 8 + n;
    let mut infos: Vec<_> = meta.tensors().into_iter().collect();
    // File order; empty tensors share an offset, so the name breaks ties.
    infos.sort_by(|(a, x), (b, y)| x.data_offsets.cmp(&y.data_offsets).then(a.cmp(b)));
    let tensors = infos
        .into_iter()
        .map(|(name, info)| {
            let (s, e) = info.data_offsets;
            NamedTensor::shared(
                name,
                from_st(info.dtype),
                info.shape.clone(),
                Arc::clone(&input),
                base + s..base + e,
            )
        })
        .collect();
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    Ok(TensorFile {
        tensors,
        metadata,
        source: None,
    })
}

/// The bytes of a safetensors file holding `file`'s tensors and metadata.
/// The crate serialises the tensors; the metadata is spliced into its
/// header here with sorted keys, because the crate takes it as a HashMap
/// whose order (and so the file's bytes) would change from run to run.
pub(super) fn serialize(file: &TensorFile, path: &Path) -> Result<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut views = Vec::with_capacity(file.tensors.len());
    for t in &file.tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "two tensors are named {:?}",
                t.name
            )));
        }
        let view = TensorView::new(to_st(&t.dtype)?, t.shape.clone(), t.bytes())
            .map_err(|e| Error::Shape(format!("tensor {:?}: {}", t.name, one_line(e))))?;
        views.push((t.name.as_str(), view));
    }
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::InvalidArgument(format!("safetensors: {}", one_line(e))))?;
    match &file.metadata {
        None => Ok(bytes),
        Some(m) => splice_metadata(bytes, m, path),
    }
}

fn splice_metadata(bytes: Vec<u8>, m: &BTreeMap<String, String>, path: &Path) -> Result<Vec<u8>> {
    let bad = || Error::format(path, "safetensors header", "the serializer wrote no header");
    let n = bytes
        .first_chunk::<8>()
        .map(|b| u64::from_le_bytes(*b) as usize)
        .ok_or_else(bad)?;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    let text = std::str::from_utf8(header).map_err(|_| bad())?.trim_end();
    let rest = text.strip_prefix('{').ok_or_else(bad)?;
    let meta = serde_json::to_string(m)
        .map_err(|e| Error::InvalidArgument(format!("safetensors metadata: {}", one_line(e))))?;
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    let mut h = format!("{{\"__metadata__\":{meta}{sep}{rest}");
    // The data starts 8-aligned, as the crate aligns it.
    let padded = h.len().next_multiple_of(8);
    h.push_str(&" ".repeat(padded - h.len()));
    let data = &bytes[8 + n..];
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

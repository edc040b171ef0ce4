//! PlayCanvas / SuperSplat "compressed PLY" (`.compressed.ply`), read only.
//!
//! A binary little-endian PLY whose header declares these elements (any
//! order; the body holds them in header order):
//!
//! | element  | count     | properties | encoding |
//! |----------|-----------|------------|----------|
//! | `chunk`  | ⌈n/256⌉   | float `min_x min_y min_z max_x max_y max_z`, `min_scale_x … max_scale_z`, optionally `min_r min_g min_b max_r max_g max_b` | per 256 consecutive Gaussians, the range of position, log scale and colour |
//! | `vertex` | n         | uint `packed_position packed_rotation packed_scale packed_color` | below |
//! | `sh`     | n (optional) | uchar `f_rest_0 … f_rest_{K−1}`, K ∈ {9, 24, 45} | `(b + 0.5)/256` (0 → 0, 255 → 1), then `(t − 0.5)·8` |
//!
//! Vertex words (t = unorm of the field, `v/(2^bits − 1)`):
//!
//! | word | bits (high → low) | decodes to |
//! |------|-------------------|------------|
//! | `packed_position` | x 11, y 10, z 11 | `lerp(min, max, t)` of the chunk |
//! | `packed_scale`    | x 11, y 10, z 11 | `lerp(min_scale, max_scale, t)` (log scale) |
//! | `packed_color`    | r 8, g 8, b 8, a 8 | colour `lerp(min_c, max_c, t)` (or `t` without chunk colours), `f_dc = (colour − 0.5)/SH_C0`; opacity `−ln(1/a − 1)` |
//! | `packed_rotation` | largest index 2, then 3 × 10 | the other three of (rot_0..rot_3) as `(t − 0.5)·√2`, the largest `√(1 − Σ)` |
//!
//! Arithmetic is in f64, rounded to f32 at the end, as the peer does. An
//! alpha byte of 0 or 255 is clamped to `[ALPHA_EPS, 1 − ALPHA_EPS]` so
//! that the opacity is finite (the peer gives ±∞).

use std::path::Path;

use super::antimatter::ALPHA_EPS;
use super::scene::{ScalarType, Scene, rest_per_channel};
use crate::format::input::{Extent, read_declared};
use crate::{Error, Result};

/// Gaussians per chunk.
pub const CHUNK: usize = 256;
/// The header may not be longer than this.
const MAX_HEADER_BYTES: usize = 64 << 10;
/// The peer's SH_C0 (f64).
const SH_C0: f64 = 0.282_094_791_773_878_14;

/// The format's own precision, per attribute, for Gaussians of one chunk:
/// half a step of each field (the largest error of the quantisation).
///
/// | attribute | half step |
/// |-----------|-----------|
/// | x, z; log scale x, z | (max − min)/(2·2047) of the chunk |
/// | y; log scale y | (max − min)/(2·1023) |
/// | colour (r g b, before `/SH_C0`) | (max − min)/(2·255), or 1/510 without chunk colours |
/// | sigmoid(opacity) | 1/510 |
/// | rotation components (stored three) | √2/(2·1023) = 0.00069 |
/// | SH | 1/32 (step 8/256; range −4 ..= 4) |
pub const COMPRESSED_PLY_PRECISION: CompressedPlyPrecision = CompressedPlyPrecision {
    position_levels: [2047, 1023, 2047],
    scale_levels: [2047, 1023, 2047],
    colour_levels: 255,
    alpha: 0.5 / 255.0,
    rotation: std::f64::consts::SQRT_2 / (2.0 * 1023.0),
    sh: 1.0 / 32.0,
};

/// See [`COMPRESSED_PLY_PRECISION`]: a chunk-relative field of `levels`
/// (2^bits − 1) has a half step of `(max − min) / (2 · levels)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompressedPlyPrecision {
    /// Levels of x, y, z within a chunk's range.
    pub position_levels: [u32; 3],
    /// Levels of the log scales within a chunk's range.
    pub scale_levels: [u32; 3],
    /// Levels of r, g, b (within the chunk's colour range, or of 0..1).
    pub colour_levels: u32,
    /// Half step of sigmoid(opacity).
    pub alpha: f64,
    /// Half step of each stored rotation component.
    pub rotation: f64,
    /// Half step of an SH coefficient.
    pub sh: f64,
}

const CHUNK_REQUIRED: [&str; 12] = [
    "min_x",
    "min_y",
    "min_z",
    "max_x",
    "max_y",
    "max_z",
    "min_scale_x",
    "min_scale_y",
    "min_scale_z",
    "max_scale_x",
    "max_scale_y",
    "max_scale_z",
];
const CHUNK_COLOUR: [&str; 6] = ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"];
const VERTEX_REQUIRED: [&str; 4] = [
    "packed_position",
    "packed_rotation",
    "packed_scale",
    "packed_color",
];

/// Whether `path` ends in `.compressed.ply` (case-insensitive).
pub fn is_compressed_ply_path(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".compressed.ply"))
}

/// Whether the first bytes of a PLY (`head`, e.g. its first 4 KiB) are a
/// compressed PLY's: a `ply` line, then an `element chunk` line before
/// `end_header`.
pub fn is_compressed_ply_header(head: &[u8]) -> bool {
    if !(head.starts_with(b"ply\n") || head.starts_with(b"ply\r\n")) {
        return false;
    }
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        let toks: Vec<&str> = text.split_ascii_whitespace().collect();
        match toks.as_slice() {
            ["end_header"] => return false,
            ["element", "chunk", _] => return true,
            _ => {}
        }
    }
    false
}

/// One element of the header.
#[derive(Debug)]
struct Element {
    name: String,
    count: u64,
    props: Vec<(String, ScalarType)>,
}

impl Element {
    fn stride(&self) -> u64 {
        self.props.iter().map(|(_, t)| t.size() as u64).sum()
    }

    /// Byte offset of `name` in a record, if it has type `ty`.
    fn offset(&self, name: &str) -> Option<(usize, ScalarType)> {
        let mut at = 0;
        for (n, t) in &self.props {
            if n == name {
                return Some((at, *t));
            }
            at += t.size();
        }
        None
    }
}

/// The parsed header: elements in order, comments, header length.
struct Header {
    elements: Vec<Element>,
    comments: Vec<String>,
    len: usize,
}

/// The length of the header through its `end_header` line, if `b` holds it.
fn header_end(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    for line in b.split_inclusive(|&c| c == b'\n') {
        at += line.len();
        if !line.ends_with(b"\n") {
            return None;
        }
        let t = line.strip_suffix(b"\n").unwrap_or(line);
        let t = t.strip_suffix(b"\r").unwrap_or(t);
        if t == b"end_header" {
            return Some(at);
        }
    }
    None
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    if !(bytes.starts_with(b"ply\n") || bytes.starts_with(b"ply\r\n")) {
        return Err(Error::format(
            path,
            "magic",
            "not a PLY file: it does not start with a `ply` line",
        ));
    }
    let window = bytes
        .get(..bytes.len().min(MAX_HEADER_BYTES))
        .unwrap_or(bytes);
    let len = header_end(window).ok_or_else(|| {
        Error::format(
            path,
            "header",
            format!("no end_header line within the first {} bytes", window.len()),
        )
    })?;
    let text = std::str::from_utf8(bytes.get(..len).unwrap_or_default())
        .map_err(|_| Error::format(path, "header", "not text"))?;
    let mut elements: Vec<Element> = Vec::new();
    let mut comments = Vec::new();
    let mut format = false;
    for (ln, line) in text.lines().enumerate().skip(1) {
        let at = format!("header line {}", ln + 1);
        let toks: Vec<&str> = line.split_ascii_whitespace().collect();
        match toks.as_slice() {
            [] | ["obj_info", ..] => {}
            ["end_header"] => break,
            ["comment", ..] => {
                let rest = line.trim_start().strip_prefix("comment").unwrap_or("");
                comments.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            }
            ["format", "binary_little_endian", "1.0"] => format = true,
            ["format", ..] => {
                return Err(Error::format(
                    path,
                    "format",
                    format!("`{line}`: a compressed PLY is binary_little_endian 1.0"),
                ));
            }
            ["element", name, count] => {
                let count: u64 = count.parse().map_err(|_| {
                    Error::format(
                        path,
                        format!("element {name}"),
                        format!("count `{count}` is not an integer"),
                    )
                })?;
                if !["chunk", "vertex", "sh"].contains(name) {
                    return Err(Error::format(
                        path,
                        format!("element {name}"),
                        "not part of the compressed PLY layout (chunk, vertex, sh)",
                    ));
                }
                if elements.iter().any(|e| e.name == *name) {
                    return Err(Error::format(
                        path,
                        format!("element {name}"),
                        "declared twice",
                    ));
                }
                elements.push(Element {
                    name: (*name).to_owned(),
                    count,
                    props: Vec::new(),
                });
            }
            ["property", "list", ..] => {
                return Err(Error::format(
                    path,
                    &at,
                    "list properties are not part of the compressed PLY layout",
                ));
            }
            ["property", ty, name] => {
                let t = ScalarType::from_ply_name(ty).ok_or_else(|| {
                    Error::format(
                        path,
                        format!("property {name}"),
                        format!("unknown type `{ty}`"),
                    )
                })?;
                let el = elements.last_mut().ok_or_else(|| {
                    Error::format(path, &at, format!("property {name} before any element"))
                })?;
                el.props.push(((*name).to_owned(), t));
            }
            _ => {
                return Err(Error::format(
                    path,
                    &at,
                    format!("unexpected line {line:?}"),
                ));
            }
        }
    }
    if !format {
        return Err(Error::format(path, "format", "no format line"));
    }
    Ok(Header {
        elements,
        comments,
        len,
    })
}

/// Where each field lives in the body.
struct Layout {
    n: usize,
    chunks: usize,
    chunk_base: usize,
    chunk_stride: usize,
    /// Offsets of CHUNK_REQUIRED then CHUNK_COLOUR (if present) in a chunk.
    chunk_fields: Vec<usize>,
    vertex_base: usize,
    vertex_stride: usize,
    vertex_fields: [usize; 4],
    /// (base, stride, offset of f_rest_0..K-1), K = 3·rest_per_channel.
    sh: Option<(usize, usize, Vec<usize>)>,
    sh_degree: u8,
    total: u64,
}

fn layout(h: &Header, path: &Path) -> Result<Layout> {
    let find = |name: &str| h.elements.iter().find(|e| e.name == name);
    let chunk = find("chunk")
        .ok_or_else(|| Error::format(path, "element chunk", "missing: not a compressed PLY"))?;
    let vertex = find("vertex").ok_or_else(|| Error::format(path, "element vertex", "missing"))?;
    let field = |el: &Element, name: &str, ty: ScalarType| -> Result<usize> {
        match el.offset(name) {
            Some((at, t)) if t == ty => Ok(at),
            Some((_, t)) => Err(Error::format(
                path,
                format!("property {name}"),
                format!(
                    "of element {} is {}, expected {}",
                    el.name,
                    t.ply_name(),
                    ty.ply_name()
                ),
            )),
            None => Err(Error::format(
                path,
                format!("property {name}"),
                format!("missing from element {}", el.name),
            )),
        }
    };
    let mut chunk_fields = CHUNK_REQUIRED
        .iter()
        .map(|n| field(chunk, n, ScalarType::F32))
        .collect::<Result<Vec<_>>>()?;
    if chunk.offset("min_r").is_some() {
        for n in CHUNK_COLOUR {
            chunk_fields.push(field(chunk, n, ScalarType::F32)?);
        }
    }
    let mut vertex_fields = [0usize; 4];
    for (slot, n) in vertex_fields.iter_mut().zip(VERTEX_REQUIRED) {
        *slot = field(vertex, n, ScalarType::U32)?;
    }
    let n64 = vertex.count;
    if n64 == 0 {
        return Err(Error::format(
            path,
            "element vertex",
            "no Gaussians (count 0)",
        ));
    }
    let want_chunks = n64.div_ceil(CHUNK as u64);
    if chunk.count != want_chunks {
        return Err(Error::format(
            path,
            "element chunk",
            format!(
                "{} chunks for {n64} Gaussians; ⌈{n64}/256⌉ = {want_chunks}",
                chunk.count
            ),
        ));
    }
    let mut sh = None;
    let mut sh_degree = 0;
    if let Some(el) = find("sh") {
        let k = el.props.len();
        sh_degree = match k {
            9 => 1,
            24 => 2,
            45 => 3,
            _ => {
                return Err(Error::format(
                    path,
                    "element sh",
                    format!("{k} properties; expected 9, 24 or 45 (SH degree 1–3)"),
                ));
            }
        };
        if el.count != n64 {
            return Err(Error::format(
                path,
                "element sh",
                format!("{} rows for {n64} Gaussians", el.count),
            ));
        }
        let offs = (0..k)
            .map(|j| field(el, &format!("f_rest_{j}"), ScalarType::U8))
            .collect::<Result<Vec<_>>>()?;
        sh = Some((0usize, el.stride() as usize, offs));
    }
    // Body offsets in header order, checked.
    let mut at = h.len as u64;
    let (mut chunk_base, mut vertex_base, mut sh_base) = (0u64, 0u64, 0u64);
    for el in &h.elements {
        match el.name.as_str() {
            "chunk" => chunk_base = at,
            "vertex" => vertex_base = at,
            _ => sh_base = at,
        }
        let size = el.count.checked_mul(el.stride()).ok_or_else(|| {
            Error::format(
                path,
                format!("element {}", el.name),
                "declared size overflows",
            )
        })?;
        at = crate::format::input::add_len(at, size, path, "body")?;
    }
    let too_big = || Error::format(path, "body", "too large for this machine");
    let n = usize::try_from(n64).map_err(|_| too_big())?;
    if let Some((base, _, _)) = sh.as_mut() {
        *base = usize::try_from(sh_base).map_err(|_| too_big())?;
    }
    Ok(Layout {
        n,
        chunks: usize::try_from(chunk.count).map_err(|_| too_big())?,
        chunk_base: usize::try_from(chunk_base).map_err(|_| too_big())?,
        chunk_stride: chunk.stride() as usize,
        chunk_fields,
        vertex_base: usize::try_from(vertex_base).map_err(|_| too_big())?,
        vertex_stride: vertex.stride() as usize,
        vertex_fields,
        sh,
        sh_degree,
        total: at,
    })
}

/// Reads a compressed PLY, as far as its header declares (and one byte
/// more). See [`read_compressed_ply_bytes`].
pub fn read_compressed_ply(path: &Path) -> Result<Scene> {
    let bytes = read_declared(path, |b| {
        if header_end(b.get(..b.len().min(MAX_HEADER_BYTES)).unwrap_or(b)).is_none() {
            if b.len() >= MAX_HEADER_BYTES {
                return parse_header(b, path).map(|_| Extent::Need(0));
            }
            return Ok(Extent::Need((b.len() + 4096).min(MAX_HEADER_BYTES) as u64));
        }
        let h = parse_header(b, path)?;
        Ok(Extent::Total(layout(&h, path)?.total))
    })?;
    read_compressed_ply_bytes(&bytes, path)
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    f32::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn unorm(v: u32, bits: u32) -> f64 {
    let t = (1u32 << bits) - 1;
    f64::from(v & t) / f64::from(t)
}

fn lerp(a: f32, b: f32, t: f64) -> f64 {
    f64::from(a) * (1.0 - t) + f64::from(b) * t
}

/// Decodes compressed-PLY bytes into a [`Scene`] (no normals or extras;
/// header comments kept); `path` only names the source in messages.
///
/// Errors (one line naming the file and the field): not a binary
/// little-endian PLY, a missing chunk or vertex element or property, a
/// property of the wrong type, a chunk count other than ⌈n/256⌉, an `sh`
/// element of the wrong size, a truncated body or trailing bytes, and a
/// non-finite chunk bound.
pub fn read_compressed_ply_bytes(bytes: &[u8], path: &Path) -> Result<Scene> {
    let h = parse_header(bytes, path)?;
    let l = layout(&h, path)?;
    let len = bytes.len() as u64;
    if len < l.total {
        return Err(Error::format(
            path,
            "body",
            format!(
                "truncated: the header declares {} bytes in all, the file has {len}",
                l.total
            ),
        ));
    }
    if len > l.total {
        return Err(Error::format(
            path,
            "body",
            format!(
                "{} trailing bytes after the declared {}",
                len - l.total,
                l.total
            ),
        ));
    }
    // Chunk bounds, checked finite.
    let nf = l.chunk_fields.len();
    let mut chunks = vec![0f32; l.chunks * nf];
    for c in 0..l.chunks {
        for (j, &off) in l.chunk_fields.iter().enumerate() {
            let v = f32_at(bytes, l.chunk_base + c * l.chunk_stride + off);
            if !v.is_finite() {
                let name = CHUNK_REQUIRED
                    .iter()
                    .chain(CHUNK_COLOUR.iter())
                    .nth(j)
                    .copied()
                    .unwrap_or("?");
                return Err(Error::format(
                    path,
                    format!("chunk {c}"),
                    format!("{name} = {v} is not finite"),
                ));
            }
            chunks[c * nf + j] = v;
        }
    }
    let has_colour = nf == 18;
    let n = l.n;
    let mut positions = Vec::with_capacity(n);
    let mut scales = Vec::with_capacity(n);
    let mut rotations = Vec::with_capacity(n);
    let mut dc = Vec::with_capacity(n);
    let mut opacity = Vec::with_capacity(n);
    let norm = 1.0 / (std::f64::consts::SQRT_2 * 0.5);
    for i in 0..n {
        let ch = chunks
            .get((i / CHUNK) * nf..(i / CHUNK + 1) * nf)
            .unwrap_or_default();
        let c = |j: usize| ch.get(j).copied().unwrap_or(0.0);
        let rec = l.vertex_base + i * l.vertex_stride;
        let w = |j: usize| u32_at(bytes, rec + l.vertex_fields[j]);
        let (pp, pr, ps, pc) = (w(0), w(1), w(2), w(3));
        let t111011 = |v: u32| [unorm(v >> 21, 11), unorm(v >> 11, 10), unorm(v, 11)];
        let tp = t111011(pp);
        positions.push(std::array::from_fn(|k| lerp(c(k), c(3 + k), tp[k]) as f32));
        let ts = t111011(ps);
        scales.push(std::array::from_fn(|k| {
            lerp(c(6 + k), c(9 + k), ts[k]) as f32
        }));
        let a = (unorm(pr >> 20, 10) - 0.5) * norm;
        let b = (unorm(pr >> 10, 10) - 0.5) * norm;
        let cc = (unorm(pr, 10) - 0.5) * norm;
        let m = (1.0 - (a * a + b * b + cc * cc)).max(0.0).sqrt();
        let q = match pr >> 30 {
            0 => [m, a, b, cc],
            1 => [a, m, b, cc],
            2 => [a, b, m, cc],
            _ => [a, b, cc, m],
        };
        rotations.push(q.map(|v| v as f32));
        let tc = [
            unorm(pc >> 24, 8),
            unorm(pc >> 16, 8),
            unorm(pc >> 8, 8),
            unorm(pc, 8),
        ];
        dc.push(std::array::from_fn(|k| {
            let col = if has_colour {
                lerp(c(12 + k), c(15 + k), tc[k])
            } else {
                tc[k]
            };
            ((col - 0.5) / SH_C0) as f32
        }));
        let eps = f64::from(ALPHA_EPS);
        let alpha = tc[3].clamp(eps, 1.0 - eps);
        opacity.push((-(1.0 / alpha - 1.0).ln()) as f32);
    }
    let k = rest_per_channel(l.sh_degree);
    let mut sh_rest = Vec::with_capacity(n * 3 * k);
    if let Some((base, stride, offs)) = &l.sh {
        for i in 0..n {
            for &off in offs {
                let b = bytes.get(base + i * stride + off).copied().unwrap_or(128);
                let t = match b {
                    0 => 0.0,
                    255 => 1.0,
                    _ => (f64::from(b) + 0.5) / 256.0,
                };
                sh_rest.push(((t - 0.5) * 8.0) as f32);
            }
        }
    }
    let scene = Scene {
        sh_degree: l.sh_degree,
        positions,
        normals: None,
        dc,
        sh_rest,
        opacity,
        scales,
        rotations,
        comments: h.comments,
        ..Scene::default()
    };
    scene
        .check_consistent()
        .map_err(|e| Error::format(path, "body", e))?;
    Ok(scene)
}

/// Header facts of a compressed PLY for `tq3d info` (the header is checked
/// as the reader checks it; the body only for its length).
pub fn describe_compressed_ply(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let h = parse_header(bytes, path)?;
    let l = layout(&h, path)?;
    let kv = |k: &str, v: String| (k.to_owned(), v);
    let mut out = vec![
        kv("count", l.n.to_string()),
        kv("chunks", l.chunks.to_string()),
        kv("sh degree", l.sh_degree.to_string()),
        kv(
            "chunk colours",
            if l.chunk_fields.len() == 18 {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        ),
        kv("header bytes", h.len.to_string()),
        kv("declared bytes", l.total.to_string()),
    ];
    for c in &h.comments {
        out.push(kv("comment", c.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_layout_from_the_head() {
        assert!(is_compressed_ply_header(
            b"ply\nformat binary_little_endian 1.0\nelement chunk 1\nproperty float min_x\n"
        ));
        assert!(!is_compressed_ply_header(
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nend_header\nelement chunk 1\n"
        ));
        assert!(!is_compressed_ply_header(b"plyx\nelement chunk 1\n"));
        assert!(is_compressed_ply_path(Path::new("a/B.Compressed.PLY")));
        assert!(!is_compressed_ply_path(Path::new("a/b.ply")));
    }
}

//! Niantic's `.spz` (versions 2, 3 and 4): read all three, write 3 and 4.
//!
//! Every version stores the same six attribute arrays, one after the other
//! and each for all Gaussians, with all multi-byte values little-endian:
//!
//! | # | array     | bytes per Gaussian | encoding                                                             |
//! |---|-----------|--------------------|----------------------------------------------------------------------|
//! | 0 | positions | 9                  | 3 × 24-bit signed fixed point, value = int / 2^fractional_bits      |
//! | 1 | alphas    | 1                  | byte = round(255 · sigmoid(opacity))                                 |
//! | 2 | colours   | 3                  | byte = round(f_dc · 0.15 · 255 + 127.5)                              |
//! | 3 | scales    | 3                  | byte = round((log scale + 10) · 16)                                  |
//! | 4 | rotations | 3 (v2) or 4 (v3+)  | v2: x y z bytes = round(q · 127.5 + 127.5), w ≥ 0 rebuilt; v3+: smallest three (below) |
//! | 5 | SH rest   | 3 · K              | per coefficient k, R G B bytes = (q + 128), bucketed (below)         |
//!
//! K = (L+1)² − 1 coefficients per channel at SH degree L. The SH bytes are
//! coefficient-major with the channels interleaved (k0 R, k0 G, k0 B, k1 R,
//! …), where a [`Scene`] is channel-major. A value decodes as
//! `(byte − 128) / 128`; the writer rounds `128 · x` to an integer, then to
//! the nearest multiple of 8 for band 1 (5 bits) and of 16 for bands 2–3
//! (4 bits), as the reference does, and clamps to 0..=255.
//!
//! Smallest-three rotation (v3+): one little-endian u32; bits 30–31 hold
//! the index (in x y z w order) of the largest |component|, made positive;
//! the other three follow from the high bits down, each as a sign bit and a
//! 9-bit magnitude `round(511 · |c| · √2)`; the largest is `√(1 − Σc²)`.
//!
//! Containers:
//!
//! | version | container |
//! |---------|-----------|
//! | 2, 3    | one gzip stream of a 16-byte header (`NGSP`, version u32, count u32, degree u8, fractional bits u8, flags u8, reserved u8) and the six arrays |
//! | 4       | a plain 32-byte header (the same fields, then stream count u8, TOC offset u32, 12 reserved bytes), a TOC of (compressed u64, uncompressed u64) per non-empty array, then each array as its own zstd frame |
//!
//! Flags: bit 0 = antialiased (reported by [`describe_spz`], not kept in a
//! [`Scene`]); bit 1 = extensions, which are refused.
//!
//! Coordinates: the file holds the spec's right-up-back (RUB) axes; a
//! [`Scene`] holds the 3DGS PLY's right-down-front (RDF) axes, as the peer
//! (`splat-transform`) decodes to. Converting negates y and z of positions,
//! the y and z of quaternions, and the SH coefficients odd in y·z parity
//! (see `SH_FLIP`).

use std::io::{Read, Write};
use std::path::Path;

use super::antimatter::ALPHA_EPS;
use super::scene::{Scene, rest_per_channel, sigmoid};
use crate::format::input::{Extent, read_declared};
use crate::{Error, Result};

/// `NGSP`, the little-endian u32 0x5053474e.
pub const MAGIC: [u8; 4] = *b"NGSP";
/// The gzip member magic, first bytes of a v2/v3 file.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The version [`write_spz`] writes, as the peer does by default.
pub const DEFAULT_VERSION: u32 = 4;
/// Fractional bits of positions the writer uses when the scene fits
/// (±2047.99 at 2^-12 resolution), as the reference does.
pub const FRACTIONAL_BITS: u8 = 12;

/// Half the quantisation step of each attribute: the largest error of a
/// value inside the format's range, which the round-trip tests use as
/// tolerances. Values outside the range are clamped (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpzPrecision {
    /// Positions, at [`FRACTIONAL_BITS`]: 2^-13. In general 2^-(bits+1).
    pub position: f32,
    /// Log scales: 1/32 (step 1/16, range −10 ..= 5.9375).
    pub log_scale: f32,
    /// f_dc: 0.5 / 38.25 (step 1/38.25, range ±3.33).
    pub dc: f32,
    /// sigmoid(opacity): 0.5 / 255.
    pub alpha: f32,
    /// SH band 1: (4 + 0.5) / 128 (step 1/16 after bucketing; range −1 ..= 0.992).
    pub sh1: f32,
    /// SH bands 2–3: (8 + 0.5) / 128 (step 1/8).
    pub sh_rest: f32,
    /// Each rotation component of a unit quaternion, smallest-three (v3+):
    /// the stored three err by at most 0.5 · √½ / 511 = 0.00069, the
    /// rebuilt largest (≥ ½) by at most 3× that.
    pub rotation: f32,
}

/// The format's precision per attribute.
pub const SPZ_PRECISION: SpzPrecision = SpzPrecision {
    position: 1.0 / 8192.0,
    log_scale: 1.0 / 32.0,
    dc: 0.5 / 38.25,
    alpha: 0.5 / 255.0,
    sh1: 4.5 / 128.0,
    sh_rest: 8.5 / 128.0,
    rotation: 0.0021,
};

/// DC colour scale of the reference (not SH_C0: it leaves room for colours
/// outside 0..1).
const COLOR_SCALE: f32 = 0.15;
const SQRT1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Bucket sizes (in units of 1/128) of the SH bytes: 5 bits for band 1,
/// 4 bits for bands 2 and 3.
const SH1_BUCKET: i64 = 1 << (8 - 5);
const SH_REST_BUCKET: i64 = 1 << (8 - 4);
/// zstd level of the v4 streams (the reference's).
const ZSTD_LEVEL: i32 = 12;
/// The reference reader's bound: at most `file bytes · 1024 / 9` Gaussians
/// in a v4 file (a position alone is 9 bytes; no stream compresses 1024:1).
const MAX_RATIO: u64 = 1024;
const MIN_BYTES_PER_POINT: u64 = 9;
/// deflate expands at most 1032:1, so a gzip stream of B bytes inflates to
/// at most 1032·B (plus a little for its header).
const DEFLATE_MAX_RATIO: u64 = 1032;
/// Largest magnitude of a 24-bit signed integer that the writer uses.
const FIXED_MAX: f32 = 8_388_607.0;
const V4_HEADER: usize = 32;
const LEGACY_HEADER: usize = 16;
const STREAM_NAMES: [&str; 6] = [
    "positions",
    "alphas",
    "colours",
    "scales",
    "rotations",
    "SH",
];

/// Signs of the 15 SH coefficients (3DGS order, bands 1–3) under RUB ↔ RDF
/// (negate y and z): each basis function's parity in y and z.
const SH_FLIP: [f32; 15] = [
    -1.0, -1.0, 1.0, // y, z, x
    -1.0, 1.0, 1.0, -1.0, 1.0, // xy, yz, 3z²−1, xz, x²−y²
    -1.0, 1.0, -1.0, -1.0, 1.0, -1.0,
    1.0, // y(3x²−y²), xyz, y(5z²−1), z(5z²−3), x(5z²−1), z(x²−y²), x(x²−3y²)
];

/// Whether `path` has the extension `.spz` (case-insensitive).
pub fn is_spz_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("spz"))
}

/// What the header says.
#[derive(Clone, Copy, Debug)]
struct Header {
    version: u32,
    count: u32,
    sh_degree: u8,
    fractional_bits: u8,
    flags: u8,
    /// v4: stream count and TOC offset.
    ngsp: Option<(u8, u32)>,
}

impl Header {
    fn n(&self) -> u64 {
        u64::from(self.count)
    }

    /// Bytes of each of the six arrays (the last is 0 at degree 0).
    fn stream_sizes(&self) -> [u64; 6] {
        let n = self.n();
        let rot = if self.version >= 3 { 4 } else { 3 };
        let sh = 3 * rest_per_channel(self.sh_degree) as u64;
        [9 * n, n, 3 * n, 3 * n, rot * n, sh * n]
    }

    fn payload(&self) -> u64 {
        self.stream_sizes().iter().sum()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn byte_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// Parses and checks the fields shared by both header forms (`b` holds at
/// least 16 bytes).
fn parse_common(b: &[u8], path: &Path, ngsp: bool) -> Result<Header> {
    if b.get(0..4) != Some(&MAGIC[..]) {
        return Err(Error::format(
            path,
            "magic",
            "the gzip payload does not start with NGSP: not an spz file",
        ));
    }
    let version = u32_at(b, 4);
    let ok = if ngsp {
        version == 4
    } else {
        (2..=3).contains(&version)
    };
    if !ok {
        let why = match (version, ngsp) {
            (1, _) => "version 1 (float16 positions, never released) is not supported".to_owned(),
            (v, true) => {
                format!("version {v} with the plain NGSP header; that header is version 4")
            }
            (v, false) => format!(
                "unsupported version {v} in a gzip spz (this reads 2 and 3 there, 4 with the plain NGSP header)"
            ),
        };
        return Err(Error::format(path, "version", why));
    }
    let h = Header {
        version,
        count: u32_at(b, 8),
        sh_degree: byte_at(b, 12),
        fractional_bits: byte_at(b, 13),
        flags: byte_at(b, 14),
        ngsp: ngsp.then(|| (byte_at(b, 15), u32_at(b, 16))),
    };
    if h.count == 0 {
        return Err(Error::format(path, "count", "no Gaussians (count 0)"));
    }
    if h.sh_degree > 3 {
        return Err(Error::format(
            path,
            "sh degree",
            format!("{} is above 3, the highest a scene holds", h.sh_degree),
        ));
    }
    if h.fractional_bits > 31 {
        return Err(Error::format(
            path,
            "fractional bits",
            format!("{} is above 31", h.fractional_bits),
        ));
    }
    if h.flags & 0x2 != 0 {
        return Err(Error::format(
            path,
            "flags",
            "bit 1 (extensions) is set; spz extensions are not read",
        ));
    }
    if h.flags & !0x3 != 0 {
        return Err(Error::format(
            path,
            "flags",
            format!("unknown flag bits {:#04x}", h.flags & !0x3),
        ));
    }
    Ok(h)
}

/// The header and the six arrays of a file.
struct Packed {
    header: Header,
    streams: Vec<Vec<u8>>,
}

fn bad_magic(bytes: &[u8], path: &Path) -> Error {
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Error::format(
        path,
        "magic",
        format!(
            "not an spz file: it starts with [{}], expected gzip (1f 8b) or NGSP",
            head.join(" ")
        ),
    )
}

/// Opens the container: checks the header and returns the six arrays, each
/// exactly as long as the header declares.
fn unpack(bytes: &[u8], path: &Path) -> Result<Packed> {
    if bytes.starts_with(&MAGIC) {
        unpack_ngsp(bytes, path)
    } else if bytes.starts_with(&GZIP_MAGIC) {
        unpack_gzip(bytes, path)
    } else {
        Err(bad_magic(bytes, path))
    }
}

/// Inflates the 16-byte header of a gzip spz.
fn gzip_header(
    dec: &mut flate2::bufread::GzDecoder<&[u8]>,
    path: &Path,
) -> Result<[u8; LEGACY_HEADER]> {
    let mut head = [0u8; LEGACY_HEADER];
    let mut got = 0;
    while got < LEGACY_HEADER {
        match dec.read(&mut head[got..]) {
            Ok(0) => {
                return Err(Error::format(
                    path,
                    "header",
                    format!(
                        "truncated: the gzip stream holds {got} bytes, less than the 16-byte header"
                    ),
                ));
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gzip_error(path, &e)),
        }
    }
    Ok(head)
}

fn gzip_error(path: &Path, e: &std::io::Error) -> Error {
    Error::format(
        path,
        "gzip",
        format!("truncated or corrupt gzip stream: {e}"),
    )
}

fn unpack_gzip(bytes: &[u8], path: &Path) -> Result<Packed> {
    let mut dec = flate2::bufread::GzDecoder::new(bytes);
    let head = gzip_header(&mut dec, path)?;
    let header = parse_common(&head, path, false)?;
    let expected = header.payload();
    let cap = (bytes.len() as u64).saturating_mul(DEFLATE_MAX_RATIO) + 4096;
    if expected > cap {
        return Err(Error::format(
            path,
            "count",
            format!(
                "header says {} Gaussians = {expected} payload bytes, more than a {}-byte gzip stream can hold (deflate inflates at most 1032:1)",
                header.count,
                bytes.len()
            ),
        ));
    }
    let reserve = usize::try_from(expected.min(1 << 26)).unwrap_or(0);
    let mut payload = Vec::with_capacity(reserve);
    (&mut dec)
        .take(expected + 1)
        .read_to_end(&mut payload)
        .map_err(|e| gzip_error(path, &e))?;
    let got = payload.len() as u64;
    if got < expected {
        return Err(Error::format(
            path,
            "payload",
            format!(
                "truncated: header says {} Gaussians (SH degree {}, version {}) = {expected} bytes after the header, the gzip stream holds {got}",
                header.count, header.sh_degree, header.version
            ),
        ));
    }
    if got > expected {
        return Err(Error::format(
            path,
            "payload",
            format!(
                "longer than declared: header says {} Gaussians (SH degree {}, version {}) = {expected} bytes after the header, the gzip stream holds more",
                header.count, header.sh_degree, header.version
            ),
        ));
    }
    let rest = dec.into_inner();
    if !rest.is_empty() {
        return Err(Error::format(
            path,
            "gzip",
            format!("{} trailing bytes after the gzip stream", rest.len()),
        ));
    }
    let mut streams = Vec::with_capacity(6);
    let mut at = 0usize;
    for s in header.stream_sizes() {
        let s = s as usize; // the payload of that length is in memory
        streams.push(payload.get(at..at + s).unwrap_or_default().to_vec());
        at += s;
    }
    Ok(Packed { header, streams })
}

/// The v4 header's stream table: (compressed, uncompressed, offset) per
/// non-empty array, checked against the file's length; and the file's
/// total length.
fn ngsp_toc(bytes: &[u8], header: &Header, path: &Path) -> Result<Vec<(u64, u64, u64)>> {
    let (ns, toc) = header.ngsp.unwrap_or((0, 0));
    let sizes = header.stream_sizes();
    let want = sizes.iter().filter(|&&s| s > 0).count();
    if usize::from(ns) != want {
        return Err(Error::format(
            path,
            "stream count",
            format!(
                "{ns} streams; SH degree {} needs {want} (positions, alphas, colours, scales, rotations{})",
                header.sh_degree,
                if want == 6 { ", SH" } else { "" }
            ),
        ));
    }
    if (toc as usize) < V4_HEADER {
        return Err(Error::format(
            path,
            "toc offset",
            format!("{toc} is inside the 32-byte header"),
        ));
    }
    let toc_end = u64::from(toc) + 16 * u64::from(ns);
    let len = bytes.len() as u64;
    if toc_end > len {
        return Err(Error::format(
            path,
            "toc",
            format!("truncated: the stream table ends at byte {toc_end}, the file has {len}"),
        ));
    }
    let mut out = Vec::with_capacity(want);
    let mut at = toc_end;
    for (i, &exp) in sizes.iter().filter(|&&s| s > 0).enumerate() {
        let e = toc as usize + 16 * i;
        let (cs, us) = (u64_at(bytes, e), u64_at(bytes, e + 8));
        let name = STREAM_NAMES.get(i).copied().unwrap_or("?");
        if us != exp {
            return Err(Error::format(
                path,
                format!("stream {name}"),
                format!(
                    "declares {us} uncompressed bytes; {} Gaussians need {exp}",
                    header.count
                ),
            ));
        }
        if cs > len - at {
            return Err(Error::format(
                path,
                format!("stream {name}"),
                format!(
                    "truncated: {cs} compressed bytes declared at byte {at}, the file has {} left",
                    len - at
                ),
            ));
        }
        out.push((cs, us, at));
        at += cs;
    }
    if at != len {
        return Err(Error::format(
            path,
            "size",
            format!("{} trailing bytes after the last stream", len - at),
        ));
    }
    Ok(out)
}

fn ngsp_header(bytes: &[u8], path: &Path) -> Result<Header> {
    if bytes.len() < V4_HEADER {
        return Err(Error::format(
            path,
            "header",
            format!(
                "truncated: {} bytes, less than the 32-byte v4 header",
                bytes.len()
            ),
        ));
    }
    let header = parse_common(bytes, path, true)?;
    let cap = (bytes.len() as u64).saturating_mul(MAX_RATIO) / MIN_BYTES_PER_POINT;
    if header.n() > cap {
        return Err(Error::format(
            path,
            "count",
            format!(
                "header says {} Gaussians, more than a {}-byte file can hold (at most file bytes · 1024 / 9, as the reference reader)",
                header.count,
                bytes.len()
            ),
        ));
    }
    Ok(header)
}

fn unpack_ngsp(bytes: &[u8], path: &Path) -> Result<Packed> {
    let header = ngsp_header(bytes, path)?;
    let toc = ngsp_toc(bytes, &header, path)?;
    let mut streams = Vec::with_capacity(6);
    for (i, &(cs, us, at)) in toc.iter().enumerate() {
        let name = STREAM_NAMES.get(i).copied().unwrap_or("?");
        let src = bytes
            .get(at as usize..(at + cs) as usize)
            .unwrap_or_default();
        let out = zstd::bulk::decompress(src, us as usize).map_err(|e| {
            Error::format(
                path,
                format!("stream {name}"),
                format!("bad zstd data (or more than the declared {us} bytes): {e}"),
            )
        })?;
        if out.len() as u64 != us {
            return Err(Error::format(
                path,
                format!("stream {name}"),
                format!(
                    "decompresses to {} bytes, the table declares {us}",
                    out.len()
                ),
            ));
        }
        streams.push(out);
    }
    streams.resize(6, Vec::new());
    Ok(Packed { header, streams })
}

/// Reads an `.spz` file (v2, v3 or v4). See [`read_spz_bytes`].
///
/// A gzip spz (v2, v3) declares no compressed length, so it is read only
/// from a regular file; a v4 file is read as far as its stream table
/// declares (and one byte more), so it may come from a pipe.
pub fn read_spz(path: &Path) -> Result<Scene> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let bytes = if meta.is_file() {
        std::fs::read(path).map_err(|e| Error::io(path, e))?
    } else {
        read_declared(path, |b| spz_extent(b, path))?
    };
    read_spz_bytes(&bytes, path)
}

fn spz_extent(b: &[u8], path: &Path) -> Result<Extent> {
    if b.len() < 4 {
        return Ok(Extent::Need(4));
    }
    if b.starts_with(&GZIP_MAGIC) {
        return Err(Error::format(
            path,
            "file",
            "a gzip spz (v2, v3) has no declared length, so it must be a regular file",
        ));
    }
    if !b.starts_with(&MAGIC) {
        return Err(bad_magic(b, path));
    }
    if b.len() < V4_HEADER {
        return Ok(Extent::Need(V4_HEADER as u64));
    }
    let (ns, toc) = (byte_at(b, 15), u32_at(b, 16));
    let toc_end = u64::from(toc).max(V4_HEADER as u64) + 16 * u64::from(ns);
    if (b.len() as u64) < toc_end {
        return Ok(Extent::Need(toc_end));
    }
    let mut total = toc_end;
    for i in 0..usize::from(ns) {
        let e = toc as usize + 16 * i;
        total = crate::format::input::add_len(total, u64_at(b, e), path, "toc")?;
    }
    Ok(Extent::Total(total))
}

/// Decodes `.spz` bytes into a [`Scene`] in the 3DGS PLY's axes and units;
/// `path` only names the source in error messages.
///
/// - position: the 24-bit integer / 2^fractional_bits, y and z negated;
/// - scale byte `b` → log scale `b/16 − 10`;
/// - colour byte `b` → `f_dc = (b/255 − 0.5)/0.15`;
/// - alpha byte `b` → opacity `ln(a/(1−a))`, `a = b/255` clamped to
///   `[ALPHA_EPS, 1 − ALPHA_EPS]` ([`ALPHA_EPS`]), so 0 and 255 decode to
///   finite logits that re-encode to the same byte;
/// - rotation: x y z w as the version stores it (the rebuilt component's
///   `1 − Σc²` clamped at 0), y and z negated, then (w, x, y, z);
/// - SH byte `b` → `(b − 128)/128`, with the signs of `SH_FLIP`.
///
/// Errors (one line naming the file and the field): wrong magic, a
/// version other than 2–3 (gzip) or 4 (NGSP), SH degree above 3, a count
/// of 0, extension or unknown flags, a corrupt or truncated gzip or zstd
/// stream, a payload shorter or longer than the header declares, trailing
/// bytes, and a stream table that does not match the count.
pub fn read_spz_bytes(bytes: &[u8], path: &Path) -> Result<Scene> {
    let Packed { header, streams } = unpack(bytes, path)?;
    if header.flags & 1 != 0 {
        log::warn!(
            "{}: the spz is flagged antialiased; a scene does not keep that flag",
            path.display()
        );
    }
    let n = header.count as usize;
    let get = |i: usize| streams.get(i).map(Vec::as_slice).unwrap_or_default();
    let (pos, alpha, col, scl, rot, sh) = (get(0), get(1), get(2), get(3), get(4), get(5));

    let step = 1.0f32 / (1u64 << header.fractional_bits) as f32;
    let flip_p = [1.0f32, -1.0, -1.0];
    let positions = pos
        .chunks_exact(9)
        .map(|p| {
            std::array::from_fn(|k| {
                let b = |j: usize| u32::from(byte_at(p, 3 * k + j));
                let raw = b(0) | b(1) << 8 | b(2) << 16;
                let fixed = ((raw << 8) as i32) >> 8; // sign-extend 24 bits
                flip_p[k] * (fixed as f32 * step)
            })
        })
        .collect();
    let opacity = alpha
        .iter()
        .map(|&b| {
            let a = (f32::from(b) / 255.0).clamp(ALPHA_EPS, 1.0 - ALPHA_EPS);
            (a / (1.0 - a)).ln()
        })
        .collect();
    let dc = col
        .chunks_exact(3)
        .map(|c| std::array::from_fn(|k| ((f32::from(byte_at(c, k)) / 255.0) - 0.5) / COLOR_SCALE))
        .collect();
    let scales = scl
        .chunks_exact(3)
        .map(|s| std::array::from_fn(|k| f32::from(byte_at(s, k)) / 16.0 - 10.0))
        .collect();
    let rotations = if header.version >= 3 {
        rot.chunks_exact(4)
            .map(|r| to_scene_quat(unpack_smallest_three(u32_at(r, 0))))
            .collect()
    } else {
        rot.chunks_exact(3)
            .map(|r| to_scene_quat(unpack_first_three([r[0], r[1], r[2]])))
            .collect()
    };
    let k = rest_per_channel(header.sh_degree);
    let mut sh_rest = vec![0f32; n * 3 * k];
    if k > 0 {
        for (dst, src) in sh_rest.chunks_exact_mut(3 * k).zip(sh.chunks_exact(3 * k)) {
            for j in 0..k {
                let f = SH_FLIP.get(j).copied().unwrap_or(1.0);
                for c in 0..3 {
                    let b = f32::from(byte_at(src, 3 * j + c));
                    if let Some(d) = dst.get_mut(c * k + j) {
                        *d = f * ((b - 128.0) / 128.0);
                    }
                }
            }
        }
    }
    let scene = Scene {
        sh_degree: header.sh_degree,
        positions,
        normals: None,
        dc,
        sh_rest,
        opacity,
        scales,
        rotations,
        ..Scene::default()
    };
    scene
        .check_consistent()
        .map_err(|e| Error::format(path, "payload", e))?;
    Ok(scene)
}

/// File quaternion (x, y, z, w) in RUB → scene (w, x, y, z) in RDF.
fn to_scene_quat(q: [f32; 4]) -> [f32; 4] {
    [q[3], q[0], -q[1], -q[2]]
}

/// Scene (w, x, y, z) in RDF → file (x, y, z, w) in RUB, unit length
/// (a zero or non-finite quaternion becomes the identity).
fn to_file_quat(q: [f32; 4]) -> [f32; 4] {
    let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return [0.0, 0.0, 0.0, 1.0];
    }
    let u = q.map(|v| v / norm);
    [u[1], -u[2], -u[3], u[0]]
}

fn unpack_smallest_three(mut comp: u32) -> [f32; 4] {
    let largest = (comp >> 30) as usize;
    let mut q = [0f32; 4];
    let mut sum = 0f32;
    for i in (0..4).rev() {
        if i == largest {
            continue;
        }
        let mag = comp & 0x1ff;
        let neg = (comp >> 9) & 1 == 1;
        comp >>= 10;
        let v = SQRT1_2 * (mag as f32) / 511.0;
        let v = if neg { -v } else { v };
        q[i] = v;
        sum += v * v;
    }
    q[largest] = (1.0 - sum).max(0.0).sqrt();
    q
}

fn pack_smallest_three(q: [f32; 4]) -> u32 {
    let mut largest = 0;
    for i in 1..4 {
        if q[i].abs() > q[largest].abs() {
            largest = i;
        }
    }
    let negate = q[largest] < 0.0;
    let mut comp = largest as u32;
    for (i, &v) in q.iter().enumerate() {
        if i == largest {
            continue;
        }
        let mag = ((511.0 * (v.abs() / SQRT1_2) + 0.5) as u32).min(511);
        // A zero magnitude carries no sign: writing it 0 keeps a write of
        // what was read byte-identical.
        let neg = u32::from(mag > 0 && ((v < 0.0) != negate));
        comp = (comp << 10) | (neg << 9) | mag;
    }
    comp
}

fn unpack_first_three(r: [u8; 3]) -> [f32; 4] {
    let xyz = r.map(|b| f32::from(b) * (1.0 / 127.5) - 1.0);
    let sq = xyz.iter().map(|v| v * v).sum::<f32>();
    [xyz[0], xyz[1], xyz[2], (1.0 - sq).max(0.0).sqrt()]
}

/// A value → byte, rounded and clamped (NaN → 0).
fn to_u8(x: f32) -> u8 {
    x.round().clamp(0.0, 255.0) as u8
}

fn quantize_sh(x: f32, bucket: i64) -> u8 {
    let q = ((x * 128.0).round() + 128.0) as i64;
    let q = (q + bucket / 2) / bucket * bucket;
    q.clamp(0, 255) as u8
}

/// The fractional bits the writer uses: [`FRACTIONAL_BITS`] unless the
/// largest |coordinate| does not fit 24 bits there, else the most that fit.
fn choose_fractional_bits(scene: &Scene) -> u8 {
    let max = scene
        .positions
        .iter()
        .flat_map(|p| p.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    let mut fb = FRACTIONAL_BITS;
    while fb > 0 && (max * (1u32 << fb) as f32).round() > FIXED_MAX {
        fb -= 1;
    }
    fb
}

/// Checks what the writer refuses: an inconsistent or empty scene, more
/// than 2^32 − 1 Gaussians, a NaN anywhere, a non-finite position.
fn check_writable(scene: &Scene, path: &Path) -> Result<()> {
    scene
        .check_consistent()
        .map_err(|e| Error::InvalidArgument(format!("scene for {}: {e}", path.display())))?;
    if scene.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: no Gaussians to write (an spz holds at least one)",
            path.display()
        )));
    }
    if u32::try_from(scene.len()).is_err() {
        return Err(Error::InvalidArgument(format!(
            "{}: {} Gaussians; an spz holds at most 2^32 − 1",
            path.display(),
            scene.len()
        )));
    }
    let d = scene.rest_dim();
    for i in 0..scene.len() {
        let fields: [(&str, &[f32]); 6] = [
            ("position", &scene.positions[i]),
            ("f_dc", &scene.dc[i]),
            ("opacity", std::slice::from_ref(&scene.opacity[i])),
            ("scale", &scene.scales[i]),
            ("rotation", &scene.rotations[i]),
            ("f_rest", &scene.sh_rest[i * d..(i + 1) * d]),
        ];
        for (name, v) in fields {
            let bad = if name == "position" {
                v.iter().any(|x| !x.is_finite())
            } else {
                v.iter().any(|x| x.is_nan())
            };
            if bad {
                return Err(Error::InvalidArgument(format!(
                    "{}: Gaussian {i} cannot be written: {name} {v:?} (positions must be finite, no value NaN)",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// The six arrays of `scene` in the given version's encoding, and the
/// fractional bits used.
fn pack(scene: &Scene, version: u32, path: &Path) -> ([Vec<u8>; 6], u8) {
    let n = scene.len();
    let fb = choose_fractional_bits(scene);
    let scale = (1u32 << fb) as f32;
    let flip_p = [1.0f32, -1.0, -1.0];
    let mut clamped = false;
    let mut pos = Vec::with_capacity(9 * n);
    for p in &scene.positions {
        for k in 0..3 {
            let v = (flip_p[k] * (p[k] * scale)).round();
            if v.abs() > FIXED_MAX {
                clamped = true;
            }
            let fixed = v.clamp(-FIXED_MAX, FIXED_MAX) as i32;
            pos.extend_from_slice(&fixed.to_le_bytes()[..3]);
        }
    }
    if clamped {
        log::warn!(
            "{}: positions beyond ±{FIXED_MAX} do not fit the 24-bit fixed point; clamped",
            path.display()
        );
    }
    let alphas = scene
        .opacity
        .iter()
        .map(|&o| to_u8(sigmoid(o) * 255.0))
        .collect();
    let colours = scene
        .dc
        .iter()
        .flat_map(|c| c.map(|v| to_u8(v * (COLOR_SCALE * 255.0) + 0.5 * 255.0)))
        .collect();
    let scales = scene
        .scales
        .iter()
        .flat_map(|s| s.map(|v| to_u8((v + 10.0) * 16.0)))
        .collect();
    let rotations = if version >= 3 {
        scene
            .rotations
            .iter()
            .flat_map(|&q| pack_smallest_three(to_file_quat(q)).to_le_bytes())
            .collect()
    } else {
        Vec::new() // not written (see write_spz_version)
    };
    let k = rest_per_channel(scene.sh_degree);
    let mut sh = vec![0u8; n * 3 * k];
    if k > 0 {
        for (dst, src) in sh
            .chunks_exact_mut(3 * k)
            .zip(scene.sh_rest.chunks_exact(3 * k))
        {
            for j in 0..k {
                let f = SH_FLIP.get(j).copied().unwrap_or(1.0);
                let bucket = if j < 3 { SH1_BUCKET } else { SH_REST_BUCKET };
                for c in 0..3 {
                    let x = src.get(c * k + j).copied().unwrap_or(0.0);
                    if let Some(d) = dst.get_mut(3 * j + c) {
                        *d = quantize_sh(f * x, bucket);
                    }
                }
            }
        }
    }
    ([pos, alphas, colours, scales, rotations, sh], fb)
}

/// The bytes of `scene` as an spz of `version` (3 or 4); what
/// [`write_spz_version`] writes. Deterministic: the same scene gives the
/// same bytes.
pub fn to_spz_bytes(scene: &Scene, version: u32, path: &Path) -> Result<Vec<u8>> {
    if !(3..=4).contains(&version) {
        return Err(Error::InvalidArgument(format!(
            "{}: spz version {version} is not written (versions 3 and 4 are)",
            path.display()
        )));
    }
    check_writable(scene, path)?;
    if scene.normals.is_some() || scene.extras.stride() > 0 {
        log::warn!(
            "{}: the spz layout has no normals or extra properties; they are dropped",
            path.display()
        );
    }
    let (streams, fb) = pack(scene, version, path);
    let mut head = Vec::with_capacity(V4_HEADER);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&(scene.len() as u32).to_le_bytes());
    head.extend_from_slice(&[scene.sh_degree, fb, 0]);
    if version == 3 {
        head.push(0);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&head).map_err(|e| Error::io(path, e))?;
        for s in &streams {
            enc.write_all(s).map_err(|e| Error::io(path, e))?;
        }
        return enc.finish().map_err(|e| Error::io(path, e));
    }
    let mut chunks = Vec::with_capacity(6);
    for s in streams.iter().filter(|s| !s.is_empty()) {
        let z = zstd::bulk::compress(s, ZSTD_LEVEL).map_err(|e| Error::io(path, e))?;
        chunks.push((z, s.len() as u64));
    }
    head.push(chunks.len() as u8);
    head.extend_from_slice(&(V4_HEADER as u32).to_le_bytes());
    head.resize(V4_HEADER, 0);
    for (z, us) in &chunks {
        head.extend_from_slice(&(z.len() as u64).to_le_bytes());
        head.extend_from_slice(&us.to_le_bytes());
    }
    for (z, _) in &chunks {
        head.extend_from_slice(z);
    }
    Ok(head)
}

/// Writes `scene` as an spz of version [`DEFAULT_VERSION`] (4), atomically.
/// See [`write_spz_version`].
pub fn write_spz(path: &Path, scene: &Scene) -> Result<u64> {
    write_spz_version(path, scene, DEFAULT_VERSION)
}

/// Writes `scene` as an spz of `version` (3: gzip, 4: NGSP + zstd),
/// atomically; returns the bytes written.
///
/// Values outside a byte's range are clamped (scales to −10 ..= 5.94, f_dc
/// to ±3.33, SH to −1 ..= 0.99); rotations are normalised (a zero or
/// non-finite one is written as the identity); positions use
/// [`FRACTIONAL_BITS`] unless the scene is too large for 24 bits, then the
/// most fractional bits that fit (beyond ±8388607 they are clamped, with a
/// warning). Normals and extras are dropped; the antialiased flag is 0.
///
/// Errors: a version other than 3 or 4, an inconsistent or empty scene, a
/// NaN value or a non-finite position ([`Error::InvalidArgument`] naming
/// the Gaussian).
pub fn write_spz_version(path: &Path, scene: &Scene, version: u32) -> Result<u64> {
    let bytes = to_spz_bytes(scene, version, path)?;
    crate::format::write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// Header facts of an spz for `tq3d info`, without decoding the arrays
/// (a gzip spz inflates its first 16 bytes only). The header is checked as
/// the reader checks it.
pub fn describe_spz(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let (header, container) = if bytes.starts_with(&MAGIC) {
        let h = ngsp_header(bytes, path)?;
        ngsp_toc(bytes, &h, path)?;
        (h, "NGSP header + zstd streams")
    } else if bytes.starts_with(&GZIP_MAGIC) {
        let mut dec = flate2::bufread::GzDecoder::new(bytes);
        let head = gzip_header(&mut dec, path)?;
        (parse_common(&head, path, false)?, "gzip")
    } else {
        return Err(bad_magic(bytes, path));
    };
    let kv = |k: &str, v: String| (k.to_owned(), v);
    let mut out = vec![
        kv("version", header.version.to_string()),
        kv("container", container.to_owned()),
        kv("count", header.count.to_string()),
        kv("sh degree", header.sh_degree.to_string()),
        kv("fractional bits", header.fractional_bits.to_string()),
        kv(
            "flags",
            format!(
                "{:#04x}{}",
                header.flags,
                if header.flags & 1 != 0 {
                    " (antialiased)"
                } else {
                    ""
                }
            ),
        ),
        kv(
            "rotation",
            if header.version >= 3 {
                "smallest three (4 bytes)".to_owned()
            } else {
                "x y z (3 bytes)".to_owned()
            },
        ),
        kv("payload bytes", header.payload().to_string()),
    ];
    if let Some((ns, toc)) = header.ngsp {
        out.push(kv("streams", ns.to_string()));
        out.push(kv("toc offset", toc.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_three_round_trips_its_own_bytes() {
        for comp in [0u32, 0x4000_0000, 0xC01F_F3FF, 0x8020_0401, 0x7FFF_FFFF] {
            let q = unpack_smallest_three(comp);
            let norm: f32 = q.iter().map(|v| v * v).sum();
            // Canonical codes only: the implied component must be the
            // largest (0xC01FF3FF stores two of 0.70 and implies 0.08, a
            // code no writer makes, so its re-encoding differs).
            let largest = (comp >> 30) as usize;
            let canonical = q.iter().all(|v| v.abs() <= q[largest].abs());
            if norm > 0.999 && canonical {
                let back = pack_smallest_three(q);
                assert_eq!(
                    unpack_smallest_three(back),
                    q,
                    "{comp:#x} → {q:?} → {back:#x}"
                );
            }
        }
    }

    #[test]
    fn sh_quantisation_is_idempotent() {
        for b in 0..=255u8 {
            for bucket in [SH1_BUCKET, SH_REST_BUCKET] {
                let q = quantize_sh((f32::from(b) - 128.0) / 128.0, bucket);
                let again = quantize_sh((f32::from(q) - 128.0) / 128.0, bucket);
                assert_eq!(q, again, "byte {b}, bucket {bucket}");
            }
        }
    }

    #[test]
    fn extension() {
        assert!(is_spz_path(Path::new("a/b.SPZ")));
        assert!(!is_spz_path(Path::new("a/b.splat")));
    }
}

//! The `.tq3g` file: a compressed hash grid and everything needed to decode
//! it. docs/FORMAT.md ("Hash-grid file") is the specification; this is its
//! reference implementation. It follows the `.tqv` layout: a 64-byte header
//! with its CRC-32, then sections of a 16-byte header (tag, payload length,
//! CRC-32 of the payload) and the payload.
//!
//! ```text
//! header  64 bytes  magic "TQ3D-GRD", version, L, F, g, dtype, rank, kinds, S, entries, seed, CRC
//! LVL     per level: entries (u64), log2 scale range lo, hi (f32)
//! ROT     the rotation Π (as in .tqv)
//! CBK     per width used: b, 2^b centroids (f32)
//! WID     one zstd frame: a 4-bit width per group
//! SCL     S-bit log-scale codes of the coded groups
//! COD     the packed codes, d·b_i bits per group
//! ```

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::codec::packing::copy_bits;
use crate::format::input::{Extent, add_len, read_declared};
use crate::format::write_atomic;
use crate::grid::compressed::{CompressedGrid, ScaleRange, WidthMode};
use crate::grid::group::Groups;
use crate::grid::table::{Dtype, MAX_FEATURES, MAX_LEVELS};
use crate::{Error, Result, Rotation, RotationKind, ScaleMode};

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"TQ3D-GRD";
/// The version this library writes and reads.
pub const VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Size of each section header.
pub const SECTION_HEADER_LEN: usize = 16;
/// The sections, in file order.
pub const SECTIONS: [[u8; 4]; 6] = [*b"LVL ", *b"ROT ", *b"CBK ", *b"WID ", *b"SCL ", *b"COD "];
/// Bytes of one level's `LVL ` record.
pub const LEVEL_LEN: usize = 16;
/// A file may declare at most this many values per byte it holds: the
/// widths are zstd-coded, so a grid of all-negligible groups is legitimately
/// tiny, but not without bound (zstd itself stays below about 2^15).
pub const MAX_VALUES_PER_BYTE: u64 = 1 << 16;
/// The largest |log2 scale| a file may hold: every decoded value stays
/// finite in f32.
pub const MAX_LOG2_SCALE: f32 = 100.0;
/// The zstd level of `WID `.
const ZSTD_LEVEL: i32 = 19;

/// The nibble-packed widths: group 2k in the low nibble of byte k.
fn pack_widths(w: &[u8]) -> Vec<u8> {
    w.chunks(2)
        .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4))
        .collect()
}

/// `WID `'s payload for these widths.
pub(crate) fn width_stream(widths: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(&pack_widths(widths), ZSTD_LEVEL)
        .map_err(|e| Error::InvalidArgument(format!("zstd failed on the widths: {e}")))
}

/// Packs S-bit codes (S ≤ 16) LSB-first.
fn pack_wide(codes: &[u32], bits: u8) -> Vec<u8> {
    let b = bits as usize;
    let mut out = vec![0u8; (codes.len() * b).div_ceil(8)];
    for (i, &k) in codes.iter().enumerate() {
        copy_bits(&k.to_le_bytes(), 0, &mut out, i * b, b);
    }
    out
}

/// Unpacks `n` S-bit codes.
fn unpack_wide(bytes: &[u8], bits: u8, n: usize) -> Vec<u32> {
    let b = bits as usize;
    (0..n)
        .map(|i| {
            let mut w = [0u8; 4];
            copy_bits(bytes, i * b, &mut w, 0, b);
            u32::from_le_bytes(w)
        })
        .collect()
}

/// `CBK `'s payload.
fn codebook_stream(c: &CompressedGrid) -> Vec<u8> {
    let used: Vec<(u8, &Vec<f32>)> = c
        .centroids
        .iter()
        .enumerate()
        .filter_map(|(b, t)| t.as_ref().map(|t| (b as u8, t)))
        .collect();
    let mut out = vec![used.len() as u8];
    for (b, t) in used {
        out.push(b);
        out.extend(t.iter().flat_map(|v| v.to_le_bytes()));
    }
    out
}

/// Exact length of `CBK ` for the widths used.
pub fn codebook_len(used: &[u8]) -> u64 {
    1 + used.iter().map(|&b| 1 + 4 * (1u64 << b)).sum::<u64>()
}

/// Bytes of everything but `CBK `, `WID `, `SCL ` and `COD `: the header,
/// the section headers, `LVL ` and `ROT `.
pub fn fixed_len(levels: usize, rotation_bytes: usize) -> u64 {
    (HEADER_LEN + SECTIONS.len() * SECTION_HEADER_LEN + levels * LEVEL_LEN + rotation_bytes) as u64
}

fn rotation_code(kind: RotationKind) -> u8 {
    match kind {
        RotationKind::Dense => 0,
        RotationKind::Hadamard => 1,
    }
}

/// Serialises a compressed grid.
pub fn to_bytes(c: &CompressedGrid) -> Result<Vec<u8>> {
    let groups = c.groups()?;
    if c.widths.len() != groups.count() || c.scale_ranges.len() != c.levels.len() {
        return Err(Error::Shape(
            "widths or scale ranges do not match the levels".into(),
        ));
    }
    // What the reader refuses is never written.
    for (l, r) in c.scale_ranges.iter().enumerate() {
        if !(r.lo.abs() <= MAX_LOG2_SCALE && r.hi.abs() <= MAX_LOG2_SCALE && r.lo <= r.hi) {
            return Err(Error::InvalidArgument(format!(
                "level {l}: its groups' scales span 2^{} to 2^{}, beyond the .tq3g range of 2^±{MAX_LOG2_SCALE}; scale the table nearer 1 first",
                r.lo, r.hi
            )));
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + c.codes.len() + 4096);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(c.levels.len() as u32).to_le_bytes());
    out.extend_from_slice(&(c.features as u32).to_le_bytes());
    out.extend_from_slice(&(c.group as u32).to_le_bytes());
    out.push(match c.dtype {
        Dtype::F32 => 0,
        Dtype::F16 => 1,
    });
    out.push(c.shape.len() as u8);
    out.push(rotation_code(c.rotation.kind()));
    out.push(c.scale_bits);
    out.push(match c.scale_mode {
        ScaleMode::Norm => 0,
        ScaleMode::LeastSquares => 1,
    });
    out.push(c.width_mode as u8);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&(c.levels.iter().sum::<usize>() as u64).to_le_bytes());
    out.extend_from_slice(&c.seed.to_le_bytes());
    out.extend_from_slice(&(SECTIONS.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);

    let mut lvl = Vec::with_capacity(c.levels.len() * LEVEL_LEN);
    for (t, r) in c.levels.iter().zip(&c.scale_ranges) {
        lvl.extend_from_slice(&(*t as u64).to_le_bytes());
        lvl.extend_from_slice(&r.lo.to_le_bytes());
        lvl.extend_from_slice(&r.hi.to_le_bytes());
    }
    let payloads = [
        lvl,
        c.rotation.to_bytes(),
        codebook_stream(c),
        width_stream(&c.widths)?,
        pack_wide(&c.scale_codes, c.scale_bits),
    ];
    for (tag, payload) in SECTIONS
        .iter()
        .zip(payloads.iter().map(|p| &p[..]).chain([&c.codes[..]]))
    {
        out.extend_from_slice(tag);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    Ok(out)
}

/// Writes a file atomically (or to standard output, as `-`); returns its
/// length in bytes.
pub fn write(path: &Path, c: &CompressedGrid) -> Result<u64> {
    let bytes = to_bytes(c)?;
    write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// Reads and fully validates a file.
pub fn read(path: &Path) -> Result<CompressedGrid> {
    from_bytes(&read_bytes(path)?, path)
}

/// Reads a file's bytes as far as its headers declare, and no further.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    read_declared(path, |b| extent(b, path))
}

fn extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    if bytes.len() < HEADER_LEN {
        return Ok(Extent::Need(HEADER_LEN as u64));
    }
    parse_header(bytes, path)?;
    let mut at = HEADER_LEN as u64;
    for _ in SECTIONS {
        let end = add_len(at, SECTION_HEADER_LEN as u64, path, "section length")?;
        if (bytes.len() as u64) < end {
            return Ok(Extent::Need(end));
        }
        at = add_len(end, u64_at(bytes, at as usize + 4), path, "section length")?;
    }
    Ok(Extent::Total(at))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}

/// The header's fields, checked.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Levels L.
    pub levels: usize,
    /// Features per entry F.
    pub features: usize,
    /// Entries per group g.
    pub group: usize,
    /// The table's dtype.
    pub dtype: Dtype,
    /// The table's rank (1, 2 or 3).
    pub rank: u8,
    /// The rotation family.
    pub rotation: RotationKind,
    /// Bits per scale code S.
    pub scale_bits: u8,
    /// The scale convention.
    pub scale_mode: ScaleMode,
    /// How the widths were chosen.
    pub width_mode: WidthMode,
    /// Total entries Σ T_l.
    pub entries: u64,
    /// The rotation's seed.
    pub seed: u64,
}

/// Parses and checks the fixed header. `path` only labels errors.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(bad(
            "magic",
            "not a turboquant3d hash-grid (.tq3g) file: the first 8 bytes are not \"TQ3D-GRD\""
                .into(),
        ));
    }
    if bytes.len() < HEADER_LEN {
        return Err(bad(
            "header",
            format!(
                "truncated: {} bytes, the header alone is {HEADER_LEN}",
                bytes.len()
            ),
        ));
    }
    let stored = u32_at(bytes, 60);
    let computed = crc32fast::hash(&bytes[..60]);
    if stored != computed {
        return Err(Error::Checksum {
            path: path.into(),
            section: "header".into(),
            stored,
            computed,
        });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(bad(
            "version",
            format!("{version}; this build reads version {VERSION}"),
        ));
    }
    for (lo, hi) in [(10, 12), (30, 32), (52, 60)] {
        if bytes[lo..hi].iter().any(|&x| x != 0) {
            return Err(bad(
                "reserved bytes",
                format!("bytes {lo}..{hi} must be zero (a newer writer, or a damaged file)"),
            ));
        }
    }
    let levels = u32_at(bytes, 12) as usize;
    if !(1..=MAX_LEVELS).contains(&levels) {
        return Err(bad(
            "level count",
            format!("{levels}; expected 1..={MAX_LEVELS}"),
        ));
    }
    let features = u32_at(bytes, 16) as usize;
    if !(1..=MAX_FEATURES).contains(&features) {
        return Err(bad(
            "features",
            format!("F = {features}; expected 1..={MAX_FEATURES}"),
        ));
    }
    let group = u32_at(bytes, 20) as usize;
    Groups::new(&[1], features, group).map_err(|e| bad("group", e.to_string()))?;
    let dtype = match bytes[24] {
        0 => Dtype::F32,
        1 => Dtype::F16,
        v => return Err(bad("dtype", format!("unknown code {v} (0 f32, 1 f16)"))),
    };
    let rank = bytes[25];
    if !(1..=3).contains(&rank) {
        return Err(bad("rank", format!("{rank}; expected 1, 2 or 3")));
    }
    let rotation = match bytes[26] {
        0 => RotationKind::Dense,
        1 => RotationKind::Hadamard,
        v => return Err(bad("rotation kind", format!("unknown code {v}"))),
    };
    let scale_bits = bytes[27];
    if !(1..=16).contains(&scale_bits) {
        return Err(bad(
            "scale bits",
            format!("S = {scale_bits}; expected 1..=16"),
        ));
    }
    let scale_mode = match bytes[28] {
        0 => ScaleMode::Norm,
        1 => ScaleMode::LeastSquares,
        v => return Err(bad("scale mode", format!("unknown code {v}"))),
    };
    let width_mode = match bytes[29] {
        0 => WidthMode::PerGroup,
        1 => WidthMode::PerLevel,
        v => return Err(bad("width mode", format!("unknown code {v}"))),
    };
    if u32_at(bytes, 48) as usize != SECTIONS.len() {
        return Err(bad(
            "section count",
            format!("{}, expected {}", u32_at(bytes, 48), SECTIONS.len()),
        ));
    }
    Ok(Header {
        levels,
        features,
        group,
        dtype,
        rank,
        rotation,
        scale_bits,
        scale_mode,
        width_mode,
        entries: u64_at(bytes, 32),
        seed: u64_at(bytes, 40),
    })
}

/// The sections' payloads, CRC-checked, in file order.
pub fn sections<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<&'a [u8]>> {
    let mut at = HEADER_LEN;
    let mut out = Vec::with_capacity(SECTIONS.len());
    for tag in SECTIONS {
        let name = String::from_utf8_lossy(&tag).trim_end().to_string();
        let head = bytes.get(at..at + SECTION_HEADER_LEN).ok_or_else(|| {
            Error::format(
                path,
                format!("section {name}"),
                format!("truncated: the file ends at byte {}", bytes.len()),
            )
        })?;
        if head[..4] != tag {
            return Err(Error::format(
                path,
                format!("section {name}"),
                format!(
                    "found tag {:?} where {name} belongs",
                    String::from_utf8_lossy(&head[..4])
                ),
            ));
        }
        let len = u64_at(head, 4);
        let start = at + SECTION_HEADER_LEN;
        let payload = usize::try_from(len)
            .ok()
            .and_then(|l| bytes.get(start..start.checked_add(l)?))
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!("section {name}"),
                    format!(
                        "declares {len} bytes, the file has {} after its header: truncated",
                        bytes.len().saturating_sub(start)
                    ),
                )
            })?;
        let (stored, computed) = (u32_at(head, 12), crc32fast::hash(payload));
        if stored != computed {
            return Err(Error::Checksum {
                path: path.into(),
                section: name,
                stored,
                computed,
            });
        }
        out.push(payload);
        at = start + payload.len();
    }
    if at != bytes.len() {
        return Err(Error::format(
            path,
            "file",
            format!("{} bytes after the last section", bytes.len() - at),
        ));
    }
    Ok(out)
}

/// Checks that the bits past `used` of a packed stream are zero.
fn tail_zero(stream: &[u8], bits: u64) -> bool {
    let used = (bits % 8) as u32;
    used == 0 || stream.last().is_none_or(|&l| l >> used == 0)
}

/// Parses and validates a whole file. Every length is checked against the
/// header before anything of that length is allocated.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<CompressedGrid> {
    let h = parse_header(bytes, path)?;
    let s = sections(bytes, path)?;
    let bad = |field: &str, why: String| Error::format(path, field, why);
    let (lvl, rot, cbk, wid, scl, cod) = (s[0], s[1], s[2], s[3], s[4], s[5]);
    let values = h.entries.checked_mul(h.features as u64);
    if values.is_none_or(|v| v == 0 || v > (bytes.len() as u64).saturating_mul(MAX_VALUES_PER_BYTE))
    {
        return Err(bad(
            "entries",
            format!(
                "{} entries of {} features for a file of {} bytes (at most {MAX_VALUES_PER_BYTE} values per byte)",
                h.entries,
                h.features,
                bytes.len()
            ),
        ));
    }
    if lvl.len() != h.levels * LEVEL_LEN {
        return Err(bad(
            "section LVL",
            format!("{} bytes for {} levels", lvl.len(), h.levels),
        ));
    }
    let mut levels = Vec::with_capacity(h.levels);
    let mut ranges = Vec::with_capacity(h.levels);
    for (l, rec) in lvl.chunks_exact(LEVEL_LEN).enumerate() {
        let t = u64_at(rec, 0);
        let (lo, hi) = (f32_at(rec, 8), f32_at(rec, 12));
        if t == 0 {
            return Err(bad("section LVL", format!("level {l} has no entries")));
        }
        if !(lo.abs() <= MAX_LOG2_SCALE && hi.abs() <= MAX_LOG2_SCALE && lo <= hi) {
            return Err(bad(
                "section LVL",
                format!(
                    "level {l}: log2 scale range [{lo}, {hi}] is not ordered within ±{MAX_LOG2_SCALE}"
                ),
            ));
        }
        levels.push(t);
        ranges.push(ScaleRange { lo, hi });
    }
    if levels.iter().sum::<u64>() != h.entries {
        return Err(bad(
            "section LVL",
            format!(
                "level sizes add up to {}, the header says {} entries",
                levels.iter().sum::<u64>(),
                h.entries
            ),
        ));
    }
    let levels: Vec<usize> = levels.iter().map(|&t| t as usize).collect();
    let shape = match h.rank {
        3 if levels.iter().all(|&t| t == levels[0]) => vec![h.levels, levels[0], h.features],
        3 => {
            return Err(bad(
                "rank",
                "3 ([L, T, F]) with levels of different sizes".into(),
            ));
        }
        2 => vec![h.entries as usize, h.features],
        _ => vec![h.entries as usize * h.features],
    };
    let groups =
        Groups::new(&levels, h.features, h.group).map_err(|e| bad("group", e.to_string()))?;
    let d = groups.dim();
    let rotation =
        Rotation::from_bytes(h.rotation, d, rot).map_err(|why| bad("section ROT", why))?;
    // Rotation::from_bytes refuses a dense matrix whose rows or columns
    // are not of unit norm: with |ĉ_i| ≤ 1 (CBK is checked below) and scales
    // below 2^100, no decoded value can overflow.
    // CBK: count, then (b, 2^b centroids).
    let mut centroids: Vec<Option<Vec<f32>>> = vec![None; 9];
    let count = *cbk
        .first()
        .ok_or_else(|| bad("section CBK", "empty".into()))? as usize;
    let mut at = 1;
    for t in 0..count {
        let b = *cbk
            .get(at)
            .ok_or_else(|| bad("section CBK", format!("table {t} is truncated")))?
            as usize;
        if !(1..=8).contains(&b) || centroids[b].is_some() {
            return Err(bad(
                "section CBK",
                format!("table {t} has width {b}, out of range or repeated"),
            ));
        }
        let len = 4 << b;
        let body = cbk
            .get(at + 1..at + 1 + len)
            .ok_or_else(|| bad("section CBK", format!("table {t} (b = {b}) is truncated")))?;
        let v: Vec<f32> = body.chunks_exact(4).map(|c| f32_at(c, 0)).collect();
        if v.iter().any(|x| x.is_nan() || x.abs() > 1.0) || v.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(
                "section CBK",
                format!("table b = {b} is not strictly ascending within [-1, 1]"),
            ));
        }
        centroids[b] = Some(v);
        at += 1 + len;
    }
    if at != cbk.len() {
        return Err(bad(
            "section CBK",
            format!("{} bytes after the last table", cbk.len() - at),
        ));
    }
    let n = groups.count();
    let packed = crate::codec::frame::unzstd_exact(wid, n.div_ceil(2) as u64)
        .map_err(|why| bad("section WID", why))?;
    let widths: Vec<u8> = (0..n)
        .map(|i| (packed[i / 2] >> (4 * (i % 2))) & 15)
        .collect();
    if let Some(i) = widths.iter().position(|&b| b > 8) {
        return Err(bad(
            "section WID",
            format!("group {i} has width {} (at most 8)", widths[i]),
        ));
    }
    if n % 2 == 1 && packed[n / 2] >> 4 != 0 {
        return Err(bad(
            "section WID",
            "the unused nibble of the last byte must be zero".into(),
        ));
    }
    if let Some(i) = widths
        .iter()
        .position(|&b| b > 0 && centroids[b as usize].is_none())
    {
        return Err(bad(
            "section CBK",
            format!("no table for width {} of group {i}", widths[i]),
        ));
    }
    let coded = widths.iter().filter(|&&b| b > 0).count();
    let scale_bits_total = coded as u64 * h.scale_bits as u64;
    if scl.len() as u64 != scale_bits_total.div_ceil(8) || !tail_zero(scl, scale_bits_total) {
        return Err(bad(
            "section SCL",
            format!(
                "{} bytes for {coded} codes of {} bits (need {}, unused high bits zero)",
                scl.len(),
                h.scale_bits,
                scale_bits_total.div_ceil(8)
            ),
        ));
    }
    let code_bits: u64 = widths.iter().map(|&b| d as u64 * b as u64).sum();
    if cod.len() as u64 != code_bits.div_ceil(8) || !tail_zero(cod, code_bits) {
        return Err(bad(
            "section COD",
            format!(
                "{} bytes, the widths need {} (unused high bits zero)",
                cod.len(),
                code_bits.div_ceil(8)
            ),
        ));
    }
    Ok(CompressedGrid {
        levels,
        features: h.features,
        dtype: h.dtype,
        shape,
        group: h.group,
        rotation: Arc::new(rotation),
        seed: h.seed,
        scale_mode: h.scale_mode,
        width_mode: h.width_mode,
        centroids,
        widths,
        scale_bits: h.scale_bits,
        scale_ranges: ranges,
        scale_codes: unpack_wide(scl, h.scale_bits, coded),
        codes: cod.to_vec(),
    })
}

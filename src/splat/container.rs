//! The `.tq3s` scene container: a fixed header, a stream table and the
//! streams, each stream with its length and a CRC-32, so that any corrupted
//! byte is reported rather than decoded. docs/FORMAT.md ("Scene container")
//! is the specification; this is its reference implementation.
//!
//! ```text
//! header        128 bytes  magic, version, scene fields, CRC-32
//! stream table  32 bytes per stream, then the table's CRC-32
//! streams       concatenated in table order
//! ```

use std::io::Write;
use std::path::Path;

use std::borrow::Cow;

use crate::codec::entropy::{self, Run};
use crate::codec::frame::unzstd;
use crate::codec::palette;
use crate::format::input::{Extent, add_len, read_declared};
use crate::{Error, Result};

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"TQ3D-SCN";
/// The newest version this library reads and writes. Version 2 adds, over
/// version 1, the seeded rotation, entropy-coded SH codes and the SH sign
/// flip; version 3 adds deduplicated SH-rest ([`SH_DEDUP`], docs/FORMAT.md);
/// version 4 adds bit-exact SH-rest ([`SH_EXACT`]) and column palettes
/// (stream coding 3). A writer writes the lowest version that holds what it
/// stores ([`version_for`]). Every older file is a valid file of a newer
/// version.
pub const VERSION: u16 = 4;
/// The oldest version this library reads.
pub const MIN_VERSION: u16 = 1;
/// Header byte 61, bit 0: the SH sign flip (docs/FORMAT.md, "SH sign flip").
pub const SH_SIGN_FLIP: u8 = 1;
/// Header byte 61, bit 1 (version 3): SH-rest deduplicated, each distinct
/// vector stored once and `SHIX` naming each Gaussian's (docs/FORMAT.md,
/// "Deduplicated SH-rest"). Never with [`SH_SIGN_FLIP`].
pub const SH_DEDUP: u8 = 2;
/// Header byte 61, bit 2 (version 4): SH-rest stored bit-exact as f32 in
/// stream `SHX ` (docs/FORMAT.md, "Bit-exact SH-rest"), with no rotation,
/// codebook, scales or codes. Alone among the flags; `b` is 0.
pub const SH_EXACT: u8 = 4;

/// The version a writer stores for SH flags `sh_flags` and streams coded
/// with column palettes or not: 4 with [`SH_EXACT`] or palettes, 3 with
/// [`SH_DEDUP`], else 2.
pub fn version_for(sh_flags: u8, palettes: bool) -> u16 {
    if sh_flags & SH_EXACT != 0 || palettes {
        4
    } else if sh_flags & SH_DEDUP != 0 {
        3
    } else {
        2
    }
}
/// Size of the fixed header.
pub const HEADER_LEN: usize = 128;
/// Size of one stream-table entry.
pub const ENTRY_LEN: usize = 32;
/// Most streams a file may declare (a sanity limit for hostile headers).
pub const MAX_STREAMS: u32 = 64;

/// How a stream's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// As they are.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
    /// Semi-static rANS of fixed-width codes ([`crate::codec::entropy`]);
    /// decoding needs the codes' widths, which the file's other streams
    /// give (version 2; `SHC ` only).
    Rans = 2,
    /// Column palettes of f32 byte planes ([`crate::codec::palette`];
    /// version 4; the exact profile's attribute streams and `SHX ` only).
    Palette = 3,
}

impl Coding {
    /// The name in `tq3d info` and the JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Raw => "raw",
            Coding::Zstd => "zstd",
            Coding::Rans => "rans",
            Coding::Palette => "palette",
        }
    }

    /// The coding of a table byte, if known.
    pub fn from_code(c: u8) -> Option<Coding> {
        match c {
            0 => Some(Coding::Raw),
            1 => Some(Coding::Zstd),
            2 => Some(Coding::Rans),
            3 => Some(Coding::Palette),
            _ => None,
        }
    }
}

/// The profile: how the attributes other than SH-rest are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Bit-exact f32, original order (zstd on byte planes, lossless).
    Exact = 0,
    /// Quantised attributes in Morton-ordered chunks, entropy-coded.
    Compact = 1,
}

impl Profile {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Exact => "exact",
            Profile::Compact => "compact",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(s: &str) -> Option<Profile> {
        match s {
            "exact" => Some(Profile::Exact),
            "compact" => Some(Profile::Compact),
            _ => None,
        }
    }
}

/// What happened to the PLY's normals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normals {
    /// The input had none.
    Absent = 0,
    /// All were exactly zero (as 3DGS writes them): restored exactly, free.
    Zero = 1,
    /// Stored bit-exact in stream `NRM `.
    Stored = 2,
    /// Non-zero normals dropped by the profile; the output has none.
    Dropped = 3,
}

/// The fixed header: everything needed to interpret the streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Format version: as read from a file (MIN_VERSION..=VERSION); what a
    /// writer stores, [`version_for`] its SH flags.
    pub version: u16,
    /// Gaussians stored.
    pub count: u64,
    /// Gaussians in the input, before pruning.
    pub input_count: u64,
    /// SH degree of the stored scene, 0..=3.
    pub sh_degree: u8,
    /// Profile of the non-SH attributes.
    pub profile: Profile,
    /// SH-rest bits per coordinate b (1..=8), or 0 when there is no SH-rest.
    pub sh_bits: u8,
    /// 0: every Gaussian has `sh_bits`. 1: a width per Gaussian (stream
    /// `SHW `), `sh_bits` the widest.
    pub sh_width_mode: u8,
    /// Rotation of the SH codec: 0 dense matrix, 1 randomized Hadamard,
    /// 2 dense from the seed in `ROT ` (version 2).
    pub rotation_kind: u8,
    /// SH scale: 0 norm, 1 least squares (informational; decoding is the same).
    pub scale_mode: u8,
    /// What happened to the normals.
    pub normals: Normals,
    /// 0: original order. 1: Morton order of the compact profile.
    pub order: u8,
    /// SH-rest dimension d = 3·((L+1)² − 1).
    pub dim: u32,
    /// Gaussians per chunk in the compact profile (0 in `exact`).
    pub chunk_size: u32,
    /// Bits of the quantised position, log-scale, quaternion component,
    /// opacity and DC colour (compact profile; zero in `exact`).
    pub attr_bits: [u8; 5],
    /// SH flags (byte 61, version 2): bit 0 ([`SH_SIGN_FLIP`]) = each
    /// Gaussian's SH-rest was sign-flipped before rotating; other bits zero.
    pub sh_flags: u8,
    /// Opacity pruning threshold τ on sigmoid(opacity); 0 when not pruned.
    pub prune_opacity: f32,
    /// Seed the rotation was generated from (kinds 0 and 1: informational;
    /// kind 2: equal to the seed in `ROT `).
    pub seed: u64,
    /// Number of extra per-vertex properties.
    pub extra_count: u32,
}

/// One stream: a four-byte tag and its decoded bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stream {
    pub tag: [u8; 4],
    pub coding: Coding,
    pub data: Vec<u8>,
    /// The widths of the codes `data` packs (coding 2 only).
    pub runs: Vec<Run>,
    /// The f32 columns whose byte planes `data` holds (coding 3 only).
    pub columns: u8,
}

/// A stream as stored: its table entry fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    pub tag: [u8; 4],
    pub coding: Coding,
    /// Decoded length.
    pub raw_len: u64,
    /// Stored length.
    pub stored_len: u64,
    /// CRC-32 of the stored bytes.
    pub crc: u32,
}

/// Renders a tag for messages (`"SHC "` → `SHC`); bytes other than
/// printable ASCII are escaped (`\x0a`), so a message stays on one line.
pub fn tag_name(tag: &[u8; 4]) -> String {
    let mut s = String::new();
    for &b in tag {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.trim_end().to_string()
}

/// The zstd level of entropy-coded streams.
pub const ZSTD_LEVEL: i32 = 6;

/// A stream ready to be written: tag, coding and stored bytes.
#[derive(Debug, Clone)]
pub struct Packed {
    pub info: StreamInfo,
    pub stored: Vec<u8>,
}

/// Stores a stream: zstd streams are compressed, and kept raw (coding 0)
/// when compression does not help, so the stored length never exceeds the
/// raw length. rANS streams (packed codes) take the smallest of rANS, zstd
/// and raw: rANS reaches the codes' order-0 entropy, but zstd wins where
/// whole code vectors repeat (palettised SH, as in SOG inputs).
pub(crate) fn pack_stream(stream: Stream) -> Result<Packed> {
    let raw_len = stream.data.len() as u64;
    let zstd = |data: &[u8]| {
        zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| {
            Error::InvalidArgument(format!(
                "zstd failed on stream {}: {e}",
                tag_name(&stream.tag)
            ))
        })
    };
    let mut best = (Coding::Raw, None);
    let mut consider = |coding: Coding, coded: Vec<u8>| {
        let len = best
            .1
            .as_ref()
            .map_or(raw_len, |b: &Vec<u8>| b.len() as u64);
        if (coded.len() as u64) < len {
            best = (coding, Some(coded));
        }
    };
    match stream.coding {
        Coding::Raw => {}
        Coding::Zstd => consider(Coding::Zstd, zstd(&stream.data)?),
        Coding::Rans => {
            let r = entropy::encode(&stream.data, &stream.runs).map_err(|e| {
                Error::InvalidArgument(format!("stream {}: {e}", tag_name(&stream.tag)))
            })?;
            consider(Coding::Rans, r);
            consider(Coding::Zstd, zstd(&stream.data)?);
        }
        // Column palettes code their plane columns with zstd column by
        // column, so zstd over the whole stream is tried only without them.
        Coding::Palette => {
            let coded = palette::encode(&stream.data, stream.columns as usize, ZSTD_LEVEL)
                .map_err(|e| {
                    Error::InvalidArgument(format!("stream {}: {e}", tag_name(&stream.tag)))
                })?;
            match coded {
                Some(p) => consider(Coding::Palette, p),
                None => consider(Coding::Zstd, zstd(&stream.data)?),
            }
        }
    }
    let (coding, stored) = match best {
        (c, Some(b)) => (c, b),
        (_, None) => (Coding::Raw, stream.data),
    };
    Ok(Packed {
        info: StreamInfo {
            tag: stream.tag,
            coding,
            raw_len,
            stored_len: stored.len() as u64,
            crc: crc32fast::hash(&stored),
        },
        stored,
    })
}

fn header_bytes(h: &Header, stream_count: u32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&h.version.to_le_bytes());
    // 10..12 flags, 0.
    b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    b[16..20].copy_from_slice(&stream_count.to_le_bytes());
    // 20..24 reserved.
    b[24..32].copy_from_slice(&h.count.to_le_bytes());
    b[32..40].copy_from_slice(&h.input_count.to_le_bytes());
    b[40] = h.sh_degree;
    b[41] = h.profile as u8;
    b[42] = h.sh_bits;
    b[43] = h.sh_width_mode;
    b[44] = h.rotation_kind;
    b[45] = h.scale_mode;
    b[46] = h.normals as u8;
    b[47] = h.order;
    b[48..52].copy_from_slice(&h.dim.to_le_bytes());
    b[52..56].copy_from_slice(&h.chunk_size.to_le_bytes());
    b[56..61].copy_from_slice(&h.attr_bits);
    b[61] = h.sh_flags;
    // 62..64 reserved.
    b[64..68].copy_from_slice(&h.prune_opacity.to_le_bytes());
    b[68..76].copy_from_slice(&h.seed.to_le_bytes());
    b[76..80].copy_from_slice(&h.extra_count.to_le_bytes());
    // 80..124 reserved, zero.
    let crc = crc32fast::hash(&b[..HEADER_LEN - 4]);
    b[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn entry_bytes(s: &StreamInfo) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[0..4].copy_from_slice(&s.tag);
    b[4] = s.coding as u8;
    b[8..16].copy_from_slice(&s.raw_len.to_le_bytes());
    b[16..24].copy_from_slice(&s.stored_len.to_le_bytes());
    b[24..28].copy_from_slice(&s.crc.to_le_bytes());
    b
}

/// Size of the header and a table of `streams` entries.
pub fn overhead(streams: usize) -> u64 {
    (HEADER_LEN + streams * ENTRY_LEN + 4) as u64
}

/// Writes a container: header, table, streams.
pub(crate) fn write_to(
    w: &mut dyn Write,
    header: &Header,
    streams: &[Packed],
    path: &Path,
) -> Result<()> {
    let io = |e| Error::io(path, e);
    w.write_all(&header_bytes(header, streams.len() as u32))
        .map_err(io)?;
    let mut table = Vec::with_capacity(streams.len() * ENTRY_LEN);
    for s in streams {
        table.extend_from_slice(&entry_bytes(&s.info));
    }
    w.write_all(&table).map_err(io)?;
    w.write_all(&crc32fast::hash(&table).to_le_bytes())
        .map_err(io)?;
    for s in streams {
        w.write_all(&s.stored).map_err(io)?;
    }
    Ok(())
}

/// A parsed container: the decoded streams, by tag (the header is
/// [`read_table`]'s).
#[derive(Debug, Clone)]
pub(crate) struct Container {
    streams: Vec<(StreamInfo, Vec<u8>)>,
    /// The column count each palette-coded stream declares.
    columns: Vec<([u8; 4], usize)>,
}

impl Container {
    /// The columns a palette-coded stream declares (`None` for any other).
    pub fn palette_columns(&self, tag: &[u8; 4]) -> Option<usize> {
        self.columns.iter().find(|(t, _)| t == tag).map(|&(_, k)| k)
    }

    /// The decoded bytes of stream `tag`, if present and decoded (a rANS
    /// stream needs its widths: [`Container::require_codes`]).
    pub fn stream(&self, tag: &[u8; 4]) -> Option<&[u8]> {
        self.streams
            .iter()
            .find(|(i, _)| &i.tag == tag && i.coding != Coding::Rans)
            .map(|(_, d)| d.as_slice())
    }

    /// The decoded bytes of a stream of packed codes that must be present,
    /// of any coding: the widths `runs` lay out its codes, and the decoded
    /// length must be ceil(Σ bits / 8).
    pub fn require_codes(&self, tag: &[u8; 4], runs: &[Run], path: &Path) -> Result<Cow<'_, [u8]>> {
        let name = || format!("stream {}", tag_name(tag));
        let (info, d) = self
            .streams
            .iter()
            .find(|(i, _)| &i.tag == tag)
            .ok_or_else(|| Error::format(path, name(), "missing"))?;
        if info.coding != Coding::Rans {
            return Ok(Cow::Borrowed(d));
        }
        let bits: u64 = runs
            .iter()
            .map(|r| r.bits as u64 * r.count)
            .fold(0u64, u64::saturating_add);
        // Checked before decoding: the widths fix the length exactly.
        if bits.div_ceil(8) != info.raw_len {
            return Err(Error::format(
                path,
                name(),
                format!(
                    "declares {} decoded bytes, the widths need {}",
                    info.raw_len,
                    bits.div_ceil(8)
                ),
            ));
        }
        let out = entropy::decode(d, runs).map_err(|e| Error::format(path, name(), e))?;
        Ok(Cow::Owned(out))
    }

    /// The decoded bytes of a stream that must be present, with exactly
    /// `len` bytes when `len` is given.
    pub fn require(&self, tag: &[u8; 4], len: Option<u64>, path: &Path) -> Result<&[u8]> {
        let d = self.stream(tag).ok_or_else(|| {
            Error::format(
                path,
                format!("stream {}", tag_name(tag)),
                "missing (or rANS-coded, which only SHC may be)",
            )
        })?;
        if let Some(len) = len
            && d.len() as u64 != len
        {
            return Err(Error::format(
                path,
                format!("stream {}", tag_name(tag)),
                format!("has {} bytes, the header implies {len}", d.len()),
            ));
        }
        Ok(d)
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|k| b[o + k]))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|k| b[o + k]))
}

/// Parses and checks the header alone (no stream is decoded).
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<(Header, u32)> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    if bytes.len() < 8 || bytes[0..8] != MAGIC {
        return Err(bad(
            "magic",
            "not a turboquant3d scene (.tq3s) file: the first 8 bytes are not \"TQ3D-SCN\"".into(),
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
    let b = &bytes[..HEADER_LEN];
    let stored = u32_at(b, HEADER_LEN - 4);
    let computed = crc32fast::hash(&b[..HEADER_LEN - 4]);
    if stored != computed {
        return Err(Error::Checksum {
            path: path.into(),
            section: "header".into(),
            stored,
            computed,
        });
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(bad(
            "version",
            format!("{version}; this build reads versions {MIN_VERSION}..={VERSION}"),
        ));
    }
    for (lo, hi) in [(10, 12), (20, 24), (62, 64), (80, HEADER_LEN - 4)] {
        if b[lo..hi].iter().any(|&x| x != 0) {
            return Err(bad(
                "reserved bytes",
                format!("bytes {lo}..{hi} must be zero (a newer writer, or a damaged file)"),
            ));
        }
    }
    if u32_at(b, 12) as usize != HEADER_LEN {
        return Err(bad(
            "header length",
            format!("{}, expected {HEADER_LEN}", u32_at(b, 12)),
        ));
    }
    let stream_count = u32_at(b, 16);
    if stream_count > MAX_STREAMS {
        return Err(bad(
            "stream count",
            format!("{stream_count} exceeds {MAX_STREAMS}"),
        ));
    }
    let profile = match b[41] {
        0 => Profile::Exact,
        1 => Profile::Compact,
        p => return Err(bad("profile", format!("unknown code {p}"))),
    };
    let normals = match b[46] {
        0 => Normals::Absent,
        1 => Normals::Zero,
        2 => Normals::Stored,
        3 => Normals::Dropped,
        n => return Err(bad("normals", format!("unknown code {n}"))),
    };
    let h = Header {
        version,
        count: u64_at(b, 24),
        input_count: u64_at(b, 32),
        sh_degree: b[40],
        profile,
        sh_bits: b[42],
        sh_width_mode: b[43],
        rotation_kind: b[44],
        scale_mode: b[45],
        normals,
        order: b[47],
        dim: u32_at(b, 48),
        chunk_size: u32_at(b, 52),
        attr_bits: std::array::from_fn(|k| b[56 + k]),
        sh_flags: b[61],
        prune_opacity: f32::from_le_bytes(std::array::from_fn(|k| b[64 + k])),
        seed: u64_at(b, 68),
        extra_count: u32_at(b, 76),
    };
    if h.sh_degree > 3 {
        return Err(bad("SH degree", format!("{} is above 3", h.sh_degree)));
    }
    if h.dim as usize != crate::splat::rest_dim(h.sh_degree) {
        return Err(bad(
            "d",
            format!(
                "{} does not match SH degree {} (expected {})",
                h.dim,
                h.sh_degree,
                crate::splat::rest_dim(h.sh_degree)
            ),
        ));
    }
    // Uniform mode needs b ≥ 1 when there is SH-rest; per-Gaussian widths
    // store the widest, which may be 0; bit-exact SH-rest has no b.
    // (Bit 2 below version 4 is refused with the other flags, below.)
    let exact = h.sh_flags == SH_EXACT;
    if h.sh_bits > 8
        || (h.dim == 0 && h.sh_bits != 0)
        || (h.dim > 0 && !exact && h.sh_width_mode == 0 && h.sh_bits == 0)
        || (exact && (h.sh_bits != 0 || h.sh_width_mode != 0))
    {
        return Err(bad("SH bits", format!("{} with d = {}", h.sh_bits, h.dim)));
    }
    if h.sh_width_mode > 1 || (h.sh_width_mode == 1 && h.dim == 0) {
        return Err(bad(
            "SH width mode",
            format!(
                "{} with d = {} (0: uniform, 1: per-Gaussian widths)",
                h.sh_width_mode, h.dim
            ),
        ));
    }
    // Kind 2, the seeded rotation, is new in version 2.
    let max_kind = if version >= 2 { 2 } else { 1 };
    if h.rotation_kind > max_kind {
        return Err(bad(
            "rotation kind",
            format!(
                "{} (version {version} has 0 dense, 1 Hadamard{})",
                h.rotation_kind,
                if version >= 2 { ", 2 seeded" } else { "" }
            ),
        ));
    }
    if h.scale_mode > 1 || h.order > 1 {
        return Err(bad(
            "codec fields",
            format!(
                "scale mode {}, order {} (each must be 0 or 1)",
                h.scale_mode, h.order
            ),
        ));
    }
    // Version 1 reserved byte 61; the flip needs SH-rest to flip; the
    // deduplication is version 3's and excludes the flip.
    let known = match version {
        4.. => SH_SIGN_FLIP | SH_DEDUP | SH_EXACT,
        3 => SH_SIGN_FLIP | SH_DEDUP,
        _ => SH_SIGN_FLIP,
    };
    if h.sh_flags & !known != 0
        || (h.sh_flags != 0 && (version < 2 || h.dim == 0))
        || h.sh_flags == SH_SIGN_FLIP | SH_DEDUP
        || (h.sh_flags & SH_EXACT != 0 && h.sh_flags != SH_EXACT)
    {
        return Err(bad(
            "SH flags",
            format!(
                "byte 61 = {:#04x} with version {version}, d = {} (bit 0, the sign flip, needs version 2 and d > 0; bit 1, deduplication, version 3, d > 0 and bit 0 clear; bit 2, bit-exact SH-rest, version 4, d > 0 and alone; other bits must be zero)",
                h.sh_flags, h.dim
            ),
        ));
    }
    if h.count > h.input_count {
        return Err(bad(
            "count",
            format!(
                "{} stored Gaussians exceed the input's {}",
                h.count, h.input_count
            ),
        ));
    }
    if h.count == 0 {
        return Err(bad("count", "the file holds no Gaussians".into()));
    }
    Ok((h, stream_count))
}

/// Parses a whole container, checking every checksum and length and
/// decoding the zstd streams. Nothing is allocated beyond what the file's
/// own length and the declared decoded lengths (bounded by `max_raw`)
/// justify.
pub(crate) fn from_bytes(bytes: &[u8], path: &Path, max_raw: u64) -> Result<Container> {
    let (_, n) = parse_header(bytes, path)?;
    let bad = |field: String, why: String| Error::format(path, field, why);
    let table_start = HEADER_LEN;
    let table_end = table_start + n as usize * ENTRY_LEN;
    if bytes.len() < table_end + 4 {
        return Err(bad(
            "stream table".into(),
            format!(
                "truncated: the file has {} bytes, the table ends at {}",
                bytes.len(),
                table_end + 4
            ),
        ));
    }
    let table = &bytes[table_start..table_end];
    let stored = u32_at(bytes, table_end);
    let computed = crc32fast::hash(table);
    if stored != computed {
        return Err(Error::Checksum {
            path: path.into(),
            section: "stream table".into(),
            stored,
            computed,
        });
    }
    let mut infos = Vec::with_capacity(n as usize);
    let mut total: u64 = (table_end + 4) as u64;
    for (k, e) in table.chunks_exact(ENTRY_LEN).enumerate() {
        let tag: [u8; 4] = std::array::from_fn(|k| e[k]);
        if e[5..8].iter().chain(&e[28..32]).any(|&x| x != 0) {
            return Err(bad(
                format!("stream {k} ({})", tag_name(&tag)),
                "reserved bytes must be zero".into(),
            ));
        }
        let Some(coding) = Coding::from_code(e[4]) else {
            return Err(bad(
                format!("stream {k} ({})", tag_name(&tag)),
                format!("unknown coding {}", e[4]),
            ));
        };
        let info = StreamInfo {
            tag,
            coding,
            raw_len: u64_at(e, 8),
            stored_len: u64_at(e, 16),
            crc: u32_at(e, 24),
        };
        if infos.iter().any(|i: &StreamInfo| i.tag == tag) {
            return Err(bad(
                format!("stream {}", tag_name(&tag)),
                "appears twice".into(),
            ));
        }
        if coding == Coding::Raw && info.raw_len != info.stored_len {
            return Err(bad(
                format!("stream {}", tag_name(&tag)),
                format!(
                    "raw stream with raw length {} ≠ stored length {}",
                    info.raw_len, info.stored_len
                ),
            ));
        }
        if info.raw_len > max_raw {
            return Err(bad(
                format!("stream {}", tag_name(&tag)),
                format!(
                    "declares {} decoded bytes, more than the header's scene can need ({max_raw})",
                    info.raw_len
                ),
            ));
        }
        total = total.saturating_add(info.stored_len);
        infos.push(info);
    }
    if total != bytes.len() as u64 {
        return Err(bad(
            "length".into(),
            format!(
                "the table accounts for {total} bytes but the file has {}{}",
                bytes.len(),
                if total > bytes.len() as u64 {
                    " (truncated)"
                } else {
                    " (trailing bytes)"
                }
            ),
        ));
    }
    let mut offset = table_end + 4;
    let mut slices = Vec::with_capacity(infos.len());
    for info in &infos {
        let end = offset + info.stored_len as usize;
        let stored = &bytes[offset..end];
        let computed = crc32fast::hash(stored);
        if computed != info.crc {
            return Err(Error::Checksum {
                path: path.into(),
                section: format!("stream {}", tag_name(&info.tag)),
                stored: info.crc,
                computed,
            });
        }
        slices.push((*info, stored));
        offset = end;
    }
    let columns = slices
        .iter()
        .filter(|(i, _)| i.coding == Coding::Palette)
        .filter_map(|(i, s)| Some((i.tag, palette::columns(s)?)))
        .collect();
    use rayon::prelude::*;
    let streams = slices
        .into_par_iter()
        .map(|(info, stored)| {
            let data = match info.coding {
                // rANS streams stay coded until their widths are known.
                Coding::Raw | Coding::Rans => stored.to_vec(),
                Coding::Palette => palette::decode(stored, info.raw_len).map_err(|e| {
                    bad(
                        format!("stream {}", tag_name(&info.tag)),
                        format!("column palettes: {e}"),
                    )
                })?,
                Coding::Zstd => {
                    let d = unzstd(stored, info.raw_len).map_err(|e| {
                        bad(
                            format!("stream {}", tag_name(&info.tag)),
                            format!("zstd: {e}"),
                        )
                    })?;
                    if d.len() as u64 != info.raw_len {
                        return Err(bad(
                            format!("stream {}", tag_name(&info.tag)),
                            format!(
                                "decodes to {} bytes, the table says {}",
                                d.len(),
                                info.raw_len
                            ),
                        ));
                    }
                    d
                }
            };
            Ok((info, data))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Container { streams, columns })
}

/// Reads a file's bytes as far as its header and stream table declare, and
/// no further (see [`crate::format::input`]).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    read_declared(path, |b| extent(b, path))
}

/// How long the file says it is, from the bytes read so far.
fn extent(bytes: &[u8], path: &Path) -> Result<Extent> {
    if bytes.len() < HEADER_LEN {
        return Ok(Extent::Need(HEADER_LEN as u64));
    }
    let (_, n) = parse_header(bytes, path)?;
    let table = overhead(n as usize);
    if (bytes.len() as u64) < table {
        return Ok(Extent::Need(table));
    }
    let (_, infos) = read_table(bytes, path)?;
    let mut total = table;
    for s in &infos {
        total = add_len(total, s.stored_len, path, "stream length")?;
    }
    Ok(Extent::Total(total))
}

/// Reads the header and stream table of a file without decoding streams
/// (for `info`): checks the header and table checksums and the length.
pub fn read_table(bytes: &[u8], path: &Path) -> Result<(Header, Vec<StreamInfo>)> {
    let (header, n) = parse_header(bytes, path)?;
    let table_end = HEADER_LEN + n as usize * ENTRY_LEN;
    if bytes.len() < table_end + 4 {
        return Err(Error::format(path, "stream table", "truncated"));
    }
    let table = &bytes[HEADER_LEN..table_end];
    let stored = u32_at(bytes, table_end);
    let computed = crc32fast::hash(table);
    if stored != computed {
        return Err(Error::Checksum {
            path: path.into(),
            section: "stream table".into(),
            stored,
            computed,
        });
    }
    let infos = table
        .chunks_exact(ENTRY_LEN)
        .map(|e| StreamInfo {
            tag: std::array::from_fn(|k| e[k]),
            coding: Coding::from_code(e[4]).unwrap_or(Coding::Raw),
            raw_len: u64_at(e, 8),
            stored_len: u64_at(e, 16),
            crc: u32_at(e, 24),
        })
        .collect();
    Ok((header, infos))
}

//! The stream layout of a `.tq3s` file (docs/FORMAT.md, "Scene container"):
//! the tags in file order, how each is coded, and each stream's decoded
//! length from the facts that fix it. The size prediction and the reader's
//! length checks both take their lengths from [`Facts::raw_len`].

use crate::codec::entropy::Run;
use crate::splat::attributes::{self, AttrBits};
use crate::splat::container::{Coding, Header, Normals, Profile};
use crate::splat::scene::{ExtraProperty, Extras, ScalarType};
use crate::splat::sh;

/// Stream tags.
pub(crate) mod tags {
    pub const ROT: [u8; 4] = *b"ROT ";
    pub const CBK: [u8; 4] = *b"CBK ";
    pub const SHIX: [u8; 4] = *b"SHIX";
    pub const SHW: [u8; 4] = *b"SHW ";
    pub const SHS: [u8; 4] = *b"SHS ";
    pub const SHC: [u8; 4] = *b"SHC ";
    pub const SHX: [u8; 4] = *b"SHX ";
    pub const CHNK: [u8; 4] = *b"CHNK";
    pub const POS: [u8; 4] = *b"POS ";
    pub const SCL: [u8; 4] = *b"SCL ";
    pub const QUAT: [u8; 4] = *b"QUAT";
    pub const OPA: [u8; 4] = *b"OPA ";
    pub const DC: [u8; 4] = *b"DC  ";
    pub const NRM: [u8; 4] = *b"NRM ";
    pub const EXTS: [u8; 4] = *b"EXTS";
    pub const EXTD: [u8; 4] = *b"EXTD";
    pub const CMNT: [u8; 4] = *b"CMNT";
}

use tags::*;

/// Every tag, in file order.
pub(crate) const FILE_ORDER: [[u8; 4]; 17] = [
    ROT, CBK, SHIX, SHW, SHS, SHC, SHX, CHNK, POS, SCL, QUAT, OPA, DC, NRM, EXTS, EXTD, CMNT,
];

/// Bytes of one chunk record in `CHNK`: position, log-scale and DC ranges,
/// each 3 lows then 3 highs, as f32.
pub(crate) const CHUNK_RECORD: usize = 18 * 4;

/// How the compressor stores a stream: the parameters and chunk ranges
/// raw, the SH codes with rANS (or zstd, whichever is smaller), f32 columns
/// (bit-exact SH-rest, the exact profile's attributes) with column palettes
/// (or zstd), the rest (the SH scales included: their exponents repeat)
/// with zstd; each raw where coding would not shrink it.
pub(crate) fn coding(tag: &[u8; 4], profile: Profile) -> Coding {
    match *tag {
        ROT | CBK | CHNK | EXTS | CMNT => Coding::Raw,
        SHC => Coding::Rans,
        _ if palette_columns(tag, profile, 1).is_some() => Coding::Palette,
        _ => Coding::Zstd,
    }
}

/// The f32 columns of a stream that column palettes (coding 3) may code,
/// for SH-rest dimension `d`; `None` for every other stream.
pub(crate) fn palette_columns(tag: &[u8; 4], profile: Profile, d: usize) -> Option<usize> {
    match (*tag, profile) {
        (SHX, _) => Some(d),
        (POS | SCL | DC | NRM, Profile::Exact) => Some(3),
        (QUAT, Profile::Exact) => Some(4),
        (OPA, Profile::Exact) => Some(1),
        _ => None,
    }
}

/// The widths of the codes in `SHC `: N·d codes of b bits (uniform mode,
/// `per` empty), or d codes of b_k bits for each Gaussian k (`per` its
/// widths), adjacent equal widths merged.
pub(crate) fn code_runs(n: u64, d: u64, b: u8, per: &[u8]) -> Vec<Run> {
    if per.is_empty() {
        return vec![Run {
            bits: b,
            count: n * d,
        }];
    }
    let mut runs: Vec<Run> = Vec::new();
    for &w in per.iter().filter(|&&w| w > 0) {
        match runs.last_mut() {
            Some(r) if r.bits == w => r.count += d,
            _ => runs.push(Run { bits: w, count: d }),
        }
    }
    runs
}

/// A stream's decoded length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Len {
    /// Exactly this many bytes.
    Is(u64),
    /// At most this many (the widths that fix it are not known yet).
    AtMost(u64),
}

impl Len {
    /// The exact length, if known.
    pub(crate) fn exact(self) -> Option<u64> {
        match self {
            Len::Is(n) => Some(n),
            Len::AtMost(_) => None,
        }
    }

    /// The exact length or its bound.
    pub(crate) fn bound(self) -> u64 {
        match self {
            Len::Is(n) | Len::AtMost(n) => n,
        }
    }
}

/// SH-rest widths, as far as they fix the lengths.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ShWidths {
    /// Every Gaussian at b bits.
    Uniform(u8),
    /// A width per Gaussian: the widths used, how many are non-zero, and
    /// Σ b_i.
    PerGaussian {
        used: Vec<u8>,
        nonzero: u64,
        sum: u64,
    },
    /// A width per Gaussian, not yet read: the lengths are bounds.
    PerGaussianUnread,
}

impl ShWidths {
    /// The summary of the stored Gaussians' widths.
    pub(crate) fn per_gaussian(widths: &[u8]) -> ShWidths {
        ShWidths::PerGaussian {
            used: (1..=8u8).filter(|b| widths.contains(b)).collect(),
            nonzero: widths.iter().filter(|&&b| b > 0).count() as u64,
            sum: widths.iter().map(|&b| b as u64).sum(),
        }
    }
}

/// Deduplicated SH-rest, as far as it fixes the lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dedup {
    /// Every Gaussian has its own SH record.
    Off,
    /// Each distinct vector is one record; this many.
    Records(u64),
    /// Deduplicated, `SHIX` not yet read: the SH streams' lengths are
    /// bounds (at most one record per Gaussian).
    Unread,
}

/// What fixes the streams present and their lengths.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts {
    /// Gaussians stored.
    pub count: u64,
    /// SH-rest dimension d (0: no SH streams).
    pub dim: u64,
    /// The header's rotation kind: 0 dense matrix, 1 Hadamard, 2 seeded.
    pub rotation_kind: u8,
    pub sh: ShWidths,
    pub profile: Profile,
    /// Compact profile: the attribute bits and Gaussians per chunk.
    pub attr_bits: AttrBits,
    pub chunk_size: u32,
    /// Whether `NRM ` is stored.
    pub normals: bool,
    /// Whether the SH-rest is deduplicated (`SHIX` present), and into how
    /// many records.
    pub dedup: Dedup,
    /// Whether the SH-rest is stored bit-exact (`SHX `, no codes).
    pub sh_exact: bool,
    /// (schema bytes, record bytes) of the extra properties, when known.
    pub extras: Option<(u64, u64)>,
    /// Bytes of `CMNT`, when known.
    pub comments: Option<u64>,
}

impl Facts {
    /// The facts a header fixes; the extras and comments are not among them.
    pub(crate) fn from_header(h: &Header) -> Facts {
        let compact = h.profile == Profile::Compact;
        Facts {
            count: h.count,
            dim: h.dim as u64,
            rotation_kind: h.rotation_kind,
            sh: if h.sh_width_mode == 1 {
                ShWidths::PerGaussianUnread
            } else {
                ShWidths::Uniform(h.sh_bits)
            },
            profile: h.profile,
            attr_bits: AttrBits::from_array(h.attr_bits),
            chunk_size: if compact { h.chunk_size } else { 0 },
            normals: h.normals == Normals::Stored,
            dedup: if h.sh_flags & crate::splat::container::SH_DEDUP != 0 {
                Dedup::Unread
            } else {
                Dedup::Off
            },
            sh_exact: h.version >= 4 && h.sh_flags & crate::splat::container::SH_EXACT != 0,
            extras: None,
            comments: None,
        }
    }

    /// Chunks of the compact profile (0 in `exact`).
    pub(crate) fn chunk_count(&self) -> u64 {
        match self.profile {
            Profile::Compact => self.count.div_ceil(self.chunk_size as u64),
            Profile::Exact => 0,
        }
    }

    /// The decoded length of stream `tag`; `None` for a tag these facts do
    /// not fix (unknown, or extras and comments not given).
    pub(crate) fn raw_len(&self, tag: &[u8; 4]) -> Option<Len> {
        let (n, d) = (self.count, self.dim);
        let ab = self.attr_bits;
        let cb = |b: u8| attributes::code_bytes(b) as u64;
        let compact = self.profile == Profile::Compact;
        let sh = &self.sh;
        // Deduplicated: the SH streams hold one record per distinct vector,
        // as many as the Gaussians at most. `sh` describes the records.
        if self.dedup != Dedup::Off && matches!(*tag, SHW | SHS | SHC) {
            let records = Facts {
                count: match self.dedup {
                    Dedup::Records(u) => u,
                    _ => n,
                },
                dedup: Dedup::Off,
                ..self.clone()
            };
            return records.raw_len(tag).map(|l| match (l, self.dedup) {
                (Len::Is(x), Dedup::Unread) => Len::AtMost(x),
                (l, _) => l,
            });
        }
        Some(Len::Is(match *tag {
            ROT => match self.rotation_kind {
                sh::KIND_SEEDED => crate::codec::rotation::SEEDED_LEN as u64,
                // Kind 1 (Hadamard) is as version 1 checked it: d is never a
                // power of two here, so Rotation::from_bytes refuses it.
                _ => d * d * 4,
            },
            CBK => match sh {
                ShWidths::Uniform(b) => sh::codebook_len(&[*b]),
                ShWidths::PerGaussian { used, .. } => sh::codebook_len(used),
                ShWidths::PerGaussianUnread => {
                    return Some(Len::AtMost(sh::codebook_len(&[1, 2, 3, 4, 5, 6, 7, 8])));
                }
            },
            SHIX if self.dedup != Dedup::Off => crate::splat::dedup::index_bytes(n) as u64 * n,
            SHX if self.sh_exact => 4 * n * d,
            SHW => match sh {
                ShWidths::Uniform(_) => return None,
                _ => n.div_ceil(2),
            },
            SHS => match sh {
                ShWidths::Uniform(_) => 2 * n,
                ShWidths::PerGaussian { nonzero, .. } => 2 * nonzero,
                ShWidths::PerGaussianUnread => return Some(Len::AtMost(2 * n)),
            },
            SHC => match sh {
                ShWidths::Uniform(b) => (n * d * *b as u64).div_ceil(8),
                ShWidths::PerGaussian { sum, .. } => (d * sum).div_ceil(8),
                ShWidths::PerGaussianUnread => return Some(Len::AtMost(n * d)),
            },
            CHNK => self.chunk_count() * CHUNK_RECORD as u64,
            POS if compact => 3 * cb(ab.position) * n,
            SCL if compact => 3 * cb(ab.scale) * n,
            QUAT if compact => 4 * n,
            OPA if compact => cb(ab.opacity) * n,
            DC if compact => 3 * cb(ab.dc) * n,
            POS | SCL | DC | NRM => 12 * n,
            QUAT => 16 * n,
            OPA => 4 * n,
            EXTS => self.extras?.0,
            EXTD => self.extras?.1 * n,
            CMNT => self.comments?,
            _ => return None,
        }))
    }

    /// Whether the compressor writes stream `tag`.
    pub(crate) fn present(&self, tag: &[u8; 4]) -> bool {
        let compact = self.profile == Profile::Compact;
        match *tag {
            ROT | CBK | SHS | SHC => self.dim > 0 && !self.sh_exact,
            SHIX => self.dim > 0 && !self.sh_exact && self.dedup != Dedup::Off,
            SHW => self.dim > 0 && !self.sh_exact && !matches!(self.sh, ShWidths::Uniform(_)),
            SHX => self.dim > 0 && self.sh_exact,
            CHNK => compact,
            POS | SCL | QUAT | OPA | DC => true,
            NRM => !compact && self.normals,
            EXTS | EXTD => self.extras.is_some(),
            CMNT => self.comments.is_some(),
            _ => false,
        }
    }
}

/// The `EXTS` stream: the extra properties' count, then each one's type
/// code, name length and name.
pub(crate) fn extras_schema(extras: &Extras) -> Vec<u8> {
    let mut out = (extras.properties.len() as u32).to_le_bytes().to_vec();
    for p in &extras.properties {
        out.push(p.ty.code());
        out.extend_from_slice(&(p.name.len() as u16).to_le_bytes());
        out.extend_from_slice(p.name.as_bytes());
    }
    out
}

/// Inverse of [`extras_schema`], for a header that declares `count`.
pub(crate) fn parse_schema(b: &[u8], count: u32) -> Result<Vec<ExtraProperty>, String> {
    if b.first_chunk::<4>()
        .is_none_or(|c| u32::from_le_bytes(*c) != count)
    {
        return Err(format!("does not list the header's {count} properties"));
    }
    let mut at = 4;
    let mut out = Vec::new();
    for k in 0..count {
        if b.len() < at + 3 {
            return Err(format!("property {k} is truncated"));
        }
        let ty = ScalarType::from_code(b[at])
            .ok_or_else(|| format!("property {k} has unknown type code {}", b[at]))?;
        let len = u16::from_le_bytes([b[at + 1], b[at + 2]]) as usize;
        at += 3;
        let name = b
            .get(at..at + len)
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or_else(|| format!("property {k} has a truncated or non-UTF-8 name"))?;
        out.push(ExtraProperty {
            name: name.to_string(),
            ty,
        });
        at += len;
    }
    if at != b.len() {
        return Err(format!("{} bytes after the last property", b.len() - at));
    }
    Ok(out)
}

/// The `CMNT` stream: each comment followed by a line break.
pub(crate) fn comments_bytes(comments: &[String]) -> Vec<u8> {
    comments
        .iter()
        .flat_map(|c| c.bytes().chain([b'\n']))
        .collect()
}

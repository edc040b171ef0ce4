//! The `.tqv` file: N TurboQuant-encoded vectors and everything needed to
//! decode them (the rotation actually used, the codebook tables, the scale
//! convention). docs/FORMAT.md is the specification; this is its reference
//! implementation.
//!
//! ```text
//! header   64 bytes   magic "TQ3D-TQV", version, d, b, kinds, N, seed, CRC-32
//! section  ROT        rotation parameters
//! section  CBK        2^b centroids, 2^b − 1 boundaries (f32)
//! section  SCL        N scales (f32 or f16)
//! section  COD        packed codes, ceil(N·d·b / 8) bytes
//! ```
//!
//! Each section is a 16-byte header (tag, payload length, CRC-32 of the
//! payload) and its payload. All integers and floats are little-endian.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::codec::codebook::validate_params;
use crate::format::input::{Extent, add_len, read_declared};
use crate::format::write_atomic;
use crate::packing::packed_len;
use crate::{
    Encoded, Error, Quantizer, Result, Rotation, RotationKind, ScaleFormat, ScaleMode, Scales,
};

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"TQ3D-TQV";
/// The format version this library writes and reads.
pub const VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Size of each section header.
pub const SECTION_HEADER_LEN: usize = 16;
const FLAG_HAS_SEED: u16 = 1;

/// The sections, in file order.
pub const SECTIONS: [[u8; 4]; 4] = [*b"ROT ", *b"CBK ", *b"SCL ", *b"COD "];

/// A decoded `.tqv` file.
#[derive(Debug, Clone)]
pub struct TqvFile {
    /// The quantizer rebuilt from the stored rotation and tables.
    pub quantizer: Quantizer,
    /// The codes and scales.
    pub encoded: Encoded,
    /// The seed the rotation was generated from, if recorded (informational:
    /// decoding uses the stored parameters).
    pub seed: Option<u64>,
}

fn rotation_code(kind: RotationKind) -> u8 {
    match kind {
        RotationKind::Dense => 0,
        RotationKind::Hadamard => 1,
    }
}

/// Serialises a file to bytes.
pub fn to_bytes(q: &Quantizer, enc: &Encoded, seed: Option<u64>) -> Result<Vec<u8>> {
    if enc.dim() != q.dim() || enc.bits() != q.bits() || enc.scales().format() != q.scale_format() {
        return Err(Error::Shape(
            "encoded data does not match the quantizer's d, b or scale format".into(),
        ));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * SECTION_HEADER_LEN + enc.payload_bytes());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(if seed.is_some() { FLAG_HAS_SEED } else { 0 }).to_le_bytes());
    out.extend_from_slice(&(q.dim() as u32).to_le_bytes());
    out.push(q.bits() as u8);
    out.push(rotation_code(q.rotation().kind()));
    out.push(match q.scale_mode() {
        ScaleMode::Norm => 0,
        ScaleMode::LeastSquares => 1,
    });
    out.push(match q.scale_format() {
        ScaleFormat::F32 => 0,
        ScaleFormat::F16 => 1,
    });
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(enc.len() as u64).to_le_bytes());
    out.extend_from_slice(&seed.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&(SECTIONS.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 16]);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);

    let codebook: Vec<u8> = q
        .centroids()
        .iter()
        .chain(q.boundaries())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let payloads = [
        q.rotation().to_bytes(),
        codebook,
        enc.scales().to_le_bytes(),
    ];
    for (tag, payload) in SECTIONS
        .iter()
        .zip(payloads.iter().map(|p| &p[..]).chain([enc.codes()]))
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
pub fn write(path: &Path, q: &Quantizer, enc: &Encoded, seed: Option<u64>) -> Result<u64> {
    let bytes = to_bytes(q, enc, seed)?;
    write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// Reads and fully validates a file.
pub fn read(path: &Path) -> Result<TqvFile> {
    from_bytes(&read_bytes(path)?, path)
}

/// Reads a file's bytes as far as its header and section headers declare,
/// and no further (see [`crate::format::input`]).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    read_declared(path, |b| extent(b, path))
}

/// How long the file says it is, from the bytes read so far.
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
        let len = u64_at(bytes, at as usize + 4);
        at = add_len(end, len, path, "section length")?;
    }
    Ok(Extent::Total(at))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|k| b[at + k]))
}

/// The header fields, parsed and validated.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Vector dimension d.
    pub dim: usize,
    /// Bits per coordinate b.
    pub bits: u32,
    /// Rotation family.
    pub rotation: RotationKind,
    /// Scale convention.
    pub scale_mode: ScaleMode,
    /// Scale storage.
    pub scale_format: ScaleFormat,
    /// Number of vectors N.
    pub count: u64,
    /// Seed, if recorded.
    pub seed: Option<u64>,
}

/// Parses and checks the fixed header. `path` only labels errors.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    if bytes.len() < HEADER_LEN {
        return Err(bad(
            "header",
            format!(
                "file is {} bytes, shorter than the {HEADER_LEN}-byte header: truncated or not a .tqv file",
                bytes.len()
            ),
        ));
    }
    if bytes[..8] != MAGIC {
        return Err(bad(
            "magic",
            format!(
                "expected {:?}, found {:?}: not a .tqv file",
                String::from_utf8_lossy(&MAGIC),
                String::from_utf8_lossy(&bytes[..8])
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
    let version = u16_at(bytes, 8);
    if version != VERSION {
        return Err(bad(
            "version",
            format!("file has version {version}; this build reads version {VERSION}"),
        ));
    }
    let flags = u16_at(bytes, 10);
    if flags & !FLAG_HAS_SEED != 0 {
        return Err(bad("flags", format!("unknown flag bits {flags:#06x}")));
    }
    let dim = u32_at(bytes, 12) as usize;
    let bits = bytes[16] as u32;
    validate_params(dim, bits).map_err(|e| bad("d or b", e.to_string()))?;
    let rotation = match bytes[17] {
        0 => RotationKind::Dense,
        1 => RotationKind::Hadamard,
        v => {
            return Err(bad(
                "rotation kind",
                format!("{v} is neither 0 (dense) nor 1 (hadamard)"),
            ));
        }
    };
    let scale_mode = match bytes[18] {
        0 => ScaleMode::Norm,
        1 => ScaleMode::LeastSquares,
        v => {
            return Err(bad(
                "scale mode",
                format!("{v} is neither 0 (norm) nor 1 (least squares)"),
            ));
        }
    };
    let scale_format = match bytes[19] {
        0 => ScaleFormat::F32,
        1 => ScaleFormat::F16,
        v => {
            return Err(bad(
                "scale format",
                format!("{v} is neither 0 (f32) nor 1 (f16)"),
            ));
        }
    };
    let sections = u32_at(bytes, 40);
    if sections != SECTIONS.len() as u32 {
        return Err(bad(
            "section count",
            format!("{sections}, expected {}", SECTIONS.len()),
        ));
    }
    if u32_at(bytes, 20) != 0 || bytes[44..60].iter().any(|&b| b != 0) {
        return Err(bad("reserved bytes", "must be zero".into()));
    }
    let seed = (flags & FLAG_HAS_SEED != 0).then(|| u64_at(bytes, 32));
    Ok(Header {
        dim,
        bits,
        rotation,
        scale_mode,
        scale_format,
        count: u64_at(bytes, 24),
        seed,
    })
}

/// Parses and fully validates a file held in memory. `path` only labels errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<TqvFile> {
    let bad = |field: &str, why: String| Error::format(path, field, why);
    let h = parse_header(bytes, path)?;
    let (d, b) = (h.dim, h.bits);
    let count = usize::try_from(h.count)
        .map_err(|_| bad("count", format!("{} vectors do not fit in memory", h.count)))?;
    let coords = count
        .checked_mul(d)
        .ok_or_else(|| bad("count", format!("{count} vectors × d = {d} overflows")))?;
    let expected: [Option<u64>; 4] = [
        None, // ROT: depends on its own round count; checked by Rotation::from_bytes.
        Some((((1u64 << b) * 2) - 1) * 4),
        (count as u64).checked_mul(h.scale_format.bytes() as u64),
        Some(packed_len(coords, b) as u64),
    ];
    let mut at = HEADER_LEN;
    let mut payloads: Vec<&[u8]> = Vec::with_capacity(4);
    for (tag, want) in SECTIONS.iter().zip(expected) {
        let name = String::from_utf8_lossy(tag).trim().to_string();
        if bytes.len() < at + SECTION_HEADER_LEN {
            return Err(bad(
                &format!("{name} section"),
                format!(
                    "file ends at byte {} before the section header: truncated",
                    bytes.len()
                ),
            ));
        }
        if &bytes[at..at + 4] != tag {
            return Err(bad(
                &format!("{name} section"),
                format!(
                    "expected tag {:?} at byte {at}, found {:?}",
                    name,
                    String::from_utf8_lossy(&bytes[at..at + 4])
                ),
            ));
        }
        let len = u64_at(bytes, at + 4);
        if let Some(want) = want
            && len != want
        {
            return Err(bad(
                &format!("{name} section"),
                format!("length {len} disagrees with the header, which implies {want}"),
            ));
        }
        let start = at + SECTION_HEADER_LEN;
        let remaining = (bytes.len() - start) as u64;
        if len > remaining {
            return Err(bad(
                &format!("{name} section"),
                format!("needs {len} bytes but only {remaining} remain: truncated"),
            ));
        }
        let payload = &bytes[start..start + len as usize];
        let stored = u32_at(bytes, at + 12);
        let computed = crc32fast::hash(payload);
        if stored != computed {
            return Err(Error::Checksum {
                path: path.into(),
                section: format!("{name} section"),
                stored,
                computed,
            });
        }
        payloads.push(payload);
        at = start + len as usize;
    }
    if at != bytes.len() {
        return Err(bad(
            "file length",
            format!(
                "{} unexpected bytes after the last section",
                bytes.len() - at
            ),
        ));
    }

    let used_bits = (coords as u128 * b as u128 % 8) as u32;
    if used_bits != 0
        && payloads[3]
            .last()
            .is_some_and(|&last| last >> used_bits != 0)
    {
        return Err(bad(
            "COD section",
            "the unused high bits of the last byte must be zero".into(),
        ));
    }
    let rotation =
        Rotation::from_bytes(h.rotation, d, payloads[0]).map_err(|why| bad("ROT section", why))?;
    // Stored values are finite and where the codec puts them
    // (docs/FORMAT.md, "Non-finite values"): Rotation::from_bytes refuses a
    // dense matrix with an entry outside [−1, 1] or a row or column not of
    // unit norm, and the codebook of a rotated unit vector's coordinates
    // lies on [−1, 1].
    let tables: Vec<f32> = payloads[1]
        .as_chunks::<4>()
        .0
        .iter()
        .map(|c| f32::from_le_bytes(*c))
        .collect();
    if let Some(x) = tables.iter().find(|x| x.is_nan() || x.abs() > 1.0) {
        return Err(bad(
            "CBK section",
            format!("the value {x} is not in [-1, 1]"),
        ));
    }
    let n = 1usize << b;
    let (centroids, boundaries) = (tables[..n].to_vec(), tables[n..].to_vec());
    let quantizer = Quantizer::from_parts(
        Arc::new(rotation),
        b,
        centroids,
        boundaries,
        h.scale_mode,
        h.scale_format,
    )
    .map_err(|e| bad("CBK section", e.to_string()))?;
    let scales = Scales::from_le_bytes(h.scale_format, payloads[2])
        .map_err(|e| bad("SCL section", e.to_string()))?;
    // A decoded vector is s·Πᵀc with every |c_j| ≤ 1, so |x_i| ≤ |s|·√d:
    // a larger scale decodes to ±Inf in f32.
    let max_scale = f32::MAX / (d as f32).sqrt();
    if let Some(i) = (0..scales.len()).find(|&i| {
        let s = scales.get(i);
        s.is_nan() || s.abs() > max_scale
    }) {
        return Err(bad(
            "SCL section",
            format!(
                "the scale of vector {i} is {:e}; at most {max_scale:e} decodes to finite f32",
                scales.get(i)
            ),
        ));
    }
    let encoded = Encoded::from_parts(d, b, count, payloads[3].to_vec(), scales)
        .map_err(|e| bad("SCL or COD section", e.to_string()))?;
    Ok(TqvFile {
        quantizer,
        encoded,
        seed: h.seed,
    })
}

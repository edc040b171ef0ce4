//! `.tqv` test helpers: small valid files, and an independent walk of a
//! file's sections (a 64-byte header, then four sections of a 16-byte
//! header — tag, u64 length, CRC-32 — and a payload), never asking the
//! library where anything is.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use turboquant3d::format::tqv;
use turboquant3d::{
    Encoded, Error, Quantizer, QuantizerConfig, RotationKind, ScaleFormat, ScaleMode,
};

use super::data::gaussian;

pub fn config(
    d: usize,
    b: u32,
    kind: RotationKind,
    mode: ScaleMode,
    format: ScaleFormat,
    seed: u64,
) -> QuantizerConfig {
    QuantizerConfig {
        dim: d,
        bits: b,
        rotation: kind,
        seed,
        scale_mode: mode,
        scale_format: format,
    }
}

pub fn encode(cfg: &QuantizerConfig, n: usize, data_seed: u64) -> (Quantizer, Encoded, Vec<f32>) {
    let q = Quantizer::new(cfg).unwrap();
    let x = gaussian(n, cfg.dim, data_seed);
    let enc = q.encode(&x).unwrap();
    (q, enc, x)
}

/// A small valid file: 10 vectors, d = 45, b = 3, dense, LS, f32, seed 7.
pub fn small_file() -> Vec<u8> {
    let cfg = config(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
        7,
    );
    let (q, enc, _) = encode(&cfg, 10, 1);
    tqv::to_bytes(&q, &enc, Some(7)).unwrap()
}

/// A small Hadamard file: 10 vectors, d = 64, b = 2, norm scale as f16.
pub fn small_hadamard_file() -> Vec<u8> {
    let cfg = config(
        64,
        2,
        RotationKind::Hadamard,
        ScaleMode::Norm,
        ScaleFormat::F16,
        9,
    );
    let (q, enc, _) = encode(&cfg, 10, 2);
    tqv::to_bytes(&q, &enc, None).unwrap()
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One section as found by walking the file.
#[derive(Debug, Clone)]
pub struct Section {
    /// The tag without its padding space: "ROT", "CBK", "SCL", "COD".
    pub name: String,
    /// Offset of the 16-byte section header.
    pub header: usize,
    /// The payload's byte range.
    pub payload: Range<usize>,
}

pub fn walk(bytes: &[u8]) -> Vec<Section> {
    let mut at = 64;
    let mut out = Vec::new();
    for want in ["ROT", "CBK", "SCL", "COD"] {
        let name = String::from_utf8(bytes[at..at + 4].to_vec()).unwrap();
        assert_eq!(name.trim_end(), want, "section tag at byte {at}");
        let len = u64_at(bytes, at + 4) as usize;
        out.push(Section {
            name: want.to_string(),
            header: at,
            payload: at + 16..at + 16 + len,
        });
        at += 16 + len;
    }
    assert_eq!(
        at,
        bytes.len(),
        "sections must end exactly at the end of the file"
    );
    out
}

/// Rewrites the header's CRC-32 (bytes 60..64) after editing bytes[..60].
pub fn fix_header_crc(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites a section's CRC-32 after editing its payload.
pub fn fix_section_crc(bytes: &mut [u8], s: &Section) {
    let crc = crc32fast::hash(&bytes[s.payload.clone()]);
    bytes[s.header + 12..s.header + 16].copy_from_slice(&crc.to_le_bytes());
}

/// `from_bytes` with a panic turned into a test failure that names the case.
pub fn parse(bytes: &[u8], path: &Path, what: &str) -> turboquant3d::Result<tqv::TqvFile> {
    match catch_unwind(AssertUnwindSafe(|| tqv::from_bytes(bytes, path))) {
        Ok(r) => r,
        Err(_) => panic!("tqv::from_bytes panicked on {what}"),
    }
}

/// Asserts an Err of the Format variant whose field mentions `field`, and
/// whose message names the path. Returns the message.
pub fn expect_format(
    r: turboquant3d::Result<tqv::TqvFile>,
    path: &Path,
    field: &str,
    what: &str,
) -> String {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "{what}: message does not name the file: {msg}"
            );
            match &e {
                Error::Format {
                    field: f, path: p, ..
                } => {
                    assert_eq!(p, path, "{what}");
                    assert!(
                        f.contains(field),
                        "{what}: expected a Format error about {field:?}, got field {f:?}: {msg}"
                    );
                }
                other => panic!("{what}: expected Error::Format about {field:?}, got {other:?}"),
            }
            msg
        }
    }
}

pub fn label() -> PathBuf {
    PathBuf::from("some/folder/label-7f3a.tqv")
}

pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

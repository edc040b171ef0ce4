//! The `.tqv` container and the `.npy` reader: round trips, every single-byte
//! corruption, every truncation, hostile headers with valid checksums,
//! atomic writes, and `.npy` files of the wrong kind.
//!
//! Section boundaries are found here by walking the file independently (a
//! 64-byte header, then four sections of a 16-byte header — tag, u64 length,
//! CRC-32 — and a payload), never by asking the library.

// Tables of boxed edit closures read best inline.
#![allow(clippy::type_complexity)]
mod common;
#[path = "common/tracking.rs"]
mod tracking;

use std::io::Write;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::data::gaussian;
use half::f16;
use npyz::WriterBuilder;
use tracking::largest_allocation;
use turboquant3d::format::{npy, tqv, write_atomic};
use turboquant3d::{
    Encoded, Error, Quantizer, QuantizerConfig, Rotation, RotationKind, ScaleFormat, ScaleMode,
};

// ---------------------------------------------------------------------------
// Helpers.

fn config(
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

fn encode(cfg: &QuantizerConfig, n: usize, data_seed: u64) -> (Quantizer, Encoded, Vec<f32>) {
    let q = Quantizer::new(cfg).unwrap();
    let x = gaussian(n, cfg.dim, data_seed);
    let enc = q.encode(&x).unwrap();
    (q, enc, x)
}

/// A small valid file: 10 vectors, d = 45, b = 3, dense, LS, f32, seed 7.
fn small_file() -> Vec<u8> {
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
fn small_hadamard_file() -> Vec<u8> {
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

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One section as found by walking the file.
#[derive(Debug, Clone)]
struct Section {
    /// The tag without its padding space: "ROT", "CBK", "SCL", "COD".
    name: String,
    /// Offset of the 16-byte section header.
    header: usize,
    /// The payload's byte range.
    payload: Range<usize>,
}

fn walk(bytes: &[u8]) -> Vec<Section> {
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
fn fix_header_crc(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites a section's CRC-32 after editing its payload.
fn fix_section_crc(bytes: &mut [u8], s: &Section) {
    let crc = crc32fast::hash(&bytes[s.payload.clone()]);
    bytes[s.header + 12..s.header + 16].copy_from_slice(&crc.to_le_bytes());
}

/// `from_bytes` with a panic turned into a test failure that names the case.
fn parse(bytes: &[u8], path: &Path, what: &str) -> turboquant3d::Result<tqv::TqvFile> {
    match catch_unwind(AssertUnwindSafe(|| tqv::from_bytes(bytes, path))) {
        Ok(r) => r,
        Err(_) => panic!("tqv::from_bytes panicked on {what}"),
    }
}

/// Asserts an Err of the Format variant whose field mentions `field`, and
/// whose message names the path. Returns the message.
fn expect_format(
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

fn label() -> PathBuf {
    PathBuf::from("some/folder/label-7f3a.tqv")
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Round trips.

#[test]
fn round_trip_preserves_codes_scales_tables_rotation_and_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for b in 1..=4 {
        cases.push((45, b, RotationKind::Dense));
    }
    cases.push((64, 2, RotationKind::Hadamard));
    cases.push((64, 4, RotationKind::Hadamard));
    let n = 101; // not a multiple of 8: the code stream ends mid-byte for odd b
    let mut k = 0;
    for &(d, b, kind) in &cases {
        for mode in [ScaleMode::Norm, ScaleMode::LeastSquares] {
            for format in [ScaleFormat::F32, ScaleFormat::F16] {
                k += 1;
                let seed = 1000 + k;
                let what = format!("d={d} b={b} {kind:?} {mode:?} {format:?}");
                let cfg = config(d, b, kind, mode, format, seed);
                let (q, enc, x) = encode(&cfg, n, k);
                let path = dir.path().join(format!("case{k}.tqv"));
                tqv::write(&path, &q, &enc, Some(seed)).unwrap();

                // Size from the layout: header, four section headers, payloads.
                let rot_len = match &**q.rotation() {
                    Rotation::Dense(_) => d * d * 4,
                    Rotation::Hadamard(h) => 4 + h.rounds() * d.div_ceil(8) + 4 * d,
                };
                let cbk_len = ((1usize << b) * 2 - 1) * 4;
                let scl_len = n * if format == ScaleFormat::F32 { 4 } else { 2 };
                let cod_len = (n * d * b as usize).div_ceil(8);
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(
                    bytes.len(),
                    64 + 4 * 16 + rot_len + cbk_len + scl_len + cod_len,
                    "{what}: file size"
                );
                assert_eq!(&bytes[..8], b"TQ3D-TQV", "{what}");
                let secs = walk(&bytes);
                assert_eq!(secs[3].payload.len(), cod_len, "{what}");
                assert_eq!(&bytes[secs[3].payload.clone()], enc.codes(), "{what}");
                assert_eq!(
                    bytes,
                    tqv::to_bytes(&q, &enc, Some(seed)).unwrap(),
                    "{what}"
                );

                let f = tqv::read(&path).unwrap();
                assert_eq!(f.seed, Some(seed), "{what}: seed");
                assert_eq!(f.encoded, enc, "{what}: encoded");
                let r = &f.quantizer;
                assert_eq!(r.dim(), d, "{what}");
                assert_eq!(r.bits(), b, "{what}");
                assert_eq!(r.scale_mode(), mode, "{what}");
                assert_eq!(r.scale_format(), format, "{what}");
                assert_eq!(r.rotation().kind(), kind, "{what}");
                assert_eq!(**r.rotation(), **q.rotation(), "{what}: rotation");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(r.centroids()), bits(q.centroids()), "{what}");
                assert_eq!(bits(r.boundaries()), bits(q.boundaries()), "{what}");

                let want = q.decode(&enc).unwrap();
                let got = r.decode(&f.encoded).unwrap();
                assert_eq!(bits(&got), bits(&want), "{what}: decode differs");
                // The rebuilt quantizer also encodes exactly like the original.
                assert_eq!(r.encode(&x).unwrap(), enc, "{what}: re-encode");
            }
        }
    }
}

#[test]
fn seed_is_optional_and_round_trips_at_its_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        45,
        2,
        RotationKind::Dense,
        ScaleMode::Norm,
        ScaleFormat::F32,
        3,
    );
    let (q, enc, _) = encode(&cfg, 5, 3);
    for seed in [None, Some(0), Some(1), Some(u64::MAX)] {
        let path = dir.path().join("s.tqv");
        tqv::write(&path, &q, &enc, seed).unwrap();
        let f = tqv::read(&path).unwrap();
        assert_eq!(f.seed, seed);
        assert_eq!(f.encoded, enc);
    }
}

#[test]
fn single_vector_round_trips() {
    let cfg = config(
        2,
        8,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F16,
        5,
    );
    let (q, enc, _) = encode(&cfg, 1, 5);
    let bytes = tqv::to_bytes(&q, &enc, Some(5)).unwrap();
    let f = tqv::from_bytes(&bytes, &label()).unwrap();
    assert_eq!(f.encoded, enc);
    assert_eq!(
        f.quantizer.decode(&f.encoded).unwrap(),
        q.decode(&enc).unwrap()
    );
}

/// y = H·x with the unnormalised Walsh–Hadamard matrix H_ij = (−1)^popcount(i & j).
fn walsh_hadamard(x: &[f64]) -> Vec<f64> {
    let d = x.len();
    (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    if (i & j).count_ones() % 2 == 0 {
                        x[j]
                    } else {
                        -x[j]
                    }
                })
                .sum()
        })
        .collect()
}

/// Checks a file byte by byte against docs/FORMAT.md, including that the
/// stored rotation, applied as the document describes, is the quantizer's.
fn check_layout(q: &Quantizer, enc: &Encoded, seed: Option<u64>, bytes: &[u8], what: &str) {
    let (d, b, n) = (q.dim(), q.bits(), enc.len());
    assert_eq!(&bytes[..8], b"TQ3D-TQV", "{what}: magic");
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        1,
        "{what}: version"
    );
    let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
    assert_eq!(flags, seed.is_some() as u16, "{what}: flags");
    assert_eq!(u32_at(bytes, 12) as usize, d, "{what}: d");
    assert_eq!(bytes[16] as u32, b, "{what}: b");
    let kind = match q.rotation().kind() {
        RotationKind::Dense => 0,
        RotationKind::Hadamard => 1,
    };
    assert_eq!(bytes[17], kind, "{what}: rotation kind");
    let mode = match q.scale_mode() {
        ScaleMode::Norm => 0,
        ScaleMode::LeastSquares => 1,
    };
    assert_eq!(bytes[18], mode, "{what}: scale mode");
    let format = match q.scale_format() {
        ScaleFormat::F32 => 0,
        ScaleFormat::F16 => 1,
    };
    assert_eq!(bytes[19], format, "{what}: scale format");
    assert_eq!(u32_at(bytes, 20), 0, "{what}: reserved");
    assert_eq!(u64_at(bytes, 24) as usize, n, "{what}: N");
    if let Some(s) = seed {
        assert_eq!(u64_at(bytes, 32), s, "{what}: seed");
    }
    assert_eq!(u32_at(bytes, 40), 4, "{what}: section count");
    assert!(bytes[44..60].iter().all(|&x| x == 0), "{what}: reserved");
    assert_eq!(
        u32_at(bytes, 60),
        crc32fast::hash(&bytes[..60]),
        "{what}: header CRC"
    );

    let secs = walk(bytes);
    for s in &secs {
        assert_eq!(
            u32_at(bytes, s.header + 12),
            crc32fast::hash(&bytes[s.payload.clone()]),
            "{what}: {} CRC",
            s.name
        );
    }
    let payload = |i: usize| &bytes[secs[i].payload.clone()];

    // CBK: centroids then boundaries, f32.
    let tables: Vec<f32> = payload(1)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let k = 1usize << b;
    assert_eq!(tables.len(), 2 * k - 1, "{what}: CBK length");
    assert_eq!(&tables[..k], q.centroids(), "{what}: centroids");
    assert_eq!(&tables[k..], q.boundaries(), "{what}: boundaries");

    // SCL: one scale per vector.
    let width = if format == 0 { 4 } else { 2 };
    assert_eq!(payload(2).len(), n * width, "{what}: SCL length");
    for i in 0..n {
        let c = &payload(2)[i * width..(i + 1) * width];
        let s = if width == 4 {
            f32::from_le_bytes(c.try_into().unwrap())
        } else {
            f16::from_le_bytes(c.try_into().unwrap()).to_f32()
        };
        assert_eq!(
            s.to_bits(),
            enc.scales().get(i).to_bits(),
            "{what}: scale {i}"
        );
    }

    // COD: ceil(N·d·b/8) bytes, unused high bits of the last byte zero.
    let cod = payload(3);
    assert_eq!(
        cod.len(),
        (n * d * b as usize).div_ceil(8),
        "{what}: COD length"
    );
    assert_eq!(cod, enc.codes(), "{what}: codes");
    let used = (n * d * b as usize) % 8;
    if used != 0 {
        assert_eq!(cod[cod.len() - 1] >> used, 0, "{what}: padding bits");
    }

    // ROT: Π applied as documented agrees with the quantizer's rotation.
    let rot = payload(0);
    let apply: Box<dyn Fn(&[f64]) -> Vec<f64>> = if kind == 0 {
        assert_eq!(rot.len(), 4 * d * d, "{what}: dense ROT length");
        let m: Vec<f64> = rot
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect();
        Box::new(move |u: &[f64]| {
            (0..d)
                .map(|r| (0..d).map(|c| m[r * d + c] * u[c]).sum())
                .collect()
        })
    } else {
        let rounds = u32_at(rot, 0) as usize;
        assert!((1..=16).contains(&rounds), "{what}: rounds {rounds}");
        let sb = d.div_ceil(8);
        assert_eq!(
            rot.len(),
            4 + rounds * sb + 4 * d,
            "{what}: Hadamard ROT length"
        );
        let signs: Vec<Vec<f64>> = (0..rounds)
            .map(|r| {
                let bits = &rot[4 + r * sb..4 + (r + 1) * sb];
                (0..d)
                    .map(|j| {
                        if bits[j / 8] >> (j % 8) & 1 == 1 {
                            -1.0
                        } else {
                            1.0
                        }
                    })
                    .collect()
            })
            .collect();
        let perm: Vec<usize> = rot[4 + rounds * sb..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect();
        let mut sorted = perm.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..d).collect::<Vec<_>>(),
            "{what}: not a permutation"
        );
        Box::new(move |u: &[f64]| {
            let mut x = u.to_vec();
            for (r, s) in signs.iter().enumerate() {
                let sx: Vec<f64> = x.iter().zip(s).map(|(a, b)| a * b).collect();
                x = walsh_hadamard(&sx);
                if r == 0 {
                    x = (0..d).map(|j| x[perm[j]]).collect();
                }
            }
            let scale = (1.0 / (d as f64).sqrt()).powi(rounds as i32);
            x.iter().map(|v| v * scale).collect()
        })
    };
    let u = gaussian(3, d, 99);
    for row in u.chunks_exact(d) {
        let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let unit: Vec<f32> = row.iter().map(|&v| (v as f64 / norm) as f32).collect();
        let want = apply(&unit.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let got = q.rotation().forward(&unit).unwrap();
        for j in 0..d {
            assert!(
                (got[j] as f64 - want[j]).abs() < 1e-5,
                "{what}: rotated coordinate {j}: {} vs {} as documented",
                got[j],
                want[j]
            );
        }
    }
}

#[test]
fn file_layout_is_as_documented() {
    let cases = [
        (
            45,
            3,
            RotationKind::Dense,
            ScaleMode::LeastSquares,
            ScaleFormat::F32,
            Some(17),
        ),
        (
            45,
            5,
            RotationKind::Dense,
            ScaleMode::Norm,
            ScaleFormat::F16,
            None,
        ),
        (
            64,
            3,
            RotationKind::Hadamard,
            ScaleMode::LeastSquares,
            ScaleFormat::F16,
            Some(u64::MAX),
        ),
        (
            128,
            1,
            RotationKind::Hadamard,
            ScaleMode::Norm,
            ScaleFormat::F32,
            Some(3),
        ),
    ];
    for (i, &(d, b, kind, mode, format, seed)) in cases.iter().enumerate() {
        let what = format!("d={d} b={b} {kind:?} {mode:?} {format:?}");
        let cfg = config(d, b, kind, mode, format, seed.unwrap_or(5));
        let (q, enc, _) = encode(&cfg, 7, i as u64);
        let bytes = tqv::to_bytes(&q, &enc, seed).unwrap();
        check_layout(&q, &enc, seed, &bytes, &what);
    }
}

#[test]
fn a_zero_vector_decodes_to_positive_zeros_after_a_round_trip() {
    let d = 45;
    for mode in [ScaleMode::Norm, ScaleMode::LeastSquares] {
        for format in [ScaleFormat::F32, ScaleFormat::F16] {
            let cfg = config(d, 3, RotationKind::Dense, mode, format, 1);
            let q = Quantizer::new(&cfg).unwrap();
            let mut x = gaussian(3, d, 4);
            x[d..2 * d].fill(0.0);
            let enc = q.encode(&x).unwrap();
            let bytes = tqv::to_bytes(&q, &enc, None).unwrap();
            let f = tqv::from_bytes(&bytes, &label()).unwrap();
            assert_eq!(f.encoded.scales().get(1), 0.0);
            let y = f.quantizer.decode(&f.encoded).unwrap();
            assert!(
                y[d..2 * d].iter().all(|v| v.to_bits() == 0),
                "{mode:?} {format:?}: zero row decodes to {:?}",
                &y[d..2 * d]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Corruption: every single byte of a small file.

fn check_every_flip(bytes: &[u8], what: &str) {
    let secs = walk(bytes);
    let path = label();
    let shown = path.display().to_string();
    let mut b = bytes.to_vec();
    for i in 0..b.len() {
        b[i] ^= 0x01;
        let r = parse(&b, &path, &format!("{what}: byte {i} flipped"));
        b[i] ^= 0x01;
        let e = match r {
            Ok(_) => panic!("{what}: byte {i} flipped, yet the file was accepted"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&shown),
            "{what}: byte {i}: message lacks the path: {msg}"
        );
        if i < 64 {
            match &e {
                Error::Checksum { section, .. } => {
                    assert_eq!(section, "header", "{what}: byte {i}: {msg}")
                }
                Error::Format { .. } => {}
                other => panic!("{what}: header byte {i}: unexpected {other:?}"),
            }
            continue;
        }
        let s = secs
            .iter()
            .find(|s| (s.header..s.payload.end).contains(&i))
            .unwrap();
        if s.payload.contains(&i) {
            match &e {
                Error::Checksum {
                    section,
                    stored,
                    computed,
                    ..
                } => {
                    assert!(
                        section.contains(&s.name),
                        "{what}: byte {i} in the {} payload, error names {section:?}",
                        s.name
                    );
                    assert_eq!(*stored, u32_at(bytes, s.header + 12), "{what}: byte {i}");
                    let mut flipped = bytes[s.payload.clone()].to_vec();
                    flipped[i - s.payload.start] ^= 0x01;
                    assert_eq!(*computed, crc32fast::hash(&flipped), "{what}: byte {i}");
                }
                other => panic!(
                    "{what}: byte {i} in the {} payload: expected Error::Checksum, got {other:?}",
                    s.name
                ),
            }
        } else {
            // The section header: tag, length or CRC.
            match &e {
                Error::Checksum { section, .. } => assert!(
                    section.contains(&s.name),
                    "{what}: byte {i} in the {} section header, error names {section:?}",
                    s.name
                ),
                Error::Format { .. } => {}
                other => panic!(
                    "{what}: byte {i} in the {} section header: unexpected {other:?}",
                    s.name
                ),
            }
            if i >= s.header + 12 {
                assert!(
                    matches!(&e, Error::Checksum { section, .. } if section.contains(&s.name)),
                    "{what}: byte {i} in the {} section CRC: expected a checksum error, got {e:?}",
                    s.name
                );
            }
        }
    }
}

#[test]
fn every_single_byte_flip_is_rejected_dense() {
    check_every_flip(&small_file(), "dense d=45 b=3");
}

#[test]
fn every_single_byte_flip_is_rejected_hadamard() {
    check_every_flip(&small_hadamard_file(), "hadamard d=64 b=2");
}

// ---------------------------------------------------------------------------
// Truncation.

#[test]
fn every_truncation_is_rejected_and_says_so() {
    for (bytes, what) in [(small_file(), "dense"), (small_hadamard_file(), "hadamard")] {
        let path = label();
        let shown = path.display().to_string();
        for k in 0..bytes.len() {
            let e = match parse(&bytes[..k], &path, &format!("{what}: prefix of {k} bytes")) {
                Ok(_) => panic!(
                    "{what}: a prefix of {k} of {} bytes was accepted",
                    bytes.len()
                ),
                Err(e) => e,
            };
            assert!(
                matches!(e, Error::Format { .. }),
                "{what}: prefix {k}: expected Error::Format, got {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&shown), "{what}: prefix {k}: {msg}");
            assert!(msg.contains("truncated"), "{what}: prefix {k}: {msg}");
        }
        assert!(parse(&bytes, &path, what).is_ok());
    }
}

#[test]
fn truncated_files_on_disk_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = small_file();
    for k in [0, 7, 63, 64, 100, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{k}.tqv"));
        std::fs::write(&path, &bytes[..k]).unwrap();
        let e = tqv::read(&path)
            .err()
            .unwrap_or_else(|| panic!("prefix {k} accepted"));
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "prefix {k}: {msg}"
        );
        assert!(msg.contains("truncated"), "prefix {k}: {msg}");
    }
    let missing = dir.path().join("missing.tqv");
    match tqv::read(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing file: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Hostile headers, each with a valid header CRC so that the field check
// itself is reached.

fn with_header(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = small_file();
    edit(&mut b);
    fix_header_crc(&mut b);
    b
}

#[test]
fn wrong_magic_is_a_format_error() {
    let path = label();
    let mut b = small_file();
    b[..8].copy_from_slice(b"TQ3D-TQX");
    expect_format(parse(&b, &path, "magic"), &path, "magic", "wrong magic");
    // Even with the header CRC fixed up.
    let b = with_header(|b| b[..8].copy_from_slice(b"\x93NUMPY\x01\x00"));
    expect_format(parse(&b, &path, "npy magic"), &path, "magic", "npy magic");
    // 64 bytes of zeros.
    expect_format(parse(&[0u8; 64], &path, "zeros"), &path, "magic", "zeros");
}

#[test]
fn wrong_version_is_a_format_error() {
    let path = label();
    for v in [0u16, 2, u16::MAX] {
        let b = with_header(|b| b[8..10].copy_from_slice(&v.to_le_bytes()));
        let msg = expect_format(parse(&b, &path, "version"), &path, "version", "version");
        assert!(msg.contains(&v.to_string()), "version {v}: {msg}");
    }
}

#[test]
fn header_crc_mismatch_is_a_checksum_error() {
    let path = label();
    // A version change without fixing the CRC must be caught by the CRC.
    let mut b = small_file();
    b[8] = 2;
    match parse(&b, &path, "bad crc") {
        Err(Error::Checksum {
            section,
            stored,
            computed,
            ..
        }) => {
            assert_eq!(section, "header");
            assert_eq!(stored, u32_at(&b, 60));
            assert_eq!(computed, crc32fast::hash(&b[..60]));
        }
        other => panic!("expected a header checksum error, got {other:?}"),
    }
}

#[test]
fn dimension_and_bits_out_of_range_are_format_errors() {
    let path = label();
    for d in [0u32, 1, 70000, u32::MAX] {
        let b = with_header(|b| b[12..16].copy_from_slice(&d.to_le_bytes()));
        let (r, big) = largest_allocation(|| parse(&b, &path, "dim"));
        let msg = expect_format(r, &path, "d", &format!("d = {d}"));
        assert!(msg.contains(&d.to_string()), "d = {d}: {msg}");
        assert!(big < 1 << 20, "d = {d}: allocated {big} bytes at once");
    }
    for bits in [0u8, 9, 255] {
        let b = with_header(|b| b[16] = bits);
        let (r, big) = largest_allocation(|| parse(&b, &path, "bits"));
        let msg = expect_format(r, &path, "b", &format!("b = {bits}"));
        assert!(msg.contains(&bits.to_string()), "b = {bits}: {msg}");
        assert!(big < 1 << 20, "b = {bits}: allocated {big} bytes at once");
    }
}

#[test]
fn unknown_kind_mode_format_flags_and_reserved_bytes_are_format_errors() {
    let path = label();
    for v in [2u8, 255] {
        let b = with_header(|b| b[17] = v);
        expect_format(parse(&b, &path, "rot"), &path, "rotation", "rotation kind");
        let b = with_header(|b| b[18] = v);
        expect_format(parse(&b, &path, "mode"), &path, "scale mode", "scale mode");
        let b = with_header(|b| b[19] = v);
        expect_format(
            parse(&b, &path, "fmt"),
            &path,
            "scale format",
            "scale format",
        );
    }
    let b = with_header(|b| b[10] |= 0x02);
    expect_format(parse(&b, &path, "flags"), &path, "flags", "unknown flag");
    let b = with_header(|b| b[40..44].copy_from_slice(&5u32.to_le_bytes()));
    expect_format(
        parse(&b, &path, "sections"),
        &path,
        "section",
        "section count",
    );
    for at in [20usize, 23, 44, 59] {
        let b = with_header(|b| b[at] = 1);
        expect_format(
            parse(&b, &path, "reserved"),
            &path,
            "reserved",
            "reserved byte",
        );
    }
}

#[test]
fn header_fields_that_disagree_with_the_sections_are_rejected() {
    let path = label();
    // d = 46 or b = 4 with sections written for d = 45, b = 3.
    let b = with_header(|b| b[12..16].copy_from_slice(&46u32.to_le_bytes()));
    assert!(matches!(
        parse(&b, &path, "d=46"),
        Err(Error::Format { .. })
    ));
    let b = with_header(|b| b[16] = 4);
    assert!(matches!(parse(&b, &path, "b=4"), Err(Error::Format { .. })));
    // A Hadamard rotation claimed for d = 45.
    let b = with_header(|b| b[17] = 1);
    assert!(matches!(
        parse(&b, &path, "hadamard 45"),
        Err(Error::Format { .. })
    ));
    // f16 scales claimed for f32 ones.
    let b = with_header(|b| b[19] = 1);
    assert!(matches!(parse(&b, &path, "f16"), Err(Error::Format { .. })));
}

#[test]
fn absurd_counts_are_rejected_without_a_huge_allocation() {
    let path = label();
    let file_len = small_file().len();
    for count in [
        u64::MAX,
        1 << 40,
        1 << 62,
        usize::MAX as u64 / 45 + 1,
        11,
        9,
        0,
    ] {
        let b = with_header(|b| b[24..32].copy_from_slice(&count.to_le_bytes()));
        let (r, big) = largest_allocation(|| parse(&b, &path, &format!("count {count}")));
        match r {
            Ok(_) => panic!("count {count} accepted for a file holding 10 vectors"),
            Err(e @ Error::Format { .. }) => {
                assert!(e.to_string().contains(&path.display().to_string()))
            }
            Err(e) => panic!("count {count}: expected Error::Format, got {e:?}"),
        }
        assert!(
            big <= 4 * file_len,
            "count {count}: allocated {big} bytes at once for a {file_len}-byte file"
        );
    }
}

#[test]
fn huge_section_lengths_are_rejected_without_a_huge_allocation() {
    let path = label();
    let base = small_file();
    let secs = walk(&base);
    for s in &secs {
        for len in [u64::MAX, 1 << 40, (base.len() - s.payload.start + 1) as u64] {
            let mut b = base.clone();
            b[s.header + 4..s.header + 12].copy_from_slice(&len.to_le_bytes());
            let (r, big) = largest_allocation(|| parse(&b, &path, "section length"));
            assert!(
                matches!(r, Err(Error::Format { .. })),
                "{} length {len}: {:?}",
                s.name,
                r.err()
            );
            assert!(
                big <= 4 * base.len(),
                "{} length {len}: allocated {big}",
                s.name
            );
        }
    }
}

#[test]
fn trailing_bytes_after_the_last_section_are_rejected() {
    let path = label();
    let base = small_file();
    let secs = walk(&base);
    let cod = &secs[3];
    let mut extras: Vec<Vec<u8>> = vec![vec![0], vec![0xff; 16], b"TQ3D-TQV".to_vec()];
    // A whole duplicate of the last section.
    extras.push(base[cod.header..].to_vec());
    for extra in extras {
        let mut b = base.clone();
        b.extend_from_slice(&extra);
        let r = parse(&b, &path, "trailing bytes");
        assert!(
            matches!(r, Err(Error::Format { .. })),
            "{} trailing bytes: {:?}",
            extra.len(),
            r.err()
        );
    }
}

#[test]
fn bad_payloads_with_valid_checksums_are_format_errors() {
    let path = label();
    // Dense file: non-finite rotation entry, unsorted or non-finite tables,
    // non-finite scales.
    let base = small_file();
    let secs = walk(&base);
    let edits: Vec<(&str, usize, Box<dyn Fn(&mut [u8])>)> = vec![
        (
            "NaN rotation entry",
            0,
            Box::new(|p| p[..4].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
        (
            "Inf rotation entry",
            0,
            Box::new(|p| p[40..44].copy_from_slice(&f32::INFINITY.to_le_bytes())),
        ),
        (
            "swapped centroids",
            1,
            Box::new(|p| {
                let (a, b) = (p[..4].to_vec(), p[4..8].to_vec());
                p[..4].copy_from_slice(&b);
                p[4..8].copy_from_slice(&a);
            }),
        ),
        (
            "NaN boundary",
            1,
            Box::new(|p| {
                let n = p.len();
                p[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes())
            }),
        ),
        (
            "equal centroids",
            1,
            Box::new(|p| {
                let c = p[..4].to_vec();
                p[4..8].copy_from_slice(&c)
            }),
        ),
        (
            "NaN scale",
            2,
            Box::new(|p| p[8..12].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
        (
            "Inf scale",
            2,
            Box::new(|p| p[..4].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes())),
        ),
    ];
    for (what, idx, edit) in &edits {
        let mut b = base.clone();
        edit(&mut b[secs[*idx].payload.clone()]);
        fix_section_crc(&mut b, &secs[*idx]);
        let msg = expect_format(parse(&b, &path, what), &path, "", what);
        assert!(
            msg.contains(&secs[*idx].name),
            "{what}: message should name the {} section: {msg}",
            secs[*idx].name
        );
    }

    // Hadamard file: bad round count, repeated or out-of-range permutation entry.
    let base = small_hadamard_file();
    let secs = walk(&base);
    let rot = &secs[0];
    let d = 64;
    let rounds = u32_at(&base, rot.payload.start) as usize;
    let perm_at = rot.payload.start + 4 + rounds * d / 8;
    let hadamard_edits: Vec<(&str, Box<dyn Fn(&mut Vec<u8>)>)> = vec![
        (
            "zero rounds",
            Box::new(|b| b[rot.payload.start..rot.payload.start + 4].fill(0)),
        ),
        (
            "17 rounds",
            Box::new(|b| {
                b[rot.payload.start..rot.payload.start + 4].copy_from_slice(&17u32.to_le_bytes())
            }),
        ),
        (
            "repeated permutation entry",
            Box::new(|b| {
                let first = b[perm_at..perm_at + 4].to_vec();
                b[perm_at + 4..perm_at + 8].copy_from_slice(&first)
            }),
        ),
        (
            "permutation entry out of range",
            Box::new(|b| b[perm_at..perm_at + 4].copy_from_slice(&64u32.to_le_bytes())),
        ),
        (
            "huge permutation entry",
            Box::new(|b| b[perm_at..perm_at + 4].copy_from_slice(&u32::MAX.to_le_bytes())),
        ),
    ];
    for (what, edit) in &hadamard_edits {
        let mut b = base.clone();
        edit(&mut b);
        fix_section_crc(&mut b, rot);
        let msg = expect_format(parse(&b, &path, what), &path, "ROT", what);
        assert!(msg.contains("ROT"), "{what}: {msg}");
    }
}

// ---------------------------------------------------------------------------
// Atomic writes.

#[test]
fn writing_into_a_missing_folder_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
        0,
    );
    let (q, enc, _) = encode(&cfg, 4, 0);
    let missing = dir.path().join("no-such-folder");
    let path = missing.join("out.tqv");
    match tqv::write(&path, &q, &enc, None) {
        Err(e @ Error::Io { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(!missing.exists());
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn writing_over_an_existing_file_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.tqv");
    std::fs::write(&path, vec![0xAB; 100_000]).unwrap();
    let mk = |b: u32, n: usize| {
        let cfg = config(
            45,
            b,
            RotationKind::Dense,
            ScaleMode::Norm,
            ScaleFormat::F16,
            b as u64,
        );
        encode(&cfg, n, b as u64)
    };
    let (q1, e1, _) = mk(2, 20);
    tqv::write(&path, &q1, &e1, Some(1)).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        tqv::to_bytes(&q1, &e1, Some(1)).unwrap()
    );
    let (q2, e2, _) = mk(5, 3);
    tqv::write(&path, &q2, &e2, Some(2)).unwrap();
    let f = tqv::read(&path).unwrap();
    assert_eq!(f.encoded, e2);
    assert_eq!(f.seed, Some(2));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        tqv::to_bytes(&q2, &e2, Some(2)).unwrap()
    );
    assert_eq!(dir_entries(dir.path()), vec!["v.tqv".to_string()]);
}

#[test]
fn a_failed_write_leaves_the_destination_and_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.tqv");
    let cfg = config(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
        0,
    );
    let (q, enc, x) = encode(&cfg, 6, 0);
    tqv::write(&path, &q, &enc, Some(0)).unwrap();
    let before = std::fs::read(&path).unwrap();

    // Encoded data of another bit width, another dimension, another scale format.
    let q2 = Quantizer::new(&QuantizerConfig {
        bits: 2,
        ..cfg.clone()
    })
    .unwrap();
    let enc_b2 = q2.encode(&x).unwrap();
    let q46 = Quantizer::new(&QuantizerConfig {
        dim: 46,
        ..cfg.clone()
    })
    .unwrap();
    let enc_d46 = q46.encode(&gaussian(3, 46, 0)).unwrap();
    let qf16 = Quantizer::new(&QuantizerConfig {
        scale_format: ScaleFormat::F16,
        ..cfg.clone()
    })
    .unwrap();
    let enc_f16 = qf16.encode(&x).unwrap();
    for (what, bad) in [("b", &enc_b2), ("d", &enc_d46), ("scale format", &enc_f16)] {
        let r = tqv::write(&path, &q, bad, Some(9));
        assert!(r.is_err(), "mismatched {what} accepted");
        assert_eq!(std::fs::read(&path).unwrap(), before, "mismatched {what}");
        assert_eq!(
            dir_entries(dir.path()),
            vec!["keep.tqv".to_string()],
            "mismatched {what}"
        );
    }

    // A write that fails half way, after bytes reached the temporary file.
    let r = write_atomic(&path, |w: &mut dyn Write| {
        w.write_all(&[0x55; 3 << 20]).unwrap();
        Err(Error::InvalidArgument("stop half way".into()))
    });
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir_entries(dir.path()), vec!["keep.tqv".to_string()]);

    // The same for a destination that did not exist: it still does not.
    let fresh = dir.path().join("fresh.tqv");
    let r = write_atomic(&fresh, |w: &mut dyn Write| {
        w.write_all(b"partial").unwrap();
        Err(Error::InvalidArgument("stop".into()))
    });
    assert!(r.is_err());
    assert!(!fresh.exists());
    assert_eq!(dir_entries(dir.path()), vec!["keep.tqv".to_string()]);
    assert!(dir_entries(dir.path()).iter().all(|n| !n.starts_with('.')));
}

// ---------------------------------------------------------------------------
// .npy.

/// Writes an arbitrary .npy (version 1.0) from a header dict and raw data.
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.as_bytes().to_vec();
    // Pad with spaces so that 10 + header length + newline is a multiple of 64.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

fn expect_npy_err(path: &Path, what: &str) -> String {
    let r = catch_unwind(AssertUnwindSafe(|| npy::read_matrix(path)))
        .unwrap_or_else(|_| panic!("npy::read_matrix panicked on {what}"));
    match r {
        Ok(m) => panic!("{what}: accepted as [{}, {}]", m.rows, m.cols),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "{what}: message does not name the file: {msg}"
            );
            msg
        }
    }
}

#[test]
fn npy_round_trip_and_an_independent_reader_agree() {
    let dir = tempfile::tempdir().unwrap();
    for (rows, cols) in [(7, 45), (1, 2), (33, 64)] {
        let path = dir.path().join(format!("m{rows}x{cols}.npy"));
        let data = gaussian(rows, cols, (rows * cols) as u64);
        npy::write_matrix(&path, rows, cols, &data).unwrap();
        let m = npy::read_matrix(&path).unwrap();
        assert_eq!((m.rows, m.cols), (rows, cols));
        assert_eq!(
            m.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // npyz itself sees a 2-D little-endian float32 C-order array.
        let bytes = std::fs::read(&path).unwrap();
        let f = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(f.shape(), &[rows as u64, cols as u64]);
        assert_eq!(f.order(), npyz::Order::C);
        assert_eq!(f.dtype().descr(), "'<f4'");
        assert_eq!(f.into_vec::<f32>().unwrap(), data);
    }
    assert_eq!(dir_entries(dir.path()).len(), 3);
    // A length that is not rows × cols writes nothing.
    let bad = dir.path().join("bad.npy");
    assert!(matches!(
        npy::write_matrix(&bad, 3, 4, &[0.0; 11]),
        Err(Error::Shape(_))
    ));
    assert!(!bad.exists());
}

#[test]
fn npy_f16_reads_as_widened_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (5, 9);
    let src = gaussian(r, c, 77);
    let mut halves: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
    // Exact extremes of f16 as well.
    halves[0] = f16::MAX;
    halves[1] = f16::MIN_POSITIVE_SUBNORMAL;
    halves[2] = f16::from_f32(-0.0);
    let path = dir.path().join("half.npy");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut w = npyz::WriteOptions::<f16>::new()
            .default_dtype()
            .shape(&[r as u64, c as u64])
            .writer(file)
            .begin_nd()
            .unwrap();
        w.extend(halves.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    let m = npy::read_matrix(&path).unwrap();
    assert_eq!((m.rows, m.cols), (r, c));
    let want: Vec<u32> = halves.iter().map(|h| h.to_f32().to_bits()).collect();
    assert_eq!(m.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
    assert_eq!(m.data[0], 65504.0);
    assert_eq!(m.data[1], 2f32.powi(-24));
}

#[test]
fn npy_big_endian_f32_and_f16_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let vals = [1.5f32, -2.25, 0.0, 1e-3, 3e4, -7.0];
    let be32: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let p32 = dir.path().join("be32.npy");
    raw_npy(
        &p32,
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
        &be32,
    );
    let m = npy::read_matrix(&p32).unwrap();
    assert_eq!((m.rows, m.cols), (2, 3));
    assert_eq!(m.data, vals);

    let be16: Vec<u8> = vals
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_be_bytes())
        .collect();
    let p16 = dir.path().join("be16.npy");
    raw_npy(
        &p16,
        "{'descr': '>f2', 'fortran_order': False, 'shape': (3, 2), }",
        &be16,
    );
    let m = npy::read_matrix(&p16).unwrap();
    assert_eq!((m.rows, m.cols), (3, 2));
    let want: Vec<f32> = vals.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(m.data, want);
}

#[test]
fn npy_wrong_shapes_types_and_sizes_are_rejected_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let f32s = |n: usize| -> Vec<u8> { (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect() };

    raw_npy(
        &p("1d.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
        &f32s(6),
    );
    let msg = expect_npy_err(&p("1d.npy"), "1-D");
    assert!(msg.contains("shape"), "{msg}");

    raw_npy(
        &p("3d.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }",
        &f32s(24),
    );
    let msg = expect_npy_err(&p("3d.npy"), "3-D");
    assert!(msg.contains("shape"), "{msg}");

    raw_npy(
        &p("0d.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
        &f32s(1),
    );
    expect_npy_err(&p("0d.npy"), "0-D");

    let ints: Vec<u8> = (0..12i32).flat_map(|i| i.to_le_bytes()).collect();
    raw_npy(
        &p("i4.npy"),
        "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }",
        &ints,
    );
    let msg = expect_npy_err(&p("i4.npy"), "int32");
    assert!(msg.contains("dtype"), "{msg}");

    let f64s: Vec<u8> = (0..12).flat_map(|i| (i as f64).to_le_bytes()).collect();
    raw_npy(
        &p("f8.npy"),
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }",
        &f64s,
    );
    expect_npy_err(&p("f8.npy"), "float64");

    raw_npy(
        &p("fortran.npy"),
        "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }",
        &f32s(12),
    );
    expect_npy_err(&p("fortran.npy"), "Fortran order");

    raw_npy(
        &p("struct.npy"),
        "{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (3, 2), }",
        &f32s(12),
    );
    expect_npy_err(&p("struct.npy"), "structured");

    // Data cut short: a little (less than the header's size) and a lot.
    let good = p("good.npy");
    npy::write_matrix(&good, 10, 8, &gaussian(10, 8, 3)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for cut in [1, 4, 7, 100, 320] {
        let t = p(&format!("cut{cut}.npy"));
        std::fs::write(&t, &bytes[..bytes.len() - cut]).unwrap();
        expect_npy_err(&t, &format!("data cut by {cut} bytes"));
    }
    // Cut inside the header.
    for keep in [0, 5, 9, 40] {
        let t = p(&format!("head{keep}.npy"));
        std::fs::write(&t, &bytes[..keep]).unwrap();
        expect_npy_err(&t, &format!("header cut to {keep} bytes"));
    }
    // Not a .npy at all.
    std::fs::write(
        p("text.npy"),
        b"hello, this is not numpy data at all, not even close....",
    )
    .unwrap();
    expect_npy_err(&p("text.npy"), "text");

    // A missing file is an I/O error naming it.
    let missing = p("missing.npy");
    match npy::read_matrix(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing: {other:?}"),
    }
}

#[test]
fn npy_absurd_shapes_are_rejected_without_a_huge_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for (i, shape) in [
        "(1099511627776, 45)",       // 2^40 rows: fits in u64, not in the file
        "(4, 2305843009213693952)",  // 2^63 values: fits u64, their bytes do not
        "(4, 4611686018427387904)",  // 2^64 values: overflows the element count
        "(4294967296, 4294967296)",  // 2^64 values: overflows the element count
        "(18446744073709551615, 2)", // u64::MAX rows
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("absurd{i}.npy"));
        raw_npy(
            &path,
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
            &data,
        );
        let (msg, big) = largest_allocation(|| expect_npy_err(&path, &format!("shape {shape}")));
        assert!(
            big < 1 << 20,
            "shape {shape}: allocated {big} bytes at once ({msg})"
        );
    }
}

#[test]
fn set_padding_bits_in_the_last_code_byte_are_rejected() {
    // 10 vectors × 45 × 3 bits = 1350 bits: the last COD byte uses 6 bits.
    let mut bytes = small_file();
    let cod = walk(&bytes).into_iter().find(|s| s.name == "COD").unwrap();
    let last = cod.payload.end - 1;
    assert_eq!(bytes[last] >> 6, 0, "the writer zeroes the padding");
    bytes[last] |= 0x80;
    fix_section_crc(&mut bytes, &cod);
    expect_format(
        parse(&bytes, &label(), "padding bit"),
        &label(),
        "COD",
        "padding bit",
    );
}

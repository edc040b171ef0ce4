//! The `.tqv` container: round trips, the documented layout (checked by
//! walking the file independently), and atomic writes.
// A boxed closure table reads best inline.
#![allow(clippy::type_complexity)]
mod common;

use std::io::Write;

use common::data::gaussian;
use common::tqv::*;
use half::f16;
use turboquant3d::format::{tqv, write_atomic};
use turboquant3d::{
    Encoded, Error, Quantizer, QuantizerConfig, Rotation, RotationKind, ScaleFormat, ScaleMode,
};

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

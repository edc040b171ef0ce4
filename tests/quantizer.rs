//! Encode/decode behaviour: an independent scalar reference, determinism,
//! strided views, scales, and bad input.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::codec::quantizer::SimdLevel;
use turboquant3d::packing::unpack;
use turboquant3d::{
    Error, Quantizer, QuantizerConfig, Rotation, RotationKind, Rows, RowsMut, ScaleFormat,
    ScaleMode, theory,
};

fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

fn quantizer(
    d: usize,
    b: u32,
    kind: RotationKind,
    mode: ScaleMode,
    format: ScaleFormat,
) -> Quantizer {
    Quantizer::new(&QuantizerConfig {
        dim: d,
        bits: b,
        rotation: kind,
        seed: 42,
        scale_mode: mode,
        scale_format: format,
    })
    .unwrap()
}

/// Encodes with plain f64 arithmetic straight from the definitions, using
/// the dense matrix Π. Returns codes and the norm.
fn reference_encode(q: &Quantizer, x: &[f32]) -> (Vec<u8>, Vec<f64>, f64) {
    let d = q.dim();
    let pi = q.rotation().matrix().unwrap();
    let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let y: Vec<f64> = (0..d)
        .map(|j| {
            (0..d)
                .map(|k| pi[j * d + k] as f64 * x[k] as f64)
                .sum::<f64>()
                / norm
        })
        .collect();
    let codes = y
        .iter()
        .map(|&yj| q.boundaries().iter().filter(|&&t| (t as f64) < yj).count() as u8)
        .collect();
    (codes, y, norm)
}

#[test]
fn codes_and_decode_match_a_scalar_f64_reference() {
    let d = 45;
    for b in 1..=8 {
        let q = quantizer(d, b, RotationKind::Dense, ScaleMode::Norm, ScaleFormat::F32);
        let n = 300;
        let x = gaussian(n, d, b as u64);
        let enc = q.encode(&x).unwrap();
        let codes = unpack(enc.codes(), b, n * d).unwrap();
        let dec = q.decode(&enc).unwrap();
        let mut ties = 0;
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            let (want, y, norm) = reference_encode(&q, row);
            for j in 0..d {
                if codes[i * d + j] != want[j] {
                    // Only a coordinate within float rounding of a boundary may differ.
                    let gap = q
                        .boundaries()
                        .iter()
                        .map(|&t| (t as f64 - y[j]).abs())
                        .fold(f64::MAX, f64::min);
                    assert!(
                        gap < 1e-6,
                        "row {i} coord {j}: code {} vs {} with y = {} (gap {gap:e})",
                        codes[i * d + j],
                        want[j],
                        y[j]
                    );
                    ties += 1;
                }
            }
            assert!((enc.scales().get(i) as f64 / norm - 1.0).abs() < 1e-6);
            // Decode: x̃ = ‖x‖·Πᵀ ĉ, in f64 from the codes the encoder chose.
            let pi = q.rotation().matrix().unwrap();
            for k in 0..d {
                let want: f64 = (0..d)
                    .map(|j| pi[j * d + k] as f64 * q.centroids()[codes[i * d + j] as usize] as f64)
                    .sum::<f64>()
                    * norm;
                let got = dec[i * d + k] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * norm,
                    "row {i} coord {k}: {got} vs {want}"
                );
            }
        }
        assert!(ties <= n * d / 1000, "b={b}: {ties} ties");
    }
}

#[test]
fn output_is_identical_for_any_thread_count_and_simd_path() {
    for (d, kind) in [
        (45, RotationKind::Dense),
        (1024, RotationKind::Hadamard),
        (7, RotationKind::Dense),
    ] {
        for mode in [ScaleMode::Norm, ScaleMode::LeastSquares] {
            let mut q = quantizer(d, 3, kind, mode, ScaleFormat::F32);
            // Several chunks plus a ragged tail.
            let n = 2 * 1024 + 37;
            let x = gaussian(n, d, 9);
            let reference = q.encode(&x).unwrap();
            let decoded = q.decode(&reference).unwrap();
            for threads in [1, 2, 3, 8] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (enc, dec) = pool.install(|| {
                    let e = q.encode(&x).unwrap();
                    let d = q.decode(&e).unwrap();
                    (e, d)
                });
                assert_eq!(enc, reference, "d={d} {mode:?}: {threads} threads");
                assert_eq!(
                    dec, decoded,
                    "d={d} {mode:?}: decode with {threads} threads"
                );
            }
            for level in [SimdLevel::Avx2, SimdLevel::Portable] {
                q.set_max_simd(level);
                assert_eq!(
                    q.encode(&x).unwrap(),
                    reference,
                    "d={d} {mode:?}: the {level:?} path differs from the widest SIMD path"
                );
                assert_eq!(q.decode(&reference).unwrap(), decoded);
            }
        }
    }
}

/// The encoder's dense arithmetic, one vector at a time in the plainest
/// form: power-of-two prescale, Σt² in order, u = t·(1/r), y_j = Σ_k Π_jk·u_k
/// as fused multiply-adds over k in order, codes by counting boundaries, and
/// the least-squares sums over j in order. The tiled kernel must give the
/// same bits.
fn plain_encode(q: &Quantizer, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let d = q.dim();
    let pi = q.rotation().matrix().unwrap();
    let (mut codes, mut scales) = (Vec::new(), Vec::new());
    for row in x.chunks(d) {
        let maxabs = row.iter().fold(0f32, |m, t| m.max(t.abs()));
        let e = ((maxabs.to_bits() >> 23) & 0xff).clamp(1, 253);
        let (pre, post) = (f32::from_bits((254 - e) << 23), f32::from_bits(e << 23));
        let t: Vec<f32> = row.iter().map(|&v| v * pre).collect();
        let r = t.iter().fold(0f32, |acc, &v| acc + v * v).sqrt();
        let inv = if r > 0.0 { 1.0 / r } else { 0.0 };
        let u: Vec<f32> = t.iter().map(|&v| v * inv).collect();
        let (mut dot, mut cc) = (0f32, 0f32);
        for j in 0..d {
            let y = (0..d).fold(0f32, |acc, k| pi[j * d + k].mul_add(u[k], acc));
            let code = q.boundaries().iter().filter(|&&b| b < y).count();
            let c = q.centroids()[code];
            dot += y * c;
            cc += c * c;
            codes.push(code as u8);
        }
        let norm = r * post;
        scales.push(match q.scale_mode() {
            ScaleMode::Norm => norm,
            ScaleMode::LeastSquares => norm * (dot / cc),
        });
    }
    (codes, scales)
}

#[test]
fn tiled_encoder_equals_a_plain_per_vector_loop_on_odd_sizes() {
    // Every remainder of the 6-row register tile and of the 16-wide
    // transpose blocks, ragged 16- and 32-vector tiles,
    // symmetric tables counted across lanes at every width up to b = 8.
    for d in [2usize, 3, 5, 7, 11, 13, 16, 17, 32, 33, 45, 47] {
        for (b, n) in [
            (1u32, 37usize),
            (3, 37),
            (4, 1),
            (5, 21),
            (5, 70),
            (6, 33),
            (8, 37),
        ] {
            for mode in [ScaleMode::Norm, ScaleMode::LeastSquares] {
                let mut q = quantizer(d, b, RotationKind::Dense, mode, ScaleFormat::F32);
                let mut x = gaussian(n, d, d as u64 + 100 * b as u64);
                x[..d].fill(0.0); // a zero vector
                if n > 2 {
                    x[d..2 * d].iter_mut().for_each(|v| *v *= 1e30);
                }
                let (codes, scales) = plain_encode(&q, &x);
                for level in [SimdLevel::Avx512, SimdLevel::Avx2, SimdLevel::Portable] {
                    q.set_max_simd(level);
                    let enc = q.encode(&x).unwrap();
                    let got = unpack(enc.codes(), b, n * d).unwrap();
                    let what = format!("d={d} b={b} n={n} {mode:?} {level:?}");
                    assert_eq!(got, codes, "{what}: codes");
                    let got: Vec<f32> = (0..n).map(|i| enc.scales().get(i)).collect();
                    assert_eq!(got, scales, "{what}: scales");
                }
            }
        }
    }
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let x = gaussian(500, 45, 1);
    let a = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    )
    .encode(&x)
    .unwrap();
    let b = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    )
    .encode(&x)
    .unwrap();
    assert_eq!(a, b);
    let mut cfg = QuantizerConfig::new(45, 3);
    cfg.seed = 43;
    assert_ne!(Quantizer::new(&cfg).unwrap().encode(&x).unwrap(), a);
}

#[test]
fn strided_rows_encode_like_contiguous_rows_and_decode_in_place() {
    let (d, stride, n) = (45, 62, 1500);
    let records = gaussian(n, stride, 5);
    let offset = 9;
    let contiguous: Vec<f32> = (0..n)
        .flat_map(|i| records[i * stride + offset..i * stride + offset + d].to_vec())
        .collect();
    let q = quantizer(
        d,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let a = q.encode(&contiguous).unwrap();
    let b = q
        .encode_rows(Rows::strided(&records[offset..], d, stride, n).unwrap())
        .unwrap();
    assert_eq!(a, b);
    let mut out = vec![7.0f32; n * stride];
    q.decode_into(
        &b,
        RowsMut::strided(&mut out[offset..], d, stride, n).unwrap(),
    )
    .unwrap();
    let dec = q.decode(&a).unwrap();
    for i in 0..n {
        assert_eq!(
            &out[i * stride + offset..i * stride + offset + d],
            &dec[i * d..(i + 1) * d]
        );
        assert!(
            out[i * stride..i * stride + offset]
                .iter()
                .all(|&v| v == 7.0),
            "values before row {i} were touched"
        );
        assert!(
            out[i * stride + offset + d..(i + 1) * stride]
                .iter()
                .all(|&v| v == 7.0),
            "values after row {i} were touched"
        );
    }
}

#[test]
fn zero_vectors_encode_to_scale_zero_and_decode_to_exact_zeros() {
    for mode in [ScaleMode::Norm, ScaleMode::LeastSquares] {
        for format in [ScaleFormat::F32, ScaleFormat::F16] {
            let q = quantizer(45, 2, RotationKind::Dense, mode, format);
            let mut x = gaussian(20, 45, 3);
            x[5 * 45..6 * 45].fill(0.0);
            let enc = q.encode(&x).unwrap();
            assert_eq!(enc.scales().get(5), 0.0);
            let dec = q.decode(&enc).unwrap();
            assert!(
                dec[5 * 45..6 * 45]
                    .iter()
                    .all(|&v| v == 0.0 && v.is_sign_positive())
            );
            assert!(dec[6 * 45..7 * 45].iter().any(|&v| v != 0.0));
        }
    }
}

#[test]
fn nan_and_inf_are_errors_that_name_the_row() {
    let q = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    for (bad, row, col) in [
        (f32::NAN, 3, 0),
        (f32::INFINITY, 2000, 44),
        (f32::NEG_INFINITY, 1030, 7),
    ] {
        let mut x = gaussian(2100, 45, 4);
        x[row * 45 + col] = bad;
        // A later bad row must not hide the first one.
        x[2099 * 45] = f32::NAN;
        match q.encode(&x) {
            Err(Error::NonFinite { row: r, col: c, .. }) => assert_eq!((r, c), (row, col)),
            other => panic!("expected NonFinite at row {row}, got {other:?}"),
        }
        let msg = q.encode(&x).unwrap_err().to_string();
        assert!(msg.contains(&format!("row {row}")), "{msg}");
    }
}

#[test]
fn empty_and_misshapen_input_are_errors() {
    let q = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    assert!(matches!(q.encode(&[]), Err(Error::EmptyInput { .. })));
    assert!(matches!(q.encode(&[1.0; 44]), Err(Error::Shape(_))));
    assert!(matches!(
        q.encode_rows(Rows::new(&[1.0; 64], 32).unwrap()),
        Err(Error::Shape(_))
    ));
    assert!(Rows::strided(&[1.0; 100], 45, 50, 3).is_err());
    assert!(Rows::strided(&[1.0; 100], 45, 40, 2).is_err());
    let other = quantizer(
        45,
        4,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let enc = other.encode(&[1.0; 45]).unwrap();
    assert!(matches!(q.decode(&enc), Err(Error::Shape(_))));
}

#[test]
fn out_of_range_parameters_are_errors() {
    for (d, b) in [(1, 3), (0, 3), (70_000, 3), (45, 0), (45, 9)] {
        let cfg = QuantizerConfig {
            dim: d,
            bits: b,
            rotation: RotationKind::Dense,
            seed: 0,
            scale_mode: ScaleMode::Norm,
            scale_format: ScaleFormat::F32,
        };
        let err = Quantizer::new(&cfg).unwrap_err();
        assert!(
            matches!(err, Error::InvalidDim { .. } | Error::InvalidBits { .. }),
            "d={d} b={b}: {err}"
        );
    }
    let mut cfg = QuantizerConfig::new(45, 3);
    cfg.rotation = RotationKind::Hadamard;
    assert!(matches!(
        Quantizer::new(&cfg),
        Err(Error::InvalidDim { .. })
    ));
}

#[test]
fn extreme_magnitudes_keep_the_same_relative_error() {
    let d = 45;
    let q = quantizer(
        d,
        3,
        RotationKind::Dense,
        ScaleMode::LeastSquares,
        ScaleFormat::F32,
    );
    let base = gaussian(64, d, 8);
    let rel_err = |x: &[f32]| {
        let y = q.decode(&q.encode(x).unwrap()).unwrap();
        let e: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let n: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        e / n
    };
    let want = rel_err(&base);
    for scale in [1e-35f32, 1e-20, 1e20, 1e36] {
        let x: Vec<f32> = base.iter().map(|v| v * scale).collect();
        let got = rel_err(&x);
        assert!(
            (got / want - 1.0).abs() < 1e-3,
            "scale {scale:e}: relative error {got} vs {want}"
        );
    }
}

#[test]
fn unrepresentable_scales_are_errors() {
    let q16 = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::Norm,
        ScaleFormat::F16,
    );
    let mut x = vec![0.1f32; 3 * 45];
    x[45..90].fill(1e4); // norm ≈ 67,000 > 65,504
    match q16.encode(&x) {
        Err(Error::ScaleUnrepresentable { row, .. }) => assert_eq!(row, 1),
        other => panic!("expected a scale error, got {other:?}"),
    }
    x[45..90].fill(1e-10);
    assert!(matches!(
        q16.encode(&x),
        Err(Error::ScaleUnrepresentable { row: 1, .. })
    ));
    let q32 = quantizer(
        45,
        3,
        RotationKind::Dense,
        ScaleMode::Norm,
        ScaleFormat::F32,
    );
    x[45..90].fill(f32::MAX);
    assert!(matches!(
        q32.encode(&x),
        Err(Error::ScaleUnrepresentable { row: 1, .. })
    ));
}

/// The least-squares scale is the optimum along the decoded direction, so it
/// can only lower each vector's error; and f16 scales cost at most a
/// rounding of 2^−11 relative.
#[test]
fn least_squares_scale_is_never_worse_and_f16_is_close_to_f32() {
    let d = 45;
    let x = gaussian(4000, d, 10);
    for b in 1..=4 {
        let err = |mode, format| {
            let q = quantizer(d, b, RotationKind::Dense, mode, format);
            let y = q.decode(&q.encode(&x).unwrap()).unwrap();
            x.chunks(d)
                .zip(y.chunks(d))
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
                        .sum::<f64>()
                })
                .collect::<Vec<f64>>()
        };
        let norm = err(ScaleMode::Norm, ScaleFormat::F32);
        let ls = err(ScaleMode::LeastSquares, ScaleFormat::F32);
        for (i, (n, l)) in norm.iter().zip(&ls).enumerate() {
            assert!(
                *l <= n * (1.0 + 1e-5) + 1e-12,
                "b={b} row {i}: LS {l} > norm {n}"
            );
        }
        let total = |v: &[f64]| v.iter().sum::<f64>();
        let energy: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
        let measured = total(&norm) / energy;
        let want = theory::expected_error(d, b).unwrap();
        assert!(
            (measured / want - 1.0).abs() < 0.05,
            "b={b}: {measured} vs {want}"
        );
        let ls16 = total(&err(ScaleMode::LeastSquares, ScaleFormat::F16));
        assert!(
            (ls16 / total(&ls) - 1.0).abs() < 0.01,
            "b={b}: f16 scales cost {ls16} vs {}",
            total(&ls)
        );
    }
}

#[test]
fn a_quantizer_rebuilt_from_its_parts_decodes_identically() {
    let q = quantizer(
        64,
        4,
        RotationKind::Hadamard,
        ScaleMode::LeastSquares,
        ScaleFormat::F16,
    );
    let x = gaussian(100, 64, 12);
    let enc = q.encode(&x).unwrap();
    let rot = Rotation::from_bytes(RotationKind::Hadamard, 64, &q.rotation().to_bytes()).unwrap();
    let q2 = Quantizer::from_parts(
        Arc::new(rot),
        4,
        q.centroids().to_vec(),
        q.boundaries().to_vec(),
        ScaleMode::LeastSquares,
        ScaleFormat::F16,
    )
    .unwrap();
    assert_eq!(q2.decode(&enc).unwrap(), q.decode(&enc).unwrap());
    assert!(
        Quantizer::from_parts(
            q.rotation().clone(),
            4,
            vec![0.0; 16],
            q.boundaries().to_vec(),
            ScaleMode::Norm,
            ScaleFormat::F32
        )
        .is_err()
    );
}

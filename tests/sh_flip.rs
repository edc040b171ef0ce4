//! The SH sign flip (`.tq3s` header byte 61, bit 0): it keeps the codec's
//! distortion d·C(d, b), it decorrelates the errors of identical input
//! vectors stored at different indices, and readers refuse flag bits they
//! do not know. CPU/GPU byte parity and the renderer's decode are checked
//! in tests/gpu_parity.rs and tests/render_gpu.rs, whose files now flip.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::splat::container::{HEADER_LEN, Profile};
use turboquant3d::splat::{self, CompressOptions, Scene, rest_dim};
use turboquant3d::{Codebook, ScaleMode};

/// A scene of `n` Gaussians at SH degree 3 whose SH-rest rows are
/// `rows(i)`; other attributes plain.
fn scene(n: usize, rows: impl Fn(usize) -> Vec<f32>) -> Scene {
    let d = rest_dim(3);
    let mut s = Scene {
        sh_degree: 3,
        ..Scene::default()
    };
    for i in 0..n {
        s.positions.push([i as f32, 0.0, 0.0]);
        s.scales.push([-3.0; 3]);
        s.rotations.push([1.0, 0.0, 0.0, 0.0]);
        s.opacity.push(1.0);
        s.dc.push([0.1, 0.2, 0.3]);
        let r = rows(i);
        assert_eq!(r.len(), d);
        s.sh_rest.extend(r);
    }
    s
}

fn gaussian_row(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    (0..d)
        .map(|_| StandardNormal.sample(&mut *rng))
        .collect::<Vec<f32>>()
}

/// Exact profile (storage order = input order), norm scale (the theory's),
/// every copy coded (deduplication would code each repeated vector once,
/// tests/sh_dedup.rs).
fn opts(bits: u32, flip: bool) -> CompressOptions {
    CompressOptions {
        profile: Profile::Exact,
        sh_bits: bits,
        scale_mode: ScaleMode::Norm,
        sign_flip: flip,
        dedup: false,
        ..Default::default()
    }
}

fn roundtrip(s: &Scene, o: &CompressOptions) -> (Vec<u8>, Scene) {
    let bytes = splat::compress(s, o).unwrap().to_bytes().unwrap();
    let back = splat::decompress(&bytes, Path::new("t.tq3s")).unwrap();
    (bytes, back)
}

/// ‖x − x̂‖² / ‖x‖² per row.
fn nmse_rows(x: &[f32], y: &[f32], d: usize) -> Vec<f64> {
    x.chunks(d)
        .zip(y.chunks(d))
        .map(|(a, b)| {
            let e: f64 = a
                .iter()
                .zip(b)
                .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
                .sum();
            let n: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum();
            e / n
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn the_flip_keeps_the_distortion_of_theory() {
    let d = rest_dim(3);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let rows: Vec<Vec<f32>> = (0..8000).map(|_| gaussian_row(&mut rng, d)).collect();
    let s = scene(rows.len(), |i| rows[i].clone());
    for bits in 1..=3 {
        let theory = Codebook::get(d, bits).unwrap().distortion();
        for flip in [false, true] {
            let (bytes, back) = roundtrip(&s, &opts(bits, flip));
            assert_eq!(bytes[61], flip as u8, "header byte 61");
            let m = mean(&nmse_rows(&s.sh_rest, &back.sh_rest, d));
            assert!(
                (m / theory - 1.0).abs() < 0.03,
                "b = {bits}, flip {flip}: mean NMSE {m:.5} vs d·C(d, b) = {theory:.5}"
            );
        }
    }
    // One vector, every Gaussian: without the flip every copy has the same
    // error; with it the copies' NMSE average to theory, as independent
    // draws do (and spread as they do).
    let x = gaussian_row(&mut rng, d);
    let s = scene(4000, |_| x.clone());
    for bits in 1..=3 {
        let theory = Codebook::get(d, bits).unwrap().distortion();
        let (_, off) = roundtrip(&s, &opts(bits, false));
        let v = nmse_rows(&s.sh_rest, &off.sh_rest, d);
        assert!(v.iter().all(|&e| e == v[0]), "b = {bits}: copies differ");
        let (_, on) = roundtrip(&s, &opts(bits, true));
        let v = nmse_rows(&s.sh_rest, &on.sh_rest, d);
        let m = mean(&v);
        let sd = (v.iter().map(|e| (e - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(
            (m / theory - 1.0).abs() < 0.03,
            "b = {bits}: copies' mean NMSE {m:.5} vs {theory:.5}"
        );
        assert!(sd > 0.05 * theory, "b = {bits}: NMSE spread {sd:.2e}");
    }
}

/// Mean cosine between the errors of every pair among `k` Gaussians
/// (rows 0..k of `x` and `y`), the errors first projected off `u` when
/// `perp` is given.
fn mean_pair_cosine(x: &[f32], y: &[f32], d: usize, k: usize, perp: Option<&[f64]>) -> f64 {
    let e: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            let mut e: Vec<f64> = (0..d)
                .map(|j| x[i * d + j] as f64 - y[i * d + j] as f64)
                .collect();
            if let Some(u) = perp {
                let p: f64 = e.iter().zip(u).map(|(a, b)| a * b).sum();
                e.iter_mut().zip(u).for_each(|(a, b)| *a -= p * b);
            }
            e
        })
        .collect();
    let norm = |a: &[f64]| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    let (mut sum, mut pairs) = (0.0, 0usize);
    for a in 0..k {
        for b in a + 1..k {
            let dot: f64 = e[a].iter().zip(&e[b]).map(|(p, q)| p * q).sum();
            sum += dot / (norm(&e[a]) * norm(&e[b]));
            pairs += 1;
        }
    }
    sum / pairs as f64
}

/// Identical vectors at different indices: without the flip one code and
/// one error (cosine 1); with it, independent rotations. Their errors then
/// share only the quantiser's mean error, the shrinkage along u = x/‖x‖:
/// with Lloyd–Max centroids E[y·q] = E[q²], so E⟨e, u⟩ = ‖x‖·d·C(d, b)
/// while E‖e‖² = ‖x‖²·d·C(d, b), and the pairwise cosine tends to
/// d·C(d, b) (docs/THEORY.md §16). Off u, the errors are uncorrelated.
#[test]
fn identical_vectors_get_different_codes_and_uncorrelated_errors() {
    let d = rest_dim(3);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // Three distinct vectors, each stored 200 times, interleaved.
    let groups: Vec<Vec<f32>> = (0..3).map(|_| gaussian_row(&mut rng, d)).collect();
    let n = 600;
    let s = scene(n, |i| groups[i % 3].clone());
    for bits in [1, 2, 3] {
        let theory = Codebook::get(d, bits).unwrap().distortion();
        let (_, off) = roundtrip(&s, &opts(bits, false));
        let (_, on) = roundtrip(&s, &opts(bits, true));
        for (g, x0) in groups.iter().enumerate() {
            let pick = |v: &[f32]| -> Vec<f32> {
                (g..n)
                    .step_by(3)
                    .flat_map(|i| v[i * d..(i + 1) * d].to_vec())
                    .collect()
            };
            let (x, y_off, y_on) = (pick(&s.sh_rest), pick(&off.sh_rest), pick(&on.sh_rest));
            let k = x.len() / d;
            let norm = x0.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let u: Vec<f64> = x0.iter().map(|v| *v as f64 / norm).collect();
            let c_off = mean_pair_cosine(&x, &y_off, d, k, None);
            assert!((c_off - 1.0).abs() < 1e-9, "b = {bits}, group {g}: {c_off}");
            let c_on = mean_pair_cosine(&x, &y_on, d, k, None);
            assert!(
                (c_on - theory).abs() < 0.02 + 0.15 * theory,
                "b = {bits}, group {g}: cosine {c_on:.4}, d·C(d, b) = {theory:.4}"
            );
            // Off u: the mean of 19,900 pairs' cosines of near-independent
            // 44-dimensional errors (each of spread ≈ 1/√44).
            let c_perp = mean_pair_cosine(&x, &y_on, d, k, Some(&u));
            assert!(c_perp.abs() < 0.03, "b = {bits}, group {g}: {c_perp}");
            let distinct: std::collections::HashSet<Vec<u32>> = y_on
                .chunks(d)
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect();
            assert!(distinct.len() > k * 9 / 10, "{} of {k}", distinct.len());
        }
    }
}

/// The file's bytes with header byte `at` set to `v` (and version `ver`),
/// the header CRC recomputed so that only the field is wrong.
fn with_header_byte(bytes: &[u8], at: usize, v: u8, ver: Option<u16>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] = v;
    if let Some(ver) = ver {
        b[8..10].copy_from_slice(&ver.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[..HEADER_LEN - 4]);
    b[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn readers_refuse_unknown_sh_flags_and_honour_the_known_one() {
    let d = rest_dim(3);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let rows: Vec<Vec<f32>> = (0..300).map(|_| gaussian_row(&mut rng, d)).collect();
    let s = scene(rows.len(), |i| rows[i].clone());
    let path = Path::new("flags.tq3s");
    let (on, back_on) = roundtrip(&s, &opts(2, true));
    let (off, _) = roundtrip(&s, &opts(2, false));
    assert_eq!((on[61], off[61]), (1, 0));
    // Unknown to version 2 (the file's attributes may have taken version
    // 4's column palettes; the flags are checked first).
    for v in [2u8, 3, 0x80, 0xff] {
        let e = splat::decompress(&with_header_byte(&on, 61, v, Some(2)), path).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("SH flags") && !m.contains('\n'), "{v:#x}: {m}");
    }
    // Version 1 had byte 61 reserved: the flip needs version 2. (These
    // files also carry the seeded rotation, kind 2, which version 1 lacks
    // too; whichever field a reader meets first, it refuses in one line.
    // tests/scene_rotation.rs reads a genuine version-1 file, kind 0, no
    // flip.)
    let e = splat::decompress(&with_header_byte(&on, 61, 1, Some(1)), path).unwrap_err();
    let m = e.to_string();
    assert!(
        (m.contains("SH flags") || m.contains("rotation kind")) && !m.contains('\n'),
        "{m}"
    );
    // The flag alone decides the decode: the same codes read with it
    // cleared give the flipped vectors back, s_k[j]·x̂ — an independent
    // transcription of the hash.
    let cleared = splat::decompress(&with_header_byte(&on, 61, 0, None), path).unwrap();
    let pcg = |x: u32| {
        let t = x.wrapping_mul(747796405).wrapping_add(2891336453);
        let w = ((t >> ((t >> 28) + 4)) ^ t).wrapping_mul(277803737);
        (w >> 22) ^ w
    };
    for k in 0..rows.len() {
        for j in 0..d {
            let word = pcg(pcg(k as u32).wrapping_add(j as u32 / 32));
            let sign = if (word >> (j % 32)) & 1 == 1 {
                -1.0
            } else {
                1.0
            };
            assert_eq!(
                cleared.sh_rest[k * d + j],
                sign * back_on.sh_rest[k * d + j],
                "Gaussian {k}, coordinate {j}"
            );
        }
    }
    // No SH-rest, nothing to flip: the writer leaves the flag clear and
    // readers refuse it.
    let mut s0 = s.clone();
    s0.truncate_sh(0);
    let (b0, _) = roundtrip(&s0, &opts(2, true));
    assert_eq!(b0[61], 0);
    let e = splat::decompress(&with_header_byte(&b0, 61, 1, None), path).unwrap_err();
    assert!(e.to_string().contains("SH flags"), "{e}");
}

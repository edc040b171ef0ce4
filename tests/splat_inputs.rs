//! Scene inputs: the antimatter15 `.splat` reader and writer, and the
//! procedural scene generator's statistics and determinism.

mod common;

use std::path::Path;

use turboquant3d::Error;
use turboquant3d::splat::antimatter::{is_splat_path, read_splat, read_splat_bytes, write_splat};
use turboquant3d::splat::scene::{SH_C0, sigmoid};
use turboquant3d::splat::synth::{SynthConfig, generate, synthesize_sh};
use turboquant3d::splat::{Scene, rest_dim};

/// One `.splat` record built field by field.
fn record(pos: [f32; 3], scale: [f32; 3], rgba: [u8; 4], rot: [u8; 4]) -> Vec<u8> {
    let mut r = Vec::with_capacity(32);
    for v in pos.iter().chain(&scale) {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(&rgba);
    r.extend_from_slice(&rot);
    assert_eq!(r.len(), 32);
    r
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: got {a}, expected {b} (tol {tol})"
    );
}

fn src() -> &'static Path {
    Path::new("test.splat")
}

#[test]
fn hand_built_records_decode_to_expected_values() {
    let mut bytes = record(
        [1.5, -2.25, 3.0],
        [0.5, 1.0, 2.0],
        [255, 0, 128, 200],
        [255, 128, 128, 128],
    );
    bytes.extend(record(
        [0.0, 0.0, -1000.0],
        [1e-3, 0.25, 4.0],
        [64, 192, 32, 0],
        [192, 64, 128, 160],
    ));
    let s = read_splat_bytes(&bytes, src()).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.sh_degree, 0);
    assert!(s.sh_rest.is_empty() && s.normals.is_none() && s.extras.properties.is_empty());
    s.check_consistent().unwrap();

    assert_eq!(s.positions, vec![[1.5, -2.25, 3.0], [0.0, 0.0, -1000.0]]);
    let scales = [[0.5f64, 1.0, 2.0], [1e-3, 0.25, 4.0]];
    let colours = [[255u8, 0, 128], [64, 192, 32]];
    // The reference rasteriser's constant, in full precision.
    let c0 = 0.282_094_791_773_878_14f64;
    for i in 0..2 {
        for k in 0..3 {
            close(
                s.scales[i][k] as f64,
                (scales[i][k] as f32 as f64).ln(),
                1e-6,
                "log scale",
            );
            let want = (colours[i][k] as f64 / 255.0 - 0.5) / c0;
            close(s.dc[i][k] as f64, want, 1e-5, "dc");
        }
    }
    // A = 200: a = 200/255, logit = ln(200/55).
    close(
        s.opacity[0] as f64,
        (200.0f64 / 55.0).ln(),
        1e-5,
        "opacity logit",
    );
    // A = 0 is clamped a quarter step in: a = 0.25/255, logit = −ln 1019.
    close(
        s.opacity[1] as f64,
        -(1019.0f64).ln(),
        1e-4,
        "opacity of A = 0",
    );
    // (255,128,128,128) → (127/128, 0, 0, 0) → normalised to the identity.
    assert_eq!(s.rotations[0], [1.0, 0.0, 0.0, 0.0]);
    // (192,64,128,160) → (0.5, −0.5, 0, 0.25), norm 0.75.
    let want = [2.0 / 3.0, -2.0 / 3.0, 0.0, 1.0 / 3.0];
    for (got, want) in s.rotations[1].iter().zip(want) {
        close(*got as f64, want, 1e-6, "rotation");
    }
}

#[test]
fn all_zero_rotation_bytes_give_identity() {
    let bytes = record([0.0; 3], [1.0; 3], [0; 4], [128; 4]);
    let s = read_splat_bytes(&bytes, src()).unwrap();
    assert_eq!(s.rotations[0], [1.0, 0.0, 0.0, 0.0]);
    close(s.opacity[0] as f64, -(1019.0f64).ln(), 1e-4, "opacity");
}

#[test]
fn write_read_round_trip_within_quantisation() {
    let mut scene = generate(&SynthConfig {
        count: 5000,
        sh_degree: 0,
        seed: 7,
    });
    // The layout cannot hold normals; the generator gives zero normals.
    scene.normals = None;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scene.splat");
    write_splat(&path, &scene).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 32 * 5000);
    let back = read_splat(&path).unwrap();
    assert_eq!(back.len(), scene.len());

    let colour = |dc: f32| (0.5 + SH_C0 as f64 * dc as f64).clamp(0.0, 1.0);
    let mut worst_rot = 0f64;
    for i in 0..scene.len() {
        assert_eq!(back.positions[i], scene.positions[i], "position {i}");
        for k in 0..3 {
            let (a, b) = (back.scales[i][k] as f64, scene.scales[i][k] as f64);
            close(a, b, 1e-6 * b.abs().max(1.0), "log scale");
            let tol = 0.5 / 255.0 + 1e-6;
            close(colour(back.dc[i][k]), colour(scene.dc[i][k]), tol, "colour");
        }
        let (a, b) = (
            sigmoid(back.opacity[i]) as f64,
            sigmoid(scene.opacity[i]) as f64,
        );
        close(a, b, 0.5 / 255.0 + 1e-6, "alpha");

        let q = scene.rotations[i];
        let norm = q.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let rnorm = back.rotations[i]
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        close(rnorm, 1.0, 1e-6, "read quaternion norm");
        for (got, orig) in back.rotations[i].iter().zip(q) {
            worst_rot = worst_rot.max((*got as f64 - orig as f64 / norm).abs());
        }
    }
    eprintln!("worst rotation error {:.3} / 128", worst_rot * 128.0);
    assert!(
        worst_rot <= 1.0 / 128.0,
        "rotation error {worst_rot} > 1/128"
    );

    // A second round trip keeps position, colour and alpha bytes exactly;
    // the rotation moves by at most one step (re-normalisation of the
    // quantised quaternion), the scale by an ulp or so (ln then exp in f32).
    let path2 = dir.path().join("again.splat");
    write_splat(&path2, &back).unwrap();
    let (b1, b2) = (
        std::fs::read(&path).unwrap(),
        std::fs::read(&path2).unwrap(),
    );
    for (i, (r1, r2)) in b1.chunks(32).zip(b2.chunks(32)).enumerate() {
        assert_eq!(r1[..12], r2[..12], "position bytes of {i}");
        assert_eq!(r1[24..28], r2[24..28], "colour bytes of {i}");
        for k in 28..32 {
            assert!(
                r1[k].abs_diff(r2[k]) <= 1,
                "rotation bytes of {i}: {:?} vs {:?}",
                &r1[28..],
                &r2[28..]
            );
        }
        for k in 0..3 {
            let f =
                |r: &[u8]| f32::from_le_bytes(r[12 + 4 * k..16 + 4 * k].try_into().unwrap()) as f64;
            close(f(r2), f(r1), 2e-6 * f(r1), "scale after two round trips");
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let good = record([0.0; 3], [1.0; 3], [1, 2, 3, 4], [128; 4]);

    let mut odd = good.clone();
    odd.push(0);
    let e = read_splat_bytes(&odd, src()).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(e.to_string().contains("33"), "{e}");

    let e = read_splat_bytes(&[], src()).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(e.to_string().contains("no Gaussians"), "{e}");

    for (bad, name) in [
        (0.0f32, "zero"),
        (-1.0, "negative"),
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
    ] {
        let mut bytes = good.repeat(3);
        bytes.extend(record([0.0; 3], [1.0, bad, 1.0], [0; 4], [128; 4]));
        bytes.extend(record([0.0; 3], [bad; 3], [0; 4], [128; 4]));
        let e = read_splat_bytes(&bytes, src()).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("Gaussian 3") && msg.contains("scale_1"),
            "{name}: {msg}"
        );
        assert!(msg.contains("test.splat"), "{name}: {msg}");
    }

    let mut bytes = good.clone();
    bytes.extend(record([f32::NAN, 0.0, 0.0], [1.0; 3], [0; 4], [128; 4]));
    let e = read_splat_bytes(&bytes, src()).unwrap_err();
    assert!(e.to_string().contains("Gaussian 1"), "{e}");

    let e = read_splat(Path::new("/nonexistent/dir/x.splat")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn unwritable_scenes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.splat");
    let mut scene = generate(&SynthConfig {
        count: 10,
        sh_degree: 0,
        seed: 1,
    });
    scene.scales[4][2] = f32::NAN;
    let e = write_splat(&path, &scene).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("Gaussian 4"),
        "{e}"
    );
    scene.scales[4][2] = -200.0; // exp underflows to 0
    assert!(write_splat(&path, &scene).is_err());
    scene.scales[4][2] = 0.0;
    scene.opacity.pop();
    assert!(matches!(
        write_splat(&path, &scene),
        Err(Error::InvalidArgument(_))
    ));
    assert!(!path.exists(), "a failed write must not leave a file");
}

#[test]
fn splat_extension() {
    assert!(is_splat_path(Path::new("x/plant.splat")));
    assert!(is_splat_path(Path::new("PLANT.Splat")));
    assert!(!is_splat_path(Path::new("plant.ply")));
    assert!(!is_splat_path(Path::new("plant.splat.zst")));
}

#[test]
fn plant_splat_reads_when_present() {
    // Skips with a note locally; under CI a missing file fails.
    let Some(path) = common::data::shared_data("plant.splat") else {
        return;
    };
    let s = read_splat(&path).unwrap();
    assert_eq!(s.len(), 113_648);
    s.check_consistent().unwrap();
    assert_eq!(s.sh_degree, 0);
    for i in 0..s.len() {
        let finite = s.positions[i]
            .iter()
            .chain(&s.scales[i])
            .chain(&s.dc[i])
            .all(|v| v.is_finite());
        assert!(
            finite && s.opacity[i].is_finite(),
            "Gaussian {i} is not finite"
        );
        let n = s.rotations[i].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "Gaussian {i}: |q| = {n}");
    }

    // Synthetic SH for the real capture.
    let mut s = s;
    synthesize_sh(&mut s, 2, 11);
    assert_eq!(s.sh_degree, 2);
    assert_eq!(s.sh_rest.len(), s.len() * 24);
    s.check_consistent().unwrap();
}

/// Per-band RMS, zero fractions and the mean R–G / R–B / G–B correlation.
struct ShStats {
    band_rms: Vec<f64>,
    zero_rows: f64,
    zero_coeffs: f64,
    channel_corr: f64,
    excess_kurtosis: f64,
    norm_p95_over_p5: f64,
}

fn sh_stats(s: &Scene) -> ShStats {
    let l = s.sh_degree as usize;
    let k = (l + 1) * (l + 1) - 1;
    let d = 3 * k;
    let band = |j: usize| {
        if j < 3 {
            0
        } else if j < 8 {
            1
        } else {
            2
        }
    };
    let (mut sq, mut cnt) = (vec![0f64; l], vec![0usize; l]);
    let (mut zero_rows, mut zero_coeffs, mut nonzero_row_coeffs) = (0usize, 0usize, 0usize);
    let (mut m2, mut m4, mut all) = (0f64, 0f64, 0usize);
    let mut cross = [[0f64; 3]; 3];
    let mut norms = Vec::new();
    for i in 0..s.len() {
        let row = &s.sh_rest[i * d..(i + 1) * d];
        if row.iter().all(|&v| v == 0.0) {
            zero_rows += 1;
        } else {
            zero_coeffs += row.iter().filter(|&&v| v == 0.0).count();
            nonzero_row_coeffs += d;
            norms.push(row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt());
        }
        for j in 0..k {
            let v = [row[j], row[k + j], row[2 * k + j]].map(|x| x as f64);
            for c in 0..3 {
                sq[band(j)] += v[c] * v[c];
                cnt[band(j)] += 1;
                m2 += v[c] * v[c];
                m4 += v[c].powi(4);
                all += 1;
                for c2 in 0..3 {
                    cross[c][c2] += v[c] * v[c2];
                }
            }
        }
    }
    let corr = |a: usize, b: usize| cross[a][b] / (cross[a][a] * cross[b][b]).sqrt();
    norms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| norms[((norms.len() - 1) as f64 * p) as usize];
    let (m2, m4) = (m2 / all as f64, m4 / all as f64);
    ShStats {
        band_rms: (0..l).map(|b| (sq[b] / cnt[b] as f64).sqrt()).collect(),
        zero_rows: zero_rows as f64 / s.len() as f64,
        zero_coeffs: zero_coeffs as f64 / nonzero_row_coeffs as f64,
        channel_corr: (corr(0, 1) + corr(0, 2) + corr(1, 2)) / 3.0,
        excess_kurtosis: m4 / (m2 * m2) - 3.0,
        norm_p95_over_p5: pct(0.95) / pct(0.05),
    }
}

#[test]
fn synth_statistics_resemble_trained_scenes() {
    let n = 200_000;
    let s = generate(&SynthConfig {
        count: n,
        sh_degree: 3,
        seed: 42,
    });
    s.check_consistent().unwrap();
    assert_eq!(s.len(), n);
    assert_eq!(s.rest_dim(), 45);
    assert!(s.normals.as_ref().unwrap().iter().all(|v| *v == [0.0; 3]));

    let st = sh_stats(&s);
    eprintln!(
        "band RMS {:?}, zero rows {:.4}, zero coeffs {:.4}, channel corr {:.3}, excess kurtosis {:.1}, norm p95/p5 {:.1}",
        st.band_rms,
        st.zero_rows,
        st.zero_coeffs,
        st.channel_corr,
        st.excess_kurtosis,
        st.norm_p95_over_p5
    );
    for (b, r) in st.band_rms.iter().enumerate() {
        assert!((0.04..0.08).contains(r), "band {} RMS {r}", b + 1);
    }
    assert!(
        st.band_rms[0] > st.band_rms[1] && st.band_rms[1] > st.band_rms[2],
        "{:?}",
        st.band_rms
    );
    assert!(
        (0.035..0.065).contains(&st.zero_rows),
        "all-zero rows {}",
        st.zero_rows
    );
    assert!(
        (0.01..0.03).contains(&st.zero_coeffs),
        "zero coefficients {}",
        st.zero_coeffs
    );
    assert!(
        st.channel_corr > 0.5,
        "channel correlation {}",
        st.channel_corr
    );
    assert!(
        st.excess_kurtosis > 3.0,
        "tails too light: excess kurtosis {}",
        st.excess_kurtosis
    );
    assert!(
        st.norm_p95_over_p5 > 5.0,
        "norms too uniform: {}",
        st.norm_p95_over_p5
    );

    // Opacity: ~20 % faint, most nearly opaque.
    let faint = s.opacity.iter().filter(|&&o| sigmoid(o) < 0.05).count() as f64 / n as f64;
    let opaque = s.opacity.iter().filter(|&&o| sigmoid(o) > 0.9).count() as f64 / n as f64;
    assert!((0.15..0.25).contains(&faint), "faint fraction {faint}");
    assert!(opaque > 0.4, "opaque fraction {opaque}");

    // Log scales ≈ N(−4.5, 1²) per axis.
    let ls: Vec<f64> = s.scales.iter().flatten().map(|&v| v as f64).collect();
    let mean = ls.iter().sum::<f64>() / ls.len() as f64;
    let sd = (ls.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / ls.len() as f64).sqrt();
    eprintln!("log scale mean {mean:.3} sd {sd:.3}, faint {faint:.3}, opaque {opaque:.3}");
    assert!(
        (-5.0..-4.0).contains(&mean) && (0.7..1.4).contains(&sd),
        "log scales {mean} ± {sd}"
    );

    // Unnormalised quaternions with norms in [0.5, 2].
    let qn: Vec<f32> = s
        .rotations
        .iter()
        .map(|q| q.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    assert!(qn.iter().all(|n| (0.499..=2.001).contains(n)));
    assert!(qn.iter().filter(|n| (**n - 1.0).abs() > 0.1).count() > n / 2);

    // Clustered positions: most Gaussians in the object box, some far out.
    let r: Vec<f32> = s
        .positions
        .iter()
        .map(|p| p.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let near = r.iter().filter(|&&v| v < 10.0).count() as f64 / n as f64;
    let far = r.iter().filter(|&&v| v > 12.0).count() as f64 / n as f64;
    assert!(near > 0.85 && far > 0.05, "near {near}, far {far}");

    // DC ≈ N(0, 0.8²).
    let dsd = (s
        .dc
        .iter()
        .flatten()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>()
        / (3 * n) as f64)
        .sqrt();
    assert!((0.5..1.1).contains(&dsd), "dc RMS {dsd}");
}

#[test]
fn synth_is_deterministic_across_calls_and_thread_counts() {
    let cfg = SynthConfig {
        count: 50_000,
        sh_degree: 3,
        seed: 9,
    };
    let a = generate(&cfg);
    let b = generate(&cfg);
    assert!(a == b, "two calls differ");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c = pool.install(|| generate(&cfg));
    assert!(a == c, "1-thread pool differs");
    // Bitwise, not just ==: NaN-free and -0.0 vs 0.0 would hide in ==.
    let bits = |s: &Scene| s.sh_rest.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&c));

    let other = generate(&SynthConfig { seed: 10, ..cfg });
    assert!(other.positions != a.positions && other.sh_rest != a.sh_rest);
}

#[test]
fn synthesize_sh_matches_generate_and_truncation() {
    let cfg = SynthConfig {
        count: 10_000,
        sh_degree: 3,
        seed: 3,
    };
    let full = generate(&cfg);
    let mut base = generate(&SynthConfig {
        sh_degree: 0,
        ..cfg
    });
    assert_eq!(base.rest_dim(), 0);
    assert!(base.sh_rest.is_empty());
    assert_eq!(base.positions, full.positions);

    for l in 1..=3u8 {
        let mut s = base.clone();
        synthesize_sh(&mut s, l, cfg.seed);
        assert_eq!(s.sh_degree, l);
        assert_eq!(s.rest_dim(), rest_dim(l));
        assert_eq!(s.sh_rest.len(), s.len() * rest_dim(l));
        s.check_consistent().unwrap();
        let mut t = full.clone();
        t.truncate_sh(l);
        assert!(
            s.sh_rest == t.sh_rest,
            "degree {l} is not the prefix of degree 3"
        );
        let direct = generate(&SynthConfig {
            sh_degree: l,
            ..cfg
        });
        assert!(
            direct == s,
            "generate(L = {l}) differs from generate(0) + synthesize_sh"
        );
    }
    synthesize_sh(&mut base, 0, 1);
    assert!(base.sh_rest.is_empty() && base.sh_degree == 0);
}

//! The computed codebooks against the exact reference values in
//! ../shared/reference/codebooks.json (an independent 40-digit solve).

use std::path::PathBuf;
use std::time::Instant;

use turboquant3d::{Codebook, theory};

fn reference() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/codebooks.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the test oracle must be present)", path.display()));
    serde_json::from_str(&text).expect("reference JSON parses")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn centroids_boundaries_and_distortion_match_to_seven_digits() {
    let reference = reference();
    let books = reference["codebooks"].as_object().unwrap();
    let mut checked = 0;
    let mut worst: (f64, String) = (0.0, String::new());
    for (d, by_bits) in books {
        let d: usize = d.parse().unwrap();
        for (b, entry) in by_bits.as_object().unwrap() {
            let b: u32 = b.parse().unwrap();
            let cb = Codebook::compute(d, b).unwrap();
            let want_c: Vec<f64> = entry["centroids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let want_t: Vec<f64> = entry["boundaries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let want_mse = entry["d_times_mse"].as_f64().unwrap();
            assert_eq!(cb.centroids().len(), want_c.len());
            assert_eq!(cb.boundaries().len(), want_t.len());
            for (got, want) in cb
                .centroids()
                .iter()
                .zip(&want_c)
                .chain(cb.boundaries().iter().zip(&want_t))
            {
                // 7 significant digits; the middle boundary is exactly 0.
                let e = if *want == 0.0 {
                    got.abs()
                } else {
                    rel(*got, *want)
                };
                assert!(e < 5e-8, "d={d} b={b}: {got} vs {want} (rel {e:e})");
                if e > worst.0 {
                    worst = (e, format!("d={d} b={b} value {want}"));
                }
            }
            let e = rel(cb.distortion(), want_mse);
            assert!(
                e < 5e-8,
                "d={d} b={b}: d·MSE {} vs {want_mse} (rel {e:e})",
                cb.distortion()
            );
            assert!((theory::expected_error(d, b).unwrap() - cb.distortion()).abs() == 0.0);
            checked += 1;
        }
    }
    assert!(checked >= 80, "only {checked} reference codebooks found");
    eprintln!(
        "checked {checked} codebooks; worst relative error {:e} at {}",
        worst.0, worst.1
    );
}

#[test]
fn centroids_are_symmetric_and_boundaries_are_midpoints() {
    for &(d, b) in &[
        (2usize, 1u32),
        (2, 8),
        (5, 3),
        (45, 4),
        (1000, 6),
        (4096, 8),
    ] {
        let cb = Codebook::compute(d, b).unwrap();
        let c = cb.centroids();
        let n = c.len();
        assert_eq!(n, 1 << b);
        for i in 0..n {
            assert_eq!(c[i], -c[n - 1 - i], "d={d} b={b}");
        }
        assert!(c.windows(2).all(|w| w[0] < w[1]));
        for (i, t) in cb.boundaries().iter().enumerate() {
            assert_eq!(*t, 0.5 * (c[i] + c[i + 1]));
        }
    }
}

/// For d = 3 the coordinate is uniform on [−1, 1] (Archimedes), so the
/// Lloyd–Max quantizer is the uniform one and d·MSE = 3·(2/2^b)²/12 = 4^−b:
/// exactly the lower bound.
#[test]
fn d3_is_the_uniform_quantizer() {
    for b in 1..=8u32 {
        let cb = Codebook::compute(3, b).unwrap();
        let n = 1usize << b;
        for (i, c) in cb.centroids().iter().enumerate() {
            let want = -1.0 + (2.0 * i as f64 + 1.0) / n as f64;
            assert!(
                (c - want).abs() < 1e-12,
                "b={b} centroid {i}: {c} vs {want}"
            );
        }
        assert!(
            rel(cb.distortion(), theory::lower_bound(b)) < 1e-10,
            "b={b}"
        );
    }
}

/// The arcsine law (d = 2) has closed-form one-bit values: c = ±E|X| = ±2/π and
/// d·MSE = 2·(1/2 − 4/π²).
#[test]
fn d2_one_bit_matches_closed_form() {
    let cb = Codebook::compute(2, 1).unwrap();
    let pi = std::f64::consts::PI;
    assert!(rel(cb.centroids()[1], 2.0 / pi) < 1e-13);
    assert!(rel(cb.distortion(), 2.0 * (0.5 - 4.0 / (pi * pi))) < 1e-12);
}

#[test]
fn distortion_approaches_the_gaussian_limit_and_stays_within_the_bounds() {
    // Max–Lloyd for N(0, 1): the d → ∞ limit of d·C(d, b) (shared/reference/README.md).
    let gaussian = [0.36338023, 0.11748185, 0.034547761, 0.0095010080];
    for b in 1..=4u32 {
        let big = Codebook::compute(65536, b).unwrap().distortion();
        assert!(rel(big, gaussian[b as usize - 1]) < 1e-3, "b={b}: {big}");
        for &d in &[3usize, 16, 45, 64, 1024, 4096] {
            let e = Codebook::get(d, b).unwrap().distortion();
            assert!(e <= theory::upper_bound(b), "d={d} b={b}");
            // d = 3 sits exactly on the lower bound (see above); larger d above it.
            assert!(e >= theory::lower_bound(b) * (1.0 - 1e-12), "d={d} b={b}");
        }
    }
}

#[test]
fn cache_returns_the_same_codebook() {
    let a = Codebook::get(45, 3).unwrap();
    let b = Codebook::get(45, 3).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert_eq!(*a, Codebook::compute(45, 3).unwrap());
}

/// The budget is "well under 10 ms" for d ≤ 4096, b ≤ 4. Timing is
/// a benchmark's job; this only guards against a pathological solver (a
/// hundredfold slowdown) with a limit no shared machine comes near.
#[test]
fn solving_is_not_pathologically_slow() {
    let t = Instant::now();
    for &d in &[45usize, 64, 1024, 4096] {
        for b in 1..=4 {
            Codebook::compute(d, b).unwrap();
        }
    }
    assert!(
        t.elapsed().as_secs_f64() < 2.0,
        "16 codebooks took {:?}",
        t.elapsed()
    );
}

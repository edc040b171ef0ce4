//! Measured distortion against theory: d·C(d, b) for random unit vectors
//! (within 2 %), and for adversarial inputs that no data set would be kind
//! enough to give (within 5 %), with every rotation offered for that d.
//!
//! The guarantee is an expectation over the random rotation Π for any fixed
//! input, so the adversarial families are averaged over many rotation seeds:
//! a family with one direction (the constant vector) gives one independent
//! sample per seed. The per-vector error has a relative spread of about
//! 4.7/√d at b = 4, so 4,096 seeds at d = 45 and 160–256 at d = 1024 put the
//! standard error near 1 %, a quarter of the 5 % tolerance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Cauchy, Distribution, StandardNormal};
use rayon::prelude::*;
use turboquant3d::{Quantizer, Rotation, RotationKind, ScaleFormat, ScaleMode, theory};

/// Rotations are costly at d = 1024 (dense QR), so tests share them.
fn rotation(kind: RotationKind, dim: usize, seed: u64) -> Arc<Rotation> {
    type Cache = Mutex<HashMap<(RotationKind, usize, u64), Arc<Rotation>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap().get(&(kind, dim, seed)) {
        return r.clone();
    }
    let r = Arc::new(Rotation::new(kind, dim, seed).unwrap());
    cache.lock().unwrap().insert((kind, dim, seed), r.clone());
    r
}

/// Mean of ‖x − x̃‖² / ‖x‖² over the rows, with the norm scale in f32.
fn mean_normalised_error(rot: Arc<Rotation>, bits: u32, x: &[f32]) -> f64 {
    let d = rot.dim();
    let q = Quantizer::with_rotation(rot, bits, ScaleMode::Norm, ScaleFormat::F32).unwrap();
    let y = q.decode(&q.encode(x).unwrap()).unwrap();
    let rows = x.len() / d;
    let mut total = 0.0;
    for (a, b) in x.chunks(d).zip(y.chunks(d)) {
        let e: f64 = a
            .iter()
            .zip(b)
            .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            .sum();
        let n: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum();
        total += e / n;
    }
    total / rows as f64
}

#[derive(Debug, Clone, Copy)]
enum Family {
    Gaussian,
    OneHot,
    Constant,
    Sparse,
    HadamardRow,
    Cauchy,
    OneLargeChannel,
}

const ADVERSARIAL: [Family; 6] = [
    Family::OneHot,
    Family::Constant,
    Family::Sparse,
    Family::HadamardRow,
    Family::Cauchy,
    Family::OneLargeChannel,
];

/// `n` vectors of dimension d from a family (not normalised: the codec
/// must handle the scale).
fn generate(family: Family, d: usize, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut x = vec![0f32; n * d];
    for (i, row) in x.chunks_mut(d).enumerate() {
        match family {
            Family::Gaussian => row
                .iter_mut()
                .for_each(|v| *v = StandardNormal.sample(&mut rng)),
            Family::OneHot => row[i % d] = 1.0,
            Family::Constant => row.fill(0.5),
            Family::Sparse => {
                for _ in 0..3 {
                    let j = rand::RngExt::random_range(&mut rng, 0..d);
                    row[j] = StandardNormal.sample(&mut rng);
                }
                if row.iter().all(|&v| v == 0.0) {
                    row[0] = 1.0;
                }
            }
            Family::HadamardRow => {
                // Row r of the Sylvester–Hadamard matrix of the next power of
                // two, truncated to d: H_rj = (−1)^popcount(r & j).
                let r = i % d.next_power_of_two();
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if (r & j).count_ones().is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    };
                }
            }
            Family::Cauchy => {
                let c = Cauchy::new(0.0f64, 1.0).unwrap();
                row.iter_mut().for_each(|v| *v = c.sample(&mut rng) as f32);
            }
            Family::OneLargeChannel => {
                row.iter_mut()
                    .for_each(|v| *v = StandardNormal.sample(&mut rng));
                row[i % d] *= 100.0;
            }
        }
    }
    x
}

/// Mean normalised error of each family for b = 1..=4, averaged over
/// `seeds` rotations with `per_seed` vectors each. A rotation serves every
/// family before the next is built; seeds run in parallel and are summed in
/// seed order.
fn measure(
    kind: RotationKind,
    d: usize,
    families: &[Family],
    seeds: u64,
    per_seed: usize,
) -> Vec<[f64; 4]> {
    let per: Vec<Vec<[f64; 4]>> = (0..seeds)
        .into_par_iter()
        .map(|s| {
            let rot = if seeds == 1 {
                rotation(kind, d, s)
            } else {
                Arc::new(Rotation::new(kind, d, s).unwrap())
            };
            families
                .iter()
                .map(|&f| {
                    let x = generate(f, d, per_seed, 1000 + s);
                    std::array::from_fn(|b| mean_normalised_error(rot.clone(), b as u32 + 1, &x))
                })
                .collect()
        })
        .collect();
    (0..families.len())
        .map(|f| std::array::from_fn(|b| per.iter().map(|e| e[f][b]).sum::<f64>() / seeds as f64))
        .collect()
}

fn check(
    kind: RotationKind,
    d: usize,
    families: &[Family],
    seeds: u64,
    per_seed: usize,
    tolerance: f64,
) {
    let got = measure(kind, d, families, seeds, per_seed);
    let mut failures = Vec::new();
    for (family, got) in families.iter().zip(got) {
        for bits in 1..=4u32 {
            let want = theory::expected_error(d, bits).unwrap();
            let got = got[bits as usize - 1];
            let rel = got / want - 1.0;
            eprintln!(
                "{kind:?} d={d} b={bits} {family:?}: measured {got:.6} theory {want:.6} ({:+.2} %)",
                100.0 * rel
            );
            if rel.abs() > tolerance {
                failures.push(format!(
                    "{family:?} b={bits}: measured {got} vs d·C = {want} ({:+.2} %)",
                    100.0 * rel
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{kind:?} d={d}, outside ±{} %:\n{}",
        100.0 * tolerance,
        failures.join("\n")
    );
}

#[test]
fn random_unit_vectors_d45_dense_within_2_percent() {
    check(
        RotationKind::Dense,
        45,
        &[Family::Gaussian],
        1,
        20_000,
        0.02,
    );
}

#[test]
fn random_unit_vectors_d1024_dense_within_2_percent() {
    check(
        RotationKind::Dense,
        1024,
        &[Family::Gaussian],
        1,
        20_000,
        0.02,
    );
}

#[test]
fn random_unit_vectors_d1024_hadamard_within_2_percent() {
    check(
        RotationKind::Hadamard,
        1024,
        &[Family::Gaussian],
        1,
        20_000,
        0.02,
    );
}

#[test]
fn adversarial_inputs_d45_dense_within_5_percent() {
    check(RotationKind::Dense, 45, &ADVERSARIAL, 4096, 5, 0.05);
}

#[test]
fn adversarial_inputs_d1024_hadamard_within_5_percent() {
    check(RotationKind::Hadamard, 1024, &ADVERSARIAL, 256, 16, 0.05);
}

#[test]
fn adversarial_inputs_d1024_dense_within_5_percent() {
    check(RotationKind::Dense, 1024, &ADVERSARIAL, 160, 16, 0.05);
}

/// One fixed rotation, as a deployment uses, must also meet the bound on
/// every family with many directions (all but the constant vector): at
/// d = 1024 that is 20,480 vectors in at least 1,024 directions each. (At
/// d = 45 one-hot vectors have only 45 directions, whose mean error under
/// one rotation has a spread near 10 %; there the seed-averaged test above
/// is the meaningful one.) This is the test that needs three Hadamard rounds.
#[test]
fn adversarial_inputs_fixed_rotation_within_5_percent() {
    let many = [
        Family::OneHot,
        Family::Sparse,
        Family::HadamardRow,
        Family::Cauchy,
        Family::OneLargeChannel,
    ];
    check(RotationKind::Hadamard, 1024, &many, 1, 20_480, 0.05);
    check(RotationKind::Dense, 1024, &many, 1, 20_480, 0.05);
}

/// Why three rounds: with one round, one-hot inputs map to vectors whose
/// entries all have magnitude 1/√d, and the error is far from d·C(d, b).
/// This test keeps that failure visible, so the round count stays justified.
#[test]
fn one_round_hadamard_fails_on_one_hot_inputs() {
    let d = 1024;
    let bits = 2;
    let want = theory::expected_error(d, bits).unwrap();
    let mut total = 0.0;
    for s in 0..4 {
        let rot = Arc::new(Rotation::hadamard_with_rounds(d, s, 1, false).unwrap());
        total += mean_normalised_error(rot, bits, &generate(Family::OneHot, d, 256, s));
    }
    let got = total / 4.0;
    assert!(
        (got / want - 1.0).abs() > 0.5,
        "one round gave {got} vs {want}: the adversarial test would not need more rounds"
    );
}

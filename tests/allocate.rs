//! The bit allocation against an exhaustive search, and against uniform
//! widths at equal bits; and the splat weights it is given.

use turboquant3d::codec::allocate::{self, Class, allocate, cost, distortions};

/// The best Σ v_i·D(b_i) over every width vector with b_i ≤ max and total
/// cost ≤ budget, by brute force.
fn exhaustive(values: &[f64], d: usize, s: u32, budget: u64, max: u8) -> f64 {
    let class = [Class {
        dim: d,
        scale_bits: s,
        max_bits: max,
    }];
    exhaustive_classes(values, &vec![0; values.len()], &class, budget)
}

#[test]
fn the_allocation_is_optimal_for_the_bits_it_spends() {
    // Six vectors whose importance spans four orders of magnitude.
    let values = [3.0, 0.02, 0.7, 1e-4, 0.15, 1.2];
    for d in [9usize, 45] {
        let per = cost(d, 1, 16);
        for budget in [0, per, 3 * per, 6 * per, 10 * per + 7, 20 * per, 40 * per] {
            let a = allocate(&values, d, 16, budget, 4).unwrap();
            assert!(a.bits <= budget);
            // Everett: optimal among all allocations spending at most a.bits.
            let opt = exhaustive(&values, d, 16, a.bits, 4);
            assert!(
                (a.objective - opt).abs() <= 1e-12 * opt.max(1.0),
                "d = {d}, budget {budget}: {} vs optimum {opt}",
                a.objective
            );
            // And it leaves less than one upgrade unspent, unless every
            // vector is already at the widest code.
            let full = a.widths.iter().all(|&b| b == 4);
            assert!(
                full || budget - a.bits < cost(d, 4, 16),
                "d = {d}: {} of {budget} bits spent",
                a.bits
            );
            // The widths spend what it says.
            assert_eq!(
                a.widths.iter().map(|&b| cost(d, b, 16)).sum::<u64>(),
                a.bits
            );
        }
    }
}

#[test]
fn allocated_error_is_at_most_uniform_at_equal_bits() {
    // Importances like a trained scene: log-normal over many decades.
    let n = 5000;
    let values: Vec<f64> = (0..n)
        .map(|i| ((i as f64 * 0.7919).sin() * 6.0).exp())
        .collect();
    let dist = distortions(45).unwrap();
    for b in 1..=4u8 {
        let budget = n as u64 * cost(45, b, 16);
        let a = allocate(&values, 45, 16, budget, 8).unwrap();
        let uniform: f64 = values.iter().map(|v| v * dist[b as usize]).sum();
        assert!(
            a.objective <= uniform,
            "b = {b}: {} > uniform {uniform}",
            a.objective
        );
        assert!(a.bits <= budget);
        println!(
            "b̄ = {b}: allocated/uniform predicted error = {:.4}",
            a.objective / uniform
        );
    }
    // Zero importance gets zero bits; a budget of zero gives all zeros.
    let a = allocate(&[0.0, 1.0], 45, 16, 10_000, 8).unwrap();
    assert_eq!(a.widths[0], 0);
    assert!(
        allocate(&values, 45, 16, 0, 8)
            .unwrap()
            .widths
            .iter()
            .all(|&b| b == 0)
    );
    let _ = allocate::MAX_BITS;
}

#[test]
fn splat_importance_is_the_weight_times_the_truncated_sh_energy() {
    use turboquant3d::splat::importance::{Weight, importance};
    use turboquant3d::splat::synth::{SynthConfig, generate};
    let s = generate(&SynthConfig {
        count: 200,
        sh_degree: 3,
        seed: 4,
    });
    // Degree 1 keeps the first 3 of each channel's 15 coefficients.
    let energy = |i: usize| -> f64 {
        (0..3)
            .flat_map(|c| (0..3).map(move |j| c * 15 + j))
            .map(|j| (s.rest(i)[j] as f64).powi(2))
            .sum()
    };
    let alpha = |i: usize| 1.0 / (1.0 + (-s.opacity[i] as f64).exp());
    let cov: Vec<f64> = (0..s.len()).map(|i| i as f64 * 0.5).collect();
    let e = importance(&s, 1, Weight::Energy, None).unwrap();
    let o = importance(&s, 1, Weight::Opacity, None).unwrap();
    let f = importance(&s, 1, Weight::OpacityFootprint, None).unwrap();
    let c = importance(&s, 1, Weight::Coverage, Some(&cov)).unwrap();
    for i in 0..s.len() {
        let mut sc = s.scales[i].map(|v| v as f64);
        sc.sort_by(f64::total_cmp);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs() + 1e-12;
        assert!(close(e[i], energy(i)), "Gaussian {i}: energy");
        assert!(close(o[i], alpha(i) * energy(i)), "Gaussian {i}: opacity");
        let footprint = alpha(i) * (sc[1] + sc[2]).exp() * energy(i);
        assert!(close(f[i], footprint), "Gaussian {i}: footprint");
        assert!(close(c[i], cov[i] * energy(i)), "Gaussian {i}: coverage");
    }
    // Coverage needs one value per Gaussian.
    assert!(importance(&s, 1, Weight::Coverage, None).is_err());
    assert!(importance(&s, 1, Weight::Coverage, Some(&cov[1..])).is_err());
}

/// A small deterministic generator (no dependence on rand's streams).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// The parallel allocation is the greedy's, widths, bits and objective,
/// bit for bit, and the same on one thread as on several.
fn assert_same(values: &[f64], d: usize, budget: u64, max: u8) {
    let want = allocate::allocate_greedy(values, d, 16, budget, max).unwrap();
    let got = allocate(values, d, 16, budget, max).unwrap();
    assert_eq!(got.widths, want.widths, "d {d}, budget {budget}, max {max}");
    assert_eq!(got.bits, want.bits);
    assert_eq!(got.objective.to_bits(), want.objective.to_bits());
}

#[test]
fn the_parallel_allocation_is_the_greedy_on_random_and_tied_instances() {
    let mut seed = 7u64;
    for round in 0..300 {
        let n = 1 + (lcg(&mut seed) % 60) as usize;
        // Few distinct values (ties across vectors), zeros, and wide ranges.
        let distinct = 1 + lcg(&mut seed) % 6;
        let values: Vec<f64> = (0..n)
            .map(|_| match lcg(&mut seed) % 8 {
                0 => 0.0,
                _ if round % 2 == 0 => (lcg(&mut seed) % distinct) as f64 * 0.5 + 0.25,
                _ => ((lcg(&mut seed) % 2000) as f64 / 100.0 - 10.0).exp(),
            })
            .collect();
        let d = [9usize, 24, 45, 64][round % 4];
        let max = 1 + (round % 8) as u8;
        let full: u64 = n as u64 * cost(d, max, 16);
        let budget = lcg(&mut seed) % (full + 2);
        assert_same(&values, d, budget, max);
    }
    // Every budget of a small instance with ties, one bit at a time.
    let values = [1.0, 0.5, 1.0, 0.0, 2.0, 0.5];
    let full = values.len() as u64 * cost(9, 8, 16);
    for budget in 0..=full + 1 {
        assert_same(&values, 9, budget, 8);
    }
}

#[test]
fn the_parallel_allocation_is_the_greedy_at_scale_on_any_thread_count() {
    // Enough upgrades that the selection needs more than one radix pass,
    // and a run of equal values whose tie spans the whole key.
    let n = 60_000;
    let mut seed = 3u64;
    let values: Vec<f64> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                1.5
            } else {
                ((lcg(&mut seed) % 100_000) as f64 / 1e4 - 5.0).exp()
            }
        })
        .collect();
    let budget = n as u64 * cost(45, 2, 16) + 12_345;
    let want = allocate::allocate_greedy(&values, 45, 16, budget, 8).unwrap();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = pool.install(|| allocate(&values, 45, 16, budget, 8).unwrap());
        assert_eq!(got, want, "{threads} threads");
    }
    // More tied upgrades than the selection sorts outright (2^16): every
    // radix pass runs, down to the last bit of the key.
    let tied = vec![1.5; 70_000];
    assert_same(&tied, 45, 70_000 * cost(45, 3, 16) - 77, 8);
}

/// The least Σ v_i·D_{c(i)}(b_i) over every width vector that spends at
/// most `budget` bits, by enumeration (tiny instances only).
fn exhaustive_classes(values: &[f64], class: &[u8], classes: &[Class], budget: u64) -> f64 {
    let dist: Vec<[f64; 9]> = classes
        .iter()
        .map(|c| distortions(c.dim).unwrap())
        .collect();
    let mut best = f64::INFINITY;
    let mut b = vec![0u8; values.len()];
    loop {
        let bits: u64 = b
            .iter()
            .zip(class)
            .map(|(&w, &c)| cost(classes[c as usize].dim, w, classes[c as usize].scale_bits))
            .sum();
        if bits <= budget {
            let obj: f64 = b
                .iter()
                .zip(values)
                .zip(class)
                .map(|((&w, &v), &c)| v * dist[c as usize][w as usize])
                .sum();
            best = best.min(obj);
        }
        // Next width vector, odometer style.
        let mut i = 0;
        loop {
            if i == b.len() {
                return best;
            }
            if b[i] < classes[class[i] as usize].max_bits {
                b[i] += 1;
                break;
            }
            b[i] = 0;
            i += 1;
        }
    }
}

#[test]
fn the_mixed_allocation_is_optimal_for_the_bits_it_spends_and_is_the_greedy() {
    // A head's 48 main and 16 outlier channels and a whole-width 64, with
    // different scale sizes: the shapes a KV layer mixes.
    let classes = [
        Class {
            dim: 48,
            scale_bits: 16,
            max_bits: 4,
        },
        Class {
            dim: 16,
            scale_bits: 16,
            max_bits: 5,
        },
        Class {
            dim: 64,
            scale_bits: 8,
            max_bits: 3,
        },
    ];
    let mut seed = 11u64;
    for round in 0..40 {
        let n = 2 + (lcg(&mut seed) % 3) as usize;
        let values: Vec<f64> = (0..n)
            .map(|_| ((lcg(&mut seed) % 400) as f64 / 100.0 - 2.0).exp())
            .collect();
        let class: Vec<u8> = (0..n).map(|_| (lcg(&mut seed) % 3) as u8).collect();
        let full: u64 = class
            .iter()
            .map(|&c| {
                let c = classes[c as usize];
                cost(c.dim, c.max_bits, c.scale_bits)
            })
            .sum();
        let budget = lcg(&mut seed) % (full + 2);
        let got = allocate::allocate_classes(&values, &class, &classes, budget).unwrap();
        let heap = allocate::allocate_classes_greedy(&values, &class, &classes, budget).unwrap();
        assert_eq!(got, heap, "round {round}");
        assert!(got.bits <= budget);
        // Optimal among all allocations of at most the bits it spent.
        let best = exhaustive_classes(&values, &class, &classes, got.bits);
        assert!(
            got.objective <= best * (1.0 + 1e-12),
            "round {round}: {} > {best}",
            got.objective
        );
    }
    // Larger random instances with ties: the radix selection is the heap.
    for round in 0..60 {
        let n = 1 + (lcg(&mut seed) % 3000) as usize;
        let values: Vec<f64> = (0..n)
            .map(|_| match lcg(&mut seed) % 6 {
                0 => 0.0,
                1 => 1.5,
                _ => ((lcg(&mut seed) % 2000) as f64 / 100.0 - 10.0).exp(),
            })
            .collect();
        let class: Vec<u8> = (0..n).map(|_| (lcg(&mut seed) % 3) as u8).collect();
        let budget = lcg(&mut seed) % (n as u64 * 300);
        let got = allocate::allocate_classes(&values, &class, &classes, budget).unwrap();
        let heap = allocate::allocate_classes_greedy(&values, &class, &classes, budget).unwrap();
        assert_eq!(got, heap, "round {round}");
    }
}

#[test]
fn one_class_mixed_is_the_plain_allocation() {
    let mut seed = 5u64;
    let values: Vec<f64> = (0..500)
        .map(|_| ((lcg(&mut seed) % 1000) as f64 / 100.0 - 5.0).exp())
        .collect();
    let classes = [Class {
        dim: 45,
        scale_bits: 16,
        max_bits: 8,
    }];
    let budget = 500 * cost(45, 3, 16) + 77;
    let mixed = allocate::allocate_classes(&values, &vec![0; 500], &classes, budget).unwrap();
    assert_eq!(mixed, allocate(&values, 45, 16, budget, 8).unwrap());
}

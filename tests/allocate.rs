//! The bit allocation against an exhaustive search, and against uniform
//! widths at equal bits.

use turboquant3d::codec::allocate::{self, allocate, cost, distortions};

/// The best Σ v_i·D(b_i) over every width vector with b_i ≤ max and total
/// cost ≤ budget, by brute force.
fn exhaustive(values: &[f64], d: usize, s: u32, budget: u64, max: u8) -> f64 {
    let dist = distortions(d).unwrap();
    let n = values.len();
    let mut best = f64::INFINITY;
    let mut w = vec![0u8; n];
    loop {
        let c: u64 = w.iter().map(|&b| cost(d, b, s)).sum();
        if c <= budget {
            let obj: f64 = w
                .iter()
                .zip(values)
                .map(|(&b, &v)| v * dist[b as usize])
                .sum();
            best = best.min(obj);
        }
        // Next width vector (odometer).
        let mut k = 0;
        loop {
            if k == n {
                return best;
            }
            if w[k] < max {
                w[k] += 1;
                break;
            }
            w[k] = 0;
            k += 1;
        }
    }
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

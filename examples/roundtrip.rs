//! The codec end to end on generated data: encode and decode random vectors
//! at the workloads and print the measured error next to theory, for
//! both scale conventions.
//!
//!     cargo run --release --example roundtrip
//!
//! Columns: d·C(d, b) is the expected ‖u − û‖² of a unit vector; "norm" and
//! "ls" are the measured Σ‖x − x̃‖² / Σ‖x‖² with the norm scale and the
//! least-squares scale; the bounds are 4^−b and (√3·π/2)·4^−b.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::{Quantizer, QuantizerConfig, RotationKind, ScaleMode, theory};

fn main() -> Result<(), turboquant3d::Error> {
    for (d, n, kind) in [
        (45usize, 200_000usize, RotationKind::Dense),
        (1024, 20_000, RotationKind::Hadamard),
        (64, 100_000, RotationKind::Hadamard),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x: Vec<f32> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let energy: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
        println!(
            "d = {d}, N = {n} Gaussian vectors, {} rotation",
            kind.name()
        );
        println!(
            "  b   lower     d*C(d,b)  upper     | norm      (vs d*C)  | ls        (gain)   | encode M vec/s"
        );
        for bits in 1..=4 {
            let mut measured = [0f64; 2];
            let mut rate = 0.0;
            for (i, mode) in [ScaleMode::Norm, ScaleMode::LeastSquares]
                .into_iter()
                .enumerate()
            {
                let mut cfg = QuantizerConfig::new(d, bits);
                cfg.rotation = kind;
                cfg.scale_mode = mode;
                let q = Quantizer::new(&cfg)?;
                let t = Instant::now();
                let enc = q.encode(&x)?;
                rate = n as f64 / t.elapsed().as_secs_f64() / 1e6;
                let y = q.decode(&enc)?;
                measured[i] = x
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                    .sum::<f64>()
                    / energy;
            }
            let want = theory::expected_error(d, bits)?;
            println!(
                "  {bits}   {:.6}  {want:.6}  {:.6}  | {:.6}  ({:+.2} %) | {:.6}  ({:+.2} %) | {rate:.2}",
                theory::lower_bound(bits),
                theory::upper_bound(bits),
                measured[0],
                100.0 * (measured[0] / want - 1.0),
                measured[1],
                100.0 * (measured[1] / measured[0] - 1.0),
            );
        }
    }
    Ok(())
}

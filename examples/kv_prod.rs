//! Does an unbiased inner-product estimator help softmax attention?
//! TurboQuant_prod codes a key with (b − 1)-bit MSE codes plus a 1-bit QJL
//! sketch of the residual, sign(S·r) with S a d × d Gaussian matrix, and
//! the residual's norm (f16); ⟨q, k⟩ ≈ ⟨q, k̂⟩ + √(π/2)/d·‖r‖·⟨S·q, sign(S·r)⟩,
//! unbiased. This compares it with b-bit MSE codes at equal bits (the MSE
//! keys get the norm's 16 bits back as nothing: they spend less), keys
//! only, values exact, per head of 64, on synthetic caches.
//!
//! ```text
//! cargo run --release --example kv_prod -- [--tokens 1024] [--heads 16]
//! ```

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::kv::attention::{Heads, attend_exact};
use turboquant3d::kv::codec::channel_mean;
use turboquant3d::kv::synth::{SynthConfig, cache};
use turboquant3d::kv::{CodedTensor, Plan};

#[path = "common/args.rs"]
mod args;
use args::arg;

/// Attention over given logits (n × H × T, already scaled), exact values.
fn attend_logits(logits: &[f64], v: &[f32], n: usize, tokens: usize, h: Heads) -> Vec<f64> {
    let (w, hd) = (h.width(), h.head_dim);
    let mut out = vec![0f64; n * w];
    for i in 0..n {
        for head in 0..h.heads {
            let l = &logits[(i * h.heads + head) * tokens..][..tokens];
            let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = l.iter().map(|x| (x - m).exp()).collect();
            let s: f64 = p.iter().sum();
            for t in 0..tokens {
                for j in 0..hd {
                    out[i * w + head * hd + j] += p[t] / s * v[t * w + head * hd + j] as f64;
                }
            }
        }
    }
    out
}

fn rel(a: &[f64], b: &[f32]) -> f64 {
    let e: f64 = a.iter().zip(b).map(|(x, &y)| (x - y as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (e / n).sqrt()
}

fn main() {
    let tokens: usize = arg("--tokens", 1024);
    let heads: usize = arg("--heads", 16);
    let h = Heads {
        heads,
        head_dim: 64,
    };
    let (w, hd) = (h.width(), 64);
    println!(
        "keys only (values exact), {tokens} tokens × {heads} heads × 64; output rel error, mean of 2 seeds"
    );
    println!("| bits per key element | MSE codes | prod: (b−1)-bit MSE + 1-bit QJL + f16 ‖r‖ |");
    println!("|---|---|---|");
    for bits in [2u8, 3, 4] {
        let (mut mse_err, mut prod_err) = (0.0, 0.0);
        for seed in [1u64, 2] {
            let c = cache(&SynthConfig::new(tokens, heads, hd, seed)).unwrap();
            let exact = attend_exact(&c.q, &c.k, &c.v, tokens, h).unwrap();
            let mean = channel_mean(&c.k, tokens, w);
            let centred: Vec<f32> =
                c.k.iter()
                    .enumerate()
                    .map(|(i, &x)| x - mean[i % w])
                    .collect();
            let plan = Plan::uniform(heads, hd).unwrap();
            let code = |b: u8| {
                CodedTensor::encode(
                    &centred,
                    tokens,
                    plan.clone(),
                    None,
                    vec![b; tokens * heads],
                    0,
                )
                .unwrap()
                .decode()
                .unwrap()
            };
            let n = c.n_queries;
            let scale = 1.0 / (hd as f64).sqrt();
            let logits_of = |k: &dyn Fn(usize, usize, &[f32]) -> f64| {
                let mut l = vec![0f64; n * heads * tokens];
                for i in 0..n {
                    for head in 0..heads {
                        let q = &c.q[i * w + head * hd..][..hd];
                        for t in 0..tokens {
                            l[(i * heads + head) * tokens + t] = k(t, head, q) * scale;
                        }
                    }
                }
                l
            };
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| x as f64 * y as f64)
                    .sum::<f64>()
            };
            // MSE at b bits.
            let kb = code(bits);
            let l = logits_of(&|t, head, q| dot(q, &kb[t * w + head * hd..][..hd]));
            mse_err += rel(&attend_logits(&l, &c.v, n, tokens, h), &exact);
            // prod: (b − 1)-bit MSE (b = 1: none) plus QJL of the residual.
            let kb1 = if bits > 1 {
                code(bits - 1)
            } else {
                vec![0.0; centred.len()]
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
            let s: Vec<f32> = (0..hd * hd)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let project =
                |x: &[f32]| -> Vec<f64> { (0..hd).map(|r| dot(&s[r * hd..][..hd], x)).collect() };
            let sketch: Vec<(Vec<f64>, f64)> = (0..tokens * heads)
                .map(|u| {
                    let (t, head) = (u / heads, u % heads);
                    let r: Vec<f32> = (0..hd)
                        .map(|j| centred[t * w + head * hd + j] - kb1[t * w + head * hd + j])
                        .collect();
                    let norm = half::f16::from_f64(dot(&r, &r).sqrt()).to_f64();
                    (project(&r).iter().map(|x| x.signum()).collect(), norm)
                })
                .collect();
            let c_qjl = (std::f64::consts::PI / 2.0).sqrt() / hd as f64;
            let l = logits_of(&|t, head, q| {
                let (sg, norm) = &sketch[t * heads + head];
                let sq = project(q);
                dot(q, &kb1[t * w + head * hd..][..hd])
                    + c_qjl * norm * sq.iter().zip(sg).map(|(a, b)| a * b).sum::<f64>()
            });
            prod_err += rel(&attend_logits(&l, &c.v, n, tokens, h), &exact);
        }
        println!("| {bits} | {:.4} | {:.4} |", mse_err / 2.0, prod_err / 2.0);
    }
}

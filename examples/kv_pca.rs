//! Does a per-model basis beat the data-oblivious rotation? An oracle test:
//! each head's keys are expressed in their own principal directions
//! (PCA of the very cache being coded, so the most a basis computed once
//! per model could give), the strongest `m` directions split into their
//! own vector, and the codec allocates the bits; against the default
//! (random rotation of the whole head) at equal bits, the basis itself not
//! counted. The codec is rotation-invariant inside a vector, so a basis
//! can only help through such a split.
//!
//! ```text
//! cargo run --release --example kv_pca -- [--tokens 1024] [--heads 16]
//! ```

use turboquant3d::kv::attention::Heads;
use turboquant3d::kv::basis::eigenvectors;
use turboquant3d::kv::codec::{
    Budget, KvConfig, LayerIn, budget_bits, channel_mean, compress_layer,
};
use turboquant3d::kv::kivi;
use turboquant3d::kv::metrics::attention_error;
use turboquant3d::kv::synth::{SynthCache, SynthConfig, cache};

#[path = "common/args.rs"]
mod args;
use args::arg;

/// Per head: y = Uᵀ(x − μ) (forward) or x = U·y + μ (back).
fn transform(
    x: &[f32],
    rows: usize,
    h: Heads,
    bases: &[Vec<f64>],
    mean: &[f32],
    forward: bool,
) -> Vec<f32> {
    let (w, d) = (h.width(), h.head_dim);
    let mut out = vec![0f32; x.len()];
    for r in 0..rows {
        for head in 0..h.heads {
            let u = &bases[head];
            let xi = &x[r * w + head * d..][..d];
            for j in 0..d {
                let mut s = 0f64;
                for k in 0..d {
                    s += if forward {
                        u[k * d + j] * (xi[k] - mean[head * d + k]) as f64
                    } else {
                        u[j * d + k] * xi[k] as f64
                    };
                }
                out[r * w + head * d + j] = if forward {
                    s as f32
                } else {
                    s as f32 + mean[head * d + j]
                };
            }
        }
    }
    out
}

/// `c` is the cache coded; `calib` (same model, other tokens) gives the
/// basis.
fn run(
    c: &SynthCache,
    calib: &SynthCache,
    bpe: f64,
    pca: Option<usize>,
    outliers: usize,
    queries: bool,
) -> f64 {
    let (t_n, h) = (c.tokens, c.heads);
    let (w, d) = (h.width(), h.head_dim);
    let n = (t_n * w) as u64;
    let mean = channel_mean(&c.k, t_n, w);
    let zero = vec![0f32; w];
    let (k_in, q_in, bases) = match pca {
        Some(_) => {
            let bases: Vec<Vec<f64>> = (0..h.heads)
                .map(|head| {
                    let mut cov = vec![0f64; d * d];
                    let cm = channel_mean(&calib.k, calib.tokens, w);
                    for t in 0..calib.tokens {
                        let x = &calib.k[t * w + head * d..][..d];
                        for i in 0..d {
                            for j in 0..d {
                                cov[i * d + j] += (x[i] - cm[head * d + i]) as f64
                                    * (x[j] - cm[head * d + j]) as f64;
                            }
                        }
                    }
                    eigenvectors(cov, d)
                })
                .collect();
            let k = transform(&c.k, t_n, h, &bases, &mean, true);
            let q = transform(&c.q, c.n_queries, h, &bases, &zero, true);
            (k, q, Some(bases))
        }
        None => (c.k.clone(), c.q.clone(), None),
    };
    let cfg = KvConfig {
        outliers,
        centre_keys: bases.is_none(),
        ..KvConfig::default()
    };
    let input = LayerIn {
        k: Some(&k_in),
        v: Some(&c.v),
        q: queries.then_some(q_in.as_slice()),
        tokens: t_n,
        heads: h,
    };
    let out = compress_layer(&input, &cfg, Budget::Joint(budget_bits(2 * n, bpe))).unwrap();
    let mut kh = out.k.unwrap().decode().unwrap();
    if let Some(b) = &bases {
        kh = transform(&kh, t_n, h, b, &mean, false);
    }
    let vh = out.v.unwrap().decode().unwrap();
    attention_error(&c.q, &c.k, &c.v, &kh, &vh, t_n, h, 8)
        .unwrap()
        .output_rel
}

fn main() {
    let tokens: usize = arg("--tokens", 1024);
    let heads: usize = arg("--heads", 16);
    // Each seed is one model: a cache of 2T tokens, the first T coded, the
    // last T the calibration the basis comes from (held out).
    let split = |c: SynthCache| -> (SynthCache, SynthCache) {
        let w = c.heads.width();
        let mut a = c.clone();
        let mut b = c;
        a.tokens = tokens;
        a.k.truncate(tokens * w);
        a.v.truncate(tokens * w);
        b.k.drain(..tokens * w);
        b.v.drain(..tokens * w);
        b.tokens = tokens;
        (a, b)
    };
    let caches: Vec<(SynthCache, SynthCache)> = (1..=2)
        .map(|s| split(cache(&SynthConfig::new(2 * tokens, heads, 64, s)).unwrap()))
        .collect();
    let oracle = std::env::args().any(|a| a == "--oracle");
    println!(
        "attention-output error, {tokens} tokens × {heads} heads × 64, mean of 2 seeds; basis from {} (not counted)",
        if oracle {
            "the coded tokens (oracle)"
        } else {
            "another {tokens} tokens of the same model"
        }
    );
    println!(
        "| bits | queries | KIVI | default | outliers 8 (channels) | PCA, top 8 split | PCA, top 16 split |"
    );
    println!("|---|---|---|---|---|---|---|");
    for bits in [2u32, 3, 4] {
        let bpe = kivi::bits_per_element(bits, 128, tokens, heads * 64, true);
        for queries in [false, true] {
            let mean = |f: &dyn Fn(&SynthCache, &SynthCache) -> f64| {
                caches
                    .iter()
                    .map(|(c, calib)| f(c, if oracle { c } else { calib }))
                    .sum::<f64>()
                    / caches.len() as f64
            };
            let kv = mean(&|c, _| {
                let w = c.heads.width();
                let k = kivi::quantize_keys(&c.k, tokens, w, bits, 128).unwrap();
                let v = kivi::quantize_values(&c.v, tokens, w, bits, 128).unwrap();
                attention_error(&c.q, &c.k, &c.v, &k.data, &v.data, tokens, c.heads, 8)
                    .unwrap()
                    .output_rel
            });
            println!(
                "| {bpe:.2} | {} | {kv:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
                if queries { "yes" } else { "no" },
                mean(&|c, b| run(c, b, bpe, None, 0, queries)),
                mean(&|c, b| run(c, b, bpe, None, 8, queries)),
                mean(&|c, b| run(c, b, bpe, Some(8), 8, queries)),
                mean(&|c, b| run(c, b, bpe, Some(16), 16, queries)),
            );
        }
    }
}

//! The KV codec's choices against KIVI at equal bits on synthetic caches
//! (`kv::synth`): attention-output error, logit error and top-8 agreement
//! over the cache's own queries.
//!
//! ```text
//! cargo run --release --example kv_compare -- [--tokens 1024] [--heads 16] [--seeds 3]
//! ```

use turboquant3d::kv::attention::Heads;
use turboquant3d::kv::codec::{
    Budget, KvConfig, LayerIn, Mode, Weighting, budget_bits, compress_layer,
};
use turboquant3d::kv::metrics::{AttentionError, attention_error};
use turboquant3d::kv::synth::{SynthConfig, cache};
use turboquant3d::kv::{kivi, synth::SynthCache};

#[path = "common/args.rs"]
mod args;
use args::arg;

fn ours(c: &SynthCache, cfg: &KvConfig, bpe: f64, queries: bool) -> (AttentionError, f64) {
    let n = (c.tokens * c.heads.width()) as u64;
    let input = LayerIn {
        k: Some(&c.k),
        v: Some(&c.v),
        q: queries.then_some(c.q.as_slice()),
        tokens: c.tokens,
        heads: c.heads,
    };
    let out = compress_layer(&input, cfg, Budget::Joint(budget_bits(2 * n, bpe))).unwrap();
    let (k, v) = (out.k.unwrap(), out.v.unwrap());
    let spent = 8.0 * (k.payload_bytes() + v.payload_bytes()) as f64 / (2 * n) as f64;
    let (kh, vh) = (k.decode().unwrap(), v.decode().unwrap());
    let e = attention_error(&c.q, &c.k, &c.v, &kh, &vh, c.tokens, c.heads, 8).unwrap();
    if std::env::var("SPLIT").is_ok() {
        let ek = attention_error(&c.q, &c.k, &c.v, &kh, &c.v, c.tokens, c.heads, 8).unwrap();
        let ev = attention_error(&c.q, &c.k, &c.v, &c.k, &vh, c.tokens, c.heads, 8).unwrap();
        println!(
            "      K only {:.4}, V only {:.4}; K bits {:.3} V bits {:.3}",
            ek.output_rel,
            ev.output_rel,
            8.0 * k.payload_bytes() as f64 / n as f64,
            8.0 * v.payload_bytes() as f64 / n as f64
        );
    }
    (e, spent)
}

fn main() {
    let tokens: usize = arg("--tokens", 1024);
    let heads: usize = arg("--heads", 16);
    let seeds: u64 = arg("--seeds", 2);
    let h = Heads {
        heads,
        head_dim: 64,
    };
    let w = h.width();
    let caches: Vec<SynthCache> = (1..=seeds)
        .map(|s| cache(&SynthConfig::new(tokens, heads, 64, s)).unwrap())
        .collect();
    let base = KvConfig::default();
    let variants: Vec<(&str, KvConfig, bool)> = vec![
        (
            "TQ whole, plain",
            KvConfig {
                mode: Mode::Whole,
                centre_keys: false,
                weighting: Weighting::Uniform,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ whole, centred",
            KvConfig {
                mode: Mode::Whole,
                weighting: Weighting::Uniform,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, plain",
            KvConfig {
                centre_keys: false,
                weighting: Weighting::Uniform,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, centred",
            KvConfig {
                weighting: Weighting::Uniform,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, centred, flat",
            KvConfig {
                weighting: Weighting::Flat,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, centred, flat, 1 sink",
            KvConfig {
                weighting: Weighting::Flat,
                sinks: 1,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, centred, energy, 1 sink",
            KvConfig {
                weighting: Weighting::Uniform,
                sinks: 1,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, centred, energy, 4 sinks",
            KvConfig {
                weighting: Weighting::Uniform,
                sinks: 4,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ head, centred, energy, 1 sink, outliers 16",
            KvConfig {
                weighting: Weighting::Uniform,
                sinks: 1,
                outliers: 16,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ whole, centred, energy, 1 sink",
            KvConfig {
                mode: Mode::Whole,
                weighting: Weighting::Uniform,
                sinks: 1,
                ..base.clone()
            },
            false,
        ),
        ("TQ head, centred, queries", base.clone(), true),
        (
            "TQ head, centred, outliers 16, queries",
            KvConfig {
                outliers: 16,
                ..base.clone()
            },
            true,
        ),
        (
            "TQ head, centred, outliers 16, keys-as-queries",
            KvConfig {
                outliers: 16,
                ..base.clone()
            },
            false,
        ),
        (
            "TQ whole, centred, queries",
            KvConfig {
                mode: Mode::Whole,
                ..base.clone()
            },
            true,
        ),
    ];
    println!(
        "{tokens} tokens × {heads} heads × 64, {seeds} seeds; output rel / logit rel / top-8, mean over seeds"
    );
    for bits in [2u32, 3, 4] {
        let (b, g) = (bits, 128);
        let bpe = kivi::bits_per_element(b, g, tokens, w, true);
        let mut acc = [0.0f64; 3];
        for c in &caches {
            let kk = kivi::quantize_keys(&c.k, tokens, w, b, g).unwrap();
            let kv = kivi::quantize_values(&c.v, tokens, w, b, g).unwrap();
            let e = attention_error(&c.q, &c.k, &c.v, &kk.data, &kv.data, tokens, h, 8).unwrap();
            if std::env::var("SPLIT").is_ok() {
                let ek = attention_error(&c.q, &c.k, &c.v, &kk.data, &c.v, tokens, h, 8).unwrap();
                let ev = attention_error(&c.q, &c.k, &c.v, &c.k, &kv.data, tokens, h, 8).unwrap();
                println!(
                    "      KIVI K only {:.4}, V only {:.4}",
                    ek.output_rel, ev.output_rel
                );
            }
            acc[0] += e.output_rel;
            acc[1] += e.logit_rmse_rel;
            acc[2] += e.topk_agreement;
        }
        let s = seeds as f64;
        println!("\n{bpe:.3} bits per element");
        println!(
            "  {:<48} {:.4} / {:.4} / {:.3}",
            format!("KIVI {b}-bit g{g}"),
            acc[0] / s,
            acc[1] / s,
            acc[2] / s
        );
        for (name, cfg, queries) in &variants {
            let mut acc = [0.0f64; 4];
            for c in &caches {
                let (e, spent) = ours(c, cfg, bpe, *queries);
                acc[0] += e.output_rel;
                acc[1] += e.logit_rmse_rel;
                acc[2] += e.topk_agreement;
                acc[3] += spent;
            }
            println!(
                "  {:<48} {:.4} / {:.4} / {:.3}   ({:.3} bpe)",
                name,
                acc[0] / s,
                acc[1] / s,
                acc[2] / s,
                acc[3] / s
            );
        }
    }
}

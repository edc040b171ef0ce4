//! KV-cache encode and decode throughput on the CPU path: a cache of
//! `--layers` × (K, V) × `--tokens` × `--width` f32 values, heads of 64,
//! at `--bits` per element (joint K/V budget), median of `--runs`.
//!
//! ```text
//! cargo run --release --example kv_bench -- --layers 24 --tokens 1536 --width 1024 --bits 4.25
//! ```
//!
//! The data is Gaussian with a per-channel offset on the keys (the codec's
//! speed does not depend on the values; its accuracy is measured by
//! `tq3d kv eval` and the tests).

use std::time::Instant;

use rayon::prelude::*;
use turboquant3d::kv::attention::Heads;
use turboquant3d::kv::codec::{
    Budget, KvConfig, LayerIn, Mode, Weighting, budget_bits, compress_layer,
};

#[path = "common/args.rs"]
mod args;
use args::arg;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Sum of two uniforms: cheap, zero-mean, bell-ish.
            let a = (s & 0xFFFF) as f32 / 65536.0 + ((s >> 16) & 0xFFFF) as f32 / 65536.0;
            a - 1.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let layers: usize = arg("--layers", 24);
    let tokens: usize = arg("--tokens", 1536);
    let width: usize = arg("--width", 1024);
    let bits: f64 = arg("--bits", 4.25);
    let runs: usize = arg("--runs", 5);
    let heads = Heads {
        heads: width / 64,
        head_dim: 64,
    };
    let n = tokens * width;
    let cache: Vec<(Vec<f32>, Vec<f32>)> = (0..layers)
        .map(|l| {
            let mut k = data(n, 2 * l as u64 + 1);
            for (i, x) in k.iter_mut().enumerate() {
                *x += ((i % width) as f32 * 0.1).sin();
            }
            (k, data(n, 2 * l as u64 + 2))
        })
        .collect();
    let gb = (2 * layers * n * 4) as f64 / 1e9;
    println!(
        "cache: {layers} layers × (K, V) × {tokens} × {width} f32 = {:.0} MB, {} threads, {bits} bits per element",
        gb * 1e3,
        rayon::current_num_threads()
    );
    let queries: Vec<f32> = data(tokens * width, 99);
    let runs_of = [
        (
            "default: per head, energy weights, 4 sinks per head",
            Mode::PerHead,
            Weighting::Attention,
            false,
        ),
        (
            "per head, attention weights from 64 of 1536 queries",
            Mode::PerHead,
            Weighting::Attention,
            true,
        ),
        (
            "per head, flat weights (uniform widths)",
            Mode::PerHead,
            Weighting::Flat,
            false,
        ),
        (
            "whole width, energy weights",
            Mode::Whole,
            Weighting::Uniform,
            false,
        ),
    ];
    for (name, mode, weighting, with_q) in runs_of {
        let cfg = KvConfig {
            mode,
            weighting,
            ..KvConfig::default()
        };
        let budget = Budget::Joint(budget_bits(2 * n as u64, bits));
        let mut enc_t = Vec::new();
        let mut dec_t = Vec::new();
        let mut bytes = 0u64;
        for _ in 0..runs {
            let t = Instant::now();
            let coded: Vec<_> = cache
                .par_iter()
                .map(|(k, v)| {
                    let input = LayerIn {
                        k: Some(k),
                        v: Some(v),
                        q: with_q.then_some(queries.as_slice()),
                        tokens,
                        heads,
                    };
                    compress_layer(&input, &cfg, budget).expect("layer")
                })
                .collect();
            enc_t.push(t.elapsed().as_secs_f64());
            bytes = coded
                .iter()
                .map(|l| {
                    l.k.as_ref().map_or(0, |c| c.payload_bytes())
                        + l.v.as_ref().map_or(0, |c| c.payload_bytes())
                })
                .sum();
            let t = Instant::now();
            let total: usize = coded
                .par_iter()
                .map(|l| {
                    l.k.as_ref().expect("k").decode().expect("k").len()
                        + l.v.as_ref().expect("v").decode().expect("v").len()
                })
                .sum();
            assert_eq!(total, 2 * layers * n);
            dec_t.push(t.elapsed().as_secs_f64());
        }
        let (e, d) = (median(enc_t), median(dec_t));
        println!(
            "{name}: encode {e:.3} s ({:.2} GB/s of f32), decode {d:.3} s ({:.2} GB/s); {:.3} bits per element",
            gb / e,
            gb / d,
            bytes as f64 * 8.0 / (2 * layers * n) as f64
        );
    }
}

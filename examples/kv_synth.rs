//! Writes a synthetic KV cache (`kv::synth`: outlier channels, a shared key
//! offset, head energies spread 10×, correlated tokens, an attention sink)
//! as a safetensors file the way a PyTorch hook would dump one:
//! `layers.{l}.attn.{q,k,v}` of shape [tokens, heads, head_dim].
//!
//! ```text
//! cargo run --release --example kv_synth -- cache.safetensors [--layers 4] [--tokens 1024] [--heads 16] [--dtype f16]
//! tq3d kv eval cache.safetensors
//! ```
//!
//! `--half first|second` generates 2T tokens of the same model and keeps
//! the first or the last T: two caches of one model with disjoint tokens
//! (calibration for `tq3d kv basis`, and a cache to code with it).

use turboquant3d::kv::synth::{SynthConfig, cache};
use turboquant3d::kv::tensors::{Dtype, NamedTensor, TensorFile};

#[path = "common/args.rs"]
mod args;
use args::arg;

fn main() -> turboquant3d::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cache.safetensors".into());
    let layers: usize = arg("--layers", 4);
    let tokens: usize = arg("--tokens", 1024);
    let heads: usize = arg("--heads", 16);
    let head_dim: usize = arg("--head-dim", 64);
    let queries: usize = arg("--queries", 64);
    let dtype = match arg("--dtype", "f32".to_string()).as_str() {
        "f16" => Dtype::F16,
        "bf16" => Dtype::BF16,
        _ => Dtype::F32,
    };
    let mut tensors = Vec::new();
    for l in 0..layers {
        let mut cfg = SynthConfig::new(tokens, heads, head_dim, 1000 + l as u64);
        cfg.n_queries = queries;
        let c = cache(&cfg)?;
        for (part, data, rows) in [
            ("q", &c.q, queries),
            ("k", &c.k, tokens),
            ("v", &c.v, tokens),
        ] {
            tensors.push(NamedTensor::from_f32(
                format!("layers.{l}.attn.{part}"),
                dtype.clone(),
                vec![rows, heads, head_dim],
                data,
            )?);
        }
    }
    let bytes = TensorFile::new(tensors).write(std::path::Path::new(&out))?;
    println!(
        "{out}: {layers} layers × (q, k, v), {tokens} tokens × {heads} heads × {head_dim}, {bytes} bytes"
    );
    Ok(())
}

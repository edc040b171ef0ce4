//! `tq3d kv eval`: a cache compressed in memory, judged by what attention
//! makes of it, beside KIVI-style quantisation at the same bits.
//!
//! Per key/value pair and layer: the normalised MSE of keys and values
//! against the exact codebook theory (Σ_u ‖x_u‖²·D(d_u, b_u) / Σ ‖x‖², from
//! the widths the allocator chose), and the attention-output, logit and
//! top-k errors ([`crate::kv::metrics`]) over the cache's own queries
//! where it has them, random ones otherwise.

use crate::codec::allocate::distortions;
use crate::kv::attention::Heads;
use crate::kv::cache::{CacheOptions, compress};
use crate::kv::coded::CodedTensor;
use crate::kv::file::Body;
use crate::kv::kivi;
use crate::kv::metrics::{attention_error, nmse};
use crate::kv::synth::random_queries;
use crate::kv::tensors::{TensorFile, assign, to_canonical};
use crate::{Error, Result};

/// Attention figures of one method on one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Bits per element spent (ours: the whole file's share; KIVI: its
    /// codes and group ranges).
    pub bits: f64,
    /// Key and value NMSE.
    pub nmse: (f64, f64),
    /// ‖O − Ô‖ / ‖O‖.
    pub output_rel: f64,
    /// Centred logit RMS error over centred logit RMS.
    pub logit_rel: f64,
    /// Mean top-k overlap.
    pub topk: f64,
}

/// One key/value pair's layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    /// The key tensor's name.
    pub keys: String,
    /// The value tensor's name.
    pub values: String,
    /// The layer.
    pub layer: usize,
    /// Whether the queries were the cache's own (else random).
    pub own_queries: bool,
    /// NMSE the theory predicts from the chosen widths (keys, values).
    pub theory: (f64, f64),
    /// The codec.
    pub ours: Figures,
    /// KIVI (bits, group) and its figures.
    pub kivi: ((u32, usize), Figures),
}

/// The whole evaluation at one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Bits per element asked.
    pub bits_asked: f64,
    /// Bits per element the file spends (raw tensors excluded).
    pub bits: f64,
    /// Coded bytes (the file less raw tensors).
    pub bytes: u64,
    /// The same elements as f32 and as f16, in bytes.
    pub f32_bytes: u64,
    /// As f16.
    pub f16_bytes: u64,
    /// Per pair and layer.
    pub rows: Vec<LayerRow>,
}

/// Σ_u ‖x_u‖²·D(d_u, b_u) / Σ ‖x‖² for a coded layer of `x` (the mean
/// taken off first where there is one).
pub fn theory_nmse(x: &[f32], c: &CodedTensor) -> Result<f64> {
    let w = c.plan.width();
    let units = c.plan.units();
    let per = units.len();
    let dist: std::collections::HashMap<usize, [f64; 9]> = c
        .plan
        .dims()
        .into_iter()
        .map(|d| Ok((d, distortions(d)?)))
        .collect::<Result<_>>()?;
    let (mut err, mut total) = (0.0f64, 0.0f64);
    for (u, &b) in c.widths.iter().enumerate() {
        let (t, k) = (u / per, u % per);
        let (h, ch) = units[k];
        let d = ch.len();
        let e: f64 = ch
            .iter()
            .map(|&c2| {
                let i = h * c.plan.head_dim + c2 as usize;
                let m = c.mean.as_ref().map_or(0.0, |m| m[i] as f64);
                (x[t * w + i] as f64 - m).powi(2)
            })
            .sum();
        err += e * dist[&d][b as usize];
    }
    for &v in x {
        total += (v as f64).powi(2);
    }
    Ok(if total > 0.0 { err / total } else { 0.0 })
}

/// The budget asked, per element (the mean of a split budget).
fn asked(opts: &CacheOptions) -> f64 {
    match opts.bits {
        crate::kv::cache::Bits::Joint(b) => b,
        crate::kv::cache::Bits::Split { keys, values } => (keys + values) / 2.0,
    }
}

/// Evenly spaced rows, at most `n` (the first included).
fn sample(x: &[f32], width: usize, n: usize) -> Vec<f32> {
    let rows = x.len() / width.max(1);
    let k = rows.min(n.max(1));
    (0..k)
        .flat_map(|i| {
            let r = i * rows / k;
            x[r * width..(r + 1) * width].iter().copied()
        })
        .collect()
}

/// Compresses `input` in memory at `opts` and evaluates every key/value
/// pair's layers with at most `queries` queries each and top-`topk`.
pub fn evaluate(
    input: &TensorFile,
    opts: &CacheOptions,
    queries: usize,
    topk: usize,
) -> Result<Evaluation> {
    let (file, report) = compress(input, opts, &|_, _| {})?;
    let tensors = &input.tensors;
    let assignment = assign(tensors, &opts.globs)?;
    let layout = opts.layout.as_ref();
    let coded = |name: &str| -> Option<&Vec<CodedTensor>> {
        file.entries.iter().find_map(|e| match &e.body {
            Body::Coded { layers, .. } if e.name == name => Some(layers),
            _ => None,
        })
    };
    let rotations = file.rotations()?;
    let mut rows = Vec::new();
    for g in &assignment.groups {
        let (Some(ki), Some(vi)) = (g.key, g.value) else {
            continue;
        };
        let (kt, vt) = (&tensors[ki], &tensors[vi]);
        let k = to_canonical(kt, layout, opts.heads)?;
        let v = to_canonical(vt, layout, opts.heads)?;
        let q = g
            .query
            .map(|qi| to_canonical(&tensors[qi], layout, opts.heads))
            .transpose()?;
        let (kc, vc) = match (coded(&kt.name), coded(&vt.name)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{:?} or {:?} is missing from the compressed file",
                    kt.name, vt.name
                )));
            }
        };
        let heads = Heads {
            heads: k.heads,
            head_dim: k.head_dim,
        };
        let (w, t_n) = (k.width(), k.tokens);
        let n = t_n * w;
        for l in 0..k.layers {
            let (kx, vx) = (&k.data[l * n..(l + 1) * n], &v.data[l * n..(l + 1) * n]);
            let (qs, own) = match &q {
                Some(q) => {
                    let m = q.tokens * w;
                    (sample(&q.data[l * m..(l + 1) * m], w, queries), true)
                }
                None => (
                    random_queries(queries.max(1), heads.heads, heads.head_dim, l as u64)?,
                    false,
                ),
            };
            let mut kh = kc[l].decode_with(&rotations)?;
            if let Some(b) = &opts.basis {
                b.apply_from(&kt.name, l, 1, &mut kh, t_n, false)?;
            }
            let vh = vc[l].decode_with(&rotations)?;
            let e = attention_error(&qs, kx, vx, &kh, &vh, t_n, heads, topk)?;
            let layer_bits =
                8.0 * (kc[l].payload_bytes() + vc[l].payload_bytes()) as f64 / (2 * n) as f64;
            let ours = Figures {
                bits: layer_bits,
                nmse: (nmse(kx, &kh, t_n, w)?, nmse(vx, &vh, t_n, w)?),
                output_rel: e.output_rel,
                logit_rel: e.logit_rmse_rel,
                topk: e.topk_agreement,
            };
            let (b, grp) = kivi::at_bits(asked(opts), t_n, w)?;
            let kq = kivi::quantize_keys(kx, t_n, w, b, grp)?;
            let vq = kivi::quantize_values(vx, t_n, w, b, grp)?;
            let ek = attention_error(&qs, kx, vx, &kq.data, &vq.data, t_n, heads, topk)?;
            let theirs = Figures {
                bits: (kq.stored_bits + vq.stored_bits) as f64 / (2 * n) as f64,
                nmse: (nmse(kx, &kq.data, t_n, w)?, nmse(vx, &vq.data, t_n, w)?),
                output_rel: ek.output_rel,
                logit_rel: ek.logit_rmse_rel,
                topk: ek.topk_agreement,
            };
            rows.push(LayerRow {
                keys: kt.name.clone(),
                values: vt.name.clone(),
                layer: l,
                own_queries: own,
                theory: (
                    match &opts.basis {
                        // The basis is orthogonal: the error and energy of
                        // the centred keys are the same in it.
                        Some(b) => {
                            let mut y = kx.to_vec();
                            b.apply_from(&kt.name, l, 1, &mut y, t_n, true)?;
                            theory_nmse(&y, &kc[l])?
                        }
                        None => theory_nmse(kx, &kc[l])?,
                    },
                    theory_nmse(vx, &vc[l])?,
                ),
                ours,
                kivi: ((b, grp), theirs),
            });
        }
    }
    Ok(Evaluation {
        bits_asked: asked(opts),
        bits: report.bits_per_element(),
        bytes: report.coded_bytes(),
        f32_bytes: 4 * report.elements,
        f16_bytes: 2 * report.elements,
        rows,
    })
}

//! Attention over a key/value cache: `softmax(q·Kᵀ/√d_h)·V` per head.
//!
//! [`attend_exact`] is the plain reference over f32 tensors, the one every
//! compressed path is compared with. [`attend`] and [`logits`] compute the
//! same from a coded cache without decoding it: a query is rotated once per
//! key segment, `⟨q, k̂⟩ = s·⟨Πq, c[idx]⟩ + q·μ`, and values are summed in
//! the rotated basis and rotated back once per query and segment. They are
//! the CPU reference of `gpu::attention`.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::codec::codebook::Codebook;
use crate::kv::coded::{CodedTensor, Rotations};
use crate::{Error, Result};

/// The shape of an attention problem: `heads` heads of `head_dim`
/// channels; K and V are `tokens × heads·head_dim`, queries
/// `n_queries × heads·head_dim`, all row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Attention heads.
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
}

impl Heads {
    /// Channels per token.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn check(&self, what: &str, data: &[f32], rows: usize) -> Result<()> {
        if self.heads == 0 || self.head_dim == 0 {
            return Err(Error::Shape(
                "attention needs at least one head of one channel".into(),
            ));
        }
        if data.len() != rows * self.width() {
            return Err(Error::Shape(format!(
                "{what}: {rows} rows of width {} need {} values, got {}",
                self.width(),
                rows * self.width(),
                data.len()
            )));
        }
        Ok(())
    }
}

/// Softmax attention of every query over every token, per head, with no
/// mask: `out[i, h] = Σ_t p_{i,h,t} v[t, h]`, `p = softmax_t(q[i,h]·k[t,h]/√d_h)`.
/// Sums run in f64 in token order, so the result is a reference, not a
/// fast path.
pub fn attend_exact(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tokens: usize,
    heads: Heads,
) -> Result<Vec<f32>> {
    let w = heads.width();
    let n_q = q.len().checked_div(w).unwrap_or(0);
    heads.check("queries", q, n_q)?;
    heads.check("keys", k, tokens)?;
    heads.check("values", v, tokens)?;
    if tokens == 0 {
        return Err(Error::EmptyInput {
            what: "attention over no tokens".into(),
        });
    }
    let (hd, scale) = (heads.head_dim, 1.0 / (heads.head_dim as f64).sqrt());
    let mut out = vec![0f32; n_q * w];
    let mut logits = vec![0f64; tokens];
    let mut acc = vec![0f64; hd];
    for i in 0..n_q {
        for h in 0..heads.heads {
            let qi = &q[i * w + h * hd..i * w + (h + 1) * hd];
            let mut max = f64::NEG_INFINITY;
            for (t, l) in logits.iter_mut().enumerate() {
                let kt = &k[t * w + h * hd..t * w + (h + 1) * hd];
                *l = qi
                    .iter()
                    .zip(kt)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale;
                max = max.max(*l);
            }
            acc.fill(0.0);
            let mut total = 0.0;
            for (t, &l) in logits.iter().enumerate() {
                let p = (l - max).exp();
                total += p;
                let vt = &v[t * w + h * hd..t * w + (h + 1) * hd];
                for (a, &x) in acc.iter_mut().zip(vt) {
                    *a += p * x as f64;
                }
            }
            for (o, a) in out[i * w + h * hd..i * w + (h + 1) * hd]
                .iter_mut()
                .zip(&acc)
            {
                *o = (a / total) as f32;
            }
        }
    }
    Ok(out)
}

/// One segment of a head, as the attention from codes walks it.
struct Segment {
    /// Index of its unit within a token.
    unit: usize,
    /// Channels within the head, in the order of the unit's coordinates.
    channels: Vec<u32>,
    /// First position of its coordinates in the head's rotated layout
    /// (segments back to back in plan order).
    pos: usize,
    /// Π of its dimension, row-major.
    matrix: Arc<Vec<f32>>,
    /// Centroids by width (index b − 1).
    centroids: Vec<Option<Arc<Vec<f32>>>>,
}

/// A coded tensor unpacked to one code index per coordinate (u8, not
/// decoded values): `idx[t·width + h·head_dim + pos]`.
struct Unpacked<'a> {
    t: &'a CodedTensor,
    heads: Vec<Vec<Segment>>,
    idx: Vec<u8>,
}

impl<'a> Unpacked<'a> {
    fn new(what: &str, t: &'a CodedTensor, heads: Heads, rotations: &Rotations) -> Result<Self> {
        let plan = &t.plan;
        if plan.heads != heads.heads || plan.head_dim != heads.head_dim {
            return Err(Error::Shape(format!(
                "{what}: attention from codes needs per-head coding ({} heads × {}), the \
                 tensor is coded as {} × {} (decode whole-width tensors first)",
                heads.heads, heads.head_dim, plan.heads, plan.head_dim
            )));
        }
        t.validate()?;
        let units = plan.units();
        let per = units.len();
        let mut tables: HashMap<(usize, u8), Arc<Vec<f32>>> = HashMap::new();
        for (u, &w) in t.widths.iter().enumerate() {
            let d = units[u % per].1.len();
            if w > 0 && !tables.contains_key(&(d, w)) {
                tables.insert(
                    (d, w),
                    Arc::new(Codebook::get(d, w as u32)?.centroids_f32()),
                );
            }
        }
        let mut matrices: HashMap<usize, Arc<Vec<f32>>> = HashMap::new();
        for d in plan.dims() {
            matrices.insert(d, Arc::new(rotations.get(d)?.dense_matrix()));
        }
        let mut unit = 0;
        let mut segs = Vec::with_capacity(plan.heads);
        for head in &plan.segments {
            let mut pos = 0;
            let mut list = Vec::with_capacity(head.len());
            for ch in head {
                let d = ch.len();
                list.push(Segment {
                    unit,
                    channels: ch.clone(),
                    pos,
                    matrix: matrices
                        .get(&d)
                        .cloned()
                        .ok_or_else(|| Error::Shape(format!("{what}: no rotation for d = {d}")))?,
                    centroids: (1..=8u8).map(|b| tables.get(&(d, b)).cloned()).collect(),
                });
                unit += 1;
                pos += d;
            }
            segs.push(list);
        }
        let offsets = t.bit_offsets();
        let w = plan.width();
        let mut idx = vec![0u8; t.tokens * w];
        for (tok, row) in idx.chunks_mut(w).enumerate() {
            for (h, list) in segs.iter().enumerate() {
                for s in list {
                    let u = tok * per + s.unit;
                    let b = t.widths[u] as u64;
                    for j in 0..s.channels.len() {
                        row[h * plan.head_dim + s.pos + j] =
                            read_code(&t.codes, offsets[u] + j as u64 * b, b as u32);
                    }
                }
            }
        }
        Ok(Unpacked {
            t,
            heads: segs,
            idx,
        })
    }

    /// Unit `s` of token `tok` in head `h`: its scale, centroid table and
    /// code indices; `None` at width 0 (it contributes nothing).
    fn unit<'s>(
        &'s self,
        s: &'s Segment,
        tok: usize,
        h: usize,
    ) -> Option<(f64, &'s [f32], &'s [u8])> {
        let u = tok * self.t.units_per_token() + s.unit;
        let b = (self.t.widths[u] as usize).checked_sub(1)?;
        let c = s.centroids.get(b)?.as_ref()?;
        let plan = &self.t.plan;
        let at = tok * plan.width() + h * plan.head_dim + s.pos;
        let idx = self.idx.get(at..at + s.channels.len())?;
        Some((self.t.scales[u] as f64, c, idx))
    }
}

/// `Σ_r y[r]·c[idx[r]]`, an index past the table counting as 0.
fn dot_codes(y: &[f64], c: &[f32], idx: &[u8]) -> f64 {
    y.iter()
        .zip(idx)
        .map(|(&y, &i)| y * c.get(i as usize).copied().unwrap_or(0.0) as f64)
        .sum()
}

/// The `b`-bit code at stream bit `bit` (LSB-first, [`crate::packing`]).
fn read_code(codes: &[u8], bit: u64, b: u32) -> u8 {
    if b == 0 {
        return 0;
    }
    let i = (bit / 8) as usize;
    let lo = codes.get(i).copied().unwrap_or(0) as u16;
    let hi = codes.get(i + 1).copied().unwrap_or(0) as u16;
    (((lo | hi << 8) >> (bit % 8)) & ((1u16 << b) - 1)) as u8
}

/// The scaled logits `q·k̂/√d_h` of one query and head, over every token.
fn head_logits(qh: &[f32], k: &Unpacked<'_>, h: usize, heads: Heads) -> Vec<f64> {
    let segs = &k.heads[h];
    // Πq restricted to each segment's channels, in the rotated layout.
    let mut qrot = vec![0f64; heads.head_dim];
    for s in segs {
        let (d, m) = (s.channels.len(), &s.matrix);
        for r in 0..d {
            qrot[s.pos + r] = s
                .channels
                .iter()
                .enumerate()
                .map(|(i, &c)| m[r * d + i] as f64 * qh[c as usize] as f64)
                .sum();
        }
    }
    let qmu: f64 = k.t.mean.as_ref().map_or(0.0, |m| {
        let m = &m[h * heads.head_dim..(h + 1) * heads.head_dim];
        qh.iter().zip(m).map(|(&a, &b)| a as f64 * b as f64).sum()
    });
    let inv = 1.0 / (heads.head_dim as f64).sqrt();
    (0..k.t.tokens)
        .map(|tok| {
            let dot: f64 = segs
                .iter()
                .filter_map(|s| {
                    let (scale, c, idx) = k.unit(s, tok, h)?;
                    Some(scale * dot_codes(&qrot[s.pos..s.pos + idx.len()], c, idx))
                })
                .sum();
            (dot + qmu) * inv
        })
        .collect()
}

fn check_queries(q: &[f32], tokens: usize, heads: Heads) -> Result<usize> {
    let w = heads.width();
    let n_q = q.len().checked_div(w).unwrap_or(0);
    heads.check("queries", q, n_q)?;
    if tokens == 0 {
        return Err(Error::EmptyInput {
            what: "attention over no tokens".into(),
        });
    }
    Ok(n_q)
}

/// The scaled logits `q·k̂/√d_h` of every query, head and token straight
/// from the codes of `k` (`[n_queries, heads, tokens]`, row-major), with the
/// rotations of its seed. `k` must be coded per attention head.
pub fn logits(q: &[f32], k: &CodedTensor, heads: Heads) -> Result<Vec<f32>> {
    let n_q = check_queries(q, k.tokens, heads)?;
    let kr = Rotations::new(&k.plan.dims(), k.seed)?;
    let k = Unpacked::new("keys", k, heads, &kr)?;
    let (w, hd, tokens) = (heads.width(), heads.head_dim, k.t.tokens);
    let mut out = vec![0f32; n_q * heads.heads * tokens];
    out.par_chunks_mut(heads.heads * tokens.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            for h in 0..heads.heads {
                let qh = &q[i * w + h * hd..i * w + (h + 1) * hd];
                for (o, l) in row[h * tokens..(h + 1) * tokens]
                    .iter_mut()
                    .zip(head_logits(qh, &k, h, heads))
                {
                    *o = l as f32;
                }
            }
        });
    Ok(out)
}

/// Softmax attention of every query over a coded cache, per head, with no
/// mask, computed from the codes (the rotations of each tensor's seed):
/// the CPU reference of `gpu::attention`. K and V must be coded per
/// attention head (`plan.heads`, `plan.head_dim` equal to `heads`), with
/// any segments; their plans may differ. Sums run in f64.
pub fn attend(q: &[f32], k: &CodedTensor, v: &CodedTensor, heads: Heads) -> Result<Vec<f32>> {
    let n_q = check_queries(q, k.tokens, heads)?;
    if v.tokens != k.tokens {
        return Err(Error::Shape(format!(
            "keys have {} tokens, values {}",
            k.tokens, v.tokens
        )));
    }
    let kr = Rotations::new(&k.plan.dims(), k.seed)?;
    let vr = Rotations::new(&v.plan.dims(), v.seed)?;
    let ku = Unpacked::new("keys", k, heads, &kr)?;
    let vu = Unpacked::new("values", v, heads, &vr)?;
    let (w, hd) = (heads.width(), heads.head_dim);
    let mut out = vec![0f32; n_q * w];
    out.par_chunks_mut(w).enumerate().for_each(|(i, row)| {
        let mut acc = vec![0f64; hd];
        for h in 0..heads.heads {
            let qh = &q[i * w + h * hd..i * w + (h + 1) * hd];
            let l = head_logits(qh, &ku, h, heads);
            let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            acc.fill(0.0);
            let mut total = 0.0;
            for (tok, &lt) in l.iter().enumerate() {
                let p = (lt - max).exp();
                total += p;
                for s in &vu.heads[h] {
                    if let Some((scale, c, idx)) = vu.unit(s, tok, h) {
                        let ps = p * scale;
                        for (a, &i) in acc[s.pos..].iter_mut().zip(idx) {
                            *a += ps * c.get(i as usize).copied().unwrap_or(0.0) as f64;
                        }
                    }
                }
            }
            // Back from the rotated basis: x_i = Σ_r Π[r, i]·y_r.
            for s in &vu.heads[h] {
                let (d, m) = (s.channels.len(), &s.matrix);
                for (i, &c) in s.channels.iter().enumerate() {
                    let x: f64 = (0..d).map(|r| m[r * d + i] as f64 * acc[s.pos + r]).sum();
                    let c = h * hd + c as usize;
                    row[c] = (x / total) as f32 + v.mean.as_ref().map_or(0.0, |m| m[c]);
                }
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_returns_its_value_and_equal_logits_average() {
        let hs = Heads {
            heads: 2,
            head_dim: 2,
        };
        let q = [1.0, 0.0, 0.0, 1.0];
        let k = [0.3, 0.1, -2.0, 5.0];
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(attend_exact(&q, &k, &v, 1, hs).unwrap(), v);
        // Two tokens with the same key: the mean of their values.
        let k2 = [0.5, 0.5, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0];
        let v2 = [1.0, 0.0, 2.0, 2.0, 3.0, 4.0, 0.0, 0.0];
        let o = attend_exact(&q, &k2, &v2, 2, hs).unwrap();
        assert_eq!(o, vec![2.0, 2.0, 1.0, 1.0]);
    }
}

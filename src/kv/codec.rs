//! The KV codec: how a layer's keys and values are cut into units, how much
//! each unit's error shows in attention, and the widths that spend a bit
//! budget best (docs/THEORY.md §15).
//!
//! Per layer, given K and V (`tokens × heads·head_dim`) and optionally the
//! layer's queries:
//! 1. keys are centred: the per-channel mean μ is stored (f16) and
//!    subtracted, since softmax ignores q·μ;
//! 2. each coding head (one per attention head, or the whole width) may
//!    split its highest-RMS channels into a second segment;
//! 3. every unit gets a weight: how much one unit of its normalised error
//!    adds to the expected squared attention-output error, to first order;
//! 4. [`allocate_classes`] picks every unit's width under one budget, keys
//!    and values together (or each its own);
//! 5. [`CodedTensor::encode`] codes them.

use rayon::prelude::*;

use crate::codec::allocate::{Class, MAX_BITS, allocate_classes};
use crate::kv::attention::Heads;
use crate::kv::coded::{CodedTensor, Plan};
use crate::{Error, Result};

/// Bits of a unit's stored scale (f16).
pub const SCALE_BITS: u32 = 16;

/// The default [`KvConfig::attention_floor`].
pub const FLOOR: f64 = 0.2;

/// How rows are cut into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One vector per attention head (d = head_dim): attention can run on
    /// the codes, and each head gets its own scale.
    PerHead,
    /// One vector per token over the whole width (d = heads·head_dim): the
    /// scale costs least, but attention needs the decoded cache.
    Whole,
}

/// How units are weighted for the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Every element's squared error alike: v_u = ‖x_u‖², so the
    /// allocation follows the norms (uniform attention).
    Uniform,
    /// Every unit's relative error alike: v_u = d_u, so every unit of a
    /// dimension gets the same width (plain TurboQuant).
    Flat,
    /// The first-order attention-output error, with the layer's queries
    /// where given; [`Weighting::Uniform`] (and sink protection) without.
    /// Keys standing in for the queries were measured and lose badly: they
    /// starve the tokens real queries attend to (docs/THEORY.md §15).
    Attention,
}

/// The codec's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KvConfig {
    /// How rows are cut into vectors.
    pub mode: Mode,
    /// Subtract and store the per-channel mean of the keys.
    pub centre_keys: bool,
    /// Channels per coding head split into an outlier segment (0: none).
    pub outliers: usize,
    /// The keys' split instead of `outliers` (a per-model basis sets it to
    /// its leading directions).
    pub key_split: Option<usize>,
    /// How units are weighted.
    pub weighting: Weighting,
    /// Queries used for the weights, at most; evenly spaced.
    pub weight_queries: usize,
    /// Share of the attention mass spread evenly over the tokens before
    /// weighting, so that tokens the sampled queries ignore still get
    /// some bits (0: trust the queries fully).
    pub attention_floor: f64,
    /// Without queries: per attention head, this many tokens that look
    /// like attention sinks (the largest centred key norm over value norm)
    /// are coded at the widest width.
    pub sinks: usize,
    /// Seed of every rotation.
    pub seed: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            mode: Mode::PerHead,
            centre_keys: true,
            outliers: 0,
            key_split: None,
            weighting: Weighting::Attention,
            weight_queries: 64,
            attention_floor: FLOOR,
            sinks: 4,
            seed: 0,
        }
    }
}

/// The payload bits a layer may spend (codes, scales, widths, means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Keys and values share one budget.
    Joint(u64),
    /// Keys and values each their own.
    Split {
        /// Bits for the keys.
        keys: u64,
        /// Bits for the values.
        values: u64,
    },
}

/// One layer's input: K and/or V (`tokens × heads·head_dim`), and queries
/// (`n × heads·head_dim`) used as weights only.
#[derive(Debug, Clone, Copy)]
pub struct LayerIn<'a> {
    /// Keys.
    pub k: Option<&'a [f32]>,
    /// Values.
    pub v: Option<&'a [f32]>,
    /// Queries.
    pub q: Option<&'a [f32]>,
    /// Rows of K and V.
    pub tokens: usize,
    /// The attention heads.
    pub heads: Heads,
}

/// One layer, coded.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOut {
    /// Keys.
    pub k: Option<CodedTensor>,
    /// Values.
    pub v: Option<CodedTensor>,
}

/// The plan of a tensor: coding heads per the mode, with the `outliers`
/// highest-RMS channels of each (after `mean`) split off.
pub fn plan(
    x: &[f32],
    tokens: usize,
    heads: Heads,
    mode: Mode,
    outliers: usize,
    mean: Option<&[f32]>,
) -> Result<Plan> {
    let (ch, hd) = match mode {
        Mode::PerHead => (heads.heads, heads.head_dim),
        Mode::Whole => (1, heads.width()),
    };
    if outliers == 0 {
        return Plan::uniform(ch, hd);
    }
    if outliers < 2 || outliers + 2 > hd {
        return Err(Error::InvalidArgument(format!(
            "{outliers} outlier channels per vector of {hd}: need 0 or 2..={}",
            hd.saturating_sub(2)
        )));
    }
    let w = heads.width();
    let mut energy = vec![0f64; w];
    for row in x.chunks_exact(w).take(tokens) {
        for (c, (e, &v)) in energy.iter_mut().zip(row).enumerate() {
            let v = v as f64 - mean.map_or(0.0, |m| m[c] as f64);
            *e += v * v;
        }
    }
    let segments = (0..ch)
        .map(|h| {
            let mut order: Vec<u32> = (0..hd as u32).collect();
            // Highest energy first; ties to the lower channel.
            order.sort_by(|&a, &b| {
                energy[h * hd + b as usize]
                    .total_cmp(&energy[h * hd + a as usize])
                    .then(a.cmp(&b))
            });
            let mut top = order[..outliers].to_vec();
            let mut rest = order[outliers..].to_vec();
            top.sort_unstable();
            rest.sort_unstable();
            vec![rest, top]
        })
        .collect();
    Plan::new(ch, hd, segments)
}

/// Per-channel mean over the tokens (f64 sums in token order).
pub fn channel_mean(x: &[f32], tokens: usize, width: usize) -> Vec<f32> {
    let mut s = vec![0f64; width];
    for row in x.chunks_exact(width).take(tokens) {
        for (a, &v) in s.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    s.iter()
        .map(|&a| (a / tokens.max(1) as f64) as f32)
        .collect()
}

/// What attention makes of each token, per attention head, from a sample of
/// queries: `pv[t·H + h] = Σ_i p_iht²` and, per query, the key-error factor
/// `pk[(h·n + i)·T + t] = p_iht²·‖v_th − o_ih‖² / d_h`.
struct Attention {
    queries: Vec<f32>,
    n: usize,
    pv: Vec<f64>,
    pk: Vec<f64>,
}

fn sample_rows(x: &[f32], rows: usize, width: usize, at_most: usize) -> (Vec<f32>, usize) {
    let n = rows.min(at_most.max(1));
    let mut out = Vec::with_capacity(n * width);
    for i in 0..n {
        // Evenly spaced, first row included.
        let r = (i as u128 * rows as u128 / n as u128) as usize;
        out.extend_from_slice(&x[r * width..(r + 1) * width]);
    }
    (out, n)
}

/// Σ a_j·b_j in eight lanes (vectorises; a fixed order, so deterministic).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn attention(input: &LayerIn<'_>, cfg: &KvConfig) -> Option<Attention> {
    let heads = input.heads;
    let (w, hd, t_n, hn) = (heads.width(), heads.head_dim, input.tokens, heads.heads);
    let (q, n) = sample_rows(input.q?, input.q?.len() / w, w, cfg.weight_queries);
    let k = input.k;
    let scale = 1.0 / (hd as f64).sqrt();
    // Per head: p (n × T), then the two factors.
    let per_head: Vec<(Vec<f64>, Vec<f64>)> = (0..hn)
        .into_par_iter()
        .map(|h| {
            let mut pv = vec![0f64; t_n];
            let mut pk = vec![0f64; n * t_n];
            let mut p = vec![0f64; t_n];
            let mut o = vec![0f32; hd];
            let mut diff = vec![0f32; hd];
            for i in 0..n {
                let qi = &q[i * w + h * hd..i * w + (h + 1) * hd];
                match k {
                    Some(k) => {
                        let mut max = f64::NEG_INFINITY;
                        for (t, pt) in p.iter_mut().enumerate() {
                            let kt = &k[t * w + h * hd..t * w + (h + 1) * hd];
                            *pt = dot(qi, kt) as f64 * scale;
                            max = max.max(*pt);
                        }
                        let mut total = 0.0;
                        for pt in p.iter_mut() {
                            *pt = (*pt - max).exp();
                            total += *pt;
                        }
                        for pt in p.iter_mut() {
                            *pt /= total;
                        }
                    }
                    None => p.fill(1.0 / t_n as f64),
                }
                // A floor for queries the sample does not hold: no token's
                // share falls below floor/T.
                let floor = cfg.attention_floor.clamp(0.0, 1.0);
                for pt in p.iter_mut() {
                    *pt = (1.0 - floor) * *pt + floor / t_n as f64;
                }
                for (a, &pt) in pv.iter_mut().zip(&p) {
                    *a += pt * pt;
                }
                let row = &mut pk[i * t_n..(i + 1) * t_n];
                match input.v {
                    Some(v) => {
                        o.fill(0.0);
                        for (t, &pt) in p.iter().enumerate() {
                            let vt = &v[t * w + h * hd..t * w + (h + 1) * hd];
                            for (a, &x) in o.iter_mut().zip(vt) {
                                *a += pt as f32 * x;
                            }
                        }
                        for (t, &pt) in p.iter().enumerate() {
                            let vt = &v[t * w + h * hd..t * w + (h + 1) * hd];
                            for ((d, &x), &m) in diff.iter_mut().zip(vt).zip(&o) {
                                *d = x - m;
                            }
                            row[t] = pt * pt * dot(&diff, &diff) as f64 / hd as f64;
                        }
                    }
                    None => {
                        for (r, &pt) in row.iter_mut().zip(&p) {
                            *r = pt * pt / hd as f64;
                        }
                    }
                }
            }
            (pv, pk)
        })
        .collect();
    // pv[t·H + h]; pk[(h·n + i)·T + t].
    let mut pv = vec![0f64; t_n * hn];
    let mut pk = Vec::with_capacity(n * t_n * hn);
    for (h, (a, b)) in per_head.into_iter().enumerate() {
        for t in 0..t_n {
            pv[t * hn + h] = a[t];
        }
        pk.extend(b);
    }
    Some(Attention {
        queries: q,
        n,
        pv,
        pk,
    })
}

/// Each unit's weight v (its error ‖x − x̂‖² = ‖x‖²·D(d, b) times v is its
/// expected share of the squared attention-output error), unit order.
fn unit_weights(
    x: &[f32],
    mean: Option<&[f32]>,
    plan: &Plan,
    tokens: usize,
    heads: Heads,
    att: Option<&Attention>,
    key: bool,
) -> Vec<f64> {
    let (w, hd) = (heads.width(), heads.head_dim);
    let units = plan.units();
    let per = units.len();
    // Global channels of each unit.
    let chans: Vec<Vec<usize>> = units
        .iter()
        .map(|(h, c)| c.iter().map(|&c| h * plan.head_dim + c as usize).collect())
        .collect();
    // Per unit of a token, per head it touches: Σ_{c ∈ S∩h} q_ic² for each
    // sampled query (keys only).
    let qs: Vec<Vec<(usize, Vec<f64>)>> = match (att, key) {
        (Some(att), true) => chans
            .iter()
            .map(|ch| {
                let mut by_head: Vec<(usize, Vec<f64>)> = Vec::new();
                for &c in ch {
                    let h = c / hd;
                    if by_head.last().is_none_or(|(g, _)| *g != h) {
                        by_head.push((h, vec![0.0; att.n]));
                    }
                    if let Some((_, e)) = by_head.last_mut() {
                        for (i, e) in e.iter_mut().enumerate() {
                            *e += (att.queries[i * w + c] as f64).powi(2);
                        }
                    }
                }
                by_head
            })
            .collect(),
        _ => Vec::new(),
    };
    (0..tokens * per)
        .into_par_iter()
        .map(|u| {
            let (t, k) = (u / per, u % per);
            let ch = &chans[k];
            let row = &x[t * w..(t + 1) * w];
            let energy: f64 = ch
                .iter()
                .map(|&c| {
                    let v = row[c] as f64 - mean.map_or(0.0, |m| m[c] as f64);
                    v * v
                })
                .sum::<f64>();
            let Some(att) = att else {
                return energy;
            };
            let hn = heads.heads;
            let factor: f64 = if key {
                // Σ_h Σ_i pk_iht · Σ_{c ∈ S∩h} q_ic².
                qs[k]
                    .iter()
                    .map(|(h, e)| {
                        e.iter()
                            .enumerate()
                            .map(|(i, &e)| att.pk[(h * att.n + i) * tokens + t] * e)
                            .sum::<f64>()
                    })
                    .sum()
            } else {
                ch.iter().map(|&c| att.pv[t * hn + c / hd]).sum()
            };
            energy / ch.len() as f64 * factor
        })
        .collect()
}

/// Per attention head, the `n` tokens most like a sink: the largest
/// ‖k − μ‖ / ‖v‖ (real caches' sinks have the largest centred key and the
/// smallest value), or the largest ‖k − μ‖ without values. Pairs (token, head).
fn sink_tokens(input: &LayerIn<'_>, n: usize, centre: bool) -> Vec<(usize, usize)> {
    let Some(k) = input.k else {
        return Vec::new();
    };
    let heads = input.heads;
    let (w, hd, t_n) = (heads.width(), heads.head_dim, input.tokens);
    let mean = centre.then(|| channel_mean(k, t_n, w));
    let mut out = Vec::new();
    for h in 0..heads.heads {
        let r = h * hd..(h + 1) * hd;
        let mut score: Vec<(f64, usize)> = (0..t_n)
            .map(|t| {
                let kn: f64 = k[t * w..][r.clone()]
                    .iter()
                    .enumerate()
                    .map(|(j, &x)| {
                        (x as f64 - mean.as_ref().map_or(0.0, |m| m[h * hd + j] as f64)).powi(2)
                    })
                    .sum::<f64>()
                    .sqrt();
                let vn = input.v.map_or(1.0, |v| {
                    v[t * w..][r.clone()]
                        .iter()
                        .map(|&x| (x as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                });
                (kn / vn.max(1e-30), t)
            })
            .collect();
        score.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out.extend(score.iter().take(n).map(|&(_, t)| (t, h)));
    }
    out
}

/// Raises the weights of the units of each (token, head) in `sinks` above
/// every other unit's, so the allocator gives them the widest codes first.
fn protect(weights: &mut [f64], plan: &Plan, heads: Heads, sinks: &[(usize, usize)]) {
    if sinks.is_empty() {
        return;
    }
    let top = weights.iter().copied().fold(0.0f64, f64::max).max(1e-30) * 1e6;
    let units = plan.units();
    let per = units.len();
    for &(t, h) in sinks {
        for (k, (ch_head, ch)) in units.iter().enumerate() {
            // Does unit k of the token touch attention head h?
            let touches = ch
                .iter()
                .any(|&c| (ch_head * plan.head_dim + c as usize) / heads.head_dim == h);
            if touches {
                weights[t * per + k] = top;
            }
        }
    }
}

/// Bits of a tensor's payload that do not depend on the widths: the f16
/// mean, a nibble of width per unit, and at most 7 bits of stream padding.
fn fixed_bits(plan: &Plan, tokens: usize, mean: bool) -> u64 {
    let units = (tokens * plan.units_per_token()) as u64;
    8 * units.div_ceil(2) + if mean { 16 * plan.width() as u64 } else { 0 } + 7
}

/// Codes one layer under a budget of payload bits
/// ([`CodedTensor::payload_bytes`] × 8, which the result never exceeds).
pub fn compress_layer(input: &LayerIn<'_>, cfg: &KvConfig, budget: Budget) -> Result<LayerOut> {
    code_layer(input, cfg, budget, None)
}

/// The plan and mean of a coded tensor, reused for the tokens appended to it.
type Given = (Plan, Option<Vec<f32>>);

/// Appends a layer's new tokens (`input`: the new K and V rows only, and
/// queries if any) to `coded`, without touching the tokens already coded:
/// the new tokens get the existing plans and key mean, and widths of their
/// own under `budget` (payload bits of the new tokens: codes, scales and
/// width nibbles; the mean is already stored). The bytes equal coding all
/// tokens at once with the same plans, mean and widths; the plans (outlier
/// channels) and the mean are fixed by the first tokens coded
/// (docs/FORMAT.md, "Appending").
pub fn append_layer(
    coded: &mut LayerOut,
    input: &LayerIn<'_>,
    cfg: &KvConfig,
    budget: Budget,
) -> Result<()> {
    let given = [&coded.k, &coded.v].map(|c| c.as_ref().map(|c| (c.plan.clone(), c.mean.clone())));
    for (name, have, new) in [("keys", &coded.k, input.k), ("values", &coded.v, input.v)] {
        if have.is_some() != new.is_some() {
            return Err(Error::Shape(format!(
                "appending {name} to a layer that {} them",
                if have.is_some() { "has" } else { "has none of" }
            )));
        }
    }
    let more = code_layer(input, cfg, budget, Some(given))?;
    for (old, new) in [(&mut coded.k, more.k), (&mut coded.v, more.v)] {
        if let (Some(old), Some(new)) = (old.as_mut(), new) {
            old.append_coded(new)?;
        }
    }
    Ok(())
}

fn code_layer(
    input: &LayerIn<'_>,
    cfg: &KvConfig,
    budget: Budget,
    given: Option<[Option<Given>; 2]>,
) -> Result<LayerOut> {
    let heads = input.heads;
    let w = heads.width();
    let t_n = input.tokens;
    for (name, x) in [("keys", input.k), ("values", input.v)] {
        if let Some(x) = x
            && x.len() != t_n * w
        {
            return Err(Error::Shape(format!(
                "{name}: {t_n} tokens of width {w} need {} values, got {}",
                t_n * w,
                x.len()
            )));
        }
    }
    if let Some(q) = input.q
        && (w == 0 || q.len() % w != 0 || q.is_empty())
    {
        return Err(Error::Shape(format!(
            "queries: {} values are not whole rows of width {w}",
            q.len()
        )));
    }
    if t_n == 0 {
        return Err(Error::EmptyInput {
            what: "a layer with no tokens".into(),
        });
    }
    let att = match cfg.weighting {
        Weighting::Attention => attention(input, cfg),
        Weighting::Uniform | Weighting::Flat => None,
    };
    let sinks = match (input.q, cfg.sinks) {
        (None, n) if n > 0 => sink_tokens(input, n, cfg.centre_keys),
        _ => Vec::new(),
    };
    // Plans, means and weights of each tensor present.
    struct Part<'a> {
        x: &'a [f32],
        mean: Option<Vec<f32>>,
        plan: Plan,
        weights: Vec<f64>,
    }
    let mut parts: Vec<Option<Part<'_>>> = Vec::new();
    for (slot, (key, x)) in [(true, input.k), (false, input.v)].into_iter().enumerate() {
        let Some(x) = x else {
            parts.push(None);
            continue;
        };
        let (plan, mean) = match given.as_ref().and_then(|g| g[slot].clone()) {
            Some((p, m)) => {
                if p.width() != w {
                    return Err(Error::Shape(format!(
                        "appending rows of width {w} to a tensor of width {}",
                        p.width()
                    )));
                }
                (p, m)
            }
            None => {
                let mean = (key && cfg.centre_keys)
                    .then(|| crate::kv::coded::round_f16(&channel_mean(x, t_n, w)));
                let split = match (key, cfg.key_split) {
                    (true, Some(s)) => s,
                    _ => cfg.outliers,
                };
                let plan = plan(x, t_n, heads, cfg.mode, split, mean.as_deref())?;
                (plan, mean)
            }
        };
        let mut weights = match cfg.weighting {
            Weighting::Flat => {
                let dims: Vec<f64> = plan.units().iter().map(|(_, c)| c.len() as f64).collect();
                (0..t_n).flat_map(|_| dims.iter().copied()).collect()
            }
            _ => unit_weights(x, mean.as_deref(), &plan, t_n, heads, att.as_ref(), key),
        };
        protect(&mut weights, &plan, heads, &sinks);
        parts.push(Some(Part {
            x,
            mean,
            plan,
            weights,
        }));
    }
    // Classes: one per unit dimension.
    let mut dims: Vec<usize> = parts.iter().flatten().flat_map(|p| p.plan.dims()).collect();
    dims.sort_unstable();
    dims.dedup();
    let classes: Vec<Class> = dims
        .iter()
        .map(|&dim| Class {
            dim,
            scale_bits: SCALE_BITS,
            max_bits: MAX_BITS,
        })
        .collect();
    let class_of = |p: &Part<'_>| -> Vec<u8> {
        let per: Vec<u8> = p
            .plan
            .units()
            .iter()
            .map(|(_, c)| dims.iter().position(|&d| d == c.len()).unwrap_or(0) as u8)
            .collect();
        (0..t_n).flat_map(|_| per.iter().copied()).collect()
    };
    // An appended chunk stores no mean of its own.
    let fixed = |p: &Part<'_>| fixed_bits(&p.plan, t_n, p.mean.is_some() && given.is_none());
    let mut widths: Vec<Option<Vec<u8>>> = vec![None, None];
    let too_small = |bits: u64, need: u64| {
        Error::InvalidArgument(format!(
            "a budget of {bits} bits is below the {need} bits the layer stores whatever the widths (means, widths, padding)"
        ))
    };
    match budget {
        Budget::Joint(bits) => {
            let need: u64 = parts.iter().flatten().map(fixed).sum();
            if bits < need {
                return Err(too_small(bits, need));
            }
            let (mut values, mut class) = (Vec::new(), Vec::new());
            for p in parts.iter().flatten() {
                values.extend_from_slice(&p.weights);
                class.extend(class_of(p));
            }
            let a = allocate_classes(&values, &class, &classes, bits - need)?;
            let mut at = 0;
            for (slot, p) in parts.iter().enumerate() {
                if let Some(p) = p {
                    let n = p.weights.len();
                    widths[slot] = Some(a.widths[at..at + n].to_vec());
                    at += n;
                }
            }
        }
        Budget::Split { keys, values } => {
            for (slot, bits) in [(0, keys), (1, values)] {
                if let Some(p) = &parts[slot] {
                    let need = fixed(p);
                    if bits < need {
                        return Err(too_small(bits, need));
                    }
                    let a = allocate_classes(&p.weights, &class_of(p), &classes, bits - need)?;
                    widths[slot] = Some(a.widths);
                }
            }
        }
    }
    let mut out = [None, None];
    for (slot, (p, wd)) in parts.into_iter().zip(widths).enumerate() {
        if let (Some(p), Some(wd)) = (p, wd) {
            out[slot] = Some(CodedTensor::encode(p.x, t_n, p.plan, p.mean, wd, cfg.seed)?);
        }
    }
    let [k, v] = out;
    Ok(LayerOut { k, v })
}

/// The payload bits of `elements` values at `bits_per_element` (floored).
pub fn budget_bits(elements: u64, bits_per_element: f64) -> u64 {
    (elements as f64 * bits_per_element).floor() as u64
}

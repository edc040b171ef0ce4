//! A synthetic key/value cache with the structure real ones have, for
//! tests and benchmarks when no cache dump is at hand, and random queries
//! for evaluating a cache that came without any.
//!
//! It models one attention layer from the second on (where real caches
//! have an attention sink). Deterministic in the seed: every head draws
//! from its own ChaCha8 streams, so the cache is bit-identical whatever the
//! thread count.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::attention::Heads;
use crate::{Error, Result};

/// Lag-1 correlation of the AR(1) latent processes along tokens.
pub const RHO: f64 = 0.9;
/// Range of an outlier channel's key RMS over the head's median channel RMS.
pub const OUTLIER_GAIN: (f64, f64) = (5.0, 10.0);
/// `‖offset_h‖` over the RMS norm of head `h`'s centred keys.
pub const OFFSET_RATIO: f64 = 2.0;
/// Ratio of the largest to the smallest head energy (keys and values).
pub const HEAD_ENERGY_SPREAD: f64 = 10.0;
/// Standard deviation over tokens of every query-head's logits `q·k/√d_h`.
pub const LOGIT_STD: f64 = 2.0;
/// Range of the attention mass the sink receives, per head, averaged over
/// the queries.
pub const SINK_MASS: (f64, f64) = (0.12, 0.22);
/// The sink's centred key norm over the longest other centred key norm of
/// its head.
pub const SINK_KEY_NORM: f64 = 1.25;
/// The sink's value row, relative to what it would otherwise be.
pub const SINK_VALUE_GAIN: f32 = 0.1;
/// Weight of a head's shared query direction against each query's own.
const QUERY_SHARED: f64 = 2.0;
/// The most elements one generated tensor may have.
const MAX_ELEMENTS: usize = 1 << 31;

const DOMAIN_HEADS: u64 = 0x6b76_5f68_6561_0001;
const DOMAIN_KEYS: u64 = 0x6b76_5f6b_6579_0002;
const DOMAIN_VALUES: u64 = 0x6b76_5f76_616c_0003;
const DOMAIN_QUERIES: u64 = 0x6b76_5f71_7279_0004;
const DOMAIN_RANDOM_Q: u64 = 0x6b76_5f72_6e64_0005;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    /// Tokens in the cache (at least 2; the sink is token 0).
    pub tokens: usize,
    /// Attention heads.
    pub heads: usize,
    /// Channels per head (at least 2).
    pub head_dim: usize,
    /// Queries to draw alongside the cache (at least 1).
    pub n_queries: usize,
    /// Seed; the cache is a pure function of the whole config.
    pub seed: u64,
}

impl SynthConfig {
    /// A config with 64 queries.
    pub fn new(tokens: usize, heads: usize, head_dim: usize, seed: u64) -> SynthConfig {
        SynthConfig {
            tokens,
            heads,
            head_dim,
            n_queries: 64,
            seed,
        }
    }
}

/// A generated cache: all tensors row-major, `heads · head_dim` wide.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthCache {
    /// Queries, `n_queries` rows.
    pub q: Vec<f32>,
    /// Keys, `tokens` rows.
    pub k: Vec<f32>,
    /// Values, `tokens` rows.
    pub v: Vec<f32>,
    /// Rows of `q`.
    pub n_queries: usize,
    /// Rows of `k` and `v`.
    pub tokens: usize,
    /// The shape of a row.
    pub heads: Heads,
    /// The keys' outlier channels, as indices into a row, ascending.
    pub outlier_channels: Vec<usize>,
    /// The keys' shared per-channel offset (the mean their rows scatter
    /// around).
    pub key_offset: Vec<f32>,
    /// Per head, the attention mass the sink was placed to receive.
    pub sink_mass_target: Vec<f64>,
}

/// Generates a synthetic cache. Per head `h` of `d` channels (statistics
/// of keys and values are over tokens 1.., the sink left out):
///
/// - **Key spectrum**: centred keys are `Σ_j σ_j w_{t,j} u_j` over a
///   random orthonormal basis `u_j` with `σ_j ∝ 1/(j+1)`, so the energy
///   falls off steeply (at `d = 64` about 90 % of it lies in the first
///   tenth of the directions); the weak directions are the noise.
/// - **Outlier channels**: `max(1, d/32)` random channels per head scaled
///   so that their key RMS is [`OUTLIER_GAIN`] (5–10×, drawn) times the
///   median RMS of the head's other channels.
/// - **Shared offset**: the centred keys are made exactly zero-mean, then
///   every key row adds the same per-channel offset, a random direction of
///   norm [`OFFSET_RATIO`] (2×) the RMS norm of the head's centred keys.
/// - **Head energies**: each head's energy (the sum of its channel
///   variances) is scaled to `d · e_h`, the `e_h` log-uniformly spaced over
///   a factor [`HEAD_ENERGY_SPREAD`] (10×) in a random order of heads;
///   keys and values each have their own order.
/// - **Correlated tokens**: every latent `w_{t,j}` is a unit-variance AR(1)
///   along tokens with coefficient [`RHO`] (0.9), so each channel has
///   lag-1 correlation about 0.9.
/// - **Values**: the same construction with a flatter spectrum,
///   `σ_j ∝ (j+1)^−½`, their own basis, latents and head energies, no
///   outliers and no offset.
/// - **Queries**: `Σ_j σ_j (2·g_{h,j} + g_{i,j}) u_j` with a standard normal
///   `g_h` shared by the head's queries and `g_i` per query: they lie in the
///   keys' strong directions and share a mean direction, so attention is
///   peaked. Each query-head is scaled so that its logits `q·k/√d` have
///   standard deviation [`LOGIT_STD`] (2) over the tokens 1.. .
/// - **Attention sink**: token 0's centred key is `κ_h` times the unit
///   mean query direction of the head, `κ_h` solved (by bisection) so that
///   the sink receives a mass drawn from [`SINK_MASS`] (12–22 %) averaged
///   over the head's queries (computed in f64 before the tensors are
///   rounded to f32). A part along the keys' weakest direction, made
///   orthogonal to the first, lengthens the sink's centred key to
///   [`SINK_KEY_NORM`] (1.25×) the head's longest other one (κ re-solved
///   with it); its value row is [`SINK_VALUE_GAIN`] (0.1×) what it
///   would be, the smallest of the cache.
pub fn cache(cfg: &SynthConfig) -> Result<SynthCache> {
    let SynthConfig {
        tokens,
        heads,
        head_dim: d,
        n_queries,
        seed,
    } = *cfg;
    if tokens < 2 || heads == 0 || d < 2 || n_queries == 0 {
        return Err(Error::InvalidArgument(format!(
            "synthetic cache: need ≥ 2 tokens, ≥ 1 head, ≥ 2 channels per head and ≥ 1 query, got {tokens} tokens, {heads} × {d}, {n_queries} queries"
        )));
    }
    let width = heads
        .checked_mul(d)
        .filter(|w| {
            w.checked_mul(tokens.max(n_queries))
                .is_some_and(|n| n <= MAX_ELEMENTS)
        })
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "synthetic cache: {tokens} tokens (or {n_queries} queries) × {heads} × {d} exceeds {MAX_ELEMENTS} elements"
            ))
        })?;
    let mut rng = stream(seed, DOMAIN_HEADS, 0);
    let key_rank = permutation(heads, &mut rng);
    let value_rank = permutation(heads, &mut rng);
    let energy = |rank: usize| {
        let u = if heads > 1 {
            rank as f64 / (heads - 1) as f64
        } else {
            0.0
        };
        HEAD_ENERGY_SPREAD.powf(u)
    };
    let blocks: Vec<HeadBlock> = (0..heads)
        .into_par_iter()
        .map(|h| {
            head(
                seed,
                h,
                tokens,
                d,
                n_queries,
                energy(key_rank[h]),
                energy(value_rank[h]),
            )
        })
        .collect::<Result<_>>()?;
    let mut k = vec![0f32; tokens * width];
    let mut v = vec![0f32; tokens * width];
    let mut q = vec![0f32; n_queries * width];
    let mut key_offset = vec![0f32; width];
    let mut outlier_channels = Vec::new();
    let mut sink_mass_target = Vec::with_capacity(heads);
    for (h, b) in blocks.iter().enumerate() {
        for t in 0..tokens {
            k[t * width + h * d..][..d].copy_from_slice(&b.k[t * d..][..d]);
            v[t * width + h * d..][..d].copy_from_slice(&b.v[t * d..][..d]);
        }
        for i in 0..n_queries {
            q[i * width + h * d..][..d].copy_from_slice(&b.q[i * d..][..d]);
        }
        key_offset[h * d..][..d].copy_from_slice(&b.offset);
        outlier_channels.extend(b.outliers.iter().map(|&c| h * d + c));
        sink_mass_target.push(b.sink_mass);
    }
    Ok(SynthCache {
        q,
        k,
        v,
        n_queries,
        tokens,
        heads: Heads { heads, head_dim: d },
        outlier_channels,
        key_offset,
        sink_mass_target,
    })
}

/// Random queries for a cache that came without any: `n` rows of
/// `heads · head_dim` independent standard normal values. With unit
/// variance per coordinate each logit `q·k/√d_h` has variance `‖k_h‖²/d_h`,
/// the key's own mean square per channel, which is the scale trained
/// (normalised) queries meet their keys at.
pub fn random_queries(n: usize, heads: usize, head_dim: usize, seed: u64) -> Result<Vec<f32>> {
    let len = n
        .checked_mul(heads)
        .and_then(|x| x.checked_mul(head_dim))
        .filter(|&x| x <= MAX_ELEMENTS)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "random queries: {n} × {heads} × {head_dim} exceeds {MAX_ELEMENTS} elements"
            ))
        })?;
    let mut rng = stream(seed, DOMAIN_RANDOM_Q, 0);
    Ok((0..len).map(|_| normal(&mut rng) as f32).collect())
}

/// One head's tensors, `tokens × d` (keys, values) and `n_queries × d`.
struct HeadBlock {
    k: Vec<f32>,
    v: Vec<f32>,
    q: Vec<f32>,
    offset: Vec<f32>,
    outliers: Vec<usize>,
    sink_mass: f64,
}

fn stream(seed: u64, domain: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ domain);
    rng.set_stream(index as u64);
    rng
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// A uniformly random permutation of `0..n` (Fisher–Yates).
fn permutation(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.random_range(0..=i));
    }
    p
}

/// A random orthonormal basis of R^d, as d rows (Gram–Schmidt of Gaussian
/// rows, twice for accuracy).
fn basis(d: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(d);
    while rows.len() < d {
        let mut r: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
        for _ in 0..2 {
            for u in &rows {
                let dot: f64 = u.iter().zip(&r).map(|(a, b)| a * b).sum();
                r.iter_mut().zip(u).for_each(|(x, a)| *x -= dot * a);
            }
        }
        let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        // A draw (almost) in the span so far is redrawn.
        if n > 1e-6 {
            r.iter_mut().for_each(|x| *x /= n);
            rows.push(r);
        }
    }
    rows
}

/// Spectrum `σ_j ∝ (j+1)^−p`, scaled so that `Σσ_j² = d`.
fn spectrum(d: usize, p: f64) -> Vec<f64> {
    let s: Vec<f64> = (0..d).map(|j| ((j + 1) as f64).powf(-p)).collect();
    let e = (d as f64 / s.iter().map(|x| x * x).sum::<f64>()).sqrt();
    s.iter().map(|x| x * e).collect()
}

/// `tokens` rows of `Σ_j σ_j w_{t,j} u_j`, latents AR(1) along tokens.
fn ar_rows(tokens: usize, u: &[Vec<f64>], sigma: &[f64], rng: &mut ChaCha8Rng) -> Vec<f64> {
    let d = sigma.len();
    let innov = (1.0 - RHO * RHO).sqrt();
    let mut w: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
    let mut out = vec![0f64; tokens * d];
    for t in 0..tokens {
        if t > 0 {
            w.iter_mut()
                .for_each(|x| *x = RHO * *x + innov * normal(rng));
        }
        let row = &mut out[t * d..][..d];
        for (j, uj) in u.iter().enumerate() {
            let c = sigma[j] * w[j];
            row.iter_mut().zip(uj).for_each(|(r, x)| *r += c * x);
        }
    }
    out
}

/// The `κ` at which the increasing-on-the-whole `mass(κ)` crosses
/// `target` (bisection between a point below and one above; `None` when
/// none is found).
fn solve_sink(mass: impl Fn(f64) -> f64, target: f64) -> Option<f64> {
    let (mut lo, mut hi) = (-1.0f64, 1.0f64);
    let mut n = 0;
    while mass(hi) < target {
        hi *= 2.0;
        n += 1;
        if n > 200 {
            return None;
        }
    }
    while mass(lo) >= target {
        lo *= 2.0;
        n += 1;
        if n > 400 {
            return None;
        }
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if mass(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Per-channel mean and variance of `rows × d` over rows 1.. (token 0,
/// the sink, is left out).
fn moments(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / d).saturating_sub(1).max(1) as f64;
    let mut mean = vec![0f64; d];
    for row in x.chunks(d).skip(1) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; d];
    for row in x.chunks(d).skip(1) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m).powi(2);
        }
    }
    var.iter_mut().for_each(|s| *s /= n);
    (mean, var)
}

/// Scales `x` so that its per-channel variances (over rows 1..) add up to
/// `energy · d`.
fn normalise(x: &mut [f64], d: usize, energy: f64) {
    let total: f64 = moments(x, d).1.iter().sum();
    if total > 0.0 {
        let f = (energy * d as f64 / total).sqrt();
        x.iter_mut().for_each(|v| *v *= f);
    }
}

fn head(
    seed: u64,
    h: usize,
    tokens: usize,
    d: usize,
    n_queries: usize,
    key_energy: f64,
    value_energy: f64,
) -> Result<HeadBlock> {
    let mut rng = stream(seed, DOMAIN_KEYS, h);
    let u = basis(d, &mut rng);
    let sk = spectrum(d, 1.0);
    let mut kc = ar_rows(tokens, &u, &sk, &mut rng);

    // Centre over tokens 1.. (token 0 becomes the sink), so the offset
    // added below is exactly the keys' mean.
    let (mean, _) = moments(&kc, d);
    for row in kc.chunks_mut(d) {
        row.iter_mut().zip(&mean).for_each(|(x, m)| *x -= m);
    }
    // Outliers: a few channels scaled to `gain` times the median RMS of
    // the others, as measured.
    let (_, var) = moments(&kc, d);
    let mut outliers: Vec<usize> = permutation(d, &mut rng)
        .into_iter()
        .take((d / 32).max(1))
        .collect();
    outliers.sort_unstable();
    let mut others: Vec<f64> = (0..d)
        .filter(|c| !outliers.contains(c))
        .map(|c| var[c])
        .collect();
    others.sort_by(f64::total_cmp);
    let median = others.get(others.len() / 2).copied().unwrap_or(1.0);
    for &c in &outliers {
        let gain = rng.random_range(OUTLIER_GAIN.0..=OUTLIER_GAIN.1);
        let f = if var[c] > 0.0 {
            gain * (median / var[c]).sqrt()
        } else {
            0.0
        };
        kc.chunks_mut(d).for_each(|row| row[c] *= f);
    }
    // The head's energy, as measured, is exactly `key_energy · d`.
    normalise(&mut kc, d, key_energy);
    let spread = (key_energy * d as f64).sqrt();
    let mut offset: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
    let n = offset.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
    offset
        .iter_mut()
        .for_each(|x| *x *= OFFSET_RATIO * spread / n);

    // Queries in the keys' strong directions, around a shared direction.
    let mut qrng = stream(seed, DOMAIN_QUERIES, h);
    let shared: Vec<f64> = (0..d).map(|_| QUERY_SHARED * normal(&mut qrng)).collect();
    let scale = 1.0 / (d as f64).sqrt();
    let mut q = vec![0f64; n_queries * d];
    let mut logits = vec![0f64; n_queries * (tokens - 1)];
    for i in 0..n_queries {
        let qi = &mut q[i * d..][..d];
        for (j, uj) in u.iter().enumerate() {
            let c = sk[j] * (shared[j] + normal(&mut qrng));
            qi.iter_mut().zip(uj).for_each(|(r, x)| *r += c * x);
        }
        // Logits over tokens 1.. with centred keys (the offset shifts all
        // of a query's logits alike, which softmax ignores).
        let li = &mut logits[i * (tokens - 1)..][..tokens - 1];
        for (t, l) in li.iter_mut().enumerate() {
            let kt = &kc[(t + 1) * d..][..d];
            *l = qi.iter().zip(kt).map(|(a, b)| a * b).sum::<f64>() * scale;
        }
        let mean = li.iter().sum::<f64>() / li.len() as f64;
        let sd = (li.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / li.len() as f64).sqrt();
        let g = if sd > 0.0 { LOGIT_STD / sd } else { 1.0 };
        qi.iter_mut().for_each(|x| *x *= g);
        li.iter_mut().for_each(|x| *x *= g);
    }

    // The sink: along the unit mean query direction, κ by bisection.
    let mut m = vec![0f64; d];
    for qi in q.chunks(d) {
        m.iter_mut().zip(qi).for_each(|(a, b)| *a += b);
    }
    let mn = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    if mn > 0.0 {
        m.iter_mut().for_each(|x| *x /= mn);
    }
    let proj: Vec<f64> = q
        .chunks(d)
        .map(|qi| qi.iter().zip(&m).map(|(a, b)| a * b).sum::<f64>() * scale)
        .collect();
    let lse: Vec<f64> = logits
        .chunks(tokens - 1)
        .map(|li| {
            let max = li.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            max + li.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
        })
        .collect();
    // A second, orthogonal part along the keys' weakest direction (which
    // queries barely see) makes the sink's key the longest, as in real
    // caches, without giving it the mass.
    let mut o = u[d - 1].clone();
    let dot: f64 = o.iter().zip(&m).map(|(a, b)| a * b).sum();
    o.iter_mut().zip(&m).for_each(|(x, a)| *x -= dot * a);
    let on = o.iter().map(|x| x * x).sum::<f64>().sqrt();
    if on > 1e-6 {
        o.iter_mut().for_each(|x| *x /= on);
    } else {
        o.fill(0.0);
    }
    let proj_o: Vec<f64> = q
        .chunks(d)
        .map(|qi| qi.iter().zip(&o).map(|(a, b)| a * b).sum::<f64>() * scale)
        .collect();
    let mass = |kappa: f64, beta: f64| {
        proj.iter()
            .zip(&proj_o)
            .zip(&lse)
            .map(|((p, po), s)| 1.0 / (1.0 + (s - kappa * p - beta * po).exp()))
            .sum::<f64>()
            / n_queries as f64
    };
    let target = rng.random_range(SINK_MASS.0..=SINK_MASS.1);
    let longest = kc
        .chunks(d)
        .skip(1)
        .map(|r| r.iter().map(|x| x * x).sum::<f64>())
        .fold(0.0, f64::max)
        .sqrt();
    let mut beta = 0.0;
    let mut kappa = solve_sink(|x| mass(x, beta), target).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "synthetic cache, head {h}: no sink key reaches attention mass {target:.3}"
        ))
    })?;
    for _ in 0..4 {
        let want = SINK_KEY_NORM * longest;
        if kappa * kappa + beta * beta >= want * want || o.iter().all(|&x| x == 0.0) {
            break;
        }
        beta = (want * want - kappa * kappa).max(0.0).sqrt();
        kappa = solve_sink(|x| mass(x, beta), target).unwrap_or(kappa);
    }
    kc[..d]
        .iter_mut()
        .zip(m.iter().zip(&o))
        .for_each(|(x, (a, b))| *x = kappa * a + beta * b);

    let k = kc
        .chunks(d)
        .flat_map(|row| row.iter().zip(&offset).map(|(x, o)| (x + o) as f32))
        .collect();

    let mut vrng = stream(seed, DOMAIN_VALUES, h);
    let uv = basis(d, &mut vrng);
    let mut v = ar_rows(tokens, &uv, &spectrum(d, 0.5), &mut vrng);
    normalise(&mut v, d, value_energy);
    let mut v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
    v[..d].iter_mut().for_each(|x| *x *= SINK_VALUE_GAIN);

    Ok(HeadBlock {
        k,
        v,
        q: q.into_iter().map(|x| x as f32).collect(),
        offset: offset.into_iter().map(|x| x as f32).collect(),
        outliers,
        sink_mass: target,
    })
}

//! How far a compressed cache's attention is from the exact one: output
//! error, logit error, top-k agreement of the attention weights, and the
//! plain normalised MSE of a tensor.
//!
//! Logits are `q·k/√d_h` per head, in f64, as in
//! [`attend_exact`](super::attention::attend_exact). Sums over queries run
//! in parallel per query and are added in query order, so every figure is
//! the same whatever the thread count.

use rayon::prelude::*;

use super::attention::{Heads, attend_exact};
use crate::{Error, Result};

/// How much a compressed cache changes attention (see [`attention_error`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionError {
    /// `‖O − Ô‖_F / ‖O‖_F` over all queries and heads.
    pub output_rel: f64,
    /// RMS of the centred logit error over RMS of the centred logits,
    /// pooled over all query-heads.
    pub logit_rmse_rel: f64,
    /// Mean over query-heads of `|topk(p) ∩ topk(p̂)| / k`.
    pub topk_agreement: f64,
}

/// `Σ‖x − x̂‖² / Σ‖x‖²` over `rows` rows of `dim`: 0 when both sums are 0,
/// infinite when only the signal is 0.
pub fn nmse(x: &[f32], x_hat: &[f32], rows: usize, dim: usize) -> Result<f64> {
    let n = rows.checked_mul(dim);
    if n != Some(x.len()) || n != Some(x_hat.len()) {
        return Err(Error::Shape(format!(
            "nmse: {rows} rows of {dim} need {} values, got {} and {}",
            rows.saturating_mul(dim),
            x.len(),
            x_hat.len()
        )));
    }
    let (mut err, mut sig) = (0f64, 0f64);
    for (&a, &b) in x.iter().zip(x_hat) {
        err += (a as f64 - b as f64).powi(2);
        sig += (a as f64).powi(2);
    }
    Ok(ratio(err, sig))
}

/// `num / den`, with 0/0 = 0 and x/0 = ∞.
fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else if num == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Checks the shapes and returns the number of queries.
fn check(q: &[f32], k: &[f32], tokens: usize, heads: Heads) -> Result<usize> {
    let w = heads.width();
    if w == 0 {
        return Err(Error::Shape(
            "attention needs at least one head of one channel".into(),
        ));
    }
    if tokens == 0 || q.is_empty() {
        return Err(Error::EmptyInput {
            what: format!("attention of {} queries over {tokens} tokens", q.len() / w),
        });
    }
    if !q.len().is_multiple_of(w) {
        return Err(Error::Shape(format!(
            "queries: {} values are not whole rows of width {w}",
            q.len()
        )));
    }
    if tokens.checked_mul(w) != Some(k.len()) {
        return Err(Error::Shape(format!(
            "keys: {tokens} rows of width {w} need {} values, got {}",
            tokens.saturating_mul(w),
            k.len()
        )));
    }
    Ok(q.len() / w)
}

/// The logits `q_i,h · k_t,h / √d_h` of query `i`, head `h`, over all tokens.
fn logits_into(q: &[f32], k: &[f32], heads: Heads, i: usize, h: usize, out: &mut [f64]) {
    let (w, hd) = (heads.width(), heads.head_dim);
    let scale = 1.0 / (hd as f64).sqrt();
    let qi = &q[i * w + h * hd..i * w + (h + 1) * hd];
    for (t, l) in out.iter_mut().enumerate() {
        let kt = &k[t * w + h * hd..t * w + (h + 1) * hd];
        *l = qi
            .iter()
            .zip(kt)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>()
            * scale;
    }
}

/// Softmax in place.
fn softmax(l: &mut [f64]) {
    let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for x in l.iter_mut() {
        *x = (*x - max).exp();
        total += *x;
    }
    for x in l.iter_mut() {
        *x /= total;
    }
}

/// Attention weights `softmax_t(q·k/√d_h)` of every query over every token,
/// laid out `[query][head][token]` (`n_queries · heads · tokens` values).
pub fn attention_weights(q: &[f32], k: &[f32], tokens: usize, heads: Heads) -> Result<Vec<f32>> {
    let n_q = check(q, k, tokens, heads)?;
    let per_query = heads.heads * tokens;
    let mut out = vec![0f32; n_q * per_query];
    out.par_chunks_mut(per_query)
        .enumerate()
        .for_each(|(i, rows)| {
            let mut l = vec![0f64; tokens];
            for (h, row) in rows.chunks_mut(tokens).enumerate() {
                logits_into(q, k, heads, i, h, &mut l);
                softmax(&mut l);
                for (o, &p) in row.iter_mut().zip(&l) {
                    *o = p as f32;
                }
            }
        });
    Ok(out)
}

/// The attention mass each token receives: its weight averaged over all
/// queries and heads (the result sums to 1).
pub fn attention_mass(q: &[f32], k: &[f32], tokens: usize, heads: Heads) -> Result<Vec<f64>> {
    let n_q = check(q, k, tokens, heads)?;
    let per_query: Vec<Vec<f64>> = (0..n_q)
        .into_par_iter()
        .map(|i| {
            let (mut l, mut acc) = (vec![0f64; tokens], vec![0f64; tokens]);
            for h in 0..heads.heads {
                logits_into(q, k, heads, i, h, &mut l);
                softmax(&mut l);
                for (a, &p) in acc.iter_mut().zip(&l) {
                    *a += p;
                }
            }
            acc
        })
        .collect();
    let mut mass = vec![0f64; tokens];
    for acc in &per_query {
        for (m, &a) in mass.iter_mut().zip(acc) {
            *m += a;
        }
    }
    let n = (n_q * heads.heads) as f64;
    mass.iter_mut().for_each(|m| *m /= n);
    Ok(mass)
}

/// The `k` largest entries' indices, largest first, ties to the lower index.
fn top_indices(l: &[f64], k: usize, idx: &mut Vec<usize>) {
    idx.clear();
    idx.extend(0..l.len());
    idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
}

/// How much `(k_hat, v_hat)` changes attention against `(k, v)` for the
/// queries `q` (`n_queries × width`; K and V `tokens × width`):
///
/// - `output_rel`: `‖O − Ô‖_F / ‖O‖_F`, outputs from
///   [`attend_exact`](super::attention::attend_exact), over all queries and
///   heads;
/// - `logit_rmse_rel`: per query-head, the logits `ℓ` and `ℓ̂` over tokens
///   are centred (their mean over tokens removed: softmax ignores a
///   constant shift, so a shift of all of a query's logits is no error);
///   the result is `√(Σ‖c(ℓ − ℓ̂)‖² / Σ‖c(ℓ)‖²)` summed over query-heads,
///   pooled so that query-heads with nearly flat logits do not dominate;
/// - `topk_agreement`: the mean over query-heads of `|T ∩ T̂| / k`, where
///   `T` is the set of the `k` tokens of largest weight (ties to the lower
///   token index); `topk` above the token count is clamped to it.
// The argument list is the problem's: queries, two caches, shape, k.
#[allow(clippy::too_many_arguments)]
pub fn attention_error(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    k_hat: &[f32],
    v_hat: &[f32],
    tokens: usize,
    heads: Heads,
    topk: usize,
) -> Result<AttentionError> {
    let n_q = check(q, k, tokens, heads)?;
    check(q, k_hat, tokens, heads).map_err(|e| Error::Shape(format!("compressed keys: {e}")))?;
    if topk == 0 {
        return Err(Error::InvalidArgument(
            "attention error: top-k needs k ≥ 1".into(),
        ));
    }
    let o = attend_exact(q, k, v, tokens, heads)?;
    let o_hat = attend_exact(q, k_hat, v_hat, tokens, heads)
        .map_err(|e| Error::Shape(format!("compressed cache: {e}")))?;
    let (mut oe, mut os) = (0f64, 0f64);
    for (&a, &b) in o.iter().zip(&o_hat) {
        oe += (a as f64 - b as f64).powi(2);
        os += (a as f64).powi(2);
    }
    let kk = topk.min(tokens);
    // Per query: (Σ centred error², Σ centred logit², Σ agreement).
    let parts: Vec<(f64, f64, f64)> = (0..n_q)
        .into_par_iter()
        .map(|i| {
            let (mut l, mut lh) = (vec![0f64; tokens], vec![0f64; tokens]);
            let (mut ti, mut th) = (Vec::new(), Vec::new());
            let (mut err, mut sig, mut agree) = (0f64, 0f64, 0f64);
            for h in 0..heads.heads {
                logits_into(q, k, heads, i, h, &mut l);
                logits_into(q, k_hat, heads, i, h, &mut lh);
                let n = tokens as f64;
                let mean = l.iter().sum::<f64>() / n;
                let dmean = l.iter().zip(&lh).map(|(a, b)| a - b).sum::<f64>() / n;
                for (a, b) in l.iter().zip(&lh) {
                    err += (a - b - dmean).powi(2);
                    sig += (a - mean).powi(2);
                }
                top_indices(&l, kk, &mut ti);
                top_indices(&lh, kk, &mut th);
                let common = ti.iter().filter(|t| th.binary_search(t).is_ok()).count();
                agree += common as f64 / kk as f64;
            }
            (err, sig, agree)
        })
        .collect();
    let (mut le, mut ls, mut ag) = (0f64, 0f64, 0f64);
    for &(e, s, a) in &parts {
        le += e;
        ls += s;
        ag += a;
    }
    Ok(AttentionError {
        output_rel: ratio(oe, os).sqrt(),
        logit_rmse_rel: ratio(le, ls).sqrt(),
        topk_agreement: ag / (n_q * heads.heads) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_mass_sum_to_one() {
        let hs = Heads {
            heads: 2,
            head_dim: 2,
        };
        let q = [1.0, 0.0, 0.0, 1.0, 0.5, -0.5, 2.0, 0.0];
        let k = [0.3, 0.1, -2.0, 5.0, 1.0, 1.0, 0.0, 0.0, -1.0, 2.0, 0.5, 0.5];
        let w = attention_weights(&q, &k, 3, hs).unwrap();
        assert_eq!(w.len(), 2 * 2 * 3);
        for row in w.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let m = attention_mass(&q, &k, 3, hs).unwrap();
        assert!((m.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Equal logits: uniform weights.
        let m0 = attention_mass(&[0.0; 4], &k, 3, hs).unwrap();
        assert!(m0.iter().all(|&x| (x - 1.0 / 3.0).abs() < 1e-12));
    }

    #[test]
    fn nmse_by_hand() {
        // ‖x‖² = 1 + 4 + 9 + 16 = 30, error 0.5² + 1² = 1.25.
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [1.5, 2.0, 3.0, 3.0];
        assert!((nmse(&x, &y, 2, 2).unwrap() - 1.25 / 30.0).abs() < 1e-15);
        assert_eq!(nmse(&[0.0; 2], &[0.0; 2], 1, 2).unwrap(), 0.0);
        assert!(nmse(&x, &y, 3, 2).is_err());
    }
}

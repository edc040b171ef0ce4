//! Attention over a key/value cache: `softmax(q·Kᵀ/√d_h)·V` per head.
//!
//! [`attend_exact`] is the plain reference over f32 tensors, the one every
//! compressed path is compared with.

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

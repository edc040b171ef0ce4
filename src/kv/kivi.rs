//! KIVI-style quantisation (Liu et al., 2024), the baseline a KV-cache
//! codec is compared with: asymmetric integers of `b` bits, keys per
//! channel over groups of `group` consecutive tokens, values per token over
//! groups of `group` consecutive channels, and an f16 minimum and step per
//! group.
//!
//! A group with minimum `m` and maximum `M` stores `m` rounded *down* to f16
//! and the step `(M − m₁₆)/(2^b − 1)` rounded *up* to f16, so the stored
//! grid `m₁₆ + j·step₁₆, j = 0..2^b−1` covers `[m, M]` and every element is
//! within `step₁₆/2` of its decoded value (up to f32 rounding of the
//! decode). Codes are `round((x − m₁₆)/step₁₆)` clamped to `0..2^b−1`; a
//! constant group whose value is an f16 has step 0 and decodes exactly.
//! Decoding is `m₁₆ + code·step₁₆` in f32.
//!
//! Unlike the original, no recent tokens are kept in full precision: every
//! element is quantised, so the bit counts are the whole cost.
//! Stored bits are the codes (`b` per element) plus 32 per group (two f16);
//! a last, partial group counts as a whole group.

use half::f16;

use crate::{Error, Result};

/// A tensor after KIVI quantisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Kivi {
    /// The dequantised tensor, same shape as the input.
    pub data: Vec<f32>,
    /// Code bits per element.
    pub bits: u32,
    /// Group length along the quantised axis (tokens for keys, channels for
    /// values), as given.
    pub group: usize,
    /// Stored minimum of each group (an f16 value), in group order: for
    /// keys channel-major (`channel · groups_per_channel + token / group`),
    /// for values token-major (`token · groups_per_token + channel / group`).
    pub min: Vec<f32>,
    /// Stored step of each group (an f16 value), same order as `min`.
    pub step: Vec<f32>,
    /// Every stored bit: codes plus 32 per group.
    pub stored_bits: u64,
}

impl Kivi {
    /// Stored bits per element of the tensor.
    pub fn bits_per_element(&self) -> f64 {
        if self.data.is_empty() {
            return 0.0;
        }
        self.stored_bits as f64 / self.data.len() as f64
    }
}

/// Quantises keys `k` (`tokens × width`, row-major) per channel over groups
/// of `group` consecutive tokens, at `bits` ∈ 1..=8 code bits.
pub fn quantize_keys(
    k: &[f32],
    tokens: usize,
    width: usize,
    bits: u32,
    group: usize,
) -> Result<Kivi> {
    quantize(k, tokens, width, bits, group, true)
}

/// Quantises values `v` (`tokens × width`, row-major) per token over groups
/// of `group` consecutive channels, at `bits` ∈ 1..=8 code bits.
pub fn quantize_values(
    v: &[f32],
    tokens: usize,
    width: usize,
    bits: u32,
    group: usize,
) -> Result<Kivi> {
    quantize(v, tokens, width, bits, group, false)
}

/// Stored bits per element of a `tokens × width` tensor at `bits` code bits
/// and groups of `group`: `bits + 32·⌈axis/group⌉/axis`, where the axis is
/// the tokens for keys and the channels for values. Zero for an empty
/// tensor or a zero group.
pub fn bits_per_element(bits: u32, group: usize, tokens: usize, width: usize, keys: bool) -> f64 {
    let axis = if keys { tokens } else { width };
    if axis == 0 || group == 0 || tokens == 0 || width == 0 {
        return 0.0;
    }
    bits as f64 + 32.0 * axis.div_ceil(group) as f64 / axis as f64
}

/// The KIVI configuration `(bits, group)` a user would pick to spend at
/// most `target_bpe` bits per element on a `tokens × width` cache: the most
/// code bits `b` in 1..=8 for which some group fits, then the smallest
/// group that fits at that `b`.
///
/// One group length serves keys and values alike (as in KIVI); it *fits*
/// when both the keys' and the values' bits per element are at most
/// `target_bpe`, so the cache as a whole is within budget too. Candidate
/// groups are the powers of two from 32 below the longer axis, then the
/// longer axis itself (one group per channel of keys and per token of
/// values when `group ≥` both axes). More code bits are preferred to finer
/// groups because the step shrinks by 2× per bit, while halving the group
/// only narrows the range a little.
pub fn at_bits(target_bpe: f64, tokens: usize, width: usize) -> Result<(u32, usize)> {
    if tokens == 0 || width == 0 {
        return Err(Error::EmptyInput {
            what: format!("KIVI configuration for a {tokens} × {width} cache"),
        });
    }
    let longest = tokens.max(width);
    let mut groups: Vec<usize> = (5..usize::BITS)
        .map(|e| 1usize << e)
        .take_while(|&g| g < longest)
        .collect();
    groups.push(longest);
    for b in (1..=8u32).rev() {
        for &g in &groups {
            let worst = bits_per_element(b, g, tokens, width, true)
                .max(bits_per_element(b, g, tokens, width, false));
            if worst <= target_bpe + 1e-12 {
                return Ok((b, g));
            }
        }
    }
    Err(Error::InvalidArgument(format!(
        "no KIVI configuration spends at most {target_bpe} bits per element on a {tokens} × {width} cache (the least is {:.4})",
        bits_per_element(1, longest, tokens, width, true)
            .max(bits_per_element(1, longest, tokens, width, false))
    )))
}

/// The largest f16 not above `x` (`x` finite and within f16 range).
fn f16_down(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() <= x {
        return h;
    }
    // Round-to-nearest went up by one ulp: step one ulp towards −∞.
    let b = h.to_bits();
    if b == 0 {
        f16::from_bits(0x8001)
    } else if b & 0x8000 == 0 {
        f16::from_bits(b - 1)
    } else {
        f16::from_bits(b + 1)
    }
}

/// The smallest f16 not below `x ≥ 0` (infinity above the f16 range).
fn f16_up(x: f64) -> f16 {
    let h = f16::from_f64(x);
    if h.to_f64() >= x {
        h
    } else {
        f16::from_bits(h.to_bits() + 1)
    }
}

fn quantize(
    x: &[f32],
    tokens: usize,
    width: usize,
    bits: u32,
    group: usize,
    keys: bool,
) -> Result<Kivi> {
    let what = if keys { "keys" } else { "values" };
    if !(1..=8).contains(&bits) {
        return Err(Error::InvalidBits { bits });
    }
    if group == 0 {
        return Err(Error::InvalidArgument(format!(
            "KIVI {what}: group length must be at least 1"
        )));
    }
    if tokens == 0 || width == 0 {
        return Err(Error::EmptyInput {
            what: format!("KIVI {what} of {tokens} × {width}"),
        });
    }
    if tokens.checked_mul(width) != Some(x.len()) {
        return Err(Error::Shape(format!(
            "KIVI {what}: {tokens} × {width} needs {} values, got {}",
            tokens.saturating_mul(width),
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            row: i / width,
            col: i % width,
            value: x[i],
        });
    }
    // Keys: lines are channels (stride `width`) grouped over tokens;
    // values: lines are tokens (stride 1) grouped over channels.
    let (lines, len, line_step, elem_step) = if keys {
        (width, tokens, 1, width)
    } else {
        (tokens, width, width, 1)
    };
    let per_line = len.div_ceil(group);
    let levels = ((1u32 << bits) - 1) as f32;
    let mut data = vec![0f32; x.len()];
    let mut mins = Vec::with_capacity(lines * per_line);
    let mut steps = Vec::with_capacity(lines * per_line);
    for line in 0..lines {
        for g in 0..per_line {
            let (a, b) = (g * group, ((g + 1) * group).min(len));
            let idx = |j: usize| line * line_step + j * elem_step;
            let (lo, hi) = (a..b).fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), j| {
                (lo.min(x[idx(j)]), hi.max(x[idx(j)]))
            });
            let m = f16_down(lo);
            let span = (hi as f64 - m.to_f32() as f64) / levels as f64;
            let s = f16_up(span);
            if !m.is_finite() || !s.is_finite() {
                return Err(Error::ScaleUnrepresentable {
                    row: if keys { a } else { line },
                    scale: if m.is_finite() { span } else { lo as f64 },
                    format: "f16",
                    why: if keys {
                        "a KIVI key group's minimum or step is outside the f16 range"
                    } else {
                        "a KIVI value group's minimum or step is outside the f16 range"
                    },
                });
            }
            let (m, s) = (m.to_f32(), s.to_f32());
            for j in a..b {
                let i = idx(j);
                let code = if s > 0.0 {
                    ((x[i] - m) / s).round().clamp(0.0, levels)
                } else {
                    0.0
                };
                data[i] = m + code * s;
            }
            mins.push(m);
            steps.push(s);
        }
    }
    let stored_bits = x.len() as u64 * bits as u64 + 32 * (lines * per_line) as u64;
    Ok(Kivi {
        data,
        bits,
        group,
        min: mins,
        step: steps,
        stored_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_group_decodes_exactly() {
        // 0.75 and -3.5 are f16 values; the groups are constant.
        let (t, w) = (8, 4);
        let x: Vec<f32> = (0..t * w)
            .map(|i| if i % w < 2 { 0.75 } else { -3.5 })
            .collect();
        for b in [1, 4, 8] {
            let kq = quantize_keys(&x, t, w, b, 4).unwrap();
            assert_eq!(kq.data, x);
            assert!(kq.step.iter().all(|&s| s == 0.0));
        }
        // Per token the groups of 2 channels are constant too.
        assert_eq!(quantize_values(&x, t, w, 3, 2).unwrap().data, x);
    }

    #[test]
    fn error_within_half_a_step() {
        let (t, w) = (37, 20);
        let x: Vec<f32> = (0..t * w)
            .map(|i| (i as f32 * 0.7331).sin() * 13.0 + (i % 7) as f32 * 0.01)
            .collect();
        for b in 1..=8 {
            for keys in [true, false] {
                let g = 8;
                let q = if keys {
                    quantize_keys(&x, t, w, b, g).unwrap()
                } else {
                    quantize_values(&x, t, w, b, g).unwrap()
                };
                for (i, (&a, &c)) in x.iter().zip(&q.data).enumerate() {
                    let (row, col) = (i / w, i % w);
                    let gi = if keys {
                        col * t.div_ceil(g) + row / g
                    } else {
                        row * w.div_ceil(g) + col / g
                    };
                    // Half the stored step plus f32 rounding of the decode.
                    let tol = q.step[gi] / 2.0 + 4.0 * f32::EPSILON * 13.0;
                    assert!((a - c).abs() <= tol, "b={b} keys={keys} i={i}: {a} vs {c}");
                    // The stored step is the exact step rounded up by at most
                    // one f16 ulp.
                    assert!(q.step[gi] > 0.0);
                }
            }
        }
    }

    #[test]
    fn bits_count() {
        // 100 tokens × 48 channels, 4 bits, groups of 32: keys have
        // ⌈100/32⌉ = 4 groups per channel, values ⌈48/32⌉ = 2 per token.
        let x = vec![1.0f32; 100 * 48];
        let k = quantize_keys(&x, 100, 48, 4, 32).unwrap();
        assert_eq!(k.stored_bits, 100 * 48 * 4 + 32 * 48 * 4);
        assert_eq!(k.min.len(), 48 * 4);
        let v = quantize_values(&x, 100, 48, 4, 32).unwrap();
        assert_eq!(v.stored_bits, 100 * 48 * 4 + 32 * 100 * 2);
        assert!((k.bits_per_element() - bits_per_element(4, 32, 100, 48, true)).abs() < 1e-12);
        assert!((v.bits_per_element() - bits_per_element(4, 32, 100, 48, false)).abs() < 1e-12);
        // KIVI-4 in groups of 128: 4 + 32/128 = 4.25.
        assert_eq!(bits_per_element(4, 128, 1024, 1024, true), 4.25);
    }

    #[test]
    fn at_bits_picks_most_bits_then_smallest_group() {
        // 4.25 over 1024 × 1024: 4 bits, and groups of 128 are the first to fit.
        assert_eq!(at_bits(4.25, 1024, 1024).unwrap(), (4, 128));
        assert_eq!(at_bits(4.3, 1024, 1024).unwrap(), (4, 128));
        assert_eq!(at_bits(9.0, 1024, 1024).unwrap(), (8, 32));
        // 4.05: 4 bits only with one group per axis (4 + 32/1024 ≈ 4.03).
        assert_eq!(at_bits(4.05, 1024, 1024).unwrap(), (4, 1024));
        // 3.9 cannot afford 4 bits at all.
        assert_eq!(at_bits(3.9, 1024, 1024).unwrap().0, 3);
        assert!(at_bits(1.0, 1024, 1024).is_err());
        assert!(at_bits(4.0, 0, 8).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        let x = vec![0f32; 12];
        assert!(quantize_keys(&x, 3, 4, 0, 2).is_err());
        assert!(quantize_keys(&x, 3, 4, 9, 2).is_err());
        assert!(quantize_keys(&x, 3, 4, 2, 0).is_err());
        assert!(quantize_keys(&x, 3, 5, 2, 2).is_err());
        let mut y = x.clone();
        y[5] = f32::NAN;
        assert!(quantize_values(&y, 3, 4, 2, 2).is_err());
        let big = vec![1e6f32, -1e6, 0.0, 1.0];
        assert!(quantize_values(&big, 1, 4, 2, 4).is_err());
    }
}

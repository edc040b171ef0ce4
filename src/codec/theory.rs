//! The distortion guarantees of TurboQuant as functions (docs/THEORY.md).

use crate::{Codebook, Result};

/// d·C(d, b): the expected ‖u − û‖² of a unit vector u quantised with b bits
/// per coordinate after a Haar rotation, whatever u was.
pub fn expected_error(dim: usize, bits: u32) -> Result<f64> {
    Ok(Codebook::get(dim, bits)?.distortion())
}

/// 4^−b: no b-bit quantizer of the unit sphere can do better in the worst
/// case (TurboQuant, Theorem 3).
pub fn lower_bound(bits: u32) -> f64 {
    0.25f64.powi(bits as i32)
}

/// (√3·π/2)·4^−b ≈ 2.7207·4^−b: TurboQuant's Theorem 1 upper bound on d·C(d, b).
pub fn upper_bound(bits: u32) -> f64 {
    UPPER_BOUND_FACTOR * lower_bound(bits)
}

/// √3·π/2, the ratio between the upper and the lower bound.
pub const UPPER_BOUND_FACTOR: f64 = 2.720_699_046_351_326;

/// The dimension criterion (docs/THEORY.md §10): for a parameter group of
/// d-dimensional vectors, whether rotation plus Lloyd–Max with a stored
/// scale beats a plain per-coordinate fixed-point code at the same bits.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    /// Vector dimension d.
    pub dim: usize,
    /// Bits per coordinate of the TurboQuant code.
    pub bits: u32,
    /// Bits of the per-vector scale (0 when the norm is known, e.g. unit
    /// quaternions).
    pub scale_bits: u32,
    /// κ² = Σ_j (hi_j − lo_j)² / (12·E‖x‖²): how much of the fixed-point
    /// range the data's energy fills (1 for uniform data in the box, large
    /// for heavy tails and for norms spread over orders of magnitude).
    pub kappa2: f64,
    /// Expected error of TurboQuant relative to E‖x‖²: d·C(d, b).
    pub turboquant: f64,
    /// Expected error of fixed point at b + s/d bits per coordinate
    /// relative to E‖x‖²: κ²·4^−(b + s/d), Bennett's Δ²/12 per coordinate.
    /// Exact for data spread smoothly over each cell; data piled inside
    /// cells (peaked, heavy-tailed) can reach Δ²/4, three times more, and
    /// cells coarser than the data can land it nearer a level, down to about
    /// half: see [`Criterion::fixed_point_range`].
    pub fixed_point: f64,
}

/// The criterion's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rotation plus Lloyd–Max: below even fixed point's best case.
    TurboQuant,
    /// Fixed point: even its worst case (3× Bennett) is below TurboQuant.
    FixedPoint,
    /// Within fixed point's best-to-worst range: measure.
    Close,
}

impl Criterion {
    /// Evaluates the criterion from d, b, the scale's bits and κ².
    pub fn new(dim: usize, bits: u32, scale_bits: u32, kappa2: f64) -> Result<Criterion> {
        let turboquant = expected_error(dim, bits)?;
        let fixed_point = kappa2 * 4f64.powf(-(bits as f64 + scale_bits as f64 / dim as f64));
        Ok(Criterion {
            dim,
            bits,
            scale_bits,
            kappa2,
            turboquant,
            fixed_point,
        })
    }

    /// The κ² above which TurboQuant wins clearly: 2·4^(s/d)·d·C(d, b)·4^b.
    /// d·C(d, b)·4^b lies in [1, 2.72] (the bounds), so the scale's cost
    /// 4^(s/d) decides: small d needs a very uneven group for TurboQuant to
    /// pay.
    pub fn threshold(&self) -> f64 {
        2.0 * 4f64.powf(self.scale_bits as f64 / self.dim as f64)
            * self.turboquant
            * 4f64.powi(self.bits as i32)
    }

    /// The range fixed point's error falls in: ½ to 3× Bennett's
    /// [`Criterion::fixed_point`] (tests/criterion.rs measures it).
    pub fn fixed_point_range(&self) -> (f64, f64) {
        (0.5 * self.fixed_point, 3.0 * self.fixed_point)
    }

    /// Which quantiser the group should get.
    pub fn verdict(&self) -> Verdict {
        let (best, worst) = self.fixed_point_range();
        if self.turboquant < best {
            Verdict::TurboQuant
        } else if worst < self.turboquant {
            Verdict::FixedPoint
        } else {
            Verdict::Close
        }
    }
}

/// κ² of a group of vectors (rows of length d): the sum over coordinates of
/// the squared range over 12, divided by the mean squared norm. `None` for
/// an empty or all-zero group.
pub fn range_factor(data: &[f32], dim: usize) -> Option<f64> {
    if dim == 0 || data.is_empty() || !data.len().is_multiple_of(dim) {
        return None;
    }
    let n = data.len() / dim;
    let mut lo = vec![f64::INFINITY; dim];
    let mut hi = vec![f64::NEG_INFINITY; dim];
    let mut energy = 0.0;
    for row in data.chunks_exact(dim) {
        for (j, &v) in row.iter().enumerate() {
            let v = v as f64;
            lo[j] = lo[j].min(v);
            hi[j] = hi[j].max(v);
            energy += v * v;
        }
    }
    let energy = energy / n as f64;
    if energy == 0.0 {
        return None;
    }
    let spread: f64 = lo.iter().zip(&hi).map(|(l, h)| (h - l) * (h - l)).sum();
    Some(spread / 12.0 / energy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_is_sqrt3_times_pi_over_2() {
        assert!((UPPER_BOUND_FACTOR - 3f64.sqrt() * std::f64::consts::PI / 2.0).abs() < 1e-15);
    }

    #[test]
    fn codebooks_sit_between_the_bounds() {
        for &d in &[2usize, 3, 16, 45, 64, 1024] {
            for b in 1..=8 {
                let e = expected_error(d, b).unwrap();
                assert!(
                    e <= upper_bound(b),
                    "d={d} b={b}: {e} above the upper bound"
                );
                // d = 2 (the arcsine law) falls below 4^−b: the lower bound is
                // Shannon's for the sphere, not for a 2-D circle's coordinate.
                if d >= 3 {
                    assert!(e >= lower_bound(b) * (1.0 - 1e-12), "d={d} b={b}: {e}");
                }
            }
        }
    }
}

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

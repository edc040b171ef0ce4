//! Rate–distortion allocation of SH-rest bits across Gaussians
//! (docs/THEORY.md §12): choose b_i ∈ 0..=8 to minimise
//! Σ_i v_i·D(d, b_i) under a bit budget, where v_i = w_i·γ_i² is how much
//! Gaussian i's SH error shows (its weight times its SH energy) and D the
//! exact codebook distortion (D(d, 0) = 1: the SH-rest is dropped). The cost
//! of b ≥ 1 is d·b code bits plus the scale's bits; b = 0 costs nothing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::{Codebook, Result};

/// Widest per-Gaussian code.
pub const MAX_BITS: u8 = 8;

/// D(d, b) for b = 0..=8: 1 at b = 0, d·C(d, b) above.
pub fn distortions(dim: usize) -> Result<[f64; 9]> {
    let mut d = [1.0; 9];
    for b in 1..=8u32 {
        d[b as usize] = Codebook::get(dim, b)?.distortion();
    }
    Ok(d)
}

/// Bits of one Gaussian's SH-rest at width b.
pub fn cost(dim: usize, bits: u8, scale_bits: u32) -> u64 {
    if bits == 0 { 0 } else { dim as u64 * bits as u64 + scale_bits as u64 }
}

/// The widths on the lower convex hull of (cost, D), from 0 up: only these
/// are ever worth choosing, and along them the marginal gain per bit falls,
/// which is what makes the greedy allocation exact.
pub fn hull(dim: usize, scale_bits: u32, dist: &[f64; 9], max_bits: u8) -> Vec<u8> {
    let mut h: Vec<u8> = vec![0];
    for b in 1..=max_bits {
        while h.len() >= 2 {
            let (p, q) = (h[h.len() - 2], h[h.len() - 1]);
            let slope = |x: u8, y: u8| {
                (dist[x as usize] - dist[y as usize]) / (cost(dim, y, scale_bits) - cost(dim, x, scale_bits)) as f64
            };
            // q is not on the hull if going p → b directly gains more per bit.
            if slope(p, q) <= slope(p, b) {
                h.pop();
            } else {
                break;
            }
        }
        h.push(b);
    }
    h
}

#[derive(PartialEq)]
struct Step {
    gain: f64,
    index: u32,
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    // Largest gain first; ties to the lower index (deterministic).
    fn cmp(&self, other: &Self) -> Ordering {
        self.gain
            .total_cmp(&other.gain)
            .then_with(|| other.index.cmp(&self.index))
    }
}

/// The allocation: widths and the bits they spend.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// b_i per Gaussian.
    pub widths: Vec<u8>,
    /// Σ_i cost(b_i) ≤ the budget.
    pub bits: u64,
    /// Σ_i v_i·D(d, b_i), the predicted error it minimises.
    pub objective: f64,
}

/// Minimises Σ v_i·D(d, b_i) subject to Σ cost(b_i) ≤ `budget`, by greedy
/// marginal gain per bit along each Gaussian's convex hull. It stops at the
/// first upgrade that does not fit, so the result is the Lagrangian solution
/// for some λ: exactly optimal for the bits it spends (Everett 1963), which
/// fall short of the budget by less than one upgrade (d·8 + scale bits at
/// most).
pub fn allocate(values: &[f64], dim: usize, scale_bits: u32, budget: u64, max_bits: u8) -> Result<Allocation> {
    let dist = distortions(dim)?;
    let h = hull(dim, scale_bits, &dist, max_bits.min(MAX_BITS));
    // pos[i]: index into the hull of Gaussian i's width.
    let mut pos = vec![0usize; values.len()];
    let gain = |v: f64, k: usize| {
        let (a, b) = (h[k], h[k + 1]);
        v * (dist[a as usize] - dist[b as usize]) / (cost(dim, b, scale_bits) - cost(dim, a, scale_bits)) as f64
    };
    let mut heap: BinaryHeap<Step> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.0 && h.len() > 1)
        .map(|(i, &v)| Step {
            gain: gain(v, 0),
            index: i as u32,
        })
        .collect();
    let mut spent = 0u64;
    while let Some(step) = heap.pop() {
        let i = step.index as usize;
        let k = pos[i];
        let extra = cost(dim, h[k + 1], scale_bits) - cost(dim, h[k], scale_bits);
        if spent + extra > budget {
            break;
        }
        spent += extra;
        pos[i] = k + 1;
        if k + 2 < h.len() {
            heap.push(Step {
                gain: gain(values[i], k + 1),
                index: step.index,
            });
        }
    }
    let widths: Vec<u8> = pos.iter().map(|&k| h[k]).collect();
    let objective = widths.iter().zip(values).map(|(&b, &v)| v * dist[b as usize]).sum();
    Ok(Allocation {
        widths,
        bits: spent,
        objective,
    })
}

/// How much a Gaussian's SH error shows, before its SH energy γ².
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// w = 1: γ² alone.
    Energy,
    /// w = sigmoid(opacity).
    Opacity,
    /// w = sigmoid(opacity) × the product of the two largest axes.
    OpacityFootprint,
    /// w = Σ over views of the Gaussian's blending weight over all pixels
    /// (its expected screen coverage); needs views.
    Coverage,
}

impl Weight {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Weight::Energy => "energy",
            Weight::Opacity => "opacity",
            Weight::OpacityFootprint => "footprint",
            Weight::Coverage => "coverage",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hull_of_sh_dimensions_is_every_width() {
        for d in [9usize, 24, 45] {
            let dist = distortions(d).unwrap();
            assert_eq!(hull(d, 16, &dist, 8), (0..=8).collect::<Vec<u8>>(), "d = {d}");
        }
    }
}

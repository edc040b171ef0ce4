//! Rate–distortion allocation of SH-rest bits across Gaussians
//! (docs/THEORY.md §12): choose b_i ∈ 0..=8 to minimise
//! Σ_i v_i·D(d, b_i) under a bit budget, where v_i = w_i·γ_i² is how much
//! Gaussian i's SH error shows (its weight times its SH energy) and D the
//! exact codebook distortion (D(d, 0) = 1: the SH-rest is dropped). The cost
//! of b ≥ 1 is d·b code bits plus the scale's bits; b = 0 costs nothing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::splat::scene::{Scene, rest_per_channel, sigmoid};
use crate::{Codebook, Error, Result};

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
    if bits == 0 {
        0
    } else {
        dim as u64 * bits as u64 + scale_bits as u64
    }
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
                (dist[x as usize] - dist[y as usize])
                    / (cost(dim, y, scale_bits) - cost(dim, x, scale_bits)) as f64
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
pub fn allocate(
    values: &[f64],
    dim: usize,
    scale_bits: u32,
    budget: u64,
    max_bits: u8,
) -> Result<Allocation> {
    let dist = distortions(dim)?;
    let h = hull(dim, scale_bits, &dist, max_bits.min(MAX_BITS));
    // pos[i]: index into the hull of Gaussian i's width.
    let mut pos = vec![0usize; values.len()];
    let gain = |v: f64, k: usize| {
        let (a, b) = (h[k], h[k + 1]);
        v * (dist[a as usize] - dist[b as usize])
            / (cost(dim, b, scale_bits) - cost(dim, a, scale_bits)) as f64
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
    let objective = widths
        .iter()
        .zip(values)
        .map(|(&b, &v)| v * dist[b as usize])
        .sum();
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

/// v_i = w_i·γ_i² for every Gaussian of the input: γ_i² is the energy of
/// its SH-rest truncated to `degree`, w_i the weight. `coverage` (one value
/// per Gaussian, from a renderer) is needed for [`Weight::Coverage`].
pub fn importance(
    scene: &Scene,
    degree: u8,
    weight: Weight,
    coverage: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let (k_in, k) = (
        rest_per_channel(scene.sh_degree),
        rest_per_channel(degree.min(scene.sh_degree)),
    );
    if weight == Weight::Coverage && coverage.is_none_or(|c| c.len() != scene.len()) {
        return Err(Error::InvalidArgument(
            "the coverage weight needs one coverage value per Gaussian (render views first)".into(),
        ));
    }
    Ok((0..scene.len())
        .into_par_iter()
        .map(|i| {
            let r = scene.rest(i);
            let g2: f64 = (0..3)
                .flat_map(|c| &r[c * k_in..c * k_in + k])
                .map(|&v| (v as f64) * (v as f64))
                .sum();
            let alpha = sigmoid(scene.opacity[i]) as f64;
            let w = match weight {
                Weight::Energy => 1.0,
                Weight::Opacity => alpha,
                Weight::OpacityFootprint => {
                    let mut s = scene.scales[i];
                    s.sort_by(f32::total_cmp);
                    alpha * ((s[1] + s[2]) as f64).exp()
                }
                Weight::Coverage => coverage.unwrap()[i],
            };
            w * g2
        })
        .collect())
}

/// Widths for an average of `avg_bits` code bits per SH coefficient over
/// the Gaussians kept (`kept[i]`), counting the scales: the budget is
/// N_kept·(d·b̄ + 16) bits, which is exactly the size of uniform b̄ when b̄ is
/// an integer. Gaussians not kept get width 0.
pub fn for_average_bits(
    values: &[f64],
    kept: &[bool],
    dim: usize,
    avg_bits: f64,
) -> Result<Allocation> {
    if !(0.0..=8.0).contains(&avg_bits) || !avg_bits.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "average SH bits {avg_bits} must be in 0..=8"
        )));
    }
    let n = kept.iter().filter(|&&k| k).count() as u64;
    let budget = (n as f64 * (dim as f64 * avg_bits + SCALE_BITS as f64)).floor() as u64;
    let v: Vec<f64> = values
        .iter()
        .zip(kept)
        .map(|(&v, &k)| if k { v } else { 0.0 })
        .collect();
    allocate(&v, dim, SCALE_BITS, budget, MAX_BITS)
}

/// The fewest bits whose allocation brings Σ v_i·D(d, b_i) to `target` or
/// below, by the same greedy order (so it is the allocation of its own
/// budget). Widths for Gaussians with v_i = 0 stay 0.
pub fn for_objective(values: &[f64], dim: usize, target: f64) -> Result<Allocation> {
    let dist = distortions(dim)?;
    let h = hull(dim, SCALE_BITS, &dist, MAX_BITS);
    let mut pos = vec![0usize; values.len()];
    let mut objective: f64 = values.iter().sum();
    let gain = |v: f64, k: usize| {
        let (a, b) = (h[k], h[k + 1]);
        v * (dist[a as usize] - dist[b as usize])
            / (cost(dim, b, SCALE_BITS) - cost(dim, a, SCALE_BITS)) as f64
    };
    let mut heap: BinaryHeap<Step> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.0)
        .map(|(i, &v)| Step {
            gain: gain(v, 0),
            index: i as u32,
        })
        .collect();
    let mut spent = 0u64;
    while objective > target {
        let Some(step) = heap.pop() else { break };
        let i = step.index as usize;
        let k = pos[i];
        let (a, b) = (h[k], h[k + 1]);
        spent += cost(dim, b, SCALE_BITS) - cost(dim, a, SCALE_BITS);
        objective -= values[i] * (dist[a as usize] - dist[b as usize]);
        pos[i] = k + 1;
        if k + 2 < h.len() {
            heap.push(Step {
                gain: gain(values[i], k + 1),
                index: step.index,
            });
        }
    }
    let widths: Vec<u8> = pos.iter().map(|&k| h[k]).collect();
    let objective = widths
        .iter()
        .zip(values)
        .map(|(&b, &v)| v * dist[b as usize])
        .sum();
    Ok(Allocation {
        widths,
        bits: spent,
        objective,
    })
}

/// Bits of the f16 scale a Gaussian with b > 0 stores.
pub const SCALE_BITS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hull_of_sh_dimensions_is_every_width() {
        for d in [9usize, 24, 45] {
            let dist = distortions(d).unwrap();
            assert_eq!(
                hull(d, 16, &dist, 8),
                (0..=8).collect::<Vec<u8>>(),
                "d = {d}"
            );
        }
    }
}

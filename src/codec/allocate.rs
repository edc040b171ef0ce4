//! Rate–distortion allocation of code widths across vectors
//! (docs/THEORY.md §12). Given how much each vector's error shows, v_i ≥ 0,
//! choose b_i ∈ 0..=8 to minimise Σ_i v_i·D(d, b_i) under a bit budget,
//! where D is the exact codebook distortion and D(d, 0) = 1 (the vector is
//! dropped). Width b ≥ 1 costs d·b code bits plus the scale's bits; b = 0
//! costs nothing.
//!
//! The allocator knows nothing about where the vectors come from: each
//! workload supplies its own v_i (for splats,
//! [`splat::importance`](crate::splat::importance)).
//!
//! ```
//! use turboquant3d::codec::allocate::{self, SCALE_BITS};
//! // Four vectors of d = 45; the first matters 100 times more than the rest.
//! let v = [100.0, 1.0, 1.0, 1.0];
//! let a = allocate::for_average_bits(&v, &[true; 4], 45, 2.0).unwrap();
//! // The budget is what uniform b = 2 would spend, scales included.
//! assert!(a.bits <= 4 * (45 * 2 + SCALE_BITS as u64));
//! // The important vector gets the widest code.
//! assert!(a.widths[0] > a.widths[1]);
//! ```

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::{Codebook, Error, Result};

/// Widest per-vector code.
pub const MAX_BITS: u8 = 8;

/// Bits of the f16 scale a vector with b > 0 stores.
pub const SCALE_BITS: u32 = 16;

/// D(d, b) for b = 0..=8: 1 at b = 0, d·C(d, b) above.
pub fn distortions(dim: usize) -> Result<[f64; 9]> {
    // The eight codebooks are solved in parallel, the widest (slowest,
    // about as long as the rest together) first.
    let solved: Vec<f64> = (1..=8u32)
        .rev()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|b| Ok(Codebook::get(dim, b)?.distortion()))
        .collect::<Result<_>>()?;
    let mut d = [1.0; 9];
    for (b, x) in (1..=8).rev().zip(solved) {
        d[b] = x;
    }
    Ok(d)
}

/// Bits of one vector at width b.
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

/// The allocation: widths and the bits they spend.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// b_i per vector.
    pub widths: Vec<u8>,
    /// Σ_i cost(b_i).
    pub bits: u64,
    /// Σ_i v_i·D(d, b_i), the predicted error it minimises.
    pub objective: f64,
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

/// The greedy order of upgrades: each step moves the vector whose next hull
/// width gains the most error per bit. `take(spent, extra, objective)` is
/// asked before each step (bits spent so far, the step's extra bits, the
/// running Σ v_i·D) and stops the greedy by returning false.
fn greedy(
    values: &[f64],
    dim: usize,
    scale_bits: u32,
    max_bits: u8,
    mut take: impl FnMut(u64, u64, f64) -> bool,
) -> Result<Allocation> {
    let dist = distortions(dim)?;
    let h = hull(dim, scale_bits, &dist, max_bits.min(MAX_BITS));
    let extra = |k: usize| cost(dim, h[k + 1], scale_bits) - cost(dim, h[k], scale_bits);
    let drop = |k: usize| dist[h[k] as usize] - dist[h[k + 1] as usize];
    let gain = |v: f64, k: usize| v * drop(k) / extra(k) as f64;
    // pos[i]: index into the hull of vector i's width.
    let mut pos = vec![0usize; values.len()];
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
    let mut objective: f64 = values.iter().sum();
    while let Some(step) = heap.peek() {
        let i = step.index as usize;
        let k = pos[i];
        if !take(spent, extra(k), objective) {
            break;
        }
        heap.pop();
        spent += extra(k);
        objective -= values[i] * drop(k);
        pos[i] = k + 1;
        if k + 2 < h.len() {
            heap.push(Step {
                gain: gain(values[i], k + 1),
                index: i as u32,
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

/// Minimises Σ v_i·D(d, b_i) subject to Σ cost(b_i) ≤ `budget`, by greedy
/// marginal gain per bit along each vector's convex hull. It stops at the
/// first upgrade that does not fit, so the result is the Lagrangian solution
/// for some λ: exactly optimal for the bits it spends (Everett 1963), which
/// fall short of the budget by less than one upgrade (d·8 + scale bits at
/// most).
///
/// The result is [`allocate_greedy`]'s, found in parallel: the greedy takes
/// the upgrades in one global order, so the answer is the longest prefix of
/// that order that fits, and the λ where the prefix ends is found by a
/// radix selection over the gains (see `threshold`). Identical widths for
/// any thread count.
pub fn allocate(
    values: &[f64],
    dim: usize,
    scale_bits: u32,
    budget: u64,
    max_bits: u8,
) -> Result<Allocation> {
    let dist = distortions(dim)?;
    let h = hull(dim, scale_bits, &dist, max_bits.min(MAX_BITS));
    let steps = Steps::new(&h, &dist, dim, scale_bits);
    // Gains must be ordered as their bits are (non-negative, not NaN).
    if steps.drop.iter().any(|d| d.is_nan() || *d < 0.0) {
        return allocate_greedy(values, dim, scale_bits, budget, max_bits);
    }
    let pool = Pool {
        steps: std::slice::from_ref(&steps),
        class: &[],
    };
    let widths = pool.allocate(values, budget);
    let widths: Vec<u8> = widths.into_par_iter().map(|k| h[k as usize]).collect();
    let bits = widths
        .par_iter()
        .map(|&b| cost(dim, b, scale_bits))
        .sum::<u64>();
    let objective = widths
        .iter()
        .zip(values)
        .map(|(&b, &v)| v * dist[b as usize])
        .sum();
    Ok(Allocation {
        widths,
        bits,
        objective,
    })
}

/// [`allocate`] by the greedy itself: a heap of each vector's next
/// upgrade. Sequential; the reference the parallel form is tested against.
pub fn allocate_greedy(
    values: &[f64],
    dim: usize,
    scale_bits: u32,
    budget: u64,
    max_bits: u8,
) -> Result<Allocation> {
    greedy(values, dim, scale_bits, max_bits, |spent, extra, _| {
        spent + extra <= budget
    })
}

/// One class of vectors in a mixed allocation: its dimension, the bits of
/// its scale, and its widest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// Vector dimension d.
    pub dim: usize,
    /// Bits stored per vector of width ≥ 1 besides its codes.
    pub scale_bits: u32,
    /// Widest code, at most [`MAX_BITS`].
    pub max_bits: u8,
}

/// A class's hull widths, distortions and steps.
type Hull = (Vec<u8>, [f64; 9], Steps);

/// Each class's hull and steps, the classes and lengths checked.
fn class_hulls(values: &[f64], class: &[u8], classes: &[Class]) -> Result<Vec<Hull>> {
    if class.len() != values.len() {
        return Err(Error::Shape(format!(
            "{} values but {} classes",
            values.len(),
            class.len()
        )));
    }
    if classes.is_empty() || classes.len() > 256 {
        return Err(Error::InvalidArgument(format!(
            "a mixed allocation needs 1..=256 classes, got {}",
            classes.len()
        )));
    }
    if let Some(i) = class.iter().position(|&c| c as usize >= classes.len()) {
        return Err(Error::InvalidArgument(format!(
            "vector {i} is of class {}, there are {}",
            class[i],
            classes.len()
        )));
    }
    classes
        .iter()
        .map(|c| {
            let dist = distortions(c.dim)?;
            let h = hull(c.dim, c.scale_bits, &dist, c.max_bits.min(MAX_BITS));
            let steps = Steps::new(&h, &dist, c.dim, c.scale_bits);
            Ok((h, dist, steps))
        })
        .collect()
}

/// [`allocate`] over vectors of several classes (dimensions, scale sizes,
/// widest codes) under one budget: minimises Σ_i v_i·D(d_{c(i)}, b_i)
/// subject to Σ_i cost_{c(i)}(b_i) ≤ `budget`. Each vector's steps lie on
/// its own class's hull, and the greedy takes every step in one global
/// order of gain per bit, so the result is again the Lagrangian optimum
/// for the bits it spends, found by the same parallel radix selection;
/// [`allocate_classes_greedy`] is the heap it is tested against. A key
/// and a value, or a head's main and outlier channels, share one budget
/// this way.
pub fn allocate_classes(
    values: &[f64],
    class: &[u8],
    classes: &[Class],
    budget: u64,
) -> Result<Allocation> {
    let hulls = class_hulls(values, class, classes)?;
    if hulls
        .iter()
        .any(|(_, _, s)| s.drop.iter().any(|d| d.is_nan() || *d < 0.0))
    {
        return allocate_classes_greedy(values, class, classes, budget);
    }
    let steps: Vec<Steps> = hulls.iter().map(|(_, _, s)| s.clone()).collect();
    let pos = Pool {
        steps: &steps,
        class,
    }
    .allocate(values, budget);
    let widths: Vec<u8> = pos
        .par_iter()
        .zip(class.par_iter())
        .map(|(&k, &c)| hulls[c as usize].0[k as usize])
        .collect();
    Ok(summarise(widths, values, class, classes, &hulls))
}

/// [`allocate_classes`] by a heap of each vector's next upgrade
/// (sequential; the reference).
pub fn allocate_classes_greedy(
    values: &[f64],
    class: &[u8],
    classes: &[Class],
    budget: u64,
) -> Result<Allocation> {
    let hulls = class_hulls(values, class, classes)?;
    let steps = |i: usize| &hulls[class[i] as usize].2;
    let gain = |i: usize, k: usize| {
        let s = steps(i);
        values[i] * s.drop[k] / s.extra[k] as f64
    };
    let mut pos = vec![0usize; values.len()];
    let mut heap: BinaryHeap<Step> = (0..values.len())
        .filter(|&i| values[i] > 0.0 && !steps(i).extra.is_empty())
        .map(|i| Step {
            gain: gain(i, 0),
            index: i as u32,
        })
        .collect();
    let mut spent = 0u64;
    while let Some(step) = heap.peek() {
        let i = step.index as usize;
        let k = pos[i];
        let e = steps(i).extra[k];
        if spent + e > budget {
            break;
        }
        heap.pop();
        spent += e;
        pos[i] = k + 1;
        if k + 1 < steps(i).extra.len() {
            heap.push(Step {
                gain: gain(i, k + 1),
                index: i as u32,
            });
        }
    }
    let widths = pos
        .iter()
        .zip(class)
        .map(|(&k, &c)| hulls[c as usize].0[k])
        .collect();
    Ok(summarise(widths, values, class, classes, &hulls))
}

fn summarise(
    widths: Vec<u8>,
    values: &[f64],
    class: &[u8],
    classes: &[Class],
    hulls: &[Hull],
) -> Allocation {
    let bits = widths
        .iter()
        .zip(class)
        .map(|(&b, &c)| cost(classes[c as usize].dim, b, classes[c as usize].scale_bits))
        .sum();
    let objective = widths
        .iter()
        .zip(values)
        .zip(class)
        .map(|((&b, &v), &c)| v * hulls[c as usize].1[b as usize])
        .sum();
    Allocation {
        widths,
        bits,
        objective,
    }
}

/// The upgrades along a hull: step k goes from width h[k] to h[k + 1].
#[derive(Clone)]
struct Steps {
    extra: Vec<u64>,
    drop: Vec<f64>,
}

/// Bits of the gain a radix pass sorts by: a 4,096-bucket table (64 KiB)
/// per piece, and the first pass resolves a gain's sign and exponent.
const DIGIT: u32 = 12;
/// Upgrades few enough to sort outright.
const FEW: u64 = 1 << 16;

impl Steps {
    fn new(h: &[u8], dist: &[f64; 9], dim: usize, scale_bits: u32) -> Steps {
        let k = h.len().saturating_sub(1);
        Steps {
            extra: (0..k)
                .map(|k| cost(dim, h[k + 1], scale_bits) - cost(dim, h[k], scale_bits))
                .collect(),
            drop: (0..k)
                .map(|k| dist[h[k] as usize] - dist[h[k + 1] as usize])
                .collect(),
        }
    }

    /// The greedy's order key of vector `v`'s steps, as f64 bits: the gain
    /// exactly as `greedy` computes it, lowered to the running minimum along
    /// the chain. The heap cannot take step k + 1 before step k, and takes
    /// it straight after when rounding made it gain more; so the heap's
    /// order is the sort by (key descending, vector ascending, step
    /// ascending). Keys are non-increasing along a chain.
    fn keys(&self, v: f64, out: &mut [u64; 8]) -> usize {
        if v.is_nan() || v <= 0.0 {
            return 0; // never upgraded (the greedy leaves it out of the heap)
        }
        let mut low = f64::INFINITY;
        for (k, (&e, &d)) in self.extra.iter().zip(&self.drop).enumerate() {
            let g = v * d / e as f64;
            if g < low {
                low = g;
            }
            out[k] = low.to_bits();
        }
        self.extra.len()
    }
}

/// Items of several classes (each its own hull of steps) allocated under one
/// budget: item i belongs to `steps[class[i]]`, or to `steps[0]` when
/// `class` is empty.
struct Pool<'a> {
    steps: &'a [Steps],
    class: &'a [u8],
}

impl Pool<'_> {
    fn of(&self, i: usize) -> &Steps {
        &self.steps[if self.class.is_empty() {
            0
        } else {
            self.class[i] as usize
        }]
    }

    /// Hull positions per vector: the longest prefix of the greedy order
    /// whose bits fit in `budget`.
    fn allocate(&self, values: &[f64], budget: u64) -> Vec<u8> {
        // Select the digits of the key at which the budget runs out, top
        // down: `prefix` holds the `known` top bits of that key, `left` the
        // budget after every step whose key is above the prefix's range.
        let (mut prefix, mut known, mut left) = (0u64, 0u32, budget);
        let in_range =
            |key: u64, prefix: u64, known: u32| known == 0 || key >> (64 - known) == prefix;
        // Each pass histograms the next digit over a few contiguous pieces
        // (one per worker and then some, for balance): small tables that
        // stay in cache, summed exactly in integers, so the result does not
        // depend on how the pieces fall.
        let piece = values
            .len()
            .div_ceil(4 * rayon::current_num_threads())
            .max(1 << 12);
        loop {
            let width = DIGIT.min(64 - known);
            let shift = 64 - known - width;
            let mask = (1u64 << width) - 1;
            let hists: Vec<Vec<(u64, u64)>> = values
                .par_chunks(piece)
                .enumerate()
                .map(|(c, chunk)| {
                    let mut hist = vec![(0u64, 0u64); 1 << width];
                    let mut keys = [0u64; 8];
                    for (j, &v) in chunk.iter().enumerate() {
                        let i = c * piece + j;
                        let steps = self.of(i);
                        let n = steps.keys(v, &mut keys);
                        for (k, &key) in keys[..n].iter().enumerate() {
                            if in_range(key, prefix, known) {
                                let b = &mut hist[((key >> shift) & mask) as usize];
                                b.0 += steps.extra[k];
                                b.1 += 1;
                            }
                        }
                    }
                    hist
                })
                .collect();
            let mut hist = vec![(0u64, 0u64); 1 << width];
            for h in &hists {
                for (x, y) in hist.iter_mut().zip(h) {
                    x.0 += y.0;
                    x.1 += y.1;
                }
            }
            // The highest bucket that does not fit in what is left.
            let mut crossing = None;
            for (b, &(bits, count)) in hist.iter().enumerate().rev() {
                if bits > left {
                    crossing = Some((b as u64, count));
                    break;
                }
                left -= bits;
            }
            let Some((b, count)) = crossing else {
                // Only possible on the first pass (a crossing bucket's
                // sub-buckets add up to more than is left): every step fits.
                return self.positions(values, prefix, known, &[], 0);
            };
            prefix = (prefix << width) | b;
            known += width;
            if count <= FEW || known == 64 {
                break;
            }
        }
        // The steps in the crossing range, in the greedy's order; take them
        // until the first that does not fit.
        let mut cand: Vec<(u64, u32, u8)> = values
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, &v)| {
                let mut keys = [0u64; 8];
                let n = self.of(i).keys(v, &mut keys);
                (0..n)
                    .filter(move |&k| in_range(keys[k], prefix, known))
                    .map(move |k| (keys[k], i as u32, k as u8))
            })
            .collect();
        cand.par_sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut taken = 0;
        for &(_, i, k) in &cand {
            let e = self.of(i as usize).extra[k as usize];
            if e > left {
                break;
            }
            left -= e;
            taken += 1;
        }
        self.positions(values, prefix, known, &cand, taken)
    }

    /// Hull positions: every step whose key is above the range of
    /// `prefix`, plus the first `taken` of the sorted candidates.
    fn positions(
        &self,
        values: &[f64],
        prefix: u64,
        known: u32,
        cand: &[(u64, u32, u8)],
        taken: usize,
    ) -> Vec<u8> {
        let mut pos: Vec<u8> = values
            .par_iter()
            .enumerate()
            .map(|(i, &v)| {
                let mut keys = [0u64; 8];
                let n = self.of(i).keys(v, &mut keys);
                if known == 0 {
                    return n as u8;
                }
                keys[..n]
                    .iter()
                    .take_while(|&&key| key >> (64 - known) > prefix)
                    .count() as u8
            })
            .collect();
        for &(_, i, k) in &cand[..taken] {
            pos[i as usize] = k + 1;
        }
        pos
    }
}

/// Widths for an average of `avg_bits` code bits per coordinate over the
/// vectors kept (`kept[i]`), counting the scales: the budget is
/// N_kept·(d·b̄ + 16) bits, which is exactly the size of uniform b̄ when b̄ is
/// an integer. Vectors not kept get width 0.
///
/// ```
/// use turboquant3d::codec::allocate::{cost, for_average_bits, SCALE_BITS};
/// let v = [5.0, 0.0, 1.0];
/// let a = for_average_bits(&v, &[true, true, false], 9, 3.0).unwrap();
/// assert_eq!(a.widths[1..], [0, 0]); // zero weight, and not kept
/// assert!(a.bits <= 2 * cost(9, 3, SCALE_BITS));
/// ```
pub fn for_average_bits(
    values: &[f64],
    kept: &[bool],
    dim: usize,
    avg_bits: f64,
) -> Result<Allocation> {
    if !(0.0..=8.0).contains(&avg_bits) || !avg_bits.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "average bits per coordinate {avg_bits} must be in 0..=8"
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
/// budget). Widths for vectors with v_i = 0 stay 0.
pub fn for_objective(values: &[f64], dim: usize, target: f64) -> Result<Allocation> {
    greedy(values, dim, SCALE_BITS, MAX_BITS, |_, _, objective| {
        objective > target
    })
}

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

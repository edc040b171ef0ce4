//! Widths for a byte budget: every group's width b_g ∈ 0..=8 and the scale
//! code's bits S, chosen to minimise the predicted weighted error
//! Σ_g v_g·D(d, b_g) (docs/THEORY.md §14) so that the whole file, every
//! stored byte counted, fits the budget.
//!
//! - Per group: the allocator's exact greedy over all groups
//!   ([`crate::codec::allocate`]); width 0 makes a group negligible.
//! - Per level: the groups the per-group allocation leaves at 0 are
//!   negligible; the others share their level's width, chosen by the same
//!   greedy over levels (each level's upgrade costs its kept groups' bits).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::codec::allocate::{self, MAX_BITS, cost, distortions, hull};
use crate::grid::compressed::WidthMode;
use crate::grid::file::{codebook_len, fixed_len, width_stream};
use crate::{Error, Result};

/// The choice: widths, scale bits and what they predict.
#[derive(Debug, Clone)]
pub struct Plan {
    /// b per group.
    pub widths: Vec<u8>,
    /// Bits per scale code.
    pub scale_bits: u8,
    /// The file's exact size in bytes.
    pub bytes: u64,
    /// Σ v_g·D(d, b_g) plus the scale codes' predicted error.
    pub objective: f64,
}

/// The scale-code widths tried when the caller does not fix one.
pub const SCALE_BITS_TRIED: std::ops::RangeInclusive<u8> = 4..=12;

/// The sizes that do not depend on the widths.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Vector dimension d.
    pub dim: usize,
    /// Levels L.
    pub levels: usize,
    /// Bytes of the stored rotation.
    pub rotation_bytes: usize,
}

/// The file's size for these widths at S bits per scale code.
pub fn file_bytes(layout: &Layout, widths: &[u8], scale_bits: u8) -> Result<u64> {
    let used: Vec<u8> = (1..=MAX_BITS).filter(|b| widths.contains(b)).collect();
    let coded = widths.iter().filter(|&&b| b > 0).count() as u64;
    let code_bits: u64 = widths.iter().map(|&b| layout.dim as u64 * b as u64).sum();
    Ok(fixed_len(layout.levels, layout.rotation_bytes)
        + codebook_len(&used)
        + width_stream(widths)?.len() as u64
        + (coded * scale_bits as u64).div_ceil(8)
        + code_bits.div_ceil(8))
}

/// Predicted relative error of an S-bit log-domain scale code over a range
/// of `octaves`: a log2 rounding error uniform in ±step/2 gives
/// E[δ²] = (ln 2 · step)² / 12 with step = octaves / (2^S − 1).
pub fn scale_error(octaves: f64, scale_bits: u8) -> f64 {
    let step = octaves / ((1u64 << scale_bits) - 1) as f64;
    (std::f64::consts::LN_2 * step).powi(2) / 12.0
}

#[derive(PartialEq)]
struct Step {
    gain: f64,
    level: usize,
}

impl Eq for Step {}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        self.gain
            .total_cmp(&other.gain)
            .then_with(|| other.level.cmp(&self.level))
    }
}

/// One width per level for the kept groups: greedy marginal gain per bit
/// along the hull, where level l's step costs n_l times a group's; a step
/// that no longer fits retires its level and the rest go on.
fn level_widths(
    level_of: &[u16],
    values: &[f64],
    kept: &[bool],
    levels: usize,
    dim: usize,
    scale_bits: u8,
    budget: u64,
) -> Result<Vec<u8>> {
    let dist = distortions(dim)?;
    let h = hull(dim, scale_bits as u32, &dist, MAX_BITS);
    let mut value = vec![0f64; levels];
    let mut count = vec![0u64; levels];
    for ((&l, &v), &k) in level_of.iter().zip(values).zip(kept) {
        if k {
            value[l as usize] += v;
            count[l as usize] += 1;
        }
    }
    let extra =
        |k: usize| cost(dim, h[k + 1], scale_bits as u32) - cost(dim, h[k], scale_bits as u32);
    let gain = |l: usize, k: usize| {
        value[l] * (dist[h[k] as usize] - dist[h[k + 1] as usize])
            / (count[l] as f64 * extra(k) as f64)
    };
    let mut pos = vec![0usize; levels];
    let mut heap: BinaryHeap<Step> = (0..levels)
        .filter(|&l| count[l] > 0 && value[l] > 0.0 && h.len() > 1)
        .map(|l| Step {
            gain: gain(l, 0),
            level: l,
        })
        .collect();
    let mut spent = 0u64;
    while let Some(Step { level: l, .. }) = heap.pop() {
        let k = pos[l];
        let step = count[l] * extra(k);
        if spent + step > budget {
            continue;
        }
        spent += step;
        pos[l] = k + 1;
        if k + 2 < h.len() {
            heap.push(Step {
                gain: gain(l, k + 1),
                level: l,
            });
        }
    }
    Ok(level_of
        .iter()
        .zip(kept)
        .map(|(&l, &k)| if k { h[pos[l as usize]] } else { 0 })
        .collect())
}

/// Widths for `code_budget` bits of codes and scales.
fn widths_for(
    mode: WidthMode,
    level_of: &[u16],
    values: &[f64],
    levels: usize,
    dim: usize,
    scale_bits: u8,
    code_budget: u64,
) -> Result<Vec<u8>> {
    let a = allocate::allocate(values, dim, scale_bits as u32, code_budget, MAX_BITS)?;
    match mode {
        WidthMode::PerGroup => Ok(a.widths),
        WidthMode::PerLevel => {
            let kept: Vec<bool> = a.widths.iter().map(|&b| b > 0).collect();
            level_widths(
                level_of,
                values,
                &kept,
                levels,
                dim,
                scale_bits,
                code_budget,
            )
        }
    }
}

/// The predicted error of widths at S scale bits: Σ v_g·[D(b_g) +
/// (1 − D(b_g))·E δ²], with each level's scale range taken from its coded
/// groups' norms.
fn objective(
    widths: &[u8],
    values: &[f64],
    norms: &[f64],
    level_of: &[u16],
    levels: usize,
    dim: usize,
    scale_bits: u8,
) -> Result<f64> {
    let dist = distortions(dim)?;
    let mut lo = vec![f64::INFINITY; levels];
    let mut hi = vec![f64::NEG_INFINITY; levels];
    for ((&b, &n), &l) in widths.iter().zip(norms).zip(level_of) {
        if b > 0 && n > 0.0 {
            lo[l as usize] = lo[l as usize].min(n.log2());
            hi[l as usize] = hi[l as usize].max(n.log2());
        }
    }
    Ok(widths
        .iter()
        .zip(values)
        .zip(level_of)
        .map(|((&b, &v), &l)| {
            let d = dist[b as usize];
            if b == 0 {
                v
            } else {
                let octaves = (hi[l as usize] - lo[l as usize]).max(0.0);
                v * (d + (1.0 - d) * scale_error(octaves, scale_bits))
            }
        })
        .sum())
}

/// Chooses widths and scale bits so that the file is at most
/// `budget_bytes`. `values` are the groups' weights v_g, `norms` their ‖x_g‖.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    layout: &Layout,
    mode: WidthMode,
    level_of: &[u16],
    values: &[f64],
    norms: &[f64],
    budget_bytes: u64,
    scale_bits: Option<u8>,
) -> Result<Plan> {
    let floor = file_bytes(layout, &vec![0; values.len()], 1)?;
    if budget_bytes < floor {
        return Err(Error::InvalidArgument(format!(
            "a budget of {budget_bytes} bytes is below the {floor} bytes of headers, rotation and widths alone"
        )));
    }
    let tried: Vec<u8> = match scale_bits {
        Some(s) => vec![s],
        None => SCALE_BITS_TRIED.collect(),
    };
    let mut best: Option<Plan> = None;
    for s in tried {
        // Start from the smallest side streams and add back each overshoot.
        let mut slack = 0u64;
        let mut overhead = floor;
        for _ in 0..12 {
            let code_budget = (budget_bytes.saturating_sub(overhead) * 8).saturating_sub(slack);
            let w = widths_for(
                mode,
                level_of,
                values,
                layout.levels,
                layout.dim,
                s,
                code_budget,
            )?;
            let bytes = file_bytes(layout, &w, s)?;
            if bytes <= budget_bytes {
                let obj = objective(&w, values, norms, level_of, layout.levels, layout.dim, s)?;
                if best.as_ref().is_none_or(|b| obj < b.objective) {
                    best = Some(Plan {
                        widths: w,
                        scale_bits: s,
                        bytes,
                        objective: obj,
                    });
                }
                break;
            }
            let fixed_now = bytes
                - (w.iter().filter(|&&b| b > 0).count() as u64 * s as u64).div_ceil(8)
                - w.iter()
                    .map(|&b| layout.dim as u64 * b as u64)
                    .sum::<u64>()
                    .div_ceil(8);
            if fixed_now > overhead {
                overhead = fixed_now;
            } else {
                slack += 8 * (bytes - budget_bytes) + 64;
            }
        }
    }
    best.ok_or_else(|| {
        Error::InvalidArgument(format!("no widths fit a budget of {budget_bytes} bytes"))
    })
}

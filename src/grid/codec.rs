//! Compressing a hash grid: group the entries (g per vector, d = g·F),
//! weigh each group, choose widths for the byte budget ([`budget`]),
//! encode each width's groups with TurboQuant on the GPU or the CPU (the
//! same bytes), and code the scales in the log domain.
//!
//! ```
//! use turboquant3d::grid::codec::{GridOptions, compress};
//! use turboquant3d::grid::table::{Dtype, Grid};
//! // 2 levels × 2048 entries × 2 features (the file's fixed part, 1.2 KB
//! // with the d = 16 rotation, wants a table of some size).
//! let data: Vec<f32> = (0..8192).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let grid = Grid::from_array(&[2, 2048, 2], data, Dtype::F32, None, None).unwrap();
//! let (c, _) = compress(&grid, &GridOptions::new(6.0), None).unwrap();
//! let back = c.decode().unwrap();
//! assert_eq!(back.shape, grid.shape);
//! assert!(turboquant3d::grid::table::nmse(&grid.data, &back.data) < 0.05);
//! ```

use std::sync::Arc;

use half::f16;

use crate::codec::allocate::distortions;
use crate::codec::packing::copy_bits;
use crate::gpu::{Engine, Ran};
use crate::grid::budget::{self, Layout};
use crate::grid::compressed::{CompressedGrid, ScaleRange, WidthMode};
use crate::grid::group::Groups;
use crate::grid::table::Grid;
use crate::{
    Codebook, Error, Quantizer, Result, Rotation, RotationKind, ScaleFormat, ScaleMode, Scales,
};

/// Entries per group by default: d = 16 at F = 2 (docs/THEORY.md §14).
pub const DEFAULT_GROUP: usize = 8;

/// A group is negligible, whatever the budget, when its norm is below this
/// fraction of the largest group's: its scale would underflow f16 after the
/// power-of-two prescale that puts the largest norm near 2^9.
pub const NEGLIGIBLE_NORM: f64 = 1.0 / (1u64 << 23) as f64;

/// What to compress to, and how.
#[derive(Debug, Clone)]
pub struct GridOptions {
    /// Average bits per feature, counting every byte of the file.
    pub bits: f64,
    /// Entries per group g.
    pub group: usize,
    /// Width per group or per level.
    pub widths: WidthMode,
    /// Bits per scale code; `None` tries 4..=12 and keeps the best.
    pub scale_bits: Option<u8>,
    /// Least squares (default) or the plain norm.
    pub scale_mode: ScaleMode,
    /// Seed of the rotation (stored in the file, with the rotation itself).
    pub seed: u64,
    /// How much the output depends on each level's features (a readout's
    /// input-gradient share, say); every level 1 when absent. A group's
    /// weight is its level's weight times its energy ‖x_g‖².
    pub level_weights: Option<Vec<f64>>,
    /// How much the output depends on each value (a readout's first-order
    /// sensitivity Σ_p w_p,e²·J², say), one per table value; a group's
    /// weight is then the mean over its values times ‖x_g‖², the predicted
    /// output MSE per unit of relative error (the rotation spreads a
    /// group's error evenly over its d coordinates). Multiplies the level
    /// weights when both are given.
    pub value_weights: Option<Vec<f32>>,
}

impl GridOptions {
    /// The defaults at `bits` per feature: g = 8, per-group widths,
    /// automatic scale bits, least-squares scale, seed 0, energy weights.
    pub fn new(bits: f64) -> GridOptions {
        GridOptions {
            bits,
            group: DEFAULT_GROUP,
            widths: WidthMode::PerGroup,
            scale_bits: None,
            scale_mode: ScaleMode::LeastSquares,
            seed: 0,
            level_weights: None,
            value_weights: None,
        }
    }
}

/// Where the codes were computed.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRun {
    /// The device.
    pub ran: Ran,
    /// Groups the GPU left to the CPU as near-ties.
    pub ties: usize,
    /// Whether the GPU failed and the CPU took over (the bytes are the same).
    pub fell_back: bool,
    /// The predicted feature NMSE, Σ‖x_g‖²·D(d, b_g) / Σ‖x‖² (exact codebook
    /// distortions; scale rounding not included).
    pub theory_nmse: f64,
}

/// The largest budget: every group at 8 bits with 16-bit scales, plus a
/// little.
const MAX_BITS_PER_FEATURE: f64 = 32.0;

/// The group weights v_g = w_level·‖x_g‖² and norms ‖x_g‖.
fn weights(
    vectors: &[f32],
    dim: usize,
    level_of: &[u16],
    level_weights: Option<&[f64]>,
    group_weights: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let norms: Vec<f64> = vectors
        .chunks_exact(dim)
        .map(|v| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let top = norms.iter().cloned().fold(0.0, f64::max);
    let values = norms
        .iter()
        .zip(level_of)
        .enumerate()
        .map(|(i, (&n, &l))| {
            if n <= top * NEGLIGIBLE_NORM {
                0.0
            } else {
                level_weights.map_or(1.0, |w| w[l as usize])
                    * group_weights.map_or(1.0, |w| w[i])
                    * n
                    * n
            }
        })
        .collect();
    (values, norms)
}

/// The mean of per-value weights over each group's values (the padding
/// excluded).
fn mean_per_group(grid: &Grid, groups: &Groups, w: &[f32]) -> Result<Vec<f64>> {
    if w.len() != grid.values() || w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err(Error::InvalidArgument(format!(
            "{} value weights for a table of {} values; each must be finite and ≥ 0",
            w.len(),
            grid.values()
        )));
    }
    let tmp = Grid {
        data: w.to_vec(),
        ..grid.clone()
    };
    let padded = groups.gather(&tmp);
    let d = groups.dim();
    let f = grid.features;
    let mut out = Vec::with_capacity(groups.count());
    for (l, &n) in groups.per_level.iter().enumerate() {
        for k in 0..n {
            let real = (grid.levels[l] - k * groups.entries).min(groups.entries) * f;
            let at = (out.len()) * d;
            let s: f64 = padded[at..at + real].iter().map(|&x| x as f64).sum();
            out.push(s / real as f64);
        }
    }
    Ok(out)
}

/// Encodes rows with the CPU's exact bytes, on the engine's GPU if it has one.
fn encode_rows(
    q: &Quantizer,
    data: &[f32],
    engine: Option<&Engine>,
    run: &mut GridRun,
) -> Result<crate::Encoded> {
    if let Some(engine) = engine.filter(|e| e.has_gpu() && !run.fell_back) {
        let (enc, ran, ties) = engine.encode_exact(q, data)?;
        run.fell_back |= ran == Ran::Cpu;
        run.ties += ties;
        run.ran = ran;
        return Ok(enc);
    }
    q.encode(data)
}

/// Compresses a grid. With an engine, the codes are computed on its GPU
/// where it has one; the file is the same bytes either way.
pub fn compress(
    grid: &Grid,
    opts: &GridOptions,
    engine: Option<&Engine>,
) -> Result<(CompressedGrid, GridRun)> {
    grid.validate()?;
    if !(opts.bits > 0.0 && opts.bits <= MAX_BITS_PER_FEATURE) {
        return Err(Error::InvalidArgument(format!(
            "{} bits per feature: expected a number in (0, {MAX_BITS_PER_FEATURE}]",
            opts.bits
        )));
    }
    if let Some(w) = &opts.level_weights
        && (w.len() != grid.level_count() || w.iter().any(|x| !(x.is_finite() && *x >= 0.0)))
    {
        return Err(Error::InvalidArgument(format!(
            "{} level weights for {} levels; each must be finite and ≥ 0",
            w.len(),
            grid.level_count()
        )));
    }
    if let Some(s) = opts.scale_bits
        && !(1..=16).contains(&s)
    {
        return Err(Error::InvalidArgument(format!(
            "{s} scale bits: expected 1..=16"
        )));
    }
    let groups = Groups::new(&grid.levels, grid.features, opts.group)?;
    let d = groups.dim();
    let rotation = Arc::new(Rotation::new(RotationKind::Dense, d, opts.seed)?);
    let vectors = groups.gather(grid);
    let level_of = groups.level_of();
    let group_weights = match &opts.value_weights {
        Some(w) => Some(mean_per_group(grid, &groups, w)?),
        None => None,
    };
    let (values, norms) = weights(
        &vectors,
        d,
        &level_of,
        opts.level_weights.as_deref(),
        group_weights.as_deref(),
    );
    let layout = Layout {
        dim: d,
        levels: grid.level_count(),
        rotation_bytes: rotation.to_bytes().len(),
    };
    let budget_bytes = (opts.bits * grid.values() as f64 / 8.0).floor() as u64;
    let plan = budget::plan(
        &layout,
        opts.widths,
        &level_of,
        &values,
        &norms,
        budget_bytes,
        opts.scale_bits,
    )?;
    let widths = plan.widths;

    // A power of two puts the largest norm near 2^9, well inside f16.
    let top = norms.iter().cloned().fold(0.0, f64::max);
    let shift = if top > 0.0 {
        9 - top.log2().ceil() as i32
    } else {
        0
    };
    let pre = 2f32.powi(shift);

    let mut run = GridRun {
        ran: Ran::Cpu,
        ties: 0,
        fell_back: false,
        theory_nmse: 0.0,
    };
    let n = widths.len();
    let mut scales = vec![0f32; n];
    let mut offsets = Vec::with_capacity(n);
    let mut at = 0usize;
    for &b in &widths {
        offsets.push(at);
        at += d * b as usize;
    }
    let mut codes = vec![0u8; at.div_ceil(8)];
    let mut centroids: Vec<Option<Vec<f32>>> = vec![None; 9];
    let mut buf = Vec::new();
    for b in 1..=8u8 {
        let members: Vec<usize> = (0..n).filter(|&i| widths[i] == b).collect();
        if members.is_empty() {
            continue;
        }
        let q = Quantizer::with_rotation(
            rotation.clone(),
            b as u32,
            opts.scale_mode,
            ScaleFormat::F16,
        )?;
        centroids[b as usize] = Some(q.centroids().to_vec());
        buf.clear();
        for &i in &members {
            buf.extend(vectors[i * d..(i + 1) * d].iter().map(|&x| x * pre));
        }
        let enc = encode_rows(&q, &buf, engine, &mut run).map_err(|e| match e {
            Error::ScaleUnrepresentable {
                row,
                scale,
                format,
                why,
            } => Error::ScaleUnrepresentable {
                row: members[row],
                scale,
                format,
                why,
            },
            e => e,
        })?;
        let bits = d * b as usize;
        for (k, &i) in members.iter().enumerate() {
            copy_bits(enc.codes(), k * bits, &mut codes, offsets[i], bits);
        }
        let Scales::F16(s) = enc.scales() else {
            return Err(Error::Shape("the quantizer returned f32 scales".into()));
        };
        for (&i, &s) in members.iter().zip(s) {
            scales[i] = f16::to_f32(s) / pre;
        }
    }
    // Each level's log2 scale range over its coded groups.
    let levels = grid.level_count();
    let mut lo = vec![f64::INFINITY; levels];
    let mut hi = vec![f64::NEG_INFINITY; levels];
    for ((&b, &s), &l) in widths.iter().zip(&scales).zip(&level_of) {
        if b > 0 && s > 0.0 {
            let v = (s as f64).log2();
            lo[l as usize] = lo[l as usize].min(v);
            hi[l as usize] = hi[l as usize].max(v);
        }
    }
    let scale_ranges: Vec<ScaleRange> = lo
        .iter()
        .zip(&hi)
        .map(|(&lo, &hi)| {
            if lo.is_finite() {
                // Rounded outward so that every scale lies inside.
                let (l32, h32) = (lo as f32, hi as f32);
                ScaleRange {
                    lo: if (l32 as f64) > lo {
                        l32.next_down()
                    } else {
                        l32
                    },
                    hi: if (h32 as f64) < hi {
                        h32.next_up()
                    } else {
                        h32
                    },
                }
            } else {
                ScaleRange { lo: 0.0, hi: 0.0 }
            }
        })
        .collect();
    let scale_codes: Vec<u32> = widths
        .iter()
        .zip(&scales)
        .zip(&level_of)
        .filter(|((b, _), _)| **b > 0)
        .map(|((_, &s), &l)| scale_ranges[l as usize].encode(s, plan.scale_bits))
        .collect();
    let dist = distortions(d)?;
    let energy: f64 = norms.iter().map(|n| n * n).sum();
    let err: f64 = widths
        .iter()
        .zip(&norms)
        .map(|(&b, &n)| n * n * dist[b as usize])
        .sum();
    run.theory_nmse = if energy > 0.0 { err / energy } else { 0.0 };
    let c = CompressedGrid {
        levels: grid.levels.clone(),
        features: grid.features,
        dtype: grid.dtype,
        shape: grid.shape.clone(),
        group: opts.group,
        rotation,
        seed: opts.seed,
        scale_mode: opts.scale_mode,
        width_mode: opts.widths,
        centroids,
        widths,
        scale_bits: plan.scale_bits,
        scale_ranges,
        scale_codes,
        codes,
    };
    Ok((c, run))
}

/// d·C(d, b) for the grouping's d: the exact expected error of a unit
/// group vector at b bits (what `info` and `eval` print as theory).
pub fn group_distortion(group: usize, features: usize, bits: u32) -> Result<f64> {
    Ok(Codebook::get(group * features, bits)?.distortion())
}

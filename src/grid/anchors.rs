//! What a user would otherwise do with a hash grid, each measured at its
//! own exact size so that the codec has something honest to beat:
//!
//! - [`uniform_per_level`]: b-bit integers over each level's [min, max],
//!   with the two ends stored as f16;
//! - [`cast_f8`]: a plain cast to FP8 E4M3 (no scale), and [`cast_int8`]:
//!   symmetric int8 with one f32 scale for the whole table;
//! - [`kmeans`]: vector quantisation of the F-wide entries (compact-NGP
//!   style, but post hoc): per level a codebook of K entries in f16 and a
//!   ⌈log2 K⌉-bit index per entry.

use half::f16;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::grid::table::Grid;
use crate::{Error, Result};

/// An anchor's reconstruction and the bytes it would store.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// What it is, for reports.
    pub name: String,
    /// The reconstructed values (the table's layout).
    pub data: Vec<f32>,
    /// Bytes stored: payload plus per-level or per-table parameters.
    pub bytes: u64,
}

impl Anchor {
    /// Bits per feature, all stored bytes counted.
    pub fn bits_per_feature(&self, values: usize) -> f64 {
        8.0 * self.bytes as f64 / values as f64
    }
}

/// b-bit uniform integers per level: q = round((x − lo)/(hi − lo)·(2^b − 1))
/// with lo and hi the level's extremes rounded to f16 (4 bytes per level).
pub fn uniform_per_level(grid: &Grid, bits: u32) -> Result<Anchor> {
    if !(1..=16).contains(&bits) {
        return Err(Error::InvalidBits { bits });
    }
    let m = ((1u32 << bits) - 1) as f32;
    let mut data = Vec::with_capacity(grid.values());
    for l in 0..grid.level_count() {
        let v = grid.level(l);
        let lo = v.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let (lo, hi) = (f16::from_f32(lo).to_f32(), f16::from_f32(hi).to_f32());
        let step = (hi - lo) / m;
        data.extend(v.iter().map(|&x| {
            if step > 0.0 {
                lo + ((x - lo) / step).round().clamp(0.0, m) * step
            } else {
                lo
            }
        }));
    }
    Ok(Anchor {
        name: format!("uniform per-level int{bits}"),
        data,
        bytes: (grid.values() as u64 * bits as u64).div_ceil(8) + 4 * grid.level_count() as u64,
    })
}

/// Rounds to the nearest FP8 E4M3 value (OCP: bias 7, no infinities,
/// largest 448, subnormals down to 2^−9), saturating.
pub fn to_e4m3(x: f32) -> f32 {
    let a = x.abs();
    if a == 0.0 {
        return 0.0;
    }
    let a = a.min(448.0);
    // Spacing: 2^(e − 3) for normals (e ≥ −6), 2^−9 below.
    let e = a.log2().floor().max(-6.0);
    let ulp = (e - 3.0).exp2();
    let r = ((a / ulp).round_ties_even() * ulp).min(448.0);
    r.copysign(x)
}

/// A plain cast to FP8 E4M3, one byte per feature, no scale.
pub fn cast_f8(grid: &Grid) -> Anchor {
    Anchor {
        name: "cast to f8 (E4M3)".into(),
        data: grid.data.iter().map(|&x| to_e4m3(x)).collect(),
        bytes: grid.values() as u64,
    }
}

/// Symmetric int8 with one f32 scale max|x|/127 for the table.
pub fn cast_int8(grid: &Grid) -> Anchor {
    let top = grid.data.iter().fold(0f32, |m, x| m.max(x.abs()));
    let s = if top > 0.0 { top / 127.0 } else { 1.0 };
    Anchor {
        name: "cast to int8 (per-table scale)".into(),
        data: grid
            .data
            .iter()
            .map(|&x| (x / s).round().clamp(-127.0, 127.0) * s)
            .collect(),
        bytes: grid.values() as u64 + 4,
    }
}

/// Most codebook entries per level.
pub const MAX_CLUSTERS: usize = 4096;
/// Lloyd iterations.
const ITERATIONS: usize = 12;

/// k-means VQ at `bits` per feature (all bytes counted): per level the
/// largest K = 2^k ≤ 4096 whose indices and f16 codebook fit the budget,
/// then Lloyd's algorithm from K entries drawn with a fixed seed.
pub fn kmeans(grid: &Grid, bits: f64, seed: u64) -> Result<Anchor> {
    let f = grid.features;
    let budget = bits * grid.values() as f64;
    let levels = grid.level_count();
    // Index bits k per entry, the same for every level; codebooks 16·F·K bits.
    let mut k = 0u32;
    for cand in 1..=12u32 {
        let total =
            grid.entries() as f64 * cand as f64 + (levels * f * 16) as f64 * (1u64 << cand) as f64;
        if total <= budget {
            k = cand;
        }
    }
    if k == 0 {
        return Err(Error::InvalidArgument(format!(
            "{bits} bits per feature is too few for k-means with 2 clusters per level"
        )));
    }
    let mut data = Vec::with_capacity(grid.values());
    let mut bytes_bits = 0u64;
    for l in 0..levels {
        let v = grid.level(l);
        let n = v.len() / f;
        let kk = (1usize << k).min(n).min(MAX_CLUSTERS);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (l as u64) << 32);
        let mut centers: Vec<f32> = Vec::with_capacity(kk * f);
        for _ in 0..kk {
            let i = rng.random_range(0..n);
            centers.extend_from_slice(&v[i * f..(i + 1) * f]);
        }
        let mut assign = vec![0u32; n];
        for _ in 0..ITERATIONS {
            assign
                .par_iter_mut()
                .zip(v.par_chunks_exact(f))
                .for_each(|(a, x)| *a = nearest(&centers, x, f));
            let mut sum = vec![0f64; kk * f];
            let mut cnt = vec![0u64; kk];
            for (a, x) in assign.iter().zip(v.chunks_exact(f)) {
                cnt[*a as usize] += 1;
                for j in 0..f {
                    sum[*a as usize * f + j] += x[j] as f64;
                }
            }
            for c in 0..kk {
                if cnt[c] > 0 {
                    for j in 0..f {
                        centers[c * f + j] = (sum[c * f + j] / cnt[c] as f64) as f32;
                    }
                }
            }
        }
        for c in &mut centers {
            *c = f16::from_f32(*c).to_f32();
        }
        assign
            .par_iter_mut()
            .zip(v.par_chunks_exact(f))
            .for_each(|(a, x)| *a = nearest(&centers, x, f));
        for a in &assign {
            data.extend_from_slice(&centers[*a as usize * f..(*a as usize + 1) * f]);
        }
        bytes_bits += n as u64 * k as u64 + (kk * f * 16) as u64;
    }
    Ok(Anchor {
        name: format!("k-means VQ, K = {} per level", 1u32 << k),
        data,
        bytes: bytes_bits.div_ceil(8),
    })
}

fn nearest(centers: &[f32], x: &[f32], f: usize) -> u32 {
    let mut best = (f32::INFINITY, 0u32);
    for (c, ctr) in centers.chunks_exact(f).enumerate() {
        let d: f32 = ctr.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
        if d < best.0 {
            best = (d, c as u32);
        }
    }
    best.1
}

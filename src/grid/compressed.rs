//! A compressed hash grid in memory: what a `.tq3g` file holds (the
//! rotation, the codebooks, a width per group, log-coded scales and the
//! codes), and its decoding back to a table.

use std::sync::Arc;

use rayon::prelude::*;

use crate::codec::packing::{copy_bits, packed_len};
use crate::grid::group::Groups;
use crate::grid::table::{Dtype, Grid};
use crate::{Encoded, Error, Quantizer, Result, Rotation, ScaleFormat, ScaleMode, Scales};

/// How the widths were chosen (informational: decoding is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WidthMode {
    /// A width per group, 0..=8, from the allocator.
    PerGroup = 0,
    /// One width per level; a group is either coded at it or negligible.
    PerLevel = 1,
}

impl WidthMode {
    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WidthMode::PerGroup => "group",
            WidthMode::PerLevel => "level",
        }
    }
}

/// The log-domain scale code of one level: a coded group's scale is
/// 2^(lo + k·(hi − lo)/(2^S − 1)) for its S-bit code k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleRange {
    /// log2 of the smallest scale.
    pub lo: f32,
    /// log2 of the largest scale.
    pub hi: f32,
}

impl ScaleRange {
    /// The scale of code k at S bits.
    pub fn decode(&self, k: u32, bits: u8) -> f32 {
        let m = ((1u32 << bits) - 1) as f64;
        let (lo, hi) = (self.lo as f64, self.hi as f64);
        (lo + (hi - lo) * k as f64 / m).exp2() as f32
    }

    /// The code of scale s > 0 at S bits: the nearest in the log domain.
    pub fn encode(&self, s: f32, bits: u8) -> u32 {
        let m = ((1u32 << bits) - 1) as f64;
        let (lo, hi) = (self.lo as f64, self.hi as f64);
        if hi <= lo || s <= 0.0 {
            return 0;
        }
        (((s as f64).log2() - lo) / (hi - lo) * m)
            .round()
            .clamp(0.0, m) as u32
    }
}

/// A compressed table.
#[derive(Debug, Clone)]
pub struct CompressedGrid {
    /// Entries per level.
    pub levels: Vec<usize>,
    /// Features per entry F.
    pub features: usize,
    /// The input's dtype (the output's).
    pub dtype: Dtype,
    /// The input's shape (the output's).
    pub shape: Vec<usize>,
    /// Entries per group g (d = g·F).
    pub group: usize,
    /// The rotation Π, shared by every width.
    pub rotation: Arc<Rotation>,
    /// The seed Π was drawn from (informational).
    pub seed: u64,
    /// The scale convention the encoder used (informational).
    pub scale_mode: ScaleMode,
    /// How the widths were chosen (informational).
    pub width_mode: WidthMode,
    /// Centroids of width b at index b (2^b values), for the widths used.
    pub centroids: Vec<Option<Vec<f32>>>,
    /// b per group, level after level; 0: negligible, decoded as zeros.
    pub widths: Vec<u8>,
    /// Bits S of each scale code.
    pub scale_bits: u8,
    /// The scale code range of each level.
    pub scale_ranges: Vec<ScaleRange>,
    /// The S-bit scale codes of the groups with b > 0, in group order.
    pub scale_codes: Vec<u32>,
    /// The codes: group i's d·b_i codes start at bit d·Σ_{k<i} b_k.
    pub codes: Vec<u8>,
}

impl CompressedGrid {
    /// The grouping.
    pub fn groups(&self) -> Result<Groups> {
        Groups::new(&self.levels, self.features, self.group)
    }

    /// The vector dimension d = g·F.
    pub fn dim(&self) -> usize {
        self.group * self.features
    }

    /// Total values Σ T_l·F.
    pub fn values(&self) -> usize {
        self.levels.iter().sum::<usize>() * self.features
    }

    /// The quantizer of width b, from the stored rotation and centroids
    /// (the boundaries are the centroids' midpoints, the Lloyd–Max
    /// nearest-neighbour condition; decoding never uses them).
    pub fn quantizer(&self, b: u8) -> Result<Quantizer> {
        let c = self
            .centroids
            .get(b as usize)
            .and_then(|c| c.as_ref())
            .ok_or_else(|| Error::InvalidArgument(format!("no codebook for b = {b}")))?;
        let bounds = c.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        Quantizer::from_parts(
            self.rotation.clone(),
            b as u32,
            c.clone(),
            bounds,
            self.scale_mode,
            ScaleFormat::F32,
        )
    }

    /// Every group's decoded scale (0 for width 0).
    pub fn scales(&self) -> Result<Vec<f32>> {
        let groups = self.groups()?;
        let level_of = groups.level_of();
        let mut codes = self.scale_codes.iter();
        self.widths
            .iter()
            .zip(&level_of)
            .map(|(&b, &l)| {
                if b == 0 {
                    return Ok(0.0);
                }
                let k = codes
                    .next()
                    .ok_or_else(|| Error::Shape("fewer scale codes than coded groups".into()))?;
                Ok(self.scale_ranges[l as usize].decode(*k, self.scale_bits))
            })
            .collect()
    }

    /// Decodes every group vector (count × d values, zeros for width 0).
    pub fn decode_vectors(&self) -> Result<Vec<f32>> {
        let d = self.dim();
        let n = self.widths.len();
        let scales = self.scales()?;
        let mut offsets = Vec::with_capacity(n);
        let mut at = 0usize;
        for &b in &self.widths {
            offsets.push(at);
            at += d * b as usize;
        }
        let mut out = vec![0f32; n * d];
        for b in 1..=8u8 {
            let members: Vec<usize> = (0..n).filter(|&i| self.widths[i] == b).collect();
            if members.is_empty() {
                continue;
            }
            let q = self.quantizer(b)?;
            let bits = d * b as usize;
            let mut codes = vec![0u8; packed_len(members.len() * d, b as u32)];
            for (k, &i) in members.iter().enumerate() {
                copy_bits(&self.codes, offsets[i], &mut codes, k * bits, bits);
            }
            let s = Scales::F32(members.iter().map(|&i| scales[i]).collect());
            let rows = q.decode(&Encoded::from_parts(d, b as u32, members.len(), codes, s)?)?;
            let mut slots: Vec<&mut [f32]> = Vec::with_capacity(members.len());
            let mut m = members.iter().peekable();
            for (i, row) in out.chunks_exact_mut(d).enumerate() {
                if m.peek() == Some(&&i) {
                    m.next();
                    slots.push(row);
                }
            }
            slots
                .into_par_iter()
                .zip(rows.par_chunks_exact(d))
                .for_each(|(dst, src)| dst.copy_from_slice(src));
        }
        Ok(out)
    }

    /// Decodes the table: the same levels, shape and dtype as the input.
    pub fn decode(&self) -> Result<Grid> {
        let groups = self.groups()?;
        let mut data = groups.scatter(&self.levels, &self.decode_vectors()?);
        if self.dtype == Dtype::F16 {
            // Clamped to f16's finite range, so the output holds no infinity.
            for v in &mut data {
                *v = half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32();
            }
        }
        let grid = Grid {
            levels: self.levels.clone(),
            features: self.features,
            dtype: self.dtype,
            shape: self.shape.clone(),
            data,
        };
        grid.validate()?;
        Ok(grid)
    }

    /// Groups coded (b > 0) and negligible (b = 0).
    pub fn coded(&self) -> usize {
        self.widths.iter().filter(|&&b| b > 0).count()
    }

    /// The widths used, ascending.
    pub fn widths_used(&self) -> Vec<u8> {
        (1..=8u8).filter(|b| self.widths.contains(b)).collect()
    }

    /// Code bits Σ d·b_i.
    pub fn code_bits(&self) -> u64 {
        self.widths
            .iter()
            .map(|&b| self.dim() as u64 * b as u64)
            .sum()
    }
}

//! The compressed form of one key or value tensor of shape [tokens, width]:
//! each token's row is cut into coded vectors ("units") by a [`Plan`], and
//! each unit is a TurboQuant vector of its own width.
//!
//! - Unit order: token-major, then head, then the head's segments.
//! - A unit of dimension d at width b ≥ 1 stores d·b code bits (in one
//!   stream, [`crate::packing`]'s layout, units back to back with no
//!   padding) and a least-squares scale rounded through f16. Width 0 stores
//!   nothing and decodes to zero (plus the mean, where there is one).
//! - The rotation of a segment of dimension d is
//!   `Rotation::new(RotationKind::default_for(d), d, seed)`: Hadamard for
//!   powers of two from 64 up, dense otherwise; one seed per tensor.
//! - Decoding adds the per-channel mean back, if the tensor was centred.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::codec::packing::{copy_bits, packed_len};
use crate::codec::rotation::{Rotation, RotationKind};
use crate::codec::scales::{ScaleFormat, ScaleMode, Scales};
use crate::{Encoded, Error, Quantizer, Result, Rows};

/// How each token's row of `heads · head_dim` channels is cut into units.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Coding heads (1 for whole-width vectors).
    pub heads: usize,
    /// Channels per coding head.
    pub head_dim: usize,
    /// Per head, its segments: each a strictly ascending list of channel
    /// indices within the head, together a partition of `0..head_dim`.
    /// A head of one segment is coded as one vector.
    pub segments: Vec<Vec<Vec<u32>>>,
}

impl Plan {
    /// Every head one vector of `head_dim` (whole-width mode is `heads = 1`).
    pub fn uniform(heads: usize, head_dim: usize) -> Result<Plan> {
        Plan::new(
            heads,
            head_dim,
            vec![vec![(0..head_dim as u32).collect()]; heads],
        )
    }

    /// A plan from explicit segments, checked.
    pub fn new(heads: usize, head_dim: usize, segments: Vec<Vec<Vec<u32>>>) -> Result<Plan> {
        if heads == 0 || head_dim < 2 {
            return Err(Error::Shape(format!(
                "a plan needs at least one head of at least 2 channels, got {heads} × {head_dim}"
            )));
        }
        if segments.len() != heads {
            return Err(Error::Shape(format!(
                "a plan of {heads} heads lists segments for {}",
                segments.len()
            )));
        }
        for (h, segs) in segments.iter().enumerate() {
            let mut seen = vec![false; head_dim];
            for s in segs {
                if s.len() < 2 {
                    return Err(Error::Shape(format!(
                        "head {h}: a segment has {} channels, at least 2 are needed",
                        s.len()
                    )));
                }
                if s.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::Shape(format!(
                        "head {h}: segment channels are not strictly ascending"
                    )));
                }
                for &c in s {
                    let c = c as usize;
                    if c >= head_dim || seen[c] {
                        return Err(Error::Shape(format!(
                            "head {h}: channel {c} is out of range or in two segments"
                        )));
                    }
                    seen[c] = true;
                }
            }
            if let Some(c) = seen.iter().position(|s| !s) {
                return Err(Error::Shape(format!(
                    "head {h}: channel {c} is in no segment"
                )));
            }
        }
        Ok(Plan {
            heads,
            head_dim,
            segments,
        })
    }

    /// Channels per token.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Units per token.
    pub fn units_per_token(&self) -> usize {
        self.segments.iter().map(Vec::len).sum()
    }

    /// For each unit of a token, in unit order: (head, channels within the
    /// head). Its dimension is the channel count.
    pub fn units(&self) -> Vec<(usize, &[u32])> {
        self.segments
            .iter()
            .enumerate()
            .flat_map(|(h, segs)| segs.iter().map(move |s| (h, s.as_slice())))
            .collect()
    }

    /// The distinct unit dimensions, ascending.
    pub fn dims(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.units().iter().map(|(_, c)| c.len()).collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

/// The rotations of a tensor's unit dimensions, built once from its seed.
#[derive(Debug, Clone)]
pub struct Rotations {
    seed: u64,
    by_dim: HashMap<usize, Arc<Rotation>>,
}

impl Rotations {
    /// The rotation of every dimension in `dims` for `seed`. Built once
    /// per process and (d, seed): a dense rotation of d = 768 is a QR of
    /// 768 × 768, and every layer of a cache asks for the same one.
    pub fn new(dims: &[usize], seed: u64) -> Result<Rotations> {
        type Cache = Mutex<HashMap<(usize, u64), Arc<Rotation>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut by_dim = HashMap::new();
        for &d in dims {
            let hit = cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(d, seed))
                .cloned();
            let r = match hit {
                Some(r) => r,
                None => {
                    // Built outside the lock; a racing thread builds the same.
                    let r = Arc::new(Rotation::new(RotationKind::default_for(d), d, seed)?);
                    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
                    map.entry((d, seed)).or_insert(r).clone()
                }
            };
            by_dim.insert(d, r);
        }
        Ok(Rotations { seed, by_dim })
    }

    /// Rotations read from a file: the reader checks them against the
    /// seed's before use (`by_dim` must hold every dimension of the plan).
    pub fn from_parts(seed: u64, by_dim: HashMap<usize, Arc<Rotation>>) -> Rotations {
        Rotations { seed, by_dim }
    }

    /// The seed they came from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The rotation of dimension d (one of those asked for).
    pub fn get(&self, dim: usize) -> Result<&Arc<Rotation>> {
        self.by_dim
            .get(&dim)
            .ok_or_else(|| Error::Shape(format!("no rotation was built for d = {dim}")))
    }

    /// The quantizer of (d, b): least-squares scale stored as f16.
    pub fn quantizer(&self, dim: usize, bits: u32) -> Result<Quantizer> {
        Quantizer::with_rotation(
            self.get(dim)?.clone(),
            bits,
            ScaleMode::LeastSquares,
            ScaleFormat::F16,
        )
    }
}

/// One compressed key or value tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct CodedTensor {
    /// How rows are cut into units.
    pub plan: Plan,
    /// Rows.
    pub tokens: usize,
    /// Seed of every unit rotation.
    pub seed: u64,
    /// Per-channel mean subtracted before coding (keys), `width` values.
    pub mean: Option<Vec<f32>>,
    /// Width of each unit (0..=8), `tokens · units_per_token`, unit order.
    pub widths: Vec<u8>,
    /// Scale of each unit, exactly representable in f16; 0 at width 0.
    pub scales: Vec<f32>,
    /// The code stream, units back to back.
    pub codes: Vec<u8>,
}

impl CodedTensor {
    /// Units per token.
    pub fn units_per_token(&self) -> usize {
        self.plan.units_per_token()
    }

    /// The bit offset of every unit in the code stream, and the total after
    /// the last (`units + 1` values).
    pub fn bit_offsets(&self) -> Vec<u64> {
        let dims: Vec<u64> = self
            .plan
            .units()
            .iter()
            .map(|(_, c)| c.len() as u64)
            .collect();
        let per = dims.len().max(1);
        let mut out = Vec::with_capacity(self.widths.len() + 1);
        let mut at = 0u64;
        out.push(0);
        for (u, &w) in self.widths.iter().enumerate() {
            at += dims[u % per] * w as u64;
            out.push(at);
        }
        out
    }

    /// Checks the parts against each other (lengths, widths, finite scales).
    pub fn validate(&self) -> Result<()> {
        let units = self.tokens * self.units_per_token();
        if self.widths.len() != units || self.scales.len() != units {
            return Err(Error::Shape(format!(
                "{} tokens of {} units need {units} widths and scales, got {} and {}",
                self.tokens,
                self.units_per_token(),
                self.widths.len(),
                self.scales.len()
            )));
        }
        if let Some(u) = self.widths.iter().position(|&w| w > 8) {
            return Err(Error::Shape(format!(
                "unit {u} has width {} (at most 8)",
                self.widths[u]
            )));
        }
        if let Some(u) = self.scales.iter().position(|s| !s.is_finite()) {
            return Err(Error::Shape(format!("unit {u} has a non-finite scale")));
        }
        if let Some(m) = &self.mean
            && m.len() != self.plan.width()
        {
            return Err(Error::Shape(format!(
                "the mean has {} channels, the width is {}",
                m.len(),
                self.plan.width()
            )));
        }
        let bits = self.bit_offsets()[units];
        if self.codes.len() != packed_len(bits as usize, 1) {
            return Err(Error::Shape(format!(
                "the widths need {} code bytes, got {}",
                packed_len(bits as usize, 1),
                self.codes.len()
            )));
        }
        Ok(())
    }

    /// Stored payload bytes: codes, one f16 scale per unit of width ≥ 1,
    /// half a byte of width per unit, and the f16 mean. Headers are the
    /// file's to add.
    pub fn payload_bytes(&self) -> u64 {
        let coded = self.widths.iter().filter(|&&w| w > 0).count() as u64;
        self.codes.len() as u64
            + 2 * coded
            + (self.widths.len() as u64).div_ceil(2)
            + self.mean.as_ref().map_or(0, |m| 2 * m.len() as u64)
    }

    /// Codes `x` (`tokens × plan.width()`, row-major) at the given unit
    /// widths. `mean`, if given, is subtracted first and stored (rounded
    /// through f16, as the file keeps it).
    pub fn encode(
        x: &[f32],
        tokens: usize,
        plan: Plan,
        mean: Option<Vec<f32>>,
        widths: Vec<u8>,
        seed: u64,
    ) -> Result<CodedTensor> {
        let width = plan.width();
        if x.len() != tokens * width {
            return Err(Error::Shape(format!(
                "{tokens} tokens of width {width} need {} values, got {}",
                tokens * width,
                x.len()
            )));
        }
        let per = plan.units_per_token();
        if widths.len() != tokens * per {
            return Err(Error::Shape(format!(
                "{tokens} tokens of {per} units need {} widths, got {}",
                tokens * per,
                widths.len()
            )));
        }
        if let Some(u) = widths.iter().position(|&w| w > 8) {
            return Err(Error::InvalidBits {
                bits: widths[u] as u32,
            });
        }
        let mean = mean.map(|m| round_f16(&m));
        if let Some(m) = &mean
            && m.len() != width
        {
            return Err(Error::Shape(format!(
                "the mean has {} channels, the width is {width}",
                m.len()
            )));
        }
        let rotations = Rotations::new(&plan.dims(), seed)?;
        let units = plan.units();
        let mut out = CodedTensor {
            plan: plan.clone(),
            tokens,
            seed,
            mean,
            widths,
            scales: vec![0.0; tokens * per],
            codes: Vec::new(),
        };
        let offsets = out.bit_offsets();
        out.codes = vec![0u8; packed_len(offsets[tokens * per] as usize, 1)];
        // Group units by (d, b) and code each group as one batch.
        for (d, b, members) in groups(&units, &out.widths, per) {
            let q = rotations.quantizer(d, b as u32)?;
            let rows: Vec<f32> = members
                .par_iter()
                .flat_map_iter(|&u| {
                    let (t, k) = (u / per, u % per);
                    let (h, ch) = units[k];
                    let head = h * plan.head_dim;
                    let mean = out.mean.as_deref();
                    ch.iter().map(move |&c| {
                        let i = head + c as usize;
                        x[t * width + i] - mean.map_or(0.0, |m| m[i])
                    })
                })
                .collect();
            let enc = q.encode_rows(Rows::new(&rows, d)?)?;
            for (r, &u) in members.iter().enumerate() {
                copy_bits(
                    enc.codes(),
                    r * d * b as usize,
                    &mut out.codes,
                    offsets[u] as usize,
                    d * b as usize,
                );
                out.scales[u] = enc.scales().get(r);
            }
        }
        Ok(out)
    }

    /// Appends tokens coded at `widths` with this tensor's plan, mean and
    /// seed, without touching the tokens already coded. The result is
    /// byte-identical to coding all the tokens at once with the same plan,
    /// mean and widths: each unit's codes and scale depend only on its own
    /// values (docs/FORMAT.md, "Appending").
    pub fn append(&mut self, x: &[f32], tokens: usize, widths: Vec<u8>) -> Result<()> {
        let more = CodedTensor::encode(
            x,
            tokens,
            self.plan.clone(),
            self.mean.clone(),
            widths,
            self.seed,
        )?;
        self.append_coded(more)
    }

    /// Appends the tokens of `more`, coded with this tensor's plan, mean and
    /// seed (checked), after its own.
    pub fn append_coded(&mut self, more: CodedTensor) -> Result<()> {
        self.validate()?;
        more.validate()?;
        if more.plan != self.plan || more.mean != self.mean || more.seed != self.seed {
            return Err(Error::Shape(
                "appended tokens must be coded with the tensor's plan, mean and seed".into(),
            ));
        }
        let at = self.bit_offsets()[self.widths.len()] as usize;
        let extra = more.bit_offsets()[more.widths.len()] as usize;
        self.codes.resize(packed_len(at + extra, 1), 0);
        copy_bits(&more.codes, 0, &mut self.codes, at, extra);
        self.widths.extend_from_slice(&more.widths);
        self.scales.extend_from_slice(&more.scales);
        self.tokens += more.tokens;
        Ok(())
    }

    /// Decodes every token (`tokens × width`, row-major) with the rotations
    /// of the tensor's seed.
    pub fn decode(&self) -> Result<Vec<f32>> {
        self.decode_with(&Rotations::new(&self.plan.dims(), self.seed)?)
    }

    /// Decodes every token with the given rotations (a file's).
    pub fn decode_with(&self, rotations: &Rotations) -> Result<Vec<f32>> {
        self.validate()?;
        let plan = &self.plan;
        let width = plan.width();
        let per = plan.units_per_token();
        let units = plan.units();
        let offsets = self.bit_offsets();
        let mut out = vec![0f32; self.tokens * width];
        for (d, b, members) in groups(&units, &self.widths, per) {
            let q = rotations.quantizer(d, b as u32)?;
            let mut codes = vec![0u8; packed_len(members.len() * d, b as u32)];
            let mut scales = Vec::with_capacity(members.len());
            for (r, &u) in members.iter().enumerate() {
                copy_bits(
                    &self.codes,
                    offsets[u] as usize,
                    &mut codes,
                    r * d * b as usize,
                    d * b as usize,
                );
                scales.push(half::f16::from_f32(self.scales[u]));
            }
            let enc = Encoded::from_parts(d, b as u32, members.len(), codes, Scales::F16(scales))?;
            let rows = q.decode(&enc)?;
            for (r, &u) in members.iter().enumerate() {
                let (t, k) = (u / per, u % per);
                let (h, ch) = units[k];
                let base = t * width + h * plan.head_dim;
                for (j, &c) in ch.iter().enumerate() {
                    out[base + c as usize] = rows[r * d + j];
                }
            }
        }
        if let Some(m) = &self.mean {
            out.par_chunks_mut(width).for_each(|row| {
                for (o, m) in row.iter_mut().zip(m) {
                    *o += m;
                }
            });
        }
        Ok(out)
    }
}

/// Rounds each value through f16 (what the file stores).
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Units grouped by (dimension, width ≥ 1), each group in unit order; the
/// groups ascending by (d, b).
fn groups(units: &[(usize, &[u32])], widths: &[u8], per: usize) -> Vec<(usize, u8, Vec<usize>)> {
    let mut map: std::collections::BTreeMap<(usize, u8), Vec<usize>> = Default::default();
    for (u, &w) in widths.iter().enumerate() {
        if w > 0 {
            map.entry((units[u % per].1.len(), w)).or_default().push(u);
        }
    }
    map.into_iter().map(|((d, b), m)| (d, b, m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn a_unit_decodes_as_the_quantizer_of_its_dimension_and_width() {
        // Two heads of 8; head 1 split into {0,3,5} and the rest.
        let plan = Plan::new(
            2,
            8,
            vec![
                vec![(0..8).collect()],
                vec![vec![0, 3, 5], vec![1, 2, 4, 6, 7]],
            ],
        )
        .unwrap();
        let tokens = 5;
        let x = pseudo(tokens * 16, 7);
        let widths: Vec<u8> = (0..tokens * 3).map(|u| (u % 5) as u8).collect();
        let c = CodedTensor::encode(&x, tokens, plan.clone(), None, widths.clone(), 3).unwrap();
        c.validate().unwrap();
        let y = c.decode().unwrap();
        let rot = Rotations::new(&[3, 5, 8], 3).unwrap();
        for t in 0..tokens {
            for (k, (h, ch)) in plan.units().into_iter().enumerate() {
                let w = widths[t * 3 + k];
                let v: Vec<f32> = ch.iter().map(|&c| x[t * 16 + h * 8 + c as usize]).collect();
                let want = if w == 0 {
                    vec![0.0; ch.len()]
                } else {
                    let q = rot.quantizer(ch.len(), w as u32).unwrap();
                    q.decode(&q.encode(&v).unwrap()).unwrap()
                };
                for (j, &c) in ch.iter().enumerate() {
                    assert_eq!(y[t * 16 + h * 8 + c as usize], want[j], "t {t} unit {k}");
                }
            }
        }
    }

    #[test]
    fn plans_reject_overlaps_and_gaps() {
        assert!(Plan::new(1, 4, vec![vec![vec![0, 1], vec![1, 2, 3]]]).is_err());
        assert!(Plan::new(1, 4, vec![vec![vec![0, 1], vec![2]]]).is_err());
        assert!(Plan::new(1, 4, vec![vec![vec![1, 0, 2, 3]]]).is_err());
        assert!(Plan::new(1, 4, vec![vec![vec![0, 2], vec![1, 3]]]).is_ok());
    }
}

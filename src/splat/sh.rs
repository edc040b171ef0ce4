//! The SH-rest streams of a `.tq3s` file (`ROT `, `CBK `, `SHW `, `SHS `,
//! `SHC `): encoding with one width for every Gaussian or a width per
//! Gaussian (b_i ∈ 0..=8, 0 dropping its SH-rest), and decoding.
//!
//! With per-Gaussian widths, Gaussian k's d·b_k code bits follow Gaussian
//! k−1's in one stream, scales are stored only for b_k > 0, and `CBK ` holds
//! a codebook for each width used. All widths share one rotation.
//!
//! With the SH sign flip (header byte 61, bit 0) Gaussian k's vector is
//! multiplied coordinate-wise by signs [`sign_word`] derives from k before
//! it is rotated, and by the same signs after decoding: identical inputs at
//! different k then get independent quantisation errors, which no longer
//! add up coherently where those Gaussians overlap (docs/THEORY.md §16).

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use crate::codec::packing::{copy_bits, packed_len};
use crate::gpu::{Engine, Ran};
use crate::splat::scene::{Scene, rest_dim, rest_per_channel};
use crate::{
    Encoded, Error, Quantizer, QuantizerConfig, Result, Rotation, Rows, ScaleFormat, ScaleMode,
    Scales,
};

/// Where the SH-rest was encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShRun {
    /// The device.
    pub ran: Ran,
    /// Vectors the GPU left to the CPU as near-ties (see
    /// [`GpuQuantizer::encode_exact`](crate::gpu::GpuQuantizer::encode_exact)).
    pub ties: usize,
    /// Whether the GPU failed and the CPU took over (the bytes are the same).
    pub fell_back: bool,
}

/// The SH-rest of a file, still compressed: what a renderer uploads to
/// decode in its own shader, and what [`CompressedSh::decode`] expands.
#[derive(Debug, Clone)]
pub struct CompressedSh {
    /// SH degree L (d = 3·((L+1)² − 1)).
    pub sh_degree: u8,
    /// The rotation Π shared by every width.
    pub rotation: Arc<Rotation>,
    /// Scale convention (informational; decoding is the same).
    pub scale_mode: ScaleMode,
    /// Centroids and boundaries for each width b (index b), `None` for
    /// widths not used.
    pub tables: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// b_i per Gaussian, in storage order.
    pub widths: Vec<u8>,
    /// Some(b) when every Gaussian has width b (the file's uniform mode).
    pub uniform: Option<u8>,
    /// The code stream: Gaussian i's d·b_i codes start at bit
    /// d·Σ_{k<i} b_k, packed LSB-first.
    pub codes: Vec<u8>,
    /// The f16 scale of each Gaussian (+0 for width 0).
    pub scales: Vec<f16>,
    /// Whether Gaussian k's decoded vector is multiplied by its signs
    /// ([`flip_signs`]) after Πᵀ (header byte 61, bit 0).
    pub sign_flip: bool,
}

/// The PCG hash (Jarzynski & Olano, "Hash Functions for GPU Rendering",
/// 2020): one LCG step and PCG's RXS-M-XS output permutation, a bijection
/// of u32 in u32 arithmetic, so a shader computes the same bits.
pub fn pcg_hash(x: u32) -> u32 {
    let s = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277_803_737);
    (w >> 22) ^ w
}

/// Sign word `w` of Gaussian `k` (storage order): bit j of it is the sign
/// of coordinate 32·w + j, 1 meaning −1. `pcg_hash(pcg_hash(k) + w)`,
/// wrapping; d = 45 uses words 0 and 1.
pub fn sign_word(k: u32, w: u32) -> u32 {
    pcg_hash(pcg_hash(k).wrapping_add(w))
}

/// Multiplies coordinate j of `row` by Gaussian k's sign s_k[j] (negates
/// it where bit j mod 32 of [`sign_word`]`(k, j / 32)` is set). Exact and
/// its own inverse.
pub fn flip_signs(k: u32, row: &mut [f32]) {
    for (w, part) in row.chunks_mut(32).enumerate() {
        let m = sign_word(k, w as u32);
        // The sign bit flipped without a branch: the signs are random, so
        // a branch would be mispredicted every other coordinate.
        for (j, x) in part.iter_mut().enumerate() {
            *x = f32::from_bits(x.to_bits() ^ (((m >> j) & 1) << 31));
        }
    }
}

impl CompressedSh {
    /// SH-rest dimension d.
    pub fn dim(&self) -> usize {
        rest_dim(self.sh_degree)
    }

    /// Number of Gaussians.
    pub fn len(&self) -> usize {
        self.widths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.widths.is_empty()
    }

    /// The first code bit of each Gaussian (a prefix sum of d·b_i).
    pub fn bit_offsets(&self) -> Vec<u64> {
        let d = self.dim() as u64;
        let mut at = 0u64;
        self.widths
            .iter()
            .map(|&b| {
                let o = at;
                at += d * b as u64;
                o
            })
            .collect()
    }

    /// The quantizer of width b (1..=8), if the file uses it.
    pub fn quantizer(&self, b: u8) -> Result<Quantizer> {
        let (c, t) = self
            .tables
            .get(b as usize)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| Error::InvalidArgument(format!("no codebook for b = {b}")))?;
        Quantizer::from_parts(
            self.rotation.clone(),
            b as u32,
            c.clone(),
            t.clone(),
            self.scale_mode,
            ScaleFormat::F16,
        )
    }

    /// Decodes every Gaussian's SH-rest (zeros for width 0), N × d values.
    pub fn decode(&self) -> Result<Vec<f32>> {
        let d = self.dim();
        let n = self.len();
        if let Some(b) = self.uniform {
            let q = self.quantizer(b)?;
            let enc = Encoded::from_parts(
                d,
                b as u32,
                n,
                self.codes.clone(),
                Scales::F16(self.scales.clone()),
            )?;
            let mut out = q.decode(&enc)?;
            self.unflip(&mut out);
            return Ok(out);
        }
        let mut out = vec![0f32; n * d];
        let offsets = self.bit_offsets();
        for b in 1..=8u8 {
            let members: Vec<usize> = (0..n).filter(|&i| self.widths[i] == b).collect();
            if members.is_empty() {
                continue;
            }
            let q = self.quantizer(b)?;
            let mut codes = vec![0u8; packed_len(members.len() * d, b as u32)];
            for (k, &i) in members.iter().enumerate() {
                copy_bits(
                    &self.codes,
                    offsets[i] as usize,
                    &mut codes,
                    k * d * b as usize,
                    d * b as usize,
                );
            }
            let scales = Scales::F16(members.iter().map(|&i| self.scales[i]).collect());
            let enc = Encoded::from_parts(d, b as u32, members.len(), codes, scales)?;
            let rows = q.decode(&enc)?;
            for (k, &i) in members.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&rows[k * d..(k + 1) * d]);
            }
        }
        self.unflip(&mut out);
        Ok(out)
    }

    /// Undoes the sign flip on decoded rows (N × d, storage order). Rows of
    /// width 0 or scale ±0 are zero vectors and stay +0.
    fn unflip(&self, out: &mut [f32]) {
        let d = self.dim();
        if !self.sign_flip || d == 0 {
            return;
        }
        out.par_chunks_mut(d)
            .zip(self.widths.par_iter().zip(self.scales.par_iter()))
            .enumerate()
            .filter(|(_, (_, (b, s)))| **b > 0 && s.to_f32() != 0.0)
            .for_each(|(k, (row, _))| flip_signs(k as u32, row));
    }
}

/// The streams of an encoding.
#[derive(Debug, Clone)]
pub(crate) struct ShStreams {
    /// `ROT `: the rotation's seed and digest (kind 2) or its parameters.
    pub rot: Vec<u8>,
    /// `CBK `: the codebooks of the widths used.
    pub cbk: Vec<u8>,
    /// `SHW `: 4-bit widths (variable mode only).
    pub shw: Option<Vec<u8>>,
    /// `SHS `: f16 scales of the Gaussians with b > 0.
    pub shs: Vec<u8>,
    /// `SHC `: the codes.
    pub shc: Vec<u8>,
    /// Rotation kind code for the header.
    pub rotation_kind: u8,
    /// Where it ran.
    pub run: ShRun,
}

/// Header rotation kind of a rotation the specified generator made: its
/// `ROT ` is the seed and the matrix digest.
pub(crate) const KIND_SEEDED: u8 = 2;

/// The header's rotation kind and the `ROT ` stream: the seeded form (kind
/// 2) whenever the rotation is the generator's matrix for its seed, the
/// explicit parameters (kind 0 dense, 1 Hadamard) otherwise.
pub(crate) fn rotation_stream(rotation: &Rotation) -> (u8, Vec<u8>) {
    match (rotation.to_seeded_bytes(), rotation.kind()) {
        (Some(b), _) => (KIND_SEEDED, b.to_vec()),
        (None, crate::RotationKind::Dense) => (0, rotation.to_bytes()),
        (None, crate::RotationKind::Hadamard) => (1, rotation.to_bytes()),
    }
}

/// Gathers the SH-rest rows of `idx` (input indices), truncated from the
/// scene's degree to `degree`, into `buf`; with `flip`, the storage index
/// of each row, whose signs ([`flip_signs`]) are applied. Both encoders
/// (CPU and GPU) quantise these rows, so their bytes stay the same.
pub(crate) fn gather_rows(
    scene: &Scene,
    idx: &[u32],
    flip: Option<&[u32]>,
    degree: u8,
    buf: &mut Vec<f32>,
) {
    let (kin, kout) = (rest_per_channel(scene.sh_degree), rest_per_channel(degree));
    let din = scene.rest_dim();
    let d = rest_dim(degree);
    buf.clear();
    buf.reserve(idx.len() * d);
    for (m, &i) in idx.iter().enumerate() {
        // Rows are scattered (storage order is a permutation): fetch the
        // lines of the row PREFETCH ahead, so that the misses overlap
        // instead of each copy waiting on its own.
        if let Some(&j) = idx.get(m + PREFETCH) {
            prefetch(&scene.sh_rest[j as usize * din..(j as usize + 1) * din]);
        }
        let row = &scene.sh_rest[i as usize * din..(i as usize + 1) * din];
        if kin == kout {
            buf.extend_from_slice(row);
        } else {
            for c in 0..3 {
                buf.extend_from_slice(&row[c * kin..c * kin + kout]);
            }
        }
        if let Some(k) = flip {
            let at = buf.len() - d;
            flip_signs(k[m], &mut buf[at..]);
        }
    }
}

/// Rows [`gather_rows`] fetches ahead of the one it copies.
const PREFETCH: usize = 8;

/// Asks for the cache lines of `row` (x86-64; elsewhere a no-op).
#[inline(always)]
fn prefetch(row: &[f32]) {
    // Every 16th value and the last: each 64-byte line the row touches.
    #[cfg(target_arch = "x86_64")]
    for x in row.iter().step_by(16).chain(row.last()) {
        // SAFETY: a prefetch of a valid address changes no state.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (x as *const f32).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Maps a slab's row index in an error back to the input's Gaussian index.
fn remap_row(e: Error, idx: &[u32]) -> Error {
    match e {
        Error::ScaleUnrepresentable {
            row,
            scale,
            format,
            why,
        } => Error::ScaleUnrepresentable {
            row: idx[row] as usize,
            scale,
            format,
            why,
        },
        e => e,
    }
}

/// Vectors per CPU encoding slab (a multiple of 8: each slab's codes start
/// on a byte boundary).
const SLAB: usize = 8192;
/// Vectors per GPU submission (a multiple of 8).
const GPU_SLAB: usize = 1 << 18;

/// Encodes the rows `idx` (input indices, in storage order) at width `q.bits()`
/// into contiguous packed codes and f16 scales, on the engine's GPU (with the
/// CPU's exact bytes) or on the CPU. `flip`: the rows' storage indices, when
/// their signs are flipped.
fn encode_group(
    scene: &Scene,
    idx: &[u32],
    flip: Option<&[u32]>,
    degree: u8,
    q: &Quantizer,
    engine: Option<&Engine>,
    run: &mut ShRun,
) -> Result<(Vec<u8>, Vec<f16>)> {
    let d = rest_dim(degree);
    let n = idx.len();
    let b = q.bits() as usize;
    let mut codes = vec![0u8; packed_len(n * d, q.bits())];
    if let Some(engine) = engine.filter(|e| e.has_gpu()) {
        let mut scales = Vec::with_capacity(n);
        let mut buf = Vec::new();
        for (s, part) in idx.chunks(GPU_SLAB).enumerate() {
            let fl = flip.map(|f| &f[s * GPU_SLAB..s * GPU_SLAB + part.len()]);
            gather_rows(scene, part, fl, degree, &mut buf);
            let (enc, ran, ties) = if run.fell_back {
                (q.encode(&buf).map_err(|e| remap_row(e, part))?, Ran::Cpu, 0)
            } else {
                engine
                    .encode_exact(q, &buf)
                    .map_err(|e| remap_row(e, part))?
            };
            // Once the GPU has failed over to the CPU, stay there.
            run.fell_back |= ran == Ran::Cpu;
            run.ties += ties;
            run.ran = ran;
            let start = s * GPU_SLAB * d * b / 8;
            codes[start..start + enc.codes().len()].copy_from_slice(enc.codes());
            match enc.scales() {
                Scales::F16(v) => scales.extend_from_slice(v),
                Scales::F32(v) => scales.extend(v.iter().map(|&x| f16::from_f32(x))),
            }
        }
        return Ok((codes, scales));
    }
    let mut scales = vec![0f32; n];
    let slab_bytes = SLAB * d * b / 8;
    codes
        .par_chunks_mut(slab_bytes)
        .zip(scales.par_chunks_mut(SLAB))
        .enumerate()
        .try_for_each(|(s, (codes, scales))| {
            let part = &idx[s * SLAB..s * SLAB + scales.len()];
            let fl = flip.map(|f| &f[s * SLAB..s * SLAB + scales.len()]);
            let mut buf = Vec::with_capacity(part.len() * d);
            gather_rows(scene, part, fl, degree, &mut buf);
            q.encode_into(Rows::new(&buf, d)?, codes, scales)
                .map_err(|e| remap_row(e, part))
        })?;
    Ok((codes, scales.iter().map(|&s| f16::from_f32(s)).collect()))
}

/// Widths for [`encode`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Widths<'a> {
    /// Every Gaussian at b bits (1..=8).
    Uniform(u32),
    /// b_i per Gaussian of the input (input order, 0..=8).
    PerGaussian(&'a [u8]),
}

/// The CBK stream for the given widths' quantizers.
fn codebook_stream(qs: &[(u8, Quantizer)]) -> Vec<u8> {
    let mut cbk = vec![qs.len() as u8];
    for (b, q) in qs {
        cbk.push(*b);
        for v in q.centroids().iter().chain(q.boundaries()) {
            cbk.extend_from_slice(&v.to_le_bytes());
        }
    }
    cbk
}

/// Packs widths 4 bits each, Gaussian 2k in the low nibble of byte k.
pub(crate) fn pack_widths(w: &[u8]) -> Vec<u8> {
    w.chunks(2)
        .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4))
        .collect()
}

/// Inverse of [`pack_widths`]; widths above 8 and a non-zero unused nibble
/// are errors.
pub(crate) fn unpack_widths(bytes: &[u8], n: usize) -> std::result::Result<Vec<u8>, String> {
    if bytes.len() != n.div_ceil(2) {
        return Err(format!(
            "{} bytes for {n} widths, expected {}",
            bytes.len(),
            n.div_ceil(2)
        ));
    }
    let w: Vec<u8> = (0..n)
        .map(|i| (bytes[i / 2] >> (4 * (i % 2))) & 15)
        .collect();
    if let Some(i) = w.iter().position(|&b| b > 8) {
        return Err(format!("Gaussian {i} has width {} (at most 8)", w[i]));
    }
    if n % 2 == 1 && bytes[n / 2] >> 4 != 0 {
        return Err("the unused nibble of the last byte must be zero".into());
    }
    Ok(w)
}

/// Encodes the SH-rest of the Gaussians `order` (input indices, storage
/// order), truncated to `degree`; with `sign_flip`, Gaussian k's row is
/// multiplied by its signs ([`flip_signs`]) first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    scene: &Scene,
    order: &[u32],
    degree: u8,
    widths: Widths<'_>,
    seed: u64,
    scale_mode: ScaleMode,
    sign_flip: bool,
    engine: Option<&Engine>,
) -> Result<ShStreams> {
    // Storage index k of each row of `order` (only built with the flip).
    let storage: Option<Vec<u32>> = sign_flip.then(|| (0..order.len() as u32).collect());
    let d = rest_dim(degree);
    let per: Vec<u8> = match widths {
        Widths::Uniform(b) => vec![b as u8; order.len()],
        Widths::PerGaussian(w) => order.iter().map(|&i| w[i as usize]).collect(),
    };
    let mut used: Vec<u8> = (1..=8u8).filter(|b| per.contains(b)).collect();
    if used.is_empty() {
        // Every width is 0: keep one codebook so the file stays decodable
        // by the same code path.
        used.push(1);
    }
    let mut cfg = QuantizerConfig::new(d, used[0] as u32);
    cfg.seed = seed;
    cfg.scale_mode = scale_mode;
    cfg.scale_format = ScaleFormat::F16;
    let first = Quantizer::new(&cfg)?;
    let rotation = first.rotation().clone();
    let qs: Vec<(u8, Quantizer)> = used
        .iter()
        .map(|&b| {
            Ok((
                b,
                Quantizer::with_rotation(rotation.clone(), b as u32, scale_mode, ScaleFormat::F16)?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut run = ShRun {
        ran: Ran::Cpu,
        ties: 0,
        fell_back: false,
    };
    let (rotation_kind, rot) = rotation_stream(&rotation);
    if let Widths::Uniform(_) = widths {
        let (codes, scales) = encode_group(
            scene,
            order,
            storage.as_deref(),
            degree,
            &qs[0].1,
            engine,
            &mut run,
        )?;
        return Ok(ShStreams {
            rot,
            cbk: codebook_stream(&qs),
            shw: None,
            shs: scales
                .iter()
                .flat_map(|s| s.to_bits().to_le_bytes())
                .collect(),
            shc: codes,
            rotation_kind,
            run,
        });
    }
    // Per-Gaussian widths: encode each width's Gaussians together, then lay
    // the codes out in storage order.
    let total_bits: u64 = per.iter().map(|&b| d as u64 * b as u64).sum();
    let mut offsets = Vec::with_capacity(order.len());
    let mut at = 0u64;
    for &b in &per {
        offsets.push(at);
        at += d as u64 * b as u64;
    }
    let (shc, scale_of) = if engine.is_none_or(|e| !e.has_gpu()) {
        encode_widths_cpu(
            scene, order, &per, &offsets, total_bits, sign_flip, degree, &qs,
        )?
    } else {
        // On a GPU, each width's Gaussians of the whole scene go in one batch.
        let mut shc = vec![0u8; total_bits.div_ceil(8) as usize];
        let mut scale_of = vec![f16::ZERO; order.len()];
        for (b, q) in &qs {
            let members: Vec<usize> = (0..order.len()).filter(|&k| per[k] == *b).collect();
            if members.is_empty() {
                continue;
            }
            let idx: Vec<u32> = members.iter().map(|&k| order[k]).collect();
            let ks: Option<Vec<u32>> =
                sign_flip.then(|| members.iter().map(|&k| k as u32).collect());
            let (codes, scales) =
                encode_group(scene, &idx, ks.as_deref(), degree, q, engine, &mut run)?;
            for (m, &k) in members.iter().enumerate() {
                copy_bits(
                    &codes,
                    m * d * *b as usize,
                    &mut shc,
                    offsets[k] as usize,
                    d * *b as usize,
                );
                scale_of[k] = scales[m];
            }
        }
        (shc, scale_of)
    };
    let shs = per
        .iter()
        .zip(&scale_of)
        .filter(|(b, _)| **b > 0)
        .flat_map(|(_, s)| s.to_bits().to_le_bytes())
        .collect();
    Ok(ShStreams {
        rot,
        cbk: codebook_stream(&qs),
        shw: Some(pack_widths(&per)),
        shs,
        shc,
        rotation_kind,
        run,
    })
}

/// Per-Gaussian widths on the CPU, in slabs of storage order: each width's
/// rows of a slab are encoded together, and their codes laid out in the
/// slab's own bit buffer, which starts at the slab's first bit modulo 8; the
/// buffers are then ORed into place (neighbours share at most one byte, in
/// which each leaves the other's bits zero). Returns SHC and the scale of
/// every Gaussian in storage order (0 for width 0).
#[allow(clippy::too_many_arguments)]
fn encode_widths_cpu(
    scene: &Scene,
    order: &[u32],
    per: &[u8],
    offsets: &[u64],
    total_bits: u64,
    sign_flip: bool,
    degree: u8,
    qs: &[(u8, Quantizer)],
) -> Result<(Vec<u8>, Vec<f16>)> {
    let d = rest_dim(degree);
    let n = order.len();
    let mut q_of: [Option<&Quantizer>; 9] = [None; 9];
    for (b, q) in qs {
        q_of[*b as usize] = Some(q);
    }
    let parts: Vec<(Vec<u8>, Vec<f32>)> = (0..n.div_ceil(SLAB))
        .into_par_iter()
        .map(|c| {
            let (k0, k1) = (c * SLAB, n.min((c + 1) * SLAB));
            let base = offsets[k0];
            let end = if k1 < n { offsets[k1] } else { total_bits };
            let lead = (base % 8) as usize;
            let mut bits = vec![0u8; (lead as u64 + end - base).div_ceil(8) as usize];
            let mut scales = vec![0f32; k1 - k0];
            let mut buf = Vec::new();
            for (b, q) in q_of.iter().enumerate() {
                let Some(q) = q else { continue };
                let ks: Vec<u32> = (k0..k1)
                    .filter(|&k| per[k] as usize == b)
                    .map(|k| k as u32)
                    .collect();
                if ks.is_empty() {
                    continue;
                }
                let idx: Vec<u32> = ks.iter().map(|&k| order[k as usize]).collect();
                gather_rows(scene, &idx, sign_flip.then_some(&ks[..]), degree, &mut buf);
                let mut codes = vec![0u8; packed_len(ks.len() * d, b as u32)];
                let mut sc = vec![0f32; ks.len()];
                q.encode_into(Rows::new(&buf, d)?, &mut codes, &mut sc)
                    .map_err(|e| remap_row(e, &idx))?;
                let w = d * b;
                for (m, &k) in ks.iter().enumerate() {
                    let at = lead + (offsets[k as usize] - base) as usize;
                    copy_bits(&codes, m * w, &mut bits, at, w);
                    scales[k as usize - k0] = sc[m];
                }
            }
            Ok((bits, scales))
        })
        .collect::<Result<_>>()?;
    let mut shc = vec![0u8; total_bits.div_ceil(8) as usize];
    let mut scale_of = Vec::with_capacity(n);
    for (c, (bits, scales)) in parts.into_iter().enumerate() {
        let o = (offsets[c * SLAB] / 8) as usize;
        for (dst, src) in shc[o..].iter_mut().zip(bits) {
            *dst |= src;
        }
        scale_of.extend(scales.iter().map(|&s| f16::from_f32(s)));
    }
    Ok((shc, scale_of))
}

/// Parses the SH streams of a file with `n` Gaussians at degree `degree`.
/// `shw` is present exactly in the variable-width mode. Lengths are checked
/// here, against the widths.
#[allow(clippy::too_many_arguments)]
pub(crate) fn parse(
    n: usize,
    degree: u8,
    uniform_bits: Option<u8>,
    sign_flip: bool,
    rotation: Rotation,
    scale_mode: ScaleMode,
    cbk: &[u8],
    shw: Option<&[u8]>,
    shs: &[u8],
    shc: &[u8],
) -> std::result::Result<CompressedSh, (String, String)> {
    let bad = |s: &str, why: String| (format!("stream {s}"), why);
    let d = rest_dim(degree);
    let widths = match (uniform_bits, shw) {
        (Some(b), None) => vec![b; n],
        (None, Some(w)) => unpack_widths(w, n).map_err(|why| bad("SHW", why))?,
        _ => {
            return Err(bad(
                "SHW",
                "present without per-Gaussian widths, or missing with them".into(),
            ));
        }
    };
    // CBK: count, then (b, 2^b centroids, 2^b − 1 boundaries).
    let mut tables: Vec<Option<(Vec<f32>, Vec<f32>)>> = vec![None; 9];
    let count = *cbk.first().ok_or_else(|| bad("CBK", "empty".into()))? as usize;
    let mut at = 1;
    for t in 0..count {
        let b = *cbk
            .get(at)
            .ok_or_else(|| bad("CBK", format!("table {t} is truncated")))? as usize;
        if !(1..=8).contains(&b) || tables[b].is_some() {
            return Err(bad(
                "CBK",
                format!("table {t} has width {b}, out of range or repeated"),
            ));
        }
        let m = 1usize << b;
        let len = 4 * (2 * m - 1);
        let body = cbk
            .get(at + 1..at + 1 + len)
            .ok_or_else(|| bad("CBK", format!("table {t} (b = {b}) is truncated")))?;
        let v: Vec<f32> = body
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect();
        tables[b] = Some((v[..m].to_vec(), v[m..].to_vec()));
        at += 1 + len;
    }
    if at != cbk.len() {
        return Err(bad(
            "CBK",
            format!("{} bytes after the last table", cbk.len() - at),
        ));
    }
    if let Some(i) = widths
        .iter()
        .position(|&b| b > 0 && tables[b as usize].is_none())
    {
        return Err(bad(
            "CBK",
            format!("no table for width {} of Gaussian {i}", widths[i]),
        ));
    }
    let nonzero = widths.iter().filter(|&&b| b > 0).count();
    if shs.len() != 2 * nonzero {
        return Err(bad(
            "SHS",
            format!("{} bytes for {nonzero} scales", shs.len()),
        ));
    }
    let total_bits: u64 = widths.iter().map(|&b| d as u64 * b as u64).sum();
    if shc.len() as u64 != total_bits.div_ceil(8) {
        return Err(bad(
            "SHC",
            format!(
                "{} bytes, the widths need {}",
                shc.len(),
                total_bits.div_ceil(8)
            ),
        ));
    }
    let used = (total_bits % 8) as u32;
    if used != 0 && shc.last().is_some_and(|&l| l >> used != 0) {
        return Err(bad(
            "SHC",
            "the unused high bits of the last byte must be zero".into(),
        ));
    }
    let mut stored = shs
        .chunks_exact(2)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])));
    let scales: Vec<f16> = widths
        .iter()
        .map(|&b| {
            if b > 0 {
                // Counted against the widths above; a NaN would be refused below.
                stored.next().unwrap_or(f16::NAN)
            } else {
                f16::ZERO
            }
        })
        .collect();
    if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
        return Err(bad(
            "SHS",
            format!("the scale of Gaussian {i} is not finite"),
        ));
    }
    // Codebooks must be what a quantizer accepts (ascending, finite), and
    // on [−1, 1], where a rotated unit vector's coordinates lie: with the
    // rotation's entries there too and an f16 scale, every decoded value
    // is finite (docs/FORMAT.md, "Non-finite values").
    for (b, t) in tables.iter().enumerate() {
        if let Some((c, bd)) = t {
            if let Some(x) = c.iter().chain(bd).find(|x| x.abs() > 1.0) {
                return Err(bad(
                    "CBK",
                    format!("table b = {b} has the value {x}, outside [-1, 1]"),
                ));
            }
            Quantizer::from_parts(
                Arc::new(rotation.clone()),
                b as u32,
                c.clone(),
                bd.clone(),
                scale_mode,
                ScaleFormat::F16,
            )
            .map_err(|e| bad("CBK", e.to_string()))?;
        }
    }
    Ok(CompressedSh {
        sh_degree: degree,
        rotation: Arc::new(rotation),
        scale_mode,
        tables,
        widths,
        uniform: uniform_bits,
        codes: shc.to_vec(),
        scales,
        sign_flip,
    })
}

/// Exact length of `CBK ` for the set of widths used.
pub(crate) fn codebook_len(used: &[u8]) -> u64 {
    let used: Vec<u8> = if used.is_empty() {
        vec![1]
    } else {
        used.to_vec()
    };
    1 + used.iter().map(|&b| 1 + 4 * ((2u64 << b) - 1)).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_words_are_the_specified_ones() {
        // docs/FORMAT.md's examples, computed independently (Python).
        assert_eq!(sign_word(0, 0), 0x30be_035e);
        assert_eq!(sign_word(0, 1), 0x5e63_01b0);
        assert_eq!(sign_word(1, 0), 0xe92a_518a);
        // The flip negates exactly the set bits' coordinates, and is its
        // own inverse.
        let mut row: Vec<f32> = (1..=45).map(|v| v as f32).collect();
        flip_signs(0, &mut row);
        for (j, v) in row.iter().enumerate() {
            let bit = (sign_word(0, j as u32 / 32) >> (j % 32)) & 1;
            assert_eq!(
                *v,
                if bit == 1 {
                    -(j as f32 + 1.0)
                } else {
                    j as f32 + 1.0
                }
            );
        }
        flip_signs(0, &mut row);
        assert!(row.iter().enumerate().all(|(j, &v)| v == j as f32 + 1.0));
    }

    #[test]
    fn signs_of_neighbouring_indices_are_uncorrelated() {
        // Over 20,000 Gaussians: each of the 45 coordinates is negated about
        // half the time, and coordinate pairs and neighbouring Gaussians'
        // signs agree about half the time (±5σ of a fair coin).
        let n = 20_000u32;
        let sign = |k: u32, j: u32| (sign_word(k, j / 32) >> (j % 32)) & 1;
        let tol = 5.0 * 0.5 / (n as f64).sqrt();
        for j in 0..45 {
            let neg = (0..n).filter(|&k| sign(k, j) == 1).count() as f64 / n as f64;
            assert!((neg - 0.5).abs() < tol, "coordinate {j}: {neg}");
            let j2 = (j + 1) % 45;
            let same = (0..n).filter(|&k| sign(k, j) == sign(k, j2)).count() as f64 / n as f64;
            assert!((same - 0.5).abs() < tol, "coordinates {j}, {j2}: {same}");
            let next = (0..n).filter(|&k| sign(k, j) == sign(k + 1, j)).count() as f64 / n as f64;
            assert!(
                (next - 0.5).abs() < tol,
                "coordinate {j}, k vs k + 1: {next}"
            );
        }
    }
}

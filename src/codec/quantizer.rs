//! TurboQuant encode and decode on the CPU: the reference every other path
//! (the GPU kernels, the file formats) must agree with.
//!
//! Encode, per vector x of dimension d:
//! 1. scale: ‖x‖, computed after an exact power-of-two prescale so that no
//!    finite input overflows or underflows;
//! 2. normalise: u = x / ‖x‖;
//! 3. rotate: y = Π·u;
//! 4. quantise each y_j to the number of codebook boundaries below it;
//! 5. pack the b-bit codes ([`crate::packing`]) and store the scale, either
//!    ‖x‖ ([`ScaleMode::Norm`]) or the least-squares ‖x‖·⟨y, ĉ⟩/‖ĉ‖²
//!    ([`ScaleMode::LeastSquares`]), as f32 or f16.
//!
//! Decode: x̃ = s · Πᵀ·ĉ where ĉ_j is the centroid of code j.
//!
//! Work is split into fixed chunks of [`CHUNK`] vectors, whatever the thread
//! count, and every sum runs in a fixed order, so the output bytes do not
//! depend on threads, SIMD width or platform.

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use crate::codec::codebook::{Codebook, validate_params};
use crate::codec::encoded::Encoded;
use crate::codec::packing::{BitReader, BitWriter, packed_len};
use crate::codec::rotation::{LANES, Rotation, RotationKind};
use crate::codec::scales::{ScaleFormat, ScaleMode, Scales};
use crate::{Error, Result, Rows, RowsMut};

/// Vectors per unit of parallel work. A multiple of 8 and of [`LANES`], so
/// every chunk but the last starts on a byte boundary of the code stream.
pub const CHUNK: usize = 1024;

/// Vectors per encode tile with a dense rotation: two lane blocks, the width
/// of the rotation's register tile ([`Rotation::forward_tile`]). The
/// AVX-512 path uses twice this, [`DENSE_TILE_512`].
const DENSE_TILE: usize = 2 * LANES;

/// Vectors per dense encode tile on the AVX-512 path: two 16-lane registers.
const DENSE_TILE_512: usize = 2 * DENSE_TILE;

/// Everything that defines a quantizer before it is built.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizerConfig {
    /// Vector dimension d.
    pub dim: usize,
    /// Bits per coordinate b, 1..=8.
    pub bits: u32,
    /// Rotation family.
    pub rotation: RotationKind,
    /// Seed of the rotation.
    pub seed: u64,
    /// What the scale is.
    pub scale_mode: ScaleMode,
    /// How the scale is stored.
    pub scale_format: ScaleFormat,
}

impl QuantizerConfig {
    /// The defaults for (d, b): [`RotationKind::default_for`], seed 0,
    /// least-squares scale stored as f32.
    pub fn new(dim: usize, bits: u32) -> Self {
        QuantizerConfig {
            dim,
            bits,
            rotation: RotationKind::default_for(dim),
            seed: 0,
            scale_mode: ScaleMode::LeastSquares,
            scale_format: ScaleFormat::F32,
        }
    }
}

/// A TurboQuant quantizer: a rotation, a codebook and a scale convention.
///
/// ```
/// use turboquant3d::{Quantizer, QuantizerConfig};
/// let q = Quantizer::new(&QuantizerConfig::new(45, 3)).unwrap();
/// let x: Vec<f32> = (0..2 * 45).map(|i| (i as f32 * 0.1).sin()).collect();
/// let enc = q.encode(&x).unwrap();
/// let y = q.decode(&enc).unwrap();
/// let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
/// let energy: f32 = x.iter().map(|a| a * a).sum();
/// assert!(err / energy < 0.1);
/// ```
#[derive(Debug, Clone)]
pub struct Quantizer {
    dim: usize,
    bits: u32,
    rotation: Arc<Rotation>,
    centroids: Vec<f32>,
    boundaries: Vec<f32>,
    /// The upper half of `boundaries` when the table is symmetric.
    positive_boundaries: Vec<f32>,
    /// The upper half of `centroids` when both tables are symmetric.
    positive_centroids: Vec<f32>,
    scale_mode: ScaleMode,
    scale_format: ScaleFormat,
    simd: SimdLevel,
}

/// The widest instruction set the CPU kernels may use. The output is the
/// same for every level; tests lower it to check that.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Plain Rust, no runtime dispatch.
    Portable,
    /// AVX2 and FMA where the CPU has them.
    Avx2,
    /// AVX-512 (F, BW, VL) where the CPU has it, else as `Avx2`.
    Avx512,
}

impl Quantizer {
    /// Builds the rotation from the seed and takes the cached codebook.
    pub fn new(config: &QuantizerConfig) -> Result<Quantizer> {
        validate_params(config.dim, config.bits)?;
        let rotation = Rotation::new(config.rotation, config.dim, config.seed)?;
        Self::with_rotation(
            Arc::new(rotation),
            config.bits,
            config.scale_mode,
            config.scale_format,
        )
    }

    /// Uses an existing rotation with the computed codebook for (d, b).
    pub fn with_rotation(
        rotation: Arc<Rotation>,
        bits: u32,
        scale_mode: ScaleMode,
        scale_format: ScaleFormat,
    ) -> Result<Quantizer> {
        let cb = Codebook::get(rotation.dim(), bits)?;
        Self::from_parts(
            rotation,
            bits,
            cb.centroids_f32(),
            cb.boundaries_f32(),
            scale_mode,
            scale_format,
        )
    }

    /// Uses explicit tables, as stored in a file. Centroids (2^b) and
    /// boundaries (2^b − 1) must be finite and ascending.
    pub fn from_parts(
        rotation: Arc<Rotation>,
        bits: u32,
        centroids: Vec<f32>,
        boundaries: Vec<f32>,
        scale_mode: ScaleMode,
        scale_format: ScaleFormat,
    ) -> Result<Quantizer> {
        let dim = rotation.dim();
        validate_params(dim, bits)?;
        let n = 1usize << bits;
        if centroids.len() != n || boundaries.len() != n - 1 {
            return Err(Error::Shape(format!(
                "b = {bits} needs {n} centroids and {} boundaries, got {} and {}",
                n - 1,
                centroids.len(),
                boundaries.len()
            )));
        }
        for (name, t) in [("centroids", &centroids), ("boundaries", &boundaries)] {
            if t.iter().any(|x| !x.is_finite()) || t.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::InvalidArgument(format!(
                    "codebook {name} must be finite and strictly ascending"
                )));
            }
        }
        let positive_boundaries = symmetric_half(&boundaries);
        let h = n / 2;
        let positive_centroids = if !positive_boundaries.is_empty()
            && (0..h).all(|i| centroids[h - 1 - i] == -centroids[h + i])
        {
            centroids[h..].to_vec()
        } else {
            Vec::new()
        };
        Ok(Quantizer {
            dim,
            bits,
            rotation,
            centroids,
            boundaries,
            positive_boundaries,
            positive_centroids,
            scale_mode,
            scale_format,
            simd: SimdLevel::Avx512,
        })
    }

    /// Vector dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bits per coordinate b.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The rotation Π.
    pub fn rotation(&self) -> &Arc<Rotation> {
        &self.rotation
    }

    /// The centroid table the decoder uses.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// The boundary table the encoder searches.
    pub fn boundaries(&self) -> &[f32] {
        &self.boundaries
    }

    /// What the scale is.
    pub fn scale_mode(&self) -> ScaleMode {
        self.scale_mode
    }

    /// How the scale is stored.
    pub fn scale_format(&self) -> ScaleFormat {
        self.scale_format
    }

    /// Disables the runtime-selected SIMD code path. The output must not
    /// change; tests use this to check that it does not.
    #[doc(hidden)]
    pub fn set_force_portable(&mut self, on: bool) {
        self.simd = if on {
            SimdLevel::Portable
        } else {
            SimdLevel::Avx512
        };
    }

    /// Caps the runtime-selected SIMD code path at `level`. The output must
    /// not change; tests use this to check that it does not.
    #[doc(hidden)]
    pub fn set_max_simd(&mut self, level: SimdLevel) {
        self.simd = level;
    }

    /// Encodes contiguous rows of length d.
    pub fn encode(&self, data: &[f32]) -> Result<Encoded> {
        self.encode_rows(Rows::new(data, self.dim)?)
    }

    /// Encodes rows, possibly strided.
    pub fn encode_rows(&self, rows: Rows<'_>) -> Result<Encoded> {
        let n = rows.len();
        let mut codes = vec![0u8; packed_len(n * self.dim, self.bits)];
        let mut scales = vec![0f32; n];
        self.encode_into(rows, &mut codes, &mut scales)?;
        let scales = match self.scale_format {
            ScaleFormat::F32 => Scales::F32(scales),
            ScaleFormat::F16 => Scales::F16(scales.iter().map(|&s| f16::from_f32(s)).collect()),
        };
        Ok(Encoded {
            dim: self.dim,
            bits: self.bits,
            count: n,
            codes,
            scales,
        })
    }

    /// Encodes into caller buffers: `codes` of exactly
    /// `packed_len(N·d, b)` bytes, `scales` of N values (already rounded
    /// through f16 when the scale format is f16). Callers that encode a large
    /// input in slabs keep every slab but the last a multiple of 8 vectors,
    /// so that each slab's codes start on a byte boundary.
    pub fn encode_into(&self, rows: Rows<'_>, codes: &mut [u8], scales: &mut [f32]) -> Result<()> {
        let n = rows.len();
        if rows.dim() != self.dim {
            return Err(Error::Shape(format!(
                "rows have length {}, the quantizer has d = {}",
                rows.dim(),
                self.dim
            )));
        }
        if n == 0 {
            return Err(Error::EmptyInput {
                what: "no vectors to encode".into(),
            });
        }
        if codes.len() != packed_len(n * self.dim, self.bits) || scales.len() != n {
            return Err(Error::Shape(format!(
                "{n} vectors need {} code bytes and {n} scales, got {} and {}",
                packed_len(n * self.dim, self.bits),
                codes.len(),
                scales.len()
            )));
        }
        let chunk_bytes = CHUNK * self.dim * self.bits as usize / 8;
        let results: Vec<Result<()>> = codes
            .par_chunks_mut(chunk_bytes)
            .zip(scales.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(c, (codes, scales))| {
                let first = c * CHUNK;
                self.encode_chunk(rows.sub(first, scales.len()), first, codes, scales)
            })
            .collect();
        // The first failing chunk holds the lowest failing row: deterministic.
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Decodes into a new contiguous buffer of N·d values.
    pub fn decode(&self, enc: &Encoded) -> Result<Vec<f32>> {
        let mut out = vec![0f32; enc.len() * self.dim];
        self.decode_into(enc, RowsMut::new(&mut out, self.dim)?)?;
        Ok(out)
    }

    /// Decodes into rows, possibly strided (values between rows untouched).
    pub fn decode_into(&self, enc: &Encoded, mut out: RowsMut<'_>) -> Result<()> {
        if enc.dim() != self.dim || enc.bits() != self.bits {
            return Err(Error::Shape(format!(
                "encoded data has d = {}, b = {}; the quantizer has d = {}, b = {}",
                enc.dim(),
                enc.bits(),
                self.dim,
                self.bits
            )));
        }
        if out.dim() != self.dim || out.len() != enc.len() {
            return Err(Error::Shape(format!(
                "output has {} rows of {}, need {} rows of {}",
                out.len(),
                out.dim(),
                enc.len(),
                self.dim
            )));
        }
        let n = enc.len();
        if n == 0 {
            return Ok(());
        }
        let stride = out.stride();
        let chunk_bytes = CHUNK * self.dim * self.bits as usize / 8;
        out.data_mut()
            .par_chunks_mut(CHUNK * stride)
            .zip(enc.codes().par_chunks(chunk_bytes))
            .enumerate()
            .for_each(|(c, (dst, codes))| {
                let first = c * CHUNK;
                let count = CHUNK.min(n - first);
                self.decode_chunk(codes, enc.scales(), first, count, dst, stride);
            });
        Ok(())
    }

    fn encode_chunk(
        &self,
        rows: Rows<'_>,
        first: usize,
        codes: &mut [u8],
        scales: &mut [f32],
    ) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if self.simd >= SimdLevel::Avx512
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: checked just above.
            return unsafe { self.encode_chunk_avx512(rows, first, codes, scales) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.simd >= SimdLevel::Avx2
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { self.encode_chunk_avx2(rows, first, codes, scales) };
        }
        self.encode_chunk_portable(rows, first, codes, scales)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn encode_chunk_avx2(
        &self,
        rows: Rows<'_>,
        first: usize,
        codes: &mut [u8],
        scales: &mut [f32],
    ) -> Result<()> {
        self.encode_chunk_portable(rows, first, codes, scales)
    }

    /// The same arithmetic on 16-lane registers: dense tiles of 32 vectors
    /// (a 6 × 2-register FMA tile), each tile loaded by an in-register
    /// transpose and the next one prefetched.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    fn encode_chunk_avx512(
        &self,
        rows: Rows<'_>,
        first: usize,
        codes: &mut [u8],
        scales: &mut [f32],
    ) -> Result<()> {
        self.encode_chunk_with::<DENSE_TILE_512, DENSE_TILE>(rows, first, codes, scales, true)
    }

    fn decode_chunk(
        &self,
        codes: &[u8],
        scales: &Scales,
        first: usize,
        count: usize,
        dst: &mut [f32],
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.simd >= SimdLevel::Avx2 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.decode_chunk_avx2(codes, scales, first, count, dst, stride) };
        }
        self.decode_chunk_portable(codes, scales, first, count, dst, stride)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn decode_chunk_avx2(
        &self,
        codes: &[u8],
        scales: &Scales,
        first: usize,
        count: usize,
        dst: &mut [f32],
        stride: usize,
    ) {
        self.decode_chunk_portable(codes, scales, first, count, dst, stride)
    }

    /// One chunk of encode. Inlined into each instruction-set variant.
    #[inline(always)]
    fn encode_chunk_portable(
        &self,
        rows: Rows<'_>,
        first: usize,
        codes: &mut [u8],
        scales: &mut [f32],
    ) -> Result<()> {
        self.encode_chunk_with::<DENSE_TILE, LANES>(rows, first, codes, scales, false)
    }

    /// One chunk in tiles of `DW` vectors with a dense rotation, `HW` with
    /// Hadamard; `fast`: the AVX-512 tile load ([`gather_tile`]).
    #[inline(always)]
    fn encode_chunk_with<const DW: usize, const HW: usize>(
        &self,
        rows: Rows<'_>,
        first: usize,
        codes: &mut [u8],
        scales: &mut [f32],
        fast: bool,
    ) -> Result<()> {
        match &*self.rotation {
            Rotation::Dense(_) => self.encode_tiles::<DW>(rows, first, codes, scales, fast),
            Rotation::Hadamard(_) => self.encode_tiles::<HW>(rows, first, codes, scales, fast),
        }
    }

    /// Encodes a chunk in tiles of W vectors stored coordinate-major
    /// (`tile[j * W + v]`), every step SIMD across vectors and each vector's
    /// arithmetic independent of W. A tile stays in L1 from the gather to
    /// the packed codes: the input is read once and the output written once.
    #[inline(always)]
    fn encode_tiles<const W: usize>(
        &self,
        rows: Rows<'_>,
        first: usize,
        codes: &mut [u8],
        scales: &mut [f32],
        fast: bool,
    ) -> Result<()> {
        let d = self.dim;
        let bits = self.bits;
        // Coordinate-major tiles: `x[j][v]` is coordinate j of vector v.
        // Fixed-width rows keep every inner loop free of bounds checks.
        let mut x = vec![[0f32; W]; d];
        let mut y = vec![[0f32; W]; d];
        let mut q = vec![[0u32; W]; d];
        let mut cent = vec![[0f32; W]; d];
        // Each vector's d·b code bits as 32-bit words, word-major.
        let nwords = (d * bits as usize).div_ceil(32);
        let tail_bits = (d * bits as usize - 32 * (nwords - 1)) as u32;
        let mut words = vec![[0u32; W]; nwords];
        let mut writer = BitWriter::new(codes);
        let ls = self.scale_mode == ScaleMode::LeastSquares;
        let n = rows.len();
        for start in (0..n).step_by(W) {
            let nv = W.min(n - start);
            gather_tile::<W>(&rows, start, nv, &mut x, fast);
            // NaN and ±Inf fail |t| <= MAX; only then look for the first one.
            let mut finite = [1u32; W];
            for xj in &x {
                for v in 0..W {
                    finite[v] &= (xj[v].abs() <= f32::MAX) as u32;
                }
            }
            if finite.contains(&0) {
                for v in 0..nv {
                    let row = rows.row(start + v);
                    if let Some(col) = row.iter().position(|t| !t.is_finite()) {
                        return Err(Error::NonFinite {
                            row: first + start + v,
                            col,
                            value: row[col],
                        });
                    }
                }
            }
            let norm = normalise_block::<W>(x.as_flattened_mut(), d);
            self.rotation
                .forward_tile::<W>(x.as_flattened(), y.as_flattened_mut());
            let filled = quantise_block::<W>(
                y.as_flattened(),
                &self.boundaries,
                &self.positive_boundaries,
                if ls { &self.positive_centroids } else { &[] },
                bits,
                q.as_flattened_mut(),
                cent.as_flattened_mut(),
            );
            let mut s = norm;
            if ls {
                let (dot, cc) = self.ls_sums::<W>(
                    y.as_flattened(),
                    q.as_flattened(),
                    cent.as_flattened_mut(),
                    filled,
                );
                for v in 0..W {
                    s[v] = norm[v] * (dot[v] / cc[v]);
                }
            }
            pack_tile::<W>(&q, bits, &mut words);
            for v in 0..nv {
                scales[start + v] = self.store_scale(first + start + v, s[v])?;
                let (last, full) = words.split_last().unwrap_or((&[0; W], &[]));
                for w in full {
                    writer.put(w[v], 32);
                }
                writer.put(last[v], tail_bits);
            }
        }
        writer.finish();
        Ok(())
    }

    /// ⟨y, ĉ⟩ and ‖ĉ‖² per vector of a `[d][W]` tile, summed over j in
    /// order. ĉ is `cent` where [`quantise_block`] filled it (symmetric
    /// tables), else looked up from the codes; the values are the table's
    /// either way.
    #[inline(always)]
    fn ls_sums<const W: usize>(
        &self,
        y: &[f32],
        q: &[u32],
        cent: &mut [f32],
        filled: bool,
    ) -> ([f32; W], [f32; W]) {
        if !filled {
            for (c, &k) in cent.iter_mut().zip(q) {
                *c = self.centroids[k as usize];
            }
        }
        let mut dot = [0f32; W];
        let mut cc = [0f32; W];
        for (yj, cj) in y.as_chunks::<W>().0.iter().zip(cent.as_chunks::<W>().0) {
            for v in 0..W {
                dot[v] += yj[v] * cj[v];
                cc[v] += cj[v] * cj[v];
            }
        }
        (dot, cc)
    }

    /// Rounds a scale to its stored format, or says why it cannot be stored.
    fn store_scale(&self, row: usize, s: f32) -> Result<f32> {
        let err = |why| Error::ScaleUnrepresentable {
            row,
            scale: s as f64,
            format: self.scale_format.name(),
            why,
        };
        if !s.is_finite() {
            return Err(err("it overflows f32"));
        }
        match self.scale_format {
            ScaleFormat::F32 => Ok(s),
            ScaleFormat::F16 => {
                let h = f16::from_f32(s);
                if !h.is_finite() {
                    Err(err("it exceeds the f16 maximum 65504"))
                } else if s != 0.0 && h.to_f32() == 0.0 {
                    Err(err("it is below the smallest f16, 6e-8"))
                } else {
                    Ok(h.to_f32())
                }
            }
        }
    }

    /// One chunk of decode. Inlined into each instruction-set variant.
    #[inline(always)]
    fn decode_chunk_portable(
        &self,
        codes: &[u8],
        scales: &Scales,
        first: usize,
        count: usize,
        dst: &mut [f32],
        stride: usize,
    ) {
        let d = self.dim;
        let mut c = vec![0f32; d * LANES];
        let mut x = vec![0f32; d * LANES];
        let mut reader = BitReader::new(codes);
        for start in (0..count).step_by(LANES) {
            let nv = LANES.min(count - start);
            let mut s = [0f32; LANES];
            for v in 0..LANES {
                if v < nv {
                    s[v] = scales.get(first + start + v);
                    for j in 0..d {
                        c[j * LANES + v] = self.centroids[reader.get(self.bits) as usize];
                    }
                } else {
                    for j in 0..d {
                        c[j * LANES + v] = 0.0;
                    }
                }
            }
            self.rotation.inverse_block(&c, &mut x);
            for v in 0..nv {
                let row = &mut dst[(start + v) * stride..(start + v) * stride + d];
                if s[v] == 0.0 {
                    row.fill(0.0);
                } else {
                    for (j, out) in row.iter_mut().enumerate() {
                        *out = x[j * LANES + v] * s[v];
                    }
                }
            }
        }
    }
}

/// Loads vectors `start..start + nv` of `rows` into the coordinate-major
/// tile `x` (`x[j][v]`), zeros beyond `nv`. With `fast` (AVX-512F, checked
/// by the caller) a full tile is transposed in registers, 16 × 16 at a time.
#[inline(always)]
fn gather_tile<const W: usize>(
    rows: &Rows<'_>,
    start: usize,
    nv: usize,
    x: &mut [[f32; W]],
    fast: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if fast && nv == W && W.is_multiple_of(16) {
        let d = x.len();
        let r: [&[f32]; W] = std::array::from_fn(|v| &rows.row(start + v)[..d]);
        // SAFETY: `fast` promises AVX-512F; every row has d values.
        unsafe { transpose_avx512::<W>(&r, x) };
        // The next tile's lines, fetched while this tile computes: the
        // hardware prefetcher alone leaves the loads above waiting on memory.
        for v in start + W..(start + 2 * W).min(rows.len()) {
            for c in rows.row(v).chunks(16) {
                // SAFETY: a prefetch of a valid address changes no state.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        c.as_ptr().cast(),
                    )
                };
            }
        }
        return;
    }
    let _ = fast;
    for v in 0..W {
        if v < nv {
            for (xj, &t) in x.iter_mut().zip(rows.row(start + v)) {
                xj[v] = t;
            }
        } else {
            for xj in x.iter_mut() {
                xj[v] = 0.0;
            }
        }
    }
}

/// `x[j][v] = r[v][j]` for W rows of d = `x.len()` values each, as 16 × 16
/// blocks transposed in registers: four rounds of block swaps (sizes 8, 4,
/// 2, 1), each a two-source permute per pair of registers. The last block of
/// coordinates is loaded under a mask, so no row is read past its end.
///
/// # Safety
/// The CPU must support AVX-512F; `W` must be a multiple of 16 and every
/// `r[v]` at least `x.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512<const W: usize>(r: &[&[f32]; W], x: &mut [[f32; W]]) {
    use std::arch::x86_64::*;
    let d = x.len();
    // Lane l of the low result takes a[l] where bit s of l is clear, else
    // b[l − s]; the high result a[l + s], else b[l] (index ≥ 16: from b).
    let idx = |s: i32, hi: bool| -> __m512i {
        let lane: [i32; 16] = std::array::from_fn(|l| {
            let l = l as i32;
            match ((l & s) == 0, hi) {
                (true, false) => l,
                (false, false) => 16 + l - s,
                (true, true) => l + s,
                (false, true) => 16 + l,
            }
        });
        // SAFETY: 16 i32 values are 64 bytes, read unaligned.
        unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) }
    };
    let stages = [8, 4, 2, 1].map(|s| (s as usize, idx(s, false), idx(s, true)));
    for g in (0..W).step_by(16) {
        for j0 in (0..d).step_by(16) {
            let m = (d - j0).min(16);
            let mask: __mmask16 = if m == 16 { 0xffff } else { (1u16 << m) - 1 };
            let mut t: [__m512; 16] = std::array::from_fn(|i| {
                // SAFETY: lanes j0..j0 + m of a row of d ≥ j0 + m values;
                // masked-off lanes are not read.
                unsafe { _mm512_maskz_loadu_ps(mask, r[g + i].as_ptr().add(j0)) }
            });
            for &(s, lo, hi) in &stages {
                for i in 0..16 {
                    if i & s == 0 {
                        let (a, b) = (t[i], t[i + s]);
                        t[i] = _mm512_permutex2var_ps(a, lo, b);
                        t[i + s] = _mm512_permutex2var_ps(a, hi, b);
                    }
                }
            }
            for (jj, row) in t.iter().enumerate().take(m) {
                // SAFETY: x[j0 + jj] has W ≥ g + 16 values.
                unsafe { _mm512_storeu_ps(x[j0 + jj].as_mut_ptr().add(g), *row) };
            }
        }
    }
}

/// Packs each vector's b-bit codes `q[j][v]` into its 32-bit words
/// `words[w][v]`, code j at bits j·b.. of the vector's little-endian bit
/// string, SIMD across vectors.
#[inline(always)]
fn pack_tile<const W: usize>(q: &[[u32; W]], bits: u32, words: &mut [[u32; W]]) {
    for w in words.iter_mut() {
        *w = [0; W];
    }
    for (j, qj) in q.iter().enumerate() {
        let bit = j * bits as usize;
        let (w, sh) = (bit / 32, (bit % 32) as u32);
        let lo = &mut words[w];
        for v in 0..W {
            lo[v] |= qj[v] << sh;
        }
        if sh + bits > 32 {
            let hi = &mut words[w + 1];
            for v in 0..W {
                hi[v] |= qj[v] >> (32 - sh);
            }
        }
    }
}

/// Normalises each vector of a `[d][LANES]` block in place and returns the
/// norms. Each vector is first multiplied by a power of two (exact) that
/// brings its largest entry into [1, 2), so the sum of squares neither
/// overflows nor underflows; zero vectors stay zero with norm 0.
#[inline(always)]
fn normalise_block<const W: usize>(x: &mut [f32], d: usize) -> [f32; W] {
    let x = &mut x.as_chunks_mut::<W>().0[..d];
    let mut maxabs = [0f32; W];
    for xj in x.iter() {
        for v in 0..W {
            maxabs[v] = maxabs[v].max(xj[v].abs());
        }
    }
    let mut pre = [1f32; W];
    let mut post = [1f32; W];
    for v in 0..W {
        let e = ((maxabs[v].to_bits() >> 23) & 0xff).clamp(1, 253);
        pre[v] = f32::from_bits((254 - e) << 23); // 2^(127 − e)
        post[v] = f32::from_bits(e << 23); // 2^(e − 127)
    }
    let mut n2 = [0f32; W];
    for xj in x.iter_mut() {
        for v in 0..W {
            let t = xj[v] * pre[v];
            xj[v] = t;
            n2[v] += t * t;
        }
    }
    let mut inv = [0f32; W];
    let mut norm = [0f32; W];
    for v in 0..W {
        let r = n2[v].sqrt();
        inv[v] = if r > 0.0 { 1.0 / r } else { 0.0 };
        norm[v] = r * post[v];
    }
    for xj in x.iter_mut() {
        for v in 0..W {
            xj[v] *= inv[v];
        }
    }
    norm
}

/// The widest table searched by counting boundaries across the lanes of a
/// tile (wider ones by a scalar binary search, [`quantise_one`]). Counting
/// the upper half of a symmetric table is 2^(b−1) − 1 comparisons per value,
/// each one lane of a vector compare: at b = 8, 127 of them over 16 lanes
/// still cost less than the scalar search's 8 dependent loads.
const COUNT_MAX_BITS: u32 = 8;

/// code = #{i : boundary_i < y}, for a `[d][W]` block. `positive` is
/// the upper half of a symmetric table (see [`symmetric_half`]), or empty.
///
/// With `centroids`, the upper half of a symmetric centroid table (or
/// empty), the symmetric branch also writes each ĉ into `cent` and returns
/// true: a select riding on the same comparisons, so the least-squares sums
/// need no table lookup.
#[inline(always)]
fn quantise_block<const W: usize>(
    y: &[f32],
    boundaries: &[f32],
    positive: &[f32],
    centroids: &[f32],
    bits: u32,
    q: &mut [u32],
    cent: &mut [f32],
) -> bool {
    if bits <= COUNT_MAX_BITS && !positive.is_empty() && centroids.len() == positive.len() + 1 {
        // As below, and ĉ = ±centroids[#{p_j < a}]: code h + c has the
        // centroid centroids[c], code h − 1 − c its negative.
        let h = positive.len() as u32 + 1;
        for ((yj, qj), cj) in y
            .as_chunks::<W>()
            .0
            .iter()
            .zip(q.as_chunks_mut::<W>().0)
            .zip(cent.as_chunks_mut::<W>().0)
        {
            let mut a = [0f32; W];
            let mut up = [0u32; W];
            for v in 0..W {
                up[v] = (yj[v] <= 0.0) as u32;
                a[v] = f32::from_bits(yj[v].abs().to_bits() + up[v]);
            }
            let mut c = [0u32; W];
            let mut m = [centroids[0]; W];
            for (&p, &next) in positive.iter().zip(&centroids[1..]) {
                for v in 0..W {
                    let gt = p < a[v];
                    c[v] += gt as u32;
                    m[v] = if gt { next } else { m[v] };
                }
            }
            for v in 0..W {
                // A select, not up·(2c + 1): no integer multiply.
                qj[v] = if up[v] != 0 { h - 1 - c[v] } else { h + c[v] };
                cj[v] = f32::from_bits(m[v].to_bits() ^ (up[v] << 31));
            }
        }
        return true;
    }
    if bits <= COUNT_MAX_BITS && !positive.is_empty() {
        // A symmetric table with 0 in the middle: with h = 2^(b−1),
        //   y > 0: code = h + #{p_j < y},   y ≤ 0: code = h − 1 − #{p_j ≤ −y},
        // which equals the full count with half the comparisons.
        let h = positive.len() as u32 + 1;
        for (yj, qj) in y.as_chunks::<W>().0.iter().zip(q.as_chunks_mut::<W>().0) {
            // p ≤ |y| is p < next_up(|y|): one comparison for both signs.
            let mut a = [0f32; W];
            let mut up = [0u32; W];
            for v in 0..W {
                up[v] = (yj[v] <= 0.0) as u32;
                a[v] = f32::from_bits(yj[v].abs().to_bits() + up[v]);
            }
            let mut c = [0u32; W];
            for &p in positive {
                for v in 0..W {
                    c[v] += (p < a[v]) as u32;
                }
            }
            for v in 0..W {
                // y > 0: h + c; y ≤ 0: h − 1 − c.
                qj[v] = if up[v] != 0 { h - 1 - c[v] } else { h + c[v] };
            }
        }
    } else if bits <= COUNT_MAX_BITS {
        // A branch-free count vectorises across lanes.
        for (yj, qj) in y.as_chunks::<W>().0.iter().zip(q.as_chunks_mut::<W>().0) {
            // 32-bit counters match the f32 compare masks lane for lane.
            let mut c = [0u32; W];
            for &t in boundaries {
                for v in 0..W {
                    c[v] += (t < yj[v]) as u32;
                }
            }
            qj.copy_from_slice(&c);
        }
    } else {
        for (&yv, qv) in y.iter().zip(q.iter_mut()) {
            *qv = quantise_one(yv, boundaries, bits) as u32;
        }
    }
    false
}

/// The positive boundaries of a table that is exactly symmetric about a
/// middle boundary of 0 (every computed codebook is), or empty otherwise.
fn symmetric_half(boundaries: &[f32]) -> Vec<f32> {
    let n = boundaries.len();
    let mid = n / 2;
    let symmetric = n % 2 == 1
        && boundaries[mid] == 0.0
        && (0..mid).all(|i| boundaries[i] == -boundaries[n - 1 - i]);
    if symmetric {
        boundaries[mid + 1..].to_vec()
    } else {
        Vec::new()
    }
}

/// Branch-free binary search: the number of sorted boundaries below y.
#[inline(always)]
pub(crate) fn quantise_one(y: f32, boundaries: &[f32], bits: u32) -> u8 {
    let mut idx = 0usize;
    let mut step = 1usize << (bits - 1);
    while step > 0 {
        if boundaries[idx + step - 1] < y {
            idx += step;
        }
        step >>= 1;
    }
    idx as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_search_counts_boundaries_below() {
        let b: Vec<f32> = (0..255).map(|i| i as f32).collect();
        for bits in 1..=8u32 {
            let n = (1usize << bits) - 1;
            for k in 0..=(2 * n + 2) {
                let y = k as f32 * 0.5 - 0.75;
                let want = b[..n].iter().filter(|&&t| t < y).count();
                assert_eq!(
                    quantise_one(y, &b[..n], bits) as usize,
                    want,
                    "bits={bits} y={y}"
                );
            }
        }
    }

    #[test]
    fn symmetric_half_count_equals_the_full_count() {
        for bits in 1..=8u32 {
            let cb = Codebook::get(45, bits).unwrap();
            let t = cb.boundaries_f32();
            let half = symmetric_half(&t);
            assert_eq!(
                half.len(),
                t.len() / 2,
                "b={bits}: computed tables are symmetric"
            );
            // Every boundary exactly, its neighbours, ±0, and a sweep.
            let mut ys: Vec<f32> =
                vec![0.0, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE];
            for &b in &t {
                ys.extend([
                    b,
                    -b,
                    f32::from_bits(b.to_bits() + 1),
                    f32::from_bits(b.to_bits().max(1) - 1),
                ]);
            }
            ys.extend((0..400).map(|i| (i as f32 - 200.0) * 0.0017));
            ys.resize(ys.len().div_ceil(LANES) * LANES, 0.25);
            let (mut fast, mut full) = (vec![0u32; ys.len()], vec![0u32; ys.len()]);
            let mut cent = vec![0f32; ys.len()];
            quantise_block::<LANES>(&ys, &t, &half, &[], bits, &mut fast, &mut cent);
            quantise_block::<LANES>(&ys, &t, &[], &[], bits, &mut full, &mut cent);
            let c = cb.centroids_f32();
            let mut with_c = vec![0u32; ys.len()];
            let filled = quantise_block::<LANES>(
                &ys,
                &t,
                &half,
                &c[c.len() / 2..],
                bits,
                &mut with_c,
                &mut cent,
            );
            // b = 1 has no positive boundaries: the plain count and a lookup.
            assert_eq!(filled, bits > 1, "b={bits}");
            assert_eq!(with_c, full, "b={bits}");
            for (i, y) in ys.iter().enumerate() {
                if filled {
                    assert_eq!(cent[i], c[full[i] as usize], "b={bits} y={y:e}: centroid");
                }
                assert_eq!(fast[i], full[i], "b={bits} y={y:e}");
                assert_eq!(
                    full[i],
                    quantise_one(*y, &t, bits) as u32,
                    "b={bits} y={y:e}"
                );
            }
        }
        assert!(symmetric_half(&[-0.5, 0.0, 0.4]).is_empty());
    }

    #[test]
    fn normalise_handles_extreme_magnitudes() {
        let d = 4;
        for &m in &[0.0f32, 1e-40, 1e-20, 1.0, 1e20, 1e38, f32::MAX] {
            let mut x = vec![0f32; d * LANES];
            for j in 0..d {
                x[j * LANES] = m * if j % 2 == 0 { 1.0 } else { -0.5 };
            }
            let want_norm = (m as f64) * (2.0f64 * (1.0 + 0.25)).sqrt();
            let norm = normalise_block::<LANES>(&mut x, d);
            if m == 0.0 {
                assert_eq!(norm[0], 0.0);
                assert!(x.iter().all(|&t| t == 0.0));
                continue;
            }
            if want_norm > f32::MAX as f64 {
                assert!(norm[0].is_infinite(), "m={m}");
            } else {
                // Within 1e-6 relative, or one step of f32's subnormal spacing.
                let tol = (1e-6 * want_norm).max(f32::from_bits(1) as f64);
                assert!(
                    ((norm[0] as f64) - want_norm).abs() <= tol,
                    "m={m}: {} vs {want_norm}",
                    norm[0]
                );
            }
            let n2: f64 = (0..d).map(|j| (x[j * LANES] as f64).powi(2)).sum();
            assert!((n2 - 1.0).abs() < 1e-6, "m={m}: normalised norm² {n2}");
        }
    }
}

//! The WGSL module with which a host renderer decodes compressed SH-rest in
//! its own shader, and the contents of its buffers: the contract a host
//! uses without [`GpuRenderer`](crate::render::gpu::GpuRenderer).

use crate::splat::sh::CompressedSh;
use crate::{Error, Result};

/// The SH-rest decoder for host renderers, in WGSL.
///
/// Concatenate it with your shader source (it declares no entry point) and
/// call
///
/// ```wgsl
/// var rest: array<f32, 45>;
/// tq_sh_decode(i, &rest); // rest[0..d) = SH-rest of Gaussian i
/// ```
///
/// It needs three override constants and four read-only storage buffers in
/// **bind group 1**, all bound in both modes (four, so that with the host's
/// own four a stage stays within WebGPU's default
/// `max_storage_buffers_per_shader_stage` of 8). [`ShDecodeBuffers::new`]
/// computes their contents from a [`CompressedSh`] (as
/// [`decompress_split`](crate::splat::decompress_split) returns it),
/// and [`GpuRenderer::upload_compressed`](crate::render::gpu::GpuRenderer::upload_compressed) uploads exactly these:
///
/// | what | WGSL | contents ([`ShDecodeBuffers`] field) |
/// |---|---|---|
/// | `override TQ_D: u32` | | `d`: d = `sh.dim()` (9, 24 or 45) |
/// | `override TQ_BITS: u32` | | `bits`: b (1..=8) when every Gaussian has width b (uniform mode), 0 for per-Gaussian widths |
/// | `override TQ_FLIP: u32` | | `flip`: 1 when `sh.sign_flip` (the file's SH sign flip, header byte 61 bit 0), else 0 |
/// | binding 0 | `tq_codes: array<u32>` | `codes`: `sh.codes`, zero-padded to a multiple of 4 bytes (LSB-first bit stream: Gaussian i's d codes of b_i bits start at bit d·Σ_{k<i} b_k, i·d·b when uniform) |
/// | binding 1 | `tq_scales: array<u32>` | `scales`: `sh.scales` as little-endian binary16, zero-padded to 4 bytes: Gaussian 2k in the low half of word k (+0 at width 0) |
/// | binding 2 | `tq_tables: array<f32>` | `tables`: Π = `sh.rotation.dense_matrix()` (d×d row-major) at [0, d²), then the centroids from d²: uniform mode: width b's 2^b (`sh.tables[b]`); per-Gaussian mode: every width's, width b's 2^b at d² + 2^b − 2 (b = 1 at d², b = 2 at d² + 2, b = 3 at d² + 6, …), zeros for widths not used, up to the largest width used |
/// | binding 3 | `tq_meta: array<u32>` | `meta`: uniform mode: one unused zero word; per-Gaussian mode: two words per group of 8 Gaussians, word 2g the first code bit of Gaussian 8g, word 2g + 1 the widths of Gaussians 8g..8g+7, 4 bits each (Gaussian 8g + k in bits 4k..4k+3) |
///
/// The result is x = s·Πᵀ·c (0 at width 0), with TQ_FLIP = 1 multiplied
/// coordinate-wise by Gaussian i's signs
/// ([`flip_signs`](crate::splat::sh::flip_signs)), in the PLY's channel-major
/// `f_rest` order (red's (L+1)²−1 coefficients, then green's, then
/// blue's), equal to [`CompressedSh::decode`] up to f32 summation order.
/// Code bit indices are u32: the stream must be below 2³² bits
/// ([`ShDecodeBuffers::new`] returns [`Error::GpuUnsupported`] otherwise).
/// The per-Gaussian widths cost 1 byte per Gaussian of `tq_meta` (the file
/// stores them in half a byte); the uniform mode costs nothing extra and
/// its decode is the fixed-width one (TQ_BITS is a constant). The decode
/// costs d² multiply-adds per call (none at width 0); call it once per
/// Gaussian (e.g. in a preprocess pass).
pub const SH_DECODE_WGSL: &str = include_str!("../../shaders/sh_decode.wgsl");

/// The contents of [`SH_DECODE_WGSL`]'s overrides and bind group 1 for one
/// file's compressed SH-rest (see the table there): what
/// [`GpuRenderer::upload_compressed`](crate::render::gpu::GpuRenderer::upload_compressed) uploads, for a host renderer to
/// upload to its own buffers. Every field except `codes` is non-empty and a
/// whole number of u32 words; pad `codes` to whole words (at least one)
/// when uploading.
#[derive(Debug, Clone)]
pub struct ShDecodeBuffers<'a> {
    /// `TQ_D`: the SH-rest dimension d.
    pub d: u32,
    /// `TQ_BITS`: the width b when every Gaussian has width b ≥ 1 (uniform
    /// mode), 0 for per-Gaussian widths.
    pub bits: u32,
    /// `TQ_FLIP`: 1 when the decoded vectors' signs are to be flipped back
    /// (the file's SH sign flip), 0 otherwise.
    pub flip: u32,
    /// Binding 0, `tq_codes`: the code stream as stored.
    pub codes: &'a [u8],
    /// Binding 1, `tq_scales`: binary16 scales, little-endian.
    pub scales: Vec<u8>,
    /// Binding 2, `tq_tables`: Π (d×d row-major), then the centroids.
    pub tables: Vec<f32>,
    /// Binding 3, `tq_meta`: group offsets and packed widths (one zero word
    /// in uniform mode).
    pub meta: Vec<u32>,
}

impl<'a> ShDecodeBuffers<'a> {
    /// Checks `sh` and lays out its buffers: uniform mode when every width
    /// is the same b ≥ 1 (whatever the file's mode), per-Gaussian mode
    /// otherwise. Fails with [`Error::GpuUnsupported`] when the code stream
    /// has 2³² bits or more (the shader's bit index is a u32), and with
    /// [`Error::Shape`] or [`Error::InvalidArgument`] when the parts
    /// disagree.
    pub fn new(sh: &'a CompressedSh) -> Result<ShDecodeBuffers<'a>> {
        let d = sh.dim();
        let n = sh.len();
        if !(1..=3).contains(&sh.sh_degree) {
            return Err(Error::InvalidArgument(format!(
                "tq_sh_decode needs SH degree 1..=3, not {}",
                sh.sh_degree
            )));
        }
        if sh.rotation.dim() != d {
            return Err(Error::Shape(format!(
                "the rotation has d = {}, SH degree {} needs {d}",
                sh.rotation.dim(),
                sh.sh_degree
            )));
        }
        if sh.scales.len() != n {
            return Err(Error::Shape(format!(
                "{} scales for {n} Gaussians",
                sh.scales.len()
            )));
        }
        if let Some(i) = sh.widths.iter().position(|&b| b > 8) {
            return Err(Error::InvalidArgument(format!(
                "Gaussian {i} has width {} (at most 8)",
                sh.widths[i]
            )));
        }
        let total_bits: u64 = sh.widths.iter().map(|&b| d as u64 * b as u64).sum();
        if total_bits >= 1 << 32 {
            return Err(Error::GpuUnsupported(format!(
                "{n} Gaussians' SH-rest codes take {total_bits} bits, beyond the u32 bit index of tq_sh_decode (2^32)"
            )));
        }
        if (sh.codes.len() as u64) < total_bits.div_ceil(8) {
            return Err(Error::Shape(format!(
                "{} code bytes, the widths need {}",
                sh.codes.len(),
                total_bits.div_ceil(8)
            )));
        }
        let table = |b: u8| -> Result<&[f32]> {
            match sh.tables.get(b as usize) {
                Some(Some((c, _))) if c.len() == 1 << b => Ok(c),
                _ => Err(Error::InvalidArgument(format!(
                    "no codebook of 2^{b} centroids for width {b}"
                ))),
            }
        };
        let uniform = match sh.widths.first() {
            Some(&b) if b > 0 && sh.widths.iter().all(|&w| w == b) => Some(b),
            None => sh.uniform.filter(|&b| b > 0),
            _ => None,
        };
        let mut scales: Vec<u8> = sh.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        scales.resize(scales.len().div_ceil(4).max(1) * 4, 0);
        let mut tables = sh.rotation.dense_matrix();
        let (bits, meta) = match uniform {
            Some(b) => {
                tables.extend_from_slice(table(b)?);
                (b as u32, vec![0u32])
            }
            None => {
                let max = sh.widths.iter().copied().max().unwrap_or(0);
                let pi = tables.len();
                tables.resize(pi + (2usize << max) - 2, 0.0);
                for b in 1..=max {
                    if sh.widths.contains(&b) {
                        let at = pi + (1usize << b) - 2;
                        tables[at..at + (1 << b)].copy_from_slice(table(b)?);
                    }
                }
                let mut meta = Vec::with_capacity(2 * n.div_ceil(8));
                let mut at = 0u64;
                for group in sh.widths.chunks(8) {
                    meta.push(at as u32);
                    let mut packed = 0u32;
                    for (k, &b) in group.iter().enumerate() {
                        packed |= (b as u32) << (4 * k);
                        at += d as u64 * b as u64;
                    }
                    meta.push(packed);
                }
                if meta.is_empty() {
                    meta.push(0);
                }
                (0, meta)
            }
        };
        Ok(ShDecodeBuffers {
            d: d as u32,
            bits,
            flip: sh.sign_flip as u32,
            codes: &sh.codes,
            scales,
            tables,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splat::rest_dim;

    /// A synthetic file's SH-rest: degree `degree`, the given widths,
    /// pseudo-random codes and scales.
    fn synthetic_sh(degree: u8, widths: Vec<u8>, sign_flip: bool) -> CompressedSh {
        use crate::{Quantizer, QuantizerConfig, ScaleFormat, ScaleMode};
        let d = rest_dim(degree);
        let rotation = Quantizer::new(&QuantizerConfig::new(d, 1))
            .unwrap()
            .rotation()
            .clone();
        let mut tables = vec![None; 9];
        for b in 1..=8u32 {
            let q = Quantizer::with_rotation(
                rotation.clone(),
                b,
                ScaleMode::LeastSquares,
                ScaleFormat::F16,
            )
            .unwrap();
            tables[b as usize] = Some((q.centroids().to_vec(), q.boundaries().to_vec()));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let bits: u64 = widths.iter().map(|&b| d as u64 * b as u64).sum();
        let mut codes: Vec<u8> = (0..bits.div_ceil(8)).map(|_| next() as u8).collect();
        if !bits.is_multiple_of(8) {
            *codes.last_mut().unwrap() &= (1u8 << (bits % 8)) - 1;
        }
        let scales = widths
            .iter()
            .map(|&b| {
                if b == 0 {
                    half::f16::ZERO
                } else {
                    half::f16::from_f32(0.05 + (next() % 1000) as f32 * 1e-4)
                }
            })
            .collect();
        let uniform = widths
            .first()
            .copied()
            .filter(|&b| b > 0 && widths.iter().all(|&w| w == b));
        CompressedSh {
            sh_degree: degree,
            rotation,
            scale_mode: ScaleMode::LeastSquares,
            tables,
            widths,
            uniform,
            codes,
            scales,
            sign_flip,
        }
    }

    /// sh_decode.wgsl's `tq_sh_decode`, transcribed to Rust over the
    /// buffers' contents (u32 wrapping arithmetic as in WGSL).
    fn emulate_decode(t: &ShDecodeBuffers, i: u32) -> Vec<f32> {
        let mut words: Vec<u32> = t
            .codes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        words.push(0);
        let d = t.d;
        let (mut b, mut first, mut table) = (t.bits, i.wrapping_mul(d).wrapping_mul(t.bits), d * d);
        if t.bits == 0 {
            let g = (i >> 3) as usize;
            let k = i & 7;
            let widths = t.meta[2 * g + 1];
            let below = widths & ((1u32 << (4 * k)) - 1);
            let pairs = (below & 0x0f0f0f0f) + ((below >> 4) & 0x0f0f0f0f);
            let before = pairs.wrapping_mul(0x01010101) >> 24;
            first = t.meta[2 * g] + before * d;
            b = (widths >> (4 * k)) & 15;
            table = table.wrapping_add((1u32 << b).wrapping_sub(2));
        }
        let s = {
            let word =
                u32::from_le_bytes(t.scales[4 * (i as usize >> 1)..][..4].try_into().unwrap());
            half::f16::from_bits((word >> ((i & 1) * 16)) as u16).to_f32()
        };
        let mut out = vec![0f32; d as usize];
        if b == 0 || s == 0.0 {
            return out;
        }
        let c: Vec<f32> = (0..d)
            .map(|j| {
                let bit = first + j * b;
                let (word, off) = ((bit >> 5) as usize, bit & 31);
                let mut v = words[word] >> off;
                if off + b > 32 {
                    v |= words[word + 1] << (32 - off);
                }
                t.tables[(table + (v & ((1 << b) - 1))) as usize]
            })
            .collect();
        // tq_sign_word, transcribed (an independent copy of the hash).
        let pcg = |x: u32| {
            let s = x.wrapping_mul(747796405).wrapping_add(2891336453);
            let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277803737);
            (w >> 22) ^ w
        };
        let signs = [pcg(pcg(i)), pcg(pcg(i).wrapping_add(1))];
        for (k, o) in out.iter_mut().enumerate() {
            let acc: f32 = (0..d as usize)
                .map(|j| t.tables[j * d as usize + k] * c[j])
                .sum();
            let neg = t.flip != 0 && (signs[k / 32] >> (k % 32)) & 1 == 1;
            *o = if neg { -(acc * s) } else { acc * s };
        }
        out
    }

    #[test]
    fn decode_buffers_lay_out_what_the_cpu_decoder_reads() {
        for (degree, flip) in [(1u8, false), (2, false), (3, false), (1, true), (3, true)] {
            for widths in [
                (0..101).map(|i| (i * 7 % 9) as u8).collect::<Vec<u8>>(),
                (0..29).map(|i| [0, 8, 8, 1, 0, 0, 5][i % 7]).collect(),
                vec![3; 20],
                vec![0; 11],
            ] {
                let sh = synthetic_sh(degree, widths.clone(), flip);
                let t = ShDecodeBuffers::new(&sh).unwrap();
                assert_eq!(t.flip, flip as u32);
                let d = rest_dim(degree);
                assert_eq!(t.d as usize, d);
                let uniform = widths.iter().all(|&b| b == 3);
                assert_eq!(t.bits, if uniform { 3 } else { 0 });
                if uniform {
                    assert_eq!(t.meta, [0]);
                    assert_eq!(t.tables.len(), d * d + 8);
                } else {
                    assert_eq!(t.meta.len(), 2 * widths.len().div_ceil(8));
                    let max = *widths.iter().max().unwrap();
                    assert_eq!(t.tables.len(), d * d + (2 << max) - 2);
                    // The widths word is the file's SHW nibble packing.
                    let shw = crate::splat::sh::pack_widths(&widths);
                    for (g, chunk) in shw.chunks(4).enumerate() {
                        let mut w = [0u8; 4];
                        w[..chunk.len()].copy_from_slice(chunk);
                        assert_eq!(t.meta[2 * g + 1], u32::from_le_bytes(w));
                        assert_eq!(t.meta[2 * g] as u64, sh.bit_offsets()[8 * g]);
                    }
                }
                assert_eq!(t.tables[..d * d], sh.rotation.dense_matrix());
                assert_eq!(t.scales.len() % 4, 0);
                let cpu = sh.decode().unwrap();
                let mut nonzero = 0;
                for i in 0..sh.len() {
                    let g = emulate_decode(&t, i as u32);
                    let c = &cpu[i * d..(i + 1) * d];
                    for k in 0..d {
                        assert!(
                            (g[k] - c[k]).abs() <= 1e-6 * (1.0 + c[k].abs()),
                            "degree {degree}, Gaussian {i} (b = {}), k = {k}: {} vs {}",
                            widths[i],
                            g[k],
                            c[k]
                        );
                    }
                    if widths[i] == 0 {
                        assert!(c.iter().all(|&v| v == 0.0));
                    } else {
                        nonzero += c.iter().any(|&v| v != 0.0) as usize;
                    }
                }
                assert_eq!(nonzero, widths.iter().filter(|&&b| b > 0).count());
            }
        }
    }

    #[test]
    fn code_streams_of_2_pow_32_bits_are_unsupported() {
        // 45·8 bits per Gaussian: 2^32 / 360 ≈ 11.93 million.
        let mut sh = synthetic_sh(3, vec![8; 8], true);
        let n = (1usize << 32).div_ceil(360);
        sh.widths = vec![8; n];
        sh.scales = vec![half::f16::ONE; n];
        match ShDecodeBuffers::new(&sh) {
            Err(Error::GpuUnsupported(m)) => assert!(m.contains("2^32"), "{m}"),
            other => panic!("{other:?}"),
        }
        // One Gaussian fewer fits, if the codes were there.
        sh.widths.truncate(n - 1);
        sh.scales.truncate(n - 1);
        assert!(matches!(ShDecodeBuffers::new(&sh), Err(Error::Shape(_))));
    }
}

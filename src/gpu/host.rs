//! The convenience host of the GPU codec: [`GpuQuantizer::encode`] and
//! [`GpuQuantizer::decode`] (and their f16, async and exact forms) take and
//! return host data. They stage it through buffers of their own, in chunks
//! the device's binding limits allow, record with the recording API, submit
//! and read back. Every device error is caught in error scopes and returned.

use crate::gpu::buffers::{buffer, read_buffer};
use crate::gpu::kernel::{Element, Family, TIE_EPS, TIE_REL};
use crate::gpu::scope::scoped_async;
use crate::gpu::{DecodeBuffers, EncodeBuffers, GpuQuantizer};
use crate::packing::{copy_codes, packed_len};
use crate::{Encoded, Error, Result, ScaleFormat, Scales};

impl GpuQuantizer {
    /// Encodes host vectors on the GPU, blocking. Rows are checked for NaN
    /// and ±Inf first, with the same errors as the CPU path.
    pub fn encode(&self, data: &[f32]) -> Result<Encoded> {
        pollster::block_on(self.encode_async(data))
    }

    /// Decodes on the GPU, blocking.
    pub fn decode(&self, enc: &Encoded) -> Result<Vec<f32>> {
        pollster::block_on(self.decode_async(enc))
    }

    /// Encodes f16 host vectors, moving half the bytes of f32 (needs
    /// `Features::SHADER_F16` on the device). The codes are those of the
    /// f32 values the f16 ones widen to.
    pub fn encode_f16(&self, data: &[half::f16]) -> Result<Encoded> {
        pollster::block_on(self.encode_async(data))
    }

    /// Decodes to f16 host vectors (needs `Features::SHADER_F16`).
    pub fn decode_f16(&self, enc: &Encoded) -> Result<Vec<half::f16>> {
        pollster::block_on(self.decode_async(enc))
    }

    /// The async form of [`GpuQuantizer::encode`].
    pub async fn encode_async<T: Element>(&self, data: &[T]) -> Result<Encoded> {
        let q = self.quantizer();
        let d = q.dim();
        if data.is_empty() {
            return Err(Error::EmptyInput {
                what: "no vectors to encode".into(),
            });
        }
        if !data.len().is_multiple_of(d) {
            return Err(Error::Shape(format!(
                "{} values do not split into rows of length {d}",
                data.len()
            )));
        }
        self.check_format(T::FORMAT)?;
        if let Some(i) = data.iter().position(|v| !v.to_f32().is_finite()) {
            return Err(Error::NonFinite {
                row: i / d,
                col: i % d,
                value: data[i].to_f32(),
            });
        }
        let n = data.len() / d;
        let bits = q.bits() as usize;
        let ctx = self.codec.context();
        let device = &ctx.device;
        let slab = self.chunk_vectors(d as u64).min(n.div_ceil(32) * 32);
        let code_words = (slab * d * bits).div_ceil(32);
        let scale_words = (slab * q.scale_format().bytes()).div_ceil(4);
        let (input, codes, scales, readback) =
            scoped_async(device, "allocating encode buffers", async {
                use wgpu::BufferUsages as U;
                Ok((
                    buffer(
                        device,
                        "turboquant3d input",
                        T::FORMAT.bytes() as usize * slab * d,
                        U::STORAGE | U::COPY_DST,
                    ),
                    buffer(
                        device,
                        "turboquant3d codes",
                        4 * code_words,
                        U::STORAGE | U::COPY_SRC,
                    ),
                    buffer(
                        device,
                        "turboquant3d scales",
                        4 * scale_words,
                        U::STORAGE | U::COPY_SRC | U::COPY_DST,
                    ),
                    buffer(
                        device,
                        "turboquant3d readback",
                        4 * (code_words + scale_words),
                        U::MAP_READ | U::COPY_DST,
                    ),
                ))
            })
            .await?;
        let mut out_codes = vec![0u8; packed_len(n * d, q.bits())];
        let mut out_scales: Vec<u8> = Vec::with_capacity(n * q.scale_format().bytes());
        scoped_async(device, "encoding", async {
            for start in (0..n).step_by(slab) {
                let m = slab.min(n - start);
                ctx.queue.write_buffer(
                    &input,
                    0,
                    bytemuck::cast_slice(&data[start * d..(start + m) * d]),
                );
                let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("turboquant3d encode"),
                });
                self.record_encode(
                    &mut encoder,
                    &EncodeBuffers {
                        input: &input,
                        input_offset: 0,
                        input_stride: d as u64,
                        input_format: T::FORMAT,
                        count: m,
                        codes: &codes,
                        codes_offset: 0,
                        scales: &scales,
                        scales_offset: 0,
                    },
                )?;
                let cw = (m * d * bits).div_ceil(32) as u64;
                let sw = (m * q.scale_format().bytes()).div_ceil(4) as u64;
                encoder.copy_buffer_to_buffer(&codes, 0, &readback, 0, 4 * cw);
                encoder.copy_buffer_to_buffer(&scales, 0, &readback, 4 * cw, 4 * sw);
                let bytes = self
                    .submit_and_read(encoder, &readback, 4 * (cw + sw))
                    .await?;
                let code_start = start * d * bits / 8;
                let code_len = packed_len(m * d, q.bits());
                out_codes[code_start..code_start + code_len].copy_from_slice(&bytes[..code_len]);
                let sb = m * q.scale_format().bytes();
                out_scales.extend_from_slice(&bytes[4 * cw as usize..4 * cw as usize + sb]);
            }
            Ok(())
        })
        .await?;
        let scales = Scales::from_le_bytes(q.scale_format(), &out_scales)?;
        // The CPU refuses scales its format cannot hold; so does this path.
        for i in 0..n {
            let s = scales.get(i);
            let zero_row = data[i * d..(i + 1) * d].iter().all(|&v| v.to_f32() == 0.0);
            if !s.is_finite() || (s == 0.0 && !zero_row) {
                return Err(Error::ScaleUnrepresentable {
                    row: i,
                    scale: s as f64,
                    format: q.scale_format().name(),
                    why: "it overflows or underflows the stored format",
                });
            }
        }
        Encoded::from_parts(d, q.bits(), n, out_codes, scales)
    }

    /// Encodes on the GPU with exactly the CPU's result: the same codes and
    /// scale bytes as [`Quantizer::encode`](crate::Quantizer::encode),
    /// whatever order the device sums in. The kernel flags each vector that
    /// has a rotated coordinate within [`TIE_EPS`] of a decision boundary, or
    /// a scale within a relative [`TIE_REL`] of an f16 rounding midpoint;
    /// those, and only those, are re-encoded on the CPU. Returns the encoding
    /// and the number of vectors re-encoded. Needs the dense kernel and f16
    /// scales (an f32 scale would carry the device's rounding in every
    /// vector).
    pub fn encode_exact(&self, data: &[f32]) -> Result<(Encoded, usize)> {
        self.encode_exact_simulating(data, 0.0, true)
    }

    /// [`GpuQuantizer::encode_exact`] on a simulated device whose rotated
    /// coordinates are off by ±`sim_err` and scales by a relative
    /// 2·`sim_err`, with the tie margins on or off. Tests use it to show
    /// that the repair covers errors below the margins and is needed.
    #[doc(hidden)]
    pub fn encode_exact_simulating(
        &self,
        data: &[f32],
        sim_err: f32,
        margins: bool,
    ) -> Result<(Encoded, usize)> {
        let q = self.quantizer();
        if self.family() != Family::Dense || q.scale_format() != ScaleFormat::F16 {
            return Err(Error::GpuUnsupported(format!(
                "exact encoding needs the dense kernel and f16 scales (have the {:?} kernel, {} scales)",
                self.family(),
                q.scale_format().name()
            )));
        }
        let mut flags = Vec::new();
        if margins {
            flags.push(("TIE_EPS", (TIE_EPS as f64).to_bits()));
            flags.push(("TIE_REL", (TIE_REL as f64).to_bits()));
        }
        if sim_err != 0.0 {
            flags.push(("SIM_ERR", (sim_err as f64).to_bits()));
        }
        let enc = self.with_constants(&flags).encode(data)?;
        let (d, n, bits) = (q.dim(), enc.len(), q.bits());
        let (mut codes, scales) = enc.into_parts();
        let Scales::F16(mut s) = scales else {
            return Err(Error::Gpu("exact encoding needs f16 scales".into()));
        };
        let ties: Vec<usize> = (0..n).filter(|&i| s[i].is_sign_negative()).collect();
        if !ties.is_empty() {
            let rows: Vec<f32> = ties
                .iter()
                .flat_map(|&i| data[i * d..(i + 1) * d].iter().copied())
                .collect();
            let cpu = q.encode(&rows).map_err(|e| match e {
                Error::ScaleUnrepresentable {
                    row,
                    scale,
                    format,
                    why,
                } => Error::ScaleUnrepresentable {
                    row: ties[row],
                    scale,
                    format,
                    why,
                },
                e => e,
            })?;
            let Scales::F16(cs) = cpu.scales() else {
                return Err(Error::Gpu("exact encoding needs f16 scales".into()));
            };
            for (k, &i) in ties.iter().enumerate() {
                copy_codes(cpu.codes(), k * d, &mut codes, i * d, d, bits);
                s[i] = cs[k];
            }
        }
        Ok((
            Encoded::from_parts(d, bits, n, codes, Scales::F16(s))?,
            ties.len(),
        ))
    }

    /// The async form of [`GpuQuantizer::decode`].
    pub async fn decode_async<T: Element>(&self, enc: &Encoded) -> Result<Vec<T>> {
        let q = self.quantizer();
        let (d, bits) = (q.dim(), q.bits() as usize);
        if enc.dim() != d || enc.bits() != q.bits() || enc.scales().format() != q.scale_format() {
            return Err(Error::Shape(
                "encoded data does not match this quantizer's d, b or scale format".into(),
            ));
        }
        let n = enc.len();
        self.check_format(T::FORMAT)?;
        let eb = T::FORMAT.bytes() as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let ctx = self.codec.context();
        let device = &ctx.device;
        let slab = self.chunk_vectors(d as u64).min(n.div_ceil(32) * 32);
        let code_words = (slab * d * bits).div_ceil(32);
        let scale_words = (slab * q.scale_format().bytes()).div_ceil(4);
        let (codes, scales, output, readback) =
            scoped_async(device, "allocating decode buffers", async {
                use wgpu::BufferUsages as U;
                Ok((
                    buffer(
                        device,
                        "turboquant3d codes",
                        4 * code_words,
                        U::STORAGE | U::COPY_DST,
                    ),
                    buffer(
                        device,
                        "turboquant3d scales",
                        4 * scale_words,
                        U::STORAGE | U::COPY_DST,
                    ),
                    buffer(
                        device,
                        "turboquant3d output",
                        eb * slab * d,
                        U::STORAGE | U::COPY_SRC,
                    ),
                    buffer(
                        device,
                        "turboquant3d readback",
                        eb * slab * d,
                        U::MAP_READ | U::COPY_DST,
                    ),
                ))
            })
            .await?;
        let all_scales = enc.scales().to_le_bytes();
        let mut out = vec![T::zeroed(); n * d];
        scoped_async(device, "decoding", async {
            for start in (0..n).step_by(slab) {
                let m = slab.min(n - start);
                let code_start = start * d * bits / 8;
                let code_len = packed_len(m * d, q.bits());
                let mut words = vec![0u8; (m * d * bits).div_ceil(32) * 4];
                words[..code_len].copy_from_slice(&enc.codes()[code_start..code_start + code_len]);
                ctx.queue.write_buffer(&codes, 0, &words);
                let sb = q.scale_format().bytes();
                let mut sbytes = all_scales[start * sb..(start + m) * sb].to_vec();
                sbytes.resize(sbytes.len().div_ceil(4) * 4, 0);
                ctx.queue.write_buffer(&scales, 0, &sbytes);
                let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("turboquant3d decode"),
                });
                self.record_decode(
                    &mut encoder,
                    &DecodeBuffers {
                        codes: &codes,
                        codes_offset: 0,
                        scales: &scales,
                        scales_offset: 0,
                        count: m,
                        output: &output,
                        output_offset: 0,
                        output_stride: d as u64,
                        output_format: T::FORMAT,
                    },
                )?;
                encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, (eb * m * d) as u64);
                let bytes = self
                    .submit_and_read(encoder, &readback, (eb * m * d) as u64)
                    .await?;
                out[start * d..(start + m) * d].copy_from_slice(bytemuck::cast_slice(&bytes));
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Submits, waits, and copies `len` bytes out of a mappable buffer. A
    /// submission the device refuses fails here, before the wait.
    async fn submit_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        readback: &wgpu::Buffer,
        len: u64,
    ) -> Result<Vec<u8>> {
        let ctx = self.codec.context();
        scoped_async(&ctx.device, "submitting the codec", async {
            ctx.queue.submit([encoder.finish()]);
            Ok(())
        })
        .await?;
        read_buffer(ctx, readback, len).await
    }
}

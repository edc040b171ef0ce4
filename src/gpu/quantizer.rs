//! The recording side of the GPU codec: [`GpuCodec`] (one device's shader
//! modules, bind-group layout and pipeline cache) and [`GpuQuantizer`] (a
//! quantizer resident on that device), whose
//! [`record_encode`](GpuQuantizer::record_encode) and
//! [`record_decode`](GpuQuantizer::record_decode) record into the caller's
//! command encoder, on the caller's buffers, with no readback or submission.
//!
//! Work larger than one binding is split into chunks that respect
//! `max_storage_buffer_binding_size` and `max_compute_workgroups_per_dimension`
//! of the device as it is; nothing is required of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gpu::GpuContext;
use crate::gpu::buffers::init_buffer;
use crate::gpu::kernel::{DENSE_WG, DataFormat, Family, KernelConfig, KernelParams};
use crate::gpu::pipeline::{PipelineCache, RO, RW, UNIFORM, buffer_entry, whole};
use crate::gpu::scope::scoped;
use crate::{Error, Quantizer, Result, Rotation, ScaleFormat};

type PipelineKey = (
    Family,
    bool,
    DataFormat,
    &'static str,
    Vec<(&'static str, u64)>,
);

/// Shader modules, the bind-group layout and a pipeline cache on one
/// device, shared by every quantizer prepared on it.
pub struct GpuCodec {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// Why the layouts are invalid, if they are.
    layout_error: Option<String>,
    modules: Mutex<HashMap<(Family, bool, DataFormat), Arc<wgpu::ShaderModule>>>,
    pipelines: PipelineCache<PipelineKey>,
    max_binding: u64,
}

impl std::fmt::Debug for GpuCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuCodec")
            .field("device", &self.ctx.describe())
            .field("pipelines", &self.pipelines.len())
            .finish()
    }
}

impl GpuCodec {
    /// Builds the codec on a device (borrowed or owned). A device error
    /// while creating its layouts (a device whose limits are below what the
    /// kernels bind) is caught, not raised on the device; every
    /// [`prepare`](GpuCodec::prepare) then fails with it.
    pub fn new(ctx: GpuContext) -> GpuCodec {
        let device = &ctx.device;
        let cs = wgpu::ShaderStages::COMPUTE;
        let mut made = None;
        let layout_error = scoped(device, "creating the codec's layouts", || {
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("turboquant3d codec"),
                entries: &[
                    buffer_entry(0, cs, UNIFORM),
                    buffer_entry(1, cs, RO),
                    buffer_entry(2, cs, RO),
                    buffer_entry(3, cs, RO),
                    buffer_entry(4, cs, RW),
                    buffer_entry(5, cs, RW),
                    buffer_entry(6, cs, RW),
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("turboquant3d codec"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            made = Some((layout, pipeline_layout));
            Ok(())
        })
        .err()
        .map(|e| e.to_string());
        #[allow(clippy::expect_used)] // The closure above always sets `made`.
        let (layout, pipeline_layout) = made.expect("the layouts are created, valid or not");
        let max_binding = device
            .limits()
            .max_storage_buffer_binding_size
            .min(device.limits().max_buffer_size);
        GpuCodec {
            ctx,
            layout,
            pipeline_layout,
            layout_error,
            modules: Default::default(),
            pipelines: Default::default(),
            max_binding,
        }
    }

    /// The device context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn module(&self, family: Family, subgroups: bool, io: DataFormat) -> Arc<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules
            .entry((family, subgroups, io))
            .or_insert_with(|| {
                Arc::new(
                    self.ctx
                        .device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(match family {
                                Family::Dense => "turboquant3d dense.wgsl",
                                Family::Hadamard => "turboquant3d hadamard.wgsl",
                            }),
                            source: wgpu::ShaderSource::Wgsl(family.source(subgroups, io).into()),
                        }),
                )
            })
            .clone()
    }

    /// The pipeline for a family, entry point and specialisation, compiled
    /// once per configuration. A pipeline that fails to compile is not
    /// cached: every request for it returns the error.
    fn pipeline(
        &self,
        family: Family,
        subgroups: bool,
        io: DataFormat,
        entry: &'static str,
        constants: Vec<(&'static str, u64)>,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let values: Vec<(&str, f64)> = constants
            .iter()
            .map(|(k, v)| (*k, f64::from_bits(*v)))
            .collect();
        let what = match &self.layout_error {
            None => format!("compiling the {family:?} {entry} kernel"),
            Some(e) => format!("compiling the {family:?} {entry} kernel ({e})"),
        };
        let key = (family, subgroups, io, entry, constants);
        self.pipelines
            .get_or_create(&self.ctx.device, key, &what, || {
                let module = self.module(family, subgroups, io);
                self.ctx
                    .device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: Some(&self.pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &values,
                            zero_initialize_workgroup_memory: false,
                        },
                        cache: None,
                    })
            })
    }

    /// Uploads a quantizer's rotation and tables, picks its kernel and
    /// compiles its pipelines, so that a device error surfaces here rather
    /// than at submission. Every device error is caught in error scopes and
    /// returned: a host's device is left as it was.
    pub fn prepare(self: &Arc<Self>, q: &Quantizer) -> Result<GpuQuantizer> {
        let device = &self.ctx.device;
        let kernel = KernelConfig::select(
            q,
            &device.limits(),
            device.features(),
            device.adapter_info().subgroup_min_size,
        )?;
        let family = kernel.family;
        let constants: Vec<(&'static str, u64)> = kernel
            .constants
            .iter()
            .map(|(k, v)| (*k, v.to_bits()))
            .collect();
        let (rot_data, perm_data): (Vec<f32>, Vec<u32>) = match (&**q.rotation(), family) {
            (Rotation::Hadamard(h), Family::Hadamard) => {
                let mut perm = h.permutation().to_vec();
                perm.extend_from_slice(h.inverse_permutation());
                (h.signs().concat(), perm)
            }
            (rot, _) => (
                rot.matrix()
                    .map(|m| m.to_vec())
                    .unwrap_or_else(|| rot.dense_matrix()),
                vec![0],
            ),
        };
        let mut tables = q.centroids().to_vec();
        tables.extend_from_slice(q.boundaries());
        let init = |label: &str, contents: &[u8]| {
            init_buffer(device, label, contents, wgpu::BufferUsages::STORAGE)
        };
        let (rot, perm, tables) = scoped(device, "uploading the quantizer", || {
            Ok((
                init("turboquant3d rotation", bytemuck::cast_slice(&rot_data))?,
                init("turboquant3d permutation", bytemuck::cast_slice(&perm_data))?,
                init("turboquant3d tables", bytemuck::cast_slice(&tables))?,
            ))
        })?;
        let gq = GpuQuantizer {
            codec: self.clone(),
            quantizer: q.clone(),
            family,
            subgroups: kernel.subgroups,
            constants,
            rot,
            perm,
            tables,
            max_binding: self.max_binding,
        };
        gq.pipeline("encode", DataFormat::F32)?;
        gq.pipeline("decode", DataFormat::F32)?;
        Ok(gq)
    }
}

/// A quantizer resident on the GPU: its rotation and tables in buffers, and
/// the kernel variant chosen for the device.
#[derive(Debug)]
pub struct GpuQuantizer {
    pub(super) codec: Arc<GpuCodec>,
    quantizer: Quantizer,
    family: Family,
    subgroups: bool,
    constants: Vec<(&'static str, u64)>,
    rot: wgpu::Buffer,
    perm: wgpu::Buffer,
    tables: wgpu::Buffer,
    max_binding: u64,
}

/// Where [`GpuQuantizer::record_encode`] reads vectors and writes codes.
#[derive(Debug, Clone, Copy)]
pub struct EncodeBuffers<'a> {
    /// f32 vectors, vector i at element `input_offset + i·input_stride`.
    pub input: &'a wgpu::Buffer,
    /// First element of vector 0.
    pub input_offset: u64,
    /// Elements between vectors (≥ d).
    pub input_stride: u64,
    /// f32, or f16 on a device with `Features::SHADER_F16`; offsets and
    /// strides count elements either way.
    pub input_format: DataFormat,
    /// Number of vectors.
    pub count: usize,
    /// Packed codes: `ceil(count·d·b / 32)` whole u32 words from `codes_offset`.
    pub codes: &'a wgpu::Buffer,
    /// First code word.
    pub codes_offset: u64,
    /// Scales: `count` f32, or `ceil(count / 2)` words of f16 pairs. With
    /// the Hadamard kernel and f16 scales the range is cleared first, so the
    /// buffer needs `COPY_DST` as well as `STORAGE`.
    pub scales: &'a wgpu::Buffer,
    /// First scale, counted in scales (even for f16).
    pub scales_offset: u64,
}

/// Where [`GpuQuantizer::record_decode`] reads codes and writes vectors.
#[derive(Debug, Clone, Copy)]
pub struct DecodeBuffers<'a> {
    /// Packed codes, as written by encode.
    pub codes: &'a wgpu::Buffer,
    /// First code word.
    pub codes_offset: u64,
    /// Scales.
    pub scales: &'a wgpu::Buffer,
    /// First scale.
    pub scales_offset: u64,
    /// Number of vectors.
    pub count: usize,
    /// f32 output, vector i at element `output_offset + i·output_stride`;
    /// elements between vectors are left untouched.
    pub output: &'a wgpu::Buffer,
    /// First element of vector 0.
    pub output_offset: u64,
    /// Elements between vectors (≥ d).
    pub output_stride: u64,
    /// f32, or f16 on a device with `Features::SHADER_F16`.
    pub output_format: DataFormat,
}

/// The vector side of a job: where vectors are read (encode) or written
/// (decode).
struct Side<'a> {
    buffer: &'a wgpu::Buffer,
    offset: u64,
    stride: u64,
    format: DataFormat,
    what: &'static str,
}

/// A buffer window for one binding: a byte offset aligned as the device
/// needs, and the element offset of the data inside it.
struct Window {
    offset: u64,
    size: u64,
    skip: u64,
}

fn window(
    start_bytes: u64,
    len_bytes: u64,
    align: u64,
    buffer: &wgpu::Buffer,
    what: &str,
) -> Result<Window> {
    let offset = start_bytes / align * align;
    let size = (start_bytes - offset + len_bytes).div_ceil(4) * 4;
    if offset + size > buffer.size() {
        return Err(Error::Shape(format!(
            "the {what} buffer holds {} bytes; this call needs bytes {start_bytes}..{}",
            buffer.size(),
            start_bytes + len_bytes
        )));
    }
    Ok(Window {
        offset,
        size,
        skip: start_bytes - offset,
    })
}

fn u32_param(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| Error::Shape(format!("{what} = {v} exceeds a 32-bit shader index")))
}

impl GpuQuantizer {
    /// The same quantizer and buffers with more override constants (the
    /// exact encoding's tie flags); its pipelines compile on first use.
    pub(super) fn with_constants(&self, extra: &[(&'static str, u64)]) -> GpuQuantizer {
        let mut constants = self.constants.clone();
        constants.extend_from_slice(extra);
        GpuQuantizer {
            codec: self.codec.clone(),
            quantizer: self.quantizer.clone(),
            family: self.family,
            subgroups: self.subgroups,
            constants,
            rot: self.rot.clone(),
            perm: self.perm.clone(),
            tables: self.tables.clone(),
            max_binding: self.max_binding,
        }
    }

    fn pipeline(&self, entry: &'static str, io: DataFormat) -> Result<Arc<wgpu::ComputePipeline>> {
        let entry = match (self.subgroups, entry) {
            (true, "encode") => "encode_subgroup",
            (true, "decode") => "decode_subgroup",
            (_, e) => e,
        };
        let mut constants = self.constants.clone();
        if entry.starts_with("decode") {
            // Decoding never reads SCALE_LS (the scale is stored either
            // way), so both scale modes share one decode pipeline.
            for (name, value) in &mut constants {
                if *name == "SCALE_LS" {
                    *value = 0f64.to_bits();
                }
            }
        }
        self.codec
            .pipeline(self.family, self.subgroups, io, entry, constants)
    }

    /// The CPU quantizer this mirrors.
    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    /// Lowers the largest binding this quantizer's jobs use (tests exercise
    /// chunking with small inputs this way). It never raises it above the
    /// device limit.
    pub fn set_max_binding_size(&mut self, bytes: u64) {
        self.max_binding = bytes.min(self.codec.max_binding).max(1024);
    }

    /// The kernel family in use.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether the subgroup variant is in use.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    /// Vectors per workgroup.
    fn per_group(&self) -> usize {
        match self.family {
            Family::Dense => DENSE_WG as usize,
            Family::Hadamard => 1,
        }
    }

    /// The most vectors one dispatch may take, given the binding limit for
    /// `stride` elements between vectors: a multiple of 32.
    pub fn chunk_vectors(&self, stride: u64) -> usize {
        let d = self.quantizer.dim() as u64;
        let align = self
            .codec
            .ctx
            .device
            .limits()
            .min_storage_buffer_offset_alignment as u64;
        let room = self.max_binding.saturating_sub(align + 4);
        let per_vector = (4 * stride).max(d * self.quantizer.bits() as u64 / 8 + 1);
        let by_binding = (room / per_vector) as usize;
        let max_dim = self
            .codec
            .ctx
            .device
            .limits()
            .max_compute_workgroups_per_dimension as usize;
        let by_dispatch = max_dim * max_dim * self.per_group();
        (by_binding.min(by_dispatch) / 32 * 32).max(32)
    }

    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        entry: &'static str,
        io: DataFormat,
        params: KernelParams,
        bindings: [(&wgpu::Buffer, &Window); 3],
    ) -> Result<()> {
        let device = &self.codec.ctx.device;
        let uniform = init_buffer(
            device,
            "turboquant3d params",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM,
        )?;
        fn bind<'a>(
            binding: u32,
            (buffer, w): (&'a wgpu::Buffer, &Window),
        ) -> wgpu::BindGroupEntry<'a> {
            wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: w.offset,
                    size: wgpu::BufferSize::new(w.size),
                }),
            }
        }
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("turboquant3d codec"),
            layout: &self.codec.layout,
            entries: &[
                whole(0, &uniform),
                whole(1, &self.rot),
                whole(2, &self.perm),
                whole(3, &self.tables),
                bind(4, bindings[0]),
                bind(5, bindings[1]),
                bind(6, bindings[2]),
            ],
        });
        let pipeline = self.pipeline(entry, io)?;
        let groups = params.n.div_ceil(self.per_group() as u32);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(params.groups_x, groups.div_ceil(params.groups_x), 1);
        Ok(())
    }

    pub(super) fn check_format(&self, format: DataFormat) -> Result<()> {
        if format == DataFormat::F16
            && !self
                .codec
                .ctx
                .device
                .features()
                .contains(wgpu::Features::SHADER_F16)
        {
            return Err(Error::GpuUnsupported(
                "f16 vector data needs Features::SHADER_F16 enabled on the device".into(),
            ));
        }
        Ok(())
    }

    fn groups_x(&self, n: usize) -> u32 {
        let max_dim = self
            .codec
            .ctx
            .device
            .limits()
            .max_compute_workgroups_per_dimension;
        (n.div_ceil(self.per_group()) as u32).clamp(1, max_dim)
    }

    fn scale_bytes(&self) -> u64 {
        self.quantizer.scale_format().bytes() as u64
    }

    /// Records an encode of `b.count` vectors into `encoder`. No readback,
    /// no submission. Input values must be finite (the convenience API
    /// checks; here a non-finite row gets unspecified codes).
    pub fn record_encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        b: &EncodeBuffers<'_>,
    ) -> Result<()> {
        let data = Side {
            buffer: b.input,
            offset: b.input_offset,
            stride: b.input_stride,
            format: b.input_format,
            what: "input",
        };
        self.record(
            encoder,
            "encode",
            data,
            (b.codes, b.codes_offset),
            (b.scales, b.scales_offset),
            b.count,
        )
    }

    /// Records a decode of `b.count` vectors into `encoder`.
    pub fn record_decode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        b: &DecodeBuffers<'_>,
    ) -> Result<()> {
        let data = Side {
            buffer: b.output,
            offset: b.output_offset,
            stride: b.output_stride,
            format: b.output_format,
            what: "output",
        };
        self.record(
            encoder,
            "decode",
            data,
            (b.codes, b.codes_offset),
            (b.scales, b.scales_offset),
            b.count,
        )
    }

    /// Records `count` vectors of work, in chunks that fit the binding and
    /// dispatch limits; each chunk binds aligned windows of the buffers.
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        entry: &'static str,
        data: Side<'_>,
        (codes_buffer, codes_offset): (&wgpu::Buffer, u64),
        (scales_buffer, scales_offset): (&wgpu::Buffer, u64),
        count: usize,
    ) -> Result<()> {
        let (d, bits) = (self.quantizer.dim() as u64, self.quantizer.bits() as u64);
        if data.stride < d {
            return Err(Error::Shape(format!(
                "{} stride {} is below d = {d}",
                data.what, data.stride
            )));
        }
        let f16_scales = self.quantizer.scale_format() == ScaleFormat::F16;
        if f16_scales && scales_offset % 2 == 1 {
            return Err(Error::Shape(
                "f16 scales must start at an even index (two per word)".into(),
            ));
        }
        self.check_format(data.format)?;
        let align = self
            .codec
            .ctx
            .device
            .limits()
            .min_storage_buffer_offset_alignment as u64;
        let (eb, sb) = (data.format.bytes(), self.scale_bytes());
        let chunk = self.chunk_vectors(data.stride);
        let mut start = 0usize;
        while start < count {
            let n = chunk.min(count - start) as u64;
            let s = start as u64;
            let vectors = window(
                eb * (data.offset + s * data.stride),
                eb * ((n - 1) * data.stride + d),
                align,
                data.buffer,
                data.what,
            )?;
            let codes = window(
                4 * (codes_offset + s * d * bits / 32),
                4 * (n * d * bits).div_ceil(32),
                align,
                codes_buffer,
                "codes",
            )?;
            let scales = window(
                sb * (scales_offset + s),
                (sb * n).div_ceil(4) * 4,
                align,
                scales_buffer,
                "scales",
            )?;
            if entry == "encode" && self.family == Family::Hadamard && f16_scales {
                // The kernel ORs f16 halves into shared words.
                encoder.clear_buffer(
                    scales_buffer,
                    scales.offset + scales.skip,
                    Some((sb * n).div_ceil(4) * 4),
                );
            }
            let params = KernelParams {
                n: n as u32,
                data_offset: u32_param(vectors.skip / eb, "vector offset")?,
                data_stride: u32_param(data.stride, "vector stride")?,
                code_offset: u32_param(codes.skip / 4, "code offset")?,
                scale_offset: u32_param(scales.skip / sb, "scale offset")?,
                groups_x: self.groups_x(n as usize),
                pad0: 0,
                pad1: 0,
            };
            let bindings = [
                (data.buffer, &vectors),
                (codes_buffer, &codes),
                (scales_buffer, &scales),
            ];
            self.dispatch(encoder, entry, data.format, params, bindings)?;
            start += n as usize;
        }
        Ok(())
    }
}

//! The wgpu renderer: [`GpuRenderer`] and the scenes it uploads,
//! [`GpuSplats`].
//!
//! # Architecture
//!
//! Three stages per frame, mirroring [`crate::render::cpu`]:
//!
//! 1. **preprocess** (compute, shaders/render_preprocess.wgsl): one thread
//!    per Gaussian projects it to a [`Splat2D`] exactly as
//!    [`cpu::preprocess`](crate::render::cpu::preprocess) does, and writes a
//!    sort key (its depth, or −1 when culled). Entry point `preprocess` reads
//!    SH-rest from an f32 buffer; `preprocess_compressed` decodes it from the
//!    TurboQuant codes with [`SH_DECODE_WGSL`](crate::render::sh_decode::SH_DECODE_WGSL)'s
//!    `tq_sh_decode`, so the compressed path never holds decompressed SH
//!    anywhere. SH is read (or decoded) only for splats that survive culling.
//! 2. **depth order** (CPU): the keys are read back (4 bytes per Gaussian),
//!    and the visible splats are sorted by (depth, index) with rayon, as
//!    [`cpu::depth_order`](crate::render::cpu::depth_order) does with the same
//!    f32 depths the GPU computed.
//! 3. **raster** (render pass, shaders/render_raster.wgsl): one instanced
//!    quad per visible splat, in that order, covering mean ± (radius + ½);
//!    the fragment shader applies the CPU's per-pixel tests and α formula
//!    and outputs premultiplied (colour·α, α), blended front to back
//!    (src·(1 − dst.α) + dst). The target is `Rgba32Float` when the device
//!    has `Features::FLOAT32_BLENDABLE` enabled, else `Rgba16Float`.
//! 4. **out**: [`GpuRenderer::render`] reads the target back and composites
//!    on the CPU, pixel = C + (1 − A)·background
//!    ([`present::composite`](crate::render::present::composite));
//!    [`GpuRenderer::draw`] instead records the present pass
//!    (shaders/render_present.wgsl, [`crate::render::present`]) into a
//!    host's `wgpu::TextureView`, e.g. a window's surface texture, which
//!    composites the same way and writes the bytes
//!    [`to_u8`](crate::render::image::to_u8) gives for that image. Both
//!    share one recording of stages 1–3.
//!
//! How far the result may differ from the CPU reference (the early stop,
//! the f16 target, depth ties) and how large a scene fits are derived in
//! docs/THEORY.md §13, each bound beside the test that checks it.
//!
//! Every device call runs inside error scopes that are always popped
//! (`gpu::scope::scoped`): a device error, a lost device included, is
//! returned as [`Error::Gpu`], never a panic.

use std::sync::Mutex;

use rayon::prelude::*;

use crate::gpu::GpuContext;
use crate::gpu::buffers::{buffer, init_buffer, read_buffer};
use crate::gpu::pipeline::{PipelineCache, RO, RW, UNIFORM, buffer_entry, whole};
use crate::gpu::scope::scoped;
use crate::render::frame::{Frame, Target};
use crate::render::present::{Overlay, Presenter};
use crate::render::sh_decode::ShDecodeBuffers;
use crate::render::shaders::{
    ATTR_STRIDE, CameraUniform, PREPROCESS_WORKGROUP, preprocess_source, raster_source,
};
use crate::render::{Camera, Image, Splat2D};
use crate::splat::sh::CompressedSh;
use crate::splat::{Scene, rest_dim};
use crate::{Error, Result};

/// The override constants of one preprocess pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    compressed: bool,
    sh_degree: u8,
    tq_d: u32,
    tq_bits: u32,
    tq_flip: u32,
}

impl PipelineKey {
    fn entry(&self) -> &'static str {
        if self.compressed {
            "preprocess_compressed"
        } else {
            "preprocess"
        }
    }

    /// Every override of the module gets a value (the f32 entry point does
    /// not use TQ_D, TQ_BITS and TQ_FLIP; any value will do).
    fn constants(&self) -> [(&'static str, f64); 4] {
        [
            ("SH_DEGREE", self.sh_degree as f64),
            ("TQ_D", self.tq_d as f64),
            ("TQ_BITS", self.tq_bits as f64),
            ("TQ_FLIP", self.tq_flip as f64),
        ]
    }
}

/// The wgpu 3DGS renderer: shaders, layouts and a pipeline cache on one
/// device, which may be a host's (it installs no error handler; failures
/// are caught with error scopes and returned as [`Error::Gpu`]).
pub struct GpuRenderer {
    ctx: GpuContext,
    pre_layout: wgpu::BindGroupLayout,
    tq_layout: wgpu::BindGroupLayout,
    pre_pipeline_layout: wgpu::PipelineLayout,
    tq_pipeline_layout: wgpu::PipelineLayout,
    raster_layout: wgpu::BindGroupLayout,
    raster_pipeline: wgpu::RenderPipeline,
    pre_module: wgpu::ShaderModule,
    format: wgpu::TextureFormat,
    pipelines: PipelineCache<PipelineKey>,
    presenter: Presenter,
    max_binding: u64,
}

impl std::fmt::Debug for GpuRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRenderer")
            .field("device", &self.ctx.describe())
            .field("target", &self.format)
            .finish()
    }
}

/// Where a [`GpuSplats`]' SH-rest lives.
#[derive(Debug)]
enum ShBuffers {
    /// f32 SH-rest, rest_dim(L) per Gaussian (a 4-byte dummy at L = 0).
    F32 { _buffer: wgpu::Buffer, bytes: u64 },
    /// Codes, scales, Π and centroids, and widths, bound as group 1 (`bits`
    /// is TQ_BITS: 0 for per-Gaussian widths; `flip` is TQ_FLIP).
    Compressed {
        d: u32,
        bits: u32,
        flip: u32,
        bytes: u64,
        bind_group: wgpu::BindGroup,
        _buffers: [wgpu::Buffer; 4],
    },
}

/// A scene resident on the GPU, uploaded by [`GpuRenderer::upload`] or
/// [`GpuRenderer::upload_compressed`]. Use it only with the renderer that
/// made it.
#[derive(Debug)]
pub struct GpuSplats {
    count: usize,
    sh_degree: u8,
    attrs: wgpu::Buffer,
    sh: ShBuffers,
    frame: Mutex<Frame>,
}

impl GpuSplats {
    /// Bytes of GPU memory holding SH-rest: the f32 coefficients, or every
    /// buffer of the in-shader decode (codes, scales, rotation and centroids,
    /// and widths, the 4-byte placeholder of the uniform mode included;
    /// buffer sizes, padding included).
    pub fn sh_bytes(&self) -> u64 {
        match &self.sh {
            ShBuffers::F32 { bytes, .. } | ShBuffers::Compressed { bytes, .. } => *bytes,
        }
    }

    /// Bytes of GPU memory holding the scene: the attribute buffer
    /// (position, log scale, rotation, opacity and DC colour, 56 bytes per
    /// Gaussian) plus [`sh_bytes`](Self::sh_bytes). The per-frame buffers
    /// (projected splats, depths, order, the render target) are not counted.
    pub fn scene_bytes(&self) -> u64 {
        self.attrs.size() + self.sh_bytes()
    }

    /// Number of Gaussians.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The SH degree the renderer evaluates.
    pub fn sh_degree(&self) -> u8 {
        self.sh_degree
    }

    /// Whether SH-rest is decoded in the shader.
    pub fn is_compressed(&self) -> bool {
        matches!(self.sh, ShBuffers::Compressed { .. })
    }
}

impl GpuRenderer {
    /// Builds the renderer on a device (borrowed or owned). Requires
    /// nothing of it beyond WebGPU defaults; the render target is
    /// `Rgba32Float` when `FLOAT32_BLENDABLE` is enabled, else
    /// `Rgba16Float`.
    pub fn new(ctx: &GpuContext) -> Result<GpuRenderer> {
        let device = &ctx.device;
        scoped(device, "creating the renderer", || {
            let cs = wgpu::ShaderStages::COMPUTE;
            let vs = wgpu::ShaderStages::VERTEX;
            let pre_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("turboquant3d preprocess"),
                entries: &[
                    buffer_entry(0, cs, UNIFORM),
                    buffer_entry(1, cs, RO),
                    buffer_entry(2, cs, RO),
                    buffer_entry(3, cs, RW),
                    buffer_entry(4, cs, RW),
                ],
            });
            let tq_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("turboquant3d sh_decode"),
                entries: &[
                    buffer_entry(0, cs, RO),
                    buffer_entry(1, cs, RO),
                    buffer_entry(2, cs, RO),
                    buffer_entry(3, cs, RO),
                ],
            });
            let pre_pipeline_layout =
                device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("turboquant3d preprocess"),
                    bind_group_layouts: &[Some(&pre_layout)],
                    immediate_size: 0,
                });
            let tq_pipeline_layout =
                device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("turboquant3d preprocess_compressed"),
                    bind_group_layouts: &[Some(&pre_layout), Some(&tq_layout)],
                    immediate_size: 0,
                });
            let raster_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("turboquant3d raster"),
                entries: &[
                    buffer_entry(0, vs, UNIFORM),
                    buffer_entry(1, vs, RO),
                    buffer_entry(2, vs, RO),
                ],
            });
            let raster_pipeline_layout =
                device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("turboquant3d raster"),
                    bind_group_layouts: &[Some(&raster_layout)],
                    immediate_size: 0,
                });
            let pre_module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("turboquant3d render_preprocess.wgsl"),
                source: wgpu::ShaderSource::Wgsl(preprocess_source().into()),
            });
            let raster_module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("turboquant3d render_raster.wgsl"),
                source: wgpu::ShaderSource::Wgsl(raster_source().into()),
            });
            let format = if device
                .features()
                .contains(wgpu::Features::FLOAT32_BLENDABLE)
            {
                wgpu::TextureFormat::Rgba32Float
            } else {
                wgpu::TextureFormat::Rgba16Float
            };
            let front_to_back = wgpu::BlendComponent {
                src_factor: wgpu::BlendFactor::OneMinusDstAlpha,
                dst_factor: wgpu::BlendFactor::One,
                operation: wgpu::BlendOperation::Add,
            };
            let raster_pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("turboquant3d raster"),
                layout: Some(&raster_pipeline_layout),
                vertex: wgpu::VertexState {
                    module: &raster_module,
                    entry_point: Some("vs_main"),
                    compilation_options: Default::default(),
                    buffers: &[],
                },
                primitive: wgpu::PrimitiveState::default(),
                depth_stencil: None,
                multisample: wgpu::MultisampleState::default(),
                fragment: Some(wgpu::FragmentState {
                    module: &raster_module,
                    entry_point: Some("fs_main"),
                    compilation_options: Default::default(),
                    targets: &[Some(wgpu::ColorTargetState {
                        format,
                        blend: Some(wgpu::BlendState {
                            color: front_to_back,
                            alpha: front_to_back,
                        }),
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                }),
                multiview_mask: None,
                cache: None,
            });
            let limits = device.limits();
            Ok(GpuRenderer {
                ctx: ctx.clone(),
                pre_layout,
                tq_layout,
                pre_pipeline_layout,
                tq_pipeline_layout,
                raster_layout,
                raster_pipeline,
                pre_module,
                format,
                pipelines: PipelineCache::default(),
                presenter: Presenter::new(device),
                max_binding: limits
                    .max_storage_buffer_binding_size
                    .min(limits.max_buffer_size),
            })
        })
    }

    /// The device context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The render target format: `Rgba32Float` or `Rgba16Float`.
    pub fn target_format(&self) -> wgpu::TextureFormat {
        self.format
    }

    /// The preprocess pipeline for these overrides, compiled once (a
    /// failed compile is not cached).
    fn pipeline(&self, key: PipelineKey) -> Result<std::sync::Arc<wgpu::ComputePipeline>> {
        let what = format!("compiling {} (SH degree {})", key.entry(), key.sh_degree);
        self.pipelines
            .get_or_create(&self.ctx.device, key, &what, || {
                let constants = key.constants();
                self.ctx
                    .device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(key.entry()),
                        layout: Some(if key.compressed {
                            &self.tq_pipeline_layout
                        } else {
                            &self.pre_pipeline_layout
                        }),
                        module: &self.pre_module,
                        entry_point: Some(key.entry()),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &constants,
                            zero_initialize_workgroup_memory: false,
                        },
                        cache: None,
                    })
            })
    }

    /// Fails with [`Error::GpuUnsupported`] when one binding of `bytes`
    /// exceeds the device's limits.
    fn check_binding(&self, what: &str, bytes: u64, n: usize) -> Result<()> {
        if bytes > self.max_binding {
            return Err(Error::GpuUnsupported(format!(
                "{n} Gaussians need a {bytes}-byte {what} buffer; the device binds at most {} bytes (max_storage_buffer_binding_size)",
                self.max_binding
            )));
        }
        Ok(())
    }

    /// Uploads a scene with f32 SH-rest. A scene whose buffers exceed the
    /// device's binding limits gets [`Error::GpuUnsupported`].
    pub fn upload(&self, scene: &Scene) -> Result<GpuSplats> {
        self.upload_with(scene, None)
    }

    /// Uploads a scene whose SH-rest stays compressed: `scene` gives the
    /// other attributes (its own SH-rest, if any, is ignored, e.g. the scene
    /// of [`decompress_split`](crate::splat::decompress_split)) and
    /// `sh` the codes, f16 scales, rotation, centroids and (per-Gaussian
    /// widths) the widths, which the preprocess shader decodes per Gaussian
    /// ([`ShDecodeBuffers`]). No decompressed SH buffer exists. Files whose
    /// code stream has 2³² bits or more, and scenes beyond the device's
    /// binding limits, get [`Error::GpuUnsupported`].
    pub fn upload_compressed(&self, scene: &Scene, sh: &CompressedSh) -> Result<GpuSplats> {
        self.upload_with(scene, Some(sh))
    }

    fn upload_with(&self, scene: &Scene, sh: Option<&CompressedSh>) -> Result<GpuSplats> {
        let n = scene.len();
        let sh_degree = sh.map_or(scene.sh_degree, |s| s.sh_degree);
        if sh_degree > 3 {
            return Err(Error::InvalidArgument(format!(
                "SH degree {sh_degree} is above 3"
            )));
        }
        if scene.dc.len() != n
            || scene.opacity.len() != n
            || scene.scales.len() != n
            || scene.rotations.len() != n
        {
            return Err(Error::Shape(format!(
                "scene attribute arrays disagree: {n} positions, {} dc, {} opacities, {} scales, {} rotations",
                scene.dc.len(),
                scene.opacity.len(),
                scene.scales.len(),
                scene.rotations.len()
            )));
        }
        let d = rest_dim(sh_degree);
        self.check_binding("attribute", (4 * ATTR_STRIDE * n) as u64, n)?;
        self.check_binding("Splat2D", (std::mem::size_of::<Splat2D>() * n) as u64, n)?;
        match sh {
            None => {
                if scene.sh_rest.len() != n * d {
                    return Err(Error::Shape(format!(
                        "SH-rest has {} values, expected {n}·{d} for degree {sh_degree}",
                        scene.sh_rest.len()
                    )));
                }
                self.check_binding("SH-rest", (4 * n * d) as u64, n)?;
            }
            Some(sh) => {
                if d == 0 || sh.dim() != d {
                    return Err(Error::Shape(format!(
                        "compressed SH has d = {}, SH degree {sh_degree} needs d = {d} > 0",
                        sh.dim()
                    )));
                }
                if sh.len() != n {
                    return Err(Error::Shape(format!(
                        "compressed SH has {} vectors, the scene {n} Gaussians",
                        sh.len()
                    )));
                }
            }
        }
        let tq = sh.map(ShDecodeBuffers::new).transpose()?;
        if let Some(tq) = &tq {
            self.check_binding("code", tq.codes.len() as u64, n)?;
            self.check_binding("scale", tq.scales.len() as u64, n)?;
            self.check_binding("width", 4 * tq.meta.len() as u64, n)?;
        }

        let mut attrs = vec![0f32; ATTR_STRIDE * n];
        attrs
            .par_chunks_mut(ATTR_STRIDE)
            .enumerate()
            .for_each(|(i, a)| {
                a[0..3].copy_from_slice(&scene.positions[i]);
                a[3..6].copy_from_slice(&scene.scales[i]);
                a[6..10].copy_from_slice(&scene.rotations[i]);
                a[10] = scene.opacity[i];
                a[11..14].copy_from_slice(&scene.dc[i]);
            });

        let device = &self.ctx.device;
        scoped(device, &format!("uploading {n} Gaussians"), || {
            let storage = wgpu::BufferUsages::STORAGE;
            let attrs_buf = init_buffer(
                device,
                "turboquant3d gaussians",
                bytemuck::cast_slice(&attrs),
                storage,
            )?;
            drop(attrs);
            let (sh_buffers, f32_rest) = match &tq {
                None => {
                    let buffer = init_buffer(
                        device,
                        "turboquant3d sh_rest",
                        bytemuck::cast_slice(&scene.sh_rest),
                        storage,
                    )?;
                    let bytes = if d == 0 { 0 } else { buffer.size() };
                    let rest = buffer.clone();
                    (
                        ShBuffers::F32 {
                            _buffer: buffer,
                            bytes,
                        },
                        rest,
                    )
                }
                Some(tq) => {
                    let codes = init_buffer(device, "turboquant3d tq_codes", tq.codes, storage)?;
                    let scales =
                        init_buffer(device, "turboquant3d tq_scales", &tq.scales, storage)?;
                    let tables = init_buffer(
                        device,
                        "turboquant3d tq_tables",
                        bytemuck::cast_slice(&tq.tables),
                        storage,
                    )?;
                    // Uniform mode: a 4-byte placeholder (init_buffer's minimum).
                    let meta = init_buffer(
                        device,
                        "turboquant3d tq_meta",
                        bytemuck::cast_slice(&tq.meta),
                        storage,
                    )?;
                    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("turboquant3d sh_decode"),
                        layout: &self.tq_layout,
                        entries: &[
                            whole(0, &codes),
                            whole(1, &scales),
                            whole(2, &tables),
                            whole(3, &meta),
                        ],
                    });
                    let bytes = codes.size() + scales.size() + tables.size() + meta.size();
                    // The f32 SH binding is unused by preprocess_compressed; a
                    // 4-byte placeholder fills the slot.
                    let dummy = init_buffer(device, "turboquant3d no sh_rest", &[0; 4], storage)?;
                    (
                        ShBuffers::Compressed {
                            d: d as u32,
                            bits: tq.bits,
                            flip: tq.flip,
                            bytes,
                            bind_group,
                            _buffers: [codes, scales, tables, meta],
                        },
                        dummy,
                    )
                }
            };
            let frame = Frame::new(
                device,
                n,
                &self.pre_layout,
                &self.raster_layout,
                &attrs_buf,
                &f32_rest,
            );
            Ok(GpuSplats {
                count: n,
                sh_degree,
                attrs: attrs_buf,
                sh: sh_buffers,
                frame: Mutex::new(frame),
            })
        })
    }

    /// Writes the camera and records the preprocess dispatch.
    fn record_preprocess(
        &self,
        splats: &GpuSplats,
        frame: &Frame,
        cam: &Camera,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        let n = splats.count;
        let groups = (n as u32).div_ceil(PREPROCESS_WORKGROUP);
        let max_x = self
            .ctx
            .device
            .limits()
            .max_compute_workgroups_per_dimension;
        let groups_x = groups.clamp(1, max_x);
        let groups_y = groups.div_ceil(groups_x);
        if groups_y > max_x {
            return Err(Error::GpuUnsupported(format!(
                "{n} Gaussians need more workgroups than the device dispatches"
            )));
        }
        let u = CameraUniform::new(cam, n as u32, groups_x);
        self.ctx
            .queue
            .write_buffer(&frame.uniform, 0, bytemuck::bytes_of(&u));
        if n == 0 {
            return Ok(());
        }
        let (key, tq_group) = match &splats.sh {
            ShBuffers::F32 { .. } => (
                PipelineKey {
                    compressed: false,
                    sh_degree: splats.sh_degree,
                    tq_d: 1,
                    tq_bits: 1,
                    tq_flip: 0,
                },
                None,
            ),
            ShBuffers::Compressed {
                d,
                bits,
                flip,
                bind_group,
                ..
            } => (
                PipelineKey {
                    compressed: true,
                    sh_degree: splats.sh_degree,
                    tq_d: *d,
                    tq_bits: *bits,
                    tq_flip: *flip,
                },
                Some(bind_group),
            ),
        };
        let pipeline = self.pipeline(key)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("turboquant3d preprocess"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &frame.pre_bind_group, &[]);
        if let Some(g) = tq_group {
            pass.set_bind_group(1, g, &[]);
        }
        pass.dispatch_workgroups(groups_x, groups_y, 1);
        Ok(())
    }

    fn check_camera(&self, cam: &Camera) -> Result<()> {
        let max = self.ctx.device.limits().max_texture_dimension_2d;
        if cam.width == 0 || cam.height == 0 || cam.width > max || cam.height > max {
            return Err(Error::GpuUnsupported(format!(
                "a {}×{} image (the device's textures are at most {max}×{max})",
                cam.width, cam.height
            )));
        }
        Ok(())
    }

    /// Runs the preprocess stage and reads back every Gaussian's
    /// [`Splat2D`] (culled ones have radius 0), for tests and debugging.
    pub fn preprocess(&self, splats: &GpuSplats, cam: &Camera) -> Result<Vec<Splat2D>> {
        self.check_camera(cam)?;
        let n = splats.count;
        if n == 0 {
            return Ok(Vec::new());
        }
        let frame = splats.frame.lock().unwrap_or_else(|e| e.into_inner());
        let device = &self.ctx.device;
        scoped(device, "preprocess", || {
            let bytes = std::mem::size_of::<Splat2D>() * n;
            let readback = buffer(
                device,
                "turboquant3d splat readback",
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            let mut encoder = device.create_command_encoder(&Default::default());
            self.record_preprocess(splats, &frame, cam, &mut encoder)?;
            encoder.copy_buffer_to_buffer(&frame.splats, 0, &readback, 0, bytes as u64);
            self.ctx.queue.submit([encoder.finish()]);
            let data = pollster::block_on(read_buffer(&self.ctx, &readback, bytes as u64))?;
            Ok(bytemuck::pod_collect_to_vec(&data))
        })
    }

    /// Records a frame up to the raster stage into the scene's float
    /// target: preprocess on the GPU (submitted, then its depths read back),
    /// the depth order on the CPU, then the raster pass, recorded into the
    /// returned encoder (not yet submitted) so that the caller appends its
    /// readback or present pass. The one frame recording of both
    /// [`render`](Self::render) and [`draw`](Self::draw). Call inside error
    /// scopes.
    fn record_frame(
        &self,
        splats: &GpuSplats,
        frame: &mut Frame,
        cam: &Camera,
    ) -> Result<wgpu::CommandEncoder> {
        let n = splats.count;
        let device = &self.ctx.device;
        // 1. Preprocess and read back the sort keys.
        let mut encoder = device.create_command_encoder(&Default::default());
        self.record_preprocess(splats, frame, cam, &mut encoder)?;
        let order: Vec<u32> = if n > 0 {
            let len = 4 * n as u64;
            encoder.copy_buffer_to_buffer(&frame.depths, 0, &frame.depth_readback, 0, len);
            self.ctx.queue.submit([encoder.finish()]);
            let keys = pollster::block_on(read_buffer(&self.ctx, &frame.depth_readback, len))?;
            let depths: &[f32] = bytemuck::cast_slice(&keys);
            // 2. Depth order: visible splats by (depth, index). Depths are
            // > 0.2, so their bit patterns order like the values.
            let mut sorted: Vec<u64> = depths
                .par_iter()
                .enumerate()
                .filter(|(_, d)| **d > 0.0)
                .map(|(i, d)| ((d.to_bits() as u64) << 32) | i as u64)
                .collect();
            sorted.par_sort_unstable();
            sorted.into_par_iter().map(|k| k as u32).collect()
        } else {
            self.ctx.queue.submit([encoder.finish()]);
            Vec::new()
        };
        if !order.is_empty() {
            self.ctx
                .queue
                .write_buffer(&frame.order, 0, bytemuck::cast_slice(&order));
        }

        // 3. Raster.
        let target = Target::sized(
            &mut frame.target,
            device,
            self.format,
            cam.width,
            cam.height,
        );
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("turboquant3d raster"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &target.view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::TRANSPARENT),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            if !order.is_empty() {
                pass.set_pipeline(&self.raster_pipeline);
                pass.set_bind_group(0, &frame.raster_bind_group, &[]);
                pass.draw(0..6, 0..order.len() as u32);
            }
        }
        Ok(encoder)
    }

    /// Renders a view: preprocess on the GPU, depth order on the CPU from
    /// the GPU's depths, raster on the GPU, then readback. The image is
    /// linear RGB, C + T·background per pixel, unclamped.
    pub fn render(&self, splats: &GpuSplats, cam: &Camera, background: [f32; 3]) -> Result<Image> {
        self.check_camera(cam)?;
        let mut frame_guard = splats.frame.lock().unwrap_or_else(|e| e.into_inner());
        let frame = &mut *frame_guard;
        scoped(&self.ctx.device, "rendering", || {
            let mut encoder = self.record_frame(splats, frame, cam)?;
            let target = frame.target.as_ref().ok_or_else(no_target)?;
            target.record_copy(&mut encoder);
            self.ctx.queue.submit([encoder.finish()]);
            let (readback, len) = target.readback();
            let bytes = pollster::block_on(read_buffer(&self.ctx, readback, len))?;
            Ok(target.composite(&bytes, background))
        })
    }

    /// Draws a view into a host's colour target, e.g. a window's surface
    /// texture: the frame of [`render`](Self::render) (same preprocess,
    /// depth order and raster into the float target), then the present
    /// pass ([`present`](crate::render::present)), which composites it over
    /// `background` and writes `view`, a `format` texture of the camera's
    /// size with `RENDER_ATTACHMENT` usage. The target's bytes equal
    /// [`to_u8`](crate::render::image::to_u8) of the image `render` returns
    /// for 8-bit unorm and sRGB formats alike (the shader undoes the sRGB
    /// encode); offered both, prefer the unorm one. Submits the work and
    /// returns without waiting for the raster to finish; present the surface
    /// texture afterwards.
    pub fn draw(
        &self,
        splats: &GpuSplats,
        cam: &Camera,
        background: [f32; 3],
        view: &wgpu::TextureView,
        format: wgpu::TextureFormat,
    ) -> Result<()> {
        self.draw_with_overlay(splats, cam, background, None, view, format)
    }

    /// [`draw`](Self::draw) with a host's [`Overlay`] (a stats line, a
    /// cursor) laid over the top-left corner by the present pass.
    pub fn draw_with_overlay(
        &self,
        splats: &GpuSplats,
        cam: &Camera,
        background: [f32; 3],
        overlay: Option<&Overlay>,
        view: &wgpu::TextureView,
        format: wgpu::TextureFormat,
    ) -> Result<()> {
        self.check_camera(cam)?;
        let size = view.texture().size();
        if (size.width, size.height) != (cam.width, cam.height) {
            return Err(Error::InvalidArgument(format!(
                "drawing a {}×{} camera into a {}×{} texture",
                cam.width, cam.height, size.width, size.height
            )));
        }
        let mut frame_guard = splats.frame.lock().unwrap_or_else(|e| e.into_inner());
        let frame = &mut *frame_guard;
        let device = &self.ctx.device;
        scoped(device, "drawing", || {
            let mut encoder = self.record_frame(splats, frame, cam)?;
            let target = frame.target.as_ref().ok_or_else(no_target)?;
            self.presenter.record(
                device,
                &self.ctx.queue,
                &mut frame.present,
                &mut encoder,
                &target.view,
                background,
                overlay,
                view,
                format,
            )?;
            self.ctx.queue.submit([encoder.finish()]);
            Ok(())
        })
    }
}

/// `record_frame` always leaves a target; this names the broken invariant
/// instead of panicking.
fn no_target() -> Error {
    Error::Gpu("the frame has no render target".into())
}

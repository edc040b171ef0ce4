//! The wgpu renderer, and the WGSL module with which a host renderer decodes
//! compressed SH-rest in its own shader.
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
//!    TurboQuant codes with [`SH_DECODE_WGSL`]'s `tq_sh_decode`, so the
//!    compressed path never holds decompressed SH anywhere. SH is read (or
//!    decoded) only for splats that survive culling.
//! 2. **depth order** (CPU): the keys are read back (4 bytes per Gaussian),
//!    and the visible splats are sorted by (depth, index) with rayon, as
//!    [`cpu::depth_order`](crate::render::cpu::depth_order) does with the same
//!    f32 depths the GPU computed.
//! 3. **raster** (render pass, shaders/render_raster.wgsl): one instanced
//!    quad per visible splat, in that order, covering mean ± (radius + ½);
//!    the fragment shader applies the CPU's per-pixel tests and α formula
//!    and outputs premultiplied (colour·α, α), blended front to back
//!    (src·(1 − dst.α) + dst). The target is `Rgba32Float` when the device
//!    has `Features::FLOAT32_BLENDABLE` enabled, else `Rgba16Float`. After
//!    readback, pixel = C + (1 − A)·background.
//!
//! # Differences from the CPU reference
//!
//! - **Early stop.** The CPU stops compositing a pixel at the first splat
//!   whose T·(1 − α) would fall below 10⁻⁴, and adds nothing after it. Fixed-
//!   function blending cannot stop, so the GPU keeps adding the tail. With
//!   T_s the transmittance before that splat (T_s·(1 − α) < 10⁻⁴, so
//!   T_s < 10⁻⁴/(1 − α) ≤ 10⁻² since α ≤ 0.99), the CPU outputs C + T_s·bg
//!   and the GPU C + T_s·(Σ_k w_k·colour_k + τ·bg) with Σ_k w_k + τ = 1
//!   (the tail composited over the background): the difference
//!   T_s·Σ_k w_k·(colour_k − bg) is at most T_s·max_k|colour_k − bg| <
//!   10⁻⁴·max|colour − bg|/(1 − α_s) — about 10⁻⁴·max|colour − bg| when
//!   the stopping splat is faint, 10⁻²·max|colour − bg| in the worst case
//!   (α_s = 0.99). Only pixels that are essentially opaque are affected.
//! - **f16 target.** Without `FLOAT32_BLENDABLE` every blend rounds C and
//!   A to binary16 (relative error 2⁻¹¹ ≈ 4.9·10⁻⁴ per blend); over n
//!   fragments on a pixel the error grows like n·2⁻¹¹·max|colour| at worst
//!   (√n typically).
//! - **Depth ties.** Depths are f32 results of the same formula on both;
//!   an ulp of difference can swap two splats at equal depth.
//!
//! # Limits
//!
//! Every buffer is one binding, so a scene must fit
//! `max_storage_buffer_binding_size` (128 MiB by default): at default limits
//! that is ≈ 745 000 Gaussians with f32 SH of degree 3 (180 bytes each),
//! ≈ 2.4 million with compressed SH (56 bytes of attributes each). Larger
//! scenes get [`Error::GpuUnsupported`], as do compressed SH-rest code
//! streams of 2³² bits or more (the shader's bit index is a u32: ≈ 11.9
//! million Gaussians at d = 45, b = 8; 31.8 million at b = 3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::gpu::GpuContext;
use crate::gpu::buffers::{Scopes, init_buffer, read_buffer};
use crate::render::{Camera, Image, Splat2D};
use crate::splat::codec::CompressedSh;
use crate::splat::{Scene, rest_dim};
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
/// It needs two override constants and four read-only storage buffers in
/// **bind group 1**, all bound in both modes (four, so that with the host's
/// own four a stage stays within WebGPU's default
/// `max_storage_buffers_per_shader_stage` of 8). [`ShDecodeBuffers::new`]
/// computes their contents from a [`CompressedSh`] (as
/// [`decompress_split`](crate::splat::codec::decompress_split) returns it),
/// and [`GpuRenderer::upload_compressed`] uploads exactly these:
///
/// | what | WGSL | contents ([`ShDecodeBuffers`] field) |
/// |---|---|---|
/// | `override TQ_D: u32` | | `d`: d = `sh.dim()` (9, 24 or 45) |
/// | `override TQ_BITS: u32` | | `bits`: b (1..=8) when every Gaussian has width b (uniform mode), 0 for per-Gaussian widths |
/// | binding 0 | `tq_codes: array<u32>` | `codes`: `sh.codes`, zero-padded to a multiple of 4 bytes (LSB-first bit stream: Gaussian i's d codes of b_i bits start at bit d·Σ_{k<i} b_k, i·d·b when uniform) |
/// | binding 1 | `tq_scales: array<u32>` | `scales`: `sh.scales` as little-endian binary16, zero-padded to 4 bytes: Gaussian 2k in the low half of word k (+0 at width 0) |
/// | binding 2 | `tq_tables: array<f32>` | `tables`: Π = `sh.rotation.dense_matrix()` (d×d row-major) at [0, d²), then the centroids from d²: uniform mode: width b's 2^b (`sh.tables[b]`); per-Gaussian mode: every width's, width b's 2^b at d² + 2^b − 2 (b = 1 at d², b = 2 at d² + 2, b = 3 at d² + 6, …), zeros for widths not used, up to the largest width used |
/// | binding 3 | `tq_meta: array<u32>` | `meta`: uniform mode: one unused zero word; per-Gaussian mode: two words per group of 8 Gaussians, word 2g the first code bit of Gaussian 8g, word 2g + 1 the widths of Gaussians 8g..8g+7, 4 bits each (Gaussian 8g + k in bits 4k..4k+3) |
///
/// The result is x = s·Πᵀ·c (0 at width 0) in the PLY's channel-major
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
/// [`GpuRenderer::upload_compressed`] uploads, for a host renderer to
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
            codes: &sh.codes,
            scales,
            tables,
            meta,
        })
    }
}

/// The preprocess stage (needs [`SH_DECODE_WGSL`] before it; see
/// [`preprocess_source`]).
pub const PREPROCESS_WGSL: &str = include_str!("../../shaders/render_preprocess.wgsl");

/// The raster stage (vertex and fragment shaders).
pub const RASTER_WGSL: &str = include_str!("../../shaders/render_raster.wgsl");

/// The full source of the preprocess module: the SH decoder, then the stage.
pub fn preprocess_source() -> String {
    format!("{SH_DECODE_WGSL}\n{PREPROCESS_WGSL}")
}

/// Floats per Gaussian in the attribute buffer: position (3), log scale (3),
/// rotation (w, x, y, z), opacity logit, DC colour (3).
pub const ATTR_STRIDE: usize = 14;

/// Threads per workgroup of the preprocess stage.
const WG: u32 = 64;

/// The camera as the shaders see it (`CameraUniform` in both WGSL files).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CameraUniform {
    rot0: [f32; 4],
    rot1: [f32; 4],
    rot2: [f32; 4],
    translation: [f32; 4],
    campos: [f32; 4],
    intrinsics: [f32; 4],
    width: f32,
    height: f32,
    count: u32,
    groups_x: u32,
}

/// The override constants of one preprocess pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    compressed: bool,
    sh_degree: u8,
    tq_d: u32,
    tq_bits: u32,
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
    /// not use TQ_D and TQ_BITS; any value will do).
    fn constants(&self) -> [(&'static str, f64); 3] {
        [
            ("SH_DEGREE", self.sh_degree as f64),
            ("TQ_D", self.tq_d as f64),
            ("TQ_BITS", self.tq_bits as f64),
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
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
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
    /// is TQ_BITS: 0 for per-Gaussian widths).
    Compressed {
        d: u32,
        bits: u32,
        bytes: u64,
        bind_group: wgpu::BindGroup,
        _buffers: [wgpu::Buffer; 4],
    },
}

/// Per-frame buffers, reused across frames of one scene.
#[derive(Debug)]
struct Frame {
    uniform: wgpu::Buffer,
    splats: wgpu::Buffer,
    depths: wgpu::Buffer,
    depth_readback: wgpu::Buffer,
    order: wgpu::Buffer,
    pre_bind_group: wgpu::BindGroup,
    raster_bind_group: wgpu::BindGroup,
    target: Option<Target>,
}

/// A render target and its readback buffer, for one image size.
#[derive(Debug)]
struct Target {
    width: u32,
    height: u32,
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    readback: wgpu::Buffer,
    row_bytes: u32,
}

/// A scene resident on the GPU, uploaded by [`GpuRenderer::upload`] or
/// [`GpuRenderer::upload_compressed`]. Use it only with the renderer that
/// made it.
#[derive(Debug)]
pub struct GpuSplats {
    count: usize,
    sh_degree: u8,
    _attrs: wgpu::Buffer,
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

fn layout_entry(
    binding: u32,
    visibility: wgpu::ShaderStages,
    ty: wgpu::BufferBindingType,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

const RO: wgpu::BufferBindingType = wgpu::BufferBindingType::Storage { read_only: true };
const RW: wgpu::BufferBindingType = wgpu::BufferBindingType::Storage { read_only: false };
const UNIFORM: wgpu::BufferBindingType = wgpu::BufferBindingType::Uniform;

impl GpuRenderer {
    /// Builds the renderer on a device (borrowed or owned). Requires
    /// nothing of it beyond WebGPU defaults; the render target is
    /// `Rgba32Float` when `FLOAT32_BLENDABLE` is enabled, else
    /// `Rgba16Float`.
    pub fn new(ctx: &GpuContext) -> Result<GpuRenderer> {
        Self::new_sync(ctx)
    }

    fn new_sync(ctx: &GpuContext) -> Result<GpuRenderer> {
        let device = &ctx.device;
        let scopes = Scopes::push(device);
        let cs = wgpu::ShaderStages::COMPUTE;
        let vs = wgpu::ShaderStages::VERTEX;
        let pre_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("turboquant3d preprocess"),
            entries: &[
                layout_entry(0, cs, UNIFORM),
                layout_entry(1, cs, RO),
                layout_entry(2, cs, RO),
                layout_entry(3, cs, RW),
                layout_entry(4, cs, RW),
            ],
        });
        let tq_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("turboquant3d sh_decode"),
            entries: &[
                layout_entry(0, cs, RO),
                layout_entry(1, cs, RO),
                layout_entry(2, cs, RO),
                layout_entry(3, cs, RO),
            ],
        });
        let pre_pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("turboquant3d preprocess"),
            bind_group_layouts: &[Some(&pre_layout)],
            immediate_size: 0,
        });
        let tq_pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("turboquant3d preprocess_compressed"),
            bind_group_layouts: &[Some(&pre_layout), Some(&tq_layout)],
            immediate_size: 0,
        });
        let raster_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("turboquant3d raster"),
            entries: &[
                layout_entry(0, vs, UNIFORM),
                layout_entry(1, vs, RO),
                layout_entry(2, vs, RO),
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
            source: wgpu::ShaderSource::Wgsl(RASTER_WGSL.into()),
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
        if let Some(e) = pollster::block_on(scopes.pop()) {
            return Err(Error::Gpu(format!("creating the renderer: {e}")));
        }
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
            pipelines: Default::default(),
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
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

    /// The preprocess pipeline for these overrides, compiled once.
    fn pipeline(&self, key: PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let scopes = Scopes::push(&self.ctx.device);
        let constants = key.constants();
        let pipeline = self
            .ctx
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
            });
        if let Some(e) = pollster::block_on(scopes.pop()) {
            return Err(Error::Gpu(format!(
                "compiling {} (SH degree {}): {e}",
                key.entry(),
                key.sh_degree
            )));
        }
        Ok(self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(pipeline))
            .clone())
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

    /// Uploads a scene with f32 SH-rest.
    pub fn upload(&self, scene: &Scene) -> Result<GpuSplats> {
        self.upload_inner(scene, None)
    }

    /// Uploads a scene whose SH-rest stays compressed: `scene` gives the
    /// other attributes (its own SH-rest, if any, is ignored, e.g. the scene
    /// of [`decompress_split`](crate::splat::codec::decompress_split)) and
    /// `sh` the codes, f16 scales, rotation, centroids and (per-Gaussian
    /// widths) the widths, which the preprocess shader decodes per Gaussian
    /// ([`ShDecodeBuffers`]). No decompressed SH buffer exists. Files whose
    /// code stream has 2³² bits or more get [`Error::GpuUnsupported`].
    pub fn upload_compressed(&self, scene: &Scene, sh: &CompressedSh) -> Result<GpuSplats> {
        self.upload_inner(scene, Some(sh))
    }

    fn upload_inner(&self, scene: &Scene, sh: Option<&CompressedSh>) -> Result<GpuSplats> {
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
        let scopes = Scopes::push(device);
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
                let scales = init_buffer(device, "turboquant3d tq_scales", &tq.scales, storage)?;
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
                        bytes,
                        bind_group,
                        _buffers: [codes, scales, tables, meta],
                    },
                    dummy,
                )
            }
        };
        let frame = self.frame_buffers(n, &attrs_buf, &f32_rest);
        if let Some(e) = pollster::block_on(scopes.pop()) {
            return Err(Error::Gpu(format!("uploading {n} Gaussians: {e}")));
        }
        Ok(GpuSplats {
            count: n,
            sh_degree,
            _attrs: attrs_buf,
            sh: sh_buffers,
            frame: Mutex::new(frame),
        })
    }

    fn frame_buffers(&self, n: usize, attrs: &wgpu::Buffer, rest: &wgpu::Buffer) -> Frame {
        let device = &self.ctx.device;
        let buf = |label: &str, size: usize, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (size.max(4) as u64).div_ceil(4) * 4,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let uniform = buf(
            "turboquant3d camera",
            std::mem::size_of::<CameraUniform>(),
            U::UNIFORM | U::COPY_DST,
        );
        let splats = buf(
            "turboquant3d splats",
            std::mem::size_of::<Splat2D>() * n,
            U::STORAGE | U::COPY_SRC,
        );
        let depths = buf("turboquant3d depths", 4 * n, U::STORAGE | U::COPY_SRC);
        let depth_readback = buf(
            "turboquant3d depth readback",
            4 * n,
            U::MAP_READ | U::COPY_DST,
        );
        let order = buf("turboquant3d order", 4 * n, U::STORAGE | U::COPY_DST);
        let pre_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("turboquant3d preprocess"),
            layout: &self.pre_layout,
            entries: &[
                whole(0, &uniform),
                whole(1, attrs),
                whole(2, rest),
                whole(3, &splats),
                whole(4, &depths),
            ],
        });
        let raster_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("turboquant3d raster"),
            layout: &self.raster_layout,
            entries: &[whole(0, &uniform), whole(1, &splats), whole(2, &order)],
        });
        Frame {
            uniform,
            splats,
            depths,
            depth_readback,
            order,
            pre_bind_group,
            raster_bind_group,
            target: None,
        }
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
        let groups = (n as u32).div_ceil(WG);
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
        let r = cam.rotation;
        let row = |i: usize| [r.row(i).x, r.row(i).y, r.row(i).z, 0.0];
        let t = cam.translation;
        let c = cam.position();
        let u = CameraUniform {
            rot0: row(0),
            rot1: row(1),
            rot2: row(2),
            translation: [t.x, t.y, t.z, 0.0],
            campos: [c.x, c.y, c.z, 0.0],
            intrinsics: [cam.fx, cam.fy, cam.cx, cam.cy],
            width: cam.width as f32,
            height: cam.height as f32,
            count: n as u32,
            groups_x,
        };
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
                },
                None,
            ),
            ShBuffers::Compressed {
                d,
                bits,
                bind_group,
                ..
            } => (
                PipelineKey {
                    compressed: true,
                    sh_degree: splats.sh_degree,
                    tq_d: *d,
                    tq_bits: *bits,
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
        self.preprocess_inner(splats, cam)
    }

    fn preprocess_inner(&self, splats: &GpuSplats, cam: &Camera) -> Result<Vec<Splat2D>> {
        self.check_camera(cam)?;
        let n = splats.count;
        if n == 0 {
            return Ok(Vec::new());
        }
        let frame = splats.frame.lock().unwrap_or_else(|e| e.into_inner());
        let device = &self.ctx.device;
        let scopes = Scopes::push(device);
        let bytes = (std::mem::size_of::<Splat2D>() * n) as u64;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("turboquant3d splat readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        self.record_preprocess(splats, &frame, cam, &mut encoder)?;
        encoder.copy_buffer_to_buffer(&frame.splats, 0, &readback, 0, bytes);
        self.ctx.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(scopes.pop()) {
            return Err(Error::Gpu(format!("preprocess: {e}")));
        }
        let data = pollster::block_on(read_buffer(&self.ctx, &readback, bytes))?;
        Ok(bytemuck::pod_collect_to_vec(&data))
    }

    /// Renders a view: preprocess on the GPU, depth order on the CPU from
    /// the GPU's depths, raster on the GPU, then readback. The image is
    /// linear RGB, C + T·background per pixel, unclamped.
    pub fn render(&self, splats: &GpuSplats, cam: &Camera, background: [f32; 3]) -> Result<Image> {
        self.render_inner(splats, cam, background)
    }

    fn render_inner(
        &self,
        splats: &GpuSplats,
        cam: &Camera,
        background: [f32; 3],
    ) -> Result<Image> {
        self.check_camera(cam)?;
        let n = splats.count;
        let device = &self.ctx.device;
        let mut frame_guard = splats.frame.lock().unwrap_or_else(|e| e.into_inner());
        let frame = &mut *frame_guard;
        let scopes = Scopes::push(device);

        // 1. Preprocess and read back the sort keys.
        let mut encoder = device.create_command_encoder(&Default::default());
        self.record_preprocess(splats, frame, cam, &mut encoder)?;
        let order: Vec<u32> = if n > 0 {
            encoder.copy_buffer_to_buffer(&frame.depths, 0, &frame.depth_readback, 0, 4 * n as u64);
            self.ctx.queue.submit([encoder.finish()]);
            let keys =
                pollster::block_on(read_buffer(&self.ctx, &frame.depth_readback, 4 * n as u64))?;
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
        let (w, h) = (cam.width, cam.height);
        if frame
            .target
            .as_ref()
            .is_none_or(|t| t.width != w || t.height != h)
        {
            frame.target = Some(self.target(w, h));
        }
        let target = frame.target.as_ref().expect("just made");
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
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &target.texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &target.readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(target.row_bytes),
                    rows_per_image: Some(h),
                },
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
        self.ctx.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(scopes.pop()) {
            return Err(Error::Gpu(format!("rendering: {e}")));
        }
        let bytes = pollster::block_on(read_buffer(
            &self.ctx,
            &target.readback,
            target.row_bytes as u64 * h as u64,
        ))?;

        // C + (1 − A)·background.
        let f32_target = self.format == wgpu::TextureFormat::Rgba32Float;
        let mut image = Image::new(w, h);
        image
            .data
            .par_chunks_mut(3 * w as usize)
            .enumerate()
            .for_each(|(y, out)| {
                let row = &bytes[y * target.row_bytes as usize..];
                for x in 0..w as usize {
                    let px: [f32; 4] = if f32_target {
                        bytemuck::pod_read_unaligned(&row[16 * x..16 * x + 16])
                    } else {
                        let hp: [u16; 4] = bytemuck::pod_read_unaligned(&row[8 * x..8 * x + 8]);
                        hp.map(|v| half::f16::from_bits(v).to_f32())
                    };
                    let t = 1.0 - px[3];
                    for ch in 0..3 {
                        out[3 * x + ch] = px[ch] + t * background[ch];
                    }
                }
            });
        Ok(image)
    }

    fn target(&self, w: u32, h: u32) -> Target {
        let device = &self.ctx.device;
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("turboquant3d target"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: self.format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        let texel = if self.format == wgpu::TextureFormat::Rgba32Float {
            16
        } else {
            8
        };
        let row_bytes = (w * texel).div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT)
            * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("turboquant3d image readback"),
            size: row_bytes as u64 * h as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Target {
            width: w,
            height: h,
            texture,
            view,
            readback,
            row_bytes,
        }
    }
}

fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CameraUniform` exists three times, here and in both WGSL files.
    #[test]
    fn camera_uniform_layout_matches_the_wgsl_structs() {
        for src in [preprocess_source(), RASTER_WGSL.to_string()] {
            let module = naga::front::wgsl::parse_str(&src).expect("parses");
            let (_, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some("CameraUniform"))
                .expect("CameraUniform");
            match &ty.inner {
                naga::TypeInner::Struct { span, .. } => {
                    assert_eq!(*span as usize, std::mem::size_of::<CameraUniform>())
                }
                _ => panic!("not a struct"),
            }
            let (_, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some("Splat2D"))
                .expect("Splat2D");
            match &ty.inner {
                naga::TypeInner::Struct { span, .. } => {
                    assert_eq!(*span as usize, std::mem::size_of::<Splat2D>())
                }
                _ => panic!("not a struct"),
            }
        }
    }

    /// A synthetic file's SH-rest: degree `degree`, the given widths,
    /// pseudo-random codes and scales.
    fn synthetic_sh(degree: u8, widths: Vec<u8>) -> CompressedSh {
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
        for (k, o) in out.iter_mut().enumerate() {
            let acc: f32 = (0..d as usize)
                .map(|j| t.tables[j * d as usize + k] * c[j])
                .sum();
            *o = acc * s;
        }
        out
    }

    #[test]
    fn decode_buffers_lay_out_what_the_cpu_decoder_reads() {
        for degree in 1..=3u8 {
            for widths in [
                (0..101).map(|i| (i * 7 % 9) as u8).collect::<Vec<u8>>(),
                (0..29).map(|i| [0, 8, 8, 1, 0, 0, 5][i % 7]).collect(),
                vec![3; 20],
                vec![0; 11],
            ] {
                let sh = synthetic_sh(degree, widths.clone());
                let t = ShDecodeBuffers::new(&sh).unwrap();
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
        let mut sh = synthetic_sh(3, vec![8; 8]);
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

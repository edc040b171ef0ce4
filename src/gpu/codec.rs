//! The GPU codec: WGSL kernels (shaders/dense.wgsl, shaders/hadamard.wgsl)
//! driven by a thin host layer. Two ways in:
//!
//! - **recording**: [`GpuQuantizer::record_encode`] and
//!   [`GpuQuantizer::record_decode`] record into the caller's command
//!   encoder, on the caller's buffers, with no readback;
//! - **convenience**: [`GpuQuantizer::encode`] and [`GpuQuantizer::decode`]
//!   take and return host data, with staging and readback.
//!
//! Work larger than one binding is split into chunks that respect
//! `max_storage_buffer_binding_size` and `max_compute_workgroups_per_dimension`
//! of the device as it is; nothing is required of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codec::rotation::HADAMARD_ROUNDS;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{Scopes, buffer, init_buffer, read_buffer};
use crate::packing::packed_len;
use crate::{Encoded, Error, Quantizer, Result, Rotation, ScaleFormat, ScaleMode, Scales};

const COMMON_WGSL: &str = include_str!("../../shaders/codec_common.wgsl");
const IO_F32_WGSL: &str = include_str!("../../shaders/io_f32.wgsl");
const IO_F16_WGSL: &str = include_str!("../../shaders/io_f16.wgsl");
const DENSE_WGSL: &str = include_str!("../../shaders/dense.wgsl");
const HADAMARD_WGSL: &str = include_str!("../../shaders/hadamard.wgsl");
const HADAMARD_SUBGROUP_WGSL: &str = include_str!("../../shaders/hadamard_subgroup.wgsl");

/// Vectors per workgroup of the dense kernel (one thread each). 32 makes
/// every workgroup's codes whole 32-bit words for any d and b.
pub const DENSE_WG: u32 = 32;
/// Largest d of the dense kernel (per-thread arrays).
pub const DENSE_MAX_D: usize = 128;

/// The kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// shaders/dense.wgsl: thread per vector, any rotation as a matrix.
    Dense,
    /// shaders/hadamard.wgsl: workgroup per vector, in-register FWHT.
    Hadamard,
}

impl Family {
    /// The WGSL source: the shared prelude, then the family's kernels, and
    /// with `subgroups` the family's subgroup entry points (a module that
    /// only devices with `Features::SUBGROUP` can compile).
    ///
    /// The I/O variant comes first: io_f16.wgsl opens with `enable f16;`,
    /// which must precede every declaration.
    pub fn source(self, subgroups: bool, io: DataFormat) -> String {
        let io = match io {
            DataFormat::F32 => IO_F32_WGSL,
            DataFormat::F16 => IO_F16_WGSL,
        };
        match (self, subgroups) {
            (Family::Dense, _) => format!("{io}\n{COMMON_WGSL}\n{DENSE_WGSL}"),
            (Family::Hadamard, false) => format!("{io}\n{COMMON_WGSL}\n{HADAMARD_WGSL}"),
            (Family::Hadamard, true) => {
                format!("{io}\n{COMMON_WGSL}\n{HADAMARD_WGSL}\n{HADAMARD_SUBGROUP_WGSL}")
            }
        }
    }
}

/// How vectors are stored in the buffers the kernels read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataFormat {
    /// f32, on every device.
    F32,
    /// f16, half the bytes, on devices with `Features::SHADER_F16` enabled.
    F16,
}

impl DataFormat {
    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            DataFormat::F32 => 4,
            DataFormat::F16 => 2,
        }
    }
}

/// Host element types the convenience API moves: f32 and f16.
pub trait Element: bytemuck::Pod + Send + Sync {
    /// The matching buffer format.
    const FORMAT: DataFormat;
    /// Widens to f32 (exact for both).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const FORMAT: DataFormat = DataFormat::F32;
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for half::f16 {
    const FORMAT: DataFormat = DataFormat::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// The code tie margin of [`GpuQuantizer::encode_exact`], absolute on the
/// unit sphere's coordinates. A rotated coordinate y_j = Σ_k Π_jk·u_k summed
/// in any order is within d·2⁻²⁴·Σ_k|Π_jk·u_k| ≤ d·2⁻²⁴ of the exact sum
/// (Cauchy–Schwarz: Σ|Π_jk·u_k| ≤ ‖Π_j‖·‖u‖ = 1), so the GPU and the CPU
/// differ by at most 2·d·2⁻²⁴ = 5.4·10⁻⁶ at d = 45, plus a few ulps from
/// normalising u. In practice the difference is about 10⁻⁷.
pub const TIE_EPS: f32 = 2e-5;

/// The scale tie margin of [`GpuQuantizer::encode_exact`], relative. The
/// least-squares scale ‖x‖·⟨y, ĉ⟩/‖ĉ‖² inherits the coordinates' error
/// through ⟨y, ĉ⟩: at most 2·d·2⁻²⁴·Σ|ĉ_j|/‖ĉ‖ ≤ 2·d^1.5·2⁻²⁴ = 3.6·10⁻⁵
/// relative at d = 45, plus a few ulps.
pub const TIE_REL: f32 = 5e-5;

/// The kernel family and specialisation constants for a quantizer on a
/// device with the given limits. This is all the variant selection there
/// is: the CPU-only shader test validates exactly these constants.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelConfig {
    /// Whether the subgroup entry points (`encode_subgroup`,
    /// `decode_subgroup`) are used.
    pub subgroups: bool,
    /// The family.
    pub family: Family,
    /// WGSL override constants.
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelConfig {
    /// Picks the kernel for `q` on a device with these limits and enabled
    /// features, whose adapter reports `subgroup_min_size` (0 if unknown),
    /// or says why there is none.
    pub fn select(
        q: &Quantizer,
        limits: &wgpu::Limits,
        features: wgpu::Features,
        subgroup_min_size: u32,
    ) -> Result<KernelConfig> {
        let mut subgroups = false;
        let d = q.dim();
        let b = q.bits();
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let mut constants: Vec<(&'static str, f64)> = vec![
            ("D", d as f64),
            ("BITS", b as f64),
            ("SCALE_LS", flag(q.scale_mode() == ScaleMode::LeastSquares)),
            ("SCALE_F16", flag(q.scale_format() == ScaleFormat::F16)),
        ];
        let family = match &**q.rotation() {
            Rotation::Hadamard(h) if h.rounds() == HADAMARD_ROUNDS && (32..=4096).contains(&d) => {
                let e = (1usize << (d.trailing_zeros() as usize).div_ceil(2)).max(32);
                let wg = d / e;
                let shared = 4 * (d + wg + 2) as u32;
                if shared > limits.max_compute_workgroup_storage_size
                    || wg as u32 > limits.max_compute_invocations_per_workgroup
                {
                    return Err(Error::GpuUnsupported(format!(
                        "d = {d} Hadamard needs {shared} bytes of workgroup memory; the device allows {}",
                        limits.max_compute_workgroup_storage_size
                    )));
                }
                let scale = (1.0 / (d as f64).sqrt()).powi(HADAMARD_ROUNDS as i32) as f32;
                constants.extend([
                    ("WG", wg as f64),
                    ("E", e as f64),
                    ("LOG_E", e.trailing_zeros() as f64),
                    (
                        "SKIP_B",
                        (2 * e.trailing_zeros() - d.trailing_zeros()) as f64,
                    ),
                    ("SCALE", scale as f64),
                ]);
                // Shuffles replace the exchanges when one subgroup is the
                // whole workgroup. (Only that module declares LOG_WG; a
                // constant a module lacks is an error.)
                subgroups =
                    features.contains(wgpu::Features::SUBGROUP) && wg as u32 <= subgroup_min_size;
                if subgroups {
                    constants.push(("LOG_WG", wg.trailing_zeros() as f64));
                }
                Family::Hadamard
            }
            _ if d <= DENSE_MAX_D => {
                let tile = DENSE_WG as usize * d;
                let words = tile * b as usize / 32;
                let fixed = 4 * (tile + words + DENSE_WG as usize);
                if fixed as u32 > limits.max_compute_workgroup_storage_size {
                    return Err(Error::GpuUnsupported(format!(
                        "d = {d}, b = {b} needs {fixed} bytes of workgroup memory"
                    )));
                }
                let in_wg = (fixed + 4 * d * d) as u32 <= limits.max_compute_workgroup_storage_size;
                constants.extend([
                    ("WG", DENSE_WG as f64),
                    ("MAT_IN_WG", flag(in_wg)),
                    ("MAT_LEN", if in_wg { (d * d) as f64 } else { 1.0 }),
                    ("TILE_LEN", tile as f64),
                    ("CODE_WORDS", words as f64),
                ]);
                Family::Dense
            }
            _ => {
                return Err(Error::GpuUnsupported(format!(
                    "d = {d} with a {} rotation (GPU kernels: dense for d ≤ {DENSE_MAX_D}, Hadamard with {HADAMARD_ROUNDS} rounds for 32 ≤ d ≤ 4096)",
                    q.rotation().kind().name()
                )));
            }
        };
        Ok(KernelConfig {
            family,
            subgroups,
            constants,
        })
    }
}

type PipelineKey = (
    Family,
    bool,
    DataFormat,
    &'static str,
    Vec<(&'static str, u64)>,
);

/// Shaders, layouts and a pipeline cache on one device.
pub struct GpuCodec {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(Family, bool, DataFormat), Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    max_binding: u64,
}

impl std::fmt::Debug for GpuCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuCodec")
            .field("device", &self.ctx.describe())
            .finish()
    }
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GpuCodec {
    /// Builds the codec on a device (borrowed or owned).
    pub fn new(ctx: GpuContext) -> GpuCodec {
        let device = &ctx.device;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("turboquant3d codec"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, true),
                storage(3, true),
                storage(4, false),
                storage(5, false),
                storage(6, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("turboquant3d codec"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let max_binding = device
            .limits()
            .max_storage_buffer_binding_size
            .min(device.limits().max_buffer_size);
        GpuCodec {
            ctx,
            layout,
            pipeline_layout,
            modules: Default::default(),
            pipelines: Default::default(),
            max_binding,
        }
    }

    /// The device context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Lowers the largest binding the codec uses (tests exercise chunking
    /// with small inputs this way). It never raises it above the device limit.
    pub fn set_max_binding_size(&mut self, bytes: u64) {
        let limits = self.ctx.device.limits();
        self.max_binding = bytes
            .min(limits.max_storage_buffer_binding_size)
            .min(limits.max_buffer_size)
            .max(1024);
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
    /// once per configuration.
    fn pipeline(
        &self,
        family: Family,
        subgroups: bool,
        io: DataFormat,
        entry: &'static str,
        constants: Vec<(&'static str, u64)>,
    ) -> Arc<wgpu::ComputePipeline> {
        let key = (family, subgroups, io, entry, constants);
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return p.clone();
        }
        let module = self.module(family, subgroups, io);
        let values: Vec<(&str, f64)> = key
            .4
            .iter()
            .map(|(k, v)| (*k, f64::from_bits(*v)))
            .collect();
        let pipeline = Arc::new(self.ctx.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&self.pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &values,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            },
        ));
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(pipeline)
            .clone()
    }

    /// Uploads a quantizer's rotation and tables and picks its kernel.
    pub fn prepare(self: &Arc<Self>, q: &Quantizer) -> Result<GpuQuantizer> {
        GpuQuantizer::new(self.clone(), q)
    }
}

/// A quantizer resident on the GPU: its rotation and tables in buffers, and
/// the kernel variant chosen for the device.
#[derive(Debug)]
pub struct GpuQuantizer {
    codec: Arc<GpuCodec>,
    quantizer: Quantizer,
    family: Family,
    subgroups: bool,
    constants: Vec<(&'static str, u64)>,
    rot: wgpu::Buffer,
    perm: wgpu::Buffer,
    tables: wgpu::Buffer,
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

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    data_offset: u32,
    data_stride: u32,
    code_offset: u32,
    scale_offset: u32,
    groups_x: u32,
    pad: [u32; 2],
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
    fn new(codec: Arc<GpuCodec>, q: &Quantizer) -> Result<GpuQuantizer> {
        let device = codec.ctx.device.clone();
        let kernel = KernelConfig::select(
            q,
            &device.limits(),
            device.features(),
            device.adapter_info().subgroup_min_size,
        )?;
        let subgroups = kernel.subgroups;
        let (family, constants) = (
            kernel.family,
            kernel
                .constants
                .iter()
                .map(|(k, v)| (*k, v.to_bits()))
                .collect::<Vec<_>>(),
        );
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
            init_buffer(&device, label, contents, wgpu::BufferUsages::STORAGE)
        };
        // Every device error while preparing is caught here and returned:
        // scopes, not a handler, so a host's device is left as it was.
        let scopes = Scopes::push(&device);
        let uploaded = (|| {
            Ok::<_, Error>((
                init("turboquant3d rotation", bytemuck::cast_slice(&rot_data))?,
                init("turboquant3d permutation", bytemuck::cast_slice(&perm_data))?,
                init("turboquant3d tables", bytemuck::cast_slice(&tables))?,
            ))
        })();
        let (rot, perm, tables) = match uploaded {
            Ok(b) => b,
            Err(e) => {
                let scope_error = pollster::block_on(scopes.pop());
                return Err(Error::Gpu(format!(
                    "uploading the quantizer: {}",
                    scope_error.unwrap_or_else(|| match e {
                        Error::Gpu(m) => m,
                        other => other.to_string(),
                    })
                )));
            }
        };
        let gq = GpuQuantizer {
            codec,
            quantizer: q.clone(),
            family,
            subgroups,
            constants,
            rot,
            perm,
            tables,
        };
        // Compile both pipelines now, so that errors surface here.
        gq.pipeline("encode", DataFormat::F32);
        gq.pipeline("decode", DataFormat::F32);
        if let Some(e) = pollster::block_on(scopes.pop()) {
            return Err(Error::Gpu(format!(
                "preparing the {:?} kernels: {e}",
                gq.family
            )));
        }
        Ok(gq)
    }

    fn pipeline(&self, entry: &'static str, io: DataFormat) -> Arc<wgpu::ComputePipeline> {
        let entry = match (self.subgroups, entry) {
            (true, "encode") => "encode_subgroup",
            (true, "decode") => "decode_subgroup",
            (_, e) => e,
        };
        self.codec.pipeline(
            self.family,
            self.subgroups,
            io,
            entry,
            self.constants.clone(),
        )
    }

    /// The CPU quantizer this mirrors.
    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
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
        let room = self.codec.max_binding.saturating_sub(align + 4);
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
        params: Params,
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
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: self.rot.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: self.perm.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: self.tables.as_entire_binding(),
                },
                bind(4, bindings[0]),
                bind(5, bindings[1]),
                bind(6, bindings[2]),
            ],
        });
        let groups = params.n.div_ceil(self.per_group() as u32);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline(entry, io));
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(params.groups_x, groups.div_ceil(params.groups_x), 1);
        Ok(())
    }

    fn check_format(&self, format: DataFormat) -> Result<()> {
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
            let params = Params {
                n: n as u32,
                data_offset: u32_param(vectors.skip / eb, "vector offset")?,
                data_stride: u32_param(data.stride, "vector stride")?,
                code_offset: u32_param(codes.skip / 4, "code offset")?,
                scale_offset: u32_param(scales.skip / sb, "scale offset")?,
                groups_x: self.groups_x(n as usize),
                pad: [0; 2],
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
        let scopes = Scopes::push(&self.codec.ctx.device);
        let r = self.encode_inner(data).await;
        match scopes.pop().await {
            Some(e) => Err(Error::Gpu(format!("encoding: {e}"))),
            None => r,
        }
    }

    async fn encode_inner<T: Element>(&self, data: &[T]) -> Result<Encoded> {
        let q = &self.quantizer;
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
        let device = &self.codec.ctx.device;
        let slab = self.chunk_vectors(d as u64).min(n.div_ceil(32) * 32);
        let code_words = (slab * d * bits).div_ceil(32);
        let scale_words = (slab * q.scale_format().bytes()).div_ceil(4);
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let input = buffer(
            device,
            "turboquant3d input",
            T::FORMAT.bytes() as usize * slab * d,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let codes = buffer(
            device,
            "turboquant3d codes",
            4 * code_words,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let scales = buffer(
            device,
            "turboquant3d scales",
            4 * scale_words,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        );
        let readback = buffer(
            device,
            "turboquant3d readback",
            4 * (code_words + scale_words),
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(format!("allocating encode buffers: {e}")));
        }
        let mut out_codes = vec![0u8; packed_len(n * d, q.bits())];
        let mut out_scales: Vec<u8> = Vec::with_capacity(n * q.scale_format().bytes());
        for start in (0..n).step_by(slab) {
            let m = slab.min(n - start);
            self.codec.ctx.queue.write_buffer(
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
    /// scale bytes as [`Quantizer::encode`], whatever order the device sums
    /// in. The kernel flags each vector that has a rotated coordinate within
    /// [`TIE_EPS`] of a decision boundary, or a scale within a relative
    /// [`TIE_REL`] of an f16 rounding midpoint; those, and only those, are
    /// re-encoded on the CPU. Returns the encoding and the number of vectors
    /// re-encoded. Needs the dense kernel and f16 scales (an f32 scale would
    /// carry the device's rounding in every vector).
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
        let q = &self.quantizer;
        if self.family != Family::Dense || q.scale_format() != ScaleFormat::F16 {
            return Err(Error::GpuUnsupported(format!(
                "exact encoding needs the dense kernel and f16 scales (have the {:?} kernel, {} scales)",
                self.family,
                q.scale_format().name()
            )));
        }
        let mut constants = self.constants.clone();
        if margins {
            constants.push(("TIE_EPS", (TIE_EPS as f64).to_bits()));
            constants.push(("TIE_REL", (TIE_REL as f64).to_bits()));
        }
        if sim_err != 0.0 {
            constants.push(("SIM_ERR", (sim_err as f64).to_bits()));
        }
        let flagged = GpuQuantizer {
            codec: self.codec.clone(),
            quantizer: q.clone(),
            family: self.family,
            subgroups: self.subgroups,
            constants,
            rot: self.rot.clone(),
            perm: self.perm.clone(),
            tables: self.tables.clone(),
        };
        let enc = flagged.encode(data)?;
        let (d, n, bits) = (q.dim(), enc.len(), q.bits());
        let (mut codes, scales) = enc.into_parts();
        let Scales::F16(mut s) = scales else {
            unreachable!("f16 scales were asked for")
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
                unreachable!("the quantizer stores f16 scales")
            };
            for (k, &i) in ties.iter().enumerate() {
                crate::packing::copy_codes(cpu.codes(), k * d, &mut codes, i * d, d, bits);
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
        let scopes = Scopes::push(&self.codec.ctx.device);
        let r = self.decode_inner(enc).await;
        match scopes.pop().await {
            Some(e) => Err(Error::Gpu(format!("decoding: {e}"))),
            None => r,
        }
    }

    async fn decode_inner<T: Element>(&self, enc: &Encoded) -> Result<Vec<T>> {
        let q = &self.quantizer;
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
        let device = &self.codec.ctx.device;
        let slab = self.chunk_vectors(d as u64).min(n.div_ceil(32) * 32);
        let code_words = (slab * d * bits).div_ceil(32);
        let scale_words = (slab * q.scale_format().bytes()).div_ceil(4);
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let codes = buffer(
            device,
            "turboquant3d codes",
            4 * code_words,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let scales = buffer(
            device,
            "turboquant3d scales",
            4 * scale_words,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let output = buffer(
            device,
            "turboquant3d output",
            eb * slab * d,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let readback = buffer(
            device,
            "turboquant3d readback",
            eb * slab * d,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(format!("allocating decode buffers: {e}")));
        }
        let all_scales = enc.scales().to_le_bytes();
        let mut out = vec![T::zeroed(); n * d];
        for start in (0..n).step_by(slab) {
            let m = slab.min(n - start);
            let code_start = start * d * bits / 8;
            let code_len = packed_len(m * d, q.bits());
            let mut words = vec![0u8; (m * d * bits).div_ceil(32) * 4];
            words[..code_len].copy_from_slice(&enc.codes()[code_start..code_start + code_len]);
            self.codec.ctx.queue.write_buffer(&codes, 0, &words);
            let sb = q.scale_format().bytes();
            let mut sbytes = all_scales[start * sb..(start + m) * sb].to_vec();
            sbytes.resize(sbytes.len().div_ceil(4) * 4, 0);
            self.codec.ctx.queue.write_buffer(&scales, 0, &sbytes);
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
        Ok(out)
    }

    /// Submits, waits, and copies `len` bytes out of a mappable buffer.
    async fn submit_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        readback: &wgpu::Buffer,
        len: u64,
    ) -> Result<Vec<u8>> {
        let ctx = &self.codec.ctx;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        ctx.queue.submit([encoder.finish()]);
        if let Some(e) = scope.pop().await {
            return Err(Error::Gpu(format!("submitting the codec: {e}")));
        }
        read_buffer(ctx, readback, len).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Params` exists twice, here and in codec_common.wgsl: the WGSL
    /// struct's members, offsets and size must equal the Rust one's.
    #[test]
    fn params_layout_matches_the_wgsl_struct() {
        let module = naga::front::wgsl::parse_str(COMMON_WGSL).expect("codec_common.wgsl parses");
        let (members, span) = module
            .types
            .iter()
            .find_map(|(_, t)| match (&t.name, &t.inner) {
                (Some(name), naga::TypeInner::Struct { members, span }) if name == "Params" => {
                    Some((members.clone(), *span))
                }
                _ => None,
            })
            .expect("struct Params in codec_common.wgsl");
        let rust = [
            ("n", std::mem::offset_of!(Params, n)),
            ("data_offset", std::mem::offset_of!(Params, data_offset)),
            ("data_stride", std::mem::offset_of!(Params, data_stride)),
            ("code_offset", std::mem::offset_of!(Params, code_offset)),
            ("scale_offset", std::mem::offset_of!(Params, scale_offset)),
            ("groups_x", std::mem::offset_of!(Params, groups_x)),
            ("pad0", std::mem::offset_of!(Params, pad)),
            ("pad1", std::mem::offset_of!(Params, pad) + 4),
        ];
        assert_eq!(members.len(), rust.len());
        for (m, (name, offset)) in members.iter().zip(rust) {
            assert_eq!(m.name.as_deref(), Some(name));
            assert_eq!(m.offset as usize, offset, "member {name}");
        }
        assert_eq!(span as usize, std::mem::size_of::<Params>());
    }
}

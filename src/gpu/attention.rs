//! Attention over a key/value cache on the GPU, straight from the codes:
//! [`GpuAttention`] holds one coded K and V (or, for comparison, plain f16
//! K and V) on a device, and [`GpuAttention::record_attend`] records
//! `softmax(q·Kᵀ/√d)·V` for a block of queries into the caller's encoder.
//! Nothing is decoded into memory: each query is rotated once per key
//! segment, values are summed in the rotated basis and rotated back once
//! per query (`shaders/kv_attention.wgsl`). The CPU reference is
//! [`crate::kv::attention::attend`].
//!
//! Like the codec, it borrows a host's device and requires no features or
//! limits beyond WebGPU's defaults; buffers larger than the device's
//! storage binding limit are refused, not split.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codec::codebook::Codebook;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{buffer, init_buffer, read_buffer};
use crate::gpu::pipeline::{PipelineCache, RO, RW, UNIFORM, buffer_entry, whole};
use crate::gpu::scope::{scoped, scoped_async};
use crate::kv::attention::Heads;
use crate::kv::coded::{CodedTensor, Rotations};
use crate::{Error, Result};

/// The WGSL source of both attention kernels.
pub const KV_ATTENTION_WGSL: &str = include_str!("../../shaders/kv_attention.wgsl");

/// Where the f16 baseline starts in [`KV_ATTENTION_WGSL`]: the kernel from
/// codes is compiled from the text before it, so that it needs no
/// capability beyond WebGPU's (`unpack2x16float` may be missing).
pub const F16_BASELINE_MARKER: &str = "// ---- f16 baseline";

/// The source of the module holding `entry`.
pub fn attention_source(entry: &str) -> &'static str {
    match entry {
        "attend_codes" => KV_ATTENTION_WGSL
            .split(F16_BASELINE_MARKER)
            .next()
            .unwrap_or(KV_ATTENTION_WGSL),
        _ => KV_ATTENTION_WGSL,
    }
}

/// Queries one workgroup attends for (`QB` in the shader).
pub const QUERIES_PER_WORKGROUP: usize = 4;

/// The largest head dimension the kernels take (`MAX_HD`).
pub const MAX_HEAD_DIM: usize = 256;

/// Threads per workgroup (the `WG` override; 32..=128 in the shader).
const WG: u32 = 64;

/// Workgroup memory the kernels declare, in bytes.
const WORKGROUP_BYTES: u32 = 4 * (2 * 1024 + 2 * 512 + 4);

/// Words per segment record (`SEG`).
const SEG: usize = 16;

/// No mean (`NONE`).
const NONE: u32 = u32::MAX;

/// The kernel's uniform block (`Params` in the shader).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_queries: u32,
    tokens: u32,
    head_dim: u32,
    width: u32,
    k_upt: u32,
    v_upt: u32,
    k_heads: u32,
    v_heads: u32,
    k_mean: u32,
    v_mean: u32,
    v_dir: u32,
    q_base: u32,
    inv_sqrt: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// The attention module, layout and pipeline cache on one device, shared by
/// every cache uploaded to it (compiling is what costs time).
pub struct AttentionKernels {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: PipelineCache<&'static str>,
    max_binding: u64,
}

impl std::fmt::Debug for AttentionKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionKernels")
            .field("device", &self.ctx.describe())
            .field("pipelines", &self.pipelines.len())
            .finish()
    }
}

impl AttentionKernels {
    /// Builds the layouts on a device (borrowed or owned), after checking
    /// that its limits hold what the kernels declare.
    pub fn new(ctx: GpuContext) -> Result<Arc<AttentionKernels>> {
        let limits = ctx.device.limits();
        let needs = [
            (
                "max_compute_workgroup_storage_size",
                limits.max_compute_workgroup_storage_size,
                WORKGROUP_BYTES,
            ),
            (
                "max_compute_invocations_per_workgroup",
                limits.max_compute_invocations_per_workgroup,
                WG,
            ),
            (
                "max_compute_workgroup_size_x",
                limits.max_compute_workgroup_size_x,
                WG,
            ),
            (
                "max_storage_buffers_per_shader_stage",
                limits.max_storage_buffers_per_shader_stage,
                6,
            ),
        ];
        for (name, has, need) in needs {
            if has < need {
                return Err(Error::GpuUnsupported(format!(
                    "attention kernels need {name} ≥ {need}, the device has {has}"
                )));
            }
        }
        let device = &ctx.device;
        let cs = wgpu::ShaderStages::COMPUTE;
        let (layout, pipeline_layout) = scoped(device, "creating the attention layouts", || {
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("turboquant3d attention"),
                entries: &[
                    buffer_entry(0, cs, UNIFORM),
                    buffer_entry(1, cs, RO),
                    buffer_entry(2, cs, RW),
                    buffer_entry(3, cs, RO),
                    buffer_entry(4, cs, RO),
                    buffer_entry(5, cs, RO),
                    buffer_entry(6, cs, RO),
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("turboquant3d attention"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            Ok((layout, pipeline_layout))
        })?;
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Ok(Arc::new(AttentionKernels {
            ctx,
            layout,
            pipeline_layout,
            modules: Mutex::new(HashMap::new()),
            pipelines: Default::default(),
            max_binding,
        }))
    }

    /// The device context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn pipeline(&self, entry: &'static str) -> Result<Arc<wgpu::ComputePipeline>> {
        let device = &self.ctx.device;
        self.pipelines.get_or_create(
            device,
            entry,
            &format!("compiling the attention kernel {entry}"),
            || {
                let module = {
                    let mut m = self.modules.lock().unwrap_or_else(|e| e.into_inner());
                    m.entry(entry)
                        .or_insert_with(|| {
                            Arc::new(device.create_shader_module(wgpu::ShaderModuleDescriptor {
                                label: Some("turboquant3d kv_attention.wgsl"),
                                source: wgpu::ShaderSource::Wgsl(attention_source(entry).into()),
                            }))
                        })
                        .clone()
                };
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&self.pipeline_layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[("WG", WG as f64)],
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            },
        )
    }
}

/// A key/value cache resident on the GPU, coded or plain f16, ready to
/// attend queries.
#[derive(Debug)]
pub struct GpuAttention {
    kernels: Arc<AttentionKernels>,
    entry: &'static str,
    heads: Heads,
    params: Params,
    k_data: wgpu::Buffer,
    v_data: wgpu::Buffer,
    dir: wgpu::Buffer,
    tab: wgpu::Buffer,
    cache_bytes: u64,
}

/// The table words of one tensor, appended to `tab`: channel lists,
/// rotations, centroid tables (shared through `cents`), segment records
/// and the head table. Returns the head table's offset.
fn push_tensor(
    tab: &mut Vec<u32>,
    cents: &mut HashMap<(usize, u8), u32>,
    t: &CodedTensor,
) -> Result<u32> {
    let plan = &t.plan;
    let rotations = Rotations::new(&plan.dims(), t.seed)?;
    let mut rots: HashMap<usize, u32> = HashMap::new();
    for d in plan.dims() {
        rots.insert(d, tab.len() as u32);
        tab.extend(rotations.get(d)?.dense_matrix().iter().map(|x| x.to_bits()));
    }
    let units = plan.units();
    let per = units.len();
    let mut used = vec![[false; 9]; per];
    for (u, &w) in t.widths.iter().enumerate() {
        used[u % per][w.min(8) as usize] = true;
    }
    let mut records = Vec::with_capacity(per * SEG);
    let mut unit = 0usize;
    for head in &plan.segments {
        let mut pos = 0u32;
        for ch in head {
            let d = ch.len();
            let channels = tab.len() as u32;
            tab.extend_from_slice(ch);
            let mut rec = [0u32; SEG];
            rec[0] = d as u32;
            rec[1] = pos;
            rec[2] = channels;
            rec[3] = rots.get(&d).copied().unwrap_or(0);
            rec[4] = unit as u32;
            for b in 1..=8u8 {
                if used[unit][b as usize] {
                    let at = match cents.get(&(d, b)) {
                        Some(&at) => at,
                        None => {
                            let at = tab.len() as u32;
                            let c = Codebook::get(d, b as u32)?.centroids_f32();
                            tab.extend(c.iter().map(|x| x.to_bits()));
                            cents.insert((d, b), at);
                            at
                        }
                    };
                    rec[4 + b as usize] = at;
                }
            }
            records.push(rec);
            pos += d as u32;
            unit += 1;
        }
    }
    let first = tab.len() as u32;
    for r in &records {
        tab.extend_from_slice(r);
    }
    let heads = tab.len() as u32;
    let mut rec = first;
    for head in &plan.segments {
        tab.extend_from_slice(&[rec, head.len() as u32]);
        rec += (head.len() * SEG) as u32;
    }
    Ok(heads)
}

/// The directory words of one tensor's units: bit offset, f16 scale and
/// width (see the shader).
fn push_dir(dir: &mut Vec<[u32; 2]>, t: &CodedTensor, what: &str) -> Result<()> {
    let offsets = t.bit_offsets();
    let total = offsets.last().copied().unwrap_or(0);
    if total > (u32::MAX - 64) as u64 {
        return Err(Error::GpuUnsupported(format!(
            "{what}: {total} code bits exceed a 32-bit shader bit offset"
        )));
    }
    for (u, (&w, &s)) in t.widths.iter().zip(&t.scales).enumerate() {
        let s = half::f16::from_f32(s).to_bits() as u32;
        dir.push([offsets[u] as u32, s | (w as u32) << 16]);
    }
    Ok(())
}

fn check_plan(what: &str, t: &CodedTensor, heads: Heads) -> Result<()> {
    if t.plan.heads != heads.heads || t.plan.head_dim != heads.head_dim {
        return Err(Error::Shape(format!(
            "{what}: attention from codes needs per-head coding ({} heads × {}), the tensor \
             is coded as {} × {} (decode whole-width tensors first)",
            heads.heads, heads.head_dim, t.plan.heads, t.plan.head_dim
        )));
    }
    t.validate()
}

impl GpuAttention {
    /// Uploads a coded K and V (coded per attention head, any segments,
    /// plans may differ), checking every buffer against the device's
    /// binding limit. Scales travel as f16, which is what a coded tensor's
    /// scales are (a hand-made scale outside f16 would be rounded).
    pub fn new(
        kernels: &Arc<AttentionKernels>,
        k: &CodedTensor,
        v: &CodedTensor,
        heads: Heads,
    ) -> Result<GpuAttention> {
        check_heads(heads)?;
        check_plan("keys", k, heads)?;
        check_plan("values", v, heads)?;
        if k.tokens != v.tokens || k.tokens == 0 {
            return Err(Error::Shape(format!(
                "keys have {} tokens, values {}: attention needs the same, at least one",
                k.tokens, v.tokens
            )));
        }
        let mut tab = Vec::new();
        let mut cents = HashMap::new();
        let k_heads = push_tensor(&mut tab, &mut cents, k)?;
        let v_heads = push_tensor(&mut tab, &mut cents, v)?;
        let mut mean = |m: &Option<Vec<f32>>| {
            m.as_ref().map_or(NONE, |m| {
                let at = tab.len() as u32;
                tab.extend(m.iter().map(|x| x.to_bits()));
                at
            })
        };
        let (k_mean, v_mean) = (mean(&k.mean), mean(&v.mean));
        let mut dir = Vec::with_capacity(k.widths.len() + v.widths.len());
        push_dir(&mut dir, k, "keys")?;
        push_dir(&mut dir, v, "values")?;
        let params = Params {
            tokens: k.tokens as u32,
            head_dim: heads.head_dim as u32,
            width: heads.width() as u32,
            k_upt: k.units_per_token() as u32,
            v_upt: v.units_per_token() as u32,
            k_heads,
            v_heads,
            k_mean,
            v_mean,
            v_dir: k.widths.len() as u32,
            inv_sqrt: 1.0 / (heads.head_dim as f32).sqrt(),
            ..Default::default()
        };
        let cache_bytes = (k.codes.len() + v.codes.len() + 8 * dir.len()) as u64;
        Self::upload(
            kernels,
            "attend_codes",
            heads,
            params,
            [
                ("key codes", &k.codes),
                ("value codes", &v.codes),
                ("unit directory", bytemuck::cast_slice(&dir)),
                ("segment tables", bytemuck::cast_slice(&tab)),
            ],
            cache_bytes,
        )
    }

    /// Uploads plain K and V (`tokens × heads·head_dim`, row-major) rounded
    /// to f16: the baseline attention from codes is measured against.
    pub fn from_f16(
        kernels: &Arc<AttentionKernels>,
        k: &[f32],
        v: &[f32],
        tokens: usize,
        heads: Heads,
    ) -> Result<GpuAttention> {
        check_heads(heads)?;
        let n = tokens * heads.width();
        if tokens == 0 || k.len() != n || v.len() != n {
            return Err(Error::Shape(format!(
                "{tokens} tokens of width {} need {n} keys and values (at least one token), \
                 got {} and {}",
                heads.width(),
                k.len(),
                v.len()
            )));
        }
        let half = |x: &[f32]| -> Vec<u8> {
            x.iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect()
        };
        let params = Params {
            tokens: tokens as u32,
            head_dim: heads.head_dim as u32,
            width: heads.width() as u32,
            inv_sqrt: 1.0 / (heads.head_dim as f32).sqrt(),
            k_mean: NONE,
            v_mean: NONE,
            ..Default::default()
        };
        Self::upload(
            kernels,
            "attend_f16",
            heads,
            params,
            [
                ("f16 keys", &half(k)),
                ("f16 values", &half(v)),
                ("unit directory", &[0u8; 8]),
                ("segment tables", &[0u8; 4]),
            ],
            4 * n as u64,
        )
    }

    fn upload(
        kernels: &Arc<AttentionKernels>,
        entry: &'static str,
        heads: Heads,
        params: Params,
        data: [(&str, &[u8]); 4],
        cache_bytes: u64,
    ) -> Result<GpuAttention> {
        for (what, bytes) in &data {
            if bytes.len() as u64 > kernels.max_binding {
                return Err(Error::GpuUnsupported(format!(
                    "the {what} take {} bytes, above the device's storage binding limit of {}",
                    bytes.len(),
                    kernels.max_binding
                )));
            }
        }
        let device = &kernels.ctx.device;
        let [k_data, v_data, dir, tab] = scoped(device, "uploading the attention cache", || {
            let mut out = Vec::with_capacity(4);
            for (what, bytes) in &data {
                out.push(init_buffer(
                    device,
                    what,
                    bytes,
                    wgpu::BufferUsages::STORAGE,
                )?);
            }
            out.try_into()
                .map_err(|_| Error::Gpu("uploading the attention cache".into()))
        })?;
        let att = GpuAttention {
            kernels: kernels.clone(),
            entry,
            heads,
            params,
            k_data,
            v_data,
            dir,
            tab,
            cache_bytes,
        };
        kernels.pipeline(entry)?;
        Ok(att)
    }

    /// The shape of the cache.
    pub fn heads(&self) -> Heads {
        self.heads
    }

    /// Tokens in the cache.
    pub fn tokens(&self) -> usize {
        self.params.tokens as usize
    }

    /// Bytes of the cache one workgroup reads: codes and unit directory
    /// (coded), or f16 K and V. Each block of [`QUERIES_PER_WORKGROUP`]
    /// queries reads it once.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// Records attention of `n_queries` queries (`n_queries × heads·head_dim`
    /// f32 in `queries`, from offset 0) into `out` (same shape, f32, needs
    /// `STORAGE`). No submission or readback; the buffers must be on the
    /// device the cache was uploaded to.
    pub fn record_attend(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        queries: &wgpu::Buffer,
        n_queries: usize,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        if n_queries == 0 {
            return Ok(());
        }
        let bytes = 4 * (n_queries as u64) * self.heads.width() as u64;
        for (what, b) in [("queries", queries), ("output", out)] {
            if b.size() < bytes {
                return Err(Error::Shape(format!(
                    "the {what} buffer holds {} bytes, {n_queries} queries need {bytes}",
                    b.size()
                )));
            }
        }
        let k = &self.kernels;
        if bytes > k.max_binding {
            return Err(Error::GpuUnsupported(format!(
                "{n_queries} queries take {bytes} bytes, above the device's storage binding \
                 limit of {} (attend fewer at a time)",
                k.max_binding
            )));
        }
        let limits = k.ctx.device.limits();
        let max_groups = limits.max_compute_workgroups_per_dimension as usize;
        if self.heads.heads > max_groups {
            return Err(Error::GpuUnsupported(format!(
                "{} heads exceed the device's {max_groups} workgroups per dimension",
                self.heads.heads
            )));
        }
        let pipeline = k.pipeline(self.entry)?;
        let blocks = n_queries.div_ceil(QUERIES_PER_WORKGROUP);
        let mut first = 0;
        while first < blocks {
            let n = max_groups.min(blocks - first);
            let params = Params {
                n_queries: n_queries as u32,
                q_base: (first * QUERIES_PER_WORKGROUP) as u32,
                ..self.params
            };
            let uniform = init_buffer(
                &k.ctx.device,
                "turboquant3d attention params",
                bytemuck::bytes_of(&params),
                wgpu::BufferUsages::UNIFORM,
            )?;
            let group = k.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("turboquant3d attention"),
                layout: &k.layout,
                entries: &[
                    whole(0, &uniform),
                    first_bytes(1, queries, bytes),
                    first_bytes(2, out, bytes),
                    whole(3, &self.k_data),
                    whole(4, &self.v_data),
                    whole(5, &self.dir),
                    whole(6, &self.tab),
                ],
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(self.entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(n as u32, self.heads.heads as u32, 1);
            first += n;
        }
        Ok(())
    }

    /// Attends host queries (`n × heads·head_dim`), blocking: uploads them,
    /// records, submits and reads the output back.
    pub fn attend(&self, q: &[f32]) -> Result<Vec<f32>> {
        pollster::block_on(self.attend_async(q))
    }

    /// The async form of [`GpuAttention::attend`].
    pub async fn attend_async(&self, q: &[f32]) -> Result<Vec<f32>> {
        let w = self.heads.width();
        if q.is_empty() || !q.len().is_multiple_of(w) {
            return Err(Error::Shape(format!(
                "queries: {} values are not a positive number of rows of width {w}",
                q.len()
            )));
        }
        if let Some(i) = q.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                row: i / w,
                col: i % w,
                value: q[i],
            });
        }
        let ctx = &self.kernels.ctx;
        let device = &ctx.device;
        let bytes = 4 * q.len();
        scoped_async(device, "attention", async {
            use wgpu::BufferUsages as U;
            let queries = init_buffer(
                device,
                "turboquant3d queries",
                bytemuck::cast_slice(q),
                U::STORAGE,
            )?;
            let out = buffer(
                device,
                "turboquant3d attention",
                bytes,
                U::STORAGE | U::COPY_SRC,
            );
            let readback = buffer(
                device,
                "turboquant3d readback",
                bytes,
                U::MAP_READ | U::COPY_DST,
            );
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("turboquant3d attention"),
            });
            self.record_attend(&mut encoder, &queries, q.len() / w, &out)?;
            encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, bytes as u64);
            ctx.queue.submit([encoder.finish()]);
            let raw = read_buffer(ctx, &readback, bytes as u64).await?;
            Ok(bytemuck::pod_collect_to_vec(&raw))
        })
        .await
    }
}

/// A bind-group entry for the first `bytes` of `buffer`.
fn first_bytes(binding: u32, buffer: &wgpu::Buffer, bytes: u64) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: 0,
            size: wgpu::BufferSize::new(bytes),
        }),
    }
}

fn check_heads(heads: Heads) -> Result<()> {
    if heads.heads == 0 || heads.head_dim == 0 {
        return Err(Error::Shape(
            "attention needs at least one head of one channel".into(),
        ));
    }
    if heads.head_dim > MAX_HEAD_DIM {
        return Err(Error::GpuUnsupported(format!(
            "head_dim {} exceeds the attention kernel's {MAX_HEAD_DIM}",
            heads.head_dim
        )));
    }
    Ok(())
}

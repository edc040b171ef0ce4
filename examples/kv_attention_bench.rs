//! Attention throughput straight from a 4-bit coded KV cache against
//! attention over the same cache in f16, on a slice shaped like one layer
//! of a 24-layer model: 1536 tokens, 16 heads × 64, a block of queries.
//!
//! ```text
//! cargo run --release --example kv_attention_bench -- \
//!     [--device | --device-any] [--queries N] [--reps R] [--inner N]
//! ```
//!
//! The CPU rows time the references (`kv::attention::attend` from codes,
//! `attend_exact` in f64 over f16-rounded K/V): indicative only. With
//! `--device` (a hardware GPU) or `--device-any` (lavapipe too), the GPU
//! rows time `GpuAttention` from codes and over f16: wall time around
//! submit + wait of `--inner` dispatches (default 20), and, when the
//! adapter has `TIMESTAMP_QUERY` (then requested for this device only),
//! GPU time between timestamps written by empty passes around them;
//! medians over the repetitions.
//!
//! "GB/s" counts the cache bytes every workgroup reads (codes and unit
//! directory, or f16 K and V) once per block of 4 queries; with 64 queries
//! most of it is served from cache, so it is a rate, not DRAM bandwidth.

use std::time::Instant;

use turboquant3d::gpu::attention::{AttentionKernels, GpuAttention, QUERIES_PER_WORKGROUP};
use turboquant3d::gpu::{AdapterPolicy, GpuContext};
use turboquant3d::kv::attention::{Heads, attend, attend_exact};
use turboquant3d::kv::coded::round_f16;
use turboquant3d::kv::{CodedTensor, Plan};
use turboquant3d::{Error, Result, wgpu};

const TOKENS: usize = 1536;
const HEADS: Heads = Heads {
    heads: 16,
    head_dim: 64,
};
const BITS: u8 = 4;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up (pipelines, page faults)
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn report(what: &str, seconds: f64, n_q: usize, bytes_per_block: u64) {
    let blocks = n_q.div_ceil(QUERIES_PER_WORKGROUP) as f64;
    println!(
        "{what:<34} {:>10.3} ms  {:>9.2} M token·query/s  {:>8.2} GB/s",
        seconds * 1e3,
        (TOKENS * n_q) as f64 / seconds / 1e6,
        bytes_per_block as f64 * blocks / seconds / 1e9
    );
}

/// The best adapter under `policy` (high performance first), opened with
/// `TIMESTAMP_QUERY` if it has it; whether it does.
fn open(policy: AdapterPolicy) -> Result<(GpuContext, bool)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| Error::Gpu(format!("no GPU adapter: {e}")))?;
    let info = adapter.get_info();
    if policy == AdapterPolicy::HardwareOnly && info.device_type == wgpu::DeviceType::Cpu {
        return Err(Error::Gpu(format!(
            "{} is a software adapter (use --device-any to time it)",
            info.name
        )));
    }
    let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("kv_attention_bench"),
        required_features: features,
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .map_err(|e| Error::Gpu(format!("cannot open {}: {e}", info.name)))?;
    Ok((GpuContext::from_device(device, queue), !features.is_empty()))
}

/// Seconds per attention call: the median wall time, and the GPU times
/// from timestamps when `stamps`.
fn gpu_time(
    ctx: &GpuContext,
    att: &GpuAttention,
    q: &[f32],
    reps: usize,
    inner: usize,
    stamps: bool,
) -> Result<(f64, Vec<f64>)> {
    use wgpu::BufferUsages as U;
    use wgpu::util::DeviceExt;
    let device = &ctx.device;
    let queries = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("queries"),
        contents: bytemuck::cast_slice(q),
        usage: U::STORAGE,
    });
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("out"),
        size: 4 * q.len() as u64,
        usage: U::STORAGE,
        mapped_at_creation: false,
    });
    let timer = stamps.then(|| {
        let set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("attention timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16,
            usage: U::QUERY_RESOLVE | U::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps readback"),
            size: 16,
            usage: U::MAP_READ | U::COPY_DST,
            mapped_at_creation: false,
        });
        (set, resolve, read)
    });
    let period = ctx.queue.get_timestamp_period() as f64 * 1e-9;
    let n_q = q.len() / HEADS.width();
    let mut gpu = Vec::new();
    let wait = || {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(e.to_string()))
    };
    let per_submit = time(reps, || {
        let mut encoder = device.create_command_encoder(&Default::default());
        // An empty pass writes the start, another the end, so the kernels'
        // own passes need no change.
        let mark = |encoder: &mut wgpu::CommandEncoder, start: bool| {
            if let Some((set, _, _)) = &timer {
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("timestamp"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: start.then_some(0),
                        end_of_pass_write_index: (!start).then_some(1),
                    }),
                });
            }
        };
        mark(&mut encoder, true);
        for _ in 0..inner {
            att.record_attend(&mut encoder, &queries, n_q, &out)?;
        }
        mark(&mut encoder, false);
        if let Some((set, resolve, read)) = &timer {
            encoder.resolve_query_set(set, 0..2, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        ctx.queue.submit([encoder.finish()]);
        wait()?;
        if let Some((_, _, read)) = &timer {
            read.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            wait()?;
            let t: Vec<u64> = {
                let view = read
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| Error::Gpu(e.to_string()))?;
                bytemuck::pod_collect_to_vec(&view[..])
            };
            read.unmap();
            gpu.push(t[1].wrapping_sub(t[0]) as f64 * period / inner as f64);
        }
        Ok(())
    })?;
    // The warm-up call's timestamps are dropped like its wall time.
    if !gpu.is_empty() {
        gpu.remove(0);
    }
    Ok((per_submit / inner as f64, gpu))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n_q = value("--queries", 64);
    let reps = value("--reps", 15).max(1);
    let inner = value("--inner", 20).max(1);
    let policy = if args.iter().any(|a| a == "--device-any") {
        Some(AdapterPolicy::AllowSoftware)
    } else if args.iter().any(|a| a == "--device") {
        Some(AdapterPolicy::HardwareOnly)
    } else {
        None
    };

    let w = HEADS.width();
    let mean: Vec<f32> = (0..w).map(|c| (c % 13) as f32 * 0.1 - 0.6).collect();
    let mut kx = gaussian(TOKENS * w, 1);
    for (i, x) in kx.iter_mut().enumerate() {
        *x += mean[i % w];
    }
    let vx = gaussian(TOKENS * w, 2);
    let q = gaussian(n_q * w, 3);
    let units = TOKENS * HEADS.heads;
    let plan = Plan::uniform(HEADS.heads, HEADS.head_dim)?;
    let k = CodedTensor::encode(&kx, TOKENS, plan.clone(), Some(mean), vec![BITS; units], 7)?;
    let v = CodedTensor::encode(&vx, TOKENS, plan, None, vec![BITS; units], 8)?;
    let coded_bytes = (k.codes.len() + v.codes.len() + 8 * 2 * units) as u64;
    let f16_bytes = (4 * TOKENS * w) as u64;
    println!(
        "cache: {TOKENS} tokens, {} heads × {}, {BITS}-bit codes; {n_q} queries; K+V {:.2} MB \
         coded (codes + directory) vs {:.2} MB f16",
        HEADS.heads,
        HEADS.head_dim,
        coded_bytes as f64 / 1e6,
        f16_bytes as f64 / 1e6
    );

    let (k16, v16) = (round_f16(&kx), round_f16(&vx));
    let cpu_reps = reps.min(3);
    let t = time(cpu_reps, || attend(&q, &k, &v, HEADS).map(|_| ()))?;
    report("CPU reference, from codes", t, n_q, coded_bytes);
    let t = time(cpu_reps, || {
        attend_exact(&q, &k16, &v16, TOKENS, HEADS).map(|_| ())
    })?;
    report("CPU reference, f16 (f64 exact)", t, n_q, f16_bytes);

    let Some(policy) = policy else {
        println!("(GPU rows: pass --device, or --device-any to allow a software adapter)");
        return Ok(());
    };
    let (ctx, stamps) = open(policy)?;
    println!(
        "GPU: {}; timestamp queries: {}",
        ctx.describe(),
        if stamps { "yes" } else { "no (wall time only)" }
    );
    let kernels = AttentionKernels::new(ctx.clone())?;
    let coded = GpuAttention::new(&kernels, &k, &v, HEADS)?;
    let plain = GpuAttention::from_f16(&kernels, &kx, &vx, TOKENS, HEADS)?;
    // Interleave the two so that clocks and caches treat them alike.
    let (mut tc, mut tf, mut sc, mut sf) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        let (w, s) = gpu_time(&ctx, &coded, &q, reps, inner, stamps)?;
        tc.push(w);
        sc.extend(s);
        let (w, s) = gpu_time(&ctx, &plain, &q, reps, inner, stamps)?;
        tf.push(w);
        sf.extend(s);
    }
    let (tc, tf) = (median(tc), median(tf));
    report("GPU wall, from codes", tc, n_q, coded.cache_bytes());
    report("GPU wall, f16", tf, n_q, plain.cache_bytes());
    println!("GPU wall time, from codes / f16: {:.2}", tc / tf);
    if stamps && !sc.is_empty() && !sf.is_empty() {
        let (sc, sf) = (median(sc), median(sf));
        report("GPU timestamps, from codes", sc, n_q, coded.cache_bytes());
        report("GPU timestamps, f16", sf, n_q, plain.cache_bytes());
        println!("GPU timestamp time, from codes / f16: {:.2}", sc / sf);
    }
    // The two agree as far as 4-bit coding allows (a sanity check, not a test).
    let (a, b) = (coded.attend(&q)?, plain.attend(&q)?);
    let rms = |x: &[f32]| (x.iter().map(|v| (v * v) as f64).sum::<f64>() / x.len() as f64).sqrt();
    let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    println!(
        "relative RMS difference, codes vs f16 outputs: {:.3}",
        rms(&diff) / rms(&b)
    );
    Ok(())
}

//! GPU codec throughput on the adapter it finds:
//!
//!     cargo run --release --example gpu_bench            # hardware GPU, else any adapter
//!
//! For each workload (1,000,000 × 45 at b = 3, dense; 65,536 × 1024 at b = 4,
//! Hadamard) it reports, as medians of several runs:
//! - kernel time from timestamp queries, when the adapter has them;
//! - device time of the recorded encode/decode on resident buffers (submit
//!   to completion, no transfers);
//! - end to end with uploads and readback (the convenience API).
//!
//! Rates are vectors/s and effective GB/s, counting the bytes the kernel
//! reads and writes. Figures from a software adapter (lavapipe) are a smoke
//! test only.

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::gpu::{
    DataFormat, DecodeBuffers, EncodeBuffers, GpuCodec, GpuContext, GpuQuantizer,
};
use turboquant3d::{Quantizer, QuantizerConfig, RotationKind, wgpu};

const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn open() -> (GpuContext, bool) {
    // Prefer hardware; fall back to any adapter so the example runs anywhere.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .min_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        })
        .expect("no adapter at all");
    // The benchmark owns its device, so it may ask for timestamps; the
    // library itself never requires a feature.
    let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    let timestamps = adapter.features().contains(wanted);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("gpu_bench"),
        required_features: if timestamps {
            wanted
        } else {
            wgpu::Features::empty()
        },
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("device");
    (GpuContext::from_device(device, queue), timestamps)
}

fn wait(ctx: &GpuContext) {
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
}

fn main() {
    let (ctx, timestamps) = open();
    println!(
        "adapter: {}; timestamp queries: {}",
        ctx.describe(),
        if timestamps { "yes" } else { "no" }
    );
    let codec = Arc::new(GpuCodec::new(ctx.clone()));
    let device = &ctx.device;
    for (n, d, bits, kind) in [
        (1_000_000usize, 45usize, 3u32, RotationKind::Dense),
        (65_536, 1024, 4, RotationKind::Hadamard),
    ] {
        let mut cfg = QuantizerConfig::new(d, bits);
        cfg.rotation = kind;
        let q = Quantizer::new(&cfg).unwrap();
        let g: GpuQuantizer = codec.prepare(&q).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();

        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let make = |size: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: size as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        let data = make(4 * n * d);
        ctx.queue.write_buffer(&data, 0, bytemuck::cast_slice(&x));
        let code_bytes = 4 * (n * d * bits as usize).div_ceil(32);
        let codes = make(code_bytes);
        let scales = make(4 * n);
        let out = make(4 * n * d);
        let enc_buffers = EncodeBuffers {
            input: &data,
            input_offset: 0,
            input_stride: d as u64,
            input_format: DataFormat::F32,
            count: n,
            codes: &codes,
            codes_offset: 0,
            scales: &scales,
            scales_offset: 0,
        };
        let dec_buffers = DecodeBuffers {
            codes: &codes,
            codes_offset: 0,
            scales: &scales,
            scales_offset: 0,
            count: n,
            output: &out,
            output_offset: 0,
            output_stride: d as u64,
            output_format: DataFormat::F32,
        };
        let query = timestamps.then(|| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: None,
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            })
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let stamps = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let period = ctx.queue.get_timestamp_period() as f64;

        let moved_encode = (4 * n * d + code_bytes + 4 * n) as f64;
        let moved_decode = moved_encode;
        for (name, moved) in [("encode", moved_encode), ("decode", moved_decode)] {
            let mut device_s = Vec::new();
            let mut kernel_s = Vec::new();
            for _ in 0..RUNS {
                let mut encoder = device.create_command_encoder(&Default::default());
                if let Some(qs) = &query {
                    encoder.write_timestamp(qs, 0);
                }
                if name == "encode" {
                    g.record_encode(&mut encoder, &enc_buffers).unwrap();
                } else {
                    g.record_decode(&mut encoder, &dec_buffers).unwrap();
                }
                if let Some(qs) = &query {
                    encoder.write_timestamp(qs, 1);
                    encoder.resolve_query_set(qs, 0..2, &resolve, 0);
                    encoder.copy_buffer_to_buffer(&resolve, 0, &stamps, 0, 16);
                }
                let t = Instant::now();
                ctx.queue.submit([encoder.finish()]);
                wait(&ctx);
                device_s.push(t.elapsed().as_secs_f64());
                if query.is_some() {
                    stamps
                        .slice(..)
                        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
                    wait(&ctx);
                    let ts: Vec<u64> =
                        bytemuck::cast_slice(&stamps.slice(..).get_mapped_range().unwrap())
                            .to_vec();
                    stamps.unmap();
                    kernel_s.push((ts[1].saturating_sub(ts[0])) as f64 * period * 1e-9);
                }
            }
            let report = |label: &str, s: f64| {
                println!(
                    "  {label:<28} {:>9.3} ms  {:>8.2} M vectors/s  {:>7.1} GB/s",
                    s * 1e3,
                    n as f64 / s / 1e6,
                    moved / s / 1e9
                )
            };
            println!(
                "{name} n = {n}, d = {d}, b = {bits} ({:?} kernel):",
                g.family()
            );
            if !kernel_s.is_empty() {
                report("kernel (timestamps)", median(kernel_s));
            }
            report("device (submit to done)", median(device_s));
        }
        let mut e2e_enc = Vec::new();
        let mut e2e_dec = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let enc = g.encode(&x).unwrap();
            e2e_enc.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            g.decode(&enc).unwrap();
            e2e_dec.push(t.elapsed().as_secs_f64());
        }
        let (e, dd) = (median(e2e_enc), median(e2e_dec));
        println!(
            "  end to end with transfers: encode {:.1} ms ({:.2} M vectors/s), decode {:.1} ms ({:.2} M vectors/s)",
            e * 1e3,
            n as f64 / e / 1e6,
            dd * 1e3,
            n as f64 / dd / 1e6
        );
    }
}

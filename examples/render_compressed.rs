//! A host renderer that keeps SH-rest compressed in VRAM and decodes it in
//! its own shader, next to the same scene with f32 SH-rest:
//!
//!     cargo run --release --example render_compressed -- [--widths] [COUNT] [WIDTH HEIGHT]
//!     WGPU_BACKEND=vulkan cargo run --release --example render_compressed -- 20000
//!
//! It generates a synthetic scene (COUNT Gaussians, default 200 000, SH
//! degree 3), compresses it (b = 3 for every Gaussian; with `--widths`, a
//! width b_i ∈ 0..=8 per Gaussian from `codec::allocate::allocate` over the SH
//! energies γ_i², for the bits of 1.5 per coefficient: N·(45·1.5 + 16)),
//! splits the file with `decompress_split` and uploads the codes, scales,
//! Π and centroids, and the widths (`upload_compressed`); it also uploads
//! the fully decompressed scene (`upload`, f32 SH-rest). Then, for one
//! orbit view, it reports:
//!
//! - GPU memory holding SH-rest on each path;
//! - the median frame time over 10 frames after a warm-up frame, each
//!   frame being one `GpuRenderer::render` call: camera upload, preprocess
//!   dispatch (with the in-shader SH decode on the compressed path), depth
//!   readback, CPU depth sort, raster pass, and readback of the image until
//!   it is on the host;
//! - the max and mean absolute pixel difference and the PSNR between the
//!   two images (which should agree to rounding: both decode the same
//!   codes).
//!
//! The device is opened the way a host would: its own adapter choice
//! (hardware preferred, any adapter otherwise), with `FLOAT32_BLENDABLE`
//! enabled when the adapter has it; the renderer borrows it.

use std::time::Instant;

use turboquant3d::codec::allocate;
use turboquant3d::gpu::GpuContext;
use turboquant3d::render::gpu::{GpuRenderer, GpuSplats};
use turboquant3d::render::{Camera, Image, metrics, orbit};
use turboquant3d::splat::importance::{Weight, importance};
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{self, CompressOptions};
use turboquant3d::wgpu;

const FRAMES: usize = 10;

fn open() -> GpuContext {
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
        .expect("no GPU adapter at all (set WGPU_BACKEND=vulkan for lavapipe)");
    let features = adapter.features() & wgpu::Features::FLOAT32_BLENDABLE;
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("render_compressed host"),
        required_features: features,
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .expect("device");
    println!(
        "device: {} ({:?}, {:?})",
        info.name, info.device_type, info.backend
    );
    GpuContext::from_device(device, queue)
}

/// Renders a warm-up frame, then FRAMES timed frames; the last image and
/// the median time in milliseconds.
fn time_frames(r: &GpuRenderer, splats: &GpuSplats, cam: &Camera) -> (Image, f64) {
    let bg = [0.0; 3];
    let mut image = r.render(splats, cam, bg).expect("render");
    let mut times: Vec<f64> = (0..FRAMES)
        .map(|_| {
            let t = Instant::now();
            image = r.render(splats, cam, bg).expect("render");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (image, times[FRAMES / 2])
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let per_gaussian = args.iter().any(|a| a == "--widths");
    args.retain(|a| a != "--widths");
    let arg = |i: usize, default: usize| -> usize {
        args.get(i)
            .map(|s| {
                s.parse()
                    .expect("arguments: [--widths] [COUNT] [WIDTH HEIGHT]")
            })
            .unwrap_or(default)
    };
    let count = arg(0, 200_000);
    let (width, height) = (arg(1, 800) as u32, arg(2, 600) as u32);

    let t = Instant::now();
    let scene = generate(&SynthConfig {
        count,
        sh_degree: 3,
        seed: 7,
    });
    println!(
        "scene: {count} Gaussians, SH degree 3 (generated in {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut opts = CompressOptions {
        sh_bits: 3,
        ..CompressOptions::default()
    };
    let mode = if per_gaussian {
        // v_i = γ_i², budget N·(45·1.5 + 16) bits (codes and f16 scales).
        let values = importance(&scene, 3, Weight::Energy, None).expect("importance");
        let budget = (count as f64 * (45.0 * 1.5 + 16.0)) as u64;
        let a = allocate::allocate(&values, 45, 16, budget, 8).expect("allocate");
        let mut histogram = [0usize; 9];
        for &b in &a.widths {
            histogram[b as usize] += 1;
        }
        println!(
            "widths: {:.3} code bits per coefficient on average, Gaussians per width 0..=8: {histogram:?}",
            a.widths.iter().map(|&b| b as f64).sum::<f64>() / count.max(1) as f64
        );
        opts.sh_widths = Some(a.widths);
        "per-Gaussian widths, 1.5 bits on average"
    } else {
        "b = 3"
    };
    let bytes = splat::compress(&scene, &opts)
        .and_then(|c| c.to_bytes())
        .expect("compress");
    let path = std::path::Path::new("synthetic.tq3s");
    let (split, sh) = splat::decompress_split(&bytes, path).expect("decompress_split");
    let sh = sh.expect("the scene has SH-rest");
    let full = splat::decompress(&bytes, path).expect("decompress");
    println!(
        "compressed: {:.2} MiB file ({mode}), split and decompressed in {:.2} s",
        mib(bytes.len() as u64),
        t.elapsed().as_secs_f64()
    );

    let ctx = open();
    let r = GpuRenderer::new(&ctx).expect("renderer");
    println!("render target: {:?}", r.target_format());
    let compressed = r.upload_compressed(&split, &sh).expect("upload_compressed");
    let plain = r.upload(&full).expect("upload");
    println!(
        "SH-rest in VRAM: compressed {:.2} MiB ({} B; codes + f16 scales + Π + centroids + widths), fp32 {:.2} MiB ({:.1}× smaller)",
        mib(compressed.sh_bytes()),
        compressed.sh_bytes(),
        mib(plain.sh_bytes()),
        plain.sh_bytes() as f64 / compressed.sh_bytes() as f64
    );

    let cam = orbit(&full.positions, 1, width, height).remove(0);
    let (img_c, ms_c) = time_frames(&r, &compressed, &cam);
    let (img_p, ms_p) = time_frames(&r, &plain, &cam);
    println!(
        "frame time, median of {FRAMES} at {width}×{height} (one render call: preprocess, depth readback, CPU sort, raster, image readback):"
    );
    println!("  compressed SH (decoded in the shader): {ms_c:.2} ms");
    println!("  fp32 SH:                               {ms_p:.2} ms");

    let n = img_c.data.len() as f64;
    let max = img_c
        .data
        .iter()
        .zip(&img_p.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let mean = img_c
        .data
        .iter()
        .zip(&img_p.data)
        .map(|(a, b)| (a - b).abs() as f64)
        .sum::<f64>()
        / n;
    let psnr = metrics::psnr(&img_c, &img_p).expect("psnr");
    let lit = img_p.data.iter().filter(|v| **v > 1e-3).count() as f64 / n;
    println!(
        "compressed vs fp32 image: max |Δ| {max:.3e}, mean |Δ| {mean:.3e}, PSNR {psnr:.1} dB ({:.0} % of channels lit)",
        100.0 * lit
    );
}

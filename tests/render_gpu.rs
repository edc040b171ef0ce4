//! The wgpu renderer against the CPU reference (`render::cpu`), the
//! compressed path (SH-rest decoded in the shader) against rendering the
//! decompressed scene, and the renderer on a lost device and at its limits.
//! The WGSL checks, which need no adapter, are in tests/shaders_naga.rs.
//!
//! Locally, a machine with no adapter notes a skip; under CI (or with
//! REQUIRE_GPU=1) a missing adapter fails. The f32-target variant needs an
//! adapter with FLOAT32_BLENDABLE: the log says whether it ran or was
//! skipped.
//!
//! Tolerances (derived in docs/THEORY.md §13, which names the test that
//! checks each):
//!
//! - preprocess: every field within 1e-4 relative (|g − c| ≤ 1e-4·max(1,
//!   |c|); the conic relative to its largest entry, widened to κ·1e-6 for
//!   ill-conditioned 2D covariances, κ = a·c/det, since det = a·c − b²
//!   cancels). Both sides are f32 with the same operation order, so the
//!   differences are a few ulps from FMA contraction and exp/sqrt
//!   implementations: ≤ 5e-5 measured on lavapipe. Radius and culling must
//!   agree except at most 2 splats per view (ceil or the screen test at a
//!   rounding boundary; 0 measured).
//! - render with an f32 target: the early stop the GPU cannot make costs at
//!   most T_s·max|colour − bg| per pixel with T_s < 1e-4/(1 − α_s) ≤ 1e-2;
//!   colours here are ≤ 2, so max 2e-2; it touches few pixels, so mean 5e-5
//!   (measured: max 4e-3, mean 5e-6).
//! - render with the f16 target: each blend rounds C and A to binary16
//!   (2⁻¹¹ relative), growing with the number of fragments per pixel (tens
//!   here): max 3e-2, mean 2e-3 (measured: max 7e-3, mean 6e-4).
//! - compressed vs decompressed: the same attributes, SH-rest decoded in the
//!   shader (x = s·Πᵀ·c in f32, summed in the CPU decoder's j order; FMA
//!   contraction may differ), so colours agree to 1e-5 and the images to
//!   max 1e-3, mean 1e-5 (measured on lavapipe: bit-identical). The same
//!   holds with a SH-rest width per Gaussian (0..=8, 0 decoding to zeros).

mod common;

use std::sync::{Arc, OnceLock};

use common::gpu::{context, note, ran, skipped};
use glam::Vec3;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use turboquant3d::Error;
use turboquant3d::gpu::GpuContext;
use turboquant3d::render::gpu::GpuRenderer;
use turboquant3d::render::{Camera, Image, Splat2D, cpu};
use turboquant3d::splat::container::Profile;
use turboquant3d::splat::{self, CompressOptions};
use turboquant3d::splat::{Scene, rest_dim};
use turboquant3d::wgpu;

/// The shared device of `common::gpu::context`: no features, so an
/// `Rgba16Float` target unless the platform enables float32 blending by
/// itself.
fn renderer() -> Option<Arc<GpuRenderer>> {
    static R: OnceLock<Option<Arc<GpuRenderer>>> = OnceLock::new();
    R.get_or_init(|| {
        let r = GpuRenderer::new(&context()?).expect("renderer");
        note(&format!(
            "render_gpu: the shared device renders to {:?}",
            r.target_format()
        ));
        Some(Arc::new(r))
    })
    .clone()
}

/// A device of its own, as a host would open it: the first adapter with
/// `features` (from `WGPU_BACKEND`), with those features and `limits`.
/// `None` when no adapter has them.
fn host_device(
    features: wgpu::Features,
    limits: wgpu::Limits,
) -> Option<(wgpu::Device, wgpu::Queue)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .find(|a| a.features().contains(features))?;
    let device = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("render_gpu host"),
        required_features: features,
        required_limits: limits,
        ..Default::default()
    }))
    .expect("device");
    Some(device)
}

/// A renderer on a host device with default limits and no features.
fn host_renderer() -> GpuRenderer {
    let (device, queue) =
        host_device(wgpu::Features::empty(), wgpu::Limits::default()).expect("an adapter");
    GpuRenderer::new(&GpuContext::from_device(device, queue)).expect("renderer")
}

/// A host-style device with `FLOAT32_BLENDABLE` enabled (an `Rgba32Float`
/// target), or why there is none.
fn renderer_f32() -> Result<Arc<GpuRenderer>, String> {
    static R: OnceLock<Result<Arc<GpuRenderer>, String>> = OnceLock::new();
    R.get_or_init(|| {
        let Some((device, queue)) =
            host_device(wgpu::Features::FLOAT32_BLENDABLE, wgpu::Limits::default())
        else {
            return Err("no adapter with FLOAT32_BLENDABLE".into());
        };
        let r = GpuRenderer::new(&GpuContext::from_device(device, queue)).expect("renderer");
        assert_eq!(r.target_format(), wgpu::TextureFormat::Rgba32Float);
        Ok(Arc::new(r))
    })
    .clone()
}

/// The f32-target renderer for `variant`, noting in the log whether the
/// variant ran or was skipped. `None` also when there is no adapter at all
/// (already noted, or a failure under CI).
fn f32_variant(variant: &str) -> Option<Arc<GpuRenderer>> {
    renderer()?;
    match renderer_f32() {
        Ok(r) => {
            ran(&format!("render_gpu {variant}, Rgba32Float target"));
            Some(r)
        }
        Err(why) => {
            skipped(&format!("render_gpu {variant}, Rgba32Float target"), &why);
            None
        }
    }
}

/// A random scene: positions in a box in front of the camera (some behind
/// it and off-screen), anisotropic log scales, random unnormalised
/// quaternions (one zero), opacities across the range, SH of `degree`.
fn random_scene(n: usize, degree: u8, seed: u64, box_half: f32, log_scale_mean: f32) -> Scene {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = || -> f32 { StandardNormal.sample(&mut rng) };
    let mut scene = Scene {
        sh_degree: degree,
        ..Scene::default()
    };
    let d = rest_dim(degree);
    for i in 0..n {
        scene
            .positions
            .push([g() * box_half, g() * box_half, g() * box_half]);
        // Anisotropic: the three axes spread by e^±1.5 around the mean.
        scene.scales.push([
            log_scale_mean + 0.8 * g(),
            log_scale_mean + 0.8 * g(),
            log_scale_mean + 0.8 * g(),
        ]);
        let q = [g(), g(), g(), g()];
        let f = 0.5 + g().abs();
        scene
            .rotations
            .push(if i == 7 { [0.0; 4] } else { q.map(|v| v * f) });
        scene.opacity.push(1.5 * g() + 1.0);
        scene.dc.push([0.8 * g(), 0.8 * g(), 0.8 * g()]);
        for _ in 0..d {
            let v = 0.15 * g();
            scene.sh_rest.push(v);
        }
    }
    scene
}

fn camera(w: u32, h: u32) -> Camera {
    Camera::look_at(
        "test".into(),
        Vec3::new(0.8, -1.5, -6.0),
        Vec3::new(0.0, 0.0, 0.0),
        Vec3::NEG_Y,
        50f32.to_radians(),
        w,
        h,
    )
}

/// Relative tolerance of the preprocess comparison.
const PRE_REL: f32 = 1e-4;

/// Largest |g − c| / max(scale, |c|).
fn rel(g: f32, c: f32, scale: f32) -> f32 {
    (g - c).abs() / scale.max(c.abs())
}

/// Compares GPU and CPU splats: every field within [`PRE_REL`]. Returns
/// the number that differ in culling or radius (allowed only where the
/// value sits within rounding of a threshold, which the caller bounds) and
/// the largest relative difference of the others.
fn compare_splats(gpu: &[Splat2D], cpu: &[Splat2D], what: &str) -> (usize, f32) {
    assert_eq!(gpu.len(), cpu.len());
    let mut flips = 0;
    let mut worst = 0f32;
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        if g.radius != c.radius {
            // ceil(3·√λ) at an integer, or the screen test at its edge.
            assert!(
                (g.radius - c.radius).abs() <= 1.0 || c.radius == 0.0 || g.radius == 0.0,
                "{what}: splat {i} radius {} vs {}",
                g.radius,
                c.radius
            );
            flips += 1;
            continue;
        }
        if c.radius == 0.0 {
            assert_eq!(g, c, "{what}: culled splat {i} is all zero");
            continue;
        }
        // The conic is (c, −b, a)/det with det = a·c − b², which cancels
        // for thin splats: all three entries share a relative error of about
        // κ·2⁻²⁴ with κ = a·c/det = conic₀·conic₂/(conic₀·conic₂ − conic₁²).
        // They are compared relative to the largest entry, with the
        // tolerance widened to κ·10⁻⁶ where that exceeds 10⁻⁴ (κ reaches a
        // few hundred for needle-like splats here).
        let [c0, c1, c2] = c.conic.map(f64::from);
        let kappa = (c0 * c2 / (c0 * c2 - c1 * c1)).abs() as f32;
        let conic_scale =
            c.conic.iter().fold(0f32, |m, v| m.max(v.abs())) * (kappa * 1e-6 / PRE_REL).max(1.0);
        let errs = [
            rel(g.mean[0], c.mean[0], 1.0),
            rel(g.mean[1], c.mean[1], 1.0),
            rel(g.depth, c.depth, 1.0),
            rel(g.conic[0], c.conic[0], conic_scale),
            rel(g.conic[1], c.conic[1], conic_scale),
            rel(g.conic[2], c.conic[2], conic_scale),
            rel(g.opacity, c.opacity, 1.0),
            rel(g.color[0], c.color[0], 1.0),
            rel(g.color[1], c.color[1], 1.0),
            rel(g.color[2], c.color[2], 1.0),
        ];
        let e = errs.iter().fold(0f32, |m, v| m.max(*v));
        assert!(
            e <= PRE_REL,
            "{what}: splat {i} differs by {e:e}\n gpu {g:?}\n cpu {c:?}"
        );
        worst = worst.max(e);
    }
    (flips, worst)
}

#[test]
fn preprocess_matches_the_cpu_reference_for_every_sh_degree() {
    let Some(r) = renderer() else { return };
    for degree in 0..=3u8 {
        let scene = random_scene(3000, degree, 11 + degree as u64, 2.5, -2.5);
        let splats = r.upload(&scene).unwrap();
        assert_eq!(splats.len(), 3000);
        assert_eq!(splats.sh_bytes(), (4 * 3000 * rest_dim(degree)) as u64);
        for cam in [camera(64, 48), camera(200, 120)] {
            let gpu = r.preprocess(&splats, &cam).unwrap();
            let cpu = cpu::preprocess_all(&scene, &cam);
            let visible = cpu.iter().filter(|s| s.radius > 0.0).count();
            let culled = cpu.len() - visible;
            assert!(
                visible > 1000 && culled > 100,
                "degree {degree}: {visible} visible, {culled} culled"
            );
            let what = format!("degree {degree} {}×{}", cam.width, cam.height);
            let (flips, worst) = compare_splats(&gpu, &cpu, &what);
            eprintln!(
                "preprocess {what}: {visible} visible, largest relative difference {worst:.1e}, {flips} radius flips"
            );
            assert!(
                flips <= 2,
                "degree {degree}: {flips} radius/culling differences"
            );
        }
    }
}

/// Max and mean absolute difference over all channels.
fn diff(a: &Image, b: &Image) -> (f32, f32) {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let max = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let mean = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs() as f64)
        .sum::<f64>()
        / a.data.len() as f64;
    (max, mean as f32)
}

/// Render tolerances (max, mean) per target format; see the module docs.
fn render_tolerance(format: wgpu::TextureFormat) -> (f32, f32) {
    match format {
        // Early stop: T_s·max|colour − bg| ≤ 1e-2·2 for the colours
        // here (≤ 2); plus a few ulps.
        wgpu::TextureFormat::Rgba32Float => (2e-2, 5e-5),
        // f16: 2⁻¹¹ relative per blend over up to ~30 blends of colours ≤ 2,
        // on top of the early stop.
        _ => (3e-2, 2e-3),
    }
}

fn check_render_against_cpu(r: &GpuRenderer) {
    let bg = [0.2, 0.3, 0.1];
    let mut worst = (0f32, 0f32);
    for degree in 0..=3u8 {
        // A few hundred overlapping Gaussians, large enough to cover many
        // pixels each.
        let scene = random_scene(400, degree, 100 + degree as u64, 1.2, -2.0);
        let splats = r.upload(&scene).unwrap();
        for cam in [camera(64, 48), camera(97, 61)] {
            let gpu = r.render(&splats, &cam, bg).unwrap();
            let cpu = cpu::render(&scene, &cam, bg);
            let (max, mean) = diff(&gpu, &cpu);
            let covered = cpu
                .data
                .chunks(3)
                .filter(|p| (p[0] - bg[0]).abs() > 1e-3)
                .count();
            eprintln!(
                "{:?} degree {degree} {}×{}: max |Δ| {max:.2e}, mean {mean:.2e}, {covered} covered pixels",
                r.target_format(),
                cam.width,
                cam.height
            );
            assert!(
                covered > (cam.width * cam.height / 2) as usize,
                "the scene must cover the image"
            );
            let (tmax, tmean) = render_tolerance(r.target_format());
            assert!(
                max <= tmax && mean <= tmean,
                "degree {degree}: max {max} (≤ {tmax}), mean {mean} (≤ {tmean})"
            );
            worst = (worst.0.max(max), worst.1.max(mean));
        }
    }
    eprintln!(
        "{:?}: worst max {:.2e}, worst mean {:.2e}",
        r.target_format(),
        worst.0,
        worst.1
    );
}

#[test]
fn render_matches_the_cpu_reference() {
    let Some(r) = renderer() else { return };
    check_render_against_cpu(&r);
}

#[test]
fn render_with_an_f32_target_matches_the_cpu_reference() {
    let Some(r) = f32_variant("render vs the CPU") else {
        return;
    };
    check_render_against_cpu(&r);
}

#[test]
fn empty_scene_and_empty_view_give_the_background() {
    let Some(r) = renderer() else { return };
    let bg = [0.25, 0.5, 0.75];
    let empty = r.upload(&Scene::default()).unwrap();
    assert!(empty.is_empty());
    let img = r.render(&empty, &camera(16, 8), bg).unwrap();
    assert!(img.data.chunks(3).all(|p| p == bg));
    // Everything behind the camera.
    let mut scene = random_scene(50, 1, 3, 0.1, -2.0);
    for p in &mut scene.positions {
        p[2] -= 20.0;
    }
    let splats = r.upload(&scene).unwrap();
    assert!(
        r.preprocess(&splats, &camera(16, 8))
            .unwrap()
            .iter()
            .all(|s| s.radius == 0.0)
    );
    let img = r.render(&splats, &camera(16, 8), bg).unwrap();
    assert!(img.data.chunks(3).all(|p| p == bg));
}

fn check_compressed(r: &GpuRenderer, degree: u8, n: usize, sign_flip: bool) {
    let scene = random_scene(n, degree, 40 + degree as u64, 1.2, -2.0);
    let opts = CompressOptions {
        sh_bits: 3,
        sign_flip,
        ..CompressOptions::default()
    };
    let bytes = splat::compress(&scene, &opts).unwrap().to_bytes().unwrap();
    let path = std::path::Path::new("test.tq3s");
    let (split, sh) = splat::decompress_split(&bytes, path).unwrap();
    let sh = sh.expect("the file has SH-rest");
    assert!(split.sh_rest.is_empty());
    let full = splat::decompress(&bytes, path).unwrap();
    let compressed = r.upload_compressed(&split, &sh).unwrap();
    let plain = r.upload(&full).unwrap();
    assert!(compressed.is_compressed() && !plain.is_compressed());
    assert!(
        compressed.sh_bytes() * 5 < plain.sh_bytes(),
        "compressed SH {} bytes vs f32 {}",
        compressed.sh_bytes(),
        plain.sh_bytes()
    );
    let cam = camera(64, 48);
    // The decoded colours agree with the CPU decoder's to f32 rounding.
    let a = r.preprocess(&compressed, &cam).unwrap();
    let b = r.preprocess(&plain, &cam).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.radius, y.radius, "splat {i}");
        assert_eq!(x.mean, y.mean, "splat {i}");
        for k in 0..3 {
            assert!(
                (x.color[k] - y.color[k]).abs() <= 1e-5,
                "splat {i}: {:?} vs {:?}",
                x.color,
                y.color
            );
        }
    }
    let bg = [0.1, 0.1, 0.1];
    let ia = r.render(&compressed, &cam, bg).unwrap();
    let ib = r.render(&plain, &cam, bg).unwrap();
    let (max, mean) = diff(&ia, &ib);
    eprintln!(
        "{:?} compressed vs decompressed, degree {degree}: max {max:.2e}, mean {mean:.2e}",
        r.target_format()
    );
    assert!(
        max <= 1e-3 && mean <= 1e-5,
        "degree {degree}: max {max}, mean {mean}"
    );
    // The decoded SH-rest matters: without it (the split scene at degree 0)
    // the image is visibly different.
    let no_sh = r.upload(&split).unwrap();
    assert_eq!(no_sh.sh_bytes(), 0);
    let (max_no_sh, _) = diff(&ia, &r.render(&no_sh, &cam, bg).unwrap());
    assert!(
        max_no_sh > 0.05,
        "degree {degree}: SH-rest changes the image by only {max_no_sh}"
    );
    // And the decompressed scene on the CPU, for scale.
    let (max_cpu, _) = diff(&ib, &cpu::render(&full, &cam, bg));
    let (tmax, _) = render_tolerance(r.target_format());
    assert!(max_cpu <= tmax);
}

#[test]
fn compressed_sh_decoded_in_the_shader_matches_the_decompressed_scene() {
    let Some(r) = renderer() else { return };
    for degree in 1..=3u8 {
        check_compressed(&r, degree, 500, true);
    }
    // Without the SH sign flip (TQ_FLIP = 0).
    check_compressed(&r, 3, 500, false);
    if let Some(r) = f32_variant("compressed SH-rest") {
        check_compressed(&r, 3, 500, true);
    }
}

/// A file with a SH-rest width per Gaussian, `widths` in input order (the
/// exact profile keeps the input order and the attributes bit-exact).
fn compress_with_widths(scene: &Scene, widths: Vec<u8>) -> Vec<u8> {
    let opts = CompressOptions {
        sh_widths: Some(widths),
        profile: Profile::Exact,
        ..CompressOptions::default()
    };
    splat::compress(scene, &opts).unwrap().to_bytes().unwrap()
}

fn check_per_gaussian_widths(r: &GpuRenderer, degree: u8, n: usize) {
    let scene = random_scene(n, degree, 60 + degree as u64, 1.2, -2.0);
    // Every width 0..=8, interleaved (0 drops the SH-rest).
    let widths: Vec<u8> = (0..n).map(|i| (i * 7 % 9) as u8).collect();
    let bytes = compress_with_widths(&scene, widths.clone());
    let path = std::path::Path::new("widths.tq3s");
    let (split, sh) = splat::decompress_split(&bytes, path).unwrap();
    let sh = sh.expect("the file has SH-rest");
    assert_eq!(sh.uniform, None);
    assert_eq!(sh.widths, widths, "the exact profile keeps the order");
    let full = splat::decompress(&bytes, path).unwrap();
    let d = rest_dim(degree);
    for (i, &b) in widths.iter().enumerate() {
        let zero = full.sh_rest[i * d..(i + 1) * d].iter().all(|&v| v == 0.0);
        assert_eq!(zero, b == 0, "Gaussian {i}, width {b}");
    }
    let compressed = r.upload_compressed(&split, &sh).unwrap();
    let plain = r.upload(&full).unwrap();
    assert!(compressed.is_compressed());
    // codes (d·Σb bits), f16 scales, 1 byte of widths per Gaussian, Π and
    // the centroids of widths 1..=8 (2^9 − 2).
    let sum_b: u64 = widths.iter().map(|&b| b as u64).sum();
    let words = |bytes: u64| bytes.div_ceil(4).max(1) * 4;
    let expected = words((d as u64 * sum_b).div_ceil(8))
        + words(2 * n as u64)
        + 8 * n.div_ceil(8) as u64
        + 4 * (d * d) as u64
        + 4 * 510;
    assert_eq!(compressed.sh_bytes(), expected);
    eprintln!(
        "per-Gaussian widths, degree {degree}, {n} Gaussians: SH-rest in VRAM {} bytes compressed vs {} f32",
        compressed.sh_bytes(),
        plain.sh_bytes()
    );

    let cam = camera(64, 48);
    // The GPU-decoded colours against the CPU reference on the
    // decompressed scene (CompressedSh::decode), and against the GPU with
    // f32 SH-rest.
    let a = r.preprocess(&compressed, &cam).unwrap();
    let cpu_splats = cpu::preprocess_all(&full, &cam);
    let (flips, worst) = compare_splats(&a, &cpu_splats, "per-Gaussian widths");
    assert!(flips <= 2, "{flips} radius/culling differences");
    let b = r.preprocess(&plain, &cam).unwrap();
    let mut visible = [0usize; 9];
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.radius, y.radius, "splat {i}");
        assert_eq!(x.mean, y.mean, "splat {i}");
        for k in 0..3 {
            assert!(
                (x.color[k] - y.color[k]).abs() <= 1e-5,
                "splat {i} (b = {}): {:?} vs {:?}",
                widths[i],
                x.color,
                y.color
            );
        }
        if x.radius > 0.0 {
            visible[widths[i] as usize] += 1;
        }
    }
    assert!(
        visible.iter().all(|&v| v >= 10),
        "visible splats per width: {visible:?}"
    );
    eprintln!("  colours vs CPU: largest relative difference {worst:.1e}");

    let bg = [0.1, 0.1, 0.1];
    let ia = r.render(&compressed, &cam, bg).unwrap();
    let ib = r.render(&plain, &cam, bg).unwrap();
    let (max, mean) = diff(&ia, &ib);
    eprintln!(
        "  {:?} compressed vs decompressed: max {max:.2e}, mean {mean:.2e}",
        r.target_format()
    );
    assert!(
        max <= 1e-3 && mean <= 1e-5,
        "degree {degree}: max {max}, mean {mean}"
    );
    let no_sh = r.upload(&split).unwrap();
    let (max_no_sh, _) = diff(&ia, &r.render(&no_sh, &cam, bg).unwrap());
    assert!(
        max_no_sh > 0.05,
        "degree {degree}: SH-rest changes the image by only {max_no_sh}"
    );
    let (max_cpu, _) = diff(&ib, &cpu::render(&full, &cam, bg));
    assert!(max_cpu <= render_tolerance(r.target_format()).0);

    // Every width 0: the shader decodes zeros, the image is the one
    // without SH-rest.
    let bytes = compress_with_widths(&scene, vec![0; n]);
    let (split0, sh0) = splat::decompress_split(&bytes, path).unwrap();
    let zero = r.upload_compressed(&split0, &sh0.unwrap()).unwrap();
    let i0 = r.render(&zero, &cam, bg).unwrap();
    let (max0, mean0) = diff(&i0, &r.render(&no_sh, &cam, bg).unwrap());
    assert!(max0 <= 1e-6 && mean0 <= 1e-7, "all widths 0: max {max0}");
    // One width for all, in the per-Gaussian file mode: the uniform
    // decode, no width buffer.
    let bytes = compress_with_widths(&scene, vec![4; n]);
    let (split4, sh4) = splat::decompress_split(&bytes, path).unwrap();
    let sh4 = sh4.unwrap();
    assert_eq!(sh4.uniform, None);
    let four = r.upload_compressed(&split4, &sh4).unwrap();
    assert_eq!(
        four.sh_bytes(),
        words((d * 4 * n) as u64 / 8) + words(2 * n as u64) + 4 + 4 * (d * d) as u64 + 4 * 16
    );
    let full4 = splat::decompress(&bytes, path).unwrap();
    let (max4, _) = diff(
        &r.render(&four, &cam, bg).unwrap(),
        &r.render(&r.upload(&full4).unwrap(), &cam, bg).unwrap(),
    );
    assert!(max4 <= 1e-3, "all widths 4: max {max4}");
}

#[test]
fn per_gaussian_sh_widths_decoded_in_the_shader_match_the_decompressed_scene() {
    let Some(r) = renderer() else { return };
    for degree in 1..=3u8 {
        check_per_gaussian_widths(&r, degree, 500);
    }
    if let Some(r) = f32_variant("per-Gaussian SH-rest widths") {
        check_per_gaussian_widths(&r, 3, 500);
    }
}

#[test]
fn upload_checks_shapes() {
    let Some(r) = renderer() else { return };
    let mut scene = random_scene(10, 2, 1, 1.0, -2.0);
    scene.sh_rest.pop();
    assert!(r.upload(&scene).is_err());
}

/// `out` must be `Err(Error::Gpu(..))`.
fn expect_gpu_error<T: std::fmt::Debug>(out: turboquant3d::Result<T>, what: &str) {
    match out {
        Err(Error::Gpu(m)) => eprintln!("{what}: {m}"),
        other => panic!("{what}: expected Error::Gpu, got {other:?}"),
    }
}

/// A small scene with SH degree 1 and its compressed split (attributes,
/// compressed SH-rest).
fn lost_device_scene() -> (Scene, Scene, splat::sh::CompressedSh) {
    let scene = random_scene(300, 1, 5, 1.2, -2.0);
    let opts = CompressOptions {
        sh_bits: 3,
        ..CompressOptions::default()
    };
    let bytes = splat::compress(&scene, &opts).unwrap().to_bytes().unwrap();
    let (split, sh) = splat::decompress_split(&bytes, std::path::Path::new("lost.tq3s")).unwrap();
    (scene, split, sh.expect("the file has SH-rest"))
}

/// A renderer whose device is destroyed returns `Error::Gpu` from every
/// call, wherever the loss falls: before the upload, after it (before the
/// pipelines are compiled), and mid-frame (pipelines cached, target made).
/// The device is the test's own, so the other tests' shared device lives on.
#[test]
fn a_lost_device_gives_errors_not_panics() {
    if renderer().is_none() {
        return;
    }
    let (scene, split, sh) = lost_device_scene();
    let (cam, bg) = (camera(32, 24), [0.1, 0.2, 0.3]);

    // Lost before the upload.
    let r = host_renderer();
    r.context().device.destroy();
    expect_gpu_error(r.upload(&scene), "upload on a lost device");
    expect_gpu_error(
        r.upload_compressed(&split, &sh),
        "compressed upload on a lost device",
    );

    // Lost after the upload, before the first frame.
    let r = host_renderer();
    let plain = r.upload(&scene).unwrap();
    let packed = r.upload_compressed(&split, &sh).unwrap();
    r.context().device.destroy();
    expect_gpu_error(r.render(&plain, &cam, bg), "first frame on a lost device");
    expect_gpu_error(
        r.render(&packed, &cam, bg),
        "first compressed frame on a lost device",
    );
    expect_gpu_error(r.preprocess(&plain, &cam), "preprocess on a lost device");

    // Lost mid-frame: after frames that compiled the pipelines and made the
    // target, at the same size and at a new one.
    let r = host_renderer();
    let plain = r.upload(&scene).unwrap();
    let packed = r.upload_compressed(&split, &sh).unwrap();
    let before = r.render(&plain, &cam, bg).unwrap();
    r.render(&packed, &cam, bg).unwrap();
    assert!(
        before.data.chunks(3).any(|p| p != bg),
        "the scene is visible"
    );
    r.context().device.destroy();
    expect_gpu_error(r.render(&plain, &cam, bg), "next frame on a lost device");
    expect_gpu_error(
        r.render(&packed, &cam, bg),
        "next compressed frame on a lost device",
    );
    expect_gpu_error(
        r.render(&plain, &camera(40, 30), bg),
        "a new size on a lost device",
    );
    expect_gpu_error(r.preprocess(&packed, &cam), "preprocess on a lost device");
    expect_gpu_error(r.upload(&scene), "upload on a lost device");
}

/// The device lost while frames are being rendered, from another thread:
/// every frame is an image or `Error::Gpu`, and once the device is gone
/// frames fail.
#[test]
fn a_device_lost_during_rendering_gives_errors_not_panics() {
    if renderer().is_none() {
        return;
    }
    let (scene, split, sh) = lost_device_scene();
    let (cam, bg) = (camera(32, 24), [0.1, 0.2, 0.3]);
    let r = host_renderer();
    let plain = r.upload(&scene).unwrap();
    let packed = r.upload_compressed(&split, &sh).unwrap();
    let expected = r.render(&plain, &cam, bg).unwrap();
    let lost = std::sync::atomic::AtomicBool::new(false);
    let (mut frames, mut errors) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            r.context().device.destroy();
            lost.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        loop {
            let done = lost.load(std::sync::atomic::Ordering::SeqCst);
            for splats in [&plain, &packed] {
                match r.render(splats, &cam, bg) {
                    Ok(image) => {
                        assert!(!done, "a frame rendered after the device was destroyed");
                        if std::ptr::eq(splats, &plain) {
                            assert_eq!(image, expected, "a frame before the loss");
                        }
                        frames += 1;
                    }
                    Err(Error::Gpu(_)) => errors += 1,
                    Err(e) => panic!("a frame on a lost device: {e:?}"),
                }
            }
            if done {
                break;
            }
        }
    });
    assert!(errors >= 2, "{frames} frames, {errors} errors");
    eprintln!("device lost while rendering: {frames} frames, then {errors} errors");
}

/// A scene whose buffers exceed the device's binding limit is unsupported
/// (docs/THEORY.md §13, "Limits"): 4·14 = 56 attribute bytes per Gaussian
/// against a 64 KiB binding, so 1170 Gaussians fit and 1171 do not.
#[test]
fn scenes_beyond_the_binding_limit_are_unsupported() {
    if renderer().is_none() {
        return;
    }
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 1 << 16,
        ..wgpu::Limits::default()
    };
    let (device, queue) = host_device(wgpu::Features::empty(), limits).expect("an adapter");
    let r = GpuRenderer::new(&GpuContext::from_device(device, queue)).unwrap();
    let fits = random_scene(1170, 0, 2, 1.2, -2.0);
    r.upload(&fits).unwrap();
    let over = random_scene(1171, 0, 2, 1.2, -2.0);
    match r.upload(&over) {
        Err(Error::GpuUnsupported(m)) => {
            assert!(m.contains("max_storage_buffer_binding_size"), "{m}")
        }
        other => panic!("1171 Gaussians on a 64 KiB binding: {other:?}"),
    }
    // SH-rest of degree 3 (180 bytes per Gaussian) is the largest binding.
    let sh = random_scene(365, 3, 2, 1.2, -2.0);
    assert!(matches!(r.upload(&sh), Err(Error::GpuUnsupported(_))));
    r.upload(&random_scene(364, 3, 2, 1.2, -2.0)).unwrap();
}

/// The sign flip's hash in WGSL (`tq_sign_word` of SH_DECODE_WGSL, run in
/// a compute pass) gives the bits of the Rust one (`sign_word`) on small
/// indices and on indices spread over all of u32.
#[test]
fn wgsl_sign_words_equal_the_rust_ones() {
    use turboquant3d::render::sh_decode::SH_DECODE_WGSL;
    use turboquant3d::splat::sh::sign_word;
    use wgpu::util::DeviceExt;
    let Some(ctx) = context() else { return };
    let n = 1u32 << 16;
    let spread = |i: u32| i.wrapping_mul(65_537).wrapping_add(12_345);
    let src = format!(
        "{SH_DECODE_WGSL}\n\
         @group(0) @binding(0) var<storage, read_write> tq_out: array<u32>;\n\
         @compute @workgroup_size(64) fn hashes(@builtin(global_invocation_id) id: vec3<u32>) {{\n\
           let i = id.x;\n\
           let k = i * 65537u + 12345u;\n\
           tq_out[4u * i] = tq_sign_word(i, 0u);\n\
           tq_out[4u * i + 1u] = tq_sign_word(i, 1u);\n\
           tq_out[4u * i + 2u] = tq_sign_word(k, 0u);\n\
           tq_out[4u * i + 3u] = tq_sign_word(k, 1u);\n\
         }}\n"
    );
    let device = &ctx.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("sign words"),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("sign words"),
        layout: None,
        module: &module,
        entry_point: Some("hashes"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("TQ_D", 45.0), ("TQ_BITS", 3.0), ("TQ_FLIP", 1.0)],
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    let bytes = 16 * n as u64;
    let out = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("sign words out"),
        contents: &vec![0u8; bytes as usize],
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("sign words read"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: out.as_entire_binding(),
        }],
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(n / 64, 1, 1);
    }
    enc.copy_buffer_to_buffer(&out, 0, &read, 0, bytes);
    ctx.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    read.slice(..)
        .map_async(wgpu::MapMode::Read, move |r| tx.send(r).unwrap());
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    rx.recv().unwrap().expect("map");
    let words: Vec<u32> = read
        .slice(..)
        .get_mapped_range()
        .expect("mapped")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut ones = 0u64;
    for i in 0..n {
        let want = [
            sign_word(i, 0),
            sign_word(i, 1),
            sign_word(spread(i), 0),
            sign_word(spread(i), 1),
        ];
        assert_eq!(words[4 * i as usize..4 * i as usize + 4], want, "index {i}");
        ones += want.iter().map(|w| w.count_ones() as u64).sum::<u64>();
    }
    // Sign bits are balanced: 2^23 bits, ±0.2 % (≈ 7σ).
    let frac = ones as f64 / (128.0 * n as f64);
    assert!((frac - 0.5).abs() < 0.002, "{frac}");
}

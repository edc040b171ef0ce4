//! The viewer as a person sees it, and the draw-into-a-view API under it.
//!
//! - `present_wgsl_validates_and_matches_the_rust_uniform` (no adapter):
//!   shaders/render_present.wgsl validates with naga and its
//!   `PresentUniform` and `SHADE_KEEP` match src/render/present.rs.
//! - `draw_writes_the_bytes_of_the_headless_render` (adapter): the present
//!   pass of `GpuRenderer::draw_with_overlay` into Rgba8Unorm, Bgra8Unorm and
//!   Rgba8UnormSrgb textures against the Rust references applied to
//!   `GpuRenderer::render`'s image: `present(overlay(composite))`, i.e.
//!   `to_u8` of the headless render outside the overlay. Both read the same
//!   float target; the present pass composites in f32 like the CPU, so the
//!   only freedom is FMA contraction of C + (1 − A)·bg, which moves a value
//!   by an ulp and a byte only when it lands within an ulp of a rounding
//!   boundary: max |diff| ≤ 1 and at most 0.1 % of the bytes differ
//!   (measured on lavapipe: identical). The sRGB target must give the same
//!   bytes because the shader undoes the hardware's encode.
//! - `viewer_screenshot_matches_the_headless_render` (adapter, Xvfb, xwd,
//!   xdotool): `tq3d view scene.tq3s --size 320x240 --device gpu` on a
//!   private Xvfb display; after the first-frame line on stderr, `xwd`
//!   grabs the window, Escape is sent with `xdotool key`, and the viewer
//!   must exit 0. The screenshot is compared with `to_u8` of the headless
//!   render of `orbit(positions, 1, 320, 240)[0]` with the same background,
//!   below the overlay's 12 rows; a second run with `--no-overlay` compares
//!   every row; the first run's overlay band must hold white text. The
//!   window holds the same bytes as the unorm texture above (a 24-bit
//!   TrueColor visual stores them as they are), so the tolerance is the
//!   same: max |diff| ≤ 1, ≤ 0.1 % of the bytes differing, PSNR ≥ 60 dB.
//! - Errors (no adapter needed): an unreadable file, `--device cpu`, no
//!   display, each a one-line `error: …` and exit 1.
//!
//! Skips with a note where there is no adapter or Xvfb/xwd/xdotool are
//! missing; under CI (or REQUIRE_GPU) those fail instead.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cli::{stderr, tq3d};
use common::data::required;
use common::gpu::{context, note};
use common::xwd;
use turboquant3d::render::gpu::GpuRenderer;
use turboquant3d::render::image::to_u8;
use turboquant3d::render::present::{
    Overlay, PRESENT_WGSL, PresentUniform, SHADE_KEEP, composite, overlay, present,
};
use turboquant3d::render::{Camera, orbit};
use turboquant3d::splat::synth::{SynthConfig, generate};
use turboquant3d::splat::{self, CompressOptions};
use turboquant3d::wgpu;

const W: u32 = 320;
const H: u32 = 240;
const BACKGROUND: [f32; 3] = [0.1, 0.2, 0.3];
/// Rows of the viewer's stats band (2 + 8 + 2 pixels).
const OVERLAY_ROWS: u32 = 12;

/// A procedural scene of degree 3, compressed (3-bit SH-rest), written to
/// `dir`: small enough that lavapipe draws it in well under a second.
fn scene_file(dir: &Path, name: &str) -> PathBuf {
    let scene = generate(&SynthConfig {
        count: 3000,
        sh_degree: 3,
        seed: 11,
    });
    let bytes = splat::compress(&scene, &CompressOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The viewer's first camera for `path` and the headless render of it with
/// the compressed SH-rest decoded in the shader, as bytes (`to_u8`).
fn headless(r: &GpuRenderer, path: &Path) -> (Camera, Vec<u8>, u64) {
    let bytes = splat::container::read_bytes(path).unwrap();
    let (scene, sh) = splat::decompress_split(&bytes, path).unwrap();
    let splats = r.upload_compressed(&scene, &sh.unwrap()).unwrap();
    let cam = orbit(&scene.positions, 1, W, H).remove(0);
    let image = r.render(&splats, &cam, BACKGROUND).unwrap();
    (
        cam,
        image.data.iter().map(|&v| to_u8(v)).collect(),
        splats.scene_bytes(),
    )
}

/// max |a − b|, the share of bytes that differ, and the PSNR (dB) over
/// the rows `rows` of two W-wide RGB byte images.
fn compare(a: &[u8], b: &[u8], rows: std::ops::Range<u32>) -> (u8, f64, f64) {
    let span = 3 * W as usize * rows.start as usize..3 * W as usize * rows.end as usize;
    let (a, b) = (&a[span.clone()], &b[span]);
    let mut max = 0u8;
    let mut differ = 0usize;
    let mut sq = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x.abs_diff(y);
        max = max.max(d);
        differ += usize::from(d != 0);
        sq += f64::from(d) * f64::from(d);
    }
    let mse = sq / a.len() as f64 / (255.0 * 255.0);
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    };
    (max, differ as f64 / a.len() as f64, psnr)
}

#[test]
fn present_wgsl_validates_and_matches_the_rust_uniform() {
    let module = naga::front::wgsl::parse_str(PRESENT_WGSL)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(PRESENT_WGSL)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}", e.emit_to_string(PRESENT_WGSL)));
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("PresentUniform"))
        .expect("PresentUniform in the WGSL");
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("PresentUniform is not a struct");
    };
    let got: Vec<(String, u32)> = members
        .iter()
        .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
        .collect();
    let want: Vec<(String, u32)> = [
        (
            "background",
            std::mem::offset_of!(PresentUniform, background),
        ),
        ("overlay_w", std::mem::offset_of!(PresentUniform, overlay_w)),
        ("overlay_h", std::mem::offset_of!(PresentUniform, overlay_h)),
        (
            "srgb_target",
            std::mem::offset_of!(PresentUniform, srgb_target),
        ),
        ("pad", std::mem::offset_of!(PresentUniform, pad)),
    ]
    .into_iter()
    .map(|(n, o)| (n.to_string(), o as u32))
    .collect();
    assert_eq!(got, want);
    assert_eq!(*span as usize, std::mem::size_of::<PresentUniform>());
    let keep = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some("SHADE_KEEP"))
        .map(|(_, c)| &module.global_expressions[c.init]);
    assert!(
        matches!(keep, Some(naga::Expression::Literal(naga::Literal::F32(v))) if *v == SHADE_KEEP),
        "SHADE_KEEP in the WGSL: {keep:?}"
    );
}

/// Draws into a new `format` texture and reads it back as RGB bytes.
fn draw_to_bytes(
    r: &GpuRenderer,
    splats: &turboquant3d::render::gpu::GpuSplats,
    cam: &Camera,
    ov: &Overlay,
    format: wgpu::TextureFormat,
) -> Vec<u8> {
    let ctx = r.context();
    let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("viewer test target"),
        size: wgpu::Extent3d {
            width: cam.width,
            height: cam.height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let view = texture.create_view(&Default::default());
    r.draw_with_overlay(splats, cam, BACKGROUND, Some(ov), &view, format)
        .unwrap();
    let row = (4 * cam.width).div_ceil(256) * 256;
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("viewer test readback"),
        size: row as u64 * cam.height as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: Some(cam.height),
            },
        },
        texture.size(),
    );
    ctx.queue.submit([encoder.finish()]);
    readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let data = readback.slice(..).get_mapped_range().unwrap().to_vec();
    let bgra = matches!(
        format,
        wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
    );
    let mut out = Vec::with_capacity(3 * (cam.width * cam.height) as usize);
    for y in 0..cam.height as usize {
        for px in data[y * row as usize..][..4 * cam.width as usize].chunks_exact(4) {
            if bgra {
                out.extend([px[2], px[1], px[0]]);
            } else {
                out.extend(&px[..3]);
            }
        }
    }
    out
}

#[test]
fn draw_writes_the_bytes_of_the_headless_render() {
    let Some(ctx) = context() else { return };
    let r = GpuRenderer::new(&ctx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = scene_file(dir.path(), "draw.tq3s");
    let bytes = splat::container::read_bytes(&path).unwrap();
    let (scene, sh) = splat::decompress_split(&bytes, &path).unwrap();
    let sh = sh.unwrap();
    let splats = r.upload_compressed(&scene, &sh).unwrap();
    // Attributes: 14 f32 per Gaussian; plus every SH-rest buffer.
    assert_eq!(
        splats.scene_bytes(),
        (56 * scene.len() as u64).div_ceil(4) * 4 + splats.sh_bytes()
    );
    let cam = orbit(&scene.positions, 1, W, H).remove(0);
    let image = r.render(&splats, &cam, BACKGROUND).unwrap();
    // An overlay with all three texel kinds, smaller than the frame.
    let mut ov = Overlay::new(100, 30);
    for y in 0..30 {
        for x in 0..100 {
            ov.set(x, y, ((x / 7 + y / 5) % 3) as u8);
        }
    }
    let mut want = Vec::with_capacity(3 * (W * H) as usize);
    for y in 0..H {
        for x in 0..W {
            want.extend(present(overlay(image.pixel(x, y), ov.get(x, y))));
        }
    }
    // The reference composite is the renderer's own CPU composite.
    assert_eq!(composite([0.0; 4], BACKGROUND), BACKGROUND);
    let lit = want
        .chunks(3)
        .filter(|p| p.iter().any(|&b| b > 100))
        .count();
    assert!(lit > 1000, "the view shows the scene ({lit} bright pixels)");
    for format in [
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureFormat::Bgra8Unorm,
        wgpu::TextureFormat::Rgba8UnormSrgb,
    ] {
        let got = draw_to_bytes(&r, &splats, &cam, &ov, format);
        let (max, differ, psnr) = compare(&got, &want, 0..H);
        note(&format!(
            "draw into {format:?}: max |diff| {max}, {:.4} % of bytes differ, PSNR {psnr:.1} dB",
            100.0 * differ
        ));
        assert!(
            max <= 1 && differ <= 1e-3,
            "{format:?}: max {max}, differ {differ}"
        );
    }
    // A target of another size is refused, not drawn.
    let small = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: W / 2,
            height: H,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
        view_formats: &[],
    });
    let e = r
        .draw(
            &splats,
            &cam,
            BACKGROUND,
            &small.create_view(&Default::default()),
            wgpu::TextureFormat::Rgba8Unorm,
        )
        .unwrap_err();
    assert!(e.to_string().contains("160×240 texture"), "{e}");
}

/// Whether `tool` is on PATH.
fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A child process killed (and reaped) when dropped, on every path.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Xvfb on the first free display number from 90; `None` if none starts.
fn start_xvfb() -> Option<(Killed, String)> {
    for n in 90..140 {
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        if socket.exists() || Path::new(&format!("/tmp/.X{n}-lock")).exists() {
            continue;
        }
        let child = Command::new("Xvfb")
            .args([
                format!(":{n}").as_str(),
                "-screen",
                "0",
                "640x480x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut xvfb = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if socket.exists() {
                return Some((xvfb, format!(":{n}")));
            }
            if let Ok(Some(_)) = xvfb.0.try_wait() {
                break; // lost a race for this display: the next one
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    None
}

/// Runs `cmd` on `display` with a time limit; its stdout.
fn x_tool(display: &str, cmd: &[&str]) -> Vec<u8> {
    let out = Command::new("timeout")
        .arg("10")
        .args(cmd)
        .env("DISPLAY", display)
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the viewer on `display` until its first-frame line, grabs the
/// window, sends Escape and checks the exit code. The screenshot and the
/// line.
fn run_viewer(display: &str, path: &Path, extra: &[&str]) -> (xwd::Rgb8, String) {
    let bg = format!("{},{},{}", BACKGROUND[0], BACKGROUND[1], BACKGROUND[2]);
    let size = format!("{W}x{H}");
    let mut args = vec![
        "view",
        path.to_str().unwrap(),
        "--size",
        &size,
        "--device",
        "gpu",
        "--background",
        &bg,
    ];
    args.extend(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_tq3d"))
        .args(&args)
        .env("DISPLAY", display)
        .env("WGPU_BACKEND", "vulkan")
        .env("NODEVICE_SELECT", "1")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run tq3d view");
    let mut viewer = Killed(child);
    let (tx, rx) = mpsc::channel();
    let err = viewer.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let line = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains(" in VRAM") => break l,
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = viewer.0.try_wait() {
                    panic!("the viewer exited ({status}) before its first frame: {seen:?}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no first-frame line within 120 s: {seen:?}"
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = viewer.0.wait().unwrap();
                panic!("the viewer exited ({status}) before its first frame: {seen:?}");
            }
        }
    };
    let name = format!("tq3d view {}", path.file_name().unwrap().to_str().unwrap());
    let ids = x_tool(display, &["xdotool", "search", "--sync", "--name", &name]);
    let id = String::from_utf8_lossy(&ids)
        .lines()
        .next()
        .expect("the viewer's window")
        .trim()
        .to_string();
    // The second frame (the overlay with the measured time) may still be
    // in flight; let it land.
    std::thread::sleep(Duration::from_millis(500));
    let shot = xwd::parse(&x_tool(display, &["xwd", "-id", &id, "-silent"])).unwrap();
    x_tool(display, &["xdotool", "windowfocus", &id]);
    x_tool(display, &["xdotool", "key", "Escape"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = viewer.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the viewer ignored Escape");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the viewer exited {status}: {seen:?}");
    (shot, line)
}

#[test]
fn viewer_screenshot_matches_the_headless_render() {
    let missing: Vec<&str> = ["Xvfb", "xwd", "xdotool", "timeout"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        assert!(
            !required(),
            "{missing:?} are required here (CI or REQUIRE_GPU)"
        );
        note(&format!("SKIPPED: viewer screenshot: {missing:?} missing"));
        return;
    }
    let Some(ctx) = context() else { return };
    let r = GpuRenderer::new(&ctx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = scene_file(dir.path(), &format!("viewer{}.tq3s", std::process::id()));
    let (_cam, want, scene_bytes) = headless(&r, &path);
    let (_xvfb, display) = start_xvfb().expect("Xvfb did not start");

    // With the overlay: every row below its band matches; the band holds
    // white text.
    let (shot, line) = run_viewer(&display, &path, &[]);
    note(&format!("viewer's first-frame line: {line}"));
    assert_eq!((shot.width, shot.height), (W, H));
    assert!(
        line.contains("3000 Gaussians") && line.contains("compressed SH"),
        "{line}"
    );
    let shown = turboquant3d::render::present::Overlay::INK;
    let _ = shown;
    assert!(line.contains(" ms "), "{line}");
    assert!(scene_bytes > 0);
    let (max, differ, psnr) = compare(&shot.data, &want, OVERLAY_ROWS..H);
    note(&format!(
        "viewer screenshot below the overlay: max |diff| {max}, {:.4} % of bytes differ, PSNR {psnr:.1} dB",
        100.0 * differ
    ));
    assert!(
        max <= 1 && differ <= 1e-3 && psnr >= 60.0,
        "max {max}, differ {differ}, PSNR {psnr}"
    );
    let white = (0..OVERLAY_ROWS)
        .flat_map(|y| (0..W).map(move |x| (x, y)))
        .filter(|&(x, y)| shot.pixel(x, y) == [255; 3])
        .count();
    assert!(
        white >= 100,
        "the overlay draws text ({white} white pixels)"
    );

    // Without it, every row.
    let (shot, _) = run_viewer(&display, &path, &["--no-overlay"]);
    let (max, differ, psnr) = compare(&shot.data, &want, 0..H);
    note(&format!(
        "viewer screenshot, --no-overlay: max |diff| {max}, {:.4} % of bytes differ, PSNR {psnr:.1} dB",
        100.0 * differ
    ));
    assert!(
        max <= 1 && differ <= 1e-3 && psnr >= 60.0,
        "max {max}, differ {differ}, PSNR {psnr}"
    );
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.tq3s");
    let o = tq3d(["view", missing.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("missing.tq3s"), "{err}");

    let path = scene_file(dir.path(), "ok.tq3s");
    let o = tq3d(["view", path.to_str().unwrap(), "--device", "cpu"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.contains("GPU"), "{err}");

    // No display at all.
    let o = Command::new(env!("CARGO_BIN_EXE_tq3d"))
        .args(["view", path.to_str().unwrap()])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: GPU: no display: ")
            && err.contains("DISPLAY")
            && !err.contains(".rs:")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );

    let o = tq3d(["view", path.to_str().unwrap(), "--background", "2,0,0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

//! `tq3d view FILE`: an interactive window drawing a scene with the
//! library's wgpu renderer. It is also the embedding example: a host with a
//! window needs only these calls, in this order (each is in this file):
//!
//! 1. `wgpu::Instance::new(InstanceDescriptor::new_with_display_handle_from_env(…))`
//!    and `instance.create_surface(window)`;
//! 2. [`GpuContext::request_for_surface`] (the library's adapter choice,
//!    among the adapters that can present to the window), then
//!    `surface.configure` with a format from `surface.get_capabilities`;
//! 3. [`GpuRenderer::new`], then `upload_compressed(&scene, &sh)` for a
//!    `.tq3s` (from [`splat::decompress_split`]: SH-rest stays compressed and
//!    is decoded in the shader) or `upload(&scene)` for anything else;
//! 4. per frame: `surface.get_current_texture()`,
//!    [`GpuRenderer::draw_with_overlay`] into its view, `queue.present`.
//!
//! Controls: left drag orbits around the pivot (the scene centre at
//! first), right or middle drag pans, the wheel zooms, W/A/S/D/Q/E fly
//! (forward, left, back, right, up, down), R resets the view, Esc or closing
//! the window quits (exit code 0). The first view is
//! `render::orbit(positions, 1, width, height)[0]` at the window's size, so
//! a test can render the same frame headless.
//!
//! The overlay line (top-left; `--no-overlay` hides it) shows the frame
//! time (milliseconds, smoothed; draw + present + wait for the device), the
//! Gaussian count, the bytes of scene data in VRAM
//! ([`GpuSplats::scene_bytes`]) and "compressed SH" when SH-rest is decoded
//! in the shader. It is printed to standard error once after the first
//! frame.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use glam::Vec3;
use turboquant3d::gpu::{AdapterPolicy, GpuContext};
use turboquant3d::render::gpu::{GpuRenderer, GpuSplats};
use turboquant3d::render::present::Overlay;
use turboquant3d::render::{Camera, orbit};
use turboquant3d::splat::formats::{self, SceneFormat};
use turboquant3d::splat::sh::CompressedSh;
use turboquant3d::splat::{self, Scene, container};
use turboquant3d::{Error, wgpu};
use winit::application::ApplicationHandler;
use winit::dpi::PhysicalSize;
use winit::event::{ElementState, MouseButton, MouseScrollDelta, WindowEvent};
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::keyboard::{KeyCode, PhysicalKey};
use winit::window::{Window, WindowId};

use crate::common::{DeviceArg, Resolution, human};

#[derive(Args)]
pub struct ViewArgs {
    /// The scene: a .tq3s (drawn from its compressed SH-rest), or any scene
    /// `convert` reads (.ply, .splat, …).
    input: PathBuf,
    /// Window size, WxH.
    #[arg(long, default_value = "1280x720")]
    size: Resolution,
    /// The adapter: auto or gpu (any adapter, hardware first, software ones
    /// such as lavapipe included); the viewer has no CPU path.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Background colour R,G,B, each in [0, 1].
    #[arg(long, value_parser = background, default_value = "0,0,0")]
    background: Background,
    /// Hide the stats line.
    #[arg(long)]
    no_overlay: bool,
}

#[derive(Clone, Copy)]
struct Background([f32; 3]);

fn background(s: &str) -> Result<Background, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|c| c.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    match v[..] {
        [r, g, b] if v.iter().all(|c| (0.0..=1.0).contains(c)) => Ok(Background([r, g, b])),
        _ => Err(format!("{s:?} is not R,G,B with each in [0, 1]")),
    }
}

/// winit's message without the "os error at <its source file>:<line>: "
/// prefix, which tells a user nothing.
fn os_message(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.strip_prefix("os error at ")
        .and_then(|rest| rest.split_once(": "))
        .map_or(s.clone(), |(_, m)| m.to_string())
}

/// Opens the scene, then the window, and runs until Esc or close.
pub fn view(args: ViewArgs) -> Result<(), Error> {
    if matches!(args.device, DeviceArg::Cpu) {
        return Err(Error::InvalidArgument(
            "the viewer draws on a GPU adapter; use --device auto or gpu".into(),
        ));
    }
    let scene = load(&args.input)?;
    let event_loop =
        EventLoop::new().map_err(|e| Error::Gpu(format!("no display: {}", os_message(&e))))?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(
        Box::new(event_loop.owned_display_handle()),
    ));
    let mut app = App {
        args,
        instance,
        scene: Some(scene),
        gpu: None,
        input: Input::default(),
        error: None,
    };
    event_loop
        .run_app(&mut app)
        .map_err(|e| Error::Gpu(format!("window: {e}")))?;
    app.error.map_or(Ok(()), Err)
}

/// A scene and, for a .tq3s, its SH-rest still compressed.
struct Loaded {
    scene: Scene,
    sh: Option<CompressedSh>,
}

fn load(path: &Path) -> Result<Loaded, Error> {
    let (scene, sh) = if formats::detect(path)? == SceneFormat::Tq3s {
        splat::decompress_split(&container::read_bytes(path)?, path)?
    } else {
        (formats::read_scene(path)?, None)
    };
    if scene.is_empty() {
        return Err(Error::EmptyInput {
            what: format!("{} has no Gaussians", path.display()),
        });
    }
    splat::check_finite(&scene).map_err(|e| e.in_file(path))?;
    Ok(Loaded { scene, sh })
}

struct App {
    args: ViewArgs,
    instance: wgpu::Instance,
    /// The scene until it is uploaded.
    scene: Option<Loaded>,
    gpu: Option<Gpu>,
    input: Input,
    /// Why the viewer stopped, if it failed.
    error: Option<Error>,
}

/// The window and everything drawn into it.
struct Gpu {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    renderer: GpuRenderer,
    splats: GpuSplats,
    /// Device errors outside the renderer's error scopes (surface calls).
    uncaptured: Arc<Mutex<Option<String>>>,
    orbit: OrbitCamera,
    /// Smoothed frame time in ms, and when the last frame started.
    frame_ms: Option<f64>,
    last: Instant,
    frames: u64,
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.gpu.is_none() {
            match self.open(event_loop) {
                Ok(gpu) => {
                    gpu.window.request_redraw();
                    self.gpu = Some(gpu);
                }
                Err(e) => self.fail(event_loop, e),
            }
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        let Some(gpu) = self.gpu.as_mut() else {
            return;
        };
        match event {
            WindowEvent::CloseRequested => event_loop.exit(),
            WindowEvent::Resized(size) => gpu.resize(size),
            WindowEvent::RedrawRequested => {
                let overlay = !self.args.no_overlay;
                if let Err(e) = gpu.frame(&mut self.input, self.args.background.0, overlay) {
                    self.fail(event_loop, e);
                }
            }
            WindowEvent::KeyboardInput { event, .. } => {
                let pressed = event.state == ElementState::Pressed;
                match event.physical_key {
                    PhysicalKey::Code(KeyCode::Escape) if pressed => event_loop.exit(),
                    PhysicalKey::Code(KeyCode::KeyR) if pressed => gpu.orbit.reset(),
                    PhysicalKey::Code(code) => self.input.key(code, pressed),
                    PhysicalKey::Unidentified(_) => {}
                }
                gpu.window.request_redraw();
            }
            WindowEvent::MouseInput { state, button, .. } => {
                let pressed = state == ElementState::Pressed;
                match button {
                    MouseButton::Left => self.input.orbiting = pressed,
                    MouseButton::Right | MouseButton::Middle => self.input.panning = pressed,
                    _ => {}
                }
            }
            WindowEvent::CursorMoved { position, .. } => {
                let p = (position.x as f32, position.y as f32);
                if let Some((x, y)) = self.input.cursor.replace(p) {
                    let (dx, dy) = (p.0 - x, p.1 - y);
                    if self.input.orbiting {
                        gpu.orbit.rotate(dx, dy);
                    } else if self.input.panning {
                        gpu.orbit.pan(dx, dy);
                    }
                    if self.input.orbiting || self.input.panning {
                        gpu.window.request_redraw();
                    }
                }
            }
            WindowEvent::MouseWheel { delta, .. } => {
                let steps = match delta {
                    MouseScrollDelta::LineDelta(_, y) => y,
                    MouseScrollDelta::PixelDelta(p) => p.y as f32 / 40.0,
                };
                gpu.orbit.zoom(steps);
                gpu.window.request_redraw();
            }
            _ => {}
        }
    }
}

impl App {
    /// The window, its surface, the device and the uploaded scene.
    fn open(&mut self, event_loop: &ActiveEventLoop) -> Result<Gpu, Error> {
        let Resolution(w, h) = self.args.size;
        let name = self.args.input.file_name().unwrap_or_default();
        let attributes = Window::default_attributes()
            .with_title(format!("tq3d view {}", name.to_string_lossy()))
            .with_inner_size(PhysicalSize::new(w, h));
        let window = Arc::new(
            event_loop
                .create_window(attributes)
                .map_err(|e| Error::Gpu(format!("cannot open a window: {}", os_message(&e))))?,
        );
        let surface = self
            .instance
            .create_surface(window.clone())
            .map_err(|e| Error::Gpu(format!("cannot draw into the window: {e}")))?;
        let (ctx, adapter) = GpuContext::request_for_surface(
            &self.instance,
            &surface,
            AdapterPolicy::AllowSoftware,
        )?;
        log::info!("viewer on {}", ctx.describe());
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        ctx.device.on_uncaptured_error(Arc::new(move |e| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e.to_string());
        }));

        let caps = surface.get_capabilities(&adapter);
        // A unorm format needs no transfer function; the present pass also
        // handles an sRGB one (it undoes the hardware's encode).
        let format = caps
            .formats
            .iter()
            .copied()
            .find(|f| !f.is_srgb())
            .or_else(|| caps.formats.first().copied())
            .ok_or_else(|| {
                Error::Gpu(format!("{} cannot present to this window", ctx.describe()))
            })?;
        let size = window.inner_size();
        let config = wgpu::SurfaceConfiguration {
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
            format,
            color_space: wgpu::SurfaceColorSpace::Auto,
            width: size.width.max(1),
            height: size.height.max(1),
            desired_maximum_frame_latency: 2,
            present_mode: wgpu::PresentMode::Fifo,
            alpha_mode: if caps.alpha_modes.contains(&wgpu::CompositeAlphaMode::Opaque) {
                wgpu::CompositeAlphaMode::Opaque
            } else {
                wgpu::CompositeAlphaMode::Auto
            },
            view_formats: vec![],
        };
        surface.configure(&ctx.device, &config);

        let renderer = GpuRenderer::new(&ctx)?;
        let Loaded { scene, sh } = self
            .scene
            .take()
            .ok_or_else(|| Error::Gpu("the scene was already uploaded".into()))?;
        let splats = match &sh {
            Some(sh) => renderer.upload_compressed(&scene, sh)?,
            None => renderer.upload(&scene)?,
        };
        let home = orbit(&scene.positions, 1, config.width, config.height)
            .into_iter()
            .next()
            .ok_or_else(|| Error::Gpu("no initial camera".into()))?;
        let radius = turboquant3d::render::camera::bounding_sphere(&scene.positions).1;
        Ok(Gpu {
            window,
            surface,
            config,
            renderer,
            splats,
            uncaptured,
            orbit: OrbitCamera::new(home, radius),
            frame_ms: None,
            last: Instant::now(),
            frames: 0,
        })
    }

    fn fail(&mut self, event_loop: &ActiveEventLoop, e: Error) {
        self.error.get_or_insert(e);
        event_loop.exit();
    }
}

impl Gpu {
    fn resize(&mut self, size: PhysicalSize<u32>) {
        if size.width > 0 && size.height > 0 {
            self.config.width = size.width;
            self.config.height = size.height;
            self.surface
                .configure(&self.renderer.context().device, &self.config);
            self.orbit.resize(size.width, size.height);
            self.window.request_redraw();
        }
    }

    /// Moves the camera for held keys, draws, presents and waits for the
    /// device, then updates the stats line.
    fn frame(
        &mut self,
        input: &mut Input,
        background: [f32; 3],
        overlay: bool,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let dt = start.duration_since(self.last).as_secs_f32().min(0.1);
        self.last = start;
        if input.fly != Vec3::ZERO {
            self.orbit.fly(input.fly, dt);
        }
        let texture = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t)
            | wgpu::CurrentSurfaceTexture::Suboptimal(t) => t,
            wgpu::CurrentSurfaceTexture::Timeout | wgpu::CurrentSurfaceTexture::Occluded => {
                return Ok(());
            }
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface
                    .configure(&self.renderer.context().device, &self.config);
                self.window.request_redraw();
                return Ok(());
            }
            wgpu::CurrentSurfaceTexture::Validation => {
                return Err(self.uncaptured().unwrap_or_else(|| {
                    Error::Gpu("the window's surface texture is invalid".into())
                }));
            }
        };
        let view = texture.texture.create_view(&Default::default());
        let line = self.stats_line();
        let mask = overlay.then(|| text_overlay(&line, self.config.width));
        let cam = self.orbit.camera();
        self.renderer.draw_with_overlay(
            &self.splats,
            &cam,
            background,
            mask.as_ref(),
            &view,
            self.config.format,
        )?;
        let ctx = self.renderer.context();
        ctx.queue.present(texture);
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        if let Some(e) = self.uncaptured() {
            return Err(e);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        self.frame_ms = Some(self.frame_ms.map_or(ms, |m| 0.8 * m + 0.2 * ms));
        self.frames += 1;
        if self.frames == 1 {
            // The first frame's time, for the overlay of the next frame
            // and for whoever waits for the window (tests).
            eprintln!("{}", self.stats_line());
            self.window.request_redraw();
        }
        if input.fly != Vec3::ZERO {
            self.window.request_redraw();
        }
        Ok(())
    }

    fn stats_line(&self) -> String {
        let ms = self
            .frame_ms
            .map_or_else(|| "--".to_string(), |m| format!("{m:.1}"));
        let sh = if self.splats.is_compressed() {
            "  compressed SH"
        } else {
            ""
        };
        format!(
            "{ms} ms  {} Gaussians  {} in VRAM{sh}",
            self.splats.len(),
            human(self.splats.scene_bytes())
        )
    }

    fn uncaptured(&self) -> Option<Error> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().map(Error::Gpu)
    }
}

/// Mouse and keyboard state between events.
#[derive(Default)]
struct Input {
    orbiting: bool,
    panning: bool,
    cursor: Option<(f32, f32)>,
    /// Held fly keys: x right, y down, z forward (camera axes), each −1..=1.
    fly: Vec3,
    held: Vec<KeyCode>,
}

impl Input {
    fn key(&mut self, code: KeyCode, pressed: bool) {
        self.held.retain(|&k| k != code);
        if pressed {
            self.held.push(code);
        }
        let axis = |plus: KeyCode, minus: KeyCode| {
            f32::from(u8::from(self.held.contains(&plus)))
                - f32::from(u8::from(self.held.contains(&minus)))
        };
        self.fly = Vec3::new(
            axis(KeyCode::KeyD, KeyCode::KeyA),
            axis(KeyCode::KeyE, KeyCode::KeyQ),
            axis(KeyCode::KeyW, KeyCode::KeyS),
        );
    }
}

/// The camera: an eye looking at a pivot, world up −y (the COLMAP
/// convention of [`orbit`]). Until the first move it is the orbit camera
/// itself, unchanged.
struct OrbitCamera {
    home: Camera,
    /// The current eye and pivot, once the camera has moved.
    moved: Option<(Vec3, Vec3)>,
    pivot: Vec3,
    home_pivot: Vec3,
    radius: f32,
    width: u32,
    height: u32,
}

const UP: Vec3 = Vec3::new(0.0, -1.0, 0.0);

impl OrbitCamera {
    fn new(home: Camera, radius: f32) -> OrbitCamera {
        // The orbit camera looks at the scene centre along its z axis.
        let eye = home.position();
        let forward = home.rotation.row(2);
        let pivot = eye + forward * (2.2 * radius);
        OrbitCamera {
            width: home.width,
            height: home.height,
            home,
            moved: None,
            pivot,
            home_pivot: pivot,
            radius,
        }
    }

    fn fov_y(&self) -> f32 {
        2.0 * (0.5 * self.home.height as f32 / self.home.fy).atan()
    }

    fn camera(&self) -> Camera {
        match self.moved {
            None => self.home.resized(self.width, self.height),
            Some((eye, pivot)) => Camera::look_at(
                "view".into(),
                eye,
                pivot,
                UP,
                self.fov_y(),
                self.width,
                self.height,
            ),
        }
    }

    fn eye(&self) -> Vec3 {
        self.moved.map_or_else(|| self.home.position(), |(e, _)| e)
    }

    fn reset(&mut self) {
        self.moved = None;
        self.pivot = self.home_pivot;
    }

    fn resize(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
    }

    /// Left drag: yaw about world up, pitch about the camera's x axis,
    /// around the pivot (0.3° per pixel; pitch stops 5° short of the poles).
    fn rotate(&mut self, dx: f32, dy: f32) {
        let offset = self.eye() - self.pivot;
        let yaw = glam::Quat::from_axis_angle(UP, -dx * 0.3f32.to_radians());
        let offset = yaw * offset;
        let right = UP.cross(-offset).normalize_or_zero();
        let pitched = glam::Quat::from_axis_angle(right, dy * 0.3f32.to_radians()) * offset;
        let pole = pitched.angle_between(UP);
        let offset = if pole.min(std::f32::consts::PI - pole) > 5f32.to_radians() {
            pitched
        } else {
            offset
        };
        self.moved = Some((self.pivot + offset, self.pivot));
    }

    /// Right or middle drag: the scene follows the cursor at the pivot's
    /// depth.
    fn pan(&mut self, dx: f32, dy: f32) {
        let cam = self.camera();
        let eye = self.eye();
        let per_pixel = (eye - self.pivot).length() / cam.fy;
        let shift = (cam.rotation.row(0) * -dx + cam.rotation.row(1) * -dy) * per_pixel;
        self.pivot += shift;
        self.moved = Some((eye + shift, self.pivot));
    }

    /// The wheel: 10 % closer to the pivot per step.
    fn zoom(&mut self, steps: f32) {
        let offset = (self.eye() - self.pivot) * 0.9f32.powf(steps);
        let offset = if offset.length() < 1e-3 * self.radius {
            offset.normalize_or_zero() * 1e-3 * self.radius
        } else {
            offset
        };
        self.moved = Some((self.pivot + offset, self.pivot));
    }

    /// W/A/S/D/Q/E: move eye and pivot along the camera's axes at one
    /// scene radius per second.
    fn fly(&mut self, dir: Vec3, dt: f32) {
        let cam = self.camera();
        let r = cam.rotation;
        let shift = (r.row(0) * dir.x - r.row(1) * dir.y + r.row(2) * dir.z) * self.radius * dt;
        let eye = self.eye() + shift;
        self.pivot += shift;
        self.moved = Some((eye, self.pivot));
    }
}

/// The stats line as an overlay: 8×8 glyphs (font8x8) on a shaded band
/// 12 pixels high, clipped to the window's width.
fn text_overlay(line: &str, max_width: u32) -> Overlay {
    let (margin, glyph) = (2u32, 8u32);
    let width = (2 * margin + glyph * line.chars().count() as u32).min(max_width);
    let mut overlay = Overlay::new(width, glyph + 2 * margin);
    overlay.texels.fill(Overlay::SHADE);
    for (i, c) in line.chars().enumerate() {
        let rows = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or([0; 8]);
        for (y, bits) in rows.iter().enumerate() {
            for x in 0..8 {
                if bits >> x & 1 == 1 {
                    overlay.set(
                        margin + glyph * i as u32 + x,
                        margin + y as u32,
                        Overlay::INK,
                    );
                }
            }
        }
    }
    overlay
}

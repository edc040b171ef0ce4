//! A headless 3D Gaussian Splatting renderer: cameras, a CPU reference
//! rasteriser ([`cpu`], the test oracle), the wgpu renderer ([`gpu`]) that
//! can decode SH-rest straight from compressed buffers in its own shader,
//! the decoder for a host's own shader ([`sh_decode`]), the renderer's WGSL
//! and the layouts it shares with Rust ([`shaders`]), and image metrics.
//!
//! Both renderers follow the reference 3DGS rasteriser (Kerbl et al. 2023,
//! `diff-gaussian-rasterization`): EWA projection of the 3D covariance with
//! the 0.3-pixel dilation, SH colour of degree 0–3 with the +0.5 offset and
//! the clamp at 0, front-to-back compositing with alpha clamped at 0.99,
//! fragments below 1/255 skipped and an early stop below transmittance 10⁻⁴.
//! The stages and their exact formulas are in [`cpu`], whose functions the
//! GPU stages mirror by name.
//!
//! # Drawing into a host's texture
//!
//! [`gpu::GpuRenderer::render`] returns an [`Image`] (headless: PNGs,
//! metrics). [`gpu::GpuRenderer::draw`] records the same frame into any
//! `wgpu::TextureView` (a window's surface texture): the float target is
//! composited over the background by a present pass ([`present`]) that
//! writes exactly the bytes [`image::to_u8`] makes of `render`'s image,
//! for unorm and sRGB formats alike, with an optional [`present::Overlay`].
//! `tq3d view` (src/bin/tq3d/view.rs) is the embedding example:
//!
//! ```no_run
//! # fn frame(surface: &turboquant3d::wgpu::Surface<'_>, renderer: &turboquant3d::render::gpu::GpuRenderer,
//! #          splats: &turboquant3d::render::gpu::GpuSplats, cam: &turboquant3d::render::Camera,
//! #          format: turboquant3d::wgpu::TextureFormat) -> turboquant3d::Result<()> {
//! use turboquant3d::wgpu::CurrentSurfaceTexture;
//! if let CurrentSurfaceTexture::Success(texture) = surface.get_current_texture() {
//!     let view = texture.texture.create_view(&Default::default());
//!     renderer.draw(splats, cam, [0.0; 3], &view, format)?;
//!     renderer.context().queue.present(texture);
//! }
//! # Ok(()) }
//! ```

pub mod camera;
pub mod cpu;
mod frame;
pub mod gpu;
pub mod image;
pub mod metrics;
pub mod predict;
pub mod present;
pub mod sh_decode;
pub mod shaders;

pub use camera::{Camera, orbit};

/// A Gaussian as the rasteriser sees it, after the preprocess stage.
/// `radius == 0` means culled. The layout is shared with the WGSL
/// `Splat2D` of shaders/render_common.wgsl (48 bytes; `conic` and `color`
/// are three scalars each there).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Splat2D {
    /// Projected mean in pixels.
    pub mean: [f32; 2],
    /// Camera-space depth.
    pub depth: f32,
    /// Footprint half-size in pixels, ceil(3·√λ_max); 0 when culled.
    pub radius: f32,
    /// Inverse 2D covariance (a, b, c): power = −½(a·dx² + c·dy²) − b·dx·dy.
    pub conic: [f32; 3],
    /// sigmoid(opacity).
    pub opacity: f32,
    /// View-dependent colour from SH (+0.5, clamped at 0).
    pub color: [f32; 3],
    pub _pad: f32,
}

/// A linear RGB image, row-major, three f32 per pixel, unclamped.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

impl Image {
    /// A black image.
    pub fn new(width: u32, height: u32) -> Image {
        Image {
            width,
            height,
            data: vec![0.0; width as usize * height as usize * 3],
        }
    }

    /// Pixel (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [f32; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

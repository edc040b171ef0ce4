//! The renderer's WGSL, and the Rust side of the layouts it shares with
//! the host: the structs of shaders/render_common.wgsl and the constants of
//! the preprocess stage. tests/shaders_naga.rs checks every one against the
//! WGSL through naga (member names, offsets and sizes, constants and
//! workgroup sizes).

use crate::render::Camera;
use crate::render::sh_decode::SH_DECODE_WGSL;

/// The declarations both stages share: `CameraUniform` (binding 0 of group
/// 0 in both) and `Splat2D`.
pub const COMMON_WGSL: &str = include_str!("../../shaders/render_common.wgsl");

/// The preprocess stage (compute); needs [`SH_DECODE_WGSL`] and
/// [`COMMON_WGSL`] before it, see [`preprocess_source`].
pub const PREPROCESS_WGSL: &str = include_str!("../../shaders/render_preprocess.wgsl");

/// The raster stage (vertex and fragment shaders); needs [`COMMON_WGSL`]
/// before it, see [`raster_source`].
pub const RASTER_WGSL: &str = include_str!("../../shaders/render_raster.wgsl");

/// The full source of the preprocess module: the SH decoder, the shared
/// declarations, then the stage.
pub fn preprocess_source() -> String {
    format!("{SH_DECODE_WGSL}\n{COMMON_WGSL}\n{PREPROCESS_WGSL}")
}

/// The full source of the raster module: the shared declarations, then the
/// stage.
pub fn raster_source() -> String {
    format!("{COMMON_WGSL}\n{RASTER_WGSL}")
}

/// Floats per Gaussian in the attribute buffer: position (3), log scale (3),
/// rotation (w, x, y, z), opacity logit, DC colour (3). `ATTR_STRIDE` in
/// render_preprocess.wgsl.
pub const ATTR_STRIDE: usize = 14;

/// Threads per workgroup of both preprocess entry points (`WG` in
/// render_preprocess.wgsl).
pub const PREPROCESS_WORKGROUP: u32 = 64;

/// The camera as the shaders see it: `CameraUniform` in
/// render_common.wgsl, member for member.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CameraUniform {
    /// Rows of the world→camera rotation (w unused).
    pub rot0: [f32; 4],
    pub rot1: [f32; 4],
    pub rot2: [f32; 4],
    /// World→camera translation (w unused).
    pub translation: [f32; 4],
    /// Camera centre in world space (w unused).
    pub campos: [f32; 4],
    /// fx, fy, cx, cy.
    pub intrinsics: [f32; 4],
    /// Image size in pixels.
    pub width: f32,
    pub height: f32,
    /// Number of Gaussians.
    pub count: u32,
    /// Workgroups along x of the 2-D preprocess dispatch.
    pub groups_x: u32,
}

impl CameraUniform {
    /// `cam` for a frame of `count` Gaussians dispatched `groups_x`
    /// workgroups wide.
    pub fn new(cam: &Camera, count: u32, groups_x: u32) -> CameraUniform {
        let r = cam.rotation;
        let row = |i: usize| [r.row(i).x, r.row(i).y, r.row(i).z, 0.0];
        let t = cam.translation;
        let c = cam.position();
        CameraUniform {
            rot0: row(0),
            rot1: row(1),
            rot2: row(2),
            translation: [t.x, t.y, t.z, 0.0],
            campos: [c.x, c.y, c.z, 0.0],
            intrinsics: [cam.fx, cam.fy, cam.cx, cam.cy],
            width: cam.width as f32,
            height: cam.height as f32,
            count,
            groups_x,
        }
    }
}

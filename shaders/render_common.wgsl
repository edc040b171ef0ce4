// Declarations shared by both stages of the 3DGS renderer: concatenated
// before shaders/render_preprocess.wgsl and shaders/render_raster.wgsl by
// src/render/shaders.rs. Each struct mirrors the #[repr(C)] Rust type of
// the same name member for member; tests/shaders_naga.rs checks the names,
// offsets and sizes through naga.

// `CameraUniform` in src/render/shaders.rs (112 bytes).
struct CameraUniform {
    // Rows of the world→camera rotation (w unused).
    rot0: vec4<f32>,
    rot1: vec4<f32>,
    rot2: vec4<f32>,
    // World→camera translation (w unused).
    translation: vec4<f32>,
    // Camera centre in world space (w unused).
    campos: vec4<f32>,
    // fx, fy, cx, cy.
    intrinsics: vec4<f32>,
    width: f32,
    height: f32,
    // Number of Gaussians.
    count: u32,
    // Workgroups along x of the 2-D preprocess dispatch.
    groups_x: u32,
}

// `Splat2D` in src/render/mod.rs (48 bytes): its arrays `conic` and `color`
// are the scalars conic_a..conic_c and color_r..color_b here.
struct Splat2D {
    mean: vec2<f32>,
    depth: f32,
    radius: f32,
    conic_a: f32,
    conic_b: f32,
    conic_c: f32,
    opacity: f32,
    color_r: f32,
    color_g: f32,
    color_b: f32,
    pad: f32,
}

@group(0) @binding(0) var<uniform> cam: CameraUniform;

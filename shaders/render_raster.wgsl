// The raster stage of the 3DGS renderer: one instanced screen quad per
// visible splat, drawn front to back in depth order, and a fragment shader
// that evaluates the Gaussian at the pixel exactly as src/render/cpu.rs
// `rasterize` does. Compositing is fixed-function blending of premultiplied
// (colour·α, α) with src factor (1 − dst.α) and dst factor 1: after the pass
// the target holds (C, 1 − T); the host adds T·background.
//
// Concatenated after shaders/render_common.wgsl (`CameraUniform`, `Splat2D`,
// the camera binding) by src/render/shaders.rs.

@group(0) @binding(1) var<storage, read> splats: array<Splat2D>;
// Visible splats, front to back: instance k draws splats[order[k]].
@group(0) @binding(2) var<storage, read> order: array<u32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) @interpolate(flat) mean_radius: vec3<f32>,
    @location(1) @interpolate(flat) conic_opacity: vec4<f32>,
    @location(2) @interpolate(flat) color: vec3<f32>,
}

@vertex
fn vs_main(@builtin(vertex_index) v: u32, @builtin(instance_index) k: u32) -> VertexOut {
    let s = splats[order[k]];
    // Two triangles: corners (0,0) (1,0) (0,1) (0,1) (1,0) (1,1).
    let corner = vec2<f32>(f32((0x32u >> v) & 1u), f32((0x2cu >> v) & 1u));
    // Pixel (i, j) is sampled at the point (i, j), which is framebuffer
    // position (i + 0.5, j + 0.5). The quad spans the points mean ± (r + 0.5),
    // so every pixel with |p − mean| ≤ r has its centre strictly inside; the
    // fragment shader applies the exact test.
    let ext = s.radius + 0.5;
    let point = s.mean + (2.0 * corner - 1.0) * ext;
    let fb = point + 0.5;
    let ndc = vec2<f32>(2.0 * fb.x / cam.width - 1.0, 1.0 - 2.0 * fb.y / cam.height);
    var out: VertexOut;
    out.position = vec4<f32>(ndc, 0.0, 1.0);
    out.mean_radius = vec3<f32>(s.mean, s.radius);
    out.conic_opacity = vec4<f32>(s.conic_a, s.conic_b, s.conic_c, s.opacity);
    out.color = vec3<f32>(s.color_r, s.color_g, s.color_b);
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    // The pixel's integer coordinates (centres are at .5, exactly).
    let pix = floor(in.position.xy);
    let d = in.mean_radius.xy - pix;
    let r = in.mean_radius.z;
    if abs(d.x) > r || abs(d.y) > r {
        discard;
    }
    let con = in.conic_opacity;
    let power = -0.5 * (con.x * d.x * d.x + con.z * d.y * d.y) - con.y * d.x * d.y;
    if power > 0.0 {
        discard;
    }
    let alpha = min(0.99, con.w * exp(power));
    if alpha < 1.0 / 255.0 {
        discard;
    }
    return vec4<f32>(in.color * alpha, alpha);
}

// The present stage of the 3DGS renderer: one fullscreen triangle that
// reads the raster stage's float target (premultiplied C and A = 1 − T per
// pixel), composites it over the background as src/render/present.rs
// `composite` does (C + (1 − A)·background), lays the host's overlay over it
// (`overlay`), and writes the bytes src/render/image.rs `to_u8` would give
// (`present`): round(clamp(v, 0, 1)·255)/255. An sRGB target encodes what
// the shader returns, so for one the shader returns the sRGB decode of those
// bytes (`srgb_to_linear`) and the hardware encode gives the bytes back.
//
// Self-contained (it needs none of render_common.wgsl). Each function has a
// Rust reference of the same name in src/render/present.rs.

// `PresentUniform` in src/render/present.rs (32 bytes).
struct PresentUniform {
    // Background colour (w unused).
    background: vec4<f32>,
    // Overlay size in pixels, anchored at the top-left corner (0 × 0: none).
    overlay_w: u32,
    overlay_h: u32,
    // 1 when the target format is sRGB (the hardware encodes on write).
    srgb_target: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> u: PresentUniform;
// The raster stage's target, Rgba16Float or Rgba32Float (read with
// textureLoad: no sampler, no filtering).
@group(0) @binding(1) var frame: texture_2d<f32>;
// The overlay, one R8Uint texel per pixel: 0 none, 1 shade, 2 ink.
@group(0) @binding(2) var overlay_mask: texture_2d<u32>;

// What a shaded overlay texel keeps of the scene behind it.
const SHADE_KEEP: f32 = 0.35;

@vertex
fn vs_main(@builtin(vertex_index) v: u32) -> @builtin(position) vec4<f32> {
    // (−1, −1), (3, −1), (−1, 3): one triangle that covers the viewport.
    let xy = vec2<f32>(f32((v << 1u) & 2u), f32(v & 2u));
    return vec4<f32>(2.0 * xy - 1.0, 0.0, 1.0);
}

// C + (1 − A)·background.
fn composite(px: vec4<f32>, background: vec3<f32>) -> vec3<f32> {
    return px.rgb + (1.0 - px.a) * background;
}

// The overlay texel `m` over the colour `rgb`.
fn overlay(rgb: vec3<f32>, m: u32) -> vec3<f32> {
    if m == 1u {
        return rgb * SHADE_KEEP;
    }
    if m == 2u {
        return vec3<f32>(1.0);
    }
    return rgb;
}

// The byte value to_u8 gives, as a unorm value: k/255 with
// k = clamp(v, 0, 1)·255 rounded half away from zero, as Rust's f32::round
// does. WGSL's round() takes ties to even (76.5 → 76, where to_u8 gives 77),
// so the tie is decided here: v·255 − floor(v·255) is exact in f32.
fn present(rgb: vec3<f32>) -> vec3<f32> {
    let x = clamp(rgb, vec3<f32>(0.0), vec3<f32>(1.0)) * 255.0;
    let f = floor(x);
    let k = select(f, f + 1.0, x - f >= vec3<f32>(0.5));
    return k / 255.0;
}

// The sRGB decode (IEC 61966-2-1), the inverse of the hardware's encode.
fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(@builtin(position) position: vec4<f32>) -> @location(0) vec4<f32> {
    let p = vec2<u32>(floor(position.xy));
    var rgb = composite(textureLoad(frame, p, 0), u.background.rgb);
    if p.x < u.overlay_w && p.y < u.overlay_h {
        rgb = overlay(rgb, textureLoad(overlay_mask, p, 0).r);
    }
    var out = present(rgb);
    if u.srgb_target != 0u {
        out = srgb_to_linear(out);
    }
    return vec4<f32>(out, 1.0);
}

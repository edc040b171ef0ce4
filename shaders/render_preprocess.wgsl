// The preprocess stage of the 3DGS renderer: one thread per Gaussian,
// projecting it to a Splat2D. It mirrors src/render/cpu.rs `preprocess`
// formula by formula (the reference rasteriser's preprocessCUDA).
//
// Concatenated after shaders/sh_decode.wgsl and shaders/render_common.wgsl
// (`CameraUniform`, `Splat2D`, the camera binding) by src/render/shaders.rs:
// the entry point `preprocess_compressed` decodes SH-rest with
// `tq_sh_decode`, `preprocess` reads it from an f32 buffer.

// SH degree L in 0..=3.
override SH_DEGREE: u32;

const SH_C0: f32 = 0.28209479177387814;
const SH_C1: f32 = 0.4886025119029199;
const SH_C2 = array<f32, 5>(
    1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
    -1.0925484305920792, 0.5462742152960396,
);
const SH_C3 = array<f32, 7>(
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658,
    0.3731763325901154, -0.4570457994644658, 1.445305721320277,
    -0.5900435899266435,
);

// Floats per Gaussian in `gaussians`: position (3), log scale (3), rotation
// (w, x, y, z), opacity logit, DC colour (3). ATTR_STRIDE in
// src/render/shaders.rs.
const ATTR_STRIDE: u32 = 14u;
// Threads per workgroup: PREPROCESS_WORKGROUP in src/render/shaders.rs.
const WG: u32 = 64u;

@group(0) @binding(1) var<storage, read> gaussians: array<f32>;
// f32 SH-rest, rest_dim(SH_DEGREE) per Gaussian (entry `preprocess` only).
@group(0) @binding(2) var<storage, read> sh_rest: array<f32>;
@group(0) @binding(3) var<storage, read_write> splats: array<Splat2D>;
// Sort key per Gaussian: its depth when visible, −1 when culled.
@group(0) @binding(4) var<storage, read_write> depths: array<f32>;

fn rest_per_channel() -> u32 {
    return (SH_DEGREE + 1u) * (SH_DEGREE + 1u) - 1u;
}

// Coefficient k ≥ 1 of the three channels.
fn sh_coeff(rest: ptr<function, array<f32, 45>>, k: u32) -> vec3<f32> {
    let n = rest_per_channel();
    return vec3<f32>((*rest)[k - 1u], (*rest)[n + k - 1u], (*rest)[2u * n + k - 1u]);
}

// cpu::eval_sh: the standard 3DGS polynomial, +0.5, clamped at 0.
fn eval_sh(dc: vec3<f32>, rest: ptr<function, array<f32, 45>>, dir: vec3<f32>) -> vec3<f32> {
    var result = SH_C0 * dc;
    if SH_DEGREE > 0u {
        let x = dir.x;
        let y = dir.y;
        let z = dir.z;
        result = result - SH_C1 * y * sh_coeff(rest, 1u) + SH_C1 * z * sh_coeff(rest, 2u)
            - SH_C1 * x * sh_coeff(rest, 3u);
        if SH_DEGREE > 1u {
            let xx = x * x;
            let yy = y * y;
            let zz = z * z;
            let xy = x * y;
            let yz = y * z;
            let xz = x * z;
            result = result + SH_C2[0] * xy * sh_coeff(rest, 4u) + SH_C2[1] * yz * sh_coeff(rest, 5u)
                + SH_C2[2] * (2.0 * zz - xx - yy) * sh_coeff(rest, 6u)
                + SH_C2[3] * xz * sh_coeff(rest, 7u) + SH_C2[4] * (xx - yy) * sh_coeff(rest, 8u);
            if SH_DEGREE > 2u {
                result = result + SH_C3[0] * y * (3.0 * xx - yy) * sh_coeff(rest, 9u)
                    + SH_C3[1] * xy * z * sh_coeff(rest, 10u)
                    + SH_C3[2] * y * (4.0 * zz - xx - yy) * sh_coeff(rest, 11u)
                    + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh_coeff(rest, 12u)
                    + SH_C3[4] * x * (4.0 * zz - xx - yy) * sh_coeff(rest, 13u)
                    + SH_C3[5] * z * (xx - yy) * sh_coeff(rest, 14u)
                    + SH_C3[6] * x * (xx - 3.0 * yy) * sh_coeff(rest, 15u);
            }
        }
    }
    return max(result + 0.5, vec3<f32>(0.0));
}

// cpu::covariance_3d: M = R·diag(exp(log_scale)), Σ = M·Mᵀ, R from the
// normalised quaternion (w, x, y, z); a zero quaternion is the identity.
fn covariance_3d(log_scale: vec3<f32>, q_raw: vec4<f32>) -> mat3x3<f32> {
    let norm = sqrt(dot(q_raw, q_raw));
    var q = vec4<f32>(1.0, 0.0, 0.0, 0.0);
    if norm > 0.0 {
        q = q_raw / norm;
    }
    let w = q.x;
    let x = q.y;
    let y = q.z;
    let z = q.w;
    // Columns of R (WGSL matrices are column-major).
    let r = mat3x3<f32>(
        vec3<f32>(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y)),
        vec3<f32>(2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x)),
        vec3<f32>(2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)),
    );
    let s = exp(log_scale);
    let m = mat3x3<f32>(r[0] * s.x, r[1] * s.y, r[2] * s.z);
    return m * transpose(m);
}

fn culled() -> Splat2D {
    return Splat2D(vec2<f32>(0.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
}

fn attr3(base: u32) -> vec3<f32> {
    return vec3<f32>(gaussians[base], gaussians[base + 1u], gaussians[base + 2u]);
}

// cpu::preprocess for Gaussian i without the colour (zero): the geometry
// and culling. The entry points evaluate SH for visible splats only, so the
// compressed path decodes SH-rest only for them.
fn preprocess_geometry(i: u32) -> Splat2D {
    let base = i * ATTR_STRIDE;
    let p = attr3(base);
    let rot_t = mat3x3<f32>(cam.rot0.xyz, cam.rot1.xyz, cam.rot2.xyz);
    // rot_t holds the rows as columns, so R·p is p·rot_t (row vector).
    let t = p * rot_t + cam.translation.xyz;
    // Written so that a NaN depth is culled too.
    if !(t.z > 0.2) {
        return culled();
    }
    let fx = cam.intrinsics.x;
    let fy = cam.intrinsics.y;
    let tan_fovx = 0.5 * cam.width / fx;
    let tan_fovy = 0.5 * cam.height / fy;
    let limx = 1.3 * tan_fovx;
    let limy = 1.3 * tan_fovy;
    let tx = clamp(t.x / t.z, -limx, limx) * t.z;
    let ty = clamp(t.y / t.z, -limy, limy) * t.z;
    let tz2 = t.z * t.z;
    // J (2×3) as its two rows; T = J·R_cam row by row: row r of T is
    // Rᵀ·j_r, and rot_t (whose columns are R's rows) is Rᵀ.
    let j0 = vec3<f32>(fx / t.z, 0.0, -fx * tx / tz2);
    let j1 = vec3<f32>(0.0, fy / t.z, -fy * ty / tz2);
    let t0 = rot_t * j0;
    let t1 = rot_t * j1;
    let sigma = covariance_3d(attr3(base + 3u), vec4<f32>(
        gaussians[base + 6u], gaussians[base + 7u], gaussians[base + 8u], gaussians[base + 9u]));
    let st0 = sigma * t0;
    let st1 = sigma * t1;
    let a = dot(t0, st0) + 0.3;
    let b = dot(t0, st1);
    let c = dot(t1, st1) + 0.3;
    let det = a * c - b * b;
    if det == 0.0 {
        return culled();
    }
    let mid = 0.5 * (a + c);
    let disc = sqrt(max(0.1, mid * mid - det));
    let lambda1 = mid + disc;
    let lambda2 = mid - disc;
    let radius = ceil(3.0 * sqrt(max(lambda1, lambda2)));
    let mean = vec2<f32>(fx * t.x / t.z + cam.intrinsics.z, fy * t.y / t.z + cam.intrinsics.w);
    // Culled unless the radius square meets [0, W−1]×[0, H−1] (NaN fails).
    let on_screen = radius > 0.0 && mean.x + radius >= 0.0 && mean.x - radius <= cam.width - 1.0
        && mean.y + radius >= 0.0 && mean.y - radius <= cam.height - 1.0;
    if !on_screen {
        return culled();
    }
    let opacity = 1.0 / (1.0 + exp(-gaussians[base + 10u]));
    return Splat2D(mean, t.z, radius, c / det, -b / det, a / det, opacity, 0.0, 0.0, 0.0, 0.0);
}

// The SH colour of Gaussian i with its SH-rest in `rest`.
fn set_color(i: u32, s: ptr<function, Splat2D>, rest: ptr<function, array<f32, 45>>) {
    let base = i * ATTR_STRIDE;
    let dir = normalize(attr3(base) - cam.campos.xyz);
    let color = eval_sh(attr3(base + 11u), rest, dir);
    (*s).color_r = color.x;
    (*s).color_g = color.y;
    (*s).color_b = color.z;
}

fn index(wid: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * cam.groups_x + wid.x) * WG + lid.x;
}

fn store(i: u32, s: Splat2D) {
    splats[i] = s;
    if s.radius > 0.0 {
        depths[i] = s.depth;
    } else {
        depths[i] = -1.0;
    }
}

@compute @workgroup_size(WG)
fn preprocess(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, lid);
    if i >= cam.count {
        return;
    }
    var s = preprocess_geometry(i);
    if s.radius > 0.0 {
        var rest: array<f32, 45>;
        let n = 3u * rest_per_channel();
        for (var k = 0u; k < n; k++) {
            rest[k] = sh_rest[i * n + k];
        }
        set_color(i, &s, &rest);
    }
    store(i, s);
}

@compute @workgroup_size(WG)
fn preprocess_compressed(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = index(wid, lid);
    if i >= cam.count {
        return;
    }
    var s = preprocess_geometry(i);
    if s.radius > 0.0 {
        var rest: array<f32, 45>;
        if SH_DEGREE > 0u {
            tq_sh_decode(i, &rest);
        }
        set_color(i, &s, &rest);
    }
    store(i, s);
}

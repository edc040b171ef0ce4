//! The CPU reference rasteriser: the test oracle for the GPU renderer, which
//! mirrors [`preprocess`] and [`rasterize`] by name and formula.
//!
//! The maths follows `diff-gaussian-rasterization` (`forward.cu`, Kerbl et
//! al. 2023) in f32 and in the same order of operations, so that the two
//! agree to rounding. Where this module deviates from the CUDA reference:
//!
//! - **Footprint.** A splat touches exactly the pixels (px, py) with
//!   |px − mean.x| ≤ radius and |py − mean.y| ≤ radius (the radius square).
//!   The reference instead lets a splat touch every pixel of every 16×16
//!   tile that this square overlaps (`getRect`), so it also blends the far
//!   tails (α ≥ 1/255 there only for large opacities and small radii) in
//!   the rest of those tiles. Likewise a splat is culled when its radius
//!   square misses the pixel range [0, W−1]×[0, H−1], where the reference
//!   culls when the tile-rounded rectangle is empty. The tiles used here
//!   (binning) are only an acceleration and do not change any pixel.
//! - **Projection.** The mean is (fx·x/z + cx, fy·y/z + cy) with the
//!   camera's principal point, which for cx = (W − 1)/2, cy = (H − 1)/2 is
//!   the reference's `ndc2Pix(projmatrix · p)` mapping without its
//!   `1/(w + 10⁻⁷)` perspective-divide guard.
//! - **Division.** The conic is (c/det, −b/det, a/det); the reference
//!   multiplies by `1/det` (a last-bit difference).
//! - **Non-finite input.** A Gaussian whose camera depth, projected mean or
//!   radius is NaN is culled (the reference's comparisons let NaN through).

use glam::{Mat3, Vec3};
use rayon::prelude::*;

use super::{Camera, Image, Splat2D};
use crate::splat::scene::{SH_C0, Scene, rest_per_channel, sigmoid};

/// SH band-1 constant of the reference, √(3/(4π)).
pub const SH_C1: f32 = 0.488_602_51;
/// SH band-2 constants of the reference (`SH_C2` in `forward.cu`).
pub const SH_C2: [f32; 5] = [
    1.092_548_5,
    -1.092_548_5,
    0.315_391_57,
    -1.092_548_5,
    0.546_274_24,
];
/// SH band-3 constants of the reference (`SH_C3` in `forward.cu`).
pub const SH_C3: [f32; 7] = [
    -0.590_043_6,
    2.890_611_4,
    -0.457_045_8,
    0.373_176_34,
    -0.457_045_8,
    1.445_305_7,
    -0.590_043_6,
];

/// Gaussians closer than this camera depth are culled (`in_frustum`).
pub const NEAR: f32 = 0.2;
/// Pixel variance added to the projected covariance (low-pass dilation).
pub const DILATION: f32 = 0.3;
/// Fragments with alpha below this are skipped.
pub const MIN_ALPHA: f32 = 1.0 / 255.0;
/// Alpha is clamped to at most this.
pub const MAX_ALPHA: f32 = 0.99;
/// A pixel stops when the transmittance would fall below this.
pub const MIN_TRANSMITTANCE: f32 = 0.0001;
/// Side of the square tiles the rasteriser bins splats into.
pub const TILE: u32 = 16;

/// SH colour: `dc` and the rest (PLY channel-major layout, degree `degree`)
/// at the unit direction `dir` from the camera centre to the Gaussian, as
/// `computeColorFromSH`: the real SH expansion + 0.5, clamped at 0 (no upper
/// clamp).
///
/// Coefficient k ∈ 1..=15 of channel c is `rest[c·K + k − 1]` with
/// K = (degree+1)² − 1; coefficient 0 is `dc[c]`.
///
/// # Panics
/// If `degree > 3` or `rest.len() != 3·K`.
pub fn eval_sh(degree: u8, dc: [f32; 3], rest: &[f32], dir: Vec3) -> [f32; 3] {
    assert!(degree <= 3, "SH degree {degree} is above 3");
    let k = rest_per_channel(degree);
    assert_eq!(rest.len(), 3 * k, "SH-rest length for degree {degree}");
    let (x, y, z) = (dir.x, dir.y, dir.z);
    let (xx, yy, zz) = (x * x, y * y, z * z);
    let (xy, yz, xz) = (x * y, y * z, x * z);
    std::array::from_fn(|c| {
        let sh = &rest[c * k..(c + 1) * k];
        let mut r = SH_C0 * dc[c];
        if degree >= 1 {
            r = r - SH_C1 * y * sh[0] + SH_C1 * z * sh[1] - SH_C1 * x * sh[2];
        }
        if degree >= 2 {
            r = r
                + SH_C2[0] * xy * sh[3]
                + SH_C2[1] * yz * sh[4]
                + SH_C2[2] * (2.0 * zz - xx - yy) * sh[5]
                + SH_C2[3] * xz * sh[6]
                + SH_C2[4] * (xx - yy) * sh[7];
        }
        if degree >= 3 {
            r = r
                + SH_C3[0] * y * (3.0 * xx - yy) * sh[8]
                + SH_C3[1] * xy * z * sh[9]
                + SH_C3[2] * y * (4.0 * zz - xx - yy) * sh[10]
                + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh[11]
                + SH_C3[4] * x * (4.0 * zz - xx - yy) * sh[12]
                + SH_C3[5] * z * (xx - yy) * sh[13]
                + SH_C3[6] * x * (xx - 3.0 * yy) * sh[14];
        }
        (r + 0.5).max(0.0)
    })
}

/// 3D covariance Σ = R·diag(s²)·Rᵀ, upper triangle (xx, xy, xz, yy, yz,
/// zz), from log-scales (s = exp) and the raw quaternion (w, x, y, z),
/// normalised here (a zero quaternion is the identity), as
/// `computeCov3D`.
pub fn covariance_3d(log_scale: [f32; 3], rot: [f32; 4]) -> [f32; 6] {
    let norm = rot.iter().map(|v| v * v).sum::<f32>().sqrt();
    let [r, x, y, z] = if norm > 0.0 {
        rot.map(|v| v / norm)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    };
    let rm = [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - r * z),
            2.0 * (x * z + r * y),
        ],
        [
            2.0 * (x * y + r * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - r * x),
        ],
        [
            2.0 * (x * z - r * y),
            2.0 * (y * z + r * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ];
    let s = log_scale.map(f32::exp);
    // M = R·diag(s), Σ = M·Mᵀ.
    let m = rm.map(|row| [row[0] * s[0], row[1] * s[1], row[2] * s[2]]);
    let dot = |i: usize, j: usize| m[i][0] * m[j][0] + m[i][1] * m[j][1] + m[i][2] * m[j][2];
    [
        dot(0, 0),
        dot(0, 1),
        dot(0, 2),
        dot(1, 1),
        dot(1, 2),
        dot(2, 2),
    ]
}

/// The symmetric matrix of an upper triangle from [`covariance_3d`].
fn sym3(c: [f32; 6]) -> Mat3 {
    Mat3::from_cols(
        Vec3::new(c[0], c[1], c[2]),
        Vec3::new(c[1], c[3], c[4]),
        Vec3::new(c[2], c[4], c[5]),
    )
}

/// Preprocess Gaussian `i` of `scene` for `cam` (the GPU `preprocess`
/// stage mirrors this): EWA projection as `computeCov2D` with the
/// 1.3·tan(fov/2) clamp and the 0.3-pixel dilation, the conic, the radius
/// ceil(3·√λ_max), the projected mean, the sigmoid opacity and the SH
/// colour. Culled Gaussians (depth ≤ 0.2, singular 2D covariance, radius
/// square off the image, NaN) come back all zero (`radius == 0`).
///
/// # Panics
/// If `i` is out of range or the scene's arrays are inconsistent.
pub fn preprocess(scene: &Scene, i: usize, cam: &Camera) -> Splat2D {
    let culled = Splat2D {
        mean: [0.0; 2],
        depth: 0.0,
        radius: 0.0,
        conic: [0.0; 3],
        opacity: 0.0,
        color: [0.0; 3],
        _pad: 0.0,
    };
    let p = Vec3::from(scene.positions[i]);
    let t = cam.to_camera(p);
    if t.z.is_nan() || t.z <= NEAR {
        return culled;
    }

    // computeCov2D.
    let sigma = sym3(covariance_3d(scene.scales[i], scene.rotations[i]));
    let (tan_fovx, tan_fovy) = cam.tan_half_fov();
    let (limx, limy) = (1.3 * tan_fovx, 1.3 * tan_fovy);
    let tx = limx.min((-limx).max(t.x / t.z)) * t.z;
    let ty = limy.min((-limy).max(t.y / t.z)) * t.z;
    let tz2 = t.z * t.z;
    let (j00, j02) = (cam.fx / t.z, -(cam.fx * tx) / tz2);
    let (j11, j12) = (cam.fy / t.z, -(cam.fy * ty) / tz2);
    // T = J·W (2×3), W = the world → camera rotation.
    let w = cam.rotation;
    let t0 = j00 * w.row(0) + j02 * w.row(2);
    let t1 = j11 * w.row(1) + j12 * w.row(2);
    let (st0, st1) = (sigma * t0, sigma * t1);
    let a = t0.dot(st0) + DILATION;
    let b = t0.dot(st1);
    let c = t1.dot(st1) + DILATION;

    let det = a * c - b * b;
    if det == 0.0 {
        return culled;
    }
    let conic = [c / det, -b / det, a / det];
    let mid = 0.5 * (a + c);
    let disc = (mid * mid - det).max(0.1).sqrt();
    let (l1, l2) = (mid + disc, mid - disc);
    let radius = (3.0 * l1.max(l2).sqrt()).ceil();
    let mean = [cam.fx * t.x / t.z + cam.cx, cam.fy * t.y / t.z + cam.cy];

    // Culled unless the radius square meets [0, W−1]×[0, H−1] (NaN fails).
    let (xmax, ymax) = ((cam.width as f32) - 1.0, (cam.height as f32) - 1.0);
    let on_screen = radius > 0.0
        && mean[0] + radius >= 0.0
        && mean[0] - radius <= xmax
        && mean[1] + radius >= 0.0
        && mean[1] - radius <= ymax;
    if !on_screen {
        return culled;
    }

    let dir = (p - cam.position()).normalize();
    let color = eval_sh(scene.sh_degree, scene.dc[i], scene.rest(i), dir);
    Splat2D {
        mean,
        depth: t.z,
        radius,
        conic,
        opacity: sigmoid(scene.opacity[i]),
        color,
        _pad: 0.0,
    }
}

/// [`preprocess`] for every Gaussian, in parallel; entry i is Gaussian i.
pub fn preprocess_all(scene: &Scene, cam: &Camera) -> Vec<Splat2D> {
    (0..scene.len())
        .into_par_iter()
        .map(|i| preprocess(scene, i, cam))
        .collect()
}

/// A u32 whose unsigned order is the IEEE total order of `f`.
fn total_order_key(f: f32) -> u32 {
    let b = f.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Storage indices of the visible splats (`radius > 0`), sorted by
/// (depth, index) ascending: the order of the reference's stable radix sort
/// within a tile.
pub fn depth_order(splats: &[Splat2D]) -> Vec<u32> {
    let mut keys: Vec<u64> = splats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.radius > 0.0)
        .map(|(i, s)| (u64::from(total_order_key(s.depth)) << 32) | i as u64)
        .collect();
    keys.par_sort_unstable();
    keys.into_iter().map(|k| k as u32).collect()
}

/// A splat ready for blending, with its exact pixel footprint.
struct Prepared {
    /// Inclusive pixel ranges [x0, x1] × [y0, y1], inside the image.
    x0: u32,
    x1: u32,
    y0: u32,
    y1: u32,
    mean: [f32; 2],
    conic: [f32; 3],
    opacity: f32,
    color: [f32; 3],
}

/// The pixels p in [0, n − 1] with |p − m| ≤ r evaluated in f32, as an
/// inclusive range. The set is contiguous because f32 subtraction is
/// monotone; the bounds are found from an estimate and then made exact.
fn axis_range(m: f32, r: f32, n: u32) -> Option<(u32, u32)> {
    if !m.is_finite() || r.is_nan() || r <= 0.0 || n == 0 {
        return None;
    }
    let last = n as i64 - 1;
    let inside = |p: i64| (p as f32 - m).abs() <= r;
    let mut lo = ((m - r).floor().max(-1.0).min(n as f32)) as i64;
    let mut hi = ((m + r).ceil().max(-1.0).min(n as f32)) as i64;
    lo = lo.clamp(0, last);
    hi = hi.clamp(0, last);
    while lo > 0 && inside(lo - 1) {
        lo -= 1;
    }
    while lo <= last && !inside(lo) {
        lo += 1;
    }
    while hi < last && inside(hi + 1) {
        hi += 1;
    }
    while hi >= 0 && !inside(hi) {
        hi -= 1;
    }
    (lo <= hi).then_some((lo as u32, hi as u32))
}

/// Rasterise `splats` blended in the sequence `order` (front to back) into
/// a `width` × `height` image over `background`, as `renderCUDA`: for every
/// pixel (px, py) sampled at integer coordinates, each splat whose radius
/// square contains it adds colour·α·T with α = min(0.99, opacity·e^power),
/// power = −½(a·dx² + c·dy²) − b·dx·dy and d = mean − (px, py); fragments
/// with power > 0 or α < 1/255 are skipped, and the pixel stops (without
/// that fragment) once T·(1 − α) < 10⁻⁴. The result is C + T·background.
/// Splats with `radius ≤ 0` are ignored.
///
/// Splats are binned to 16×16 tiles in order and rows of tiles run in
/// parallel; every pixel sees the same sequence whatever the thread count,
/// so the image is deterministic.
///
/// # Panics
/// If an index in `order` is out of range.
pub fn rasterize(
    splats: &[Splat2D],
    order: &[u32],
    width: u32,
    height: u32,
    background: [f32; 3],
) -> Image {
    let mut image = Image::new(width, height);
    if width == 0 || height == 0 {
        return image;
    }
    let prepared: Vec<Prepared> = order
        .par_iter()
        .filter_map(|&k| {
            let s = &splats[k as usize];
            let (x0, x1) = axis_range(s.mean[0], s.radius, width)?;
            let (y0, y1) = axis_range(s.mean[1], s.radius, height)?;
            Some(Prepared {
                x0,
                x1,
                y0,
                y1,
                mean: s.mean,
                conic: s.conic,
                opacity: s.opacity,
                color: s.color,
            })
        })
        .collect();

    let tiles_x = width.div_ceil(TILE) as usize;
    let band_len = (TILE * width * 3) as usize;
    image
        .data
        .par_chunks_mut(band_len)
        .enumerate()
        .for_each(|(band, out)| {
            let y_start = band as u32 * TILE;
            let y_end = (y_start + TILE).min(height) - 1;
            // Bin the splats touching this band of rows to its tiles, in order.
            let mut tiles: Vec<Vec<u32>> = vec![Vec::new(); tiles_x];
            for (k, s) in prepared.iter().enumerate() {
                if s.y0 <= y_end && s.y1 >= y_start {
                    for tile in &mut tiles[(s.x0 / TILE) as usize..=(s.x1 / TILE) as usize] {
                        tile.push(k as u32);
                    }
                }
            }
            for (tx, list) in tiles.iter().enumerate() {
                let x_start = tx as u32 * TILE;
                let x_end = (x_start + TILE).min(width) - 1;
                for py in y_start..=y_end {
                    for px in x_start..=x_end {
                        let rgb = shade(&prepared, list, px, py, background);
                        let o = 3 * ((py - y_start) as usize * width as usize + px as usize);
                        out[o..o + 3].copy_from_slice(&rgb);
                    }
                }
            }
        });
    image
}

/// Front-to-back blending of one pixel over the splats `list` (indices into
/// `prepared`, in blending order).
#[inline]
fn shade(prepared: &[Prepared], list: &[u32], px: u32, py: u32, background: [f32; 3]) -> [f32; 3] {
    let (pxf, pyf) = (px as f32, py as f32);
    let mut t = 1.0f32;
    let mut c = [0.0f32; 3];
    for &k in list {
        let s = &prepared[k as usize];
        if px < s.x0 || px > s.x1 || py < s.y0 || py > s.y1 {
            continue;
        }
        let dx = s.mean[0] - pxf;
        let dy = s.mean[1] - pyf;
        let power = -0.5 * (s.conic[0] * dx * dx + s.conic[2] * dy * dy) - s.conic[1] * dx * dy;
        if power > 0.0 {
            continue;
        }
        let alpha = MAX_ALPHA.min(s.opacity * power.exp());
        if alpha < MIN_ALPHA {
            continue;
        }
        let test_t = t * (1.0 - alpha);
        if test_t < MIN_TRANSMITTANCE {
            break;
        }
        for (acc, col) in c.iter_mut().zip(s.color) {
            *acc += col * alpha * t;
        }
        t = test_t;
    }
    [
        c[0] + t * background[0],
        c[1] + t * background[1],
        c[2] + t * background[2],
    ]
}

/// [`preprocess_all`], [`depth_order`] and [`rasterize`] at the camera's
/// resolution.
pub fn render(scene: &Scene, cam: &Camera, background: [f32; 3]) -> Image {
    let splats = preprocess_all(scene, cam);
    let order = depth_order(&splats);
    rasterize(&splats, &order, cam.width, cam.height, background)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_reference_doubles_rounded_to_f32() {
        assert_eq!(SH_C1, 0.4886025119029199f64 as f32);
        let c2 = [
            1.0925484305920792f64,
            -1.0925484305920792,
            0.31539156525252005,
            -1.0925484305920792,
            0.5462742152960396,
        ];
        let c3 = [
            -0.5900435899266435f64,
            2.890611442640554,
            -0.4570457994644658,
            0.3731763325901154,
            -0.4570457994644658,
            1.445305721320277,
            -0.5900435899266435,
        ];
        assert_eq!(SH_C2, c2.map(|v| v as f32));
        assert_eq!(SH_C3, c3.map(|v| v as f32));
    }

    #[test]
    fn axis_range_is_exactly_the_pixel_predicate() {
        let n = 40u32;
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for _ in 0..20_000 {
            let m = next() * 60.0 - 10.0;
            let r = (next() * 8.0).ceil();
            let brute: Vec<u32> = (0..n).filter(|&p| (p as f32 - m).abs() <= r).collect();
            let got = axis_range(m, r, n);
            match got {
                None => assert!(brute.is_empty(), "m {m} r {r}"),
                Some((lo, hi)) => assert_eq!(brute, (lo..=hi).collect::<Vec<_>>(), "m {m} r {r}"),
            }
        }
        // Half-integer boundaries: |p − m| == r counts.
        assert_eq!(axis_range(5.5, 2.0, n), Some((4, 7)));
        assert_eq!(axis_range(5.0, 2.0, n), Some((3, 7)));
        assert_eq!(axis_range(-2.0, 2.0, n), Some((0, 0)));
        assert_eq!(axis_range(-2.5, 2.0, n), None);
        assert_eq!(axis_range(10.0, f32::INFINITY, n), Some((0, n - 1)));
        assert_eq!(axis_range(f32::NAN, 3.0, n), None);
    }

    #[test]
    fn total_order_key_sorts_like_total_cmp() {
        let mut v = [
            3.0f32,
            -1.0,
            0.0,
            -0.0,
            1e-30,
            7.5,
            f32::INFINITY,
            -f32::INFINITY,
            0.21,
        ];
        let mut by_key = v;
        by_key.sort_by_key(|&f| total_order_key(f));
        v.sort_by(f32::total_cmp);
        assert_eq!(v.map(f32::to_bits), by_key.map(f32::to_bits));
    }
}

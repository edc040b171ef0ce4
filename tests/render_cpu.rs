//! The CPU reference rasteriser, each stage checked against an independent
//! computation written out here (metrics and PNG I/O are in
//! tests/render_metrics.rs).

mod common;

use common::data::Rng;
use glam::{Mat3, Vec3};
use turboquant3d::render::cpu::{
    covariance_3d, depth_order, eval_sh, preprocess, preprocess_all, rasterize, render,
};
use turboquant3d::render::{Camera, Image, Splat2D, orbit};
use turboquant3d::splat::scene::{SH_C0, Scene, rest_per_channel, sigmoid};
use turboquant3d::splat::synth::{SynthConfig, generate};

/// One degree-0 Gaussian.
#[derive(Clone, Copy)]
struct G {
    pos: [f32; 3],
    scale: [f32; 3],
    rot: [f32; 4],
    opacity: f32,
    color: [f32; 3],
}

impl G {
    /// At camera-space (0, 0, z) (identity camera) with linear scales.
    fn on_axis(z: f32, scale: [f32; 3], opacity: f32, color: [f32; 3]) -> G {
        G {
            pos: [0.0, 0.0, z],
            scale,
            rot: [1.0, 0.0, 0.0, 0.0],
            opacity,
            color,
        }
    }
}

/// The opacity logit of an opacity.
fn logit(o: f32) -> f32 {
    (o / (1.0 - o)).ln()
}

/// A degree-0 scene; `color` is the intended (unclamped) SH colour.
fn scene_of(gs: &[G]) -> Scene {
    Scene {
        sh_degree: 0,
        positions: gs.iter().map(|g| g.pos).collect(),
        dc: gs
            .iter()
            .map(|g| g.color.map(|c| (c - 0.5) / SH_C0))
            .collect(),
        sh_rest: Vec::new(),
        opacity: gs.iter().map(|g| logit(g.opacity)).collect(),
        scales: gs.iter().map(|g| g.scale.map(f32::ln)).collect(),
        rotations: gs.iter().map(|g| g.rot).collect(),
        ..Scene::default()
    }
}

/// A camera at the origin looking down +z (world = camera space), focal `f`
/// in pixels, principal point at the centre.
fn axis_cam(w: u32, h: u32, f: f32) -> Camera {
    Camera {
        name: "axis".into(),
        width: w,
        height: h,
        fx: f,
        fy: f,
        cx: (w as f32 - 1.0) * 0.5,
        cy: (h as f32 - 1.0) * 0.5,
        rotation: Mat3::IDENTITY,
        translation: Vec3::ZERO,
    }
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

fn assert_rgb_close(got: [f32; 3], want: [f32; 3], tol: f32, what: &str) {
    for c in 0..3 {
        assert!(
            close(got[c], want[c], tol),
            "{what}: channel {c}: got {:?}, want {:?}",
            got,
            want
        );
    }
}

/// Front-to-back composite of (alpha, colour) layers over `bg`, applying the
/// 1/255 skip and the 10⁻⁴ early stop of the reference, in f64.
fn composite(layers: &[(f64, [f32; 3])], bg: [f32; 3]) -> [f32; 3] {
    let mut t = 1.0f64;
    let mut c = [0.0f64; 3];
    for &(a, col) in layers {
        let a = a.min(0.99);
        if a < 1.0 / 255.0 {
            continue;
        }
        if t * (1.0 - a) < 1e-4 {
            break;
        }
        for ch in 0..3 {
            c[ch] += col[ch] as f64 * a * t;
        }
        t *= 1.0 - a;
    }
    std::array::from_fn(|ch| (c[ch] + t * bg[ch] as f64) as f32)
}

#[test]
fn single_isotropic_gaussian_matches_the_closed_form() {
    // σ_px = f·s/z = 100·0.05/5 = 1 pixel; with the 0.3 dilation σ² = 1.3.
    let (f, s, z) = (100.0f32, 0.05f32, 5.0f32);
    let color = [0.9, 0.2, 0.4];
    let bg = [0.1, 0.3, 0.7];
    let opacity = sigmoid(10.0);
    let mut scene = scene_of(&[G::on_axis(z, [s; 3], 0.5, color)]);
    scene.opacity[0] = 10.0;
    let cam = axis_cam(65, 65, f);
    let img = render(&scene, &cam, bg);

    let sigma2 = ((f * s / z) as f64).powi(2) + 0.3;
    // λ_max = 1.3 + √0.1 (the 0.1 floor), radius = ceil(3·√1.616) = 4.
    let sp = preprocess(&scene, 0, &cam);
    assert_eq!(sp.radius, 4.0);
    assert!(close(sp.mean[0], 32.0, 1e-5) && close(sp.mean[1], 32.0, 1e-5));

    // Centre: α = min(0.99, o).
    let a0 = (opacity as f64).min(0.99);
    let want: [f32; 3] =
        std::array::from_fn(|c| (color[c] as f64 * a0 + (1.0 - a0) * bg[c] as f64) as f32);
    assert_rgb_close(img.pixel(32, 32), want, 1e-5, "centre");

    for (dx, dy) in [
        (1i32, 0i32),
        (2, 0),
        (3, 0),
        (-2, 0),
        (0, 2),
        (0, -3),
        (2, 2),
        (-1, 3),
    ] {
        let r2 = (dx * dx + dy * dy) as f64;
        let alpha = opacity as f64 * (-0.5 * r2 / sigma2).exp();
        let want = composite(&[(alpha, color)], bg);
        let (px, py) = ((32 + dx) as u32, (32 + dy) as u32);
        assert_rgb_close(
            img.pixel(px, py),
            want,
            2e-5,
            &format!("offset ({dx}, {dy})"),
        );
        // The falloff itself: α recovered from the red channel.
        let got_alpha = (img.pixel(px, py)[0] - bg[0]) as f64 / (color[0] - bg[0]) as f64;
        assert!(
            (got_alpha - alpha).abs() < 3e-5,
            "({dx},{dy}): α {got_alpha} vs {alpha}"
        );
    }
    // At 4 pixels α = o·e^(−16/2.6) ≈ 0.0021 < 1/255: skipped, background
    // exactly; at 5 pixels outside the radius.
    for (px, py) in [(36, 32), (28, 32), (32, 36), (37, 32), (32, 27), (0, 0)] {
        assert_eq!(img.pixel(px, py), bg, "pixel ({px}, {py})");
    }
}

/// Real spherical harmonics up to degree 3 from the standard table
/// (Wikipedia "Table of spherical harmonics", real form, x, y, z on the
/// unit sphere), times the Condon–Shortley sign (−1)^m that the 3DGS code
/// folds into its constants; index l² + l + m.
fn real_sh_basis(d: Vec3) -> [f64; 16] {
    use std::f64::consts::PI;
    let (x, y, z) = (d.x as f64, d.y as f64, d.z as f64);
    let cs = |m: i32| if m % 2 == 0 { 1.0 } else { -1.0 };
    let table = [
        0.5 * (1.0 / PI).sqrt(),
        // l = 1: m = −1, 0, 1
        (3.0 / (4.0 * PI)).sqrt() * y,
        (3.0 / (4.0 * PI)).sqrt() * z,
        (3.0 / (4.0 * PI)).sqrt() * x,
        // l = 2
        0.5 * (15.0 / PI).sqrt() * x * y,
        0.5 * (15.0 / PI).sqrt() * y * z,
        0.25 * (5.0 / PI).sqrt() * (3.0 * z * z - 1.0),
        0.5 * (15.0 / PI).sqrt() * x * z,
        0.25 * (15.0 / PI).sqrt() * (x * x - y * y),
        // l = 3
        0.25 * (35.0 / (2.0 * PI)).sqrt() * y * (3.0 * x * x - y * y),
        0.5 * (105.0 / PI).sqrt() * x * y * z,
        0.25 * (21.0 / (2.0 * PI)).sqrt() * y * (5.0 * z * z - 1.0),
        0.25 * (7.0 / PI).sqrt() * (5.0 * z * z * z - 3.0 * z),
        0.25 * (21.0 / (2.0 * PI)).sqrt() * x * (5.0 * z * z - 1.0),
        0.25 * (105.0 / PI).sqrt() * (x * x - y * y) * z,
        0.25 * (35.0 / (2.0 * PI)).sqrt() * x * (x * x - 3.0 * y * y),
    ];
    std::array::from_fn(|i| {
        let l = (i as f64).sqrt().floor() as i32;
        let m = i as i32 - l * l - l;
        cs(m) * table[i]
    })
}

#[test]
fn the_test_sh_table_is_orthonormal() {
    // Midpoint quadrature over the sphere; guards the table used below.
    let (nt, np) = (240, 480);
    let mut gram = [[0.0f64; 16]; 16];
    for i in 0..nt {
        let th = (i as f64 + 0.5) * std::f64::consts::PI / nt as f64;
        for j in 0..np {
            let ph = (j as f64 + 0.5) * std::f64::consts::TAU / np as f64;
            let d = Vec3::new(
                (th.sin() * ph.cos()) as f32,
                (th.sin() * ph.sin()) as f32,
                th.cos() as f32,
            );
            let y = real_sh_basis(d);
            let w =
                th.sin() * (std::f64::consts::PI / nt as f64) * (std::f64::consts::TAU / np as f64);
            for a in 0..16 {
                for b in 0..16 {
                    gram[a][b] += w * y[a] * y[b];
                }
            }
        }
    }
    for (a, row) in gram.iter().enumerate() {
        for (b, g) in row.iter().enumerate() {
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((g - want).abs() < 1e-3, "<Y{a}, Y{b}> = {g}");
        }
    }
}

#[test]
fn eval_sh_matches_the_real_sh_basis_at_every_degree() {
    let mut rng = Rng(7);
    for degree in 0..=3u8 {
        let k = rest_per_channel(degree);
        for trial in 0..500 {
            let dir = rng.unit_dir();
            // Every fifth trial pushes a channel well below zero.
            let shift = if trial % 5 == 0 { -4.0 } else { 1.0 };
            let dc: [f32; 3] = std::array::from_fn(|_| rng.range(-1.0, 1.0) as f32 + shift);
            let rest: Vec<f32> = (0..3 * k).map(|_| rng.range(-1.0, 1.0) as f32).collect();
            let y = real_sh_basis(dir);
            let got = eval_sh(degree, dc, &rest, dir);
            for c in 0..3 {
                let mut v = y[0] * dc[c] as f64;
                for j in 1..=k {
                    v += y[j] * rest[c * k + j - 1] as f64;
                }
                let want = (v + 0.5).max(0.0) as f32;
                assert!(
                    close(got[c], want, 2e-5),
                    "degree {degree} channel {c} dir {dir}: {} vs {want}",
                    got[c]
                );
            }
        }
    }
    assert_eq!(
        eval_sh(0, [-10.0, 0.0, 10.0], &[], Vec3::Z),
        [0.0, 0.5, 0.5 + 10.0 * SH_C0]
    );
}

#[test]
fn eval_sh_degree_truncation_is_consistent() {
    let mut rng = Rng(11);
    let k3 = rest_per_channel(3);
    for _ in 0..200 {
        let dir = rng.unit_dir();
        let dc: [f32; 3] = std::array::from_fn(|_| rng.range(0.0, 2.0) as f32);
        let full: Vec<f32> = (0..3 * k3).map(|_| rng.range(-1.0, 1.0) as f32).collect();
        for l in 0..=3u8 {
            let kl = rest_per_channel(l);
            // Degree l: each channel's first kl coefficients.
            let truncated: Vec<f32> = (0..3)
                .flat_map(|c| full[c * k3..c * k3 + kl].to_vec())
                .collect();
            // Degree 3 with the bands above l zeroed.
            let zeroed: Vec<f32> = (0..3 * k3)
                .map(|i| if i % k3 < kl { full[i] } else { 0.0 })
                .collect();
            assert_eq!(
                eval_sh(l, dc, &truncated, dir),
                eval_sh(3, dc, &zeroed, dir),
                "degree {l}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "SH-rest length")]
fn eval_sh_rejects_a_rest_of_the_wrong_degree() {
    eval_sh(2, [0.0; 3], &[0.0; 45], Vec3::Z);
}

#[test]
fn covariance_3d_rotations_swap_the_variances() {
    let ls = [1.0f32.ln(), 2.0f32.ln(), 3.0f32.ln()];
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let check = |rot: [f32; 4], want: [f32; 6], what: &str| {
        let got = covariance_3d(ls, rot);
        for i in 0..6 {
            assert!(close(got[i], want[i], 1e-5), "{what}: {got:?} vs {want:?}");
        }
    };
    check(
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 4.0, 0.0, 9.0],
        "identity",
    );
    check([0.0; 4], [1.0, 0.0, 0.0, 4.0, 0.0, 9.0], "zero quaternion");
    // 90° about z: x → y, y → −x, so var(x) = 4, var(y) = 1.
    check(
        [h, 0.0, 0.0, h],
        [4.0, 0.0, 0.0, 1.0, 0.0, 9.0],
        "90° about z",
    );
    // Unnormalised (× 3) and the opposite sign give the same rotation.
    check(
        [3.0 * h, 0.0, 0.0, 3.0 * h],
        [4.0, 0.0, 0.0, 1.0, 0.0, 9.0],
        "90° about z, × 3",
    );
    check([-h, 0.0, 0.0, -h], [4.0, 0.0, 0.0, 1.0, 0.0, 9.0], "−q");
    // 90° about x: var(y) = 9, var(z) = 4; about y: var(x) = 9, var(z) = 1.
    check(
        [h, h, 0.0, 0.0],
        [1.0, 0.0, 0.0, 9.0, 0.0, 4.0],
        "90° about x",
    );
    check(
        [h, 0.0, h, 0.0],
        [9.0, 0.0, 0.0, 4.0, 0.0, 1.0],
        "90° about y",
    );
    // 45° about z: the xy block is R·diag(1, 4)·Rᵀ = [[2.5, 1.5], [1.5, 2.5]].
    let (c, s) = (
        (std::f32::consts::PI / 8.0).cos(),
        (std::f32::consts::PI / 8.0).sin(),
    );
    check(
        [c, 0.0, 0.0, s],
        [2.5, -1.5, 0.0, 2.5, 0.0, 9.0],
        "45° about z",
    );
}

/// A Gaussian on the axis at depth z whose projected footprint has pixel
/// standard deviations (sx, sy) rotated in the image plane by `theta`.
fn footprint(z: f32, f: f32, sx: f32, sy: f32, theta: f32, opacity: f32, color: [f32; 3]) -> G {
    let mut g = G::on_axis(z, [sx * z / f, sy * z / f, 0.02], opacity, color);
    g.rot = [(0.5 * theta).cos(), 0.0, 0.0, (0.5 * theta).sin()];
    g
}

/// α of such a footprint at pixel offset (dx, dy) from its mean, from the
/// 2D covariance R₂·diag(sx², sy²)·R₂ᵀ + 0.3·I written out by hand.
fn footprint_alpha(sx: f32, sy: f32, theta: f32, opacity: f32, dx: f64, dy: f64) -> f64 {
    let (c, s) = ((theta as f64).cos(), (theta as f64).sin());
    let (vx, vy) = ((sx as f64).powi(2), (sy as f64).powi(2));
    let a = c * c * vx + s * s * vy + 0.3;
    let b = c * s * (vx - vy);
    let d = s * s * vx + c * c * vy + 0.3;
    let det = a * d - b * b;
    let q = (d * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det;
    opacity as f64 * (-0.5 * q).exp()
}

#[test]
fn conic_and_radius_of_a_rotated_footprint() {
    let f = 100.0;
    let cam = axis_cam(65, 65, f);
    let (sx, sy, theta) = (2.0f32, 0.75f32, 30f32.to_radians());
    let scene = scene_of(&[
        footprint(4.0, f, sx, sy, theta, 0.5, [0.5; 3]),
        footprint(3.0, f, 3.6f32.sqrt(), 3.6f32.sqrt(), 0.0, 0.5, [0.5; 3]),
    ]);
    let sp = preprocess(&scene, 0, &cam);
    // Σ₂ = R₂·diag(4, 0.5625)·R₂ᵀ + 0.3·I, conic = Σ₂⁻¹ as (a, b, c).
    let (c, s) = ((theta as f64).cos(), (theta as f64).sin());
    let (vx, vy) = ((sx as f64).powi(2), (sy as f64).powi(2));
    let (a, b, d) = (
        c * c * vx + s * s * vy + 0.3,
        c * s * (vx - vy),
        s * s * vx + c * c * vy + 0.3,
    );
    let det = a * d - b * b;
    let want = [d / det, -b / det, a / det];
    for i in 0..3 {
        assert!(
            (sp.conic[i] as f64 - want[i]).abs() < 1e-5,
            "{:?} vs {want:?}",
            sp.conic
        );
    }
    // Eigenvalues 4.3 and 0.8625: radius ceil(3·√4.3) = ceil(6.22) = 7.
    assert_eq!(sp.radius, 7.0);
    assert!((sp.depth - 4.0).abs() < 1e-6 && (sp.opacity - 0.5).abs() < 1e-6);
    // Isotropic σ² = 3.6 px²: both eigenvalues 3.9, so the 0.1 floor
    // applies: λ = 3.9 + √0.1, radius ceil(3·2.0533) = ceil(6.16) = 7
    // (without the floor ceil(3·1.975) = 6).
    assert_eq!(preprocess(&scene, 1, &cam).radius, 7.0);
}

#[test]
fn off_axis_jacobian_is_clamped_to_1_3_tan_half_fov() {
    // 64×48 at f = 100: tan(fov/2) = (0.32, 0.24), limits (0.416, 0.312).
    let f = 100.0f32;
    let cam = axis_cam(64, 48, f);
    let s = 0.3f32;
    let mut right = G::on_axis(1.0, [s; 3], 0.5, [0.5; 3]);
    right.pos = [0.6, 0.0, 1.0];
    let mut up = right;
    up.pos = [0.0, -0.5, 1.0];
    let scene = scene_of(&[right, up]);
    // Σ₃ = s²·I and J = (f/z)·[[1, 0, −u], [0, 1, −v]] with (u, v) the
    // clamped x/z, y/z: Σ₂ = (s·f/z)²·[[1 + u², u·v], [u·v, 1 + v²]] + 0.3·I.
    let k = ((s * f) as f64).powi(2);
    for (i, (u, v), mean) in [
        (0usize, (0.416f64, 0.0f64), [91.5f32, 23.5f32]),
        (1, (0.0, -0.312), [31.5, -26.5]),
    ] {
        let sp = preprocess(&scene, i, &cam);
        let (a, c) = (k * (1.0 + u * u) + 0.3, k * (1.0 + v * v) + 0.3);
        assert!(
            (sp.conic[0] as f64 * a - 1.0).abs() < 1e-4,
            "{i}: {:?}",
            sp.conic
        );
        assert!(
            (sp.conic[2] as f64 * c - 1.0).abs() < 1e-4,
            "{i}: {:?}",
            sp.conic
        );
        assert!(sp.conic[1].abs() < 1e-9);
        assert_eq!(sp.radius, (3.0 * a.max(c).sqrt()).ceil() as f32, "{i}");
        // The mean uses the unclamped position.
        assert!(
            close(sp.mean[0], mean[0], 1e-4) && close(sp.mean[1], mean[1], 1e-4),
            "{i}: {:?}",
            sp.mean
        );
    }
}

#[test]
fn a_posed_camera_equals_the_scene_moved_into_camera_space() {
    let cam = Camera::look_at(
        "posed".into(),
        Vec3::new(2.0, -1.0, -4.0),
        Vec3::new(0.2, 0.1, 0.3),
        Vec3::NEG_Y,
        0.9,
        80,
        60,
    );
    let mut rng = Rng(17);
    let gs: Vec<G> = (0..60)
        .map(|_| G {
            pos: [
                rng.range(-1.0, 1.0) as f32,
                rng.range(-1.0, 1.0) as f32,
                rng.range(-1.0, 1.0) as f32,
            ],
            scale: std::array::from_fn(|_| rng.range(0.01, 0.2) as f32),
            rot: std::array::from_fn(|_| rng.range(-1.0, 1.0) as f32),
            opacity: rng.range(0.1, 0.9) as f32,
            color: std::array::from_fn(|_| rng.range(0.0, 1.0) as f32),
        })
        .collect();
    // The same Gaussians in camera space: p' = R·p + t, q' = q_R·q.
    let q_cam = glam::Quat::from_mat3(&cam.rotation);
    let moved: Vec<G> = gs
        .iter()
        .map(|g| {
            let q = glam::Quat::from_xyzw(g.rot[1], g.rot[2], g.rot[3], g.rot[0]);
            let q2 = q_cam * q;
            G {
                pos: cam.to_camera(Vec3::from(g.pos)).into(),
                rot: [q2.w, q2.x, q2.y, q2.z],
                ..*g
            }
        })
        .collect();
    let at_origin = Camera {
        rotation: Mat3::IDENTITY,
        translation: Vec3::ZERO,
        ..cam.clone()
    };
    let (a, b) = (
        preprocess_all(&scene_of(&gs), &cam),
        preprocess_all(&scene_of(&moved), &at_origin),
    );
    let mut visible = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.radius, y.radius, "{i}");
        visible += (x.radius > 0.0) as usize;
        let rel = |u: f32, v: f32| (u - v).abs() <= 1e-4 * (1.0 + u.abs().max(v.abs()));
        for (u, v) in x
            .mean
            .iter()
            .chain(&x.conic)
            .chain([&x.depth])
            .zip(y.mean.iter().chain(&y.conic).chain([&y.depth]))
        {
            assert!(rel(*u, *v), "{i}: {x:?} vs {y:?}");
        }
    }
    assert!(visible > 40, "{visible} visible");

    // View-dependent colour from the world-space direction camera → Gaussian:
    // red = 0.5 − C1·dir.x·0.4 (m = 1), green = 0.5 + C1·dir.z·0.4 (m = 0),
    // for a camera at (−5, 0, 0) looking along +x (not the identity pose).
    let eye = Vec3::new(-5.0, 0.0, 0.0);
    let cam = Camera::look_at("side".into(), eye, Vec3::ZERO, Vec3::NEG_Y, 0.9, 64, 64);
    let mut scene = scene_of(&[G::on_axis(0.0, [0.05; 3], 0.5, [0.5; 3]); 2]);
    scene.positions = vec![[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]];
    scene.sh_degree = 1;
    scene.sh_rest = vec![0.0; 18];
    for g in 0..2 {
        scene.sh_rest[9 * g + 2] = 0.4; // red, m = 1 (x)
        scene.sh_rest[9 * g + 3 + 1] = 0.4; // green, m = 0 (z)
    }
    let splats = preprocess_all(&scene, &cam);
    for (i, s) in splats.iter().enumerate() {
        let dir = (Vec3::from(scene.positions[i]) - eye).normalize();
        let c1 = 0.488_602_5f32;
        let want = [0.5 - c1 * dir.x * 0.4, 0.5 + c1 * dir.z * 0.4, 0.5];
        assert_rgb_close(s.color, want, 1e-5, &format!("Gaussian {i}"));
    }
}

#[test]
fn overlapping_anisotropic_splats_composite_front_to_back() {
    let f = 100.0;
    let cam = axis_cam(65, 65, f);
    let bg = [0.2, 0.25, 0.3];
    let (ca, cb) = ([0.9, 0.1, 0.2], [0.1, 0.8, 0.3]);
    let (oa, ob) = (0.6, 0.77);
    let (ta, tb) = (30f32.to_radians(), -50f32.to_radians());
    let a_at = |z| footprint(z, f, 2.0, 0.75, ta, oa, ca);
    let b_at = |z| footprint(z, f, 0.6, 1.5, tb, ob, cb);
    let a_front = render(&scene_of(&[a_at(4.0), b_at(6.0)]), &cam, bg);
    let b_front = render(&scene_of(&[a_at(6.0), b_at(4.0)]), &cam, bg);
    // Storage order does not matter, depth does.
    assert_eq!(
        render(&scene_of(&[b_at(6.0), a_at(4.0)]), &cam, bg),
        a_front
    );

    let mut differs = 0;
    for dy in -2i32..=2 {
        for dx in -2i32..=2 {
            // d = mean − pixel.
            let (ddx, ddy) = (-dx as f64, -dy as f64);
            let alpha_a = footprint_alpha(2.0, 0.75, ta, oa, ddx, ddy);
            let alpha_b = footprint_alpha(0.6, 1.5, tb, ob, ddx, ddy);
            let (px, py) = ((32 + dx) as u32, (32 + dy) as u32);
            let want_a = composite(&[(alpha_a, ca), (alpha_b, cb)], bg);
            let want_b = composite(&[(alpha_b, cb), (alpha_a, ca)], bg);
            assert_rgb_close(
                a_front.pixel(px, py),
                want_a,
                3e-5,
                &format!("A in front at ({dx},{dy})"),
            );
            assert_rgb_close(
                b_front.pixel(px, py),
                want_b,
                3e-5,
                &format!("B in front at ({dx},{dy})"),
            );
            if (want_a[0] - want_b[0]).abs() > 1e-2 {
                differs += 1;
            }
        }
    }
    assert!(differs > 10, "the two orders should look different");
}

#[test]
fn early_stop_drops_the_fragment_that_would_cross_the_threshold() {
    let cam = axis_cam(33, 33, 100.0);
    let bg = [0.5, 0.5, 0.5];
    let (r, g, b) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]);
    let s = [0.1; 3];
    // α = 0.99, 0.9, 0.99: T = 0.01 → 0.001, then 10⁻⁵ < 10⁻⁴ stops the
    // pixel before the third (blue) splat.
    let scene = scene_of(&[
        G::on_axis(5.0, s, 0.9, g),
        G::on_axis(3.0, s, 0.9999, r),
        G::on_axis(7.0, s, 0.9999, b),
    ]);
    let got = render(&scene, &cam, bg).pixel(16, 16);
    let want = composite(&[(0.99, r), (0.9, g), (0.99, b)], bg);
    assert_rgb_close(got, want, 1e-6, "three layers");
    // Blue is the background seen through T = 0.001 only; had the third
    // splat been blended it would be 0.99·0.001 + 0.5·10⁻⁵.
    assert!(close(got[2], 0.5 * 0.001, 1e-6), "blue {}", got[2]);

    // Three opaque splats: in f32, (1 − 0.99)² = 9.99998·10⁻⁵ < 10⁻⁴, so
    // already the second one is dropped, as in the reference.
    let scene = scene_of(&[
        G::on_axis(3.0, s, 0.9999, r),
        G::on_axis(4.0, s, 0.9999, g),
        G::on_axis(5.0, s, 0.9999, b),
    ]);
    let got = render(&scene, &cam, bg).pixel(16, 16);
    let t1 = 1.0f32 - 0.99f32;
    assert_rgb_close(
        got,
        [0.99 + t1 * 0.5, t1 * 0.5, t1 * 0.5],
        1e-6,
        "opaque stack",
    );
}

#[test]
fn fragments_below_one_over_255_are_skipped() {
    let cam = axis_cam(33, 33, 100.0);
    let bg = [0.1, 0.2, 0.3];
    let s = [0.1; 3];
    let back = G::on_axis(5.0, s, 0.5, [0.2, 0.9, 0.4]);
    let alone = render(&scene_of(&[back]), &cam, bg);
    // α = 0.0035 < 1/255 in front: no effect at all at the centre.
    let faint = G::on_axis(3.0, s, 0.0035, [1.0, 0.0, 1.0]);
    let with_faint = render(&scene_of(&[faint, back]), &cam, bg);
    assert_eq!(with_faint.pixel(16, 16), alone.pixel(16, 16));
    assert_eq!(with_faint, alone);
    // α = 0.0045 > 1/255: blended as the two-layer composite predicts.
    let light = G::on_axis(3.0, s, 0.0045, [1.0, 0.0, 1.0]);
    let got = render(&scene_of(&[light, back]), &cam, bg).pixel(16, 16);
    let want = composite(&[(0.0045, light.color), (0.5, back.color)], bg);
    assert_rgb_close(got, want, 1e-6, "α just above 1/255");
    assert!(got != alone.pixel(16, 16));
}

#[test]
fn culling_behind_near_and_off_screen() {
    let cam = axis_cam(64, 48, 100.0);
    let s = [0.01; 3];
    let mut off_left_visible = G::on_axis(1.0, s, 0.5, [0.5; 3]);
    // mean.x = 100·(−0.35) + 31.5 = −3.5, radius 4 (worked out as in the
    // isotropic test): the square reaches pixel column 0.
    off_left_visible.pos = [-0.35, 0.0, 1.0];
    let mut off_left_culled = off_left_visible;
    off_left_culled.pos = [-0.37, 0.0, 1.0]; // mean.x = −5.5
    let mut right = off_left_visible;
    right.pos = [3.0, 0.0, 1.0];
    let mut below = off_left_visible;
    below.pos = [0.0, 2.0, 1.0];
    let mut nan = off_left_visible;
    nan.pos = [f32::NAN, 0.0, 1.0];
    let gs = [
        G::on_axis(-1.0, s, 0.5, [0.5; 3]),
        G::on_axis(0.2, s, 0.5, [0.5; 3]),
        G::on_axis(0.21, s, 0.5, [0.5; 3]),
        off_left_visible,
        off_left_culled,
        right,
        below,
        nan,
        G::on_axis(0.0, s, 0.5, [0.5; 3]),
    ];
    let scene = scene_of(&gs);
    let splats = preprocess_all(&scene, &cam);
    let visible: Vec<bool> = splats.iter().map(|s| s.radius > 0.0).collect();
    assert_eq!(
        visible,
        [false, false, true, true, false, false, false, false, false]
    );
    assert_eq!(splats[3].radius, 4.0);
    assert!(close(splats[3].mean[0], -3.5, 1e-4));
    for (i, s) in splats.iter().enumerate().filter(|(_, s)| s.radius == 0.0) {
        assert_eq!(
            *s,
            bytemuck::Zeroable::zeroed(),
            "culled splat {i} is all zero"
        );
    }
    assert_eq!(depth_order(&splats), vec![2, 3]);
    for (i, s) in splats.iter().enumerate() {
        assert_eq!(*s, preprocess(&scene, i, &cam));
    }
}

#[test]
fn depth_order_sorts_by_depth_then_index() {
    let mk = |depth: f32, radius: f32| Splat2D {
        mean: [0.0; 2],
        depth,
        radius,
        conic: [1.0, 0.0, 1.0],
        opacity: 0.5,
        color: [0.0; 3],
        _pad: 0.0,
    };
    let splats = [
        mk(3.0, 1.0),
        mk(1.0, 2.0),
        mk(3.0, 1.0),
        mk(0.5, 0.0),
        mk(2.0, 5.0),
        mk(1.0, 1.0),
    ];
    assert_eq!(depth_order(&splats), vec![1, 5, 4, 0, 2]);
}

/// The rasteriser without tiles: every pixel walks the whole order.
fn naive_rasterize(splats: &[Splat2D], order: &[u32], w: u32, h: u32, bg: [f32; 3]) -> Image {
    let mut img = Image::new(w, h);
    for py in 0..h {
        for px in 0..w {
            let (pxf, pyf) = (px as f32, py as f32);
            let mut t = 1.0f32;
            let mut c = [0.0f32; 3];
            for &k in order {
                let s = &splats[k as usize];
                if s.radius.is_nan()
                    || s.radius <= 0.0
                    || (pxf - s.mean[0]).abs() > s.radius
                    || (pyf - s.mean[1]).abs() > s.radius
                {
                    continue;
                }
                let (dx, dy) = (s.mean[0] - pxf, s.mean[1] - pyf);
                let power =
                    -0.5 * (s.conic[0] * dx * dx + s.conic[2] * dy * dy) - s.conic[1] * dx * dy;
                if power > 0.0 {
                    continue;
                }
                let alpha = (s.opacity * power.exp()).min(0.99);
                if alpha < 1.0 / 255.0 {
                    continue;
                }
                let test_t = t * (1.0 - alpha);
                if test_t < 1e-4 {
                    break;
                }
                for (acc, col) in c.iter_mut().zip(s.color) {
                    *acc += col * alpha * t;
                }
                t = test_t;
            }
            let i = 3 * (py * w + px) as usize;
            for ch in 0..3 {
                img.data[i + ch] = c[ch] + t * bg[ch];
            }
        }
    }
    img
}

fn synth(count: usize, degree: u8, seed: u64) -> Scene {
    generate(&SynthConfig {
        count,
        sh_degree: degree,
        seed,
    })
}

#[test]
fn tiled_rasterizer_equals_the_naive_one() {
    let scene = synth(3000, 3, 5);
    let bg = [0.3, 0.1, 0.6];
    for (k, cam) in orbit(&scene.positions, 3, 70, 45).iter().enumerate() {
        let splats = preprocess_all(&scene, cam);
        let order = depth_order(&splats);
        assert!(order.len() > 500, "view {k}: {} visible", order.len());
        let tiled = rasterize(&splats, &order, cam.width, cam.height, bg);
        assert_eq!(
            tiled,
            naive_rasterize(&splats, &order, cam.width, cam.height, bg),
            "view {k}"
        );
        assert_eq!(tiled, render(&scene, cam, bg));
    }
    // Empty inputs.
    assert_eq!(rasterize(&[], &[], 5, 3, bg).pixel(4, 2), bg);
    assert!(rasterize(&[], &[], 0, 3, bg).data.is_empty());
}

#[test]
fn render_does_not_depend_on_the_thread_count() {
    let scene = synth(20_000, 3, 9);
    let cam = &orbit(&scene.positions, 4, 128, 96)[1];
    let bg = [0.0, 0.0, 0.0];
    let one = common::on_threads(1, || render(&scene, cam, bg));
    let many = render(&scene, cam, bg);
    assert_eq!(one, many);
    let lit = many.data.iter().filter(|&&v| v > 0.1).count();
    assert!(lit > many.data.len() / 10, "only {lit} lit values");
}

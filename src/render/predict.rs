//! The norm-separation bound (docs/THEORY.md §11): the image error that an
//! SH-rest error of ‖e_i‖² per Gaussian causes, before compressing anything.
//!
//! A pixel's colour is Σ_i w_i·c_i + T·bg with blending weights
//! w_i = α_i·T_i ≥ 0, Σ w_i ≤ 1, that do not depend on colour. The real SH
//! basis is orthonormal, so a direction-averaged (and, for an isotropic error,
//! any-direction) colour error of Gaussian i is E‖δc_i‖² = E‖e_i‖²/(4π) over
//! the three channels, and TurboQuant makes E‖e_i‖² = γ_i²·d·C(d, b). Then
//!
//! - bound (Jensen, Σw ≤ 1): E‖δC(p)‖² ≤ Σ_i w_i(p)·E‖δc_i‖²;
//! - estimate (errors independent across Gaussians, zero mean):
//!   E‖δC(p)‖² ≈ Σ_i w_i(p)²·E‖δc_i‖².
//!
//! Both need only the weights of the uncompressed scene, which
//! [`weight_sums`] accumulates with the rasteriser's own loop for one view,
//! and [`weight_sums_over_views`] and [`coverage_over_views`] over a set of
//! views of a scene.

use rayon::prelude::*;

use std::collections::BTreeMap;

use crate::render::cpu::{self, MAX_ALPHA, MIN_ALPHA, MIN_TRANSMITTANCE};
use crate::render::{Camera, Splat2D};
use crate::splat::Scene;

/// Pixels per tile side when binning splats.
const TILE: u32 = 16;

/// Runs the compositing loop of [`cpu::rasterize`](crate::render::cpu::rasterize)
/// over every pixel, calling `visit(acc, splat, w)` for each fragment that
/// is blended, with its weight w = α·T. Each row of tiles folds into its own
/// accumulator (returned in row order, so results do not depend on the
/// thread count).
fn for_each_fragment<A, F>(
    splats: &[Splat2D],
    order: &[u32],
    width: u32,
    height: u32,
    visit: F,
) -> Vec<A>
where
    A: Default + Send,
    F: Fn(&mut A, u32, f64) + Sync,
{
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let tiles_x = width.div_ceil(TILE);
    let tiles_y = height.div_ceil(TILE);
    let mut bins: Vec<Vec<u32>> = vec![Vec::new(); (tiles_x * tiles_y) as usize];
    for &i in order {
        let s = &splats[i as usize];
        if s.radius <= 0.0 {
            continue;
        }
        let x0 = ((s.mean[0] - s.radius).floor().max(0.0) as u32).min(width - 1) / TILE;
        let x1 = ((s.mean[0] + s.radius).ceil().max(0.0) as u32).min(width - 1) / TILE;
        let y0 = ((s.mean[1] - s.radius).floor().max(0.0) as u32).min(height - 1) / TILE;
        let y1 = ((s.mean[1] + s.radius).ceil().max(0.0) as u32).min(height - 1) / TILE;
        for ty in y0..=y1 {
            for tx in x0..=x1 {
                bins[(ty * tiles_x + tx) as usize].push(i);
            }
        }
    }
    (0..tiles_y)
        .into_par_iter()
        .map(|ty| {
            let mut acc = A::default();
            for py in ty * TILE..((ty + 1) * TILE).min(height) {
                for px in 0..width {
                    let bin = &bins[(ty * tiles_x + px / TILE) as usize];
                    let (pxf, pyf) = (px as f32, py as f32);
                    let mut t = 1f32;
                    for &i in bin {
                        let s = &splats[i as usize];
                        if (pxf - s.mean[0]).abs() > s.radius || (pyf - s.mean[1]).abs() > s.radius
                        {
                            continue;
                        }
                        let (dx, dy) = (s.mean[0] - pxf, s.mean[1] - pyf);
                        let power = -0.5 * (s.conic[0] * dx * dx + s.conic[2] * dy * dy)
                            - s.conic[1] * dx * dy;
                        if power > 0.0 {
                            continue;
                        }
                        let alpha = (s.opacity * power.exp()).min(MAX_ALPHA);
                        if alpha < MIN_ALPHA {
                            continue;
                        }
                        let test_t = t * (1.0 - alpha);
                        if test_t < MIN_TRANSMITTANCE {
                            break;
                        }
                        visit(&mut acc, i, (alpha * t) as f64);
                        t = test_t;
                    }
                }
            }
            acc
        })
        .collect()
}

/// Sums over all pixels of Σ_i w_i(p)·a_i and Σ_i w_i(p)²·a_i, where w_i(p)
/// is splat i's blending weight α·T at pixel p exactly as
/// [`cpu::rasterize`] composites it, and
/// `values[i]` = a_i is indexed like `splats`.
pub fn weight_sums(
    splats: &[Splat2D],
    order: &[u32],
    width: u32,
    height: u32,
    values: &[f32],
) -> (f64, f64) {
    for_each_fragment(
        splats,
        order,
        width,
        height,
        |acc: &mut (f64, f64), i, w| {
            let a = values[i as usize] as f64;
            acc.0 += w * a;
            acc.1 += w * w * a;
        },
    )
    .into_iter()
    .fold((0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1))
}

/// Each splat's total blending weight over the image, Σ_p w_i(p): how much
/// of the picture it makes (its expected screen coverage), indexed like
/// `splats`. With γ_i²·d·C(d, b_i) it is Gaussian i's share of the bound.
pub fn coverage(splats: &[Splat2D], order: &[u32], width: u32, height: u32) -> Vec<f64> {
    let rows = for_each_fragment(
        splats,
        order,
        width,
        height,
        |acc: &mut BTreeMap<u32, f64>, i, w| {
            *acc.entry(i).or_default() += w;
        },
    );
    let mut out = vec![0f64; splats.len()];
    for row in rows {
        for (i, w) in row {
            out[i as usize] += w;
        }
    }
    out
}

/// [`weight_sums`] of each array in `values` (each indexed like the scene's
/// Gaussians), summed over `views` of `scene` as the CPU reference
/// preprocesses and orders them, and the total pixel count of the views:
/// the inputs of [`predict_mse`] for the whole set of views.
///
/// # Panics
/// If an array in `values` is shorter than the scene.
pub fn weight_sums_over_views(
    scene: &Scene,
    views: &[Camera],
    values: &[&[f32]],
) -> (Vec<(f64, f64)>, u64) {
    let mut sums = vec![(0.0, 0.0); values.len()];
    let mut pixels = 0u64;
    for cam in views {
        let splats = cpu::preprocess_all(scene, cam);
        let order = cpu::depth_order(&splats);
        for (s, v) in sums.iter_mut().zip(values) {
            let (a, b) = weight_sums(&splats, &order, cam.width, cam.height, v);
            s.0 += a;
            s.1 += b;
        }
        pixels += cam.width as u64 * cam.height as u64;
    }
    (sums, pixels)
}

/// [`coverage`] of each Gaussian of `scene`, summed over `views`, and the
/// total pixel count of the views.
pub fn coverage_over_views(scene: &Scene, views: &[Camera]) -> (Vec<f64>, u64) {
    let mut total = vec![0f64; scene.len()];
    let mut pixels = 0u64;
    for cam in views {
        let splats = cpu::preprocess_all(scene, cam);
        let order = cpu::depth_order(&splats);
        for (t, c) in total
            .iter_mut()
            .zip(coverage(&splats, &order, cam.width, cam.height))
        {
            *t += c;
        }
        pixels += cam.width as u64 * cam.height as u64;
    }
    (total, pixels)
}

/// Each Gaussian of `scene`'s Σ_p w_i(p) and Σ_p w_i(p)², summed over
/// `views`: the per-Gaussian coefficients of the bound and of the estimate,
/// so that any per-Gaussian error ‖e_i‖² predicts an MSE in one pass
/// (Σ_i a_i·‖e_i‖² into [`predict_mse`] with distortion 1).
pub fn coverage_sq_over_views(scene: &Scene, views: &[Camera]) -> (Vec<f64>, Vec<f64>) {
    let mut w1 = vec![0f64; scene.len()];
    let mut w2 = vec![0f64; scene.len()];
    for cam in views {
        let splats = cpu::preprocess_all(scene, cam);
        let order = cpu::depth_order(&splats);
        let rows = for_each_fragment(
            &splats,
            &order,
            cam.width,
            cam.height,
            |acc: &mut BTreeMap<u32, (f64, f64)>, i, w| {
                let e = acc.entry(i).or_default();
                e.0 += w;
                e.1 += w * w;
            },
        );
        for row in rows {
            for (i, (a, b)) in row {
                w1[i as usize] += a;
                w2[i as usize] += b;
            }
        }
    }
    (w1, w2)
}

/// The predicted image MSE (per channel, as [`metrics::mse`](crate::render::metrics::mse)
/// measures it) of an SH-rest error whose expectation is γ_i²·`distortion`
/// for Gaussian i, from the weight sums of one view of P pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MsePrediction {
    /// Upper bound (in expectation over the codec's rotation).
    pub bound: f64,
    /// Estimate assuming independent errors across Gaussians.
    pub estimate: f64,
}

/// Turns weight sums of γ_i² into the predicted MSE at a distortion
/// d·C(d, b) (or any relative error per Gaussian).
pub fn predict_mse(sums: (f64, f64), pixels: u64, distortion: f64) -> MsePrediction {
    let k = distortion / (4.0 * std::f64::consts::PI) / (3.0 * pixels as f64);
    MsePrediction {
        bound: sums.0 * k,
        estimate: sums.1 * k,
    }
}

/// ΔPSNR against ground truth when compression adds an independent error of
/// `mse_q` to a baseline error `mse_base`: 10·log10(1 + mse_q/mse_base).
pub fn psnr_loss(mse_q: f64, mse_base: f64) -> f64 {
    10.0 * (1.0 + mse_q / mse_base).log10()
}

/// The largest added MSE that keeps the loss at a baseline PSNR (dB) within
/// `loss` dB.
pub fn allowed_mse(baseline_psnr: f64, loss: f64) -> f64 {
    let base = 10f64.powf(-baseline_psnr / 10.0);
    base * (10f64.powf(loss / 10.0) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::orbit;
    use crate::splat::synth;

    /// A tiny scene and three views, one at another resolution.
    fn tiny() -> (Scene, Vec<Camera>) {
        let scene = synth::generate(&synth::SynthConfig {
            count: 40,
            sh_degree: 3,
            seed: 3,
        });
        let mut views = orbit(&scene.positions, 3, 24, 20);
        views[2] = views[2].resized(17, 13);
        (scene, views)
    }

    /// Σ over pixels of the red channel the CPU rasteriser composites when
    /// splat i has colour (a_i, 0, 0) on black: Σ_p Σ_i w_i(p)·a_i.
    fn rendered_sum(splats: &[Splat2D], order: &[u32], cam: &Camera, a: &[f64]) -> f64 {
        let mut s = splats.to_vec();
        for (s, &a) in s.iter_mut().zip(a) {
            s.color = [a as f32, 0.0, 0.0];
        }
        let img = cpu::rasterize(&s, order, cam.width, cam.height, [0.0; 3]);
        img.data.chunks(3).map(|p| p[0] as f64).sum()
    }

    #[test]
    fn coverage_over_views_is_what_the_rasteriser_composites() {
        let (scene, views) = tiny();
        let (cov, pixels) = coverage_over_views(&scene, &views);
        assert_eq!(pixels, 2 * 24 * 20 + 17 * 13);
        assert_eq!(cov.len(), scene.len());
        // Render each Gaussian alone in red (the others black but still
        // occluding): the red sum is its coverage in that view.
        let mut expected = vec![0f64; scene.len()];
        for cam in &views {
            let splats = cpu::preprocess_all(&scene, cam);
            let order = cpu::depth_order(&splats);
            for (i, e) in expected.iter_mut().enumerate() {
                let mut one_hot = vec![0.0; scene.len()];
                one_hot[i] = 1.0;
                *e += rendered_sum(&splats, &order, cam, &one_hot);
            }
        }
        assert!(expected.iter().sum::<f64>() > 10.0, "the views see little");
        for (i, (&c, &e)) in cov.iter().zip(&expected).enumerate() {
            assert!(
                (c - e).abs() <= 1e-4 * e.max(1.0),
                "Gaussian {i}: {c} vs {e}"
            );
        }
    }

    #[test]
    fn weight_sums_over_views_add_the_views_and_match_the_rasteriser() {
        let (scene, views) = tiny();
        let a: Vec<f32> = (0..scene.len()).map(|i| 0.5 + (i % 7) as f32).collect();
        let ones = vec![1f32; scene.len()];
        let (sums, pixels) = weight_sums_over_views(&scene, &views, &[&a, &ones]);
        assert_eq!(pixels, 2 * 24 * 20 + 17 * 13);
        assert_eq!(sums.len(), 2);
        let (mut direct, mut rendered) = ([(0.0, 0.0); 2], 0.0);
        for cam in &views {
            let splats = cpu::preprocess_all(&scene, cam);
            let order = cpu::depth_order(&splats);
            for (d, v) in direct.iter_mut().zip([&a, &ones]) {
                let (x, y) = weight_sums(&splats, &order, cam.width, cam.height, v);
                d.0 += x;
                d.1 += y;
            }
            let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
            rendered += rendered_sum(&splats, &order, cam, &a64);
        }
        assert_eq!(sums, direct.to_vec());
        // Σ_p Σ_i w_i·a_i, independently: the rasteriser's own composite.
        assert!(rendered > 10.0, "the views see little");
        assert!(
            (sums[0].0 - rendered).abs() <= 1e-5 * rendered,
            "{} vs {rendered}",
            sums[0].0
        );
        // Σ_i a_i·coverage_i is the same sum; 0 < w ≤ 1 puts Σ w² under Σ w.
        let (cov, _) = coverage_over_views(&scene, &views);
        let by_cov: f64 = cov.iter().zip(&a).map(|(&c, &v)| c * v as f64).sum();
        assert!((sums[0].0 - by_cov).abs() <= 1e-9 * by_cov);
        assert!(sums[1].1 > 0.0 && sums[1].1 <= sums[1].0);
    }

    #[test]
    fn psnr_loss_and_allowed_mse_are_inverse() {
        for (p, l) in [(30.0, 0.13), (35.0, 0.4), (25.0, 1.0)] {
            let m = allowed_mse(p, l);
            assert!((psnr_loss(m, 10f64.powf(-p / 10.0)) - l).abs() < 1e-12);
        }
        // The numbers: 45 dB fidelity at a 30 dB baseline is
        // 10·log10(1 + 10^−1.5) ≈ 0.135 dB.
        assert!((psnr_loss(10f64.powf(-4.5), 1e-3) - 0.135).abs() < 1e-3);
    }

    #[test]
    fn one_opaque_splat_gives_its_weight() {
        // A wide splat at the centre of a 1×1 image: w = 0.99 at the pixel.
        let s = Splat2D {
            mean: [0.0, 0.0],
            depth: 1.0,
            radius: 3.0,
            conic: [0.01, 0.0, 0.01],
            opacity: 1.0,
            color: [0.0; 3],
            _pad: 0.0,
        };
        let (a, b) = weight_sums(&[s], &[0], 1, 1, &[2.0]);
        assert!((a - 0.99 * 2.0).abs() < 1e-6);
        assert!((b - 0.99 * 0.99 * 2.0).abs() < 1e-6);
        assert!((coverage(&[s], &[0], 1, 1)[0] - 0.99).abs() < 1e-6);
    }

    #[test]
    fn two_stacked_splats_share_the_pixel_as_alpha_blending_says() {
        // Front α = 0.5, back α = 0.5 at the same pixel: weights 0.5 and 0.25.
        let mk = |depth: f32| Splat2D {
            mean: [0.0, 0.0],
            depth,
            radius: 3.0,
            conic: [1e-6, 0.0, 1e-6],
            opacity: 0.5,
            color: [0.0; 3],
            _pad: 0.0,
        };
        let splats = [mk(2.0), mk(1.0)];
        let order = [1u32, 0];
        let c = coverage(&splats, &order, 1, 1);
        assert!(
            (c[1] - 0.5).abs() < 1e-6 && (c[0] - 0.25).abs() < 1e-6,
            "{c:?}"
        );
        let (a, _) = weight_sums(&splats, &order, 1, 1, &[4.0, 1.0]);
        assert!((a - (0.25 * 4.0 + 0.5 * 1.0)).abs() < 1e-6);
    }
}

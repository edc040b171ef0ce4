//! Image quality metrics as 3DGS evaluates renders: MSE, PSNR and SSIM over
//! RGB, on images clamped to [0, 1] first, accumulated in f64.
//!
//! SSIM is implemented here rather than taken from a crate because the
//! maintained Rust SSIM crates compute other definitions: `dssim` is a
//! multi-scale SSIM in L\*a\*b\*, `iqa` and `blazediff-ssim` follow
//! MATLAB's `ssim` (window positions that fit inside the image only, on one
//! luma plane), `image-compare` uses flat 8×8 windows. 3DGS
//! (`utils/loss_utils.py::ssim`) uses `conv2d(padding=5)`: an 11×11
//! Gaussian window at every pixel with zero padding outside the image, per
//! RGB channel, and averages the map over pixels and channels; that
//! definition is computed here with a separable convolution (exact, since
//! both the window and zero padding separate).

use super::Image;
use crate::{Error, Result};

/// Side of the SSIM window.
pub const SSIM_WINDOW: usize = 11;
/// σ of the SSIM Gaussian window, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM stabilising constant (K1·L)² for L = 1.
pub const SSIM_C1: f64 = 0.01 * 0.01;
/// SSIM stabilising constant (K2·L)² for L = 1.
pub const SSIM_C2: f64 = 0.03 * 0.03;

/// Checks that both images are well-formed, of the same size and not empty.
fn check(a: &Image, b: &Image) -> Result<()> {
    for (name, img) in [("first", a), ("second", b)] {
        let want = img.width as usize * img.height as usize * 3;
        if img.data.len() != want {
            return Err(Error::Shape(format!(
                "{name} image is {}×{} but holds {} values, expected {want}",
                img.width,
                img.height,
                img.data.len()
            )));
        }
    }
    if (a.width, a.height) != (b.width, b.height) {
        return Err(Error::Shape(format!(
            "images differ in size: {}×{} vs {}×{}",
            a.width, a.height, b.width, b.height
        )));
    }
    if a.data.is_empty() {
        return Err(Error::EmptyInput {
            what: "images with no pixels".into(),
        });
    }
    Ok(())
}

/// A value clamped to [0, 1], as f64.
fn clamp01(v: f32) -> f64 {
    f64::from(v.clamp(0.0, 1.0))
}

/// Mean squared error over all pixels and RGB channels, both images clamped
/// to [0, 1] first.
///
/// # Errors
/// [`Error::Shape`] when the sizes differ, [`Error::EmptyInput`] for empty
/// images.
pub fn mse(a: &Image, b: &Image) -> Result<f64> {
    check(a, b)?;
    let sum: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (clamp01(x) - clamp01(y)).powi(2))
        .sum();
    Ok(sum / a.data.len() as f64)
}

/// PSNR in dB for a peak of 1: 10·log10(1/mse); +∞ for mse = 0.
pub fn psnr_from_mse(mse: f64) -> f64 {
    10.0 * (1.0 / mse).log10()
}

/// PSNR in dB of the clamped images (+∞ when identical after clamping).
///
/// # Errors
/// As [`mse`].
pub fn psnr(a: &Image, b: &Image) -> Result<f64> {
    mse(a, b).map(psnr_from_mse)
}

/// The normalised 1D Gaussian taps of the SSIM window, as 3DGS `gaussian`.
pub fn ssim_taps() -> [f64; SSIM_WINDOW] {
    let half = (SSIM_WINDOW / 2) as f64;
    let g: [f64; SSIM_WINDOW] = std::array::from_fn(|i| {
        (-(i as f64 - half).powi(2) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()
    });
    let sum: f64 = g.iter().sum();
    g.map(|v| v / sum)
}

/// 'Same' convolution of a w × h plane with the separable window `taps`,
/// zero padding outside the plane (`conv2d(padding=5)`).
fn blur(src: &[f64], w: usize, h: usize, taps: &[f64; SSIM_WINDOW]) -> Vec<f64> {
    let half = SSIM_WINDOW / 2;
    let mut rows = vec![0.0; w * h];
    for y in 0..h {
        let line = &src[y * w..(y + 1) * w];
        for x in 0..w {
            let lo = x.saturating_sub(half);
            let hi = (x + half).min(w - 1);
            rows[y * w + x] = (lo..=hi).map(|u| taps[u + half - x] * line[u]).sum();
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        let lo = y.saturating_sub(half);
        let hi = (y + half).min(h - 1);
        for x in 0..w {
            out[y * w + x] = (lo..=hi)
                .map(|v| taps[v + half - y] * rows[v * w + x])
                .sum();
        }
    }
    out
}

/// Mean SSIM (Wang et al. 2004) as 3DGS `loss_utils.ssim`: per RGB channel
/// of the images clamped to [0, 1], local statistics from an 11×11 Gaussian
/// window (σ = 1.5) at every pixel with zero padding outside the image
/// ('same' size, like `conv2d(padding=5)`), C1 = 0.01², C2 = 0.03²;
/// the mean of the SSIM map over pixels and channels.
///
/// # Errors
/// As [`mse`].
pub fn ssim(a: &Image, b: &Image) -> Result<f64> {
    check(a, b)?;
    let (w, h) = (a.width as usize, a.height as usize);
    let taps = ssim_taps();
    let mut total = 0.0;
    for ch in 0..3 {
        let x: Vec<f64> = a
            .data
            .iter()
            .skip(ch)
            .step_by(3)
            .map(|&v| clamp01(v))
            .collect();
        let y: Vec<f64> = b
            .data
            .iter()
            .skip(ch)
            .step_by(3)
            .map(|&v| clamp01(v))
            .collect();
        let prod =
            |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
        let mu_x = blur(&x, w, h, &taps);
        let mu_y = blur(&y, w, h, &taps);
        let e_xx = blur(&prod(&x, &x), w, h, &taps);
        let e_yy = blur(&prod(&y, &y), w, h, &taps);
        let e_xy = blur(&prod(&x, &y), w, h, &taps);
        for i in 0..w * h {
            let (mx, my) = (mu_x[i], mu_y[i]);
            let (sxx, syy, sxy) = (e_xx[i] - mx * mx, e_yy[i] - my * my, e_xy[i] - mx * my);
            total += ((2.0 * mx * my + SSIM_C1) * (2.0 * sxy + SSIM_C2))
                / ((mx * mx + my * my + SSIM_C1) * (sxx + syy + SSIM_C2));
        }
    }
    Ok(total / (3 * w * h) as f64)
}

//! Images as the fit sees them: `width × height` RGB f32, row-major, three
//! values per pixel; the grid's render, PSNR and a procedural target.

use rayon::prelude::*;

use super::encoding::Encoding;
use super::mlp::Mlp;
use crate::{Error, Result};

/// The sample position of pixel `p` (row-major): its centre
/// ((x + ½)/W, (y + ½)/H).
pub fn pixel_centre(p: usize, width: usize, height: usize) -> [f32; 2] {
    let (x, y) = (p % width, p / width);
    [
        (x as f32 + 0.5) / width as f32,
        (y as f32 + 0.5) / height as f32,
    ]
}

/// Checks that `data` is a finite, non-empty `width × height` RGB image.
///
/// # Errors
/// [`Error::EmptyInput`], [`Error::Shape`] or [`Error::NonFinite`].
pub fn check_image(data: &[f32], width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::EmptyInput {
            what: format!("a {width}×{height} image"),
        });
    }
    let want = width.checked_mul(height).and_then(|n| n.checked_mul(3));
    if want != Some(data.len()) {
        return Err(Error::Shape(format!(
            "a {width}×{height} RGB image holds {} values, not {}",
            width as u128 * height as u128 * 3,
            data.len()
        )));
    }
    if let Some((i, &v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            row: i / 3,
            col: i % 3,
            value: v,
        });
    }
    Ok(())
}

/// Renders the grid (`encoding`, a `[L, T, F]` `table`, the `mlp` readout)
/// at every pixel centre of a `width × height` image: RGB, row-major, the
/// MLP's output unclamped.
///
/// # Errors
/// [`Error::Shape`] when the table or MLP does not fit the encoding or the
/// MLP's output is not RGB, [`Error::EmptyInput`] for an empty size.
pub fn render(
    encoding: &Encoding,
    table: &[f32],
    mlp: &Mlp,
    width: usize,
    height: usize,
) -> Result<Vec<f32>> {
    encoding.check_table(table)?;
    if mlp.input_dim() != encoding.output_dim() || mlp.output_dim() != 3 {
        return Err(Error::Shape(format!(
            "an MLP of widths {:?} cannot read {} encoded features into RGB",
            mlp.sizes(),
            encoding.output_dim()
        )));
    }
    if width == 0 || height == 0 {
        return Err(Error::EmptyInput {
            what: format!("a {width}×{height} render"),
        });
    }
    let f = encoding.features();
    let level_len = encoding.table_size() * f;
    let mut out = vec![0f32; width * height * 3];
    out.par_chunks_mut(width * 3)
        .enumerate()
        .for_each(|(y, row)| {
            let mut ws = super::mlp::Workspace::new(mlp);
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let pos = pixel_centre(y * width + x, width, height);
                for (l, lt) in table.chunks_exact(level_len).enumerate() {
                    encoding.encode_level(l, lt, pos, &mut ws.acts[0][l * f..][..f]);
                }
                mlp.forward_ws(&mut ws);
                px.copy_from_slice(ws.output());
            }
        });
    Ok(out)
}

/// PSNR in dB for a peak of 1 of two RGB images of the same length, both
/// clamped to [0, 1] first and the error accumulated in f64: the definition
/// of `render::metrics::psnr`; +∞ when they agree after clamping.
///
/// # Errors
/// [`Error::Shape`] for different lengths, [`Error::EmptyInput`] for empty
/// images.
pub fn psnr(a: &[f32], b: &[f32]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::Shape(format!(
            "images of {} and {} values cannot be compared",
            a.len(),
            b.len()
        )));
    }
    if a.is_empty() {
        return Err(Error::EmptyInput {
            what: "images with no pixels".into(),
        });
    }
    let c = |v: f32| f64::from(v.clamp(0.0, 1.0));
    let sse: f64 = a.iter().zip(b).map(|(&x, &y)| (c(x) - c(y)).powi(2)).sum();
    Ok(10.0 * (a.len() as f64 / sse).log10())
}

/// Every value rounded to the nearest f16 and back (grids are stored as
/// f16): the table the f16 file holds.
pub fn round_f16(table: &[f32]) -> Vec<f32> {
    table
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect()
}

/// A 32-bit integer hash (the finaliser of MurmurHash3) of a lattice point.
fn lattice(x: i32, y: i32, salt: u32) -> f32 {
    let mut h = (x as u32)
        .wrapping_mul(0x8da6_b343)
        .wrapping_add((y as u32).wrapping_mul(0xd816_3841))
        .wrapping_add(salt.wrapping_mul(0xcb1a_b31f));
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h >> 8) as f32 / 16_777_216.0
}

/// Value noise in [0, 1): lattice values at integer points, smoothstep
/// interpolation.
fn value_noise(x: f32, y: f32, salt: u32) -> f32 {
    let (xf, yf) = (x.floor(), y.floor());
    let (xi, yi) = (xf as i32, yf as i32);
    let s = |t: f32| t * t * (3.0 - 2.0 * t);
    let (u, v) = (s(x - xf), s(y - yf));
    let a = lattice(xi, yi, salt);
    let b = lattice(xi + 1, yi, salt);
    let c = lattice(xi, yi + 1, salt);
    let d = lattice(xi + 1, yi + 1, salt);
    (a * (1.0 - u) + b * u) * (1.0 - v) + (c * (1.0 - u) + d * u) * v
}

/// A detailed procedural RGB image, for when no real one is at hand:
/// six octaves of coloured value noise (features from ¼ of the image down to
/// a few pixels), a checkerboard whose squares shrink from left to right,
/// hard-edged discs and rings, and a field of thin diagonal stripes whose
/// frequency rises to the pixel pitch. Values lie in [0, 1]; only integer
/// and basic float arithmetic is used, so every platform gets the same
/// image.
pub fn procedural_target(width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0f32; width * height * 3];
    let side = width.max(height) as f32;
    for (p, px) in out.chunks_exact_mut(3).enumerate() {
        let (x, y) = ((p % width) as f32 + 0.5, (p / width) as f32 + 0.5);
        let (u, v) = (x / side, y / side);
        let mut rgb = [0f32; 3];
        for (c, val) in rgb.iter_mut().enumerate() {
            let mut amp = 0.5;
            let mut freq = 4.0;
            for o in 0..6 {
                *val += amp * value_noise(u * freq, v * freq, (c * 8 + o) as u32);
                amp *= 0.6;
                freq *= 2.0;
            }
            *val *= 0.8;
        }
        // Checkerboard in the lower band, squares from 16 px down to 2 px.
        if v > 0.72 && v < 0.92 {
            let cell = 16.0 / (1.0 + 7.0 * u);
            let on = ((x / cell).floor() as i64 + (y / cell).floor() as i64) % 2 == 0;
            let k = if on { 0.95 } else { 0.05 };
            rgb = [k, k * 0.8 + 0.1, 1.0 - k * 0.9];
        }
        // Discs and rings with hard edges.
        for (i, &(cx, cy, r)) in [
            (0.25f32, 0.3f32, 0.12f32),
            (0.62, 0.25, 0.08),
            (0.8, 0.55, 0.1),
            (0.4, 0.58, 0.06),
        ]
        .iter()
        .enumerate()
        {
            let d2 = (u - cx) * (u - cx) + (v - cy) * (v - cy);
            if d2 < r * r {
                let ring = ((d2.sqrt() / r) * 6.0).floor() as i64 % 2 == 0;
                let hue = [
                    (0.9, 0.2, 0.1),
                    (0.1, 0.7, 0.3),
                    (0.2, 0.3, 0.9),
                    (0.95, 0.85, 0.2),
                ][i];
                let k = if i % 2 == 0 || ring { 1.0 } else { 0.35 };
                rgb = [hue.0 * k, hue.1 * k, hue.2 * k];
            }
        }
        // Thin stripes in the upper right, period from 12 px down to 2 px.
        if u > 0.55 && v > 0.38 && v < 0.7 {
            let t = (u - 0.55) / 0.45;
            let period = 12.0 - 10.0 * t;
            let s = ((x + y) / period).floor() as i64 % 2 == 0;
            if s {
                rgb = [rgb[0] * 0.3, rgb[1] * 0.3, rgb[2] * 0.3];
            }
        }
        for (o, c) in px.iter_mut().zip(rgb) {
            *o = c.clamp(0.0, 1.0);
        }
    }
    out
}

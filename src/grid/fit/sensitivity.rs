//! How strongly the readout reacts to each level's features and to each
//! table value: the weights a codec can use for bit allocation.

use rayon::prelude::*;

use super::encoding::Encoding;
use super::image::render;
use super::mlp::{Mlp, Transposed, Workspace};
use super::train::{CHUNK, Pass};
use crate::Result;

/// The readout's sensitivity to the grid, over the pixel centres of an
/// image. With J_c,l,f(p) = ∂output_c/∂feature_l,f at pixel p (P pixels,
/// 3 channels) and w_p,e the bilinear weight of entry e at p:
///
/// - `per_level[l]` = (1/3P) Σ_p Σ_c Σ_f J_c,l,f(p)²: the mean squared
///   gradient of the MLP output with respect to level l's features, the
///   level's share of the readout's input gradient;
/// - `per_value[(l·T + e)·F + f]` = (1/3P) Σ_p Σ_c w_p,e² J_c,l,f(p)².
///
/// To first order, adding independent zero-mean errors δ to the table
/// changes the render's MSE (against the unperturbed render) by
/// Σ `per_value` · E[δ²]: the cross terms vanish in expectation. Values no
/// pixel reads have sensitivity 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Sensitivity {
    /// One value per level.
    pub per_level: Vec<f64>,
    /// One value per table value, `[L, T, F]` like the table.
    pub per_value: Vec<f64>,
}

struct ChunkJ {
    n: usize,
    idx: Vec<u32>,
    w: Vec<f32>,
    /// `[n][L·F]` Σ_c J².
    j2: Vec<f32>,
}

/// The [`Sensitivity`] of the grid (`encoding`, `table`, `mlp`) over the
/// pixel centres of a `width × height` image. Deterministic for any thread
/// count.
///
/// # Errors
/// As [`render`].
pub fn sensitivity(
    encoding: &Encoding,
    table: &[f32],
    mlp: &Mlp,
    width: usize,
    height: usize,
) -> Result<Sensitivity> {
    // The same shape checks as the render, on a 1×1 image.
    render(encoding, table, mlp, 1, 1)?;
    if width == 0 || height == 0 {
        return Err(crate::Error::EmptyInput {
            what: format!("a {width}×{height} image"),
        });
    }
    let levels = encoding.levels().len();
    let f = encoding.features();
    let dim = encoding.output_dim();
    let level_len = encoding.table_size() * f;
    let wt = Transposed::new(mlp);
    let pass = Pass {
        enc: encoding,
        tables: table.chunks_exact(level_len).collect(),
        mlp,
        wt: &wt,
        width,
        height,
    };
    let pixels: Vec<u32> = (0..(width * height) as u32).collect();
    let chunks: Vec<ChunkJ> = pixels
        .par_chunks(CHUNK)
        .map(|px| {
            let n = px.len();
            let mut c = ChunkJ {
                n,
                idx: vec![0; n * levels * 4],
                w: vec![0.0; n * levels * 4],
                j2: vec![0.0; n * dim],
            };
            let mut ws = Workspace::new(mlp);
            for (s, &p) in px.iter().enumerate() {
                let at = s * levels * 4..(s + 1) * levels * 4;
                pass.forward(p, &mut ws, &mut c.idx[at.clone()], &mut c.w[at]);
                for ch in 0..3 {
                    let mut d = [0f32; 3];
                    d[ch] = 1.0;
                    let j = ws.backward(&wt, &d, None);
                    for (acc, &v) in c.j2[s * dim..(s + 1) * dim].iter_mut().zip(j) {
                        *acc += v * v;
                    }
                }
            }
            c
        })
        .collect();
    let norm = 1.0 / (3.0 * (width * height) as f64);
    let mut per_value = vec![0f64; table.len()];
    let per_level: Vec<f64> = per_value
        .par_chunks_mut(level_len)
        .enumerate()
        .map(|(l, pv)| {
            let mut sum = 0f64;
            for c in &chunks {
                for s in 0..c.n {
                    let j2 = &c.j2[s * dim + l * f..][..f];
                    sum += j2.iter().map(|&v| f64::from(v)).sum::<f64>();
                    let at = (s * levels + l) * 4;
                    for k in 0..4 {
                        let e = c.idx[at + k] as usize;
                        let w2 = f64::from(c.w[at + k]).powi(2);
                        for (acc, &v) in pv[e * f..][..f].iter_mut().zip(j2) {
                            *acc += w2 * f64::from(v);
                        }
                    }
                }
            }
            for v in pv.iter_mut() {
                *v *= norm;
            }
            sum * norm
        })
        .collect();
    Ok(Sensitivity {
        per_level,
        per_value,
    })
}

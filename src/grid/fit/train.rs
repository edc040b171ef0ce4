//! Training: mini-batches of pixel centres drawn epoch by epoch without
//! replacement, L2 loss on RGB, Adam (Kingma & Ba 2015) with Instant-NGP's
//! β1 = 0.9, β2 = 0.99, ε = 10⁻¹⁵, separate moments for the table and the
//! MLP.
//!
//! Determinism: a batch is cut into chunks of [`CHUNK`] samples whatever the
//! thread count; each chunk's MLP gradient is summed in chunk order, and each
//! level's table gradient is scattered by one task in sample order. The
//! result is the same bytes for any rayon thread count.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use rayon::prelude::*;

use super::encoding::Encoding;
use super::image::{check_image, pixel_centre};
use super::mlp::{Mlp, Transposed, Workspace, unit};
use super::{FitConfig, FittedGrid};
use crate::Result;

/// Samples per parallel work item; fixed so that results do not depend on
/// the thread count.
pub const CHUNK: usize = 256;

/// Instant-NGP's Adam constants (Müller et al. 2022, §4).
pub const ADAM_BETA1: f32 = 0.9;
/// See [`ADAM_BETA1`].
pub const ADAM_BETA2: f32 = 0.99;
/// See [`ADAM_BETA1`].
pub const ADAM_EPS: f32 = 1e-15;

/// Half-width of the uniform table initialisation, as Instant-NGP.
pub const TABLE_INIT: f32 = 1e-4;

/// Random streams of ChaCha8 seeded with the config's seed.
const STREAM_TABLE: u64 = 0;
const STREAM_MLP: u64 = 1;
const STREAM_BATCH: u64 = 2;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// One Adam update of parameter `p` with gradient `g` at step `t` (1-based),
/// `c1 = 1 − β1^t`, `c2 = 1 − β2^t`.
#[inline]
fn adam(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, lr: f32, c1: f32, c2: f32) {
    *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
    *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + ADAM_EPS);
}

/// One level's table and its training state.
struct LevelState {
    table: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    grad: Vec<f32>,
    /// The last step that touched each entry (0: none yet).
    stamp: Vec<u32>,
    touched: Vec<bool>,
    /// Entries touched in the current step.
    list: Vec<u32>,
}

/// What one chunk of samples hands to the reduction.
struct ChunkOut {
    n: usize,
    /// `[n][L][4]` corner entries and bilinear weights.
    idx: Vec<u32>,
    w: Vec<f32>,
    /// `[n][L·F]` ∂loss/∂features.
    dx: Vec<f32>,
    /// ∂loss/∂MLP parameters.
    grad: Vec<f32>,
    /// Σ squared error over the chunk's samples and channels.
    sse: f64,
}

/// What [`chunk_pass`] needs to read.
pub(crate) struct Pass<'a> {
    pub enc: &'a Encoding,
    pub tables: Vec<&'a [f32]>,
    pub mlp: &'a Mlp,
    pub wt: &'a Transposed,
    pub width: usize,
    pub height: usize,
}

impl Pass<'_> {
    /// Encodes pixel `p` into `ws.acts[0]`, writing its corners into `idx`
    /// and `w` (`[L][4]`), and runs the MLP forward.
    pub fn forward(&self, p: u32, ws: &mut Workspace, idx: &mut [u32], w: &mut [f32]) {
        let pos = pixel_centre(p as usize, self.width, self.height);
        let f = self.enc.features();
        let x = &mut ws.acts[0];
        for (l, table) in self.tables.iter().enumerate() {
            let feat = &mut x[l * f..][..f];
            feat.fill(0.0);
            for (k, (e, wk)) in self.enc.corners(l, pos).into_iter().enumerate() {
                idx[l * 4 + k] = e;
                w[l * 4 + k] = wk;
                for (o, &v) in feat.iter_mut().zip(&table[e as usize * f..][..f]) {
                    *o += wk * v;
                }
            }
        }
        self.mlp.forward_ws(ws);
    }
}

fn chunk_pass(pass: &Pass<'_>, target: &[f32], pixels: &[u32], scale: f32) -> ChunkOut {
    let levels = pass.enc.levels().len();
    let dim = pass.enc.output_dim();
    let n = pixels.len();
    let mut out = ChunkOut {
        n,
        idx: vec![0; n * levels * 4],
        w: vec![0.0; n * levels * 4],
        dx: vec![0.0; n * dim],
        grad: vec![0.0; pass.mlp.params().len()],
        sse: 0.0,
    };
    let mut ws = Workspace::new(pass.mlp);
    for (s, &p) in pixels.iter().enumerate() {
        let corners = s * levels * 4..(s + 1) * levels * 4;
        pass.forward(
            p,
            &mut ws,
            &mut out.idx[corners.clone()],
            &mut out.w[corners],
        );
        let t = &target[p as usize * 3..][..3];
        let mut d = [0f32; 3];
        for ((dc, &o), &tc) in d.iter_mut().zip(ws.output()).zip(t) {
            let e = o - tc;
            out.sse += f64::from(e * e);
            *dc = scale * e;
        }
        let dx = ws.backward(pass.wt, &d, Some(&mut out.grad));
        out.dx[s * dim..(s + 1) * dim].copy_from_slice(dx);
    }
    out
}

impl LevelState {
    /// Scatters this level's gradient from the chunks in sample order, then
    /// updates each entry touched in this step whose gradient is not zero
    /// (tiny-cuda-nn's Adam also leaves encoding parameters with a zero
    /// gradient alone, so entries no sample reaches keep their init values).
    #[allow(clippy::too_many_arguments)]
    fn apply(&mut self, l: usize, levels: usize, f: usize, outs: &[ChunkOut], step: u32, lr: f32, c1: f32, c2: f32) {
        for o in outs {
            for s in 0..o.n {
                let at = (s * levels + l) * 4;
                let dx = &o.dx[(s * levels + l) * f..][..f];
                for k in 0..4 {
                    let e = o.idx[at + k] as usize;
                    let wk = o.w[at + k];
                    for (g, &d) in self.grad[e * f..][..f].iter_mut().zip(dx) {
                        *g += wk * d;
                    }
                    if self.stamp[e] != step {
                        self.stamp[e] = step;
                        self.touched[e] = true;
                        self.list.push(e as u32);
                    }
                }
            }
        }
        for e in self.list.drain(..) {
            for i in e as usize * f..(e as usize + 1) * f {
                let g = std::mem::take(&mut self.grad[i]);
                if g != 0.0 {
                    adam(&mut self.table[i], &mut self.m[i], &mut self.v[i], g, lr, c1, c2);
                }
            }
        }
    }
}

/// The learning rate of step `t` (1-based): constant, then decayed
/// geometrically over the last [`FitConfig::decay_fraction`] of the steps
/// down to `learning_rate · final_lr_fraction`.
fn lr_at(cfg: &FitConfig, t: usize) -> f32 {
    let start = cfg.steps as f64 * (1.0 - cfg.decay_fraction);
    let done = t as f64 - start;
    if done <= 0.0 {
        return cfg.learning_rate;
    }
    let span = (cfg.steps as f64 - start).max(1.0);
    (f64::from(cfg.learning_rate) * f64::from(cfg.final_lr_fraction).powf(done / span)) as f32
}

/// Fits a hash encoding and its MLP readout to `target` (`width × height`
/// RGB, row-major, 3 values per pixel) with the settings of `cfg`.
///
/// Samples are pixel centres ((x + ½)/W, (y + ½)/H) ∈ (0, 1)²; each epoch
/// visits every pixel once in a random order, and a batch may straddle two
/// epochs. The result depends on `cfg` and `target` alone, not on the
/// thread count.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] for an invalid config,
/// [`crate::Error::Shape`] / [`crate::Error::EmptyInput`] /
/// [`crate::Error::NonFinite`] for an ill-formed target.
pub fn fit(target: &[f32], width: usize, height: usize, cfg: &FitConfig) -> Result<FittedGrid> {
    cfg.validate()?;
    check_image(target, width, height)?;
    let enc = cfg.encoding()?;
    let levels = enc.levels().len();
    let f = enc.features();
    let t_size = enc.table_size();

    let mut r = rng(cfg.seed, STREAM_TABLE);
    let mut states: Vec<LevelState> = (0..levels)
        .map(|_| LevelState {
            table: (0..t_size * f)
                .map(|_| (2.0 * unit(&mut r) - 1.0) * TABLE_INIT)
                .collect(),
            m: vec![0.0; t_size * f],
            v: vec![0.0; t_size * f],
            grad: vec![0.0; t_size * f],
            stamp: vec![0; t_size],
            touched: vec![false; t_size],
            list: Vec::new(),
        })
        .collect();
    let mut sizes = vec![enc.output_dim()];
    sizes.extend(std::iter::repeat_n(cfg.hidden_width, cfg.hidden_layers));
    sizes.push(3);
    let mut mlp = Mlp::xavier(&sizes, &mut rng(cfg.seed, STREAM_MLP));
    let n_params = mlp.params().len();
    let (mut mlp_m, mut mlp_v) = (vec![0f32; n_params], vec![0f32; n_params]);

    let n_pixels = width * height;
    let mut order: Vec<u32> = (0..n_pixels as u32).collect();
    let mut cursor = n_pixels;
    let mut batch_rng = rng(cfg.seed, STREAM_BATCH);
    let mut batch = Vec::with_capacity(cfg.batch_size);
    let mut losses = Vec::with_capacity(cfg.steps);
    // ∂/∂output of the mean over the batch's samples and 3 channels.
    let scale = 2.0 / (3 * cfg.batch_size) as f32;

    for step in 1..=cfg.steps {
        batch.clear();
        while batch.len() < cfg.batch_size {
            if cursor == n_pixels {
                // Fisher–Yates, fresh each epoch.
                for i in (1..n_pixels).rev() {
                    let j = batch_rng.random_range(0..=i as u32) as usize;
                    order.swap(i, j);
                }
                cursor = 0;
            }
            let take = (cfg.batch_size - batch.len()).min(n_pixels - cursor);
            batch.extend_from_slice(&order[cursor..cursor + take]);
            cursor += take;
        }

        let wt = Transposed::new(&mlp);
        let outs: Vec<ChunkOut> = {
            let pass = Pass {
                enc: &enc,
                tables: states.iter().map(|s| s.table.as_slice()).collect(),
                mlp: &mlp,
                wt: &wt,
                width,
                height,
            };
            batch
                .par_chunks(CHUNK)
                .map(|px| chunk_pass(&pass, target, px, scale))
                .collect()
        };
        let sse: f64 = outs.iter().map(|o| o.sse).sum();
        losses.push(sse / (3 * cfg.batch_size) as f64);

        let t = step as i32;
        let c1 = 1.0 - ADAM_BETA1.powi(t);
        let c2 = 1.0 - ADAM_BETA2.powi(t);
        let lr = lr_at(cfg, step);
        let mut grad = vec![0f32; n_params];
        for o in &outs {
            for (g, &v) in grad.iter_mut().zip(&o.grad) {
                *g += v;
            }
        }
        for (((p, m), v), &g) in mlp
            .params_mut()
            .iter_mut()
            .zip(&mut mlp_m)
            .zip(&mut mlp_v)
            .zip(&grad)
        {
            adam(p, m, v, g, lr, c1, c2);
        }
        let stamp = step as u32;
        states
            .par_iter_mut()
            .enumerate()
            .for_each(|(l, s)| s.apply(l, levels, f, &outs, stamp, lr, c1, c2));
    }

    let mut table = Vec::with_capacity(enc.table_len());
    let mut touched = Vec::with_capacity(levels * t_size);
    for s in states {
        table.extend_from_slice(&s.table);
        touched.extend_from_slice(&s.touched);
    }
    Ok(FittedGrid {
        encoding: enc,
        table,
        mlp,
        touched,
        losses,
    })
}

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

/// Adds level `l`'s share of the chunks' feature gradients into `grad`
/// (that level's T·F values), in chunk and sample order, calling `visit`
/// with every entry a sample reads, in the same order.
fn scatter(
    l: usize,
    levels: usize,
    f: usize,
    outs: &[ChunkOut],
    grad: &mut [f32],
    mut visit: impl FnMut(usize),
) {
    for o in outs {
        for s in 0..o.n {
            let at = (s * levels + l) * 4;
            let dx = &o.dx[(s * levels + l) * f..][..f];
            for k in 0..4 {
                let e = o.idx[at + k] as usize;
                let wk = o.w[at + k];
                for (g, &d) in grad[e * f..][..f].iter_mut().zip(dx) {
                    *g += wk * d;
                }
                visit(e);
            }
        }
    }
}

impl LevelState {
    /// Scatters this level's gradient, then updates each entry touched in
    /// this step whose gradient is not zero (tiny-cuda-nn's Adam also leaves
    /// encoding parameters with a zero gradient alone, so entries no sample
    /// reaches keep their init values).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        l: usize,
        levels: usize,
        f: usize,
        outs: &[ChunkOut],
        step: u32,
        lr: f32,
        c1: f32,
        c2: f32,
    ) {
        let (stamp, touched, list) = (&mut self.stamp, &mut self.touched, &mut self.list);
        scatter(l, levels, f, outs, &mut self.grad, |e| {
            if stamp[e] != step {
                stamp[e] = step;
                touched[e] = true;
                list.push(e as u32);
            }
        });
        for e in self.list.drain(..) {
            for i in e as usize * f..(e as usize + 1) * f {
                let g = std::mem::take(&mut self.grad[i]);
                if g != 0.0 {
                    adam(
                        &mut self.table[i],
                        &mut self.m[i],
                        &mut self.v[i],
                        g,
                        lr,
                        c1,
                        c2,
                    );
                }
            }
        }
    }
}

/// The full-image loss of a grid and its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient {
    /// Mean over pixels and RGB channels of (output − target)², the output
    /// unclamped: the training loss over the whole image.
    pub loss: f64,
    /// ∂loss/∂table, `[L, T, F]`.
    pub table: Vec<f32>,
    /// ∂loss/∂MLP parameters, in [`Mlp::params`] order.
    pub mlp: Vec<f32>,
}

/// The training loss over every pixel centre of `target` and its gradient
/// with respect to the table and the MLP: what one full-image step of
/// [`fit`] would follow. Deterministic for any thread count.
///
/// # Errors
/// As [`super::render`], and for an ill-formed target as [`fit`].
pub fn loss_gradient(
    encoding: &Encoding,
    table: &[f32],
    mlp: &Mlp,
    target: &[f32],
    width: usize,
    height: usize,
) -> Result<Gradient> {
    super::render(encoding, table, mlp, 1, 1)?;
    check_image(target, width, height)?;
    let levels = encoding.levels().len();
    let f = encoding.features();
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
    let n = width * height;
    let pixels: Vec<u32> = (0..n as u32).collect();
    let scale = 2.0 / (3 * n) as f32;
    let outs: Vec<ChunkOut> = pixels
        .par_chunks(CHUNK)
        .map(|px| chunk_pass(&pass, target, px, scale))
        .collect();
    let mut g_mlp = vec![0f32; mlp.params().len()];
    for o in &outs {
        for (g, &v) in g_mlp.iter_mut().zip(&o.grad) {
            *g += v;
        }
    }
    let mut g_table = vec![0f32; table.len()];
    g_table
        .par_chunks_mut(level_len)
        .enumerate()
        .for_each(|(l, g)| scatter(l, levels, f, &outs, g, |_| {}));
    Ok(Gradient {
        loss: outs.iter().map(|o| o.sse).sum::<f64>() / (3 * n) as f64,
        table: g_table,
        mlp: g_mlp,
    })
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

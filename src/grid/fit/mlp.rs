//! The readout: a fully connected network with ReLU hidden layers and a
//! linear RGB output, its forward pass, and the backward pass that training
//! and the sensitivity share.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// A multilayer perceptron `sizes[0] → … → sizes[last]`, ReLU after every
/// layer but the last. Its parameters live in one vector, layer after layer,
/// each layer's weights `[in][out]` (row-major, one row per input) followed
/// by its `out` biases.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    sizes: Vec<usize>,
    params: Vec<f32>,
}

/// The offsets of one layer's weights and biases in [`Mlp::params`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerAt {
    pub w: usize,
    pub b: usize,
    pub n_in: usize,
    pub n_out: usize,
}

impl Mlp {
    /// Xavier-uniform weights (±√(6 / (in + out))), zero biases, drawn from
    /// `rng` layer by layer, row by row.
    pub(crate) fn xavier(sizes: &[usize], rng: &mut ChaCha8Rng) -> Mlp {
        let mut params = Vec::new();
        for pair in sizes.windows(2) {
            let (n_in, n_out) = (pair[0], pair[1]);
            let a = (6.0 / (n_in + n_out) as f64).sqrt() as f32;
            params.extend((0..n_in * n_out).map(|_| (2.0 * unit(rng) - 1.0) * a));
            params.extend(std::iter::repeat_n(0.0, n_out));
        }
        Mlp {
            sizes: sizes.to_vec(),
            params,
        }
    }

    /// The network of these layer widths and parameters (in the layout
    /// above), e.g. decoded from a file.
    ///
    /// # Errors
    /// [`Error::Shape`] when there are fewer than two sizes, a zero size, or
    /// the parameter count does not match.
    pub fn from_params(sizes: Vec<usize>, params: Vec<f32>) -> Result<Mlp> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(Error::Shape(format!(
                "MLP layer widths {sizes:?}: need at least an input and an output, none zero"
            )));
        }
        let want: usize = sizes.windows(2).map(|p| (p[0] + 1) * p[1]).sum();
        if params.len() != want {
            return Err(Error::Shape(format!(
                "an MLP of widths {sizes:?} has {want} parameters, not {}",
                params.len()
            )));
        }
        Ok(Mlp { sizes, params })
    }

    /// The layer widths, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// All parameters, in the layout of [`Mlp`].
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    pub(crate) fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The input width.
    pub fn input_dim(&self) -> usize {
        self.sizes[0]
    }

    /// The output width.
    pub fn output_dim(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    pub(crate) fn layers(&self) -> Vec<LayerAt> {
        let mut at = 0;
        self.sizes
            .windows(2)
            .map(|p| {
                let l = LayerAt {
                    w: at,
                    b: at + p[0] * p[1],
                    n_in: p[0],
                    n_out: p[1],
                };
                at = l.b + p[1];
                l
            })
            .collect()
    }

    /// The output for input `x` (length [`Mlp::input_dim`]).
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` has the wrong length.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        if x.len() != self.input_dim() {
            return Err(Error::Shape(format!(
                "MLP input has {} values, not {}",
                x.len(),
                self.input_dim()
            )));
        }
        let mut ws = Workspace::new(self);
        ws.acts[0].copy_from_slice(x);
        self.forward_ws(&mut ws);
        Ok(ws.output().to_vec())
    }

    /// Forward pass from `ws.acts[0]`, filling every later activation.
    pub(crate) fn forward_ws(&self, ws: &mut Workspace) {
        let last = self.sizes.len() - 2;
        for (k, l) in ws.layers.iter().enumerate() {
            let (before, after) = ws.acts.split_at_mut(k + 1);
            let (x, y) = (&before[k], &mut after[0]);
            y.copy_from_slice(&self.params[l.b..l.b + l.n_out]);
            let w = &self.params[l.w..l.b];
            for (&xi, row) in x.iter().zip(w.chunks_exact(l.n_out)) {
                if xi != 0.0 {
                    for (yo, &wo) in y.iter_mut().zip(row) {
                        *yo += xi * wo;
                    }
                }
            }
            if k < last {
                for v in y.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    }
}

/// A uniform draw in [0, 1) from the top 24 bits of a u32.
pub(crate) fn unit(rng: &mut ChaCha8Rng) -> f32 {
    (rng.random::<u32>() >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Each layer's weights transposed to `[out][in]`, for the backward pass's
/// input gradient (an axpy per output, which vectorises).
pub(crate) struct Transposed(Vec<f32>);

impl Transposed {
    pub fn new(mlp: &Mlp) -> Transposed {
        let mut t = vec![0.0; mlp.params.len()];
        for l in mlp.layers() {
            for i in 0..l.n_in {
                for o in 0..l.n_out {
                    t[l.w + o * l.n_in + i] = mlp.params[l.w + i * l.n_out + o];
                }
            }
        }
        Transposed(t)
    }
}

/// Activations and gradients of one sample, reused across samples.
pub(crate) struct Workspace {
    layers: Vec<LayerAt>,
    /// `acts[0]` is the input, `acts[k]` layer k−1's output (after ReLU for
    /// hidden layers).
    pub acts: Vec<Vec<f32>>,
    delta: Vec<Vec<f32>>,
}

impl Workspace {
    pub fn new(mlp: &Mlp) -> Workspace {
        Workspace {
            layers: mlp.layers(),
            acts: mlp.sizes.iter().map(|&n| vec![0.0; n]).collect(),
            delta: mlp.sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    pub fn output(&self) -> &[f32] {
        &self.acts[self.acts.len() - 1]
    }

    /// Backpropagates `d_out` (∂loss/∂output) through the last forward
    /// pass: adds the parameter gradient into `grad` when given, and returns
    /// ∂loss/∂input.
    pub fn backward(
        &mut self,
        wt: &Transposed,
        d_out: &[f32],
        mut grad: Option<&mut [f32]>,
    ) -> &[f32] {
        let n = self.acts.len();
        self.delta[n - 1].copy_from_slice(d_out);
        for (k, l) in self.layers.iter().enumerate().rev() {
            let (before, after) = self.delta.split_at_mut(k + 1);
            let (d_in, d) = (&mut before[k], &after[0]);
            let a = &self.acts[k];
            if let Some(g) = grad.as_deref_mut() {
                let gw = &mut g[l.w..l.b];
                for (&ai, row) in a.iter().zip(gw.chunks_exact_mut(l.n_out)) {
                    if ai != 0.0 {
                        for (r, &dv) in row.iter_mut().zip(d) {
                            *r += ai * dv;
                        }
                    }
                }
                for (r, &dv) in g[l.b..l.b + l.n_out].iter_mut().zip(d) {
                    *r += dv;
                }
            }
            d_in.fill(0.0);
            let w = &wt.0[l.w..l.b];
            for (&dv, row) in d.iter().zip(w.chunks_exact(l.n_in)) {
                if dv != 0.0 {
                    for (r, &wv) in d_in.iter_mut().zip(row) {
                        *r += dv * wv;
                    }
                }
            }
            if k > 0 {
                // ReLU: the input of layer k is positive exactly where the
                // previous layer's pre-activation was.
                for (r, &av) in d_in.iter_mut().zip(a) {
                    if av <= 0.0 {
                        *r = 0.0;
                    }
                }
            }
        }
        &self.delta[0]
    }
}

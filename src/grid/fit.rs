//! Fitting a 2D multiresolution hash encoding (Instant-NGP, Müller et al.
//! 2022) with an MLP readout to an image on the CPU, so that the hash-grid
//! codec is measured on tables that training really produced: with entries
//! no sample ever reached and with colliding vertices.
//!
//! - [`Encoding`]: L levels of resolution N_l = ⌊N_min · b^l⌋, each stored
//!   densely (x + y·(N_l + 1)) when (N_l + 1)² ≤ T, else hashed with
//!   (x ⊕ y·2654435761) mod T; bilinear interpolation of four vertices.
//! - [`fit`]: Adam on mini-batches of pixels, deterministic for any thread
//!   count; returns a [`FittedGrid`] (table `[L, T, F]`, MLP, touched
//!   mask).
//! - [`render`], [`psnr`], [`round_f16`]: score any (decoded) table.
//! - [`loss_gradient`]: the full-image loss and its gradient.
//! - [`sensitivity`]: per-level and per-value weights for bit allocation.
//!
//! ```
//! use turboquant3d::grid::fit::{FitConfig, fit, procedural_target, psnr, render};
//! let (w, h) = (32, 32);
//! let target = procedural_target(w, h);
//! let cfg = FitConfig { steps: 20, batch_size: 256, hidden_width: 16, ..FitConfig::default() };
//! let grid = fit(&target, w, h, &cfg).unwrap();
//! let img = render(&grid.encoding, &grid.table, &grid.mlp, w, h).unwrap();
//! assert!(psnr(&img, &target).unwrap() > 5.0);
//! ```

mod encoding;
mod image;
mod mlp;
mod sensitivity;
mod train;

pub use encoding::{Encoding, HASH_PRIME_Y, Level, MAX_RESOLUTION};
pub use image::{check_image, pixel_centre, procedural_target, psnr, render, round_f16};
pub use mlp::Mlp;
pub use sensitivity::{Sensitivity, sensitivity};
pub use train::{
    ADAM_BETA1, ADAM_BETA2, ADAM_EPS, CHUNK, Gradient, TABLE_INIT, fit, loss_gradient,
};

use crate::{Error, Result};

/// The settings of a fit. [`Default`] is the setting the codec is measured
/// on: 12 levels × 2^14 entries × 2 features, N_min = 16, growth 1.38
/// (finest level 16·1.38^11 ≈ 553 ≥ 2× a 256² image), one hidden layer of
/// 32, 400 steps of 2^14 pixels, learning rate 10⁻² decayed to 10⁻³ over
/// the last half. On a 256² image that is 100 epochs: about 16 s on two
/// busy cores, 53.7 dB on the plant capture's render and 43.6 dB on
/// [`procedural_target`] (see `examples/hashgrid_train.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    /// L, the number of levels: 12..=16.
    pub levels: usize,
    /// log2 T, the entries per level: 14..=19.
    pub log2_table_size: u32,
    /// F, the features per entry: 2.
    pub features: usize,
    /// N_min, the coarsest level's resolution: 2..=1024.
    pub base_resolution: u32,
    /// b, the per-level growth factor: in [1, 4] (and no level past
    /// [`MAX_RESOLUTION`]).
    pub growth: f64,
    /// Width of each hidden layer: 8..=256.
    pub hidden_width: usize,
    /// Hidden layers (ReLU): 1..=2.
    pub hidden_layers: usize,
    /// Adam's step size for both the table and the MLP: in (0, 1].
    pub learning_rate: f32,
    /// The share of the steps, at the end, over which the learning rate
    /// decays geometrically: in [0, 1].
    pub decay_fraction: f64,
    /// The learning rate at the last step as a share of `learning_rate`:
    /// in (0, 1].
    pub final_lr_fraction: f32,
    /// Optimiser steps: 1..=10⁷.
    pub steps: usize,
    /// Pixels per step: 1..=2^22.
    pub batch_size: usize,
    /// Seeds the table and MLP initialisation and the batch order.
    pub seed: u64,
}

impl Default for FitConfig {
    fn default() -> FitConfig {
        FitConfig {
            levels: 12,
            log2_table_size: 14,
            features: 2,
            base_resolution: 16,
            growth: 1.38,
            hidden_width: 32,
            hidden_layers: 1,
            learning_rate: 1e-2,
            decay_fraction: 0.5,
            final_lr_fraction: 0.1,
            steps: 400,
            batch_size: 1 << 14,
            seed: 0,
        }
    }
}

impl FitConfig {
    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: String, range: &str| {
            Err(Error::InvalidArgument(format!(
                "hash grid fit: {field} = {value} is out of range: must be {range}"
            )))
        };
        if !(12..=16).contains(&self.levels) {
            return bad("levels", self.levels.to_string(), "in 12..=16");
        }
        if !(14..=19).contains(&self.log2_table_size) {
            return bad(
                "log2_table_size",
                self.log2_table_size.to_string(),
                "in 14..=19",
            );
        }
        if self.features != 2 {
            return bad("features", self.features.to_string(), "2");
        }
        if !(2..=1024).contains(&self.base_resolution) {
            return bad(
                "base_resolution",
                self.base_resolution.to_string(),
                "in 2..=1024",
            );
        }
        if !(self.growth.is_finite() && (1.0..=4.0).contains(&self.growth)) {
            return bad("growth", self.growth.to_string(), "finite and in [1, 4]");
        }
        if !(8..=256).contains(&self.hidden_width) {
            return bad("hidden_width", self.hidden_width.to_string(), "in 8..=256");
        }
        if !(1..=2).contains(&self.hidden_layers) {
            return bad("hidden_layers", self.hidden_layers.to_string(), "1 or 2");
        }
        let lr = self.learning_rate;
        if !(lr.is_finite() && lr > 0.0 && lr <= 1.0) {
            return bad("learning_rate", lr.to_string(), "finite and in (0, 1]");
        }
        let d = self.decay_fraction;
        if !(d.is_finite() && (0.0..=1.0).contains(&d)) {
            return bad("decay_fraction", d.to_string(), "finite and in [0, 1]");
        }
        let fl = self.final_lr_fraction;
        if !(fl.is_finite() && fl > 0.0 && fl <= 1.0) {
            return bad("final_lr_fraction", fl.to_string(), "finite and in (0, 1]");
        }
        if !(1..=10_000_000).contains(&self.steps) {
            return bad("steps", self.steps.to_string(), "in 1..=10000000");
        }
        if !(1..=1 << 22).contains(&self.batch_size) {
            return bad("batch_size", self.batch_size.to_string(), "in 1..=4194304");
        }
        // The levels' resolutions (and their own limit).
        self.encoding().map(drop)
    }

    /// The encoding this config describes.
    ///
    /// # Errors
    /// As [`Encoding::new`].
    pub fn encoding(&self) -> Result<Encoding> {
        Encoding::new(
            self.levels,
            self.log2_table_size,
            self.features,
            self.base_resolution,
            self.growth,
        )
    }
}

/// A trained grid.
#[derive(Clone, Debug, PartialEq)]
pub struct FittedGrid {
    /// The levels' geometry.
    pub encoding: Encoding,
    /// The table, `[L, T, F]` f32: levels concatenated, each level T·F
    /// values, entry-major. Every level has T entries, dense ones too
    /// (their entries from [`Level::used`] on are never read and keep their
    /// initial values).
    pub table: Vec<f32>,
    /// The readout.
    pub mlp: Mlp,
    /// `[L, T]`: whether any training sample ever read the entry. Entries
    /// never touched keep their initial values (uniform in ±[`TABLE_INIT`]).
    pub touched: Vec<bool>,
    /// The mean squared error (over the batch and RGB) of every step, before
    /// its update.
    pub losses: Vec<f64>,
}

impl FittedGrid {
    /// The share of each level's T entries that no training sample touched.
    pub fn untouched_fraction(&self) -> Vec<f64> {
        let t = self.encoding.table_size();
        self.touched
            .chunks_exact(t)
            .map(|lv| lv.iter().filter(|&&x| !x).count() as f64 / t as f64)
            .collect()
    }

    /// The table rounded to f16, `[L, T, F]`, as a grid file stores it.
    pub fn table_f16(&self) -> Vec<half::f16> {
        self.table.iter().map(|&v| half::f16::from_f32(v)).collect()
    }

    /// [`render`] of this grid's own table.
    ///
    /// # Errors
    /// As [`render`].
    pub fn render(&self, width: usize, height: usize) -> Result<Vec<f32>> {
        render(&self.encoding, &self.table, &self.mlp, width, height)
    }
}

//! # turboquant3d
//!
//! Training-free compression of 3D reconstruction model parameters with
//! TurboQuant (arXiv 2504.19874, 3DTurboQuant arXiv 2604.05366): rotate each
//! d-dimensional vector by one fixed random orthogonal matrix, quantise every
//! coordinate with the Lloyd–Max codebook of the known coordinate density of
//! the sphere, and store one scale per vector. The codebook depends on (d, b)
//! alone, so there is nothing to train or calibrate, and the expected error
//! is known in advance: d·C(d, b) ≤ (√3·π/2)·4^−b for unit vectors.
//!
//! ```
//! use turboquant3d::{Quantizer, QuantizerConfig, ScaleMode, theory};
//! let mut cfg = QuantizerConfig::new(45, 3);
//! cfg.scale_mode = ScaleMode::Norm;
//! let q = Quantizer::new(&cfg).unwrap();
//! let x = vec![0.25f32; 45 * 16];
//! let x_hat = q.decode(&q.encode(&x).unwrap()).unwrap();
//! // Each row has ‖x‖² = 45/16; the error is about d·C(d, b) of that.
//! let err: f64 = x.iter().zip(&x_hat).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / 16.0;
//! assert!(err / (45.0 / 16.0) < theory::upper_bound(3));
//! ```
//!
//! Layers, each importing only those before it:
//! - [`codec`]: the domain-free core (codebook, rotation, packing, the CPU
//!   quantizer, the bit allocator, theory);
//! - [`format`](mod@format): the `.tqv` vector file and `.npy` I/O;
//! - [`gpu`]: the wgpu mirror of the codec, on a borrowed or owned device;
//! - [`splat`]: 3D Gaussian Splatting scenes (PLY, `.splat`, the `.tq3s`
//!   container, per-Gaussian SH widths);
//! - [`render`]: the headless splat renderer (CPU reference and wgpu), its
//!   in-shader SH decode, image metrics and the fidelity predictions.

// Nothing derived from input may panic: `cargo clippy --release --lib --bins`
// rejects unwrap, expect and panic! outside tests; each invariant that stays
// is allowed where it stands, with the reason it cannot fail.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod codec;
mod error;
pub mod format;
pub mod gpu;
pub mod grid;
pub mod kv;
pub mod render;
pub mod splat;

pub use codec::codebook::Codebook;
pub use codec::encoded::Encoded;
pub use codec::packing;
pub use codec::quantizer::{Quantizer, QuantizerConfig};
pub use codec::rotation::{Rotation, RotationKind};
pub use codec::rows::{Rows, RowsMut};
pub use codec::scales::{ScaleFormat, ScaleMode, Scales};
pub use codec::theory;
pub use error::{Error, Result};
/// The wgpu this crate was built against, so that hosts can match its version.
pub use wgpu;

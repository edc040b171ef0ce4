//! Transformer key/value caches (docs/THEORY.md §15, the `.tq3k` file in
//! docs/FORMAT.md): each token's key or value row is cut into vectors (the
//! whole width, or one per head, with optional outlier-channel segments),
//! and each vector is coded by TurboQuant at a width the rate–distortion
//! allocator picks from how much its error shows in attention.
//!
//! - [`attention`]: attention over a cache, the exact reference first;
//! - [`coded`]: the compressed form of one tensor ([`CodedTensor`]) and how
//!   rows are cut into units ([`Plan`]);
//! - [`tensors`]: safetensors and `.npy` in and out, tensor roles, layouts.

pub mod attention;
pub mod coded;
pub mod tensors;

pub use coded::{CodedTensor, Plan, Rotations};

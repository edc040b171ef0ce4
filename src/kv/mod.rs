//! Transformer key/value caches (docs/THEORY.md §15, the `.tq3k` file in
//! docs/FORMAT.md): each token's key or value row is cut into vectors (the
//! whole width, or one per head, with optional outlier-channel segments),
//! and each vector is coded by TurboQuant at a width the rate–distortion
//! allocator picks from how much its error shows in attention.
//!
//! - [`attention`]: attention over a cache, the exact reference first;
//! - [`basis`]: a per-model key basis from calibration caches;
//! - [`cache`]: whole caches, named tensors to a `.tq3k` file and back;
//! - [`codec`]: plans, unit weights and the allocation of a layer's bits;
//! - [`coded`]: the compressed form of one tensor ([`CodedTensor`]) and how
//!   rows are cut into units ([`Plan`]);
//! - [`eval`]: a cache judged by attention, beside KIVI at the same bits;
//! - [`file`]: the `.tq3k` file of coded and raw entries ([`KvFile`]);
//! - [`kivi`]: KIVI-style asymmetric integer quantisation, the baseline;
//! - [`metrics`]: attention output, logit and top-k errors, NMSE;
//! - [`synth`]: synthetic caches with real caches' structure;
//! - [`tensors`]: safetensors and `.npy` in and out, tensor roles, layouts.

pub mod attention;
pub mod basis;
pub mod cache;
pub mod codec;
pub mod coded;
pub mod eval;
pub mod file;
pub mod kivi;
pub mod metrics;
pub mod synth;
pub mod tensors;

pub use codec::{
    Budget, KvConfig, LayerIn, LayerOut, Mode, Weighting, append_layer, compress_layer,
};
pub use coded::{CodedTensor, Plan, Rotations};
pub use file::KvFile;

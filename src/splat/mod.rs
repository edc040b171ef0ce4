//! 3D Gaussian Splatting: the scene, PLY and `.splat` input and output, a
//! procedural scene generator, the attribute codecs, and compression into
//! the `.tq3s` scene container and back.
//!
//! ```
//! use std::path::Path;
//! use turboquant3d::splat::{self, CompressOptions};
//! use turboquant3d::splat::synth::{SynthConfig, generate};
//! let scene = generate(&SynthConfig { count: 2000, sh_degree: 3, seed: 1 });
//! let bytes = splat::compress(&scene, &CompressOptions::default())
//!     .unwrap()
//!     .to_bytes()
//!     .unwrap();
//! let back = splat::decompress(&bytes, Path::new("scene.tq3s")).unwrap();
//! assert_eq!(back.len(), scene.len());
//! assert_eq!(back.sh_degree, 3);
//! ```

pub mod antimatter;
pub mod attributes;
mod compress;
pub mod compressed_ply;
pub mod container;
mod decompress;
mod dedup;
pub mod formats;
pub mod gltf;
pub mod importance;
mod layout;
pub mod ply;
pub mod rd;
pub mod scene;
pub mod sh;
pub mod sog;
pub mod spz;
pub mod synth;

pub use compress::{
    CompressOptions, Compressed, DEFAULT_CHUNK, DEFAULT_SEED, SizePrediction, StreamSize, Timings,
    check_finite, compress, compress_on, few_levels, predict_size, storage_order,
};
pub use decompress::{decompress, decompress_split, read};
pub use scene::{ExtraProperty, Extras, ScalarType, Scene, rest_dim, rest_per_channel};

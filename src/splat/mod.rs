//! 3D Gaussian Splatting: the scene, PLY and `.splat` input and output, a
//! procedural scene generator, the attribute codecs and the `.tq3s` scene
//! container.

pub mod allocate;
pub mod antimatter;
pub mod attributes;
pub mod codec;
pub mod container;
pub mod ply;
pub mod scene;
pub mod sh;
pub mod synth;

pub use scene::{ExtraProperty, Extras, ScalarType, Scene, rest_dim, rest_per_channel};

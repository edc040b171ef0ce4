//! The codec: codebook, rotation, packing and the CPU quantizer. It knows
//! nothing of GPUs, files or splats.

pub mod codebook;
pub mod packing;
pub mod quantizer;
pub mod rotation;
pub mod rows;
pub mod theory;

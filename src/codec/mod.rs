//! The codec: codebook, rotation, packing, the CPU quantizer and the bit
//! allocator. It knows nothing of GPUs, files or splats.

pub mod allocate;
pub mod codebook;
pub mod encoded;
pub mod entropy;
pub mod frame;
pub mod packing;
pub mod palette;
pub mod quantizer;
pub mod rotation;
pub mod rows;
pub mod scales;
pub mod theory;

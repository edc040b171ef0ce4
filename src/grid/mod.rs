//! Instant-NGP-style multiresolution hash grids (L levels × T entries × F
//! features), the method's third workload: entries grouped into longer
//! vectors, per-level and per-group widths, untouched entries for free.
//!
//! - [`table`]: the table and its checks;
//! - [`io`]: `.npy` and safetensors in and out, in the input's dtype;
//! - [`group`]: g entries of a level as one vector of d = g·F;
//! - [`budget`]: widths and scale bits for a byte budget;
//! - [`codec`]: compression (GPU or CPU, the same bytes);
//! - [`compressed`]: the compressed grid and its decoding;
//! - [`file`]: the `.tq3g` file;
//! - [`anchors`]: what a user would otherwise do (uniform per-level
//!   integers, f8/int8 casts, k-means vector quantisation);
//! - [`fit`]: a 2D multiresolution hash encoding with a small MLP readout,
//!   fitted to an image with Adam on the CPU, so that the codec is measured
//!   on grids that training really produced.

pub mod anchors;
pub mod budget;
pub mod codec;
pub mod compressed;
pub mod file;
pub mod fit;
pub mod group;
pub mod io;
pub mod table;

//! Instant-NGP-style multiresolution hash grids (L levels × T entries × F
//! features), the method's third workload: entries grouped into longer
//! vectors, per-level and per-group widths, untouched entries for free.
//!
//! - [`fit`]: a 2D multiresolution hash encoding with a small MLP readout,
//!   fitted to an image with Adam on the CPU, so that the codec is measured
//!   on grids that training really produced.

pub mod fit;

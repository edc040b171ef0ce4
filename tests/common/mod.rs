//! Helpers shared by the integration tests. Each test binary compiles this
//! module on its own (`mod common;`), so a helper one binary leaves unused
//! is not dead code.
#![allow(dead_code)]

pub mod cli;
pub mod data;
pub mod decode;
pub mod gpu;
pub mod peer;
pub mod ply;
pub mod tq3s;
pub mod tqv;
pub mod xwd;

/// Runs `f` on a rayon pool of `n` threads (the byte-identity tests across
/// thread counts).
pub fn on_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("a rayon pool")
        .install(f)
}

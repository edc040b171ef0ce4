//! Deterministic test data.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `n` rows of `d` standard-normal f32 values from a fixed seed.
pub fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

/// Whether this run must not skip for want of a GPU adapter or a data file
/// (CI, or `REQUIRE_GPU` set).
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("REQUIRE_GPU").is_some()
}

/// A file from `../shared/data`, or `None` (with a note) where it is absent
/// locally. Under CI its absence fails the test: a test that silently
/// returns proves nothing.
pub fn shared_data(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name);
    if path.is_file() {
        return Some(path);
    }
    if required() {
        panic!(
            "{} is required here (CI or REQUIRE_GPU) but missing",
            path.display()
        );
    }
    super::gpu::note(&format!("SKIPPED: {} is missing", path.display()));
    None
}

//! Deterministic test data.

use glam::Vec3;
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

/// splitmix64, uniform in [0, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }

    /// A uniformly random unit vector (rejection sampling).
    pub fn unit_dir(&mut self) -> Vec3 {
        loop {
            let v = Vec3::new(
                self.range(-1.0, 1.0) as f32,
                self.range(-1.0, 1.0) as f32,
                self.range(-1.0, 1.0) as f32,
            );
            let l = v.length();
            if l > 0.1 && l <= 1.0 {
                return v / l;
            }
        }
    }
}

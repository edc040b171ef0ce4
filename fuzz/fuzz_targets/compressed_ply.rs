//! PlayCanvas `.compressed.ply`: `read_compressed_ply_bytes`. On `Ok` the
//! scene is consistent, every value finite, and each Gaussian took at
//! least its 16-byte vertex record.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::splat::compressed_ply::read_compressed_ply_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// A Gaussian needs a 16-byte record and becomes at most 236 bytes of
/// scene (SH degree 3): under 15 bytes per input byte, plus the header.
const BOUND: Bound = Bound { a: 64, b: 1 << 20 };

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.compressed.ply";
    let g = begin(data.len(), BOUND);
    let r = read_compressed_ply_bytes(data, Path::new(name));
    drop(g);
    match r {
        Ok(s) => {
            s.check_consistent().unwrap();
            assert!(16 * s.len() <= data.len());
            assert!(s.opacity.iter().all(|o| o.is_finite()));
            assert!(s.rotations.iter().flatten().all(|v| v.is_finite()));
        }
        Err(e) => check_error(&e, name),
    }
});

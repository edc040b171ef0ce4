//! Niantic `.spz`, every version (v2/v3 gzip, v4 `NGSP` + zstd streams):
//! `read_spz_bytes`. On `Ok` the scene is consistent and has at most as
//! many Gaussians as the reader's bound allows (file bytes · 1024 / 9).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::splat::spz::read_spz_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// At most 114 Gaussians a file byte (the reference's 1024/9), each at most
/// 236 bytes of scene (SH degree 3) plus 65 bytes of inflated payload.
const BOUND: Bound = Bound {
    a: 40_000,
    b: 64 << 20,
};

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.spz";
    let g = begin(data.len(), BOUND);
    let r = read_spz_bytes(data, Path::new(name));
    drop(g);
    match r {
        Ok(s) => {
            s.check_consistent().unwrap();
            assert!(s.len() as u64 <= (data.len() as u64 * 1032).div_ceil(9) + 4096);
            assert!(s.opacity.iter().all(|o| o.is_finite()));
        }
        Err(e) => check_error(&e, name),
    }
});

//! `.splat` (antimatter15): `read_splat_bytes`. On `Ok` the scene has one
//! Gaussian per 32-byte record, every array of that length.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::splat::antimatter::read_splat_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// A 32-byte record becomes 14 f32 (56 bytes): under 2 bytes per input byte.
const BOUND: Bound = Bound { a: 3, b: 1 << 20 };

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.splat";
    let g = begin(data.len(), BOUND);
    let r = read_splat_bytes(data, Path::new(name));
    drop(g);
    match r {
        Ok(s) => {
            s.check_consistent().unwrap();
            assert_eq!(s.len(), data.len() / 32);
            assert_eq!(data.len() % 32, 0);
            assert_eq!(s.sh_degree, 0);
        }
        Err(e) => check_error(&e, name),
    }
});

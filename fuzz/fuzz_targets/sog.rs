//! PlayCanvas SOG, the bundled zip form: `read_sog_bytes`. On `Ok` the
//! scene is consistent.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::splat::sog::read_sog_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// At most 16 Gaussians a stored byte (plus 65,536), each ~240 bytes of
/// scene, and textures of at most 4·count + 2^20 pixels.
const BOUND: Bound = Bound {
    a: 8192,
    b: 64 << 20,
};

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.sog";
    let g = begin(data.len(), BOUND);
    let r = read_sog_bytes(data, Path::new(name));
    drop(g);
    match r {
        Ok(s) => s.check_consistent().unwrap(),
        Err(e) => check_error(&e, name),
    }
});

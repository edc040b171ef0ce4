//! glTF binary with KHR_gaussian_splatting: `read_glb_bytes`. On `Ok` the
//! scene is consistent.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::splat::gltf::read_glb_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// POSITION takes 12 bytes a Gaussian and accessors may share a view, so
/// a Gaussian (≤ 236 bytes of scene at SH 3) costs ≥ 12 input bytes; the
/// JSON tree costs a small multiple of its text.
const BOUND: Bound = Bound { a: 64, b: 1 << 20 };

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.glb";
    let g = begin(data.len(), BOUND);
    let r = read_glb_bytes(data, Path::new(name));
    drop(g);
    match r {
        Ok(s) => s.check_consistent().unwrap(),
        Err(e) => check_error(&e, name),
    }
});

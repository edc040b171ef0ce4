//! `.npy`: `format::npy::from_bytes`. On `Ok`, rows × cols values.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::format::npy::from_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// f16 data becomes f32 (2×), through npyz's own f16 vector (1×), plus
/// one copy of the header. npyz's header parser (pest) takes about 1.1 MB
/// for a header of nested brackets, whatever its depth (its recursion
/// limit stops it): B covers it.
const BOUND: Bound = Bound { a: 4, b: 4 << 20 };

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.npy";
    let g = begin(data.len(), BOUND);
    let r = from_bytes(data, Path::new(name));
    drop(g);
    match r {
        Ok(m) => assert_eq!(m.data.len(), m.rows * m.cols),
        Err(e) => check_error(&e, name),
    }
});

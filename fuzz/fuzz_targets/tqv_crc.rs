//! `.tqv`, structure-aware: every checksum of the input is recomputed
//! first, so mutations reach the section parsers and the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turboquant3d_fuzz::{counting_allocator, repair_tqv};

counting_allocator!();

include!("tqv_common.rs");

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    repair_tqv(&mut b);
    run(&b);
});

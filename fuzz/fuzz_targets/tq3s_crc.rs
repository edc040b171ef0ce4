//! `.tq3s`, structure-aware: every checksum of the input is recomputed
//! first, so mutations reach the stream decoders. Its seeds store every
//! stream raw, so that mutated bytes are the attributes themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turboquant3d_fuzz::{counting_allocator, repair_tq3s};

counting_allocator!();

include!("tq3s_common.rs");

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    repair_tq3s(&mut b);
    run(&b);
});

//! `.tq3g`, structure-aware: every checksum of the input is recomputed
//! first, so mutations reach the section parsers and the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turboquant3d_fuzz::{counting_allocator, repair_tq3g};

counting_allocator!();

include!("tq3g_common.rs");

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    repair_tq3g(&mut b);
    run(&b);
});

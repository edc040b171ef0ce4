//! `.tqv`: `format::tqv::from_bytes`, then the vectors decoded with the
//! file's quantizer: count × d values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turboquant3d_fuzz::counting_allocator;

counting_allocator!();

include!("tqv_common.rs");

fuzz_target!(|data: &[u8]| run(data));

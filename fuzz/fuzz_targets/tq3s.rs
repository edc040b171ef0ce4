//! `.tq3s`: `splat::decompress` and `splat::decompress_split`; on `Ok`
//! both have the header's count, and decoding the kept SH-rest gives what
//! `decompress` gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turboquant3d_fuzz::counting_allocator;

counting_allocator!();

include!("tq3s_common.rs");

fuzz_target!(|data: &[u8]| run(data));

//! `.tq3g` (hash grids): `grid::file::from_bytes`, then the grid decoded
//! when it declares at most 2^22 values (a valid file may declare up to
//! 65,536 values a byte, all of them in width-0 groups that decode to
//! zeros: a legitimate allocation the fuzzer's memory limit would mistake
//! for a leak). On `Ok` the decoded table has the declared shape and only
//! finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turboquant3d_fuzz::counting_allocator;

counting_allocator!();

include!("tq3g_common.rs");

fuzz_target!(|data: &[u8]| run(data));

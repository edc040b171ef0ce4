// The body shared by `tq3g` and `tq3g_crc` (included, as tqv_common.rs is).

use std::path::Path;

use turboquant3d::grid::file::from_bytes;
use turboquant3d_fuzz::{Bound, begin, check_error};

/// Parsing keeps a width byte per group (≤ 4,096 groups a byte at the
/// reader's 65,536 values a byte) and what the sections hold; decoding is
/// capped at 2^22 values (16 MiB of f32, a few copies).
const BOUND: Bound = Bound {
    a: 8192,
    b: 96 << 20,
};

const DECODE_AT_MOST: usize = 1 << 22;

fn run(data: &[u8]) {
    let name = "fuzz.tq3g";
    let g = begin(data.len(), BOUND);
    let r = from_bytes(data, Path::new(name)).and_then(|c| {
        if c.values() > DECODE_AT_MOST {
            return Ok(None);
        }
        c.decode().map(|grid| Some((c.values(), grid)))
    });
    drop(g);
    match r {
        Ok(Some((n, grid))) => {
            assert_eq!(grid.data.len(), n);
            assert_eq!(grid.shape.iter().product::<usize>(), n);
            assert!(grid.data.iter().all(|v| v.is_finite()));
        }
        Ok(None) => {}
        Err(e) => check_error(&e, name),
    }
}

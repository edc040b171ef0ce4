//! PLY, binary and ASCII: `read_ply_from` on the input as a file of known
//! length. On `Ok` every attribute array has the header's vertex count.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::splat::ply::read_ply_from;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// A value takes at least one byte in binary and two characters in ASCII,
/// and becomes one f32: 4 bytes per input byte, twice for the reader's
/// chunk copies, plus the fixed chunk buffers.
const BOUND: Bound = Bound { a: 8, b: 16 << 20 };

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.ply";
    let g = begin(data.len(), BOUND);
    let r = read_ply_from(Cursor::new(data), Path::new(name), Some(data.len() as u64));
    drop(g);
    match r {
        Ok(s) => {
            s.check_consistent().unwrap();
            let n = header_count(data).expect("Ok without a vertex count in the header");
            assert_eq!(s.len() as u64, n, "scene length vs header count");
            assert_eq!(s.sh_rest.len(), s.len() * s.rest_dim());
        }
        Err(e) => check_error(&e, name),
    }
});

/// The `element vertex N` line of the header, split as the reader splits
/// it: lines end at `\n` only, and within a line any ASCII whitespace
/// (a lone `\r` included) separates tokens.
fn header_count(data: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(data);
    for l in text.split('\n') {
        match l.split_ascii_whitespace().collect::<Vec<_>>()[..] {
            ["end_header"] => return None,
            ["element", "vertex", n] => return n.parse().ok(),
            _ => {}
        }
    }
    None
}

// Included by tqv.rs and tqv_crc.rs.

use std::path::Path;

use turboquant3d::format::tqv::{from_bytes, parse_header};
use turboquant3d_fuzz::{Bound, begin, check_error};

/// The decoded vectors are 4 bytes per coordinate from at least 1/8 byte
/// of codes (32×); a Hadamard rotation's signs are one f32 per stored bit
/// (32×); the rest (tables, scales, a copy of the codes) is under 8×.
pub const BOUND: Bound = Bound { a: 72, b: 4 << 20 };

pub fn run(data: &[u8]) {
    let name = "fuzz.tqv";
    let path = Path::new(name);
    let g = begin(data.len(), BOUND);
    let r = from_bytes(data, path).and_then(|f| {
        let x = f.quantizer.decode(&f.encoded)?;
        Ok((f, x))
    });
    drop(g);
    match r {
        Ok((f, x)) => {
            let h = parse_header(data, path).expect("Ok file with a bad header");
            assert_eq!(f.encoded.len() as u64, h.count);
            assert_eq!((f.quantizer.dim(), f.encoded.dim()), (h.dim, h.dim));
            assert_eq!(x.len(), f.encoded.len() * h.dim, "count × dim values");
        }
        Err(e) => check_error(&e, name),
    }
}

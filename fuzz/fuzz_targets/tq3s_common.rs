// Included by tq3s.rs and tq3s_crc.rs.

use std::path::Path;

use turboquant3d::splat::container::{SH_EXACT, read_table};
use turboquant3d::splat::{decompress, decompress_split};
use turboquant3d_fuzz::{Bound, begin, check_error};

/// Per byte of input and per byte the zstd streams really decode to (the
/// target decodes them itself first): the smallest Gaussian is about 14
/// stored bytes and becomes about 250 in the scene, with the SH codes and
/// the planes copied once on the way.
pub const BOUND: Bound = Bound { a: 32, b: 4 << 20 };

fn bits(v: &[[f32; 3]]) -> Vec<u32> {
    v.as_flattened().iter().map(|x| x.to_bits()).collect()
}

pub fn run(data: &[u8]) {
    let name = "fuzz.tq3s";
    let path = Path::new(name);
    let decoded = turboquant3d_fuzz::zstd_decoded_len(data);
    let len = data.len().saturating_add(decoded);
    let g = begin(len, BOUND);
    let full = decompress(data, path);
    drop(g);
    let g = begin(len, BOUND);
    let split = decompress_split(data, path);
    drop(g);
    match (full, split) {
        (Ok(s), Ok((t, sh))) => {
            let (h, _) = read_table(data, path).expect("Ok file with a bad table");
            s.check_consistent().unwrap();
            t.check_consistent().unwrap();
            assert_eq!(s.len() as u64, h.count, "scene length vs header count");
            assert_eq!(t.len() as u64, h.count, "split scene length vs header count");
            assert_eq!(s.sh_degree, h.sh_degree);
            // Bit-exact SH-rest (version 4) has no codes to keep: the split
            // scene is whole.
            let exact = h.sh_flags & SH_EXACT != 0;
            if exact {
                assert!(sh.is_none(), "codes kept for bit-exact SH-rest");
                assert_eq!(t.sh_degree, h.sh_degree);
                assert!(
                    s.sh_rest.iter().zip(&t.sh_rest).all(|(a, b)| a.to_bits() == b.to_bits())
                        && s.sh_rest.len() == t.sh_rest.len(),
                    "bit-exact SH-rest differs between decompress and the split"
                );
            } else {
                assert_eq!(t.sh_degree, 0);
            }
            assert!(bits(&s.positions) == bits(&t.positions), "positions differ");
            // Stored values are finite (docs/FORMAT.md), and so is what
            // they decode to.
            let fin = |v: &[f32], what: &str| {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    panic!("decoded {what}[{i}] = {} is not finite", v[i]);
                }
            };
            fin(s.positions.as_flattened(), "positions");
            fin(s.scales.as_flattened(), "scales");
            fin(s.rotations.as_flattened(), "rotations");
            fin(s.dc.as_flattened(), "dc");
            fin(&s.opacity, "opacity");
            fin(&s.sh_rest, "sh_rest");
            if let Some(nrm) = &s.normals {
                fin(nrm.as_flattened(), "normals");
            }
            match sh {
                Some(sh) => {
                    assert_eq!(sh.len() as u64, h.count);
                    assert_eq!(sh.dim(), s.rest_dim());
                    let rest = sh.decode().expect("kept SH-rest does not decode");
                    assert_eq!(rest.len(), s.sh_rest.len());
                    assert!(
                        rest.iter().zip(&s.sh_rest).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "decode of the kept SH-rest differs from decompress"
                    );
                }
                None => assert!(exact || s.rest_dim() == 0),
            }
        }
        (Err(e), Err(f)) => {
            check_error(&e, name);
            check_error(&f, name);
        }
        // Only decompress decodes the SH-rest: its error must then be the
        // kept SH-rest's.
        (Err(e), Ok((_, Some(sh)))) => {
            check_error(&e, name);
            assert!(sh.decode().is_err(), "decompress failed but the split decodes: {e}");
        }
        (a, b) => panic!(
            "decompress and decompress_split disagree: {:?} vs {:?}",
            a.map(|s| s.len()),
            b.map(|s| s.0.len())
        ),
    }
}

//! The KV wing's tensor files: `kv::tensors::TensorFile::from_bytes`, as
//! safetensors, or as `.npy` when the bytes start with its magic. On `Ok`:
//! roles and groups, every key/value in its default layout to the codec's
//! order and back (bit-exact: each value came from the dtype), and the
//! file written and read again to the same tensors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::kv::tensors::{
    FileKind, NamedTensor, Role, RoleGlobs, TensorFile, assign, from_canonical, to_canonical,
};
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// The input copied (1×); the header's shapes, 8 bytes an entry for 2 of
/// JSON, in the crate's metadata and in our tensors (8×); f16 values as
/// f32 (2×), back (2×) and encoded (1×); the file written (1×) and read
/// again (1× + 8×). Inputs are at most 64 KiB in CI, so B dominates.
const BOUND: Bound = Bound { a: 24, b: 4 << 20 };

fuzz_target!(|data: &[u8]| {
    let (name, kind) = if data.starts_with(b"\x93NUMPY") {
        ("fuzz.npy", FileKind::Npy)
    } else {
        ("fuzz.safetensors", FileKind::Safetensors)
    };
    let g = begin(data.len(), BOUND);
    let f = match TensorFile::from_bytes(data, Path::new(name)) {
        Ok(f) => f,
        Err(e) => {
            drop(g);
            return check_error(&e, name);
        }
    };
    if let Ok(a) = assign(&f.tensors, &RoleGlobs::default()) {
        assert_eq!(a.roles.len(), f.tensors.len());
        for (t, r) in f.tensors.iter().zip(&a.roles) {
            if *r == Role::Other {
                continue;
            }
            match to_canonical(t, None, None) {
                Ok(c) => {
                    assert_eq!(c.data.len(), c.layers * c.tokens * c.width());
                    let back = from_canonical(&c, &t.name, t.dtype.clone(), &t.shape, None)
                        .expect("the inverse of to_canonical");
                    assert!(back == *t, "{} does not round-trip", t.name);
                }
                Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            }
        }
    }
    if let Ok(bytes) = f.to_bytes(kind) {
        let again = TensorFile::from_bytes(&bytes, Path::new(name)).expect("its own output reads");
        assert!(sorted(&again) == sorted(&f), "write then read changed the tensors");
        assert_eq!(again.metadata, f.metadata);
    }
    drop(g);
});

/// The tensors by name (safetensors writes them in its own order).
fn sorted(f: &TensorFile) -> Vec<&NamedTensor> {
    let mut v: Vec<_> = f.tensors.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

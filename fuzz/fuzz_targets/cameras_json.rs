//! cameras.json: `render::camera::parse_cameras_json`. On `Ok`, a
//! non-empty list of cameras with sane sizes and finite parameters.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use turboquant3d::render::camera::parse_cameras_json;
use turboquant3d_fuzz::{Bound, begin, check_error, counting_allocator};

counting_allocator!();

/// serde_json's value tree: a one-byte `0` or `[` is a 32-byte value in a
/// vector that may double (64), plus the cameras.
const BOUND: Bound = Bound { a: 128, b: 1 << 20 };

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let name = "fuzz.json";
    let g = begin(data.len(), BOUND);
    let r = parse_cameras_json(text, Path::new(name));
    drop(g);
    match r {
        Ok(cams) => {
            assert!(!cams.is_empty());
            for c in &cams {
                assert!((1..=65536).contains(&c.width) && (1..=65536).contains(&c.height));
                assert!(c.fx > 0.0 && c.fy > 0.0, "{c:?}");
                assert!(c.fx.is_finite() && c.fy.is_finite(), "{c:?}");
                assert!(c.rotation.is_finite(), "{c:?}");
                assert!(c.translation.is_finite(), "{c:?}");
            }
        }
        Err(e) => check_error(&e, name),
    }
});

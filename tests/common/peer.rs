//! The real peer, PlayCanvas's `splat-transform` (npm
//! `@playcanvas/splat-transform@2.7.1`), for round trips in both
//! directions. `.ci/run` installs it under `target/peer`; locally, set
//! `TQ3D_PEER` to its `splat-transform` script, or install it the same way:
//! `npm install --prefix target/peer @playcanvas/splat-transform@2.7.1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The version the tests were written against.
pub const VERSION: &str = "2.7.1";

/// The peer's executable, or `None` (with a note) where neither Node nor
/// the package is here. Under CI its absence fails the test.
pub fn peer() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TQ3D_PEER").map(PathBuf::from),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/peer/node_modules/.bin/splat-transform"),
        ),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file()
            && Command::new("node")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    if super::data::required() {
        panic!(
            "the peer splat-transform is required here (CI) but missing: .ci/run installs it under target/peer"
        );
    }
    super::gpu::note("SKIPPED: splat-transform (Node) is not installed: see tests/common/peer.rs");
    None
}

/// Runs `splat-transform -q -w ARGS…` and panics with its output on failure.
pub fn run(peer: &Path, args: &[&std::ffi::OsStr]) {
    let out = Command::new(peer)
        .args(["-q", "-w"])
        .args(args)
        .output()
        .expect("spawn splat-transform");
    assert!(
        out.status.success(),
        "splat-transform {:?} failed: {}\n{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Converts `input` to `output` with the peer (formats by extension).
pub fn convert(peer: &Path, input: &Path, output: &Path) {
    run(peer, &[input.as_os_str(), output.as_os_str()]);
}

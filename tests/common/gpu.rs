//! One GPU device per test binary, and notes that reach the test log.
//!
//! libtest captures `println!`/`eprintln!` of passing tests, so what a
//! skip or a variant report says would be hidden. [`note`] writes to the
//! process's standard error directly, which libtest does not capture: the
//! CI log shows every skip and every variant that really ran.

use std::io::Write;
use std::sync::OnceLock;

use turboquant3d::gpu::{AdapterPolicy, GpuContext};

pub use super::data::required;

/// Writes one line to the test log, past libtest's capture.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The library's own device (software adapters allowed: lavapipe under CI),
/// created once per test binary. `None` with a note when there is no
/// adapter; under CI or `REQUIRE_GPU` that fails instead.
pub fn context() -> Option<GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::request(AdapterPolicy::AllowSoftware) {
        Ok(ctx) => {
            note(&format!("GPU tests on {}", ctx.describe()));
            Some(ctx)
        }
        Err(e) if required() => {
            panic!("a GPU adapter is required here (CI or REQUIRE_GPU): {e}")
        }
        Err(e) => {
            note(&format!(
                "SKIPPED: no GPU adapter ({e}); set REQUIRE_GPU=1 to make this a failure"
            ));
            None
        }
    })
    .clone()
}

/// Reports that a variant ran on this device.
pub fn ran(variant: &str) {
    note(&format!("VARIANT RAN: {variant}"));
}

/// Reports that a variant was skipped because the device lacks what it
/// needs. This is not a failure even under CI (the device decides), but it
/// is always visible in the log.
pub fn skipped(variant: &str, why: &str) {
    note(&format!("VARIANT SKIPPED: {variant}: {why}"));
}

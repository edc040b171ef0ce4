//! The fuzz crate (its own workspace, fuzz/) builds with `--locked` in CI
//! (.ci/fuzz-smoke), so its Cargo.lock must follow every dependency the
//! main crate adds. Twice a new dependency left it stale and CI failed at
//! its very end; this says so at `cargo test` time instead. Fix with
//! `cargo metadata --manifest-path fuzz/Cargo.toml >/dev/null`.

use std::process::Command;

#[test]
fn the_fuzz_crates_lock_file_is_current() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "fuzz/Cargo.lock is stale (run `cargo metadata --manifest-path fuzz/Cargo.toml >/dev/null` and commit it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

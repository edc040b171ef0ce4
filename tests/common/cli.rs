//! Running the `tq3d` binary as a separate process.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// Runs `tq3d` with `args`, without the caller's `RUST_LOG`.
pub fn tq3d<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_tq3d"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run tq3d")
}

/// Its standard output, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard error, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that the run succeeded, with its exit code and output if not.
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// `tq3d compress INPUT -o OUTPUT --device cpu --json` followed by `extra`.
pub fn compress_json(input: &std::path::Path, output: &std::path::Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("compress"),
        input.as_os_str(),
        OsStr::new("-o"),
        output.as_os_str(),
        OsStr::new("--device"),
        OsStr::new("cpu"),
        OsStr::new("--json"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    tq3d(args)
}

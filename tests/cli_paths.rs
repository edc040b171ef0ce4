//! Where the command line reads and writes (issue 13): readers stop where
//! the header says the file ends, outputs never replace their input, a
//! device or anything else that is not a regular file, `-` is standard
//! output, and a symlink is followed to its target. Also the bounded
//! dense rotation and the messages that name the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{assert_ok, stderr, tq3d};
use common::data::gaussian;
use turboquant3d::codec::rotation::MAX_DENSE_DIM;
use turboquant3d::format::{npy, tqv};

fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A small f32 .npy of [n, d] Gaussian values.
fn write_npy(path: &Path, n: usize, d: usize) {
    npy::write_matrix(path, n, d, &gaussian(n, d, 3)).unwrap();
}

/// A .tqv of `a.npy`, both in `dir`.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, t) = (p(dir, "a.npy"), p(dir, "a.tqv"));
    write_npy(&a, 40, 45);
    let o = tq3d([
        "encode",
        "-i",
        s(&a),
        "-o",
        s(&t),
        "--bits",
        "3",
        "--device",
        "cpu",
    ]);
    assert_ok(&o, "encode fixture");
    (a, t)
}

/// Runs tq3d and waits at most `limit`; a run that has not ended by then is
/// killed and reported (a reader that never stops).
fn tq3d_within(args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tq3d"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("tq3d {args:?} was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn dense_rotation_beyond_its_limit_is_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    // 1 × 65535 asked for 34 GB (the f64 Gaussian matrix) and aborted; 1 × 2000
    // took 12 s. Both are now refused at once, naming the limit.
    for d in [65535usize, 2000, MAX_DENSE_DIM + 1] {
        let x = p(dir.path(), &format!("w{d}.npy"));
        write_npy(&x, 1, d);
        let out = p(dir.path(), "x.tqv");
        let o = tq3d_within(
            &[
                "encode",
                "-i",
                s(&x),
                "-o",
                s(&out),
                "--bits",
                "1",
                "--device",
                "cpu",
            ],
            Duration::from_secs(60),
        );
        let e = stderr(&o);
        assert!(!o.status.success(), "d = {d} was accepted");
        assert!(
            e.contains(&format!("d = {d}")) && e.contains(&format!("d <= {MAX_DENSE_DIM}")),
            "d = {d}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(!out.exists());
    }
    // The library refuses it the same way; a power of two that large takes
    // the Hadamard rotation instead.
    assert!(turboquant3d::Rotation::dense(MAX_DENSE_DIM + 1, 0).is_err());
    assert!(
        turboquant3d::Rotation::new(turboquant3d::RotationKind::default_for(1 << 16), 1 << 16, 0)
            .is_ok()
    );
}

#[cfg(unix)]
#[test]
fn readers_on_an_endless_device_stop_after_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let out = |n: &str| p(dir.path(), n);
    let (o1, o2, o3) = (out("o.npy"), out("o.ply"), out("o.tqv"));
    let runs: [Vec<&str>; 4] = [
        vec!["info", "/dev/zero"],
        vec!["decode", "/dev/zero", "-o", s(&o1), "--device", "cpu"],
        vec!["decompress", "/dev/zero", "-o", s(&o2)],
        vec![
            "encode",
            "-i",
            "/dev/zero",
            "-o",
            s(&o3),
            "--bits",
            "2",
            "--device",
            "cpu",
        ],
    ];
    for args in runs {
        let o = tq3d_within(&args, Duration::from_secs(60));
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(e.contains("/dev/zero"), "{args:?}: {e}");
        assert!(e.contains("magic") || e.contains("not a"), "{args:?}: {e}");
    }
    assert!(!o1.exists() && !o2.exists() && !o3.exists());
}

#[cfg(unix)]
#[test]
fn a_pipe_is_still_read_to_its_declared_end() {
    // Reading only what the header declares must still read a non-regular
    // input that holds a whole file: decode from /dev/stdin.
    let dir = tempfile::tempdir().unwrap();
    let (a, t) = fixture(dir.path());
    let out = p(dir.path(), "piped.npy");
    let o = Command::new(env!("CARGO_BIN_EXE_tq3d"))
        .args(["decode", "/dev/stdin", "-o", s(&out), "--device", "cpu"])
        .stdin(std::fs::File::open(&t).unwrap())
        .output()
        .unwrap();
    assert_ok(&o, "decode /dev/stdin");
    let m = npy::read_matrix(&out).unwrap();
    assert_eq!((m.rows, m.cols), (40, 45));
    // And what came through the pipe is what the file decodes to.
    let f = tqv::read(&t).unwrap();
    assert_eq!(m.data, f.quantizer.decode(&f.encoded).unwrap());
    drop(a);
}

#[test]
fn an_output_that_is_the_input_is_refused_by_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (a, t) = fixture(dir.path());
    let (a0, t0) = (std::fs::read(&a).unwrap(), std::fs::read(&t).unwrap());
    std::fs::create_dir(p(dir.path(), "sub")).unwrap();
    // The same file by another spelling, and through a hard link.
    let respelt = dir.path().join("sub").join("..").join("a.npy");
    let hard = p(dir.path(), "hard.tqv");
    std::fs::hard_link(&t, &hard).unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["encode", "-i", s(&a), "-o", s(&a), "--bits", "2"],
        vec!["encode", "-i", s(&a), "-o", s(&respelt), "--bits", "2"],
        vec!["decode", s(&t), "-o", s(&t)],
        vec!["decode", s(&hard), "-o", s(&t)],
    ];
    for args in runs {
        let mut args = args.clone();
        args.extend(["--device", "cpu"]);
        let o = tq3d(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(e.contains("is the input"), "{args:?}: {e}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), a0, "the input was changed");
    assert_eq!(std::fs::read(&t).unwrap(), t0, "the input was changed");
}

#[cfg(unix)]
#[test]
fn a_symlink_is_followed_and_a_non_regular_file_is_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let (a, t) = fixture(dir.path());
    let target = p(dir.path(), "target.tqv");
    std::fs::write(&target, b"old").unwrap();
    let link = p(dir.path(), "link.tqv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = tq3d([
        "encode",
        "-i",
        s(&a),
        "-o",
        s(&link),
        "--bits",
        "3",
        "--device",
        "cpu",
    ]);
    assert_ok(&o, "encode through a symlink");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(&t).unwrap());

    let dangling = p(dir.path(), "dangling.tqv");
    std::os::unix::fs::symlink(p(dir.path(), "missing/x.tqv"), &dangling).unwrap();
    let fifo = p(dir.path(), "fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let folder = p(dir.path(), "folder");
    std::fs::create_dir(&folder).unwrap();
    for (out, why) in [
        (&dangling, "does not exist"),
        (&fifo, "not a regular file"),
        (&folder, "folder"),
    ] {
        // Within a limit: opening a FIFO to write or compare it would block.
        let o = tq3d_within(
            &[
                "encode",
                "-i",
                s(&a),
                "-o",
                s(out),
                "--bits",
                "3",
                "--device",
                "cpu",
            ],
            Duration::from_secs(60),
        );
        let e = stderr(&o);
        assert!(!o.status.success(), "{out:?} was written");
        assert!(e.contains(why) && e.contains(s(out)), "{out:?}: {e}");
    }
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(std::fs::symlink_metadata(&folder).unwrap().is_dir());
    assert!(
        std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn dash_is_standard_output_with_the_report_on_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, t) = fixture(dir.path());
    let o = tq3d([
        "encode",
        "-i",
        s(&a),
        "-o",
        "-",
        "--bits",
        "3",
        "--device",
        "cpu",
    ]);
    assert_ok(&o, "encode -o -");
    assert_eq!(
        o.stdout,
        std::fs::read(&t).unwrap(),
        "stdout is not the file"
    );
    assert!(stderr(&o).contains("encoded 40 vectors"), "{}", stderr(&o));

    let o = tq3d(["decode", s(&t), "-o", "-", "--device", "cpu"]);
    assert_ok(&o, "decode -o -");
    let m = npy::from_bytes(&o.stdout, Path::new("stdout")).unwrap();
    let f = tqv::read(&t).unwrap();
    assert_eq!((m.rows, m.cols), (40, 45));
    assert_eq!(m.data, f.quantizer.decode(&f.encoded).unwrap());
    assert!(stderr(&o).contains("decoded 40 vectors"));
}

#[test]
fn npy_messages_are_one_line_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let header = |dict: &str| {
        let mut h = dict.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b
    };
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    let mut nan = header(good);
    nan.extend(f32s(&[1.0, 2.0, 3.0, 4.0, f32::NAN, 6.0]));
    let mut huge = header(good);
    huge.extend(f32s(&[1.0, 2.0, 3.0, 4.0, 1e30, 6.0]));
    // (file, bytes, extra flags, what the message must contain)
    type Case<'a> = (&'a str, Vec<u8>, &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 4] = [
        ("nan.npy", nan, &[], &["row 1, column 1", "NaN"]),
        (
            "huge.npy",
            huge,
            &["--scale-format", "f16"],
            &["row 1", "--scale-format f32"],
        ),
        (
            "dict.npy",
            header("{'descr': '<f4', 'shape': (2, 3) oops"),
            &[],
            &["npy header"],
        ),
        (
            "short.npy",
            b"\x93NUMPY\x01\x00\xff".to_vec(),
            &[],
            &["truncated"],
        ),
    ];
    for (name, bytes, extra, wants) in cases {
        let path = p(dir.path(), name);
        std::fs::write(&path, bytes).unwrap();
        let out = p(dir.path(), "o.tqv");
        let mut args = vec!["encode", "-i", s(&path), "-o", s(&out), "--bits", "2"];
        args.extend(extra);
        args.extend(["--device", "cpu"]);
        let o = tq3d(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{name}");
        assert_eq!(e.trim().lines().count(), 1, "{name}: {e}");
        assert!(e.contains(name), "{name}: {e}");
        for w in wants {
            assert!(e.contains(w), "{name}: wanted {w:?} in {e}");
        }
        assert!(!out.exists());
    }
}

/// A one-Gaussian ASCII PLY of degree 1.
fn one_ply(path: &Path) {
    let mut h = String::from("ply\nformat ascii 1.0\nelement vertex 1\n");
    for p in ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] {
        h += &format!("property float {p}\n");
    }
    for k in 0..9 {
        h += &format!("property float f_rest_{k}\n");
    }
    for p in [
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ] {
        h += &format!("property float {p}\n");
    }
    h += "end_header\n0 0 0 .5 .5 .5 .1 .1 .1 .1 .1 .1 .1 .1 .1 2 -3 -3 -3 1 0 0 0\n";
    std::fs::write(path, h).unwrap();
}

#[test]
fn scenes_obey_the_same_output_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (ply, tq3s) = (p(dir.path(), "one.ply"), p(dir.path(), "one.tq3s"));
    one_ply(&ply);
    let before = std::fs::read(&ply).unwrap();
    for args in [
        vec!["compress", s(&ply), "-o", s(&ply)],
        vec![
            "compress",
            s(&ply),
            "-o",
            s(&dir.path().join(".").join("one.ply")),
        ],
    ] {
        let o = tq3d(&args);
        assert!(
            !o.status.success() && stderr(&o).contains("is the input"),
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read(&ply).unwrap(), before);

    let o = tq3d(["compress", s(&ply), "-o", s(&tq3s), "--device", "cpu"]);
    assert_ok(&o, "compress");
    let o = tq3d(["compress", s(&ply), "-o", "-", "--device", "cpu"]);
    assert_ok(&o, "compress -o -");
    assert_eq!(o.stdout, std::fs::read(&tq3s).unwrap());
    assert!(stderr(&o).contains("one.ply"), "the report is on stderr");

    let o = tq3d(["decompress", s(&tq3s), "-o", s(&tq3s)]);
    assert!(!o.status.success() && stderr(&o).contains("is the input"));
    let o = tq3d(["decompress", s(&tq3s), "-o", "-"]);
    assert_ok(&o, "decompress -o -");
    let scene = turboquant3d::splat::ply::read_ply_from(
        std::io::Cursor::new(&o.stdout),
        Path::new("stdout"),
        Some(o.stdout.len() as u64),
    )
    .unwrap();
    assert_eq!(scene, turboquant3d::splat::read(&tq3s).unwrap());
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_report_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (ply, t) = (p(dir.path(), "one.ply"), p(dir.path(), "one.tq3s"));
    one_ply(&ply);
    assert_ok(&tq3d(["compress", s(&ply), "-o", s(&t)]), "compress");
    // `tq3d info x.tq3s | true`: the reader is gone before the report.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tq3d"))
        .args(["info", s(&t)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_headerless_splat_is_read_only_from_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let link = p(dir.path(), "zero.splat");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let out = p(dir.path(), "z.tq3s");
    let o = tq3d_within(
        &["compress", s(&link), "-o", s(&out)],
        Duration::from_secs(60),
    );
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("zero.splat") && e.contains("regular file"),
        "{e}"
    );
}

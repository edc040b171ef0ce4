//! `tq3d grid`: compress, info, decompress and eval through the binary;
//! bad input gives one line and writes nothing.

mod common;

use std::path::Path;

use common::cli::{assert_ok, stderr, stdout, tq3d};
use turboquant3d::grid::io::{Layout, read_grid, write_grid};
use turboquant3d::grid::table::{Dtype, Grid, nmse};

/// A small trained-like table [4, 4096, 2], heavy-tailed (one value in 16
/// eight times larger); level 0 uses only its first 100 entries.
fn table(dtype: Dtype) -> Grid {
    let mut data = Vec::with_capacity(4 * 4096 * 2);
    let mut s = 12345u64;
    for l in 0..4 {
        for e in 0..4096 {
            for _ in 0..2 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let tail = if (s >> 7).is_multiple_of(16) {
                    8.0
                } else {
                    1.0
                };
                let v = if l == 0 && e >= 100 {
                    u * 2e-4
                } else {
                    u * tail
                };
                data.push(if dtype == Dtype::F16 {
                    half::f16::from_f64(v).to_f32()
                } else {
                    v as f32
                });
            }
        }
    }
    Grid::from_array(&[4, 4096, 2], data, dtype, None, None).unwrap()
}

#[test]
fn compress_info_decompress_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, ext) in [(Dtype::F16, "npy"), (Dtype::F32, "safetensors")] {
        let grid = table(dtype);
        let input = dir.path().join(format!("in.{ext}"));
        write_grid(&input, &grid, Some("encoding.params")).unwrap();
        let packed = dir.path().join(format!("g_{ext}.tq3g"));
        let o = tq3d([
            "grid".as_ref(),
            "compress".as_ref(),
            input.as_os_str(),
            "-o".as_ref(),
            packed.as_os_str(),
            "--bits".as_ref(),
            "4".as_ref(),
            "--device".as_ref(),
            "cpu".as_ref(),
        ]);
        assert_ok(&o, "compress");
        assert!(stdout(&o).contains("bits per feature"), "{}", stdout(&o));
        let size = std::fs::metadata(&packed).unwrap().len();
        assert!(size as f64 <= 4.0 * grid.values() as f64 / 8.0, "{size}");

        let o = tq3d([
            "grid".as_ref(),
            "info".as_ref(),
            packed.as_os_str(),
            "--json".as_ref(),
        ]);
        assert_ok(&o, "info");
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["bytes"].as_u64(), Some(size));
        assert_eq!(v["dtype"], dtype.name());
        assert_eq!(v["levels"].as_array().unwrap().len(), 4);
        // Level 0's untouched groups are negligible.
        assert!(v["levels"][0]["coded"].as_u64().unwrap() <= 100 / 8 + 1);
        // The top-level `info` tells a .tq3g by its magic and says the same.
        let o2 = tq3d(["info".as_ref(), packed.as_os_str(), "--json".as_ref()]);
        assert_ok(&o2, "tq3d info on a .tq3g");
        assert_eq!(stdout(&o2), stdout(&o));

        let out = dir.path().join(format!("out.{ext}"));
        let o = tq3d([
            "grid".as_ref(),
            "decompress".as_ref(),
            packed.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        assert_ok(&o, "decompress");
        let back = read_grid(&out, &Layout::default()).unwrap();
        assert_eq!(back.shape, grid.shape);
        assert_eq!(back.dtype, dtype);
        assert!(nmse(&grid.data, &back.data) < 0.01);
    }
}

#[test]
fn eval_reports_the_codec_and_the_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.npy");
    write_grid(&input, &table(Dtype::F16), None).unwrap();
    let o = tq3d([
        "grid".as_ref(),
        "eval".as_ref(),
        input.as_os_str(),
        "--bits".as_ref(),
        "3,4".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--json".as_ref(),
    ]);
    assert_ok(&o, "eval");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["setting"].as_str().unwrap())
        .collect();
    for want in [
        "TurboQuant",
        "uniform per-level int3",
        "uniform per-level int4",
        "k-means",
        "f8",
        "int8",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} missing from {names:?}"
        );
    }
    // At 4 bits the codec beats uniform integers at 4 bits.
    let nmse_of = |name: &str| {
        rows.iter()
            .find(|r| r["setting"].as_str().unwrap().contains(name))
            .unwrap()["nmse"]
            .as_f64()
            .unwrap()
    };
    assert!(nmse_of("at 4 bits") < nmse_of("int4"));
    // Theory is reported next to the measurement.
    assert!(rows[0]["theory_nmse"].as_f64().unwrap() > 0.0);
}

/// Runs `grid compress` on `input` and expects one line of error and no output.
fn refused(input: &Path, extra: &[&str], want: &str) {
    let bits = if extra.contains(&"--bits") {
        &[][..]
    } else {
        &["--bits", "3"][..]
    };
    let out = input.with_extension("tq3g");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "grid".as_ref(),
        "compress".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(bits.iter().map(std::ffi::OsStr::new));
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let o = tq3d(&args);
    assert!(!o.status.success(), "{want}: succeeded");
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(want), "wanted {want:?} in {err}");
    assert!(!out.exists(), "{want}: wrote {}", out.display());
}

fn npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_input_gives_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    npy(&p("rank4.npy"), "<f4", "(1, 2, 2, 2)", &f32s(&[0.5; 8]));
    refused(&p("rank4.npy"), &[], "rank 4");
    npy(&p("flat.npy"), "<f4", "(7,)", &f32s(&[0.5; 7]));
    refused(&p("flat.npy"), &["--features", "2"], "does not split");
    npy(&p("nf.npy"), "<f4", "(10, 2)", &f32s(&[0.5; 20]));
    refused(&p("nf.npy"), &["--levels", "4,5"], "add up to 9 entries");
    npy(&p("f8.npy"), "<f8", "(2, 2)", &[0u8; 32]);
    refused(&p("f8.npy"), &[], "found <f8");
    let mut v = vec![0.5f32; 20];
    v[5] = f32::NAN;
    npy(&p("nan.npy"), "<f4", "(10, 2)", &f32s(&v));
    refused(&p("nan.npy"), &[], "not finite");
    npy(&p("short.npy"), "<f4", "(10, 2)", &f32s(&[0.5; 19]));
    refused(&p("short.npy"), &[], "truncated");
    npy(&p("ok.npy"), "<f4", "(10, 2)", &f32s(&[0.5; 20]));
    refused(&p("ok.npy"), &["--bits", "nan"], "not finite");

    // A corrupt or truncated .tq3g: decompress writes nothing.
    let grid = table(Dtype::F16);
    let input = p("t.npy");
    write_grid(&input, &grid, None).unwrap();
    let packed = p("t.tq3g");
    let o = tq3d([
        "grid".as_ref(),
        "compress".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        packed.as_os_str(),
        "--bits".as_ref(),
        "3".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ]);
    assert_ok(&o, "compress");
    let bytes = std::fs::read(&packed).unwrap();
    for (name, b, want) in [
        ("trunc.tq3g", bytes[..bytes.len() - 3].to_vec(), "truncated"),
        (
            "crc.tq3g",
            {
                let mut b = bytes.clone();
                let n = b.len() - 10;
                b[n] ^= 1;
                b
            },
            "checksum",
        ),
    ] {
        std::fs::write(p(name), &b).unwrap();
        let out = p(&format!("{name}.npy"));
        let o = tq3d([
            "grid".as_ref(),
            "decompress".as_ref(),
            p(name).as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!out.exists());
    }
}

//! The `.npy` reader and writer: round trips against an independent
//! reader, f16 and big-endian data, and files of the wrong kind, each
//! rejected with the file's name and without a huge allocation.
mod common;
#[path = "common/tracking.rs"]
mod tracking;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::data::gaussian;
use common::tqv::*;
use half::f16;
use npyz::WriterBuilder;
use tracking::largest_allocation;
use turboquant3d::Error;
use turboquant3d::format::npy;

// ---------------------------------------------------------------------------
// .npy.

/// Writes an arbitrary .npy (version 1.0) from a header dict and raw data.
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.as_bytes().to_vec();
    // Pad with spaces so that 10 + header length + newline is a multiple of 64.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

fn expect_npy_err(path: &Path, what: &str) -> String {
    let r = catch_unwind(AssertUnwindSafe(|| npy::read_matrix(path)))
        .unwrap_or_else(|_| panic!("npy::read_matrix panicked on {what}"));
    match r {
        Ok(m) => panic!("{what}: accepted as [{}, {}]", m.rows, m.cols),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "{what}: message does not name the file: {msg}"
            );
            msg
        }
    }
}

#[test]
fn npy_round_trip_and_an_independent_reader_agree() {
    let dir = tempfile::tempdir().unwrap();
    for (rows, cols) in [(7, 45), (1, 2), (33, 64)] {
        let path = dir.path().join(format!("m{rows}x{cols}.npy"));
        let data = gaussian(rows, cols, (rows * cols) as u64);
        npy::write_matrix(&path, rows, cols, &data).unwrap();
        let m = npy::read_matrix(&path).unwrap();
        assert_eq!((m.rows, m.cols), (rows, cols));
        assert_eq!(
            m.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // npyz itself sees a 2-D little-endian float32 C-order array.
        let bytes = std::fs::read(&path).unwrap();
        let f = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(f.shape(), &[rows as u64, cols as u64]);
        assert_eq!(f.order(), npyz::Order::C);
        assert_eq!(f.dtype().descr(), "'<f4'");
        assert_eq!(f.into_vec::<f32>().unwrap(), data);
    }
    assert_eq!(dir_entries(dir.path()).len(), 3);
    // A length that is not rows × cols writes nothing.
    let bad = dir.path().join("bad.npy");
    assert!(matches!(
        npy::write_matrix(&bad, 3, 4, &[0.0; 11]),
        Err(Error::Shape(_))
    ));
    assert!(!bad.exists());
}

#[test]
fn npy_f16_reads_as_widened_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (5, 9);
    let src = gaussian(r, c, 77);
    let mut halves: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
    // Exact extremes of f16 as well.
    halves[0] = f16::MAX;
    halves[1] = f16::MIN_POSITIVE_SUBNORMAL;
    halves[2] = f16::from_f32(-0.0);
    let path = dir.path().join("half.npy");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut w = npyz::WriteOptions::<f16>::new()
            .default_dtype()
            .shape(&[r as u64, c as u64])
            .writer(file)
            .begin_nd()
            .unwrap();
        w.extend(halves.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    let m = npy::read_matrix(&path).unwrap();
    assert_eq!((m.rows, m.cols), (r, c));
    let want: Vec<u32> = halves.iter().map(|h| h.to_f32().to_bits()).collect();
    assert_eq!(m.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
    assert_eq!(m.data[0], 65504.0);
    assert_eq!(m.data[1], 2f32.powi(-24));
}

#[test]
fn npy_big_endian_f32_and_f16_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let vals = [1.5f32, -2.25, 0.0, 1e-3, 3e4, -7.0];
    let be32: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let p32 = dir.path().join("be32.npy");
    raw_npy(
        &p32,
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
        &be32,
    );
    let m = npy::read_matrix(&p32).unwrap();
    assert_eq!((m.rows, m.cols), (2, 3));
    assert_eq!(m.data, vals);

    let be16: Vec<u8> = vals
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_be_bytes())
        .collect();
    let p16 = dir.path().join("be16.npy");
    raw_npy(
        &p16,
        "{'descr': '>f2', 'fortran_order': False, 'shape': (3, 2), }",
        &be16,
    );
    let m = npy::read_matrix(&p16).unwrap();
    assert_eq!((m.rows, m.cols), (3, 2));
    let want: Vec<f32> = vals.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(m.data, want);
}

#[test]
fn npy_wrong_shapes_types_and_sizes_are_rejected_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let f32s = |n: usize| -> Vec<u8> { (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect() };

    raw_npy(
        &p("1d.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
        &f32s(6),
    );
    let msg = expect_npy_err(&p("1d.npy"), "1-D");
    assert!(msg.contains("shape"), "{msg}");

    raw_npy(
        &p("3d.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }",
        &f32s(24),
    );
    let msg = expect_npy_err(&p("3d.npy"), "3-D");
    assert!(msg.contains("shape"), "{msg}");

    raw_npy(
        &p("0d.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
        &f32s(1),
    );
    expect_npy_err(&p("0d.npy"), "0-D");

    let ints: Vec<u8> = (0..12i32).flat_map(|i| i.to_le_bytes()).collect();
    raw_npy(
        &p("i4.npy"),
        "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }",
        &ints,
    );
    let msg = expect_npy_err(&p("i4.npy"), "int32");
    assert!(msg.contains("dtype"), "{msg}");

    let f64s: Vec<u8> = (0..12).flat_map(|i| (i as f64).to_le_bytes()).collect();
    raw_npy(
        &p("f8.npy"),
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }",
        &f64s,
    );
    expect_npy_err(&p("f8.npy"), "float64");

    raw_npy(
        &p("fortran.npy"),
        "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }",
        &f32s(12),
    );
    expect_npy_err(&p("fortran.npy"), "Fortran order");

    raw_npy(
        &p("struct.npy"),
        "{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (3, 2), }",
        &f32s(12),
    );
    expect_npy_err(&p("struct.npy"), "structured");

    // Data cut short: a little (less than the header's size) and a lot.
    let good = p("good.npy");
    npy::write_matrix(&good, 10, 8, &gaussian(10, 8, 3)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for cut in [1, 4, 7, 100, 320] {
        let t = p(&format!("cut{cut}.npy"));
        std::fs::write(&t, &bytes[..bytes.len() - cut]).unwrap();
        expect_npy_err(&t, &format!("data cut by {cut} bytes"));
    }
    // Cut inside the header.
    for keep in [0, 5, 9, 40] {
        let t = p(&format!("head{keep}.npy"));
        std::fs::write(&t, &bytes[..keep]).unwrap();
        expect_npy_err(&t, &format!("header cut to {keep} bytes"));
    }
    // Not a .npy at all.
    std::fs::write(
        p("text.npy"),
        b"hello, this is not numpy data at all, not even close....",
    )
    .unwrap();
    expect_npy_err(&p("text.npy"), "text");

    // A missing file is an I/O error naming it.
    let missing = p("missing.npy");
    match npy::read_matrix(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing: {other:?}"),
    }
}

#[test]
fn npy_absurd_shapes_are_rejected_without_a_huge_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for (i, shape) in [
        "(1099511627776, 45)",       // 2^40 rows: fits in u64, not in the file
        "(4, 2305843009213693952)",  // 2^63 values: fits u64, their bytes do not
        "(4, 4611686018427387904)",  // 2^64 values: overflows the element count
        "(4294967296, 4294967296)",  // 2^64 values: overflows the element count
        "(18446744073709551615, 2)", // u64::MAX rows
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("absurd{i}.npy"));
        raw_npy(
            &path,
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
            &data,
        );
        let (msg, big) = largest_allocation(|| expect_npy_err(&path, &format!("shape {shape}")));
        assert!(
            big < 1 << 20,
            "shape {shape}: allocated {big} bytes at once ({msg})"
        );
    }
}

#[test]
fn a_nested_header_is_refused_before_the_parser_sees_it() {
    // Found by the npy fuzz target: 233 bytes whose header nests 19 `[`
    // kept npyz's parser busy for over 75 s (and 4 MB).
    let bytes = include_bytes!("data/fuzz/npy-nested-brackets-slow.npy").to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = turboquant3d::format::npy::from_bytes(&bytes, std::path::Path::new("nested.npy"));
        tx.send(r.map(|_| ()).map_err(|e| e.to_string())).ok();
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("from_bytes was still parsing after 30 s");
    let e = r.expect_err("a nested header was accepted");
    assert!(e.contains("nested.npy") && e.contains("nested"), "{e}");
}

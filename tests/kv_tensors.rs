//! The KV wing's tensor I/O: files are written with the `safetensors`
//! crate (or by hand for `.npy`), independently of the writer under test;
//! layouts are checked against index arithmetic, round trips byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype as St, SafeTensors, tensor::TensorView};
use turboquant3d::kv::tensors::{
    Dtype, FileKind, Layout, NamedTensor, Role, RoleGlobs, TensorFile, assign, from_canonical,
    role_from_name, to_canonical,
};

type Raw = (&'static str, St, Vec<usize>, Vec<u8>);

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect()
}

/// Deterministic pseudo-random values in (-4, 4).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        })
        .collect()
}

fn st_bytes(tensors: &[Raw], meta: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, meta).unwrap()
}

fn st_file(dir: &Path, file: &str, tensors: &[Raw]) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, st_bytes(tensors, None)).unwrap();
    p
}

fn f32_tensor(name: &str, shape: &[usize], v: &[f32]) -> NamedTensor {
    NamedTensor::new(name, Dtype::F32, shape.to_vec(), f32_bytes(v)).unwrap()
}

fn err<T: std::fmt::Debug>(r: turboquant3d::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn every_listed_suffix_has_its_role() {
    for s in ["k", "key", "keys", "k_cache", "key_cache"] {
        assert_eq!(
            role_from_name(&format!("model.layers.3.{s}")),
            Role::Key,
            "{s}"
        );
        assert_eq!(role_from_name(s), Role::Key, "{s}");
    }
    for s in ["v", "value", "values", "v_cache", "value_cache"] {
        assert_eq!(role_from_name(&format!("l.0.{s}")), Role::Value, "{s}");
    }
    for s in ["q", "query", "queries"] {
        assert_eq!(role_from_name(&format!("l.0.{s}")), Role::Query, "{s}");
    }
    // Only the last part counts, and only exactly.
    for s in [
        "k.weight",
        "k_proj",
        "kk",
        "l.0.keys_",
        "values.bias",
        "K",
        "",
    ] {
        assert_eq!(role_from_name(s), Role::Other, "{s}");
    }
}

#[test]
fn roles_and_groups_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let shape = vec![3usize, 2, 4];
    let v = f32_bytes(&values(24, 1));
    let p = st_file(
        dir.path(),
        "c.safetensors",
        &[
            ("layers.0.key_cache", St::F32, shape.clone(), v.clone()),
            ("layers.0.value_cache", St::F32, shape.clone(), v.clone()),
            (
                "layers.0.q",
                St::F32,
                vec![5, 2, 4],
                f32_bytes(&values(40, 2)),
            ),
            (
                "layers.1.keys",
                St::F16,
                shape.clone(),
                f16_bytes(&values(24, 3)),
            ),
            (
                "layers.2.v",
                St::BF16,
                shape.clone(),
                bf16_bytes(&values(24, 4)),
            ),
            ("step", St::I64, vec![1], 7i64.to_le_bytes().to_vec()),
        ],
    );
    let f = TensorFile::read(&p).unwrap();
    assert!(f.tensors.iter().all(|t| t.in_place()), "mapped, not copied");
    let a = assign(&f.tensors, &RoleGlobs::default()).unwrap();
    let role = |n: &str| a.roles[f.tensors.iter().position(|t| t.name == n).unwrap()];
    assert_eq!(role("layers.0.key_cache"), Role::Key);
    assert_eq!(role("layers.0.value_cache"), Role::Value);
    assert_eq!(role("layers.0.q"), Role::Query);
    assert_eq!(role("step"), Role::Other);
    let name = |i: Option<usize>| i.map(|i| f.tensors[i].name.as_str());
    let mut groups: Vec<_> = a
        .groups
        .iter()
        .map(|g| (g.prefix.as_str(), name(g.key), name(g.value), name(g.query)))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            (
                "layers.0",
                Some("layers.0.key_cache"),
                Some("layers.0.value_cache"),
                Some("layers.0.q")
            ),
            ("layers.1", Some("layers.1.keys"), None, None),
            ("layers.2", None, Some("layers.2.v"), None),
        ]
    );
}

#[test]
fn globs_override_names_and_two_roles_are_ambiguous() {
    let t = |n: &str| f32_tensor(n, &[2, 4], &values(8, 5));
    let ts = vec![t("blk.0.attn_k"), t("blk.0.attn_v"), t("blk.0.k")];
    let g = RoleGlobs::new(&["*.attn_k"], &["*.attn_v", "blk.0.k"], &[]).unwrap();
    // The glob wins over the name: blk.0.k is a value here.
    assert_eq!(g.role("blk.0.k").unwrap(), Role::Value);
    assert_eq!(g.role("blk.0.attn_k").unwrap(), Role::Key);
    assert_eq!(
        g.role("other.v").unwrap(),
        Role::Value,
        "name rule still applies"
    );
    let e = err(assign(&ts, &g));
    assert!(
        e.contains("blk.0.attn_v") && e.contains("blk.0.k") && e.contains("ambiguous"),
        "{e}"
    );
    let g = RoleGlobs::new(&["*.attn_k"], &["*.attn_v"], &[]).unwrap();
    let a = assign(&ts[..2], &g).unwrap();
    assert_eq!(a.roles, vec![Role::Key, Role::Value]);
    assert_eq!((a.groups[0].key, a.groups[0].value), (Some(0), Some(1)));
    let g = RoleGlobs::new(&["blk.*"], &["*_v"], &[]).unwrap();
    let e = err(g.role("blk.0.attn_v"));
    assert!(e.contains("blk.0.attn_v") && e.contains("ambiguous"), "{e}");
    assert!(err(RoleGlobs::new(&["[a"], &[], &[])).contains("[a"));
}

#[test]
fn role_errors_name_the_tensors() {
    let t = |n: &str, s: &[usize]| f32_tensor(n, s, &values(s.iter().product(), 6));
    let none = RoleGlobs::default();
    let e = err(assign(&[t("a.weight", &[2, 2])], &none));
    assert!(
        e.contains("no key or value tensors") && e.contains("--keys"),
        "{e}"
    );
    let e = err(assign(&[t("a.k", &[2, 4]), t("a.key", &[2, 4])], &none));
    assert!(e.contains("\"a.k\"") && e.contains("\"a.key\""), "{e}");
    let e = err(assign(&[t("a.k", &[2, 4]), t("a.v", &[3, 4])], &none));
    assert!(
        e.contains("\"a.k\"") && e.contains("\"a.v\"") && e.contains("[3, 4]"),
        "{e}"
    );
    let e = err(assign(&[t("a.k", &[2, 4]), t("b.q", &[2, 4])], &none));
    assert!(e.contains("\"b.q\"") && e.contains("no key"), "{e}");
    let i = NamedTensor::new("x.v", Dtype::Other("I64".into()), vec![2], vec![0; 16]).unwrap();
    let e = err(assign(std::slice::from_ref(&i), &none));
    assert!(e.contains("\"x.v\"") && e.contains("I64"), "{e}");
    assert!(err(i.to_f32()).contains("\"x.v\""));
    // Carried, a non-float tensor is fine.
    let c = NamedTensor::new("x.idx", Dtype::Other("I64".into()), vec![2], vec![0; 16]).unwrap();
    assert!(assign(&[c, t("x.k", &[2, 4])], &none).is_ok());
}

/// The value at a logical (layer, token, head, dim): unique, exact in f32.
fn tag(l: usize, t: usize, h: usize, d: usize) -> f32 {
    (l * 1_000_000 + t * 10_000 + h * 100 + d) as f32
}

#[test]
fn layouts_match_index_arithmetic_and_round_trip() {
    let (nl, nt, nh, nd) = (2usize, 5usize, 3usize, 4usize);
    // Each case: layout, shape, and the logical (l, t, h, d) of a multi-index.
    type At = fn(&[usize], usize) -> (usize, usize, usize, usize);
    let cases: [(&str, Vec<usize>, At); 5] = [
        ("tc", vec![nt, nh * nd], |i, d| {
            (0, i[0], i[1] / d, i[1] % d)
        }),
        ("thd", vec![nt, nh, nd], |i, _| (0, i[0], i[1], i[2])),
        ("lthd", vec![nl, nt, nh, nd], |i, _| {
            (i[0], i[1], i[2], i[3])
        }),
        ("lhtd", vec![nl, nh, nt, nd], |i, _| {
            (i[0], i[2], i[1], i[3])
        }),
        // Two leading axes (layers × batch) flatten in order.
        ("lltc", vec![nl, 2, nt, nh * nd], |i, d| {
            (i[0] * 2 + i[1], i[2], i[3] / d, i[3] % d)
        }),
    ];
    for (lay, shape, at) in cases {
        let layout = Layout::parse(lay).unwrap();
        assert_eq!(layout.to_string(), lay);
        let n: usize = shape.iter().product();
        let mut src = vec![0f32; n];
        let mut idx = vec![0usize; shape.len()];
        for v in src.iter_mut() {
            let (l, t, h, d) = at(&idx, nd);
            *v = tag(l, t, h, d);
            for k in (0..shape.len()).rev() {
                idx[k] += 1;
                if idx[k] < shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        let t = f32_tensor("x.k", &shape, &src);
        let c = to_canonical(&t, Some(&layout), Some(nh)).unwrap();
        let layers = if lay.starts_with("ll") {
            nl * 2
        } else if lay.starts_with('l') {
            nl
        } else {
            1
        };
        assert_eq!(
            (c.layers, c.tokens, c.heads, c.head_dim),
            (layers, nt, nh, nd),
            "{lay}"
        );
        for l in 0..layers {
            for tk in 0..nt {
                for h in 0..nh {
                    for d in 0..nd {
                        let i = ((l * nt + tk) * nh + h) * nd + d;
                        assert_eq!(c.data[i], tag(l, tk, h, d), "{lay} at {l} {tk} {h} {d}");
                    }
                }
            }
        }
        let back = from_canonical(&c, "x.k", Dtype::F32, &shape, Some(&layout)).unwrap();
        assert_eq!(back, t, "{lay}: f32 round trip is bit-exact");
        // f16 and bf16 from values they represent.
        for (dtype, bytes) in [
            (Dtype::F16, f16_bytes(&values(n, 9))),
            (Dtype::BF16, bf16_bytes(&values(n, 10))),
        ] {
            let t = NamedTensor::new("x.v", dtype.clone(), shape.clone(), bytes).unwrap();
            let c = to_canonical(&t, Some(&layout), Some(nh)).unwrap();
            let back = from_canonical(&c, "x.v", dtype, &shape, Some(&layout)).unwrap();
            assert_eq!(back, t, "{lay}");
        }
    }
    // Defaults by rank, and no heads given for "tc": one head of the whole width.
    let t = f32_tensor("x.k", &[nt, 12], &values(nt * 12, 11));
    let c = to_canonical(&t, None, None).unwrap();
    assert_eq!((c.heads, c.head_dim, c.width()), (1, 12, 12));
    assert_eq!(c.data, t.to_f32().unwrap());
    let t = f32_tensor("x.k", &[nl, nt, nh, nd], &values(nl * nt * nh * nd, 12));
    let c = to_canonical(&t, None, None).unwrap();
    assert_eq!((c.layers, c.tokens, c.heads, c.head_dim), (nl, nt, nh, nd));
}

#[test]
fn layout_and_shape_errors_name_the_tensor() {
    for bad in ["", "tt", "thdc", "hd", "tx", "thh", "tcd"] {
        assert!(Layout::parse(bad).is_err(), "{bad:?}");
    }
    let t = f32_tensor("m.k", &[4, 10], &values(40, 13));
    let e = err(to_canonical(&t, None, Some(3)));
    assert!(
        e.contains("width 10 of tensor \"m.k\" is not divisible by 3 heads"),
        "{e}"
    );
    let e = err(to_canonical(&t, Some(&Layout::parse("thd").unwrap()), None));
    assert!(e.contains("\"m.k\"") && e.contains("rank"), "{e}");
    let r5 = f32_tensor("m.v", &[1, 1, 1, 1, 2], &[0.0, 1.0]);
    let e = err(to_canonical(&r5, None, None));
    assert!(e.contains("\"m.v\"") && e.contains("rank 5"), "{e}");
    let t3 = f32_tensor("m.k", &[2, 3, 4], &values(24, 14));
    let e = err(to_canonical(&t3, None, Some(2)));
    assert!(e.contains("\"m.k\"") && e.contains("3 heads"), "{e}");
    let empty = f32_tensor("m.k", &[0, 3, 4], &[]);
    let e = err(to_canonical(&empty, None, None));
    assert!(e.contains("\"m.k\"") && e.contains("axis 0"), "{e}");
    let i = NamedTensor::new("m.k", Dtype::Other("I32".into()), vec![2, 2], vec![0; 16]).unwrap();
    assert!(err(to_canonical(&i, None, None)).contains("I32"));
}

#[test]
fn non_finite_values_are_reported_at_their_index() {
    let shape = [2usize, 3, 4];
    let at = (3 + 2) * 4 + 3; // [1, 2, 3] in [2, 3, 4]
    for (dtype, v) in [
        (Dtype::F32, f32::NAN),
        (Dtype::F16, f32::INFINITY),
        (Dtype::BF16, f32::NEG_INFINITY),
        (Dtype::BF16, f32::NAN),
    ] {
        let mut x = values(24, 15);
        x[at] = v;
        x[at + 1..].iter_mut().for_each(|y| *y = f32::NAN); // later ones are not first
        let bytes = match dtype {
            Dtype::F32 => f32_bytes(&x),
            Dtype::F16 => f16_bytes(&x),
            _ => bf16_bytes(&x),
        };
        let t = NamedTensor::new("h.v", dtype.clone(), shape.to_vec(), bytes).unwrap();
        let e = err(to_canonical(&t, None, None));
        assert!(
            e.contains("\"h.v\"") && e.contains("[1, 2, 3]"),
            "{dtype}: {e}"
        );
        assert!(err(t.check_finite()).contains("[1, 2, 3]"));
    }
    let e = err(NamedTensor::from_f32(
        "o.k",
        Dtype::F16,
        vec![2, 2],
        &[0.0, 1.0, f32::NAN, 2.0],
    ));
    assert!(e.contains("\"o.k\"") && e.contains("[1, 0]"), "{e}");
}

#[test]
fn from_f32_rounds_to_nearest_even_and_saturates() {
    let one = 1.0f32;
    let ulp16 = (2f32).powi(-10);
    // Halfway cases go to the even neighbour; just past halfway goes up.
    let v = [
        one + ulp16 / 2.0,
        one + 1.5 * ulp16,
        one + ulp16 / 2.0 + ulp16 / 64.0,
        1e6,
        -1e6,
    ];
    let t = NamedTensor::from_f32("r", Dtype::F16, vec![5], &v).unwrap();
    let got = t.to_f32().unwrap();
    assert_eq!(
        got,
        vec![one, one + 2.0 * ulp16, one + ulp16, 65504.0, -65504.0]
    );
    let ulpb = (2f32).powi(-7);
    let t = NamedTensor::from_f32(
        "r",
        Dtype::BF16,
        vec![3],
        &[one + ulpb / 2.0, one + 1.5 * ulpb, f32::MAX],
    )
    .unwrap();
    let got = t.to_f32().unwrap();
    assert_eq!(got[..2], [one, one + 2.0 * ulpb]);
    assert!(got[2].is_finite() && got[2] > 3.3e38);
}

#[test]
fn every_dtype_survives_read_then_write_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let raws: Vec<Raw> = vec![
        ("a.k", St::F32, vec![3, 4], f32_bytes(&values(12, 20))),
        ("a.v", St::F16, vec![3, 4], f16_bytes(&values(12, 21))),
        ("b.k", St::BF16, vec![2, 2, 2], bf16_bytes(&values(8, 22))),
        (
            "pos",
            St::I64,
            vec![3],
            [5i64, -1, i64::MAX]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        ("mask", St::BOOL, vec![2], vec![1, 0]),
        ("empty", St::F32, vec![0, 4], vec![]),
    ];
    let meta: HashMap<String, String> = [
        ("format", "pt"),
        ("model", "tiny"),
        ("note", "x\"y"),
        ("z", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let p = dir.path().join("in.safetensors");
    std::fs::write(&p, st_bytes(&raws, Some(meta.clone()))).unwrap();
    let f = TensorFile::read(&p).unwrap();
    assert_eq!(
        f.metadata,
        Some(meta.clone().into_iter().collect::<BTreeMap<_, _>>())
    );
    assert_eq!(f.get("pos").unwrap().dtype, Dtype::Other("I64".into()));
    let out = dir.path().join("out.safetensors");
    f.write(&out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(m.metadata().as_ref(), Some(&meta));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), raws.len());
    for (name, dtype, shape, data) in &raws {
        let t = st.tensor(name).unwrap();
        assert_eq!(
            (t.dtype(), t.shape(), t.data()),
            (*dtype, shape.as_slice(), data.as_slice()),
            "{name}"
        );
    }
    // Deterministic: the metadata's order does not follow a HashMap's.
    let again = dir.path().join("again.safetensors");
    TensorFile::read(&out).unwrap().write(&again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    // In memory, the same tensors.
    let g = TensorFile::from_bytes(&bytes, Path::new("mem.safetensors")).unwrap();
    let mut a = f.tensors.clone();
    let mut b = g.tensors.clone();
    a.sort_by(|x, y| x.name.cmp(&y.name));
    b.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(a, b);
    assert!(!g.tensors[0].in_place());
}

#[test]
fn npy_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    // By hand: a big-endian f2 [2, 3, 4] array.
    let v = values(24, 30);
    let header = "{'descr': '>f2', 'fortran_order': False, 'shape': (2, 3, 4), }";
    let mut h = header.to_string();
    h.push_str(&" ".repeat((11 + header.len()).next_multiple_of(64) - 11 - header.len()));
    h.push('\n');
    let mut file = b"\x93NUMPY\x01\x00".to_vec();
    file.extend((h.len() as u16).to_le_bytes());
    file.extend(h.as_bytes());
    file.extend(v.iter().flat_map(|&x| f16::from_f32(x).to_be_bytes()));
    let p = dir.path().join("layer0.k.npy");
    std::fs::write(&p, &file).unwrap();
    let f = TensorFile::read(&p).unwrap();
    let [t] = f.tensors.as_slice() else { panic!() };
    assert_eq!(
        (t.name.as_str(), &t.dtype, t.shape.as_slice()),
        ("layer0.k", &Dtype::F16, &[2usize, 3, 4][..])
    );
    let want: Vec<f32> = v.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(t.to_f32().unwrap(), want);
    assert_eq!(
        assign(&f.tensors, &RoleGlobs::default()).unwrap().roles,
        vec![Role::Key]
    );
    // Out as little-endian, read back by npyz (not by our reader).
    let out = dir.path().join("out.npy");
    f.write(&out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(npy.shape(), &[2, 3, 4]);
    let got: Vec<f16> = npy.into_vec().unwrap();
    assert_eq!(got.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), want);
    // An i64 .npy is carried raw; rank 1.
    let ints = TensorFile::new(vec![
        NamedTensor::new(
            "n",
            Dtype::Other("I64".into()),
            vec![3],
            [1i64, -2, 3].iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .unwrap(),
    ]);
    let ip = dir.path().join("ints.npy");
    ints.write(&ip).unwrap();
    let b = std::fs::read(&ip).unwrap();
    let got: Vec<i64> = npyz::NpyFile::new(&b[..]).unwrap().into_vec().unwrap();
    assert_eq!(got, vec![1, -2, 3]);
    let back = TensorFile::read(&ip).unwrap();
    assert_eq!(back.tensors[0].bytes(), ints.tensors[0].bytes());
    assert!(back.tensors[0].in_place());
    // Several tensors, or bf16, do not fit an .npy: nothing is written.
    let two = TensorFile::new(vec![
        f32_tensor("a", &[1], &[1.0]),
        f32_tensor("b", &[1], &[2.0]),
    ]);
    let none = dir.path().join("none.npy");
    assert!(err(two.write(&none)).contains("one tensor"));
    let bf = TensorFile::new(vec![
        NamedTensor::from_f32("w", Dtype::BF16, vec![1], &[1.0]).unwrap(),
    ]);
    assert!(err(bf.write(&none)).contains("BF16"));
    assert!(!none.exists());
    assert_eq!(FileKind::from_path(&none).unwrap(), FileKind::Npy);
    assert!(FileKind::from_path(Path::new("x.bin")).is_err());
}

#[test]
fn truncated_corrupt_and_own_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = st_bytes(
        &[("a.k", St::F32, vec![4, 4], f32_bytes(&values(16, 40)))],
        None,
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", good[..good.len() - 3].to_vec()),
        ("header", good[..20].to_vec()),
        ("tiny", good[..5].to_vec()),
        ("trailing", [good.clone(), vec![0]].concat()),
        ("json", {
            let mut b = good.clone();
            b[8] = b'[';
            b
        }),
        ("huge", u64::MAX.to_le_bytes().to_vec()),
    ];
    for (what, bytes) in cases {
        let p = dir.path().join(format!("{what}.safetensors"));
        std::fs::write(&p, &bytes).unwrap();
        let e = err(TensorFile::read(&p));
        assert!(e.contains(&p.display().to_string()), "{what}: {e}");
        assert!(TensorFile::from_bytes(&bytes, &p).is_err(), "{what}");
    }
    let npy = dir.path().join("t.npy");
    std::fs::write(
        &npy,
        b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': (9, 9), }",
    )
    .unwrap();
    let e = err(TensorFile::read(&npy));
    assert!(e.contains("t.npy"), "{e}");
    // The file read is not replaced by its own output.
    let p = dir.path().join("in.safetensors");
    std::fs::write(&p, &good).unwrap();
    let f = TensorFile::read(&p).unwrap();
    assert!(err(f.write(&p)).contains("input"));
    assert_eq!(std::fs::read(&p).unwrap(), good);
}

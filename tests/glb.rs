//! glTF binary with KHR_gaussian_splatting: our writer's structure checked
//! against the draft by parsing the JSON here (not with our reader); our
//! values checked against the peer's writer on the same PLY; the peer's
//! `.glb` read back against the PLY it came from; round trips of a real
//! scene; and one-line errors for damaged files.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use turboquant3d::splat::scene::Scene;
use turboquant3d::splat::{gltf, ply, sog};

const EXT: &str = "KHR_gaussian_splatting";

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// The GLB's JSON and BIN chunks, split by hand from the spec's layout.
fn split(glb: &[u8]) -> (Value, Vec<u8>) {
    assert_eq!(&glb[0..4], b"glTF");
    assert_eq!(u32::from_le_bytes(glb[4..8].try_into().unwrap()), 2);
    assert_eq!(
        u32::from_le_bytes(glb[8..12].try_into().unwrap()) as usize,
        glb.len()
    );
    let jlen = u32::from_le_bytes(glb[12..16].try_into().unwrap()) as usize;
    assert_eq!(&glb[16..20], b"JSON");
    assert_eq!(jlen % 4, 0);
    let json: Value = serde_json::from_slice(&glb[20..20 + jlen]).unwrap();
    let b = 20 + jlen;
    let blen = u32::from_le_bytes(glb[b..b + 4].try_into().unwrap()) as usize;
    assert_eq!(&glb[b + 4..b + 8], b"BIN\0");
    assert_eq!(b + 8 + blen, glb.len());
    (json, glb[b + 8..].to_vec())
}

/// Builds a GLB from a JSON value and a BIN chunk (padding per the spec).
fn join(json: &Value, bin: &[u8]) -> Vec<u8> {
    let mut j = serde_json::to_vec(json).unwrap();
    while !j.len().is_multiple_of(4) {
        j.push(b' ');
    }
    let mut b = bin.to_vec();
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    let total = 12 + 8 + j.len() + 8 + b.len();
    let mut out = Vec::new();
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(j.len() as u32).to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&j);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b"BIN\0");
    out.extend_from_slice(&b);
    out
}

/// Accessor `name`'s f32 values, read by hand (tightly packed floats).
fn floats(json: &Value, bin: &[u8], name: &str) -> Vec<f32> {
    let prim = &json["meshes"][0]["primitives"][0];
    let a = &json["accessors"][prim["attributes"][name].as_u64().unwrap() as usize];
    assert_eq!(a["componentType"], 5126, "{name}");
    let v = &json["bufferViews"][a["bufferView"].as_u64().unwrap() as usize];
    let off =
        (v["byteOffset"].as_u64().unwrap_or(0) + a["byteOffset"].as_u64().unwrap_or(0)) as usize;
    let comps = match a["type"].as_str().unwrap() {
        "SCALAR" => 1,
        "VEC3" => 3,
        "VEC4" => 4,
        t => panic!("{t}"),
    };
    let n = a["count"].as_u64().unwrap() as usize * comps;
    (0..n)
        .map(|i| f32::from_le_bytes(bin[off + 4 * i..off + 4 * i + 4].try_into().unwrap()))
        .collect()
}

fn write_to_vec(scene: &Scene) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.glb");
    let n = gltf::write_glb(&p, scene).unwrap();
    let b = std::fs::read(&p).unwrap();
    assert_eq!(n as usize, b.len());
    b
}

fn sigmoid64(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

fn crop() -> Scene {
    ply::read_ply(&data("sog/crop.ply")).unwrap()
}

/// Our `.glb`'s structure against the draft, parsed independently.
#[test]
fn structure_follows_the_draft() {
    let scene = crop();
    let n = scene.len();
    let (json, bin) = split(&write_to_vec(&scene));
    assert_eq!(json["asset"]["version"], "2.0");
    assert!(
        json["extensionsUsed"]
            .as_array()
            .unwrap()
            .contains(&json!(EXT))
    );
    assert!(json.get("extensionsRequired").is_none());
    assert_eq!(
        json["buffers"][0]["byteLength"].as_u64().unwrap() as usize,
        bin.len()
    );
    let prim = &json["meshes"][0]["primitives"][0];
    assert_eq!(prim["mode"], 0, "POINTS");
    let ext = &prim["extensions"][EXT];
    assert_eq!(ext["kernel"], "ellipse");
    assert_eq!(ext["colorSpace"], "srgb_rec709_display");
    let attrs = prim["attributes"].as_object().unwrap();
    let mut want = vec![
        ("POSITION".to_string(), "VEC3", 5126),
        ("COLOR_0".to_string(), "VEC4", 5121),
        (format!("{EXT}:ROTATION"), "VEC4", 5126),
        (format!("{EXT}:SCALE"), "VEC3", 5126),
        (format!("{EXT}:OPACITY"), "SCALAR", 5126),
        (format!("{EXT}:SH_DEGREE_0_COEF_0"), "VEC3", 5126),
    ];
    for l in 1..=3 {
        for c in 0..(2 * l + 1) {
            want.push((format!("{EXT}:SH_DEGREE_{l}_COEF_{c}"), "VEC3", 5126));
        }
    }
    assert_eq!(
        attrs.len(),
        want.len(),
        "{:?}",
        attrs.keys().collect::<Vec<_>>()
    );
    for (name, ty, comp) in &want {
        let a = &json["accessors"][attrs[name].as_u64().unwrap() as usize];
        assert_eq!(a["type"], *ty, "{name}");
        assert_eq!(a["componentType"], *comp, "{name}");
        assert_eq!(a["count"].as_u64().unwrap() as usize, n, "{name}");
        let v = &json["bufferViews"][a["bufferView"].as_u64().unwrap() as usize];
        let end = v["byteOffset"].as_u64().unwrap() + v["byteLength"].as_u64().unwrap();
        assert!(end as usize <= bin.len(), "{name} outside the buffer");
        assert_eq!(v["byteOffset"].as_u64().unwrap() % 4, 0, "{name} alignment");
    }
    assert_eq!(
        json["accessors"][attrs["COLOR_0"].as_u64().unwrap() as usize]["normalized"],
        true
    );
    // POSITION must carry min and max (glTF 2.0 §5.1.1).
    let pa = &json["accessors"][attrs["POSITION"].as_u64().unwrap() as usize];
    assert_eq!(pa["min"].as_array().unwrap().len(), 3);

    // Values against the draft's definitions, computed here.
    let pos = floats(&json, &bin, "POSITION");
    let scale = floats(&json, &bin, &format!("{EXT}:SCALE"));
    let op = floats(&json, &bin, &format!("{EXT}:OPACITY"));
    let rot = floats(&json, &bin, &format!("{EXT}:ROTATION"));
    for i in 0..n {
        // glTF frame = PLY frame turned 180° about z (splat-transform's Transform.PLY).
        let p = scene.positions[i];
        assert_eq!(&pos[3 * i..3 * i + 3], &[-p[0], -p[1], p[2]]);
        for k in 0..3 {
            let want = f64::from(scene.scales[i][k]).exp();
            assert!(
                (f64::from(scale[3 * i + k]) - want).abs() <= want * 1e-7,
                "scale {i}"
            );
        }
        assert!(
            (f64::from(op[i]) - sigmoid64(scene.opacity[i])).abs() <= 1e-7,
            "opacity {i}"
        );
        assert!((0.0..=1.0).contains(&op[i]));
        let q = &rot[4 * i..4 * i + 4];
        let norm: f32 = q.iter().map(|v| v * v).sum();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "rotation {i} is not unit: {norm}"
        );
    }
}

/// Our writer against the peer's on the same PLY: every float attribute
/// agrees (the peer does not normalise quaternions; the crop's are unit
/// to f32 rounding, so 1e-6 covers it).
#[test]
fn our_values_match_the_peer_writer() {
    let scene = crop();
    let (ours, ours_bin) = split(&write_to_vec(&scene));
    let (peer, peer_bin) = split(&std::fs::read(data("glb/peer_crop.glb")).unwrap());
    let names: Vec<String> = peer["meshes"][0]["primitives"][0]["attributes"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names.len(), 21);
    for name in names.iter().filter(|n| n.as_str() != "COLOR_0") {
        let a = floats(&ours, &ours_bin, name);
        let b = floats(&peer, &peer_bin, name);
        assert_eq!(a.len(), b.len(), "{name}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-6 * x.abs().max(1.0);
            assert!((x - y).abs() <= tol, "{name}[{i}]: ours {x}, peer {y}");
        }
    }
}

fn assert_round_trip(src: &Scene, back: &Scene) {
    assert_eq!(back.len(), src.len());
    assert_eq!(back.sh_degree, src.sh_degree);
    assert_eq!(back.positions, src.positions);
    assert_eq!(back.dc, src.dc);
    assert_eq!(back.sh_rest, src.sh_rest);
    for i in 0..src.len() {
        // Rotation: the normalised quaternion, computed here in f64.
        let q = src.rotations[i];
        let n = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        for (k, &qk) in q.iter().enumerate() {
            let want = f64::from(qk) / n;
            let got = f64::from(back.rotations[i][k]);
            assert!(
                (got - want).abs() <= 2.5e-7,
                "rotation {i}/{k}: {got} vs {want}"
            );
        }
        for k in 0..3 {
            let s = src.scales[i][k];
            let bound = 2f32.powi(-24) + 2.0 * (s.abs() * f32::EPSILON);
            let e = (back.scales[i][k] - s).abs();
            assert!(
                e <= bound,
                "log scale {i}/{k}: {s} → {} (err {e} > {bound})",
                back.scales[i][k]
            );
        }
        let d = (sigmoid64(back.opacity[i]) - sigmoid64(src.opacity[i])).abs();
        assert!(d <= 2f64.powi(-24), "opacity {i}: sigmoid differs by {d}");
    }
}

/// Ours → ours on a real SH-3 scene (skull.sog decoded): exact where the
/// draft stores the same quantity, within the stated conversion bound
/// where it does not.
#[test]
fn round_trip_of_a_real_scene() {
    let Some(path) = common::data::shared_data("skull.sog") else {
        return;
    };
    let scene = sog::read_sog(&path).unwrap();
    let bytes = write_to_vec(&scene);
    let back = gltf::read_glb_bytes(&bytes, Path::new("skull.glb")).unwrap();
    assert_round_trip(&scene, &back);
    // Deterministic: the same scene gives the same bytes.
    assert_eq!(write_to_vec(&scene), bytes);
    // The file reader is the same decoder.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("skull.glb");
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(gltf::read_glb(&p).unwrap(), back);
    eprintln!(
        "skull.sog → .glb: {} bytes for {} Gaussians",
        bytes.len(),
        scene.len()
    );
}

#[test]
fn round_trip_at_each_sh_degree() {
    for l in 0..=3u8 {
        let mut s = crop();
        s.truncate_sh(l);
        let back = gltf::read_glb_bytes(&write_to_vec(&s), Path::new("c.glb")).unwrap();
        assert_round_trip(&s, &back);
    }
}

/// The peer's `.glb` of the crop, read by us, against the PLY it came
/// from: positions, rotations, colour and SH exact (the turn is sign flips
/// and a permutation), scale and opacity within the conversion bound.
#[test]
fn peer_glb_reads_back_to_its_source() {
    let src = crop();
    let ours = gltf::read_glb(&data("glb/peer_crop.glb")).unwrap();
    assert_eq!(ours.len(), 274);
    assert_eq!(ours.positions, src.positions);
    assert_eq!(ours.rotations, src.rotations);
    assert_eq!(ours.dc, src.dc);
    assert_eq!(ours.sh_rest, src.sh_rest);
    for i in 0..src.len() {
        for k in 0..3 {
            let e = (ours.scales[i][k] - src.scales[i][k]).abs();
            assert!(
                e <= 2f32.powi(-24) + 2.0 * src.scales[i][k].abs() * f32::EPSILON,
                "scale {i}/{k}: {e}"
            );
        }
        let d = (sigmoid64(ours.opacity[i]) - sigmoid64(src.opacity[i])).abs();
        assert!(d <= 2f64.powi(-24), "opacity {i}: {d}");
    }
    // And a .glb the installed peer writes now, where it is installed.
    let Some(peer) = common::peer::peer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("now.glb");
    common::peer::convert(&peer, &data("sog/crop.ply"), &out);
    let now = gltf::read_glb(&out).unwrap();
    assert_eq!(now.positions, src.positions);
    assert_eq!(now.sh_rest, src.sh_rest);
}

#[test]
fn describe_names_the_facts() {
    let p = data("glb/peer_crop.glb");
    let facts = gltf::describe_glb(&std::fs::read(&p).unwrap(), &p).unwrap();
    let get = |k: &str| {
        facts
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("count"), "274");
    assert_eq!(get("sh degree"), "3");
    assert_eq!(get("kernel"), "ellipse");
    assert_eq!(get("generator"), "splat-transform 2.7.1");
}

// ---------------------------------------------------------------------------
// Bad input

fn err_of(bytes: &[u8]) -> String {
    match gltf::read_glb_bytes(bytes, Path::new("bad/x.glb")) {
        Ok(s) => panic!("accepted a bad file ({} Gaussians)", s.len()),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "not one line: {m:?}");
            assert!(m.starts_with("bad/x.glb: "), "does not name the file: {m}");
            m
        }
    }
}

fn peer_parts() -> (Value, Vec<u8>) {
    split(&std::fs::read(data("glb/peer_crop.glb")).unwrap())
}

#[test]
fn the_rebuilt_file_reads() {
    let (j, b) = peer_parts();
    let a = gltf::read_glb_bytes(&join(&j, &b), Path::new("x.glb")).unwrap();
    assert_eq!(a, gltf::read_glb(&data("glb/peer_crop.glb")).unwrap());
}

#[test]
fn bad_magic_version_and_lengths() {
    let good = std::fs::read(data("glb/peer_crop.glb")).unwrap();
    let mut b = good.clone();
    b[0..4].copy_from_slice(b"glTX");
    common::ply::assert_has(&err_of(&b), &["magic"]);
    let mut b = good.clone();
    b[4] = 1;
    common::ply::assert_has(&err_of(&b), &["version"]);
    // Header length lying: more than the file, less than a chunk.
    let mut b = good.clone();
    b[8..12].copy_from_slice(&(good.len() as u32 + 100).to_le_bytes());
    common::ply::assert_has(&err_of(&b), &["length", "declares"]);
    let mut b = good.clone();
    b[8..12].copy_from_slice(&4u32.to_le_bytes());
    common::ply::assert_has(&err_of(&b), &["length"]);
    // Truncated file.
    common::ply::assert_has(&err_of(&good[..good.len() / 2]), &["length"]);
    common::ply::assert_has(&err_of(&good[..5]), &["header"]);
    // JSON chunk length lying.
    let mut b = good.clone();
    b[12..16].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    common::ply::assert_has(&err_of(&b), &["JSON chunk length"]);
    // BIN chunk length lying.
    let jlen = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let mut b = good.clone();
    b[20 + jlen..24 + jlen].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    common::ply::assert_has(&err_of(&b), &["chunk"]);
    // A file through read_glb: a lying length stops the read, not memory.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.glb");
    std::fs::write(&p, &good[..100]).unwrap();
    let e = gltf::read_glb(&p).unwrap_err().to_string();
    assert!(e.contains("t.glb") && e.contains("length"), "{e}");
}

#[test]
fn bad_json_chunk() {
    let (_, b) = peer_parts();
    let mut g = join(&json!({}), &b);
    // Replace the JSON with text that is not JSON, keeping lengths.
    g[20] = b'[';
    g[21] = b'x';
    common::ply::assert_has(&err_of(&g), &["JSON chunk"]);
}

#[test]
fn accessor_out_of_buffer_bounds() {
    let (mut j, b) = peer_parts();
    j["bufferViews"][3]["byteLength"] = json!(1u64 << 32);
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["accessor of KHR_gaussian_splatting:SCALE", "outside"],
    );
    let (mut j, b) = peer_parts();
    j["accessors"][2]["count"] = json!(100_000);
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["accessor of KHR_gaussian_splatting:ROTATION", "runs past"],
    );
    let (mut j, b) = peer_parts();
    j["accessors"][0]["bufferView"] = json!(99);
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["accessor of POSITION", "bufferView 99"],
    );
    // Counts that disagree.
    let (mut j, b) = peer_parts();
    j["accessors"][4]["count"] = json!(10);
    common::ply::assert_has(&err_of(&join(&j, &b)), &["OPACITY", "POSITION has 274"]);
}

#[test]
fn missing_attributes_and_refused_features() {
    let (mut j, b) = peer_parts();
    j["meshes"][0]["primitives"][0]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove(&format!("{EXT}:SCALE"));
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["KHR_gaussian_splatting:SCALE", "missing"],
    );
    let (mut j, b) = peer_parts();
    j["meshes"][0]["primitives"][0]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove(&format!("{EXT}:SH_DEGREE_2_COEF_3"));
    common::ply::assert_has(&err_of(&join(&j, &b)), &["SH_DEGREE_2_COEF_3", "partly"]);
    let (mut j, b) = peer_parts();
    j["extensionsRequired"] = json!(["KHR_draco_mesh_compression"]);
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["extensionsRequired", "KHR_draco_mesh_compression"],
    );
    let (mut j, b) = peer_parts();
    j["bufferViews"][0]["extensions"] = json!({"EXT_meshopt_compression": {}});
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["accessor of POSITION", "compressed"],
    );
    let (mut j, b) = peer_parts();
    j["buffers"][0]["uri"] = json!("data.bin");
    common::ply::assert_has(&err_of(&join(&j, &b)), &["buffers[0]"]);
    let (mut j, b) = peer_parts();
    j["meshes"][0]["primitives"][0]["mode"] = json!(4);
    common::ply::assert_has(&err_of(&join(&j, &b)), &["mode", "POINTS"]);
    let (mut j, b) = peer_parts();
    j["meshes"][0]["primitives"][0]["extensions"] = json!({});
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["meshes", "KHR_gaussian_splatting"],
    );
    let (mut j, b) = peer_parts();
    j["accessors"][3]["componentType"] = json!(5121);
    common::ply::assert_has(&err_of(&join(&j, &b)), &["SCALE", "componentType 5121"]);
    let (mut j, b) = peer_parts();
    j["nodes"][0]["translation"] = json!([1, 0, 0]);
    common::ply::assert_has(&err_of(&join(&j, &b)), &["nodes[0]", "transform"]);
}

#[test]
fn out_of_range_values() {
    // Opacity above 1 and a negative scale, written into the BIN chunk.
    let (j, mut b) = peer_parts();
    let off = |ai: usize| {
        let a = &j["accessors"][ai];
        let v = &j["bufferViews"][a["bufferView"].as_u64().unwrap() as usize];
        v["byteOffset"].as_u64().unwrap() as usize
    };
    let o = off(4);
    b[o..o + 4].copy_from_slice(&1.5f32.to_le_bytes());
    common::ply::assert_has(
        &err_of(&join(&j, &b)),
        &["OPACITY", "element 0", "outside [0, 1]"],
    );
    let (j, mut b) = peer_parts();
    let o = off(3) + 4;
    b[o..o + 4].copy_from_slice(&(-0.5f32).to_le_bytes());
    common::ply::assert_has(&err_of(&join(&j, &b)), &["SCALE", "element 0", "> 0"]);
}

#[test]
fn unwritable_scenes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.glb");
    let mut s = crop();
    s.scales[7][1] = 200.0;
    let e = gltf::write_glb(&p, &s).unwrap_err().to_string();
    assert!(e.contains("Gaussian 7"), "{e}");
    let mut s = crop();
    s.positions[3][0] = f32::NAN;
    let e = gltf::write_glb(&p, &s).unwrap_err().to_string();
    assert!(e.contains("Gaussian 3"), "{e}");
    assert!(!p.exists());
}

#[test]
fn glb_paths() {
    assert!(gltf::is_glb_path(Path::new("a/b.glb")));
    assert!(!gltf::is_glb_path(Path::new("a/b.sog")));
}

//! The PlayCanvas SOG reader against the real peer (splat-transform 2.7.1):
//! the peer's own decode of the same file, converted to a PLY, is the
//! reference; the source PLY bounds the format's precision; hand-damaged
//! copies of a peer-written `.sog` check the one-line errors.

mod common;

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use turboquant3d::splat::scene::{SH_C0, Scene, sigmoid};
use turboquant3d::splat::{ply, sog};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sog")
        .join(rel)
}

/// The peer's decode of `input` (any SOG form) to a PLY, read back.
fn peer_decode(input: &Path) -> Option<Scene> {
    let peer = common::peer::peer()?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peer.ply");
    common::peer::convert(&peer, input, &out);
    Some(ply::read_ply(&out).unwrap())
}

fn close(a: f32, b: f32, rel: f32, what: &str) {
    let tol = rel * a.abs().max(b.abs()).max(1.0);
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b} (tolerance {tol})");
}

/// Every attribute of `ours` equals the peer's decode to f32 rounding.
fn assert_same_as_peer(ours: &Scene, peer: &Scene) {
    assert_eq!(ours.len(), peer.len(), "count");
    assert_eq!(ours.sh_degree, peer.sh_degree, "sh degree");
    for i in 0..ours.len() {
        for k in 0..3 {
            close(
                ours.positions[i][k],
                peer.positions[i][k],
                2e-7,
                &format!("x[{i}][{k}]"),
            );
            close(
                ours.scales[i][k],
                peer.scales[i][k],
                0.0,
                &format!("scale[{i}][{k}]"),
            );
            close(ours.dc[i][k], peer.dc[i][k], 0.0, &format!("dc[{i}][{k}]"));
        }
        close(
            ours.opacity[i],
            peer.opacity[i],
            1e-6,
            &format!("opacity[{i}]"),
        );
        for k in 0..4 {
            close(
                ours.rotations[i][k],
                peer.rotations[i][k],
                1e-6,
                &format!("rot[{i}][{k}]"),
            );
        }
    }
    assert_eq!(ours.sh_rest.len(), peer.sh_rest.len());
    for (j, (a, b)) in ours.sh_rest.iter().zip(&peer.sh_rest).enumerate() {
        close(*a, *b, 0.0, &format!("sh_rest[{j}]"));
    }
}

#[test]
fn skull_sog_matches_the_peer_decode() {
    let Some(path) = common::data::shared_data("skull.sog") else {
        return;
    };
    let ours = sog::read_sog(&path).unwrap();
    // The data README: 94,936 Gaussians, SH degree 3.
    assert_eq!(ours.len(), 94_936);
    assert_eq!(ours.sh_degree, 3);
    assert_eq!(ours.sh_rest.len(), 94_936 * 45);
    // read_sog_bytes is the same decoder.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(sog::read_sog_bytes(&bytes, &path).unwrap(), ours);
    let Some(peer) = peer_decode(&path) else {
        return;
    };
    assert_same_as_peer(&ours, &peer);
}

#[test]
fn skull_sog_describe() {
    let Some(path) = common::data::shared_data("skull.sog") else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let facts = sog::describe_sog(&bytes, &path).unwrap();
    let get = |k: &str| {
        facts
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no {k} in {facts:?}"))
    };
    assert_eq!(get("version"), "2");
    assert_eq!(get("count"), "94936");
    assert_eq!(get("sh degree"), "3");
    assert_eq!(get("palette"), "65536 entries");
    // The centroid texture is 64 entries × 15 coefficients wide.
    assert!(
        get("texture shN_centroids.webp").starts_with("960×1024"),
        "{facts:?}"
    );
}

/// Peer-written SOG (zip, `meta.json` path, folder path) of a 274-Gaussian
/// crop of the skull, each against the peer's own decode of that file.
#[test]
fn peer_written_crop_in_every_form_matches_the_peer_decode() {
    let zip = fixture("crop.sog");
    let meta = fixture("crop_meta/meta.json");
    let ours_zip = sog::read_sog(&zip).unwrap();
    let ours_meta = sog::read_sog(&meta).unwrap();
    let ours_dir = sog::read_sog(&fixture("crop_meta")).unwrap();
    assert_eq!(ours_meta, ours_dir);
    assert_eq!(ours_zip.len(), 274);
    assert_eq!(ours_meta.len(), 274);
    assert_eq!(ours_zip.sh_degree, 3);
    if let Some(peer) = peer_decode(&zip) {
        assert_same_as_peer(&ours_zip, &peer);
    }
    if let Some(peer) = peer_decode(&meta) {
        assert_same_as_peer(&ours_meta, &peer);
    }
}

/// The crop against the PLY it was written from, within SOG's precision
/// (see `sog::SOG_PRECISION`). The writer reorders Gaussians (Morton
/// order), so each decoded Gaussian is matched to the nearest source one.
#[test]
fn peer_written_crop_is_within_sog_precision_of_its_source() {
    let src = ply::read_ply(&fixture("crop.ply")).unwrap();
    let sogf = fixture("crop.sog");
    let ours = sog::read_sog(&sogf).unwrap();
    assert_eq!(ours.len(), src.len());
    let meta: Value = {
        let bytes = std::fs::read(&sogf).unwrap();
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut s = String::new();
        z.by_name("meta.json")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        serde_json::from_str(&s).unwrap()
    };
    let f = |v: &Value| v.as_f64().unwrap();
    let mins: Vec<f64> = meta["means"]["mins"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    let maxs: Vec<f64> = meta["means"]["maxs"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    let gap = |key: &str| {
        let cb: Vec<f64> = meta[key]["codebook"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        cb.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    };
    let (scale_gap, dc_gap) = (gap("scales"), gap("sh0"));
    let mut used = vec![false; src.len()];
    let mut sh_err = 0f64;
    for i in 0..ours.len() {
        let p = ours.positions[i];
        let j = (0..src.len())
            .filter(|&j| !used[j])
            .min_by(|&a, &b| {
                let d = |j: usize| {
                    (0..3)
                        .map(|k| (src.positions[j][k] - p[k]).powi(2))
                        .sum::<f32>()
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        used[j] = true;
        for k in 0..3 {
            // 16 bits of sign(x)·ln(1+|x|), truncated: one step.
            let step = (maxs[k] - mins[k]) / 65535.0;
            let x = f64::from(src.positions[j][k]);
            let bound = (1.0 + x.abs()) * (step.exp() - 1.0) * 1.001 + 1e-7;
            let err = (f64::from(p[k]) - x).abs();
            assert!(err <= bound, "position {i}/{k}: {err} > {bound}");
            let e = f64::from((ours.scales[i][k] - src.scales[j][k]).abs());
            assert!(
                e <= scale_gap + 1e-6,
                "scale {i}/{k}: {e} > codebook gap {scale_gap}"
            );
            let e = f64::from((ours.dc[i][k] - src.dc[j][k]).abs());
            assert!(
                e <= dc_gap + 1e-6,
                "dc {i}/{k}: {e} > codebook gap {dc_gap}"
            );
        }
        let da = (sigmoid(ours.opacity[i]) - sigmoid(src.opacity[j])).abs();
        assert!(
            da <= 1.0 / 255.0 + 1e-6,
            "opacity {i}: sigmoid differs by {da}"
        );
        // Rotation: same up to sign, each component within √2/255.
        let qs = {
            let q = src.rotations[j];
            let n = q.iter().map(|v| v * v).sum::<f32>().sqrt();
            q.map(|v| v / n)
        };
        let q = ours.rotations[i];
        let dot: f32 = (0..4).map(|k| q[k] * qs[k]).sum();
        let s = if dot < 0.0 { -1.0 } else { 1.0 };
        for k in 0..4 {
            let e = (q[k] - s * qs[k]).abs();
            assert!(
                e <= 2.0 * std::f32::consts::SQRT_2 / 255.0,
                "rotation {i}/{k}: {e}"
            );
        }
        for c in 0..45 {
            sh_err = sh_err.max(f64::from(
                (ours.sh_rest[i * 45 + c] - src.sh_rest[j * 45 + c]).abs(),
            ));
        }
    }
    // SH rest goes through a 256-entry palette for 274 Gaussians, then a
    // 256-entry codebook: no per-value bound, but it must be close.
    let sh_range = src.sh_rest.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        sh_err < 0.25 * f64::from(sh_range),
        "SH rest max error {sh_err} (range {sh_range})"
    );
    eprintln!(
        "crop: SH rest max error {sh_err:.4} (|sh| ≤ {sh_range:.3}); codebook gaps: scale {scale_gap:.4}, dc {dc_gap:.4} (colour {:.4})",
        SH_C0 as f64 * dc_gap
    );
}

// ---------------------------------------------------------------------------
// Bad input

fn entries(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect()
}

fn make_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn crop_entries() -> Vec<(String, Vec<u8>)> {
    entries(&std::fs::read(fixture("crop.sog")).unwrap())
}

fn with_meta(mut edit: impl FnMut(&mut Value)) -> Vec<u8> {
    let mut e = crop_entries();
    for (name, data) in &mut e {
        if name == "meta.json" {
            let mut v: Value = serde_json::from_slice(data).unwrap();
            edit(&mut v);
            *data = serde_json::to_vec(&v).unwrap();
        }
    }
    make_zip(&e)
}

fn err_of(bytes: &[u8]) -> String {
    let path = Path::new("bad/crop.sog");
    match sog::read_sog_bytes(bytes, path) {
        Ok(s) => panic!("accepted a bad file ({} Gaussians)", s.len()),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "not one line: {m:?}");
            assert!(
                m.starts_with("bad/crop.sog: "),
                "does not name the file: {m}"
            );
            m
        }
    }
}

#[test]
fn a_rebuilt_zip_still_reads() {
    // The test's own zip writer (deflate) gives a readable SOG, so the
    // errors below come from the edit, not from the rebuilding.
    let a = sog::read_sog_bytes(&make_zip(&crop_entries()), Path::new("x.sog")).unwrap();
    assert_eq!(a, sog::read_sog(&fixture("crop.sog")).unwrap());
}

#[test]
fn truncated_zip() {
    let b = std::fs::read(fixture("crop.sog")).unwrap();
    for cut in [0, 10, b.len() / 2, b.len() - 1] {
        common::ply::assert_has(&err_of(&b[..cut]), &["zip"]);
    }
}

#[test]
fn zip_without_a_texture() {
    let e: Vec<_> = crop_entries()
        .into_iter()
        .filter(|(n, _)| n != "sh0.webp")
        .collect();
    common::ply::assert_has(&err_of(&make_zip(&e)), &["zip entry sh0.webp", "missing"]);
    let e: Vec<_> = crop_entries()
        .into_iter()
        .filter(|(n, _)| n != "meta.json")
        .collect();
    common::ply::assert_has(&err_of(&make_zip(&e)), &["zip entry meta.json", "missing"]);
}

#[test]
fn bad_webp() {
    let mut e = crop_entries();
    for (name, data) in &mut e {
        if name == "quats.webp" {
            data.truncate(data.len() / 2);
        }
        if name == "scales.webp" {
            *data = b"RIFF\x10\0\0\0WEBPnonsense".to_vec();
        }
    }
    common::ply::assert_has(&err_of(&make_zip(&e)), &["texture", "webp", "WebP"]);
    let m = err_of(&make_zip(&e));
    assert!(m.contains("quats.webp") || m.contains("scales.webp"), "{m}");
}

#[test]
fn bad_json() {
    let mut e = crop_entries();
    for (name, data) in &mut e {
        if name == "meta.json" {
            *data = b"{\"version\": 2, \"count\": ".to_vec();
        }
    }
    common::ply::assert_has(&err_of(&make_zip(&e)), &["meta.json", "JSON"]);
    let m = err_of(&with_meta(|v| v["scales"]["codebook"] = Value::from("x")));
    common::ply::assert_has(&m, &["scales.codebook"]);
    let m = err_of(&with_meta(|v| {
        v["means"]["mins"] = serde_json::json!([0, 1])
    }));
    common::ply::assert_has(&m, &["means.mins", "2 entries"]);
    let m = err_of(&with_meta(|v| {
        v.as_object_mut().unwrap().remove("version");
    }));
    common::ply::assert_has(&m, &["version", "version 1"]);
    let m = err_of(&with_meta(|v| v["version"] = Value::from(3)));
    common::ply::assert_has(&m, &["version", "3"]);
    let m = err_of(&with_meta(|v| {
        v["quats"]["files"] = serde_json::json!(["../quats.webp"])
    }));
    common::ply::assert_has(&m, &["quats.files[0]", "plain file name"]);
}

#[test]
fn count_beyond_the_textures() {
    // The crop's textures are 20 × 16 = 320 pixels.
    let m = err_of(&with_meta(|v| v["count"] = Value::from(321)));
    common::ply::assert_has(&m, &["texture means_l.webp", "too small", "321"]);
    // 2^40 Gaussians in a 29 KB file: refused before anything is allocated.
    let m = err_of(&with_meta(|v| v["count"] = Value::from(1u64 << 40)));
    common::ply::assert_has(&m, &["count"]);
    let m = err_of(&with_meta(|v| v["count"] = Value::from(0)));
    common::ply::assert_has(&m, &["count", "no Gaussians"]);
}

#[test]
fn palette_labels_out_of_range() {
    let m = err_of(&with_meta(|v| v["shN"]["count"] = Value::from(10)));
    common::ply::assert_has(
        &m,
        &["shN_labels.webp", "label", "out of range", "shN.count = 10"],
    );
    let m = err_of(&with_meta(|v| v["shN"]["count"] = Value::from(1u64 << 20)));
    common::ply::assert_has(&m, &["shN.count"]);
    let m = err_of(&with_meta(|v| v["shN"]["bands"] = Value::from(2)));
    common::ply::assert_has(&m, &["shN_centroids.webp", "wide"]);
    let m = err_of(&with_meta(|v| {
        v["sh0"]["codebook"] = serde_json::json!([0.0, 1.0]);
    }));
    common::ply::assert_has(&m, &["sh0.codebook", "codebook"]);
}

#[test]
fn zip_entry_declaring_an_absurd_size() {
    // Patch the central directory's uncompressed size of meta.json.
    let mut b = std::fs::read(fixture("crop.sog")).unwrap();
    let mut at = None;
    for i in 0..b.len().saturating_sub(46) {
        if b[i..i + 4] == *b"PK\x01\x02" {
            let nlen = u16::from_le_bytes([b[i + 28], b[i + 29]]) as usize;
            if b.get(i + 46..i + 46 + nlen) == Some(b"meta.json".as_slice()) {
                at = Some(i);
            }
        }
    }
    let i = at.expect("meta.json in the central directory");
    b[i + 24..i + 28].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
    let m = err_of(&b);
    assert!(m.contains("meta.json"), "{m}");
}

#[test]
fn folder_with_a_missing_texture() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture("crop_meta")).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() != "sh0.webp" {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let e = sog::read_sog(dir.path()).unwrap_err().to_string();
    assert!(!e.contains('\n'));
    common::ply::assert_has(&e, &["sh0.webp"]);
    // A folder with no meta.json at all.
    let empty = tempfile::tempdir().unwrap();
    let e = sog::read_sog(empty.path()).unwrap_err().to_string();
    common::ply::assert_has(&e, &["meta.json"]);
}

#[test]
fn sog_paths() {
    assert!(sog::is_sog_path(Path::new("a/skull.sog")));
    assert!(sog::is_sog_path(Path::new("a/meta.json")));
    assert!(!sog::is_sog_path(Path::new("a/skull.ply")));
}

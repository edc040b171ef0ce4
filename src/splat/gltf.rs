//! glTF 2.0 binary (`.glb`) with the Khronos `KHR_gaussian_splatting`
//! extension: one mesh primitive, mode POINTS, one accessor per attribute,
//! all in the GLB's BIN chunk. Written and read.
//!
//! Follows the Khronos Review Draft after KhronosGroup/glTF issue #2563
//! (SCALE linear, not log), which is what splat-transform 2.7.1 writes.
//! Where the draft says nothing the layout is splat-transform's:
//!
//! | attribute | accessor | stored value (glTF space) |
//! |---|---|---|
//! | `POSITION` | VEC3 f32, with min/max | `(−x, −y, z)` |
//! | `COLOR_0` | VEC4 u8 normalised | `round(255·(0.5 + SH_C0·f_dc))`, `round(255·sigmoid(opacity))` (fallback only; not read when SH_DEGREE_0 is there) |
//! | `KHR_gaussian_splatting:ROTATION` | VEC4 f32, (x, y, z, w) | the unit quaternion turned by 180° about z: `(−q_y, q_x, q_w, −q_z)` of the normalised (w, x, y, z) |
//! | `KHR_gaussian_splatting:SCALE` | VEC3 f32 | `exp(log scale)`, linear |
//! | `KHR_gaussian_splatting:OPACITY` | SCALAR f32 | `sigmoid(opacity)` in [0, 1] |
//! | `KHR_gaussian_splatting:SH_DEGREE_0_COEF_0` | VEC3 f32 | `f_dc` (r, g, b) |
//! | `KHR_gaussian_splatting:SH_DEGREE_l_COEF_n` | VEC3 f32, l = 1..=L, n = 0..2l | per-channel coefficient `l² − 1 + n` (r, g, b), negated where `m = n − l` is odd |
//!
//! Coordinates: the 3DGS PLY convention is the glTF (engine) frame turned
//! 180° about z, as splat-transform has it (`Transform.PLY`): writing turns
//! positions, rotations and SH by 180° about z, reading turns them back.
//! These are sign flips and a permutation, so exact.
//!
//! The reader also takes `KHR_gaussian_splatting:ROTATION` as normalised
//! i8/i16, SCALE as i8/i16 (normalised or not), OPACITY as normalised
//! u8/u16, and `COLOR_0` in place of a missing `SH_DEGREE_0_COEF_0`. It
//! refuses any other required extension, external or compressed buffers,
//! sparse accessors, node transforms, and accessors outside their buffer.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::scene::{SH_C0, Scene, rest_per_channel};
use crate::format::input::{Extent, read_declared};
use crate::{Error, Result};

/// The extension's name.
pub const EXTENSION: &str = "KHR_gaussian_splatting";

const FLOAT: u64 = 5126;
const BYTE: u64 = 5120;
const UNSIGNED_BYTE: u64 = 5121;
const SHORT: u64 = 5122;
const UNSIGNED_SHORT: u64 = 5123;
const ARRAY_BUFFER: u64 = 34962;
const POINTS: u64 = 0;

/// The format's own precision per attribute for what [`write_glb`] writes
/// and [`read_glb`] reads back (the round-trip tests' tolerances).
///
/// | attribute | round trip |
/// |---|---|
/// | position, f_dc, SH rest | exact (sign flips only) |
/// | rotation | exact as a rotation; the values come back normalised (f32 rounding of q/|q|, ≤ 2 ulp), an all-zero or non-finite one as the identity |
/// | log scale | `exp` and `ln` in f64, each rounded to f32 once: `|Δ| ≤ 2⁻²⁴ + ulp(s)` for `s` ≥ −87 (normal f32 range) |
/// | opacity | `sigmoid` to f32 and logit back, in f64: `|Δ sigmoid| ≤ 2⁻²⁴`; logits above `ln(2²⁴ − 1)` ≈ 16.64 come back as 16.64 |
pub const GLB_PRECISION: &[(&str, &str)] = &[
    ("position", "exact"),
    ("dc", "exact"),
    ("sh_rest", "exact"),
    ("rotation", "exact up to normalisation (2 ulp)"),
    ("scale", "2^-24 + 1 ulp of the log scale"),
    (
        "opacity",
        "2^-24 in sigmoid space; logits above 16.64 clamp",
    ),
];

/// Largest opacity read back: the f32 just below 1, so that a stored 1.0
/// (any logit above ≈ 16.64) gives a finite logit.
const ALPHA_MAX: f64 = 1.0 - 1.0 / 16_777_216.0;
/// Smallest opacity read back: the least positive f32.
const ALPHA_MIN: f64 = 1.401_298_464_324_817e-45;

/// Whether `path` has the extension `.glb` (case-insensitive).
pub fn is_glb_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("glb"))
}

/// The 180° turn about z of a (w, x, y, z) quaternion, PLY → glTF,
/// returned in glTF's (x, y, z, w) order.
fn quat_to_gltf(q: [f32; 4]) -> [f32; 4] {
    let [w, x, y, z] = q;
    [-y, x, w, -z]
}

/// The inverse of [`quat_to_gltf`]: glTF (x, y, z, w) → PLY (w, x, y, z).
fn quat_from_gltf(g: [f32; 4]) -> [f32; 4] {
    let [x, y, z, w] = g;
    [z, y, -x, -w]
}

/// Sign of SH coefficient `n` of degree `l` under the 180° turn about z.
fn sh_sign(l: u8, n: usize) -> f32 {
    if (n + l as usize) % 2 == 1 { -1.0 } else { 1.0 }
}

fn normalise(q: [f32; 4]) -> [f32; 4] {
    let n = q
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if n > 0.0 && n.is_finite() {
        q.map(|v| (f64::from(v) / n) as f32)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    }
}

fn sigmoid64(o: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(o)).exp())) as f32
}

fn quantize_unit(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Writes `scene` as a `.glb`, atomically. Normals, extra properties and
/// comments are not stored (the draft has no place for them). Errors: an
/// inconsistent or empty scene, a non-finite position or opacity, or a
/// log scale whose `exp` is not a finite positive f32, naming the Gaussian.
pub fn write_glb(path: &Path, scene: &Scene) -> Result<u64> {
    let bytes = glb_bytes(scene, path)?;
    crate::format::write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// One attribute's data and accessor description.
struct Segment {
    name: String,
    data: Vec<u8>,
    component: u64,
    ty: &'static str,
    normalized: bool,
    min_max: Option<([f32; 3], [f32; 3])>,
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn glb_bytes(scene: &Scene, path: &Path) -> Result<Vec<u8>> {
    let bad = |why: String| Error::InvalidArgument(format!("scene for {}: {why}", path.display()));
    scene.check_consistent().map_err(bad)?;
    let n = scene.len();
    if n == 0 {
        return Err(bad("no Gaussians to write".into()));
    }
    if scene.normals.is_some() || scene.extras.stride() > 0 {
        log::warn!(
            "{}: glTF KHR_gaussian_splatting has no place for normals or extra properties; they are dropped",
            path.display()
        );
    }
    for i in 0..n {
        let p = scene.positions[i];
        if !p.iter().all(|v| v.is_finite()) {
            return Err(bad(format!("Gaussian {i}: position {p:?} is not finite")));
        }
        let s = scene.scales[i];
        if !s.iter().all(|&l| {
            let e = f64::from(l).exp() as f32;
            e.is_finite() && e > 0.0
        }) {
            return Err(bad(format!(
                "Gaussian {i}: log scale {s:?} has no finite positive exp in f32"
            )));
        }
        if scene.opacity[i].is_nan() {
            return Err(bad(format!("Gaussian {i}: opacity is NaN")));
        }
    }

    let mut segs = Vec::new();
    let pos: Vec<[f32; 3]> = scene
        .positions
        .iter()
        .map(|p| [-p[0], -p[1], p[2]])
        .collect();
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in &pos {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    segs.push(Segment {
        name: "POSITION".into(),
        data: f32_bytes(pos.iter().flatten().copied()),
        component: FLOAT,
        ty: "VEC3",
        normalized: false,
        min_max: Some((lo, hi)),
    });
    let mut color = Vec::with_capacity(4 * n);
    for i in 0..n {
        for k in 0..3 {
            color.push(quantize_unit(0.5 + SH_C0 * scene.dc[i][k]));
        }
        color.push(quantize_unit(sigmoid64(scene.opacity[i])));
    }
    segs.push(Segment {
        name: "COLOR_0".into(),
        data: color,
        component: UNSIGNED_BYTE,
        ty: "VEC4",
        normalized: true,
        min_max: None,
    });
    let attr = |s: &str| format!("{EXTENSION}:{s}");
    segs.push(Segment {
        name: attr("ROTATION"),
        data: f32_bytes(
            scene
                .rotations
                .iter()
                .flat_map(|&q| quat_to_gltf(normalise(q))),
        ),
        component: FLOAT,
        ty: "VEC4",
        normalized: false,
        min_max: None,
    });
    segs.push(Segment {
        name: attr("SCALE"),
        data: f32_bytes(
            scene
                .scales
                .iter()
                .flatten()
                .map(|&l| f64::from(l).exp() as f32),
        ),
        component: FLOAT,
        ty: "VEC3",
        normalized: false,
        min_max: None,
    });
    segs.push(Segment {
        name: attr("OPACITY"),
        data: f32_bytes(scene.opacity.iter().map(|&o| sigmoid64(o))),
        component: FLOAT,
        ty: "SCALAR",
        normalized: false,
        min_max: None,
    });
    segs.push(Segment {
        name: attr("SH_DEGREE_0_COEF_0"),
        data: f32_bytes(scene.dc.iter().flatten().copied()),
        component: FLOAT,
        ty: "VEC3",
        normalized: false,
        min_max: None,
    });
    let k = rest_per_channel(scene.sh_degree);
    let d = scene.rest_dim();
    for l in 1..=scene.sh_degree {
        for c in 0..(2 * l as usize + 1) {
            let j = (l as usize * l as usize - 1) + c;
            let sign = sh_sign(l, c);
            let vals = (0..n).flat_map(|i| {
                let row = &scene.sh_rest[i * d..(i + 1) * d];
                [row[j] * sign, row[k + j] * sign, row[2 * k + j] * sign]
            });
            segs.push(Segment {
                name: attr(&format!("SH_DEGREE_{l}_COEF_{c}")),
                data: f32_bytes(vals),
                component: FLOAT,
                ty: "VEC3",
                normalized: false,
                min_max: None,
            });
        }
    }

    let mut bin = Vec::new();
    let mut views = Vec::new();
    let mut accessors = Vec::new();
    let mut attributes = Map::new();
    for (idx, s) in segs.iter().enumerate() {
        let offset = bin.len();
        bin.extend_from_slice(&s.data);
        while bin.len() % 4 != 0 {
            bin.push(0);
        }
        views.push(json!({
            "buffer": 0,
            "byteOffset": offset,
            "byteLength": s.data.len(),
            "target": ARRAY_BUFFER,
        }));
        let mut a = json!({
            "bufferView": idx,
            "byteOffset": 0,
            "componentType": s.component,
            "count": n,
            "type": s.ty,
        });
        if s.normalized {
            a["normalized"] = json!(true);
        }
        if let Some((lo, hi)) = s.min_max {
            a["min"] = json!(lo);
            a["max"] = json!(hi);
        }
        accessors.push(a);
        attributes.insert(s.name.clone(), json!(idx));
    }
    if bin.len() > (u32::MAX as usize) - (1 << 20) {
        return Err(bad(format!(
            "{} bytes of attributes do not fit a .glb (4 GiB at most)",
            bin.len()
        )));
    }
    let root = json!({
        "asset": {
            "version": "2.0",
            "generator": concat!("turboquant3d ", env!("CARGO_PKG_VERSION")),
        },
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "buffers": [{"byteLength": bin.len()}],
        "bufferViews": views,
        "accessors": accessors,
        "meshes": [{
            "primitives": [{
                "attributes": attributes,
                "mode": POINTS,
                "extensions": {
                    EXTENSION: {
                        "kernel": "ellipse",
                        "colorSpace": "srgb_rec709_display",
                        "sortingMethod": "cameraDistance",
                        "projection": "perspective",
                    }
                }
            }]
        }],
    });
    let json_bytes = serde_json::to_vec(&root)
        .map_err(|e| Error::InvalidArgument(format!("{}: glTF JSON: {e}", path.display())))?;
    let glb = ::gltf::binary::Glb {
        header: ::gltf::binary::Header {
            magic: *b"glTF",
            version: 2,
            length: 0, // to_vec computes it
        },
        json: json_bytes.into(),
        bin: Some(bin.into()),
    };
    glb.to_vec()
        .map_err(|e| Error::InvalidArgument(format!("{}: GLB: {e}", path.display())))
}

/// Reads a `.glb` file: its header's declared length bounds the read.
pub fn read_glb(path: &Path) -> Result<Scene> {
    let bytes = read_glb_file(path)?;
    read_glb_bytes(&bytes, path)
}

fn read_glb_file(path: &Path) -> Result<Vec<u8>> {
    read_declared(path, |b| {
        if b.len() < 12 {
            return Ok(Extent::Need(12));
        }
        let (_, len) = header(b, path)?;
        Ok(Extent::Total(u64::from(len)))
    })
}

/// Checks the 12-byte GLB header: magic, version 2, a length of at least
/// 20 bytes (header and one chunk header). Returns (version, length).
fn header(b: &[u8], path: &Path) -> Result<(u32, u32)> {
    let head = b.get(0..12).ok_or_else(|| {
        Error::format(
            path,
            "header",
            format!("{} bytes is shorter than the 12-byte GLB header", b.len()),
        )
    })?;
    if &head[0..4] != b"glTF" {
        return Err(Error::format(
            path,
            "magic",
            format!(
                "{:?} is not \"glTF\": not a binary glTF",
                String::from_utf8_lossy(&head[0..4])
            ),
        ));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if version != 2 {
        return Err(Error::format(
            path,
            "version",
            format!("GLB version {version}, only 2 is read"),
        ));
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if len < 20 {
        return Err(Error::format(
            path,
            "length",
            format!("header declares {len} bytes, less than a header and a chunk"),
        ));
    }
    Ok((version, len))
}

/// Splits and checks the container; returns the JSON root and the BIN
/// chunk.
fn open<'a>(bytes: &'a [u8], path: &Path) -> Result<(Value, &'a [u8])> {
    let (_, len) = header(bytes, path)?;
    if len as usize != bytes.len() {
        return Err(Error::format(
            path,
            "length",
            format!("header declares {len} bytes, the file has {}", bytes.len()),
        ));
    }
    let jlen = bytes
        .get(12..16)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    if jlen > bytes.len() - 20 {
        return Err(Error::format(
            path,
            "JSON chunk length",
            format!("{jlen} bytes declared, {} remain", bytes.len() - 20),
        ));
    }
    let glb = ::gltf::binary::Glb::from_slice(bytes)
        .map_err(|e| Error::format(path, "chunks", e.to_string()))?;
    let root: Value = serde_json::from_slice(&glb.json)
        .map_err(|e| Error::format(path, "JSON chunk", format!("not valid JSON: {e}")))?;
    if !root.is_object() {
        return Err(Error::format(path, "JSON chunk", "is not a JSON object"));
    }
    // `Glb::from_slice` borrows from `bytes`.
    let bin: &'a [u8] = match glb.bin {
        Some(std::borrow::Cow::Borrowed(b)) => b,
        _ => &[],
    };
    Ok((root, bin))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds the splat primitive; returns (mesh, primitive index, primitive).
fn splat_primitive<'v>(root: &'v Value, path: &Path) -> Result<(usize, usize, &'v Value)> {
    let meshes = root
        .get("meshes")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::format(path, "meshes", "missing: no mesh holds splats"))?;
    let mut found = None;
    for (m, mesh) in meshes.iter().enumerate() {
        let prims = mesh.get("primitives").and_then(Value::as_array);
        for (p, prim) in prims.into_iter().flatten().enumerate() {
            if prim
                .get("extensions")
                .and_then(|e| e.get(EXTENSION))
                .is_some()
            {
                if found.is_some() {
                    return Err(Error::format(
                        path,
                        format!("meshes[{m}].primitives[{p}]"),
                        "a second KHR_gaussian_splatting primitive: only files with one are read",
                    ));
                }
                found = Some((m, p, prim));
            }
        }
    }
    found.ok_or_else(|| {
        Error::format(
            path,
            "meshes",
            "no primitive has the KHR_gaussian_splatting extension",
        )
    })
}

/// A checked view of one accessor's bytes.
struct AccessorData<'a> {
    bytes: &'a [u8],
    stride: usize,
    count: usize,
    comps: usize,
    component: u64,
    normalized: bool,
}

fn comp_size(c: u64) -> Option<usize> {
    match c {
        BYTE | UNSIGNED_BYTE => Some(1),
        SHORT | UNSIGNED_SHORT => Some(2),
        FLOAT => Some(4),
        _ => None,
    }
}

fn type_comps(t: &str) -> Option<usize> {
    match t {
        "SCALAR" => Some(1),
        "VEC2" => Some(2),
        "VEC3" => Some(3),
        "VEC4" => Some(4),
        _ => None,
    }
}

fn uint(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn accessor<'a>(
    root: &Value,
    bin: &'a [u8],
    index: &Value,
    name: &str,
    path: &Path,
) -> Result<AccessorData<'a>> {
    let field = format!("accessor of {name}");
    let bad = |why: String| Error::format(path, &field, why);
    let ai = index
        .as_u64()
        .ok_or_else(|| bad("the attribute's accessor index is not an integer".into()))?;
    let acc = root
        .get("accessors")
        .and_then(Value::as_array)
        .and_then(|a| a.get(ai as usize))
        .ok_or_else(|| bad(format!("accessor {ai} does not exist")))?;
    if acc.get("sparse").is_some() {
        return Err(bad(format!("accessor {ai} is sparse, which is not read")));
    }
    let component = uint(acc, "componentType")
        .ok_or_else(|| bad(format!("accessor {ai} has no componentType")))?;
    let csize = comp_size(component).ok_or_else(|| {
        bad(format!(
            "accessor {ai}: componentType {component} is not read"
        ))
    })?;
    let ty = acc.get("type").and_then(Value::as_str).unwrap_or("");
    let comps =
        type_comps(ty).ok_or_else(|| bad(format!("accessor {ai}: type {ty:?} is not read")))?;
    let count = uint(acc, "count").ok_or_else(|| bad(format!("accessor {ai} has no count")))?;
    let normalized = acc
        .get("normalized")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let vi = uint(acc, "bufferView").ok_or_else(|| {
        bad(format!(
            "accessor {ai} has no bufferView (all-zero data is not read)"
        ))
    })?;
    let view = root
        .get("bufferViews")
        .and_then(Value::as_array)
        .and_then(|a| a.get(vi as usize))
        .ok_or_else(|| bad(format!("accessor {ai}: bufferView {vi} does not exist")))?;
    if view.get("extensions").is_some() {
        return Err(bad(format!(
            "bufferView {vi} has extensions (compressed buffers such as EXT_meshopt_compression are not read)"
        )));
    }
    let buffer = uint(view, "buffer").unwrap_or(u64::MAX);
    if buffer != 0 {
        return Err(bad(format!(
            "bufferView {vi} uses buffer {buffer}; only the GLB's BIN chunk (buffer 0) is read"
        )));
    }
    let v_off = uint(view, "byteOffset").unwrap_or(0);
    let v_len = uint(view, "byteLength")
        .ok_or_else(|| bad(format!("bufferView {vi} has no byteLength")))?;
    let v_end = v_off
        .checked_add(v_len)
        .filter(|&e| e <= bin.len() as u64)
        .ok_or_else(|| {
            bad(format!(
                "bufferView {vi} ({v_off} + {v_len} bytes) lies outside the {}-byte BIN chunk",
                bin.len()
            ))
        })?;
    let elem = (csize * comps) as u64;
    let stride = match uint(view, "byteStride") {
        None => elem,
        Some(s) if s >= elem && s <= 252 && s % 4 == 0 => s,
        Some(s) => {
            return Err(bad(format!(
                "bufferView {vi}: byteStride {s} is invalid for {elem}-byte elements"
            )));
        }
    };
    let a_off = uint(acc, "byteOffset").unwrap_or(0);
    if count == 0 {
        return Err(bad(format!("accessor {ai} has count 0")));
    }
    let need = stride
        .checked_mul(count - 1)
        .and_then(|x| x.checked_add(elem))
        .and_then(|x| x.checked_add(a_off));
    match need {
        Some(need) if need <= v_len => {}
        _ => {
            return Err(bad(format!(
                "accessor {ai} ({count} × {stride} bytes from offset {a_off}) runs past its {v_len}-byte bufferView {vi}"
            )));
        }
    }
    let start = (v_off + a_off) as usize;
    let bytes = bin.get(start..v_end as usize).unwrap_or(&[]);
    Ok(AccessorData {
        bytes,
        stride: stride as usize,
        count: count as usize,
        comps,
        component,
        normalized,
    })
}

impl AccessorData<'_> {
    /// Element `i`, component `c`, as f32 (normalised integers mapped per
    /// the glTF spec).
    fn get(&self, i: usize, c: usize) -> f32 {
        let o = i * self.stride;
        let b = |k: usize| self.bytes.get(o + k).copied().unwrap_or(0);
        match self.component {
            FLOAT => f32::from_le_bytes([b(4 * c), b(4 * c + 1), b(4 * c + 2), b(4 * c + 3)]),
            UNSIGNED_BYTE => {
                let v = f32::from(b(c));
                if self.normalized { v / 255.0 } else { v }
            }
            BYTE => {
                let v = f32::from(b(c) as i8);
                if self.normalized {
                    (v / 127.0).max(-1.0)
                } else {
                    v
                }
            }
            UNSIGNED_SHORT => {
                let v = f32::from(u16::from_le_bytes([b(2 * c), b(2 * c + 1)]));
                if self.normalized { v / 65535.0 } else { v }
            }
            _ => {
                let v = f32::from(i16::from_le_bytes([b(2 * c), b(2 * c + 1)]));
                if self.normalized {
                    (v / 32767.0).max(-1.0)
                } else {
                    v
                }
            }
        }
    }

    fn check(
        &self,
        name: &str,
        path: &Path,
        comps: usize,
        allowed: &[(u64, bool)],
        count: Option<usize>,
    ) -> Result<()> {
        let field = format!("accessor of {name}");
        if self.comps != comps {
            return Err(Error::format(
                path,
                field,
                format!("has {} components, the draft says {comps}", self.comps),
            ));
        }
        let ok = allowed
            .iter()
            .any(|&(c, norm)| c == self.component && (norm == self.normalized || c == FLOAT));
        if !ok {
            return Err(Error::format(
                path,
                field,
                format!(
                    "componentType {}{} is not one the draft allows here",
                    self.component,
                    if self.normalized { " (normalized)" } else { "" }
                ),
            ));
        }
        if let Some(n) = count
            && n != self.count
        {
            return Err(Error::format(
                path,
                field,
                format!("has {} elements, POSITION has {n}", self.count),
            ));
        }
        Ok(())
    }
}

/// Decodes `.glb` bytes into a [`Scene`] (PLY convention); `path` only
/// names the source in error messages.
pub fn read_glb_bytes(bytes: &[u8], path: &Path) -> Result<Scene> {
    let (root, bin) = open(bytes, path)?;
    let required = strings(root.get("extensionsRequired"));
    if let Some(other) = required.iter().find(|e| e.as_str() != EXTENSION) {
        return Err(Error::format(
            path,
            "extensionsRequired",
            format!("{other} is required and not supported"),
        ));
    }
    if let Some(buffers) = root.get("buffers").and_then(Value::as_array) {
        for (i, b) in buffers.iter().enumerate() {
            if b.get("uri").is_some() {
                return Err(Error::format(
                    path,
                    format!("buffers[{i}]"),
                    "an external or embedded-URI buffer; only the GLB's BIN chunk is read",
                ));
            }
        }
    }
    let (m, p, prim) = splat_primitive(&root, path)?;
    let here = format!("meshes[{m}].primitives[{p}]");
    if let Some(nodes) = root.get("nodes").and_then(Value::as_array) {
        for (i, node) in nodes.iter().enumerate() {
            if ["matrix", "translation", "rotation", "scale"]
                .iter()
                .any(|k| node.get(*k).is_some())
            {
                return Err(Error::format(
                    path,
                    format!("nodes[{i}]"),
                    "has a transform, which this reader does not apply",
                ));
            }
        }
    }
    let mode = prim.get("mode").and_then(Value::as_u64).unwrap_or(4);
    if mode != POINTS {
        return Err(Error::format(
            path,
            format!("{here}.mode"),
            format!("{mode}, the draft requires 0 (POINTS)"),
        ));
    }
    let attrs = prim
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::format(path, format!("{here}.attributes"), "missing"))?;
    let attr_name = |s: &str| format!("{EXTENSION}:{s}");
    let get_acc = |name: &str| -> Result<Option<AccessorData<'_>>> {
        match attrs.get(name) {
            None => Ok(None),
            Some(ix) => accessor(&root, bin, ix, name, path).map(Some),
        }
    };
    let need = |name: &str| -> Result<AccessorData<'_>> {
        get_acc(name)?.ok_or_else(|| Error::format(path, name, "required attribute is missing"))
    };

    let pos = need("POSITION")?;
    pos.check("POSITION", path, 3, &[(FLOAT, false)], None)?;
    let n = pos.count;
    let rot_name = attr_name("ROTATION");
    let rot = need(&rot_name)?;
    rot.check(
        &rot_name,
        path,
        4,
        &[(FLOAT, false), (BYTE, true), (SHORT, true)],
        Some(n),
    )?;
    let scale_name = attr_name("SCALE");
    let scale = need(&scale_name)?;
    scale.check(
        &scale_name,
        path,
        3,
        &[
            (FLOAT, false),
            (BYTE, false),
            (BYTE, true),
            (SHORT, false),
            (SHORT, true),
        ],
        Some(n),
    )?;
    let op_name = attr_name("OPACITY");
    let op = need(&op_name)?;
    op.check(
        &op_name,
        path,
        1,
        &[
            (FLOAT, false),
            (UNSIGNED_BYTE, true),
            (UNSIGNED_SHORT, true),
        ],
        Some(n),
    )?;

    let mut positions = Vec::with_capacity(n);
    for i in 0..n {
        let v = [0, 1, 2].map(|c| pos.get(i, c));
        if !v.iter().all(|x| x.is_finite()) {
            return Err(Error::format(
                path,
                "POSITION",
                format!("element {i}: {v:?} is not finite"),
            ));
        }
        positions.push([-v[0], -v[1], v[2]]);
    }
    let rotations: Vec<[f32; 4]> = (0..n)
        .map(|i| quat_from_gltf([0, 1, 2, 3].map(|c| rot.get(i, c))))
        .collect();
    let mut scales = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = [0f32; 3];
        for (c, slot) in s.iter_mut().enumerate() {
            let v = scale.get(i, c);
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::format(
                    path,
                    &scale_name,
                    format!("element {i}: {v} must be finite and > 0 (a linear scale)"),
                ));
            }
            *slot = f64::from(v).ln() as f32;
        }
        scales.push(s);
    }
    let mut opacity = Vec::with_capacity(n);
    for i in 0..n {
        let a = op.get(i, 0);
        if !(0.0..=1.0).contains(&a) {
            return Err(Error::format(
                path,
                &op_name,
                format!("element {i}: {a} is outside [0, 1]"),
            ));
        }
        let a = f64::from(a).clamp(ALPHA_MIN, ALPHA_MAX);
        opacity.push((a / (1.0 - a)).ln() as f32);
    }

    let dc_name = attr_name("SH_DEGREE_0_COEF_0");
    let dc: Vec<[f32; 3]> = match get_acc(&dc_name)? {
        Some(a) => {
            a.check(&dc_name, path, 3, &[(FLOAT, false)], Some(n))?;
            (0..n).map(|i| [0, 1, 2].map(|c| a.get(i, c))).collect()
        }
        None => {
            let a = get_acc("COLOR_0")?.ok_or_else(|| {
                Error::format(
                    path,
                    &dc_name,
                    "missing, and no COLOR_0 to take the colour from",
                )
            })?;
            if a.comps != 3 && a.comps != 4 {
                return Err(Error::format(
                    path,
                    "accessor of COLOR_0",
                    "must be VEC3 or VEC4",
                ));
            }
            a.check(
                "COLOR_0",
                path,
                a.comps,
                &[
                    (FLOAT, false),
                    (UNSIGNED_BYTE, true),
                    (UNSIGNED_SHORT, true),
                ],
                Some(n),
            )?;
            (0..n)
                .map(|i| [0, 1, 2].map(|c| (a.get(i, c) - 0.5) / SH_C0))
                .collect()
        }
    };
    for (i, c) in dc.iter().enumerate() {
        if !c.iter().all(|v| v.is_finite()) {
            return Err(Error::format(
                path,
                &dc_name,
                format!("element {i}: {c:?} is not finite"),
            ));
        }
    }

    // SH degrees 1..=3: a degree counts when all its coefficients are there.
    let mut sh_degree = 0u8;
    let mut coefs: Vec<Vec<AccessorData<'_>>> = Vec::new();
    for l in 1..=3u8 {
        let names: Vec<String> = (0..(2 * l as usize + 1))
            .map(|c| attr_name(&format!("SH_DEGREE_{l}_COEF_{c}")))
            .collect();
        let present: Vec<bool> = names.iter().map(|s| attrs.contains_key(s)).collect();
        if present.iter().all(|p| !p) {
            break;
        }
        if let Some(missing) = names.iter().zip(&present).find(|(_, p)| !**p) {
            return Err(Error::format(
                path,
                missing.0.as_str(),
                format!("missing: degree {l} is partly defined, which the draft forbids"),
            ));
        }
        let mut v = Vec::new();
        for name in &names {
            let a = need(name)?;
            a.check(name, path, 3, &[(FLOAT, false)], Some(n))?;
            v.push(a);
        }
        coefs.push(v);
        sh_degree = l;
    }
    for l in (sh_degree + 1)..=3 {
        let name = attr_name(&format!("SH_DEGREE_{l}_COEF_0"));
        if attrs.contains_key(&name) {
            return Err(Error::format(
                path,
                name,
                format!("present, but degree {} is missing", sh_degree + 1),
            ));
        }
    }
    let k = rest_per_channel(sh_degree);
    let d = 3 * k;
    let mut sh_rest = vec![0f32; n * d];
    for (li, accs) in coefs.iter().enumerate() {
        let l = li as u8 + 1;
        for (c, a) in accs.iter().enumerate() {
            let j = (l as usize * l as usize - 1) + c;
            let sign = sh_sign(l, c);
            for i in 0..n {
                for ch in 0..3 {
                    let v = a.get(i, ch);
                    if let Some(slot) = sh_rest.get_mut(i * d + ch * k + j) {
                        *slot = v * sign;
                    }
                }
            }
        }
    }
    if let Some(i) = sh_rest.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            "spherical harmonics",
            format!("Gaussian {}: a coefficient is not finite", i / d.max(1)),
        ));
    }

    let scene = Scene {
        sh_degree,
        positions,
        normals: None,
        dc,
        sh_rest,
        opacity,
        scales,
        rotations,
        ..Scene::default()
    };
    scene
        .check_consistent()
        .map_err(|e| Error::format(path, "scene", e))?;
    Ok(scene)
}

/// Header facts for `tq3d info`: GLB version and length, generator,
/// extensions, splat count, SH degree, the extension's properties and each
/// attribute's accessor type.
pub fn describe_glb(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let (root, bin) = open(bytes, path)?;
    let mut out = vec![
        ("format".to_string(), "glTF 2.0 binary (.glb)".to_string()),
        ("version".to_string(), "2".to_string()),
        ("length".to_string(), format!("{} bytes", bytes.len())),
        ("bin chunk".to_string(), format!("{} bytes", bin.len())),
    ];
    if let Some(g) = root
        .get("asset")
        .and_then(|a| a.get("generator"))
        .and_then(Value::as_str)
    {
        out.push(("generator".to_string(), g.chars().take(200).collect()));
    }
    out.push((
        "extensionsUsed".to_string(),
        strings(root.get("extensionsUsed")).join(", "),
    ));
    let req = strings(root.get("extensionsRequired"));
    if !req.is_empty() {
        out.push(("extensionsRequired".to_string(), req.join(", ")));
    }
    let (_, _, prim) = splat_primitive(&root, path)?;
    if let Some(ext) = prim
        .get("extensions")
        .and_then(|e| e.get(EXTENSION))
        .and_then(Value::as_object)
    {
        for key in ["kernel", "colorSpace", "sortingMethod", "projection"] {
            if let Some(v) = ext.get(key).and_then(Value::as_str) {
                out.push((key.to_string(), v.to_string()));
            }
        }
    }
    let accessors = root.get("accessors").and_then(Value::as_array);
    let acc = |ix: &Value| {
        ix.as_u64()
            .and_then(|i| accessors.and_then(|a| a.get(i as usize)))
    };
    if let Some(attrs) = prim.get("attributes").and_then(Value::as_object) {
        if let Some(a) = attrs.get("POSITION").and_then(acc) {
            out.push((
                "count".to_string(),
                uint(a, "count").unwrap_or(0).to_string(),
            ));
        }
        let degree = (1..=3u8)
            .take_while(|l| attrs.contains_key(&format!("{EXTENSION}:SH_DEGREE_{l}_COEF_0")))
            .last()
            .unwrap_or(0);
        out.push(("sh degree".to_string(), degree.to_string()));
        out.push(("attributes".to_string(), attrs.len().to_string()));
        for (name, ix) in attrs {
            let what = match acc(ix) {
                Some(a) => format!(
                    "{} {}{}",
                    a.get("type").and_then(Value::as_str).unwrap_or("?"),
                    match uint(a, "componentType") {
                        Some(FLOAT) => "f32",
                        Some(BYTE) => "i8",
                        Some(UNSIGNED_BYTE) => "u8",
                        Some(SHORT) => "i16",
                        Some(UNSIGNED_SHORT) => "u16",
                        _ => "?",
                    },
                    if a.get("normalized").and_then(Value::as_bool) == Some(true) {
                        " normalized"
                    } else {
                        ""
                    }
                ),
                None => "missing accessor".to_string(),
            };
            out.push((format!("attribute {name}"), what));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_turn_is_inverted_exactly() {
        let q = [0.8875, -0.3854, -0.2523, 0.0083f32];
        assert_eq!(quat_from_gltf(quat_to_gltf(q)), q);
        // splat-transform 2.7.1 on the same quaternion (read from its .glb).
        assert_eq!(quat_to_gltf(q), [0.2523, -0.3854, 0.8875, -0.0083]);
    }

    #[test]
    fn sh_signs() {
        // degree 1: (-y, z, -x) basis; y and x flip under the turn.
        assert_eq!([0, 1, 2].map(|n| sh_sign(1, n)), [-1.0, 1.0, -1.0]);
        assert_eq!(
            [0, 1, 2, 3, 4].map(|n| sh_sign(2, n)),
            [1.0, -1.0, 1.0, -1.0, 1.0]
        );
    }

    #[test]
    fn extension() {
        assert!(is_glb_path(Path::new("x/a.GLB")));
        assert!(!is_glb_path(Path::new("x/a.gltf")));
    }
}

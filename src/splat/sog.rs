//! PlayCanvas SOG ("Splat Optimized Graphics"), read only: a `meta.json`
//! and lossless WebP textures, either bundled in a zip (`.sog`) or unpacked
//! in a folder. Version 2 (`"version": 2`), which splat-transform 2.x writes
//! and `skull.sog` uses; the legacy version 1 (no `version` field) is
//! refused with a message saying so.
//!
//! Every per-Gaussian texture holds Gaussian `i` at pixel `i` (row-major,
//! RGBA8); only the first `count` pixels are read.
//!
//! | texture (meta key)          | pixel                | decodes to                                                       |
//! |-----------------------------|----------------------|------------------------------------------------------------------|
//! | `means.files[0]`, `[1]`     | RGB low / high bytes | `u = lo + 256·hi`; `v = min + (max − min)·u/65535`; `x = sign(v)·(e^{|v|} − 1)` |
//! | `quats.files[0]`            | R G B A              | A = 252 + index of the largest component (w x y z); RGB = the other three, `(b/255·2 − 1)/√2`; the largest is `√(1 − Σ)` |
//! | `scales.files[0]`           | R G B                | log scale = `scales.codebook[b]` (256 entries)                   |
//! | `sh0.files[0]`              | R G B A              | f_dc = `sh0.codebook[b]`; opacity = logit(A/255), A/255 clamped to [1e−6, 1 − 1e−6] |
//! | `shN.files[1]` (labels)     | R G                  | palette index `R + 256·G` < `shN.count`                          |
//! | `shN.files[0]` (centroids)  | 64·k × ⌈count/64⌉    | entry `e`, coefficient `j` (k = 3, 8, 15 for `bands` 1..3) at pixel (`(e mod 64)·k + j`, `⌊e/64⌋`); RGB = channel bytes → `shN.codebook[b]` |
//!
//! A quaternion tag outside 252..=255 decodes to the identity, as the peer
//! does. Positions and the opacity logit are computed in f64 and rounded to
//! f32, as splat-transform does, so the two decoders agree to f32 rounding.
//!
//! Bounds: `meta.json` ≤ [`MAX_META_BYTES`]; a texture ≤ [`max_texture_pixels`]
//! of the count (and at least `count` pixels); a zip entry's declared size
//! and every read are capped by the texture bound; texture names are plain
//! file names (no folders, no `..`).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::scene::{Scene, rest_per_channel};
use crate::{Error, Result};

/// The format's own precision per attribute (what a writer can keep), used
/// by the round-trip tests as tolerances. SOG writers truncate rather than
/// round, so the bounds are one full step.
///
/// | attribute | stored as | bound on the decoded value |
/// |---|---|---|
/// | position | 16 bits of `sign(x)·ln(1+|x|)` over [min, max] | `|Δx| ≤ (1+|x|)·(e^{s} − 1)`, `s = (max−min)/65535` |
/// | log scale | 8-bit index into a 256-entry codebook | the codebook's largest gap |
/// | f_dc | 8-bit index into a 256-entry codebook | the codebook's largest gap |
/// | opacity | 8 bits of sigmoid | `|Δ sigmoid| ≤ 1/255` |
/// | rotation | smallest three, 8 bits each | `|Δq_k| ≤ √2/255` per component (up to sign) |
/// | SH rest | k-means palette (≤ 65,536 entries) of 256-codebook bytes | none per value (lossy clustering) |
pub const SOG_PRECISION: &[(&str, &str)] = &[
    (
        "position",
        "16-bit log-space step: (1+|x|)(e^s-1), s=(max-min)/65535",
    ),
    ("scale", "codebook gap (256 entries, log space)"),
    ("dc", "codebook gap (256 entries)"),
    ("opacity", "1/255 in sigmoid space"),
    ("rotation", "sqrt(2)/255 per component"),
    ("sh_rest", "lossy palette; no per-value bound"),
];

/// Largest `meta.json` read (a real one is ~15 KB: three 256-entry codebooks).
pub const MAX_META_BYTES: u64 = 4 << 20;

/// The most Gaussians a SOG may declare per stored byte (zip length, or the
/// folder's files), beyond the first 65,536: 500× what real files hold.
pub const MAX_GAUSSIANS_PER_BYTE: u64 = 16;

/// Largest palette: labels are 16 bits.
pub const MAX_PALETTE: u64 = 1 << 16;

/// The most pixels a per-Gaussian texture may have for `count` Gaussians:
/// splat-transform writes about `count + 4·√count + 16`; anything beyond
/// `4·count + 2^20` is refused before it is decoded.
pub fn max_texture_pixels(count: u64) -> u64 {
    count.saturating_mul(4).saturating_add(1 << 20)
}

/// Bytes a lossless WebP of `pixels` pixels may take, compressed: twice the
/// raw RGBA size, plus headers.
fn max_webp_bytes(pixels: u64) -> u64 {
    pixels.saturating_mul(8).saturating_add(4096)
}

/// Whether `path` is a SOG: extension `.sog`, or a file named `meta.json`
/// (case-insensitive). A folder holding `meta.json` is also read by
/// [`read_sog`], but is not told by its name.
pub fn is_sog_path(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("sog"));
    let meta = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.eq_ignore_ascii_case("meta.json"));
    ext || meta
}

/// Reads a SOG in any of its forms: a `.sog` zip, a `meta.json` beside its
/// textures, or a folder holding `meta.json`. A zip has no header giving
/// its length, so it is read only from a regular file.
pub fn read_sog(path: &Path) -> Result<Scene> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return read_sog_folder(&path.join("meta.json"));
    }
    let is_meta = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.eq_ignore_ascii_case("meta.json"));
    if is_meta {
        return read_sog_folder(path);
    }
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "file",
            "a .sog zip has no header giving its length, so it must be a regular file",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_sog_bytes(&bytes, path)
}

/// Decodes a bundled `.sog` (zip bytes); `path` only names the source in
/// error messages.
pub fn read_sog_bytes(bytes: &[u8], path: &Path) -> Result<Scene> {
    let mut src = ZipSource::new(bytes, path)?;
    decode(&mut src, path)
}

/// Reads the unpacked form: `meta_path` is the `meta.json`, its textures
/// lie beside it.
pub fn read_sog_folder(meta_path: &Path) -> Result<Scene> {
    let mut src = FolderSource {
        dir: meta_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        meta: meta_path.to_path_buf(),
    };
    decode(&mut src, meta_path)
}

/// Header facts for `tq3d info`: version, count, SH bands, palette size,
/// codebook sizes, texture sizes. `bytes` is either the `.sog` zip or a
/// `meta.json` (whose textures are then looked for beside `path`).
pub fn describe_sog(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let mut src: Box<dyn Source + '_> = if bytes.starts_with(b"PK") {
        Box::new(ZipSource::new(bytes, path)?)
    } else {
        Box::new(BytesMetaSource {
            meta: bytes,
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    };
    let meta_bytes = src.meta()?;
    let meta = Meta::parse(&meta_bytes, path)?;
    let mut out = vec![
        ("format".to_string(), "PlayCanvas SOG".to_string()),
        (
            "container".to_string(),
            if bytes.starts_with(b"PK") {
                "zip (.sog)".to_string()
            } else {
                "meta.json + WebP files".to_string()
            },
        ),
        ("version".to_string(), "2".to_string()),
        ("count".to_string(), meta.count.to_string()),
        ("sh degree".to_string(), meta.bands().to_string()),
    ];
    if let Some(g) = &meta.generator {
        out.push(("generator".to_string(), g.clone()));
    }
    out.push((
        "codebooks".to_string(),
        format!(
            "scales {}, sh0 {}{}",
            meta.scales_codebook.len(),
            meta.sh0_codebook.len(),
            meta.sh_n
                .as_ref()
                .map(|s| format!(", shN {}", s.codebook.len()))
                .unwrap_or_default()
        ),
    ));
    if let Some(s) = &meta.sh_n {
        out.push(("palette".to_string(), format!("{} entries", s.count)));
    }
    for name in meta.files() {
        // Texture sizes are best effort: a missing file is reported as such.
        let what = match src.load(&name, max_webp_bytes(MAX_TEXTURE_DESCRIBE)) {
            Ok(b) => match image_webp::WebPDecoder::new(Cursor::new(&b[..])) {
                Ok(d) => {
                    let (w, h) = d.dimensions();
                    format!("{w}×{h}, {} bytes", b.len())
                }
                Err(e) => format!("not a WebP ({e})"),
            },
            Err(e) => format!("unreadable ({e})"),
        };
        out.push((format!("texture {name}"), what));
    }
    Ok(out)
}

/// Largest texture `describe_sog` opens (its header only).
const MAX_TEXTURE_DESCRIBE: u64 = 1 << 28;

// ---------------------------------------------------------------------------
// Where the files come from.

trait Source {
    /// The bytes of `meta.json`, at most [`MAX_META_BYTES`].
    fn meta(&mut self) -> Result<Vec<u8>>;
    /// The bytes of the file `name`, at most `cap` bytes.
    fn load(&mut self, name: &str, cap: u64) -> Result<Vec<u8>>;
    /// The stored (compressed) size of the whole SOG: the zip's length, or
    /// the sum of the folder's files named in `names` (missing ones count 0).
    fn stored_len(&self, names: &[String]) -> u64;
}

struct ZipSource<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    path: PathBuf,
    len: u64,
}

impl<'a> ZipSource<'a> {
    fn new(bytes: &'a [u8], path: &Path) -> Result<Self> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| Error::format(path, "zip", format!("not a readable zip: {e}")))?;
        Ok(ZipSource {
            zip,
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        })
    }
}

impl Source for ZipSource<'_> {
    fn meta(&mut self) -> Result<Vec<u8>> {
        self.load("meta.json", MAX_META_BYTES)
    }

    fn stored_len(&self, _names: &[String]) -> u64 {
        self.len
    }

    fn load(&mut self, name: &str, cap: u64) -> Result<Vec<u8>> {
        let field = format!("zip entry {name}");
        let mut entry = match self.zip.by_name(name) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(Error::format(&self.path, field, "missing from the zip"));
            }
            Err(e) => return Err(Error::format(&self.path, field, e.to_string())),
        };
        let declared = entry.size();
        if declared > cap {
            return Err(Error::format(
                &self.path,
                field,
                format!("declares {declared} bytes uncompressed, more than the {cap} allowed"),
            ));
        }
        let mut buf = Vec::new();
        (&mut entry)
            .take(cap.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::format(&self.path, &field, format!("cannot inflate: {e}")))?;
        if buf.len() as u64 != declared {
            return Err(Error::format(
                &self.path,
                field,
                format!("inflates to {} bytes, but declares {declared}", buf.len()),
            ));
        }
        Ok(buf)
    }
}

struct FolderSource {
    dir: PathBuf,
    meta: PathBuf,
}

fn read_capped_file(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let io = |e| Error::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let md = file.metadata().map_err(io)?;
    if !md.is_file() {
        return Err(Error::format(path, what, "is not a regular file"));
    }
    if md.len() > cap {
        return Err(Error::format(
            path,
            what,
            format!("{} bytes, more than the {cap} allowed", md.len()),
        ));
    }
    let mut buf = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > cap {
        return Err(Error::format(path, what, format!("more than {cap} bytes")));
    }
    Ok(buf)
}

impl Source for FolderSource {
    fn meta(&mut self) -> Result<Vec<u8>> {
        read_capped_file(&self.meta, MAX_META_BYTES, "meta.json")
    }

    fn load(&mut self, name: &str, cap: u64) -> Result<Vec<u8>> {
        read_capped_file(&self.dir.join(name), cap, "texture")
    }

    fn stored_len(&self, names: &[String]) -> u64 {
        folder_len(&self.dir, names)
    }
}

fn folder_len(dir: &Path, names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .fold(0u64, u64::saturating_add)
}

struct BytesMetaSource<'a> {
    meta: &'a [u8],
    dir: PathBuf,
}

impl Source for BytesMetaSource<'_> {
    fn meta(&mut self) -> Result<Vec<u8>> {
        Ok(self.meta.to_vec())
    }

    fn load(&mut self, name: &str, cap: u64) -> Result<Vec<u8>> {
        read_capped_file(&self.dir.join(name), cap, "texture")
    }

    fn stored_len(&self, names: &[String]) -> u64 {
        folder_len(&self.dir, names)
    }
}

// ---------------------------------------------------------------------------
// meta.json

struct ShN {
    count: u64,
    bands: u8,
    codebook: Vec<f32>,
    centroids: String,
    labels: String,
}

struct Meta {
    count: u64,
    generator: Option<String>,
    means_min: [f64; 3],
    means_max: [f64; 3],
    means_files: [String; 2],
    scales_codebook: Vec<f32>,
    scales_file: String,
    quats_file: String,
    sh0_codebook: Vec<f32>,
    sh0_file: String,
    sh_n: Option<ShN>,
}

fn get<'v>(v: &'v Value, key: &str, field: &str, path: &Path) -> Result<&'v Value> {
    v.get(key)
        .ok_or_else(|| Error::format(path, field, "missing"))
}

fn obj<'v>(v: &'v Value, key: &str, path: &Path) -> Result<&'v Value> {
    let o = get(v, key, key, path)?;
    if !o.is_object() {
        return Err(Error::format(path, key, "is not a JSON object"));
    }
    Ok(o)
}

fn floats(v: &Value, field: &str, path: &Path, min_len: usize, max_len: usize) -> Result<Vec<f64>> {
    let arr = v
        .as_array()
        .ok_or_else(|| Error::format(path, field, "is not an array of numbers"))?;
    if arr.len() < min_len || arr.len() > max_len {
        let want = if min_len == max_len {
            format!("{min_len}")
        } else {
            format!("{min_len}..={max_len}")
        };
        return Err(Error::format(
            path,
            field,
            format!("has {} entries, expected {want}", arr.len()),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                Error::format(path, format!("{field}[{i}]"), "is not a finite number")
            })
        })
        .collect()
}

fn codebook(v: &Value, field: &str, path: &Path) -> Result<Vec<f32>> {
    let f = floats(v, field, path, 1, 256)?;
    f.iter()
        .enumerate()
        .map(|(i, &x)| {
            let y = x as f32;
            if y.is_finite() {
                Ok(y)
            } else {
                Err(Error::format(
                    path,
                    format!("{field}[{i}]"),
                    "overflows f32",
                ))
            }
        })
        .collect()
}

fn file_name(v: &Value, field: &str, path: &Path) -> Result<String> {
    let s = v
        .as_str()
        .ok_or_else(|| Error::format(path, field, "is not a string"))?;
    let plain = !s.is_empty()
        && s != "."
        && s != ".."
        && !s.contains(['/', '\\', ':', '\0'])
        && s.len() <= 255;
    if !plain {
        return Err(Error::format(
            path,
            field,
            format!("{s:?} is not a plain file name"),
        ));
    }
    Ok(s.to_string())
}

fn files(v: &Value, key: &str, n: usize, path: &Path) -> Result<Vec<String>> {
    let field = format!("{key}.files");
    let arr = get(v, "files", &field, path)?
        .as_array()
        .ok_or_else(|| Error::format(path, &field, "is not an array"))?;
    if arr.len() != n {
        return Err(Error::format(
            path,
            &field,
            format!("has {} names, expected {n}", arr.len()),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, x)| file_name(x, &format!("{field}[{i}]"), path))
        .collect()
}

fn three(v: &[f64]) -> [f64; 3] {
    [0, 1, 2].map(|k| v.get(k).copied().unwrap_or(0.0))
}

impl Meta {
    fn parse(bytes: &[u8], path: &Path) -> Result<Meta> {
        let root: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::format(path, "meta.json", format!("not valid JSON: {e}")))?;
        if !root.is_object() {
            return Err(Error::format(path, "meta.json", "is not a JSON object"));
        }
        match root.get("version") {
            None => {
                return Err(Error::format(
                    path,
                    "version",
                    "missing: this is legacy SOG version 1, which is not read (convert it with splat-transform)",
                ));
            }
            Some(v) if v.as_u64() == Some(2) => {}
            Some(v) => {
                return Err(Error::format(
                    path,
                    "version",
                    format!("{v} is not supported (only version 2 is read)"),
                ));
            }
        }
        let count = get(&root, "count", "count", path)?
            .as_u64()
            .ok_or_else(|| Error::format(path, "count", "is not a non-negative integer"))?;
        if count == 0 {
            return Err(Error::format(path, "count", "no Gaussians (count is 0)"));
        }
        // Every texture holds at least `count` pixels of 1 byte or more, in
        // a WebP of at most 16384 × 16384.
        if count > 16384 * 16384 {
            return Err(Error::format(
                path,
                "count",
                format!("{count} exceeds what a WebP texture can hold (16384²)"),
            ));
        }
        let generator = root
            .get("asset")
            .and_then(|a| a.get("generator"))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(200).collect());

        let means = obj(&root, "means", path)?;
        let means_min = three(&floats(
            get(means, "mins", "means.mins", path)?,
            "means.mins",
            path,
            3,
            3,
        )?);
        let means_max = three(&floats(
            get(means, "maxs", "means.maxs", path)?,
            "means.maxs",
            path,
            3,
            3,
        )?);
        let mf = files(means, "means", 2, path)?;
        let means_files = [mf[0].clone(), mf[1].clone()];

        let scales = obj(&root, "scales", path)?;
        let scales_codebook = codebook(
            get(scales, "codebook", "scales.codebook", path)?,
            "scales.codebook",
            path,
        )?;
        let scales_file = files(scales, "scales", 1, path)?.remove(0);

        let quats = obj(&root, "quats", path)?;
        let quats_file = files(quats, "quats", 1, path)?.remove(0);

        let sh0 = obj(&root, "sh0", path)?;
        let sh0_codebook = codebook(
            get(sh0, "codebook", "sh0.codebook", path)?,
            "sh0.codebook",
            path,
        )?;
        let sh0_file = files(sh0, "sh0", 1, path)?.remove(0);

        let sh_n = match root.get("shN") {
            None | Some(Value::Null) => None,
            Some(s) => {
                if !s.is_object() {
                    return Err(Error::format(path, "shN", "is not a JSON object"));
                }
                let bands = get(s, "bands", "shN.bands", path)?
                    .as_u64()
                    .filter(|b| *b <= 3)
                    .ok_or_else(|| Error::format(path, "shN.bands", "must be 0, 1, 2 or 3"))?
                    as u8;
                let pcount = get(s, "count", "shN.count", path)?
                    .as_u64()
                    .ok_or_else(|| {
                        Error::format(path, "shN.count", "is not a non-negative integer")
                    })?;
                if bands > 0 && (pcount == 0 || pcount > MAX_PALETTE) {
                    return Err(Error::format(
                        path,
                        "shN.count",
                        format!(
                            "palette of {pcount} entries: must be 1..={MAX_PALETTE} (labels are 16 bits)"
                        ),
                    ));
                }
                if bands == 0 {
                    None
                } else {
                    let cb = codebook(
                        get(s, "codebook", "shN.codebook", path)?,
                        "shN.codebook",
                        path,
                    )?;
                    let mut f = files(s, "shN", 2, path)?;
                    let labels = f.remove(1);
                    let centroids = f.remove(0);
                    Some(ShN {
                        count: pcount,
                        bands,
                        codebook: cb,
                        centroids,
                        labels,
                    })
                }
            }
        };
        Ok(Meta {
            count,
            generator,
            means_min,
            means_max,
            means_files,
            scales_codebook,
            scales_file,
            quats_file,
            sh0_codebook,
            sh0_file,
            sh_n,
        })
    }

    fn bands(&self) -> u8 {
        self.sh_n.as_ref().map_or(0, |s| s.bands)
    }

    fn files(&self) -> Vec<String> {
        let mut v = vec![
            self.means_files[0].clone(),
            self.means_files[1].clone(),
            self.scales_file.clone(),
            self.quats_file.clone(),
            self.sh0_file.clone(),
        ];
        if let Some(s) = &self.sh_n {
            v.push(s.centroids.clone());
            v.push(s.labels.clone());
        }
        v
    }
}

// ---------------------------------------------------------------------------
// Textures

/// A decoded texture, always RGBA8.
struct Texture {
    width: u64,
    height: u64,
    rgba: Vec<u8>,
}

impl Texture {
    fn pixel(&self, i: u64) -> [u8; 4] {
        let o = (i as usize).saturating_mul(4);
        match self.rgba.get(o..o.saturating_add(4)) {
            Some(p) => [p[0], p[1], p[2], p[3]],
            None => [0; 4],
        }
    }
}

/// Loads and decodes the texture `name`, refusing it before decoding
/// unless its pixel count is within `min_pixels..=max_pixels` (and, when
/// `width` is given, its width is exactly that).
fn texture(
    src: &mut dyn Source,
    path: &Path,
    name: &str,
    min_pixels: u64,
    max_pixels: u64,
    width: Option<u64>,
) -> Result<Texture> {
    let field = format!("texture {name}");
    let bytes = src.load(name, max_webp_bytes(max_pixels))?;
    let bad = |why: String| Error::format(path, &field, why);
    let mut dec = image_webp::WebPDecoder::new(Cursor::new(&bytes[..]))
        .map_err(|e| bad(format!("not a valid WebP: {e}")))?;
    let (w, h) = dec.dimensions();
    let (w, h) = (u64::from(w), u64::from(h));
    let pixels = w.saturating_mul(h);
    if let Some(want) = width
        && w != want
    {
        return Err(bad(format!("is {w} wide, expected {want}")));
    }
    if pixels < min_pixels {
        return Err(bad(format!(
            "{w}×{h} = {pixels} pixels is too small for the {min_pixels} needed"
        )));
    }
    if pixels > max_pixels {
        return Err(bad(format!(
            "{w}×{h} = {pixels} pixels is more than the {max_pixels} allowed"
        )));
    }
    if dec.is_animated() {
        return Err(bad("is animated; SOG textures are still images".into()));
    }
    if dec.is_lossy() {
        return Err(bad("is lossy WebP; SOG textures must be lossless".into()));
    }
    let size = dec
        .output_buffer_size()
        .ok_or_else(|| bad("too large".into()))?;
    dec.set_memory_limit(size.saturating_mul(2).saturating_add(1 << 20));
    let mut buf = vec![0u8; size];
    dec.read_image(&mut buf)
        .map_err(|e| bad(format!("cannot decode WebP: {e}")))?;
    let rgba = if dec.has_alpha() {
        buf
    } else {
        let mut out = Vec::with_capacity(buf.len() / 3 * 4);
        for p in buf.chunks_exact(3) {
            out.extend_from_slice(&[p[0], p[1], p[2], 255]);
        }
        out
    };
    Ok(Texture {
        width: w,
        height: h,
        rgba,
    })
}

/// `x = sign(v)·(e^{|v|} − 1)`, the inverse of the writer's log transform.
fn inv_log(v: f64) -> f64 {
    let e = v.abs().exp() - 1.0;
    if v < 0.0 { -e } else { e }
}

/// Smallest-three quaternion → (w, x, y, z); an unknown tag → identity.
fn unpack_quat(p: [u8; 4]) -> [f32; 4] {
    let tag = p[3];
    if !(252..=255).contains(&tag) {
        return [1.0, 0.0, 0.0, 0.0];
    }
    let largest = (tag - 252) as usize;
    let others: [usize; 3] = match largest {
        0 => [1, 2, 3],
        1 => [0, 2, 3],
        2 => [0, 1, 3],
        _ => [0, 1, 2],
    };
    let mut q = [0f64; 4];
    let s2 = std::f64::consts::SQRT_2;
    for (k, &slot) in others.iter().enumerate() {
        q[slot] = (f64::from(p[k]) / 255.0 * 2.0 - 1.0) / s2;
    }
    let t = 1.0 - q.iter().map(|v| v * v).sum::<f64>();
    q[largest] = t.max(0.0).sqrt();
    q.map(|v| v as f32)
}

fn logit_alpha(a: u8) -> f32 {
    let e = (f64::from(a) / 255.0).clamp(1e-6, 1.0 - 1e-6);
    (e / (1.0 - e)).ln() as f32
}

fn lookup(cb: &[f32], b: u8, path: &Path, field: &str, i: u64) -> Result<f32> {
    cb.get(b as usize).copied().ok_or_else(|| {
        Error::format(
            path,
            field,
            format!(
                "Gaussian {i}: byte {b} indexes past the {}-entry codebook",
                cb.len()
            ),
        )
    })
}

fn decode(src: &mut dyn Source, path: &Path) -> Result<Scene> {
    let meta_bytes = src.meta()?;
    let meta = Meta::parse(&meta_bytes, path)?;
    let n = meta.count;
    // Lossless WebP can describe a huge flat image in a few bytes; a real
    // SOG stores far less than one Gaussian a byte (skull.sog: 0.03).
    let stored = src.stored_len(&meta.files());
    let most = stored
        .saturating_mul(MAX_GAUSSIANS_PER_BYTE)
        .saturating_add(1 << 16);
    if n > most {
        return Err(Error::format(
            path,
            "count",
            format!(
                "{n} Gaussians in {stored} stored bytes: more than {MAX_GAUSSIANS_PER_BYTE} a byte (+65,536), refused as a decompression bomb"
            ),
        ));
    }
    let nu = n as usize;
    let maxp = max_texture_pixels(n);

    // means
    let lo = texture(src, path, &meta.means_files[0], n, maxp, None)?;
    let hi = texture(src, path, &meta.means_files[1], n, maxp, None)?;
    let mut positions = Vec::with_capacity(nu);
    let span: [f64; 3] = [0, 1, 2].map(|k| {
        let d = meta.means_max[k] - meta.means_min[k];
        if d == 0.0 { 1.0 } else { d }
    });
    for i in 0..n {
        let (l, h) = (lo.pixel(i), hi.pixel(i));
        let p = [0, 1, 2].map(|k| {
            let u = f64::from(u16::from(l[k]) | (u16::from(h[k]) << 8));
            inv_log(meta.means_min[k] + span[k] * (u / 65535.0)) as f32
        });
        if !p.iter().all(|v| v.is_finite()) {
            return Err(Error::format(
                path,
                "means",
                format!("Gaussian {i}: position {p:?} is not finite (means.mins/maxs too large)"),
            ));
        }
        positions.push(p);
    }

    // quats
    let qt = texture(src, path, &meta.quats_file, n, maxp, None)?;
    let rotations: Vec<[f32; 4]> = (0..n).map(|i| unpack_quat(qt.pixel(i))).collect();

    // scales
    let st = texture(src, path, &meta.scales_file, n, maxp, None)?;
    let mut scales = Vec::with_capacity(nu);
    for i in 0..n {
        let p = st.pixel(i);
        let mut s = [0f32; 3];
        for k in 0..3 {
            s[k] = lookup(&meta.scales_codebook, p[k], path, "scales.codebook", i)?;
        }
        scales.push(s);
    }

    // sh0: colour and opacity
    let ct = texture(src, path, &meta.sh0_file, n, maxp, None)?;
    let mut dc = Vec::with_capacity(nu);
    let mut opacity = Vec::with_capacity(nu);
    for i in 0..n {
        let p = ct.pixel(i);
        let mut c = [0f32; 3];
        for k in 0..3 {
            c[k] = lookup(&meta.sh0_codebook, p[k], path, "sh0.codebook", i)?;
        }
        dc.push(c);
        opacity.push(logit_alpha(p[3]));
    }

    // shN: palette
    let sh_degree = meta.bands();
    let mut sh_rest = Vec::new();
    if let Some(s) = &meta.sh_n {
        let k = rest_per_channel(s.bands) as u64;
        // 64 entries a row, at most 2^16 entries: 1024 rows. Each label is
        // checked against the rows actually there.
        let cw = 64 * k;
        let centroids = texture(
            src,
            path,
            &s.centroids,
            cw,
            cw.saturating_mul(MAX_PALETTE / 64),
            Some(cw),
        )?;
        let labels = texture(src, path, &s.labels, n, maxp, None)?;
        let d = 3 * k as usize;
        sh_rest = vec![0f32; nu.saturating_mul(d)];
        for i in 0..n {
            let lp = labels.pixel(i);
            let label = u64::from(lp[0]) | (u64::from(lp[1]) << 8);
            if label >= s.count {
                return Err(Error::format(
                    path,
                    format!("texture {}", s.labels),
                    format!(
                        "Gaussian {i}: palette label {label} is out of range (shN.count = {})",
                        s.count
                    ),
                ));
            }
            let row = label / 64;
            if row >= centroids.height {
                return Err(Error::format(
                    path,
                    format!("texture {}", s.centroids),
                    format!(
                        "Gaussian {i}: palette entry {label} needs row {row}, the texture has {}",
                        centroids.height
                    ),
                ));
            }
            let base = i as usize * d;
            for j in 0..k {
                let x = (label % 64) * k + j;
                let px = centroids.pixel(row * centroids.width + x);
                for (c, &byte) in px.iter().take(3).enumerate() {
                    let v = lookup(&s.codebook, byte, path, "shN.codebook", i)?;
                    if let Some(slot) = sh_rest.get_mut(base + c * k as usize + j as usize) {
                        *slot = v;
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_tags() {
        // The identity written by the peer: w largest (tag 252), others 0 → byte 127.5 ≈ 128.
        let q = unpack_quat([128, 128, 128, 252]);
        assert!((q[0] - 1.0).abs() < 1e-4 && q[1].abs() < 0.01);
        assert_eq!(unpack_quat([0, 0, 0, 7]), [1.0, 0.0, 0.0, 0.0]);
        let q = unpack_quat([128, 128, 128, 255]);
        assert!((q[3] - 1.0).abs() < 1e-4);
    }

    #[test]
    fn log_transform_inverse() {
        for x in [-3.0f64, -0.5, 0.0, 0.25, 7.0] {
            let v = x.signum() * (x.abs() + 1.0).ln();
            assert!((inv_log(v) - x).abs() < 1e-12);
        }
    }

    #[test]
    fn paths() {
        assert!(is_sog_path(Path::new("a/b.SOG")));
        assert!(is_sog_path(Path::new("a/Meta.json")));
        assert!(!is_sog_path(Path::new("a/other.json")));
    }
}

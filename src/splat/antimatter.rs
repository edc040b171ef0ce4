//! The antimatter15 `.splat` layout: 32 bytes per Gaussian, little-endian,
//! no header.
//!
//! | bytes  | field    | encoding                                                  |
//! |--------|----------|-----------------------------------------------------------|
//! | 0..12  | position | 3 × f32                                                   |
//! | 12..24 | scale    | 3 × f32, linear axis lengths (not log)                    |
//! | 24..28 | colour   | RGBA u8; RGB = 255·(0.5 + SH_C0·f_dc), A = 255·sigmoid(opacity) |
//! | 28..32 | rotation | 4 × u8, (q·128 + 128) clamped to 0..=255, order w x y z    |
//!
//! The layout holds SH degree 0 only: no SH-rest, normals or extra
//! properties.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::scene::{SH_C0, Scene, sigmoid};
use crate::{Error, Result};

/// Bytes per Gaussian.
pub const RECORD_BYTES: usize = 32;

/// Gaussians per parallel work item.
const BLOCK: usize = 8192;

/// How far inside (0, 1) an alpha byte of 0 or 255 is clamped before the
/// logit: a quarter of a quantisation step, so that 0 and 255 give finite
/// logits (±ln 1019 ≈ ±6.93) and a write/read round trip restores them
/// exactly. (Half a step, 1/510, would land exactly on the rounding
/// boundary of the writer.)
pub const ALPHA_EPS: f32 = 0.25 / 255.0;

/// Whether `path` has the extension `.splat` (case-insensitive).
pub fn is_splat_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("splat"))
}

/// Reads a `.splat` file. See [`read_splat_bytes`] for the conversion.
/// A `.splat` has no header to say where it ends, so it is read only from
/// a regular file (a pipe or a device such as `/dev/zero` is refused rather
/// than read without end).
pub fn read_splat(path: &Path) -> Result<Scene> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "file",
            "a .splat has no header giving its length, so it must be a regular file",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_splat_bytes(&bytes, path)
}

/// Decodes `.splat` bytes into a degree-0 [`Scene`] without normals or
/// extras; `path` only names the source in error messages.
///
/// - scale `s` → `ln s`; a scale ≤ 0 or non-finite, or a non-finite
///   position, is a format error naming the Gaussian;
/// - colour byte `c` → `dc = (c/255 − 0.5)/SH_C0`;
/// - alpha byte `A` → `opacity = ln(a/(1 − a))` with `a = A/255` clamped to
///   `[ALPHA_EPS, 1 − ALPHA_EPS]` (see [`ALPHA_EPS`]);
/// - rotation byte `q` → `(q − 128)/128`, then normalised; an all-zero
///   quaternion becomes the identity (1, 0, 0, 0).
pub fn read_splat_bytes(bytes: &[u8], path: &Path) -> Result<Scene> {
    if bytes.is_empty() {
        return Err(Error::format(path, "size", "no Gaussians (empty file)"));
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(Error::format(
            path,
            "size",
            format!(
                "{} bytes is not a multiple of the {RECORD_BYTES}-byte record",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD_BYTES;
    if let Some(i) = bytes
        .par_chunks_exact(RECORD_BYTES)
        .position_first(|r| check_record(r).is_some())
    {
        let rec = &bytes[i * RECORD_BYTES..(i + 1) * RECORD_BYTES];
        let why = check_record(rec).unwrap_or_default();
        return Err(Error::format(path, format!("Gaussian {i}"), why));
    }

    let mut positions = vec![[0f32; 3]; n];
    let mut scales = vec![[0f32; 3]; n];
    let mut dc = vec![[0f32; 3]; n];
    let mut opacity = vec![0f32; n];
    let mut rotations = vec![[0f32; 4]; n];
    positions
        .par_chunks_mut(BLOCK)
        .zip(scales.par_chunks_mut(BLOCK))
        .zip(dc.par_chunks_mut(BLOCK))
        .zip(opacity.par_chunks_mut(BLOCK))
        .zip(rotations.par_chunks_mut(BLOCK))
        .zip(bytes.par_chunks(BLOCK * RECORD_BYTES))
        .for_each(|(((((p, s), c), o), q), b)| {
            for (j, r) in b.chunks_exact(RECORD_BYTES).enumerate() {
                p[j] = f32x3(&r[0..12]);
                s[j] = f32x3(&r[12..24]).map(f32::ln);
                c[j] = [0, 1, 2].map(|k| (r[24 + k] as f32 / 255.0 - 0.5) / SH_C0);
                let a = (r[27] as f32 / 255.0).clamp(ALPHA_EPS, 1.0 - ALPHA_EPS);
                o[j] = (a / (1.0 - a)).ln();
                q[j] = decode_rotation([r[28], r[29], r[30], r[31]]);
            }
        });

    Ok(Scene {
        sh_degree: 0,
        positions,
        normals: None,
        dc,
        sh_rest: Vec::new(),
        opacity,
        scales,
        rotations,
        ..Scene::default()
    })
}

/// Writes `scene` as a `.splat` file, atomically. Only what the layout
/// holds is written: SH-rest, normals, extras and comments are dropped.
/// Colours, alpha and rotations are rounded to the nearest byte (the
/// rotation after normalising; a zero or non-finite one is written as the
/// identity). Gaussians keep their order.
///
/// Errors: an inconsistent scene, a non-finite position, or a log scale
/// whose `exp` is not a finite positive f32 (the file could not be read
/// back) is [`Error::InvalidArgument`] naming the Gaussian. Returns the
/// file's length in bytes.
pub fn write_splat(path: &Path, scene: &Scene) -> Result<u64> {
    scene
        .check_consistent()
        .map_err(|e| Error::InvalidArgument(format!("scene for {}: {e}", path.display())))?;
    if scene.sh_degree > 0 || scene.extras.stride() > 0 {
        log::warn!(
            "{}: the .splat layout holds SH degree 0 only; SH-rest and extra properties are dropped",
            path.display()
        );
    }
    let n = scene.len();
    let bad = (0..n).into_par_iter().position_first(|i| {
        !scene.positions[i].iter().all(|v| v.is_finite())
            || !scene.scales[i].iter().all(|&l| valid_scale(l.exp()))
    });
    if let Some(i) = bad {
        return Err(Error::InvalidArgument(format!(
            "{}: Gaussian {i} cannot be written: position {:?}, log scale {:?} \
             (positions must be finite and exp(log scale) a finite positive f32)",
            path.display(),
            scene.positions[i],
            scene.scales[i]
        )));
    }

    let mut bytes = vec![0u8; n * RECORD_BYTES];
    bytes
        .par_chunks_mut(RECORD_BYTES)
        .enumerate()
        .for_each(|(i, r)| {
            for k in 0..3 {
                r[4 * k..4 * k + 4].copy_from_slice(&scene.positions[i][k].to_le_bytes());
                let s = scene.scales[i][k].exp();
                r[12 + 4 * k..16 + 4 * k].copy_from_slice(&s.to_le_bytes());
                r[24 + k] = quantize_unit(0.5 + SH_C0 * scene.dc[i][k]);
            }
            r[27] = quantize_unit(sigmoid(scene.opacity[i]));
            r[28..32].copy_from_slice(&encode_rotation(scene.rotations[i]));
        });
    crate::format::write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

/// Why a record cannot be decoded, if it cannot.
fn check_record(r: &[u8]) -> Option<String> {
    let p = f32x3(&r[0..12]);
    if !p.iter().all(|v| v.is_finite()) {
        return Some(format!("position {p:?} is not finite"));
    }
    let s = f32x3(&r[12..24]);
    if let Some(k) = s.iter().position(|&v| !valid_scale(v)) {
        return Some(format!(
            "scale_{k} = {} must be finite and > 0 (the layout stores linear scales)",
            s[k]
        ));
    }
    None
}

fn valid_scale(s: f32) -> bool {
    s.is_finite() && s > 0.0
}

fn f32x3(b: &[u8]) -> [f32; 3] {
    [0, 1, 2].map(|k| f32::from_le_bytes(std::array::from_fn(|j| b[4 * k + j])))
}

/// Rotation bytes → unit quaternion (w, x, y, z).
fn decode_rotation(b: [u8; 4]) -> [f32; 4] {
    let q = b.map(|v| (v as f32 - 128.0) / 128.0);
    let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        q.map(|v| v / norm)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    }
}

/// Quaternion (w, x, y, z), any norm → rotation bytes.
fn encode_rotation(q: [f32; 4]) -> [u8; 4] {
    let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
    let unit = if norm > 0.0 && norm.is_finite() {
        q.map(|v| v / norm)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    };
    unit.map(|v| (v * 128.0 + 128.0).round().clamp(0.0, 255.0) as u8)
}

/// A value in [0, 1] → the nearest byte of `255·v` (NaN → 0).
fn quantize_unit(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_ends_round_trip_exactly() {
        for a in [0u8, 1, 128, 254, 255] {
            let x = (a as f32 / 255.0).clamp(ALPHA_EPS, 1.0 - ALPHA_EPS);
            let logit = (x / (1.0 - x)).ln();
            assert!(logit.is_finite());
            assert_eq!(quantize_unit(sigmoid(logit)), a);
        }
    }

    #[test]
    fn rotation_bytes_round_trip() {
        for b in [
            [255u8, 128, 128, 128],
            [128, 0, 128, 128],
            [192, 192, 192, 192],
        ] {
            assert_eq!(encode_rotation(decode_rotation(b)), b, "{b:?}");
        }
        assert_eq!(decode_rotation([128; 4]), [1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn extension() {
        assert!(is_splat_path(Path::new("a/b.SPLAT")));
        assert!(!is_splat_path(Path::new("a/b.ply")));
        assert!(!is_splat_path(Path::new("splat")));
    }
}

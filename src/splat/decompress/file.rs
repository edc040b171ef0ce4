//! Decoding a whole `.tq3s` file: every stream's length checked against
//! the header before anything is decompressed, then each attribute decoded.

use std::path::Path;

use rayon::prelude::*;

use crate::splat::attributes::{self, AttrBits};
use crate::splat::container::{self, Coding, Container, Normals, Profile, tag_name};
use crate::splat::dedup;
use crate::splat::layout::{self, Facts, Len, tags};
use crate::splat::scene::Scene;
use crate::splat::sh::{self, CompressedSh};
use crate::{Error, Result, Rotation, RotationKind, ScaleMode};

/// f32 vectors of K components from their byte planes.
fn f32s_from_planes<const K: usize>(bytes: &[u8]) -> Vec<[f32; K]> {
    attributes::from_byte_planes(bytes, K * 4)
        .chunks_exact(K * 4)
        .map(|r| std::array::from_fn(|k| f32::from_le_bytes(std::array::from_fn(|j| r[k * 4 + j]))))
        .collect()
}

/// Quantised codes of `comps` components from their byte planes.
fn codes_from_planes(bytes: &[u8], comps: usize, bits: u8) -> Vec<u16> {
    let cb = attributes::code_bytes(bits);
    let aos = attributes::from_byte_planes(bytes, comps * cb);
    if cb == 1 {
        aos.iter().map(|&b| b as u16).collect()
    } else {
        aos.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

/// A format error naming the stream and the Gaussian of the first
/// non-finite value among `v` (`k` values per Gaussian).
fn finite(tag: &str, v: &[f32], k: usize, path: &Path) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            path,
            format!("stream {tag}"),
            format!(
                "Gaussian {}, component {}: {} is not finite",
                i / k,
                i % k,
                v[i]
            ),
        )),
    }
}

/// Decodes a file; `decode_sh: false` leaves the SH-rest compressed (see
/// [`decompress_split`](crate::splat::decompress_split)).
pub(super) fn decode_file(
    bytes: &[u8],
    path: &Path,
    decode_sh: bool,
) -> Result<(Scene, Option<CompressedSh>)> {
    let (h, infos) = container::read_table(bytes, path)?;
    let bad = |field: &str, why: String| Error::format(path, field, why);
    if h.count > u32::MAX as u64 {
        return Err(bad("count", format!("{} exceeds 2^32 − 1", h.count)));
    }
    let compact = h.profile == Profile::Compact;
    if compact {
        AttrBits::from_array(h.attr_bits)
            .validate()
            .map_err(|why| bad("attribute bits", why))?;
        if h.chunk_size == 0 || h.chunk_size > 65536 {
            return Err(bad(
                "chunk size",
                format!("{} must be in 1..=65536", h.chunk_size),
            ));
        }
    }
    let facts = Facts::from_header(&h);
    // Every stream's decoded length is checked against the header before
    // anything is decompressed or allocated.
    for info in &infos {
        let name = || format!("stream {}", tag_name(&info.tag));
        if info.coding == Coding::Rans && info.tag != tags::SHC {
            return Err(bad(
                &name(),
                "coding 2 (rANS) is defined for SHC alone".into(),
            ));
        }
        if info.coding == Coding::Palette
            && (h.version < 4 || layout::palette_columns(&info.tag, h.profile, 1).is_none())
        {
            return Err(bad(
                &name(),
                format!(
                    "coding 3 (column palettes) is defined from version 4 (this file: {}) for SHX and the exact profile's f32 attributes alone",
                    h.version
                ),
            ));
        }
        let want = match info.tag {
            // Raw streams whose length the container checks against the file.
            tags::EXTS | tags::CMNT => None,
            // Bounded below by max_raw; its exact length needs the schema.
            tags::EXTD => None,
            t => Some(
                facts
                    .raw_len(&t)
                    .ok_or_else(|| bad(&name(), "unknown to this version".into()))?,
            ),
        };
        match want {
            Some(Len::Is(w)) if w != info.raw_len => {
                return Err(bad(
                    &name(),
                    format!(
                        "declares {} decoded bytes, the header implies {w}",
                        info.raw_len
                    ),
                ));
            }
            // Per-Gaussian widths: the lengths depend on the widths, and
            // sh::parse checks them exactly; here only their upper bounds.
            Some(Len::AtMost(most)) if info.raw_len > most => {
                return Err(bad(
                    &name(),
                    format!(
                        "declares {} decoded bytes, at most {most} possible",
                        info.raw_len
                    ),
                ));
            }
            _ => {}
        }
    }
    let max_extd = h.count.saturating_mul(8 * h.extra_count as u64);
    let max_raw = infos
        .iter()
        .map(|i| {
            if i.tag == tags::EXTD {
                max_extd
            } else {
                i.raw_len
            }
        })
        .max()
        .unwrap_or(0);
    let c: Container = container::from_bytes(bytes, path, max_raw)?;
    let n = h.count as usize;
    let req = |tag: &[u8; 4]| c.require(tag, facts.raw_len(tag).and_then(Len::exact), path);
    for info in infos.iter().filter(|i| i.coding == Coding::Palette) {
        let want = layout::palette_columns(&info.tag, h.profile, h.dim as usize);
        let has = c.palette_columns(&info.tag);
        if has != want {
            return Err(bad(
                &format!("stream {}", tag_name(&info.tag)),
                format!(
                    "column palettes of {} columns, the stream has {}",
                    has.unwrap_or(0),
                    want.unwrap_or(0)
                ),
            ));
        }
    }

    let mut scene = Scene {
        sh_degree: h.sh_degree,
        ..Scene::default()
    };
    let d = h.dim as usize;
    let mut kept_sh = None;
    if d > 0 && facts.sh_exact {
        // Bit-exact SH-rest: d f32 columns, kept decoded by either caller.
        let rows = attributes::from_byte_planes(req(&tags::SHX)?, 4 * d);
        scene.sh_rest = rows
            .as_chunks::<4>()
            .0
            .iter()
            .map(|b| f32::from_le_bytes(*b))
            .collect();
        finite("SHX", &scene.sh_rest, d, path)?;
    } else if d > 0 {
        let rot = req(&tags::ROT)?;
        let rotation = match h.rotation_kind {
            0 => Rotation::from_bytes(RotationKind::Dense, d, rot),
            1 => Rotation::from_bytes(RotationKind::Hadamard, d, rot),
            // Seeded: regenerated from the seed and checked against the digest.
            _ => Rotation::from_seeded_bytes(d, rot).and_then(|r| match r.dense_seed() {
                Some(s) if s != h.seed => Err(format!(
                    "seed {s} differs from the header's seed {}",
                    h.seed
                )),
                _ => Ok(r),
            }),
        }
        // from_bytes refuses a dense matrix that is not a rotation (an entry
        // outside [−1, 1], a row or column not of unit norm): with the
        // codebook's range this keeps decoded SH finite.
        .map_err(|why| bad("stream ROT", why))?;
        let scale_mode = if h.scale_mode == 0 {
            ScaleMode::Norm
        } else {
            ScaleMode::LeastSquares
        };
        let variable = h.sh_width_mode == 1;
        let present = |tag: &[u8; 4]| c.require(tag, None, path);
        let shw = if variable {
            Some(present(&tags::SHW)?)
        } else {
            None
        };
        // Deduplicated: the SH streams hold U records, SHIX names each
        // Gaussian's.
        let ids = if h.sh_flags & container::SH_DEDUP != 0 {
            Some(
                dedup::parse_index(present(&tags::SHIX)?, n)
                    .map_err(|why| bad("stream SHIX", why))?,
            )
        } else {
            None
        };
        let records = ids.as_ref().map_or(n, |(_, u)| *u);
        // The codes' widths, for a rANS-coded SHC (sh::parse checks SHW again).
        let per = match shw {
            Some(w) => sh::unpack_widths(w, records).map_err(|why| bad("stream SHW", why))?,
            None => Vec::new(),
        };
        let runs = layout::code_runs(records as u64, d as u64, h.sh_bits, &per);
        let shc = c.require_codes(&tags::SHC, &runs, path)?;
        let parsed = sh::parse(
            records,
            h.sh_degree,
            (!variable).then_some(h.sh_bits),
            h.sh_flags & container::SH_SIGN_FLIP != 0,
            rotation,
            scale_mode,
            present(&tags::CBK)?,
            shw,
            present(&tags::SHS)?,
            &shc,
        )
        .map_err(|(field, why)| Error::format(path, field, why))?;
        let parsed = match ids {
            Some((ids, _)) => dedup::expand(parsed, &ids),
            None => parsed,
        };
        if variable && parsed.widths.iter().copied().max().unwrap_or(0) != h.sh_bits {
            return Err(bad(
                "SH bits",
                format!("the header's b = {} is not the widest width", h.sh_bits),
            ));
        }
        if decode_sh {
            scene.sh_rest = parsed.decode()?;
        } else {
            scene.sh_degree = 0;
            kept_sh = Some(parsed);
        }
    }

    if compact {
        let ab = AttrBits::from_array(h.attr_bits);
        let chnk: Vec<f32> = req(&tags::CHNK)?
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect();
        if let Some(k) = chnk.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                "stream CHNK",
                format!("chunk {} has a non-finite range", k / 18),
            ));
        }
        let pos = codes_from_planes(req(&tags::POS)?, 3, ab.position);
        let scl = codes_from_planes(req(&tags::SCL)?, 3, ab.scale);
        let dc = codes_from_planes(req(&tags::DC)?, 3, ab.dc);
        let opa = codes_from_planes(req(&tags::OPA)?, 1, ab.opacity);
        let quat: Vec<u32> = attributes::from_byte_planes(req(&tags::QUAT)?, 4)
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| u32::from_le_bytes(*c))
            .collect();
        let limit = |bits: u8| ((1u32 << bits) - 1) as u16;
        for (name, v, bits) in [
            ("POS", &pos, ab.position),
            ("SCL", &scl, ab.scale),
            ("DC", &dc, ab.dc),
            ("OPA", &opa, ab.opacity),
        ] {
            if let Some(i) = v.iter().position(|&q| q > limit(bits)) {
                return Err(bad(
                    &format!("stream {name}"),
                    format!("code {} at index {i} exceeds {bits} bits", v[i]),
                ));
            }
        }
        let qmax = 3 * ab.rotation as u32 + 2;
        if let Some(i) = quat.iter().position(|&q| qmax < 32 && q >> qmax != 0) {
            return Err(bad(
                "stream QUAT",
                format!("code at index {i} exceeds {qmax} bits"),
            ));
        }
        let cs = h.chunk_size as usize;
        let range = |i: usize, off: usize, a: usize| {
            let r = &chnk[(i / cs) * 18 + off..];
            (r[a], r[3 + a])
        };
        scene.positions = (0..n)
            .into_par_iter()
            .map(|i| {
                std::array::from_fn(|a| {
                    let (lo, hi) = range(i, 0, a);
                    attributes::dequantise_range(pos[3 * i + a], lo, hi, ab.position)
                })
            })
            .collect();
        scene.scales = (0..n)
            .into_par_iter()
            .map(|i| {
                std::array::from_fn(|a| {
                    let (lo, hi) = range(i, 6, a);
                    attributes::dequantise_range(scl[3 * i + a], lo, hi, ab.scale)
                })
            })
            .collect();
        scene.dc = (0..n)
            .into_par_iter()
            .map(|i| {
                std::array::from_fn(|a| {
                    let (lo, hi) = range(i, 12, a);
                    attributes::dequantise_range(dc[3 * i + a], lo, hi, ab.dc)
                })
            })
            .collect();
        scene.opacity = opa
            .par_iter()
            .map(|&q| attributes::dequantise_opacity(q, ab.opacity))
            .collect();
        scene.rotations = quat
            .par_iter()
            .map(|&q| attributes::dequantise_quat(q, ab.rotation))
            .collect();
    } else {
        scene.positions = f32s_from_planes::<3>(req(&tags::POS)?);
        scene.scales = f32s_from_planes::<3>(req(&tags::SCL)?);
        scene.rotations = f32s_from_planes::<4>(req(&tags::QUAT)?);
        scene.opacity = f32s_from_planes::<1>(req(&tags::OPA)?)
            .into_iter()
            .map(|[o]| o)
            .collect();
        scene.dc = f32s_from_planes::<3>(req(&tags::DC)?);
        // The compressor refuses non-finite input, so a stored one is damage.
        finite("POS", scene.positions.as_flattened(), 3, path)?;
        finite("SCL", scene.scales.as_flattened(), 3, path)?;
        finite("QUAT", scene.rotations.as_flattened(), 4, path)?;
        finite("OPA", &scene.opacity, 1, path)?;
        finite("DC", scene.dc.as_flattened(), 3, path)?;
    }
    scene.normals = match h.normals {
        Normals::Absent | Normals::Dropped => None,
        Normals::Zero => Some(vec![[0.0; 3]; n]),
        Normals::Stored => {
            let nrm = f32s_from_planes::<3>(req(&tags::NRM)?);
            finite("NRM", nrm.as_flattened(), 3, path)?;
            Some(nrm)
        }
    };

    if h.extra_count > 0 {
        let schema = c.require(&tags::EXTS, None, path)?;
        scene.extras.properties =
            layout::parse_schema(schema, h.extra_count).map_err(|why| bad("stream EXTS", why))?;
        let facts = Facts {
            extras: Some((schema.len() as u64, scene.extras.stride() as u64)),
            ..facts.clone()
        };
        let len = facts.raw_len(&tags::EXTD).and_then(Len::exact);
        scene.extras.data = c.require(&tags::EXTD, len, path)?.to_vec();
    }
    if let Some(cm) = c.stream(&tags::CMNT) {
        let text = std::str::from_utf8(cm).map_err(|_| bad("stream CMNT", "not UTF-8".into()))?;
        scene.comments = text.lines().map(str::to_string).collect();
    }
    scene
        .check_consistent()
        .map_err(|why| bad("streams", why))?;
    Ok((scene, kept_sh))
}

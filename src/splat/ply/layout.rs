//! The vertex record layout: which property goes where, in a record and in
//! the scene's arrays, and the byte copies that move one record.

use std::collections::HashSet;

use crate::splat::scene::{ExtraProperty, ScalarType, Scene, degree_for_rest_dim};
use crate::{Error, Result};

// Destination arrays of a scene, in slot order. Each one is viewed as bytes,
// with a fixed number of bytes per Gaussian (`Layout::widths`).
pub(super) const POS: usize = 0;
pub(super) const NRM: usize = 1;
pub(super) const DC: usize = 2;
pub(super) const REST: usize = 3;
pub(super) const OPA: usize = 4;
pub(super) const SCL: usize = 5;
pub(super) const ROT: usize = 6;
pub(super) const EXT: usize = 7;
pub(super) const NARR: usize = 8;

/// The 3DGS properties every file must have, in canonical order.
const REQUIRED: [&str; 14] = [
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
];
const NORMALS: [&str; 3] = ["nx", "ny", "nz"];

/// Where a known 3DGS property goes: (array slot, column in `f32`s), or
/// `None` for a property the 3DGS layout does not know.
fn classify(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "x" => (POS, 0),
        "y" => (POS, 1),
        "z" => (POS, 2),
        "nx" => (NRM, 0),
        "ny" => (NRM, 1),
        "nz" => (NRM, 2),
        "f_dc_0" => (DC, 0),
        "f_dc_1" => (DC, 1),
        "f_dc_2" => (DC, 2),
        "opacity" => (OPA, 0),
        "scale_0" => (SCL, 0),
        "scale_1" => (SCL, 1),
        "scale_2" => (SCL, 2),
        "rot_0" => (ROT, 0),
        "rot_1" => (ROT, 1),
        "rot_2" => (ROT, 2),
        "rot_3" => (ROT, 3),
        _ => {
            let idx = name.strip_prefix("f_rest_")?;
            let k: usize = idx.parse().ok()?;
            // Only the canonical spelling (no sign, no leading zeros).
            return (k.to_string() == idx).then_some((REST, k));
        }
    })
}

/// One vertex property, resolved.
#[derive(Clone, Debug)]
pub(super) struct Field {
    pub(super) name: String,
    pub(super) ty: ScalarType,
    /// Byte offset in a binary record.
    pub(super) src: usize,
    /// Destination array slot.
    pub(super) arr: usize,
    /// Byte offset in the destination array's per-Gaussian row.
    pub(super) dst: usize,
}

/// A byte copy between a record and one destination row, covering one or
/// more neighbouring properties of the same size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) src: usize,
    pub(super) arr: usize,
    pub(super) dst: usize,
    pub(super) len: usize,
    /// Byte-swap every `unit` bytes; 1 = copy as is.
    pub(super) unit: usize,
}

/// The vertex record layout: where each property lives in a record and in
/// the scene.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub(super) fields: Vec<Field>,
    /// Bytes per binary record.
    pub(super) stride: usize,
    /// Bytes per Gaussian in each destination array.
    pub(super) widths: [usize; NARR],
    pub(super) normals: bool,
    pub(super) sh_degree: u8,
    pub(super) extras: Vec<ExtraProperty>,
}

/// A layout problem: (field, why).
pub(super) type LayoutError = (String, String);

impl Layout {
    /// Resolves properties given as (name, type, type as spelled).
    pub(super) fn new(props: &[(String, ScalarType, String)]) -> Result<Self, LayoutError> {
        let mut seen = HashSet::new();
        let mut fields = Vec::with_capacity(props.len());
        let mut extras = Vec::new();
        let (mut src, mut ext_off) = (0usize, 0usize);
        let mut rest = Vec::new();
        for (name, ty, spelled) in props {
            if !seen.insert(name.as_str()) {
                return Err((
                    format!("property {name}"),
                    format!("`{name}` is declared twice"),
                ));
            }
            let (arr, dst) = match classify(name) {
                Some((arr, col)) => {
                    if *ty != ScalarType::F32 {
                        return Err((
                            format!("property {name}"),
                            format!(
                                "`{name}` has type `{spelled}`; the 3DGS properties must be float"
                            ),
                        ));
                    }
                    if arr == REST {
                        rest.push(col);
                    }
                    (arr, col * 4)
                }
                None => {
                    extras.push(ExtraProperty {
                        name: name.clone(),
                        ty: *ty,
                    });
                    ext_off += ty.size();
                    (EXT, ext_off - ty.size())
                }
            };
            fields.push(Field {
                name: name.clone(),
                ty: *ty,
                src,
                arr,
                dst,
            });
            src += ty.size();
        }

        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|n| !seen.contains(n))
            .collect();
        if let Some(first) = missing.first() {
            return Err((
                format!("property {first}"),
                format!(
                    "required 3DGS propert{} missing: {}",
                    if missing.len() == 1 {
                        "y is"
                    } else {
                        "ies are"
                    },
                    missing.join(", ")
                ),
            ));
        }
        let normals = NORMALS.iter().filter(|n| seen.contains(*n)).count();
        if normals != 0 && normals != 3 {
            let absent: Vec<&str> = NORMALS
                .iter()
                .copied()
                .filter(|n| !seen.contains(n))
                .collect();
            return Err((
                format!("property {}", absent[0]),
                format!(
                    "normals need all of nx, ny, nz or none; missing {}",
                    absent.join(", ")
                ),
            ));
        }
        let k = rest.len();
        let Some(sh_degree) = degree_for_rest_dim(k) else {
            return Err((
                "f_rest".into(),
                format!(
                    "{k} f_rest_* properties; a 3DGS PLY has 0, 9, 24 or 45 (SH degree 0 to 3)"
                ),
            ));
        };
        if let Some(gap) = (0..k).find(|i| !rest.contains(i)) {
            let max = rest.iter().max().copied().unwrap_or(0);
            return Err((
                format!("property f_rest_{gap}"),
                format!(
                    "f_rest_{gap} is missing but f_rest_{max} is present; the indices must be 0..={}",
                    k - 1
                ),
            ));
        }

        let mut widths = [12, 0, 12, 4 * k, 4, 12, 16, ext_off];
        if normals == 3 {
            widths[NRM] = 12;
        }
        Ok(Layout {
            fields,
            stride: src,
            widths,
            normals: normals == 3,
            sh_degree,
            extras,
        })
    }

    /// The layout [`write_ply`] uses for `scene`: the 3DGS properties in
    /// canonical order, then the extras.
    pub(super) fn canonical(scene: &Scene) -> Result<Self> {
        let bad = |why: String| Error::InvalidArgument(why);
        scene
            .check_consistent()
            .map_err(|e| bad(format!("cannot write an inconsistent scene as PLY: {e}")))?;
        let mut props: Vec<(String, ScalarType, String)> = Vec::new();
        let float = |n: String| (n, ScalarType::F32, String::new());
        props.extend(["x", "y", "z"].map(|n| float(n.into())));
        if scene.normals.is_some() {
            props.extend(NORMALS.map(|n| float(n.into())));
        }
        props.extend((0..3).map(|i| float(format!("f_dc_{i}"))));
        props.extend((0..scene.rest_dim()).map(|i| float(format!("f_rest_{i}"))));
        props.push(float("opacity".into()));
        props.extend((0..3).map(|i| float(format!("scale_{i}"))));
        props.extend((0..4).map(|i| float(format!("rot_{i}"))));
        for p in &scene.extras.properties {
            let name = &p.name;
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!(
                    "extra property name {name:?} cannot be written to a PLY header"
                )));
            }
            if classify(name).is_some() {
                return Err(bad(format!(
                    "extra property `{name}` has the name of a 3DGS property"
                )));
            }
            props.push((name.clone(), p.ty, p.ty.ply_name().into()));
        }
        if let Some(c) = scene.comments.iter().find(|c| c.contains(['\n', '\r'])) {
            return Err(bad(format!("PLY comment {c:?} contains a line break")));
        }
        Layout::new(&props).map_err(|(field, why)| bad(format!("{field}: {why}")))
    }

    /// The copies that move one record, merging neighbours. `swap_known`:
    /// byte-swap the 3DGS floats; `swap_extras`: byte-swap the extras.
    pub(super) fn runs(&self, swap_known: bool, swap_extras: bool) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for f in &self.fields {
            let swap = if f.arr == EXT {
                swap_extras
            } else {
                swap_known
            };
            let unit = if swap { f.ty.size() } else { 1 };
            let len = f.ty.size();
            if let Some(r) = runs.last_mut()
                && r.arr == f.arr
                && r.src + r.len == f.src
                && r.dst + r.len == f.dst
                && r.unit == unit
            {
                r.len += len;
                continue;
            }
            runs.push(Run {
                src: f.src,
                arr: f.arr,
                dst: f.dst,
                len,
                unit,
            });
        }
        runs
    }

    /// Bytes a binary body of `n` vertices takes, if it fits in a u64.
    pub(super) fn body_len(&self, n: u64) -> Option<u64> {
        n.checked_mul(self.stride as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(list: &[(&str, ScalarType)]) -> Vec<(String, ScalarType, String)> {
        list.iter()
            .map(|(n, t)| ((*n).to_owned(), *t, t.ply_name().to_owned()))
            .collect()
    }

    fn base() -> Vec<(&'static str, ScalarType)> {
        REQUIRED.iter().map(|n| (*n, ScalarType::F32)).collect()
    }

    #[test]
    fn only_canonical_f_rest_names_are_known() {
        assert_eq!(classify("f_rest_0"), Some((REST, 0)));
        assert_eq!(classify("f_rest_44"), Some((REST, 44)));
        assert_eq!(classify("rot_3"), Some((ROT, 3)));
        for name in [
            "f_rest_01",
            "f_rest_+1",
            "f_rest_",
            "f_rest_x",
            "rot_4",
            "X",
            "f_dc_3",
        ] {
            assert_eq!(classify(name), None, "{name}");
        }
    }

    #[test]
    fn the_standard_layout_is_seven_copies() {
        let scene = Scene {
            sh_degree: 3,
            normals: Some(Vec::new()),
            ..Scene::default()
        };
        let layout = Layout::canonical(&scene).unwrap();
        assert_eq!(layout.stride, 62 * 4);
        let runs = layout.runs(false, false);
        let lens: Vec<usize> = runs.iter().map(|r| r.len).collect();
        assert_eq!(lens, [12, 12, 12, 180, 4, 12, 16]);
        assert!(runs.iter().all(|r| r.unit == 1 && r.dst == 0));
        assert!(layout.runs(true, false).iter().all(|r| r.unit == 4));
    }

    #[test]
    fn extras_merge_unless_swapped_sizes_differ() {
        let mut p = base();
        p.extend([
            ("a", ScalarType::U8),
            ("b", ScalarType::I16),
            ("c", ScalarType::I16),
            ("d", ScalarType::F64),
        ]);
        let layout = Layout::new(&props(&p)).unwrap();
        assert_eq!(layout.widths[EXT], 13);
        let ext = |swap| -> Vec<(usize, usize, usize)> {
            layout
                .runs(false, swap)
                .into_iter()
                .filter(|r| r.arr == EXT)
                .map(|r| (r.dst, r.len, r.unit))
                .collect()
        };
        assert_eq!(ext(false), [(0, 13, 1)]);
        assert_eq!(ext(true), [(0, 1, 1), (1, 4, 2), (5, 8, 8)]);
    }

    #[test]
    fn swapped_fields_map_to_their_columns() {
        let mut p = base();
        p.reverse();
        let layout = Layout::new(&props(&p)).unwrap();
        let x = layout.fields.iter().find(|f| f.name == "x").unwrap();
        assert_eq!((x.src, x.arr, x.dst), (13 * 4, POS, 0));
        let rot3 = layout.fields.iter().find(|f| f.name == "rot_3").unwrap();
        assert_eq!((rot3.src, rot3.arr, rot3.dst), (0, ROT, 12));
        // Reversed neighbours never merge.
        assert_eq!(layout.runs(false, false).len(), 14);
    }
}

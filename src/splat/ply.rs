//! PLY input and output for 3D Gaussian Splatting scenes.
//!
//! Only the `vertex` element is read (other elements must be empty). The
//! 3DGS properties (`x y z`, optional `nx ny nz`, `f_dc_0..2`,
//! `f_rest_0..K-1` with K ∈ {0, 9, 24, 45}, `opacity`, `scale_0..2`,
//! `rot_0..3`) may come in any order and must be `float`; every other scalar
//! property is kept losslessly in [`Scene::extras`].
//!
//! Reading streams the body in chunks of records and never holds the file in
//! memory. Each property is resolved once to a (record offset, destination
//! array, destination offset) triple, neighbouring properties are merged into
//! one copy, and the chunks are converted on the rayon pool while the next
//! chunk is read. Writing is the mirror image.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use rayon::prelude::*;

use crate::format::write_atomic;
use crate::splat::scene::{ExtraProperty, Extras, ScalarType, Scene, degree_for_rest_dim};
use crate::{Error, Result};

/// How a PLY body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlyEncoding {
    /// `binary_little_endian`, what 3DGS trainers write.
    BinaryLittleEndian,
    /// `binary_big_endian`.
    BinaryBigEndian,
    /// `ascii`: one text line per vertex.
    Ascii,
}

impl PlyEncoding {
    /// The name on the header's `format` line.
    pub const fn ply_name(self) -> &'static str {
        match self {
            PlyEncoding::BinaryLittleEndian => "binary_little_endian",
            PlyEncoding::BinaryBigEndian => "binary_big_endian",
            PlyEncoding::Ascii => "ascii",
        }
    }

    fn from_ply_name(name: &str) -> Option<Self> {
        [Self::BinaryLittleEndian, Self::BinaryBigEndian, Self::Ascii]
            .into_iter()
            .find(|e| e.ply_name() == name)
    }
}

/// The header may not be longer than this without `end_header`.
const MAX_HEADER_BYTES: u64 = 1 << 20;
/// Nor have more lines than this.
const MAX_HEADER_LINES: usize = 10_000;
/// Target size of one chunk of binary records.
const CHUNK_BYTES: usize = 4 << 20;
/// At most this many vertices per chunk.
const MAX_CHUNK_ROWS: usize = 1 << 16;
/// When the body length is unknown, reserve at most this much up front.
const MAX_RESERVE_BYTES: usize = 16 << 20;
/// Smallest number of rows worth handing to another thread.
const MIN_PIECE_ROWS: usize = 512;
/// Whether this machine stores `f32` little-endian.
const NATIVE_LE: bool = cfg!(target_endian = "little");
/// Path used in I/O error messages of [`write_ply_to`].
const WRITER_PATH: &str = "<PLY writer>";

// Destination arrays of a scene, in slot order. Each one is viewed as bytes,
// with a fixed number of bytes per Gaussian (`Layout::widths`).
const POS: usize = 0;
const NRM: usize = 1;
const DC: usize = 2;
const REST: usize = 3;
const OPA: usize = 4;
const SCL: usize = 5;
const ROT: usize = 6;
const EXT: usize = 7;
const NARR: usize = 8;

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
struct Field {
    name: String,
    ty: ScalarType,
    /// Byte offset in a binary record.
    src: usize,
    /// Destination array slot.
    arr: usize,
    /// Byte offset in the destination array's per-Gaussian row.
    dst: usize,
}

/// A byte copy between a record and one destination row, covering one or
/// more neighbouring properties of the same size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    src: usize,
    arr: usize,
    dst: usize,
    len: usize,
    /// Byte-swap every `unit` bytes; 1 = copy as is.
    unit: usize,
}

/// The vertex record layout: where each property lives in a record and in
/// the scene.
#[derive(Clone, Debug)]
struct Layout {
    fields: Vec<Field>,
    /// Bytes per binary record.
    stride: usize,
    /// Bytes per Gaussian in each destination array.
    widths: [usize; NARR],
    normals: bool,
    sh_degree: u8,
    extras: Vec<ExtraProperty>,
}

/// A layout problem: (field, why).
type LayoutError = (String, String);

impl Layout {
    /// Resolves properties given as (name, type, type as spelled).
    fn new(props: &[(String, ScalarType, String)]) -> Result<Self, LayoutError> {
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
    fn canonical(scene: &Scene) -> Result<Self> {
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
    fn runs(&self, swap_known: bool, swap_extras: bool) -> Vec<Run> {
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
    fn body_len(&self, n: u64) -> Option<u64> {
        n.checked_mul(self.stride as u64)
    }
}

/// Scene arrays for `layout`: `n` zeroed Gaussians if `exact`, else none
/// with room for `n`.
fn new_scene(layout: &Layout, comments: Vec<String>, n: usize, exact: bool) -> Scene {
    let k = layout.widths[REST] / 4;
    let es = layout.widths[EXT];
    // `vec![0; n]` comes from zeroed pages, so it costs nothing until written.
    fn make<T: Clone + Default>(n: usize, exact: bool) -> Vec<T> {
        if exact {
            vec![T::default(); n]
        } else {
            Vec::with_capacity(n)
        }
    }
    Scene {
        sh_degree: layout.sh_degree,
        positions: make(n, exact),
        normals: layout.normals.then(|| make(n, exact)),
        dc: make(n, exact),
        sh_rest: make(n * k, exact),
        opacity: make(n, exact),
        scales: make(n, exact),
        rotations: make(n, exact),
        extras: Extras {
            properties: layout.extras.clone(),
            data: make(n * es, exact),
        },
        comments,
    }
}

/// Makes every array of `s` hold at least `end` Gaussians.
fn grow(s: &mut Scene, end: usize) {
    let k = s.rest_dim();
    let es = s.extras.stride();
    fn at_least<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
        if v.len() < len {
            v.resize(len, T::default());
        }
    }
    at_least(&mut s.positions, end);
    if let Some(v) = &mut s.normals {
        at_least(v, end);
    }
    at_least(&mut s.dc, end);
    at_least(&mut s.sh_rest, end * k);
    at_least(&mut s.opacity, end);
    at_least(&mut s.scales, end);
    at_least(&mut s.rotations, end);
    at_least(&mut s.extras.data, end * es);
}

/// Gaussians `start..end` of every array of `s`, as bytes, in slot order.
fn scene_rows_mut(s: &mut Scene, start: usize, end: usize) -> [&mut [u8]; NARR] {
    let k = s.rest_dim();
    let es = s.extras.stride();
    let Scene {
        positions,
        normals,
        dc,
        sh_rest,
        opacity,
        scales,
        rotations,
        extras,
        ..
    } = s;
    [
        bytemuck::cast_slice_mut(&mut positions[start..end]),
        match normals {
            Some(v) => bytemuck::cast_slice_mut(&mut v[start..end]),
            None => &mut [],
        },
        bytemuck::cast_slice_mut(&mut dc[start..end]),
        bytemuck::cast_slice_mut(&mut sh_rest[start * k..end * k]),
        bytemuck::cast_slice_mut(&mut opacity[start..end]),
        bytemuck::cast_slice_mut(&mut scales[start..end]),
        bytemuck::cast_slice_mut(&mut rotations[start..end]),
        &mut extras.data[start * es..end * es],
    ]
}

/// Gaussians `start..end` of every array of `s`, as bytes, in slot order.
fn scene_rows(s: &Scene, start: usize, end: usize) -> [&[u8]; NARR] {
    let k = s.rest_dim();
    let es = s.extras.stride();
    [
        bytemuck::cast_slice(&s.positions[start..end]),
        match &s.normals {
            Some(v) => bytemuck::cast_slice(&v[start..end]),
            None => &[],
        },
        bytemuck::cast_slice(&s.dc[start..end]),
        bytemuck::cast_slice(&s.sh_rest[start * k..end * k]),
        bytemuck::cast_slice(&s.opacity[start..end]),
        bytemuck::cast_slice(&s.scales[start..end]),
        bytemuck::cast_slice(&s.rotations[start..end]),
        &s.extras.data[start * es..end * es],
    ]
}

/// How many rows each parallel piece of a `rows`-row chunk gets.
fn piece_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(2 * threads).max(MIN_PIECE_ROWS)
}

/// Splits destination rows into pieces of `piece` rows.
fn split_mut<'a>(
    mut d: [&'a mut [u8]; NARR],
    widths: &[usize; NARR],
    rows: usize,
    piece: usize,
) -> Vec<[&'a mut [u8]; NARR]> {
    let mut out = Vec::with_capacity(rows.div_ceil(piece));
    let mut left = rows;
    while left > 0 {
        let r = piece.min(left);
        out.push(std::array::from_fn(|k| {
            let (head, tail) = std::mem::take(&mut d[k]).split_at_mut(r * widths[k]);
            d[k] = tail;
            head
        }));
        left -= r;
    }
    out
}

/// Splits source rows into pieces of `piece` rows.
fn split<'a>(
    mut d: [&'a [u8]; NARR],
    widths: &[usize; NARR],
    rows: usize,
    piece: usize,
) -> Vec<[&'a [u8]; NARR]> {
    let mut out = Vec::with_capacity(rows.div_ceil(piece));
    let mut left = rows;
    while left > 0 {
        let r = piece.min(left);
        out.push(std::array::from_fn(|k| {
            let (head, tail) = d[k].split_at(r * widths[k]);
            d[k] = tail;
            head
        }));
        left -= r;
    }
    out
}

/// Reverses the byte order of every `unit` bytes of `b` (no-op for 1).
#[inline]
fn swap_units(b: &mut [u8], unit: usize) {
    match unit {
        1 => {}
        2 => b.chunks_exact_mut(2).for_each(|u| u.reverse()),
        4 => b.chunks_exact_mut(4).for_each(|u| u.reverse()),
        _ => b.chunks_exact_mut(unit).for_each(|u| u.reverse()),
    }
}

/// Copies binary records into destination rows.
fn scatter(
    records: &[u8],
    stride: usize,
    runs: &[Run],
    widths: &[usize; NARR],
    dst: &mut [&mut [u8]; NARR],
) {
    for (r, rec) in records.chunks_exact(stride).enumerate() {
        for run in runs {
            let d = &mut dst[run.arr][r * widths[run.arr] + run.dst..][..run.len];
            d.copy_from_slice(&rec[run.src..][..run.len]);
            swap_units(d, run.unit);
        }
    }
}

/// Copies source rows into binary records.
fn gather(
    records: &mut [u8],
    stride: usize,
    runs: &[Run],
    widths: &[usize; NARR],
    src: &[&[u8]; NARR],
) {
    for (r, rec) in records.chunks_exact_mut(stride).enumerate() {
        for run in runs {
            let d = &mut rec[run.src..][..run.len];
            d.copy_from_slice(&src[run.arr][r * widths[run.arr] + run.dst..][..run.len]);
            swap_units(d, run.unit);
        }
    }
}

/// [`scatter`] on the rayon pool.
fn scatter_par(records: &[u8], layout: &Layout, runs: &[Run], dst: [&mut [u8]; NARR]) {
    let stride = layout.stride;
    let rows = records.len() / stride;
    let piece = piece_rows(rows);
    split_mut(dst, &layout.widths, rows, piece)
        .into_par_iter()
        .zip(records.par_chunks(piece * stride))
        .for_each(|(mut d, rec)| scatter(rec, stride, runs, &layout.widths, &mut d));
}

/// [`gather`] on the rayon pool.
fn gather_par(records: &mut [u8], layout: &Layout, runs: &[Run], src: [&[u8]; NARR]) {
    let stride = layout.stride;
    let rows = records.len() / stride;
    let piece = piece_rows(rows);
    split(src, &layout.widths, rows, piece)
        .into_par_iter()
        .zip(records.par_chunks_mut(piece * stride))
        .for_each(|(s, rec)| gather(rec, stride, runs, &layout.widths, &s));
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What the header says.
struct Header {
    encoding: PlyEncoding,
    comments: Vec<String>,
    /// Vertex count.
    count: u64,
    /// Vertex properties: (name, type, type as spelled).
    props: Vec<(String, ScalarType, String)>,
    /// Header bytes, through the `end_header` line break.
    len: u64,
    /// Header lines, `ply` and `end_header` included.
    lines: usize,
}

/// One `element` of the header.
struct Element {
    name: String,
    count: u64,
    props: Vec<(String, ScalarType, String)>,
}

/// Strips a trailing `\n` or `\r\n`.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads and checks the header, leaving `reader` at the first body byte.
fn read_header(reader: &mut impl BufRead, path: &Path) -> Result<Header> {
    let io_err = |e| Error::io(path, e);
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(8)
        .read_until(b'\n', &mut line)
        .map_err(io_err)?;
    if strip_eol(&line) != b"ply" || !line.ends_with(b"\n") {
        return Err(Error::format(
            path,
            "magic",
            "not a PLY file: it does not start with a `ply` line",
        ));
    }
    let mut len = line.len() as u64;
    let mut lines = 1;
    let mut encoding = None;
    let mut comments = Vec::new();
    let mut elements: Vec<Element> = Vec::new();
    loop {
        if lines >= MAX_HEADER_LINES {
            return Err(Error::format(
                path,
                "header",
                format!("no end_header within the first {MAX_HEADER_LINES} lines"),
            ));
        }
        line.clear();
        let budget = MAX_HEADER_BYTES - len;
        let got = reader
            .by_ref()
            .take(budget)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        len += got as u64;
        lines += 1;
        if got == 0 || (!line.ends_with(b"\n") && len >= MAX_HEADER_BYTES) {
            let why = if got == 0 && budget > 0 {
                format!(
                    "missing end_header: the file ends after {} header lines",
                    lines - 1
                )
            } else {
                format!("no end_header within the first {MAX_HEADER_BYTES} bytes")
            };
            return Err(Error::format(path, "header", why));
        }
        let at = format!("header line {lines}");
        let text = std::str::from_utf8(strip_eol(&line))
            .map_err(|_| Error::format(path, &at, "not text (binary data before end_header?)"))?;
        let bad = |why: String| Error::format(path, &at, why);
        let toks: Vec<&str> = text.split_ascii_whitespace().collect();
        match toks.as_slice() {
            [] => {}
            ["end_header"] => break,
            ["format", enc, version] => {
                if encoding.is_some() {
                    return Err(bad("a second format line".into()));
                }
                let e = PlyEncoding::from_ply_name(enc)
                    .ok_or_else(|| bad(format!("unknown format `{enc}`")))?;
                if *version != "1.0" {
                    return Err(bad(format!("format version `{version}`; only 1.0 exists")));
                }
                encoding = Some(e);
            }
            ["comment", ..] => {
                let rest = text.trim_start().strip_prefix("comment").unwrap_or("");
                let rest = rest
                    .strip_prefix(' ')
                    .or_else(|| rest.strip_prefix('\t'))
                    .unwrap_or(rest);
                comments.push(rest.to_owned());
            }
            ["obj_info", ..] => {}
            ["element", name, count] => {
                let count: u64 = count.parse().map_err(|_| {
                    Error::format(
                        path,
                        format!("element {name}"),
                        format!("count `{count}` is not an integer in 0..2^64"),
                    )
                })?;
                if elements.iter().any(|e| e.name == *name) {
                    return Err(Error::format(
                        path,
                        format!("element {name}"),
                        "declared twice",
                    ));
                }
                elements.push(Element {
                    name: (*name).to_owned(),
                    count,
                    props: Vec::new(),
                });
            }
            ["property", "list", .., name] => {
                let el = elements
                    .last_mut()
                    .ok_or_else(|| bad(format!("property {name} before any element")))?;
                if el.name == "vertex" {
                    return Err(Error::format(
                        path,
                        format!("property {name}"),
                        format!(
                            "`{name}` is a list property; the vertex element only supports scalars"
                        ),
                    ));
                }
            }
            ["property", ty, name] => {
                let el = elements
                    .last_mut()
                    .ok_or_else(|| bad(format!("property {name} before any element")))?;
                let t = ScalarType::from_ply_name(ty).ok_or_else(|| {
                    Error::format(
                        path,
                        format!("property {name}"),
                        format!("unknown type `{ty}` of `{name}`"),
                    )
                })?;
                el.props.push(((*name).to_owned(), t, (*ty).to_owned()));
            }
            [kw, ..] => return Err(bad(format!("unexpected `{kw}` line: {text:?}"))),
        }
    }
    let encoding = encoding.ok_or_else(|| Error::format(path, "format", "no format line"))?;
    let mut vertex = None;
    for el in elements {
        if el.name == "vertex" {
            vertex = Some(el);
        } else if el.count > 0 {
            return Err(Error::format(
                path,
                format!("element {}", el.name),
                format!(
                    "{} `{}` entries; only the vertex element of a 3DGS PLY is supported",
                    el.count, el.name
                ),
            ));
        }
    }
    let vertex =
        vertex.ok_or_else(|| Error::format(path, "element vertex", "no vertex element"))?;
    Ok(Header {
        encoding,
        comments,
        count: vertex.count,
        props: vertex.props,
        len,
        lines,
    })
}

/// Reads a 3DGS PLY file.
pub fn read_ply(path: &Path) -> Result<Scene> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    read_ply_from(BufReader::with_capacity(1 << 16, file), path, Some(len))
}

/// Reads a 3DGS PLY from `reader`, positioned at the start of the file.
/// `path` only names the input in messages; `file_len`, when known, lets a
/// binary body be checked against the vertex count before anything is read.
pub fn read_ply_from(
    mut reader: impl BufRead,
    path: &Path,
    file_len: Option<u64>,
) -> Result<Scene> {
    let header = read_header(&mut reader, path)?;
    let layout =
        Layout::new(&header.props).map_err(|(field, why)| Error::format(path, field, why))?;
    let n64 = header.count;
    let too_many = || {
        Error::format(
            path,
            "vertex count",
            format!("{n64} vertices cannot be stored on this machine"),
        )
    };
    let n = usize::try_from(n64).map_err(|_| too_many())?;
    let body_avail = file_len.map(|l| l.saturating_sub(header.len));
    match header.encoding {
        PlyEncoding::Ascii => {
            if let Some(avail) = body_avail {
                // Each vertex line needs at least one character and one
                // separator per property.
                let need = n64
                    .checked_mul(2 * layout.fields.len() as u64)
                    .ok_or_else(too_many)?
                    .saturating_sub(1);
                if need > avail {
                    return Err(Error::format(
                        path,
                        "vertex count",
                        format!(
                            "truncated: header says {n} vertices of {} values, at least {need} bytes of text, but the body has {avail}",
                            layout.fields.len()
                        ),
                    ));
                }
            }
            let reserve = n.min(MAX_RESERVE_BYTES / layout.stride);
            let mut scene = new_scene(&layout, header.comments, reserve, false);
            read_ascii(&mut reader, path, &layout, n, header.lines, &mut scene)?;
            Ok(scene)
        }
        enc => {
            let s = layout.stride;
            let body = layout.body_len(n64).ok_or_else(|| {
                Error::format(
                    path,
                    "vertex count",
                    format!("header says {n64} vertices of {s} bytes, more than 2^64 bytes"),
                )
            })?;
            let exact = match body_avail {
                Some(avail) if avail < body => {
                    return Err(Error::format(
                        path,
                        "vertex count",
                        format!(
                            "truncated: header says {n} vertices of {s} bytes = {body} bytes but the body has {avail}"
                        ),
                    ));
                }
                Some(avail) if avail > body => {
                    return Err(Error::format(
                        path,
                        "vertex count",
                        format!(
                            "{} trailing bytes: header says {n} vertices of {s} bytes = {body} bytes but the body has {avail}",
                            avail - body
                        ),
                    ));
                }
                Some(_) => true,
                None => false,
            };
            let reserve = if exact {
                n
            } else {
                n.min(MAX_RESERVE_BYTES / s)
            };
            let mut scene = new_scene(&layout, header.comments, reserve, exact);
            let le = enc == PlyEncoding::BinaryLittleEndian;
            read_binary(&mut reader, path, &layout, n, le, &mut scene)?;
            Ok(scene)
        }
    }
}

/// Reads `n` binary records into `scene`, converting each chunk on the
/// rayon pool while this thread reads the next.
fn read_binary(
    reader: &mut impl BufRead,
    path: &Path,
    layout: &Layout,
    n: usize,
    le: bool,
    scene: &mut Scene,
) -> Result<()> {
    let stride = layout.stride;
    let runs = layout.runs(le != NATIVE_LE, !le);
    let chunk = (CHUNK_BYTES / stride).clamp(1, MAX_CHUNK_ROWS).min(n);
    let mut bufs = [vec![0u8; chunk * stride], vec![0u8; chunk * stride]];
    // Reads rows start.. of the next chunk into `buf`; returns the row count.
    let read_chunk = |reader: &mut _, buf: &mut [u8], start: usize| -> Result<usize> {
        let rows = chunk.min(n - start);
        let want = rows * stride;
        let got = read_full(reader, &mut buf[..want]).map_err(|e| Error::io(path, e))?;
        if got < want {
            let at = start + got / stride;
            let ends = if got % stride == 0 {
                format!("after {at} complete vertices")
            } else {
                format!("inside vertex {at}")
            };
            return Err(Error::format(
                path,
                format!("vertex {at}"),
                format!(
                    "truncated: header says {n} vertices of {stride} bytes but the body ends {ends}"
                ),
            ));
        }
        Ok(rows)
    };
    let mut start = 0;
    let mut rows = if n > 0 {
        read_chunk(reader, &mut bufs[0], 0)?
    } else {
        0
    };
    while rows > 0 {
        let end = start + rows;
        grow(scene, end);
        let (cur, next) = bufs.split_at_mut(1);
        let (cur, next) = (&cur[0][..rows * stride], &mut next[0]);
        let dst = scene_rows_mut(scene, start, end);
        rows = rayon::in_place_scope(|s| {
            s.spawn(|_| scatter_par(cur, layout, &runs, dst));
            if end < n {
                read_chunk(reader, next, end)
            } else {
                Ok(0)
            }
        })?;
        bufs.swap(0, 1);
        start = end;
    }
    let rest = reader.fill_buf().map_err(|e| Error::io(path, e))?;
    if !rest.is_empty() {
        return Err(Error::format(
            path,
            "vertex count",
            format!("trailing bytes after the {n} vertices of {stride} bytes the header declares"),
        ));
    }
    Ok(())
}

/// Parses one ASCII token as `ty` into `out` (little-endian if `le`, else
/// native order).
fn parse_scalar(tok: &str, ty: ScalarType, le: bool, out: &mut [u8]) -> Option<()> {
    macro_rules! put {
        ($t:ty) => {{
            let v: $t = tok.parse().ok()?;
            out.copy_from_slice(&if le { v.to_le_bytes() } else { v.to_ne_bytes() });
        }};
    }
    match ty {
        ScalarType::I8 => put!(i8),
        ScalarType::U8 => put!(u8),
        ScalarType::I16 => put!(i16),
        ScalarType::U16 => put!(u16),
        ScalarType::I32 => put!(i32),
        ScalarType::U32 => put!(u32),
        ScalarType::F32 => put!(f32),
        ScalarType::F64 => put!(f64),
    }
    Some(())
}

/// Parses ASCII vertex lines into destination rows. `first_line` and
/// `first_vertex` number `lines[0]` for messages.
fn parse_lines(
    text: &[u8],
    lines: &[(usize, usize)],
    layout: &Layout,
    dst: &mut [&mut [u8]; NARR],
    first_line: usize,
    first_vertex: usize,
    path: &Path,
) -> Result<()> {
    let nprops = layout.fields.len();
    for (r, &(a, b)) in lines.iter().enumerate() {
        let (lineno, v) = (first_line + r, first_vertex + r);
        let at = format!("line {lineno}");
        let line = std::str::from_utf8(&text[a..b])
            .map_err(|_| Error::format(path, &at, format!("vertex {v} is not text")))?;
        let mut toks = line.split_ascii_whitespace();
        for f in &layout.fields {
            let Some(tok) = toks.next() else {
                let found = line.split_ascii_whitespace().count();
                return Err(Error::format(
                    path,
                    &at,
                    format!(
                        "vertex {v} has {found} values but the header declares {nprops} properties (`{}` is missing)",
                        f.name
                    ),
                ));
            };
            let w = layout.widths[f.arr];
            let out = &mut dst[f.arr][r * w + f.dst..][..f.ty.size()];
            parse_scalar(tok, f.ty, f.arr == EXT, out).ok_or_else(|| {
                Error::format(
                    path,
                    &at,
                    format!(
                        "vertex {v}, property `{}`: `{tok}` is not a valid {}",
                        f.name,
                        f.ty.ply_name()
                    ),
                )
            })?;
        }
        if toks.next().is_some() {
            let found = line.split_ascii_whitespace().count();
            return Err(Error::format(
                path,
                &at,
                format!(
                    "vertex {v} has {found} values but the header declares {nprops} properties"
                ),
            ));
        }
    }
    Ok(())
}

/// Reads `n` ASCII vertex lines into `scene`, parsing each chunk of lines on
/// the rayon pool. `header_lines` is the number of lines before the body.
fn read_ascii(
    reader: &mut impl BufRead,
    path: &Path,
    layout: &Layout,
    n: usize,
    header_lines: usize,
    scene: &mut Scene,
) -> Result<()> {
    let max_line = (1u64 << 20).max(1024 * layout.fields.len() as u64);
    let chunk = MAX_CHUNK_ROWS.min(n);
    let mut text = Vec::new();
    let mut lines = Vec::with_capacity(chunk);
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        text.clear();
        lines.clear();
        for i in 0..rows {
            let a = text.len();
            let got = reader
                .by_ref()
                .take(max_line)
                .read_until(b'\n', &mut text)
                .map_err(|e| Error::io(path, e))?;
            let lineno = header_lines + start + i + 1;
            if got == 0 {
                return Err(Error::format(
                    path,
                    format!("line {lineno}"),
                    format!(
                        "truncated: header says {n} vertices but the file ends after {} vertex lines",
                        start + i
                    ),
                ));
            }
            if got as u64 == max_line && !text.ends_with(b"\n") {
                return Err(Error::format(
                    path,
                    format!("line {lineno}"),
                    format!("longer than {max_line} bytes"),
                ));
            }
            lines.push((a, text.len()));
        }
        let end = start + rows;
        grow(scene, end);
        let piece = piece_rows(rows);
        let dst = split_mut(
            scene_rows_mut(scene, start, end),
            &layout.widths,
            rows,
            piece,
        );
        let first_line = header_lines + start + 1;
        dst.into_par_iter()
            .zip(lines.par_chunks(piece))
            .enumerate()
            .map(|(p, (mut d, l))| {
                let off = p * piece;
                parse_lines(
                    &text,
                    l,
                    layout,
                    &mut d,
                    first_line + off,
                    start + off,
                    path,
                )
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Result<()>>()?;
        start = end;
    }
    // Only white space may follow.
    let mut lineno = header_lines + n;
    loop {
        let buf = reader.fill_buf().map_err(|e| Error::io(path, e))?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(p) = buf.iter().position(|b| !b.is_ascii_whitespace()) {
            lineno += buf[..p].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(Error::format(
                path,
                format!("line {lineno}"),
                format!("trailing data after the {n} vertices the header declares"),
            ));
        }
        lineno += buf.iter().filter(|&&b| b == b'\n').count();
        let len = buf.len();
        reader.consume(len);
    }
}

/// Formats source rows as ASCII vertex lines.
fn format_rows(src: &[&[u8]; NARR], layout: &Layout) -> Vec<u8> {
    let rows = src[POS].len() / layout.widths[POS];
    let mut out = Vec::with_capacity(rows * layout.fields.len() * 12);
    for r in 0..rows {
        for (i, f) in layout.fields.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            let b = &src[f.arr][r * layout.widths[f.arr] + f.dst..][..f.ty.size()];
            format_scalar(&mut out, b, f.ty, f.arr == EXT);
        }
        out.push(b'\n');
    }
    out
}

/// Appends the value in `b` (little-endian if `le`, else native order) as
/// text: integers as integers, floats in their shortest round-trip form.
fn format_scalar(out: &mut Vec<u8>, b: &[u8], ty: ScalarType, le: bool) {
    macro_rules! put {
        ($t:ty) => {{
            let a = b.try_into().expect("field size");
            let v = if le {
                <$t>::from_le_bytes(a)
            } else {
                <$t>::from_ne_bytes(a)
            };
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v}");
        }};
    }
    match ty {
        ScalarType::I8 => put!(i8),
        ScalarType::U8 => put!(u8),
        ScalarType::I16 => put!(i16),
        ScalarType::U16 => put!(u16),
        ScalarType::I32 => put!(i32),
        ScalarType::U32 => put!(u32),
        ScalarType::F32 => put!(f32),
        ScalarType::F64 => put!(f64),
    }
}

/// The header text [`write_ply`] writes.
fn header_text(scene: &Scene, layout: &Layout, encoding: PlyEncoding) -> String {
    let mut h = format!("ply\nformat {} 1.0\n", encoding.ply_name());
    for c in &scene.comments {
        h += &format!("comment {c}\n");
    }
    h += &format!("element vertex {}\n", scene.len());
    for f in &layout.fields {
        h += &format!("property {} {}\n", f.ty.ply_name(), f.name);
    }
    h += "end_header\n";
    h
}

/// Exact size in bytes of the PLY [`write_ply`] would write for `scene` in a
/// binary `encoding`; `None` for ASCII, or a scene that cannot be written.
pub fn ply_size(scene: &Scene, encoding: PlyEncoding) -> Option<u64> {
    if encoding == PlyEncoding::Ascii {
        return None;
    }
    let layout = Layout::canonical(scene).ok()?;
    let header = header_text(scene, &layout, encoding).len() as u64;
    layout.body_len(scene.len() as u64)?.checked_add(header)
}

/// Writes `scene` as a PLY file, atomically: on any error `path` is left as
/// it was. Properties come in the canonical 3DGS order, then the extras.
pub fn write_ply(path: &Path, scene: &Scene, encoding: PlyEncoding) -> Result<()> {
    let layout = Layout::canonical(scene)?;
    write_atomic(path, |w| write_with(w, scene, &layout, encoding, path))
}

/// Writes `scene` as a PLY to `w` (see [`write_ply`]).
pub fn write_ply_to(w: &mut dyn Write, scene: &Scene, encoding: PlyEncoding) -> Result<()> {
    let layout = Layout::canonical(scene)?;
    write_with(w, scene, &layout, encoding, Path::new(WRITER_PATH))
}

fn write_with(
    w: &mut dyn Write,
    scene: &Scene,
    layout: &Layout,
    encoding: PlyEncoding,
    path: &Path,
) -> Result<()> {
    let io_err = |e| Error::io(path, e);
    w.write_all(header_text(scene, layout, encoding).as_bytes())
        .map_err(io_err)?;
    let n = scene.len();
    match encoding {
        PlyEncoding::Ascii => {
            let chunk = MAX_CHUNK_ROWS;
            for start in (0..n).step_by(chunk) {
                let end = n.min(start + chunk);
                let rows = end - start;
                let piece = piece_rows(rows);
                let texts: Vec<Vec<u8>> =
                    split(scene_rows(scene, start, end), &layout.widths, rows, piece)
                        .into_par_iter()
                        .map(|src| format_rows(&src, layout))
                        .collect();
                for t in texts {
                    w.write_all(&t).map_err(io_err)?;
                }
            }
        }
        enc => {
            let le = enc == PlyEncoding::BinaryLittleEndian;
            let runs = layout.runs(le != NATIVE_LE, !le);
            let stride = layout.stride;
            let chunk = (CHUNK_BYTES / stride).clamp(1, MAX_CHUNK_ROWS).min(n);
            let (mut cur, mut prev) = (vec![0u8; chunk * stride], vec![0u8; chunk * stride]);
            let (mut start, mut prev_len) = (0, 0);
            // Fill one buffer on the pool while this thread writes the other.
            loop {
                let end = n.min(start + chunk);
                let fill = &mut cur[..(end - start) * stride];
                let src = scene_rows(scene, start, end);
                let out = &prev[..prev_len];
                rayon::in_place_scope(|s| {
                    if !fill.is_empty() {
                        s.spawn(|_| gather_par(fill, layout, &runs, src));
                    }
                    w.write_all(out)
                })
                .map_err(io_err)?;
                if end == start {
                    break;
                }
                prev_len = (end - start) * stride;
                std::mem::swap(&mut cur, &mut prev);
                start = end;
            }
        }
    }
    w.flush().map_err(io_err)
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

    #[test]
    fn header_keeps_comments_and_counts_bytes() {
        let text = "ply\r\nformat ascii 1.0\r\ncomment  spaced \r\ncomment\r\nelement vertex 2\r\nend_header\r\n1 2\n";
        let mut r = text.as_bytes();
        let h = read_header(&mut r, Path::new("h.ply")).unwrap();
        assert_eq!(h.comments, [" spaced ", ""]);
        assert_eq!(h.count, 2);
        assert_eq!(h.encoding, PlyEncoding::Ascii);
        assert_eq!(h.lines, 6);
        assert_eq!(h.len as usize, text.len() - 4);
        assert_eq!(r, b"1 2\n");
    }

    #[test]
    fn pieces_cover_every_row_once() {
        let widths = [12, 0, 12, 36, 4, 12, 16, 3];
        let mut bufs: [Vec<u8>; NARR] = widths.map(|w| vec![0u8; w * 1000]);
        let slices = bufs.each_mut().map(|v| v.as_mut_slice());
        let pieces = split_mut(slices, &widths, 1000, 300);
        let rows: Vec<usize> = pieces.iter().map(|p| p[POS].len() / 12).collect();
        assert_eq!(rows, [300, 300, 300, 100]);
        assert!(pieces.iter().all(|p| p[EXT].len() == p[POS].len() / 4));
    }
}

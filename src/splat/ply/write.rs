//! Writing a scene as PLY: the canonical layout, binary records filled on
//! the rayon pool while the previous chunk is written, or ASCII lines.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::PlyEncoding;
use super::layout::{EXT, Layout, NARR, POS};
use super::rows::{
    CHUNK_BYTES, MAX_CHUNK_ROWS, NATIVE_LE, gather_par, piece_rows, scene_rows, split,
};
use crate::format::write_atomic;
use crate::splat::scene::{ScalarType, Scene};
use crate::{Error, Result};

/// Path used in I/O error messages of [`write_ply_to`].
const WRITER_PATH: &str = "<PLY writer>";

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
/// Returns the file's length in bytes.
pub fn write_ply(path: &Path, scene: &Scene, encoding: PlyEncoding) -> Result<u64> {
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

//! Reading a PLY body, binary or ASCII, in chunks converted on the rayon
//! pool while the next chunk is read.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use rayon::prelude::*;

use super::PlyEncoding;
use super::header::{Header, read_header};
use super::layout::{EXT, Layout, NARR};
use super::rows::{
    CHUNK_BYTES, MAX_CHUNK_ROWS, NATIVE_LE, grow, new_scene, piece_rows, scatter_par,
    scene_rows_mut, split_mut,
};
use crate::splat::scene::{ScalarType, Scene};
use crate::{Error, Result};

/// When the body length is unknown, reserve at most this much up front.
const MAX_RESERVE_BYTES: usize = 16 << 20;

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

/// Reads a 3DGS PLY file. A regular file is memory-mapped and a binary
/// body converted straight from the map on the rayon pool, with no read
/// copy; other inputs (pipes, devices, a failed map) are read in chunks.
pub fn read_ply(path: &Path) -> Result<Scene> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    let len = meta.len();
    if meta.is_file() && len > 0 {
        // Populated: one call maps the pages already cached. SAFETY: a
        // read-only private map; like every input, the file must not be
        // truncated by another process while it is read (see
        // format::input::map_declared).
        if let Ok(map) = unsafe { memmap2::MmapOptions::new().populate().map(&file) } {
            return read_ply_mapped(&map, path);
        }
    }
    read_ply_from(BufReader::with_capacity(1 << 16, file), path, Some(len))
}

/// [`read_ply_from`] over a whole file's bytes: the same header checks and
/// errors, and a binary body converted in place.
fn read_ply_mapped(bytes: &[u8], path: &Path) -> Result<Scene> {
    let header = read_header(&mut &bytes[..], path)?;
    if header.encoding == PlyEncoding::Ascii {
        return read_ply_from(bytes, path, Some(bytes.len() as u64));
    }
    let layout =
        Layout::new(&header.props).map_err(|(field, why)| Error::format(path, field, why))?;
    let avail = (bytes.len() as u64).saturating_sub(header.len);
    let n = binary_count(&header, &layout, path, Some(avail))?;
    let le = header.encoding == PlyEncoding::BinaryLittleEndian;
    let runs = layout.runs(le != NATIVE_LE, !le);
    let mut scene = new_scene(&layout, header.comments, n, true);
    // binary_count checked that the body is exactly n records.
    let body = &bytes[header.len as usize..];
    let dst = scene_rows_mut(&mut scene, 0, n);
    scatter_par(body, &layout, &runs, dst);
    Ok(scene)
}

/// The vertex count of a binary body, checked against the bytes the file
/// has after its header (`avail`, when known): exactly the records the
/// header declares, no fewer and no more.
fn binary_count(
    header: &Header,
    layout: &Layout,
    path: &Path,
    avail: Option<u64>,
) -> Result<usize> {
    let n64 = header.count;
    let n = usize::try_from(n64).map_err(|_| {
        Error::format(
            path,
            "vertex count",
            format!("{n64} vertices cannot be stored on this machine"),
        )
    })?;
    let s = layout.stride;
    let body = layout.body_len(n64).ok_or_else(|| {
        Error::format(
            path,
            "vertex count",
            format!("header says {n64} vertices of {s} bytes, more than 2^64 bytes"),
        )
    })?;
    match avail {
        Some(avail) if avail < body => Err(Error::format(
            path,
            "vertex count",
            format!(
                "truncated: header says {n} vertices of {s} bytes = {body} bytes but the body has {avail}"
            ),
        )),
        Some(avail) if avail > body => Err(Error::format(
            path,
            "vertex count",
            format!(
                "{} trailing bytes: header says {n} vertices of {s} bytes = {body} bytes but the body has {avail}",
                avail - body
            ),
        )),
        _ => Ok(n),
    }
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
            binary_count(&header, &layout, path, body_avail)?;
            let exact = body_avail.is_some();
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

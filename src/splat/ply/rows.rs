//! Moving rows between binary records and the scene's arrays, in pieces
//! on the rayon pool.

use rayon::prelude::*;

use super::layout::{EXT, Layout, NARR, REST, Run};
use crate::splat::scene::{Extras, Scene};

/// Target size of one chunk of binary records.
pub(super) const CHUNK_BYTES: usize = 4 << 20;
/// At most this many vertices per chunk.
pub(super) const MAX_CHUNK_ROWS: usize = 1 << 16;
/// Smallest number of rows worth handing to another thread.
pub(super) const MIN_PIECE_ROWS: usize = 512;
/// Whether this machine stores `f32` little-endian.
pub(super) const NATIVE_LE: bool = cfg!(target_endian = "little");

/// Scene arrays for `layout`: `n` zeroed Gaussians if `exact`, else none
/// with room for `n`.
pub(super) fn new_scene(layout: &Layout, comments: Vec<String>, n: usize, exact: bool) -> Scene {
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
pub(super) fn grow(s: &mut Scene, end: usize) {
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
pub(super) fn scene_rows_mut(s: &mut Scene, start: usize, end: usize) -> [&mut [u8]; NARR] {
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
pub(super) fn scene_rows(s: &Scene, start: usize, end: usize) -> [&[u8]; NARR] {
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
pub(super) fn piece_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(2 * threads).max(MIN_PIECE_ROWS)
}

/// Splits destination rows into pieces of `piece` rows.
pub(super) fn split_mut<'a>(
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
pub(super) fn split<'a>(
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
pub(super) fn swap_units(b: &mut [u8], unit: usize) {
    match unit {
        1 => {}
        2 => b.chunks_exact_mut(2).for_each(|u| u.reverse()),
        4 => b.chunks_exact_mut(4).for_each(|u| u.reverse()),
        _ => b.chunks_exact_mut(unit).for_each(|u| u.reverse()),
    }
}

/// Copies binary records into destination rows.
pub(super) fn scatter(
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
pub(super) fn gather(
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
pub(super) fn scatter_par(records: &[u8], layout: &Layout, runs: &[Run], dst: [&mut [u8]; NARR]) {
    let stride = layout.stride;
    let rows = records.len() / stride;
    let piece = piece_rows(rows);
    split_mut(dst, &layout.widths, rows, piece)
        .into_par_iter()
        .zip(records.par_chunks(piece * stride))
        .for_each(|(mut d, rec)| scatter(rec, stride, runs, &layout.widths, &mut d));
}

/// [`gather`] on the rayon pool.
pub(super) fn gather_par(records: &mut [u8], layout: &Layout, runs: &[Run], src: [&[u8]; NARR]) {
    let stride = layout.stride;
    let rows = records.len() / stride;
    let piece = piece_rows(rows);
    split(src, &layout.widths, rows, piece)
        .into_par_iter()
        .zip(records.par_chunks_mut(piece * stride))
        .for_each(|(s, rec)| gather(rec, stride, runs, &layout.widths, &s));
}

#[cfg(test)]
mod tests {
    use super::super::layout::POS;
    use super::*;

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

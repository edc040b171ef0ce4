//! Axis layouts: which axis of a tensor holds layers, tokens, heads and
//! head dimensions, and the transposition to (and back from) the codec's
//! `[layers][tokens][heads·head_dim]` order.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use super::{Dtype, NamedTensor, decode};
use crate::{Error, Result};

/// One axis of a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// `l`: a leading axis (layers, batch); any number, flattened in order.
    Layer,
    /// `t`: tokens.
    Token,
    /// `h`: heads.
    Head,
    /// `d`: the head dimension.
    HeadDim,
    /// `c`: channels, the whole width (heads·head_dim) on one axis.
    Channel,
}

impl Axis {
    fn letter(self) -> char {
        match self {
            Axis::Layer => 'l',
            Axis::Token => 't',
            Axis::Head => 'h',
            Axis::HeadDim => 'd',
            Axis::Channel => 'c',
        }
    }
}

/// The meaning of each axis of a tensor, outermost first, written as a
/// string of axis letters: `"tc"`, `"thd"`, `"lthd"`, or HF-style caches'
/// `"lhtd"` ([batch, heads, tokens, head_dim]). Exactly one `t`, and
/// either one `c` or one `h` and one `d`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    axes: Vec<Axis>,
}

impl Layout {
    /// Parses a string of axis letters.
    pub fn parse(s: &str) -> Result<Layout> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "layout {s:?}: {why} (letters: l layers, t tokens, h heads, d head_dim, c channels)"
            ))
        };
        let axes = s
            .chars()
            .map(|c| match c {
                'l' => Ok(Axis::Layer),
                't' => Ok(Axis::Token),
                'h' => Ok(Axis::Head),
                'd' => Ok(Axis::HeadDim),
                'c' => Ok(Axis::Channel),
                _ => Err(bad(&format!("{c:?} is not an axis letter"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = |a: Axis| axes.iter().filter(|&&x| x == a).count();
        if n(Axis::Token) != 1 {
            return Err(bad("needs exactly one t"));
        }
        match (n(Axis::Channel), n(Axis::Head), n(Axis::HeadDim)) {
            (1, 0, 0) | (0, 1, 1) => Ok(Layout { axes }),
            _ => Err(bad("needs either one c, or one h and one d")),
        }
    }

    /// The layout a tensor of `rank` has unless told: 2 → `"tc"`, 3 →
    /// `"thd"`, 4 → `"lthd"`.
    pub fn default_for_rank(rank: usize) -> Option<Layout> {
        let s = match rank {
            2 => "tc",
            3 => "thd",
            4 => "lthd",
            _ => return None,
        };
        Layout::parse(s).ok()
    }

    /// The axes, outermost first.
    pub fn axes(&self) -> &[Axis] {
        &self.axes
    }

    /// The order of this layout's axes in the canonical form: the leading
    /// axes in order, then tokens, then heads and head_dim (or channels).
    fn canonical_order(&self) -> Vec<usize> {
        let at = |a: Axis| self.axes.iter().enumerate().filter(move |(_, x)| **x == a);
        let mut perm: Vec<usize> = at(Axis::Layer).map(|(i, _)| i).collect();
        for a in [Axis::Token, Axis::Head, Axis::HeadDim, Axis::Channel] {
            perm.extend(at(a).map(|(i, _)| i));
        }
        perm
    }
}

impl FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Layout> {
        Layout::parse(s)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.axes
            .iter()
            .try_for_each(|a| write!(f, "{}", a.letter()))
    }
}

/// A key or value tensor in the codec's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    /// The product of the leading axes (1 when there are none).
    pub layers: usize,
    /// Tokens per layer.
    pub tokens: usize,
    /// Heads per token.
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// `[layers][tokens][heads·head_dim]`, row-major.
    pub data: Vec<f32>,
}

impl Canonical {
    /// Channels per token: heads·head_dim.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// The layout of `t` (given, or its rank's default) checked against its
/// shape: rank, and no empty axis.
fn checked_layout(name: &str, shape: &[usize], layout: Option<&Layout>) -> Result<Layout> {
    let layout = match layout {
        Some(l) => l.clone(),
        None => Layout::default_for_rank(shape.len()).ok_or_else(|| {
            Error::Shape(format!(
                "tensor {name:?} has shape {shape:?}: rank {} has no default layout \
                 (rank 2 is \"tc\", 3 \"thd\", 4 \"lthd\"); give one",
                shape.len()
            ))
        })?,
    };
    if layout.axes.len() != shape.len() {
        return Err(Error::Shape(format!(
            "tensor {name:?} has shape {shape:?} (rank {}) but layout \"{layout}\" has rank {}",
            shape.len(),
            layout.axes.len()
        )));
    }
    if let Some(i) = shape.iter().position(|&s| s == 0) {
        return Err(Error::EmptyInput {
            what: format!(
                "tensor {name:?} has shape {shape:?}: axis {i} ({}) is empty",
                layout.axes[i].letter()
            ),
        });
    }
    Ok(layout)
}

/// (layers, tokens, heads, head_dim) of a checked shape.
fn dims(
    name: &str,
    shape: &[usize],
    layout: &Layout,
    heads: Option<usize>,
) -> Result<(usize, usize, usize, usize)> {
    let size = |a: Axis| {
        layout
            .axes
            .iter()
            .zip(shape)
            .filter(|(x, _)| **x == a)
            .try_fold(1usize, |a, (_, &s)| a.checked_mul(s))
            .ok_or_else(|| Error::Shape(format!("tensor {name:?}: shape {shape:?} overflows")))
    };
    let (layers, tokens) = (size(Axis::Layer)?, size(Axis::Token)?);
    if heads == Some(0) {
        return Err(Error::InvalidArgument(
            "the number of heads must be at least 1".into(),
        ));
    }
    let (h, d) = if layout.axes.contains(&Axis::Channel) {
        let width = size(Axis::Channel)?;
        match heads {
            Some(h) if width % h != 0 => {
                return Err(Error::Shape(format!(
                    "width {width} of tensor {name:?} is not divisible by {h} heads"
                )));
            }
            Some(h) => (h, width / h),
            None => (1, width),
        }
    } else {
        let (h, d) = (size(Axis::Head)?, size(Axis::HeadDim)?);
        if let Some(want) = heads.filter(|&w| w != h) {
            return Err(Error::Shape(format!(
                "tensor {name:?} has {h} heads on its h axis (shape {shape:?}, layout \"{layout}\"), not {want}"
            )));
        }
        (h, d)
    };
    Ok((layers, tokens, h, d))
}

/// Fills `out`, the axes `perm` of a row-major array of `shape` in that
/// order, by runs: `read(offset, run)` fills `run` from the source
/// elements starting at `offset`, which are contiguous there.
fn gather<T: Send>(
    out: &mut [T],
    shape: &[usize],
    perm: &[usize],
    read: impl Fn(usize, &mut [T]) + Sync,
) {
    let r = shape.len();
    let mut stride = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    // The innermost output axes that are contiguous in the source make one run.
    let (mut k, mut run) = (r, 1usize);
    while k > 0 && stride[perm[k - 1]] == run {
        run *= shape[perm[k - 1]];
        k -= 1;
    }
    let outer: Vec<(usize, usize)> = perm[..k].iter().map(|&a| (shape[a], stride[a])).collect();
    const PIECE: usize = 1 << 14;
    out.par_chunks_mut(run.max(1))
        .enumerate()
        .for_each(|(ci, dst)| {
            let (mut rest, mut off) = (ci, 0usize);
            for &(n, s) in outer.iter().rev() {
                off += (rest % n) * s;
                rest /= n;
            }
            // Long runs (an identity layout is one run) are split for the pool.
            dst.par_chunks_mut(PIECE)
                .enumerate()
                .for_each(|(p, piece)| read(off + p * PIECE, piece));
        });
}

/// `t` in the codec's order: its leading axes flattened into layers,
/// then tokens, heads and head_dim. `layout` defaults by rank; `heads`
/// splits a `c` axis into heads·head_dim (and must agree with an `h`
/// axis). Errors name the tensor: not F32/F16/BF16, rank not matching the
/// layout, an empty axis, a width not divisible by `heads`, NaN or ±Inf
/// (with its index in `t`'s own shape).
pub fn to_canonical(
    t: &NamedTensor,
    layout: Option<&Layout>,
    heads: Option<usize>,
) -> Result<Canonical> {
    t.require_float()?;
    let layout = checked_layout(&t.name, &t.shape, layout)?;
    let (layers, tokens, heads, head_dim) = dims(&t.name, &t.shape, &layout, heads)?;
    t.check_finite()?;
    let mut data = vec![0f32; t.elements()];
    let (dtype, bytes) = (&t.dtype, t.bytes());
    gather(
        &mut data,
        &t.shape,
        &layout.canonical_order(),
        |off, dst| decode(dtype, bytes, off, dst),
    );
    Ok(Canonical {
        layers,
        tokens,
        heads,
        head_dim,
        data,
    })
}

/// The exact inverse of [`to_canonical`]: a tensor named `name` of `dtype`
/// and `shape` in `layout` (default by rank), holding `c`'s values rounded
/// to `dtype` (see [`NamedTensor::from_f32`]). `c`'s dimensions must be
/// those `shape` and `layout` give.
pub fn from_canonical(
    c: &Canonical,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    layout: Option<&Layout>,
) -> Result<NamedTensor> {
    let layout = checked_layout(name, shape, layout)?;
    let (layers, tokens, h, d) = dims(name, shape, &layout, Some(c.heads))?;
    let n = [tokens, h, d]
        .iter()
        .try_fold(layers, |a, &s| a.checked_mul(s));
    if (layers, tokens, h, d) != (c.layers, c.tokens, c.heads, c.head_dim)
        || n != Some(c.data.len())
    {
        return Err(Error::Shape(format!(
            "tensor {name:?}: shape {shape:?} in layout \"{layout}\" is {layers} layers × {tokens} tokens × {h} heads × {d}, \
             the canonical data is {} × {} × {} × {} ({} values)",
            c.layers,
            c.tokens,
            c.heads,
            c.head_dim,
            c.data.len()
        )));
    }
    let perm = layout.canonical_order();
    let mut inverse = vec![0; perm.len()];
    for (k, &a) in perm.iter().enumerate() {
        inverse[a] = k;
    }
    let cshape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let mut out = vec![0f32; c.data.len()];
    gather(&mut out, &cshape, &inverse, |off, dst| {
        dst.copy_from_slice(&c.data[off..off + dst.len()])
    });
    NamedTensor::from_f32(name, dtype, shape.to_vec(), &out)
}

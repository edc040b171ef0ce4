//! Views of N vectors of dimension d inside a wider f32 buffer.

use crate::{Error, Result};

/// N rows of length d, row i starting at `data[i * stride]`. With
/// `stride > d` the rows are read out of wider records without a copy, for
/// example the 45 SH values of a per-Gaussian record.
///
/// ```
/// use turboquant3d::Rows;
/// // Two records of 5 floats; the vectors are floats 1..4 of each.
/// let records = [9.0, 1.0, 2.0, 3.0, 9.0, 9.0, 4.0, 5.0, 6.0, 9.0];
/// let rows = Rows::strided(&records[1..], 3, 5, 2).unwrap();
/// assert_eq!(rows.row(1), &[4.0, 5.0, 6.0]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    dim: usize,
    stride: usize,
    count: usize,
}

fn check_layout(len: usize, dim: usize, stride: usize, count: usize) -> Result<()> {
    if dim == 0 {
        return Err(Error::Shape("rows of dimension 0".into()));
    }
    if stride < dim {
        return Err(Error::Shape(format!(
            "stride {stride} is smaller than the row length {dim}"
        )));
    }
    let need = match count {
        0 => 0,
        n => (n - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(dim))
            .ok_or_else(|| Error::Shape("row layout overflows".into()))?,
    };
    if len < need {
        return Err(Error::Shape(format!(
            "{count} rows of {dim} with stride {stride} need {need} values, the buffer has {len}"
        )));
    }
    Ok(())
}

impl<'a> Rows<'a> {
    /// Contiguous rows: `data.len()` must be a multiple of `dim`.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "{} values do not split into rows of length {dim}",
                data.len()
            )));
        }
        Ok(Rows {
            data,
            dim,
            stride: dim,
            count: data.len() / dim,
        })
    }

    /// `count` rows of length `dim`, `stride` values apart.
    pub fn strided(data: &'a [f32], dim: usize, stride: usize, count: usize) -> Result<Self> {
        check_layout(data.len(), dim, stride, count)?;
        Ok(Rows {
            data,
            dim,
            stride,
            count,
        })
    }

    /// The row length d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of rows N.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Row i.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.stride..i * self.stride + self.dim]
    }

    /// Rows `start..start + n` as a view.
    pub(crate) fn sub(&self, start: usize, n: usize) -> Rows<'a> {
        let from = (start * self.stride).min(self.data.len());
        Rows {
            data: &self.data[from..],
            dim: self.dim,
            stride: self.stride,
            count: n,
        }
    }
}

/// The mutable counterpart of [`Rows`], for decoding into wider records.
#[derive(Debug)]
pub struct RowsMut<'a> {
    data: &'a mut [f32],
    dim: usize,
    stride: usize,
    count: usize,
}

impl<'a> RowsMut<'a> {
    /// Contiguous rows.
    pub fn new(data: &'a mut [f32], dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "{} values do not split into rows of length {dim}",
                data.len()
            )));
        }
        let count = data.len() / dim;
        Ok(RowsMut {
            data,
            dim,
            stride: dim,
            count,
        })
    }

    /// `count` rows of length `dim`, `stride` values apart. Values between
    /// rows are left untouched.
    pub fn strided(data: &'a mut [f32], dim: usize, stride: usize, count: usize) -> Result<Self> {
        check_layout(data.len(), dim, stride, count)?;
        Ok(RowsMut {
            data,
            dim,
            stride,
            count,
        })
    }

    /// The row length d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of rows N.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    pub(crate) fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }
}

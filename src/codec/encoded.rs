//! An encoded batch: packed codes and one scale per vector, with the
//! lengths checked against (d, b, N).

use crate::codec::codebook::validate_params;
use crate::codec::packing::packed_len;
use crate::codec::scales::Scales;
use crate::{Error, Result};

/// N encoded vectors: packed codes and one scale each.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    // Crate-visible so that the quantizer, which produces consistent
    // lengths by construction, builds one without re-checking them.
    pub(crate) dim: usize,
    pub(crate) bits: u32,
    pub(crate) count: usize,
    pub(crate) codes: Vec<u8>,
    pub(crate) scales: Scales,
}

impl Encoded {
    /// Assembles encoded data, checking that the lengths agree.
    pub fn from_parts(
        dim: usize,
        bits: u32,
        count: usize,
        codes: Vec<u8>,
        scales: Scales,
    ) -> Result<Encoded> {
        validate_params(dim, bits)?;
        let want = count.checked_mul(dim).map(|n| packed_len(n, bits));
        if want != Some(codes.len()) {
            return Err(Error::Shape(format!(
                "{count} vectors of d = {dim}, b = {bits} need {want:?} code bytes, got {}",
                codes.len()
            )));
        }
        if scales.len() != count {
            return Err(Error::Shape(format!(
                "{count} vectors need {count} scales, got {}",
                scales.len()
            )));
        }
        if let Some(i) = (0..count).find(|&i| !scales.get(i).is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "scale of vector {i} is not finite"
            )));
        }
        Ok(Encoded {
            dim,
            bits,
            count,
            codes,
            scales,
        })
    }

    /// Vector dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bits per coordinate b.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of vectors N.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether N = 0.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The packed code stream ([`crate::packing`] layout).
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The per-vector scales.
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// The packed codes and the scales, giving up the rest.
    pub fn into_parts(self) -> (Vec<u8>, Scales) {
        (self.codes, self.scales)
    }

    /// Codes plus scales, in bytes.
    pub fn payload_bytes(&self) -> usize {
        self.codes.len() + self.count * self.scales.format().bytes()
    }
}

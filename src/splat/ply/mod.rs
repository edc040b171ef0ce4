//! PLY input and output for 3D Gaussian Splatting scenes.
//!
//! Only the `vertex` element is read (other elements must be empty). The
//! 3DGS properties (`x y z`, optional `nx ny nz`, `f_dc_0..2`,
//! `f_rest_0..K-1` with K ∈ {0, 9, 24, 45}, `opacity`, `scale_0..2`,
//! `rot_0..3`) may come in any order and must be `float`; every other scalar
//! property is kept losslessly in [`Scene::extras`](crate::splat::Scene::extras).
//!
//! Reading streams the body in chunks of records and never holds the file in
//! memory. Each property is resolved once to a (record offset, destination
//! array, destination offset) triple, neighbouring properties are merged into
//! one copy, and the chunks are converted on the rayon pool while the next
//! chunk is read. Writing is the mirror image.

mod header;
mod layout;
mod read;
mod rows;
mod write;

pub use read::{read_ply, read_ply_from};
pub use write::{ply_size, write_ply, write_ply_to};

/// How a PLY body is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PlyEncoding {
    /// `binary_little_endian`, what 3DGS trainers write.
    #[default]
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

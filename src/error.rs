//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in turboquant3d. Each variant names the
/// file, field or row involved so the message alone is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vector dimension is outside what the codec supports.
    #[error("dimension d = {dim} is out of range: {why}")]
    InvalidDim { dim: usize, why: &'static str },

    /// The bit width is outside 1..=8.
    #[error("bit width b = {bits} is out of range: b must be in 1..=8")]
    InvalidBits { bits: u32 },

    /// A NaN or an infinity in the input.
    #[error("row {row}, column {col}: value {value} is not finite (NaN or ±Inf cannot be encoded)")]
    NonFinite { row: usize, col: usize, value: f32 },

    /// A vector's scale cannot be stored in the chosen scale format.
    #[error("row {row}: scale {scale:e} cannot be stored as {format} ({why})")]
    ScaleUnrepresentable {
        row: usize,
        scale: f64,
        format: &'static str,
        why: &'static str,
    },

    /// There was nothing to encode.
    #[error("empty input: {what}")]
    EmptyInput { what: String },

    /// Lengths, strides or shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A path that must not be written: the input itself, a device, a
    /// folder or anything else that is not a regular file.
    #[error("{}: {why}", path.display())]
    Output { path: PathBuf, why: String },

    /// A file that is not what it claims to be: wrong magic, version, field
    /// value or length. `field` names the offending part.
    #[error("{}: invalid {field}: {why}", path.display())]
    Format {
        path: PathBuf,
        field: String,
        why: String,
    },

    /// A stored checksum disagrees with the bytes: the file is corrupted.
    #[error("{}: checksum mismatch in {section} (stored {stored:#010x}, computed {computed:#010x}): the file is corrupted", path.display())]
    Checksum {
        path: PathBuf,
        section: String,
        stored: u32,
        computed: u32,
    },

    /// The GPU failed: no adapter, a lost device, an allocation or
    /// validation failure, or a failed readback.
    #[error("GPU: {0}")]
    Gpu(String),

    /// This configuration has no GPU kernel; the CPU path handles it.
    #[error("GPU: unsupported configuration: {0}")]
    GpuUnsupported(String),

    /// An argument that makes no sense on its own.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An error about the contents of a named file (see [`Error::in_file`]).
    #[error("{}: {source}", path.display())]
    InFile { path: PathBuf, source: Box<Error> },
}

/// Shorthand for `std::result::Result<T, turboquant3d::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error, said of the file at `path`: errors that already name a
    /// file come back unchanged, the others (a non-finite value, a row, a
    /// Gaussian) are wrapped so that the message names `path` first.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        match self {
            Error::Io { .. }
            | Error::Output { .. }
            | Error::Format { .. }
            | Error::Checksum { .. }
            | Error::InFile { .. } => self,
            e => Error::InFile {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            field: field.into(),
            why: why.into(),
        }
    }
}

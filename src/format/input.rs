//! Reading inputs whose header declares their length: read the header, ask
//! the format how long the file says it is, read exactly that (and one byte
//! more, so that trailing data is still reported), and stop. A device or a
//! pipe that never ends (`/dev/zero`) costs one header's worth of reading,
//! never all the memory there is.
//!
//! [`map_declared`] is the same contract without the copy: a regular file is
//! memory-mapped and the format sees the mapped bytes in place (the kernel
//! pages in only what is touched); anything else (a pipe, a device) is read
//! as [`read_declared`] reads it.

use std::io::Read;
use std::ops::Deref;
use std::path::Path;

use crate::{Error, Result};

/// What a format knows about a file's length from the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// At least this many bytes are needed to say more.
    Need(u64),
    /// The whole file is this many bytes.
    Total(u64),
}

/// Reads the file at `path` as far as `extent` declares it. `extent` sees
/// the bytes read so far and either asks for more, gives the total, or
/// rejects the header. A file that ends early comes back short, for the
/// format's parser to report as truncated; a file longer than declared
/// comes back with one extra byte, for the parser to report as trailing.
pub(crate) fn read_declared(
    path: &Path,
    mut extent: impl FnMut(&[u8]) -> Result<Extent>,
) -> Result<Vec<u8>> {
    let io = |e| Error::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.is_dir() {
        return Err(Error::format(path, "file", "is a folder, not a file"));
    }
    let mut buf = Vec::new();
    loop {
        let (want, total) = match extent(&buf)? {
            Extent::Need(n) => (n, false),
            Extent::Total(n) => (n, true),
        };
        let have = buf.len() as u64;
        if want > have {
            (&mut file)
                .take(want - have)
                .read_to_end(&mut buf)
                .map_err(io)?;
            if (buf.len() as u64) < want {
                return Ok(buf); // ended early: truncated
            }
        } else if !total {
            // A format that asks for what it already has would loop.
            return Err(Error::format(path, "header", "declares no length"));
        }
        if total {
            let mut one = [0u8; 1];
            let extra = loop {
                match file.read(&mut one) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            };
            buf.extend_from_slice(&one[..extra]);
            return Ok(buf);
        }
    }
}

/// The bytes of an input: mapped from a regular file, or read into memory.
pub(crate) enum Input {
    /// A read-only map of the file, and how much of it the format declared
    /// (plus at most one trailing byte, as [`read_declared`] returns).
    Mapped(memmap2::Mmap, usize),
    /// Bytes read by [`read_declared`].
    Read(Vec<u8>),
}

impl Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Mapped(m, len) => &m[..*len],
            Input::Read(v) => v,
        }
    }
}

/// [`read_declared`] without the copy for a regular, non-empty file: the
/// file is memory-mapped and `extent` sees the same prefixes it would have
/// been given by reading, so the result (truncated, exact, or one byte
/// over) is the same bytes. Inputs that cannot be mapped (pipes, devices,
/// empty files, a failed map) are read by [`read_declared`].
///
/// A map is a view of the file, not a copy: the file must not be truncated
/// or rewritten by another process while it is read (a truncation would
/// fault on the next page touched), which is the usual contract of a
/// command-line input.
pub(crate) fn map_declared(
    path: &Path,
    mut extent: impl FnMut(&[u8]) -> Result<Extent>,
) -> Result<Input> {
    let io = |e| Error::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(Error::format(path, "file", "is a folder, not a file"));
    }
    let len = usize::try_from(meta.len()).ok().filter(|&l| l > 0);
    // Populated: one call maps every page already in the page cache, where
    // faulting them in one by one as the parser touches them costs more
    // than the copy it saves. SAFETY: the map is read-only and private to
    // this process; see the function's docs for what a concurrent writer
    // may do to it.
    let map = match len {
        Some(_) if meta.is_file() => {
            unsafe { memmap2::MmapOptions::new().populate().map(&file) }.ok()
        }
        _ => None,
    };
    let Some(map) = map else {
        drop(file);
        return read_declared(path, extent).map(Input::Read);
    };
    let file_len = map.len() as u64;
    let mut have = 0u64;
    loop {
        let (want, total) = match extent(&map[..have as usize])? {
            Extent::Need(n) => (n, false),
            Extent::Total(n) => (n, true),
        };
        if want > have {
            have = want.min(file_len);
            if have < want {
                return Ok(Input::Mapped(map, have as usize)); // truncated
            }
        } else if !total {
            return Err(Error::format(path, "header", "declares no length"));
        }
        if total {
            // One byte past the declared end, as read_declared reads it.
            return Ok(Input::Mapped(map, (have + 1).min(file_len) as usize));
        }
    }
}

/// Checked `a + b` for a length declared by a file, naming `field`.
pub(crate) fn add_len(a: u64, b: u64, path: &Path, field: &str) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| Error::format(path, field, "declared lengths overflow"))
}

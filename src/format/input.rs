//! Reading inputs whose header declares their length: read the header, ask
//! the format how long the file says it is, read exactly that (and one byte
//! more, so that trailing data is still reported), and stop. A device or a
//! pipe that never ends (`/dev/zero`) costs one header's worth of reading,
//! never all the memory there is.

use std::io::Read;
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

/// Checked `a + b` for a length declared by a file, naming `field`.
pub(crate) fn add_len(a: u64, b: u64, path: &Path, field: &str) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| Error::format(path, field, "declared lengths overflow"))
}

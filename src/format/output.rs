//! Writing outputs: every file is written atomically (a temporary file in
//! the same folder, renamed into place only once it is complete), and only
//! where a user would expect bytes to land.
//!
//! - `-` names standard output, written as the bytes are produced;
//! - a symlink is followed and its target replaced, never the link itself;
//! - anything that exists and is not a regular file (a device such as
//!   `/dev/null`, a FIFO, a folder) is refused, so no device node is ever
//!   replaced by a regular file;
//! - [`check_distinct`] refuses an output that is one of the inputs, by the
//!   identity of the file (device and inode), not by the spelling of the path.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The path that names standard output.
pub const STDOUT: &str = "-";

/// Whether `path` is [`STDOUT`].
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == STDOUT
}

/// Refuses `output` when it is the same file as any of `inputs` (hard links
/// and symlinks included). An output that does not exist yet, or is `-`,
/// is distinct from everything.
pub fn check_distinct(output: &Path, inputs: &[&Path]) -> Result<()> {
    if is_stdout(output) || !output.exists() {
        return Ok(());
    }
    // Refuse a device, FIFO or folder now rather than after the work; and
    // compare only regular files, since opening a FIFO to compare it blocks.
    resolve(output)?;
    let regular = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    for input in inputs.iter().filter(|i| regular(i)) {
        if same_file::is_same_file(input, output).unwrap_or(false) {
            return Err(Error::Output {
                path: output.into(),
                why: format!(
                    "is the input {} itself; writing it would destroy the input",
                    input.display()
                ),
            });
        }
    }
    Ok(())
}

/// Where a write to `path` lands: the target of a symlink, or `path`.
/// Refuses a dangling symlink and anything that exists but is not a
/// regular file.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let refuse = |why: &str| Error::Output {
        path: path.into(),
        why: why.into(),
    };
    let target = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.into()),
        Err(e) => return Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(t) => t,
            Err(_) => return Err(refuse("is a symlink to a file that does not exist")),
        },
        Ok(_) => path.into(),
    };
    let meta = std::fs::metadata(&target).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(refuse("is a folder; name a file to write"));
    }
    if !meta.is_file() {
        return Err(refuse(
            "is not a regular file (a device, FIFO or socket); outputs are written only to \
             regular files, or to standard output as `-`",
        ));
    }
    Ok(target)
}

/// Writes a file atomically: `fill` writes into a temporary file beside the
/// destination, which replaces it only if everything succeeded. On any
/// error the temporary file is removed and the destination is left as it
/// was. `path` may be `-` (standard output) or a symlink (its target is
/// written); see the module docs for what is refused. Returns the number of
/// bytes written.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<u64> {
    if is_stdout(path) {
        let stdout = std::io::stdout();
        let mut w = Counted(BufWriter::with_capacity(1 << 20, stdout.lock()), 0);
        fill(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
        return Ok(w.1);
    }
    let target = resolve(path)?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            target.file_name().and_then(|n| n.to_str()).unwrap_or("out")
        ))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(path, e))?;
    let mut w = Counted(BufWriter::with_capacity(1 << 20, tmp), 0);
    fill(&mut w)?;
    let written = w.1;
    let tmp =
        w.0.into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
    let t = Instant::now();
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    SYNC_NANOS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    tmp.persist(&target).map_err(|e| Error::io(path, e.error))?;
    Ok(written)
}

/// Nanoseconds this process has spent in the fsync of [`write_atomic`].
static SYNC_NANOS: AtomicU64 = AtomicU64::new(0);

/// Time this process has spent so far making written files durable (the
/// fsync before each atomic rename), for profiles: it is part of a write's
/// time, and on a slow disk most of it.
pub fn sync_time() -> Duration {
    Duration::from_nanos(SYNC_NANOS.load(Ordering::Relaxed))
}

/// A writer that counts the bytes it passes on.
struct Counted<W>(W, u64);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

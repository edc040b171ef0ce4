//! Every scene format in one place: which format a path holds (by its
//! first bytes where the format has a magic, else by extension), and
//! reading or writing a [`Scene`] in it.
//!
//! | format | read | write | told by |
//! |---|---|---|---|
//! | 3DGS PLY (binary or ASCII) | yes | yes | `ply` line |
//! | antimatter15 `.splat` | yes | yes | extension (no header) |
//! | turboquant3d `.tq3s` | yes | yes (`tq3d compress`) | magic `TQ3D-SCN` |

use std::io::Read;
use std::path::Path;

use super::scene::Scene;
use super::{antimatter, container, ply};
use crate::{Error, Result};

/// A scene format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SceneFormat {
    /// The original 3DGS PLY layout.
    Ply,
    /// The antimatter15 `.splat` layout (32 bytes per Gaussian, degree 0).
    Splat,
    /// turboquant3d's compressed scene container.
    Tq3s,
}

impl SceneFormat {
    /// A short name, as `tq3d info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            SceneFormat::Ply => "3DGS PLY",
            SceneFormat::Splat => "antimatter15 .splat",
            SceneFormat::Tq3s => "turboquant3d .tq3s",
        }
    }
}

/// Bytes enough for every magic this module tells apart.
const MAGIC_BYTES: u64 = 16;

fn extension_is(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The format of the file at `path`: its magic where it has one, else its
/// extension. A file whose magic and extension say nothing is refused with
/// the formats that are read.
pub fn detect(path: &Path) -> Result<SceneFormat> {
    let mut head = Vec::new();
    let io = |e| Error::io(path, e);
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAGIC_BYTES)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.len() < container::MAGIC.len() {
        return Err(Error::format(
            path,
            "length",
            format!("{} bytes: too short to be a scene file", head.len()),
        ));
    }
    if head.starts_with(&container::MAGIC) {
        return Ok(SceneFormat::Tq3s);
    }
    if head.starts_with(b"ply\n") || head.starts_with(b"ply\r\n") {
        return Ok(SceneFormat::Ply);
    }
    if antimatter::is_splat_path(path) {
        return Ok(SceneFormat::Splat);
    }
    if extension_is(path, "ply") {
        return Ok(SceneFormat::Ply); // the PLY reader names what is wrong
    }
    Err(Error::format(
        path,
        "format",
        "not a scene this reads: expected a 3DGS .ply, a .splat or a .tq3s",
    ))
}

/// The format a path's extension asks to be written, if this writes it.
/// `.tq3s` is written by compressing ([`crate::splat::compress`]), so
/// [`write_scene`] leaves it to the caller.
pub fn output_format(path: &Path) -> Option<SceneFormat> {
    if crate::format::output::is_stdout(path) || extension_is(path, "ply") {
        Some(SceneFormat::Ply)
    } else if antimatter::is_splat_path(path) {
        Some(SceneFormat::Splat)
    } else if extension_is(path, "tq3s") {
        Some(SceneFormat::Tq3s)
    } else {
        None
    }
}

/// The extensions [`output_format`] knows, for messages.
pub const WRITABLE: &str = ".ply, .splat, .tq3s";

/// How [`write_scene`] writes formats with choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// The PLY body encoding.
    pub ply_encoding: ply::PlyEncoding,
}

/// Writes `scene` in the format `path`'s extension names (`-` is a PLY on
/// standard output); returns the bytes written. `.tq3s` is refused here:
/// it needs compression options (see [`crate::splat::compress`]).
pub fn write_scene(path: &Path, scene: &Scene, opts: &WriteOptions) -> Result<u64> {
    match output_format(path) {
        Some(SceneFormat::Ply) => ply::write_ply(path, scene, opts.ply_encoding),
        Some(SceneFormat::Splat) => antimatter::write_splat(path, scene),
        Some(SceneFormat::Tq3s) => Err(Error::InvalidArgument(format!(
            "{}: a .tq3s is written by compressing (tq3d compress, splat::compress)",
            path.display()
        ))),
        None => Err(Error::InvalidArgument(format!(
            "{}: cannot tell the output format from the extension; writable: {WRITABLE}",
            path.display()
        ))),
    }
}

/// Header facts of a file in a foreign format, for `tq3d info`: ordered
/// key/value pairs (empty for formats without a header).
pub fn describe(path: &Path, format: SceneFormat) -> Result<Vec<(String, String)>> {
    let _ = path;
    Ok(match format {
        SceneFormat::Ply | SceneFormat::Splat | SceneFormat::Tq3s => Vec::new(),
    })
}

/// Reads a scene in any readable format.
pub fn read_scene(path: &Path) -> Result<Scene> {
    match detect(path)? {
        SceneFormat::Ply => ply::read_ply(path),
        SceneFormat::Splat => antimatter::read_splat(path),
        SceneFormat::Tq3s => super::read(path),
    }
}

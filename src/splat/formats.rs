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

/// Reads a scene in any readable format.
pub fn read_scene(path: &Path) -> Result<Scene> {
    match detect(path)? {
        SceneFormat::Ply => ply::read_ply(path),
        SceneFormat::Splat => antimatter::read_splat(path),
        SceneFormat::Tq3s => super::read(path),
    }
}

//! Every scene format in one place: which format a path holds (by its
//! first bytes where the format has a magic, else by extension), and
//! reading or writing a [`Scene`] in it.
//!
//! | format | read | write | told by |
//! |---|---|---|---|
//! | 3DGS PLY (binary or ASCII) | yes | yes | `ply` line |
//! | antimatter15 `.splat` | yes | yes | extension (no header) |
//! | turboquant3d `.tq3s` | yes | yes (`tq3d compress`) | magic `TQ3D-SCN` |
//! | PlayCanvas compressed PLY | yes | no | `ply` line, then `element chunk` |
//! | Niantic `.spz` v2–v4 | yes | yes (v3, v4) | gzip (v2, v3) or `NGSP` (v4) |
//! | PlayCanvas SOG | yes | no | zip (`.sog`), `meta.json`, or a folder holding one |
//! | glTF 2.0 `.glb`, `KHR_gaussian_splatting` | yes | yes | `glTF` |

use std::io::Read;
use std::path::Path;

use super::scene::Scene;
use super::{antimatter, compressed_ply, container, gltf, ply, sog, spz};
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
    /// PlayCanvas's chunked, quantised PLY.
    CompressedPly,
    /// Niantic's spz (v2–v4).
    Spz,
    /// PlayCanvas's SOG: a zip, a `meta.json`, or a folder holding one.
    Sog,
    /// glTF 2.0 binary with `KHR_gaussian_splatting`.
    Glb,
}

impl SceneFormat {
    /// A short name, as `tq3d info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            SceneFormat::Ply => "3DGS PLY",
            SceneFormat::Splat => "antimatter15 .splat",
            SceneFormat::Tq3s => "turboquant3d .tq3s",
            SceneFormat::CompressedPly => "PlayCanvas compressed PLY",
            SceneFormat::Spz => "Niantic spz",
            SceneFormat::Sog => "PlayCanvas SOG",
            SceneFormat::Glb => "glTF 2.0 binary (KHR_gaussian_splatting)",
        }
    }
}

/// Bytes enough for every magic this module tells apart, and for a
/// compressed PLY's `element chunk` line.
const MAGIC_BYTES: u64 = 4096;

fn extension_is(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The format of the file at `path`: its magic where it has one, else its
/// extension. A file whose magic and extension say nothing is refused with
/// the formats that are read.
pub fn detect(path: &Path) -> Result<SceneFormat> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        if path.join("meta.json").is_file() {
            return Ok(SceneFormat::Sog);
        }
        return Err(Error::format(
            path,
            "format",
            "a folder is read only as an unpacked SOG, and this one holds no meta.json",
        ));
    }
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
        if compressed_ply::is_compressed_ply_header(&head) {
            return Ok(SceneFormat::CompressedPly);
        }
        return Ok(SceneFormat::Ply);
    }
    if head.starts_with(&spz::GZIP_MAGIC) || head.starts_with(&spz::MAGIC) {
        return Ok(SceneFormat::Spz);
    }
    if head.starts_with(b"PK\x03\x04") || sog::is_sog_path(path) {
        return Ok(SceneFormat::Sog);
    }
    if head.starts_with(b"glTF") {
        return Ok(SceneFormat::Glb);
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
        format!("not a scene this reads: expected {READABLE}"),
    ))
}

/// The format a path's extension asks to be written, if this writes it.
/// `.tq3s` is written by compressing ([`crate::splat::compress`]), so
/// [`write_scene`] leaves it to the caller.
pub fn output_format(path: &Path) -> Option<SceneFormat> {
    if compressed_ply::is_compressed_ply_path(path) {
        Some(SceneFormat::CompressedPly)
    } else if sog::is_sog_path(path) {
        Some(SceneFormat::Sog)
    } else if crate::format::output::is_stdout(path) || extension_is(path, "ply") {
        Some(SceneFormat::Ply)
    } else if antimatter::is_splat_path(path) {
        Some(SceneFormat::Splat)
    } else if extension_is(path, "tq3s") {
        Some(SceneFormat::Tq3s)
    } else if spz::is_spz_path(path) {
        Some(SceneFormat::Spz)
    } else if gltf::is_glb_path(path) {
        Some(SceneFormat::Glb)
    } else {
        None
    }
}

/// The extensions [`output_format`] knows, for messages.
pub const WRITABLE: &str = ".ply, .splat, .spz, .glb, .tq3s";

/// What [`read_scene`] reads, for messages.
pub const READABLE: &str =
    "a 3DGS .ply, a .compressed.ply, a .splat, an .spz, a .sog (or meta.json), a .glb or a .tq3s";

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
        Some(SceneFormat::Spz) => spz::write_spz(path, scene),
        Some(SceneFormat::Glb) => gltf::write_glb(path, scene),
        Some(SceneFormat::Tq3s) => Err(Error::InvalidArgument(format!(
            "{}: a .tq3s is written by compressing (tq3d compress, splat::compress)",
            path.display()
        ))),
        Some(f @ (SceneFormat::CompressedPly | SceneFormat::Sog)) => {
            Err(Error::InvalidArgument(format!(
                "{}: {} is read, not written; writable: {WRITABLE}",
                path.display(),
                f.name()
            )))
        }
        None => Err(Error::InvalidArgument(format!(
            "{}: cannot tell the output format from the extension; writable: {WRITABLE}",
            path.display()
        ))),
    }
}

/// Header facts of a file in a foreign format, for `tq3d info`: ordered
/// key/value pairs (empty for formats without a header).
pub fn describe(path: &Path, format: SceneFormat) -> Result<Vec<(String, String)>> {
    let whole = || -> Result<Vec<u8>> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::format(path, "file", "must be a regular file"));
        }
        std::fs::read(path).map_err(|e| Error::io(path, e))
    };
    match format {
        SceneFormat::Ply | SceneFormat::Splat | SceneFormat::Tq3s => Ok(Vec::new()),
        SceneFormat::CompressedPly => compressed_ply::describe_compressed_ply(&whole()?, path),
        SceneFormat::Spz => spz::describe_spz(&whole()?, path),
        SceneFormat::Glb => gltf::describe_glb(&whole()?, path),
        SceneFormat::Sog if path.is_dir() => {
            let meta = path.join("meta.json");
            let bytes = std::fs::read(&meta).map_err(|e| Error::io(&meta, e))?;
            sog::describe_sog(&bytes, &meta)
        }
        SceneFormat::Sog => sog::describe_sog(&whole()?, path),
    }
}

/// Reads a scene in any readable format.
pub fn read_scene(path: &Path) -> Result<Scene> {
    match detect(path)? {
        SceneFormat::Ply => ply::read_ply(path),
        SceneFormat::Splat => antimatter::read_splat(path),
        SceneFormat::Tq3s => super::read(path),
        SceneFormat::CompressedPly => compressed_ply::read_compressed_ply(path),
        SceneFormat::Spz => spz::read_spz(path),
        SceneFormat::Sog => sog::read_sog(path),
        SceneFormat::Glb => gltf::read_glb(path),
    }
}

//! Reading a scene back: a `.tq3s` file into a [`Scene`], with its SH-rest
//! decoded or left compressed for a renderer to decode in its own shader.

mod file;

use file::decode_file;

use std::path::Path;

use crate::splat::scene::Scene;
use crate::splat::sh::CompressedSh;
use crate::{Error, Result};

/// Reads a `.tq3s` file into a scene.
pub fn read(path: &Path) -> Result<Scene> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decompress(&bytes, path)
}

/// Decodes a `.tq3s` file's bytes into a scene (`path` names it in errors).
pub fn decompress(bytes: &[u8], path: &Path) -> Result<Scene> {
    decode_file(bytes, path, true).map(|(scene, _)| scene)
}

/// Decodes a file but leaves SH-rest compressed: the scene comes back with
/// SH degree 0 and no SH-rest, and the SH-rest as stored (`None` when the
/// file has none). A renderer uploads the codes and decodes them in its own
/// shader.
pub fn decompress_split(bytes: &[u8], path: &Path) -> Result<(Scene, Option<CompressedSh>)> {
    decode_file(bytes, path, false)
}

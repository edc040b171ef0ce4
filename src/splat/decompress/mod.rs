//! Reading a scene back: a `.tq3s` file into a [`Scene`], with its SH-rest
//! decoded or left compressed for a renderer to decode in its own shader.

mod file;

use file::decode_file;

use std::path::Path;

use crate::Result;
use crate::splat::scene::Scene;
use crate::splat::sh::CompressedSh;

/// Reads a `.tq3s` file into a scene.
pub fn read(path: &Path) -> Result<Scene> {
    decompress(&crate::splat::container::read_bytes(path)?, path)
}

/// Decodes a `.tq3s` file's bytes into a scene (`path` names it in errors).
pub fn decompress(bytes: &[u8], path: &Path) -> Result<Scene> {
    decode_file(bytes, path, true).map(|(scene, _)| scene)
}

/// Decodes a file but leaves SH-rest compressed: the scene comes back with
/// SH degree 0 and no SH-rest, and the SH-rest as stored (`None` when the
/// file has none). A renderer uploads the codes and decodes them in its own
/// shader. A file with bit-exact SH-rest (format version 4) has no codes to
/// keep: its scene comes back whole, SH-rest included, with `None`.
///
/// ```
/// use std::path::Path;
/// use turboquant3d::splat::{self, CompressOptions};
/// use turboquant3d::splat::synth::{SynthConfig, generate};
/// let scene = generate(&SynthConfig { count: 300, sh_degree: 2, seed: 5 });
/// let bytes = splat::compress(&scene, &CompressOptions::default())
///     .unwrap()
///     .to_bytes()
///     .unwrap();
/// let path = Path::new("scene.tq3s");
/// let (split, sh) = splat::decompress_split(&bytes, path).unwrap();
/// let sh = sh.unwrap();
/// assert_eq!((split.sh_degree, sh.len(), sh.dim()), (0, 300, 24));
/// // Decoding the kept SH-rest gives what `decompress` gives.
/// assert_eq!(sh.decode().unwrap(), splat::decompress(&bytes, path).unwrap().sh_rest);
/// ```
pub fn decompress_split(bytes: &[u8], path: &Path) -> Result<(Scene, Option<CompressedSh>)> {
    decode_file(bytes, path, false)
}

//! PNG output and input of [`Image`]s: 8-bit RGB, values mapped linearly
//! (no sRGB transfer function applied or assumed).

use std::io::BufReader;
use std::path::Path;

use super::Image;
use crate::{Error, Result};

/// One channel value as a byte: clamp(v, 0, 1)·255, rounded (NaN → 0).
pub fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Writes `img` as an 8-bit RGB PNG, each value clamp(0, 1)·255 rounded,
/// atomically (a temporary file renamed over `path`).
///
/// # Errors
/// [`Error::Shape`] if the image's data does not match its size, I/O and
/// encoder errors naming `path`.
pub fn write_png(path: &Path, img: &Image) -> Result<()> {
    let want = img.width as usize * img.height as usize * 3;
    if img.data.len() != want {
        return Err(Error::Shape(format!(
            "{}: a {}×{} image holds {} values, expected {want}",
            path.display(),
            img.width,
            img.height,
            img.data.len()
        )));
    }
    if img.width == 0 || img.height == 0 {
        return Err(Error::format(
            path,
            "image size",
            "PNG cannot hold an empty image",
        ));
    }
    let bytes: Vec<u8> = img.data.iter().map(|&v| to_u8(v)).collect();
    crate::format::write_atomic(path, |w| {
        let enc_err = |e: png::EncodingError| Error::format(path, "PNG", e.to_string());
        let mut enc = png::Encoder::new(w, img.width, img.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(enc_err)?;
        writer.write_image_data(&bytes).map_err(enc_err)?;
        writer.finish().map_err(enc_err)
    })
    .map(drop)
}

/// Reads an 8-bit RGB or RGBA PNG (alpha ignored) as values /255.
///
/// # Errors
/// I/O errors, undecodable files and other colour types or bit depths, all
/// naming `path`.
pub fn read_png(path: &Path) -> Result<Image> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: String| Error::format(path, "PNG", why);
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    let channels = match (info.color_type, info.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
        (ct, bd) => {
            return Err(bad(format!(
                "{ct:?} at {bd:?} bits; expected 8-bit RGB or RGBA"
            )));
        }
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let mut data = Vec::with_capacity(w * h * 3);
    for row in buf[..info.buffer_size()]
        .chunks_exact(info.line_size)
        .take(h)
    {
        for px in row[..w * channels].chunks_exact(channels) {
            data.extend(px[..3].iter().map(|&b| f32::from(b) / 255.0));
        }
    }
    Ok(Image {
        width: info.width,
        height: info.height,
        data,
    })
}

//! A reader for the X Window Dump files `xwd` writes (X11 XWD version 7):
//! ZPixmap TrueColor images of 24 or 32 bits per pixel, which is what
//! `xwd -id WINDOW` gives on a 24-bit Xvfb screen.
//!
//! | offset | field (big-endian u32 each) |
//! |---|---|
//! | 0 | header_size (header + window name, bytes) |
//! | 4 | file_version (7) |
//! | 8 | pixmap_format (2 = ZPixmap) |
//! | 12 | pixmap_depth |
//! | 16, 20 | pixmap_width, pixmap_height |
//! | 28 | byte_order (0 = LSB first) |
//! | 44 | bits_per_pixel |
//! | 48 | bytes_per_line |
//! | 52 | visual_class (4 = TrueColor, 5 = DirectColor) |
//! | 56, 60, 64 | red_mask, green_mask, blue_mask |
//! | 76 | ncolors (12-byte XWDColor entries after the header) |
//!
//! Pixels follow the header and the colour entries, `bytes_per_line` per
//! row.

/// An RGB image, 8 bits per channel, row-major.
#[derive(Debug, Clone)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Parses an XWD file; `Err` says which field is not what this reader
/// handles.
pub fn parse(bytes: &[u8]) -> Result<Rgb8, String> {
    let field = |i: usize| -> Result<u32, String> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("XWD: {} bytes, too short for the header", bytes.len()))
    };
    let header_size = field(0)? as usize;
    let (version, format) = (field(1)?, field(2)?);
    if version != 7 || format != 2 {
        return Err(format!(
            "XWD: version {version}, pixmap format {format}; expected 7 and 2 (ZPixmap)"
        ));
    }
    let (width, height) = (field(4)?, field(5)?);
    let byte_order = field(7)?;
    let bpp = field(11)?;
    let bytes_per_line = field(12)? as usize;
    let class = field(13)?;
    let masks = [field(14)?, field(15)?, field(16)?];
    let ncolors = field(19)? as usize;
    if bpp != 32 && bpp != 24 {
        return Err(format!("XWD: {bpp} bits per pixel; expected 24 or 32"));
    }
    if class != 4 && class != 5 {
        return Err(format!(
            "XWD: visual class {class}; expected TrueColor (4) or DirectColor (5)"
        ));
    }
    let start = header_size + 12 * ncolors;
    let px_bytes = bpp as usize / 8;
    let need = start + bytes_per_line * height as usize;
    if bytes.len() < need || bytes_per_line < px_bytes * width as usize {
        return Err(format!(
            "XWD: {} bytes, {width}×{height} at {bytes_per_line} bytes per line needs {need}",
            bytes.len()
        ));
    }
    let channel = |v: u32, mask: u32| -> u8 {
        let shift = mask.trailing_zeros();
        let max = mask >> shift;
        (((v & mask) >> shift) * 255 / max.max(1)) as u8
    };
    let mut data = Vec::with_capacity(3 * width as usize * height as usize);
    for y in 0..height as usize {
        let row = &bytes[start + y * bytes_per_line..];
        for x in 0..width as usize {
            let p = &row[px_bytes * x..px_bytes * x + px_bytes];
            let mut v = 0u32;
            for (k, &b) in p.iter().enumerate() {
                // LSB first: the first byte is the least significant.
                v |= if byte_order == 0 {
                    (b as u32) << (8 * k)
                } else {
                    (b as u32) << (8 * (px_bytes - 1 - k))
                };
            }
            data.extend(masks.map(|m| channel(v, m)));
        }
    }
    Ok(Rgb8 {
        width,
        height,
        data,
    })
}

//! One zstd frame decoded with memory bounded by what it holds: a file may
//! declare gigabytes for a frame of a few bytes, and a reader must not
//! reserve them before decoding. `.tq3s`, `.tq3g` and the column palettes
//! decode every zstd frame here.

use std::io::Read;

/// Largest zstd window accepted, as a power of two: our writers' levels use
/// at most 2^21; a frame asking for more is not ours and would make the
/// decoder allocate its window.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Decodes one zstd frame of at most `max` bytes (it may decode to fewer:
/// callers compare with the length they expect). Memory grows with what
/// the frame really decodes to, never beyond `max + 1` bytes.
pub fn unzstd(stored: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(stored).map_err(|e| e.to_string())?;
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| e.to_string())?;
    let hint = max.min(stored.len() as u64 * 8 + 4096);
    let mut out = Vec::with_capacity(hint as usize);
    dec.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`unzstd`] of exactly `len` bytes; any other length is an error.
pub fn unzstd_exact(stored: &[u8], len: u64) -> Result<Vec<u8>, String> {
    let out = unzstd(stored, len)?;
    if out.len() as u64 != len {
        return Err(format!("decodes to {} bytes, {len} expected", out.len()));
    }
    Ok(out)
}

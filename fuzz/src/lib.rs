//! Shared by the fuzz targets: a counting global allocator that bounds the
//! live bytes one input may allocate, the error checks, and the checksum
//! repairs of the structure-aware targets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// Wraps [`System`], counting live bytes. While armed (during one input),
/// an allocation that would take the live bytes above the input's bound
/// prints the request and aborts, which libFuzzer records as a crash.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BASE: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static ARMED: AtomicBool = AtomicBool::new(false);

impl Counting {
    fn grew(new: usize) {
        PEAK.fetch_max(new, Relaxed);
        if ARMED.load(Relaxed) && new.saturating_sub(BASE.load(Relaxed)) > LIMIT.load(Relaxed) {
            ARMED.store(false, Relaxed);
            eprintln!(
                "allocation bound breached: {} live bytes above the start of the input, bound {}",
                new - BASE.load(Relaxed),
                LIMIT.load(Relaxed)
            );
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
            std::process::abort();
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::grew(LIVE.fetch_add(layout.size(), Relaxed) + layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::grew(LIVE.fetch_add(layout.size(), Relaxed) + layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let more = new_size - layout.size();
            Self::grew(LIVE.fetch_add(more, Relaxed) + more);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Installs [`Counting`] as the target's global allocator.
#[macro_export]
macro_rules! counting_allocator {
    () => {
        #[global_allocator]
        static ALLOC: $crate::Counting = $crate::Counting;
    };
}

/// The bound of one input: at most `a · len + b` live bytes above those
/// live when the input started.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub a: usize,
    pub b: usize,
}

/// Arms the bound for an input of `len` bytes. Returns a guard that
/// disarms it and reports the peak.
pub fn begin(len: usize, bound: Bound) -> Guard {
    let live = LIVE.load(Relaxed);
    BASE.store(live, Relaxed);
    PEAK.store(live, Relaxed);
    LIMIT.store(len.saturating_mul(bound.a).saturating_add(bound.b), Relaxed);
    ARMED.store(true, Relaxed);
    Guard
}

/// Disarms the bound when dropped.
pub struct Guard;

impl Guard {
    /// Peak live bytes above the start of the input, so far.
    pub fn peak(&self) -> usize {
        PEAK.load(Relaxed).saturating_sub(BASE.load(Relaxed))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        ARMED.store(false, Relaxed);
        if std::env::var_os("TQ3D_FUZZ_PEAK").is_some() {
            eprintln!("peak {}", self.peak());
        }
    }
}

/// The checks every `Err` must pass: its message is one line and names
/// the input (`name`, the path given to the reader).
pub fn check_error(e: &impl Display, name: &str) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    assert!(!msg.is_empty(), "empty error message");
    assert!(
        msg.contains(name),
        "error does not name the file {name}: {msg:?}"
    );
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put_crc(b: &mut [u8], at: usize, crc: u32) {
    b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes every checksum of a `.tq3s` file in place (docs/FORMAT.md,
/// "Scene container"): each stream's CRC in its table entry, the table's
/// CRC, then the header's. Whatever does not fit is left as it is.
pub fn repair_tq3s(b: &mut [u8]) {
    const HEADER: usize = 128;
    const ENTRY: usize = 32;
    if b.len() < HEADER {
        return;
    }
    let n = u32_at(b, 16) as usize;
    let table_end = HEADER + n.min(64) * ENTRY;
    if n <= 64 && b.len() >= table_end + 4 {
        let mut at = table_end + 4;
        for k in 0..n {
            let e = HEADER + k * ENTRY;
            let len = u64_at(b, e + 16);
            let Some(end) = usize::try_from(len).ok().and_then(|l| at.checked_add(l)) else {
                break;
            };
            if end > b.len() {
                break;
            }
            let crc = crc32fast::hash(&b[at..end]);
            put_crc(b, e + 24, crc);
            at = end;
        }
        let crc = crc32fast::hash(&b[HEADER..table_end]);
        put_crc(b, table_end, crc);
    }
    let crc = crc32fast::hash(&b[..HEADER - 4]);
    put_crc(b, HEADER - 4, crc);
}

/// Recomputes every checksum of a `.tqv` file in place (docs/FORMAT.md):
/// the header's, then each section's that fits in the file.
pub fn repair_tqv(b: &mut [u8]) {
    repair_sections(b, 4);
}

/// The same for a `.tq3g` file, whose layout is `.tqv`'s with six sections.
pub fn repair_tq3g(b: &mut [u8]) {
    repair_sections(b, 6);
}

/// A 64-byte header whose CRC-32 of bytes 0..60 sits at 60, then up to
/// `sections` sections of a 16-byte header (tag, u64 length, CRC-32 of the
/// payload at +12) and the payload.
fn repair_sections(b: &mut [u8], sections: usize) {
    const HEADER: usize = 64;
    const SECTION: usize = 16;
    if b.len() < HEADER {
        return;
    }
    let crc = crc32fast::hash(&b[..60]);
    put_crc(b, 60, crc);
    let mut at = HEADER;
    for _ in 0..sections {
        if b.len() < at + SECTION {
            return;
        }
        let len = u64_at(b, at + 4);
        let start = at + SECTION;
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            return;
        };
        if end > b.len() {
            return;
        }
        let crc = crc32fast::hash(&b[start..end]);
        put_crc(b, at + 12, crc);
        at = end;
    }
}

/// What the zstd streams of a `.tq3s` file really decode to, in bytes
/// (each capped at 1 GiB; 0 for a stream that is not a zstd frame), plus
/// what its rANS streams may decode to: the part of an input's allocation
/// bound that the entropy coders' expansion justifies.
pub fn zstd_decoded_len(b: &[u8]) -> usize {
    const HEADER: usize = 128;
    const ENTRY: usize = 32;
    if b.len() < HEADER {
        return 0;
    }
    let n = u32_at(b, 16) as usize;
    let table_end = HEADER + n.min(64) * ENTRY;
    if n > 64 || b.len() < table_end + 4 {
        return 0;
    }
    let mut at = table_end + 4;
    let mut total = 0usize;
    for k in 0..n {
        let e = HEADER + k * ENTRY;
        let len = u64_at(b, e + 16);
        let Some(end) = usize::try_from(len).ok().and_then(|l| at.checked_add(l)) else {
            break;
        };
        if end > b.len() {
            break;
        }
        // rANS (coding 2) decodes at most 2^16 one-byte symbols per 8
        // stored bytes, and never more than the table declares.
        if b[e + 4] == 2 {
            total = total.saturating_add(u64_at(b, e + 8).min(len.saturating_mul(8192)) as usize);
        }
        if b[e + 4] == 1 {
            total = total.saturating_add(unzstd_len(&b[at..end]));
        }
        // Column palettes (coding 3): their frames, as above; the decoder
        // allocates the stream's R bytes only after the frames decoded to
        // at least R / 4, so five times the frames bound it.
        if b[e + 4] == 3 {
            let frames = palette_frames_len(&b[at..end]);
            total = total.saturating_add(
                frames
                    .saturating_mul(5)
                    .min(u64_at(b, e + 8).saturating_mul(2) as usize + frames),
            );
        }
        at = end;
    }
    total
}

/// What one zstd frame really decodes to, capped at 1 GiB (0 if it is not
/// one).
fn unzstd_len(frame: &[u8]) -> usize {
    use std::io::Read;
    let Ok(d) = zstd::stream::read::Decoder::new(frame) else {
        return 0;
    };
    let mut d = d.take(1 << 30);
    let mut buf = [0u8; 1 << 14];
    let mut total = 0;
    while let Ok(got @ 1..) = d.read(&mut buf) {
        total += got;
    }
    total
}

/// What the frames of a column-palette stream (docs/FORMAT.md, "Stream
/// coding 3") may decode to: zstd frames what they hold, rANS frames
/// 2^16 symbols per 8 stored bytes; 0 past a malformed header.
fn palette_frames_len(c: &[u8]) -> usize {
    let Some(&k) = c.first() else { return 0 };
    let k = k as usize;
    let mut at = 1 + 4 * k;
    if c.len() < at {
        return 0;
    }
    for j in 0..k {
        let m = u32_at(c, 1 + 4 * j);
        if m != u32::MAX {
            at = at.saturating_add(4 * m as usize);
        }
    }
    let mut total = 0usize;
    for _ in 0..k {
        if c.len() < at.saturating_add(5) {
            break;
        }
        let coding = c[at];
        let len = u32_at(c, at + 1) as usize;
        let start = at + 5;
        let Some(end) = start.checked_add(len).filter(|&e| e <= c.len()) else {
            break;
        };
        total = total.saturating_add(match coding {
            1 => unzstd_len(&c[start..end]),
            2 => len.saturating_mul(8192),
            _ => 0,
        });
        at = end;
    }
    total
}

//! Rewriting the streams of a `.tq3s` file behind its checksums.

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Whether any stream of file `b` has coding 3 (column palettes: the
/// exact profile's attributes on few levels), which needs version 4.
#[allow(dead_code)] // Not every test binary that includes this module calls it.
pub fn palettes(b: &[u8]) -> bool {
    let n = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    (0..n).any(|k| b[128 + 32 * k + 4] == 3)
}

/// One stream of a file, as [`restream`] shows it.
pub struct StoredStream<'a> {
    pub tag: [u8; 4],
    /// 0 raw, 1 zstd, 2 rANS, 3 column palettes.
    pub coding: u8,
    /// The declared decoded length.
    pub raw_len: u64,
    pub stored: &'a [u8],
}

/// The file `b` with each stream for which `f` returns `Some((coding,
/// bytes))` stored as those bytes with that coding (decoded length kept);
/// the stream and table checksums are recomputed, so only the checks
/// behind them can catch a change.
pub fn restream(b: &[u8], mut f: impl FnMut(&StoredStream) -> Option<(u8, Vec<u8>)>) -> Vec<u8> {
    let n = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let table_end = 128 + 32 * n;
    let mut table = b[128..table_end].to_vec();
    let mut at = table_end + 4;
    let mut streams = Vec::new();
    for k in 0..n {
        let e = &mut table[32 * k..32 * (k + 1)];
        let len = u64_at(e, 16) as usize;
        let old = &b[at..at + len];
        at += len;
        let s = StoredStream {
            tag: e[0..4].try_into().unwrap(),
            coding: e[4],
            raw_len: u64_at(e, 8),
            stored: old,
        };
        let stored = match f(&s) {
            Some((coding, bytes)) => {
                e[4] = coding;
                bytes
            }
            None => old.to_vec(),
        };
        e[16..24].copy_from_slice(&(stored.len() as u64).to_le_bytes());
        e[24..28].copy_from_slice(&crc32fast::hash(&stored).to_le_bytes());
        streams.push(stored);
    }
    let mut out = b[..128].to_vec();
    out.extend_from_slice(&table);
    out.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
    for s in streams {
        out.extend_from_slice(&s);
    }
    out
}

/// The prediction lists the compressed file's streams in order, each raw
/// one at exactly its stored size and each other within its bound.
pub fn assert_prediction_holds(
    p: &turboquant3d::splat::SizePrediction,
    c: &turboquant3d::splat::Compressed,
) {
    assert_eq!(p.streams.len(), c.streams.len());
    for (ps, cs) in p.streams.iter().zip(&c.streams) {
        assert_eq!(ps.tag, String::from_utf8_lossy(&cs.info.tag).trim_end());
        if ps.exact {
            assert_eq!(ps.bytes, cs.info.stored_len, "stream {}", ps.tag);
        } else {
            assert!(cs.info.stored_len <= ps.bytes, "stream {}", ps.tag);
        }
    }
}

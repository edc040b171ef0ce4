//! The bit layout: pack then unpack is the identity for every b and length,
//! and the layout is the documented little-endian bit stream.

use proptest::prelude::*;
use turboquant3d::packing::{pack, packed_len, unpack};

fn codes_strategy() -> impl Strategy<Value = (u32, Vec<u8>)> {
    (1u32..=8).prop_flat_map(|b| {
        (
            Just(b),
            proptest::collection::vec(0u8..=((1u16 << b) - 1) as u8, 0..2000),
        )
    })
}

proptest! {
    #[test]
    fn pack_then_unpack_is_the_identity((bits, codes) in codes_strategy()) {
        let packed = pack(&codes, bits).unwrap();
        prop_assert_eq!(packed.len(), (codes.len() * bits as usize).div_ceil(8));
        prop_assert_eq!(unpack(&packed, bits, codes.len()).unwrap(), codes);
    }

    /// Bit n of the stream is bit n mod 8 of byte n / 8, code k starting at
    /// bit k·b, least significant bit first: checked bit by bit.
    #[test]
    fn layout_is_the_documented_bit_stream((bits, codes) in codes_strategy()) {
        let packed = pack(&codes, bits).unwrap();
        for (k, &c) in codes.iter().enumerate() {
            for i in 0..bits as usize {
                let n = k * bits as usize + i;
                prop_assert_eq!((packed[n / 8] >> (n % 8)) & 1, (c >> i) & 1);
            }
        }
        // Unused high bits of the last byte are zero.
        let used = codes.len() * bits as usize;
        if !used.is_multiple_of(8) {
            prop_assert_eq!(packed[used / 8] >> (used % 8), 0);
        }
    }
}

#[test]
fn rejects_codes_too_wide_bad_widths_and_short_buffers() {
    assert!(pack(&[0, 8, 1], 3).is_err());
    assert!(pack(&[0], 0).is_err());
    assert!(pack(&[0], 9).is_err());
    assert!(unpack(&[0u8; 2], 3, 6).is_err());
    assert_eq!(packed_len(45, 3), 17);
}

proptest! {
    /// copy_bits against a bit-by-bit copy, at any alignment and length.
    #[test]
    fn copy_bits_matches_a_bit_by_bit_copy(
        src in proptest::collection::vec(any::<u8>(), 1..40),
        dst0 in proptest::collection::vec(any::<u8>(), 1..40),
        s in 0usize..320, d in 0usize..320, n in 0usize..320,
    ) {
        let sb = src.len() * 8;
        let db = dst0.len() * 8;
        let s = s % sb;
        let d = d % db;
        let n = n.min(sb - s).min(db - d);
        let mut got = dst0.clone();
        turboquant3d::packing::copy_bits(&src, s, &mut got, d, n);
        let mut want = dst0.clone();
        for t in 0..n {
            let bit = (src[(s + t) / 8] >> ((s + t) % 8)) & 1;
            let k = d + t;
            want[k / 8] = (want[k / 8] & !(1 << (k % 8))) | (bit << (k % 8));
        }
        prop_assert_eq!(got, want);
    }
}

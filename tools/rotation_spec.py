#!/usr/bin/env python3
"""An independent implementation of the seeded rotation of docs/FORMAT.md
("Seeded rotation", .tq3s rotation kind 2), in plain Python (no numpy):
ChaCha20 (RFC 8439), Box-Muller, Householder QR with the sign fix, f32
rounding, FNV-1a digest. Written from the specification, not the Rust code.

  python3 tools/rotation_spec.py D SEED            # the matrix, one row per line (f32 as hex bits)
  python3 tools/rotation_spec.py --digest D SEED   # the digest only
  python3 tools/rotation_spec.py --selftest        # RFC 8439 test vectors

tests/rotation_spec.rs runs it and compares entry by entry.
"""
import math
import struct
import sys

MASK32 = 0xFFFFFFFF


def rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & MASK32


def quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & MASK32; s[d] = rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & MASK32; s[b] = rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & MASK32; s[d] = rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & MASK32; s[b] = rotl(s[b] ^ s[c], 7)


def chacha20_block(key, counter, nonce):
    """RFC 8439 section 2.3: 64 keystream bytes."""
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state += list(struct.unpack("<8I", key))
    state += [counter & MASK32]
    state += list(struct.unpack("<3I", nonce))
    w = list(state)
    for _ in range(10):
        quarter(w, 0, 4, 8, 12); quarter(w, 1, 5, 9, 13)
        quarter(w, 2, 6, 10, 14); quarter(w, 3, 7, 11, 15)
        quarter(w, 0, 5, 10, 15); quarter(w, 1, 6, 11, 12)
        quarter(w, 2, 7, 8, 13); quarter(w, 3, 4, 9, 14)
    return struct.pack("<16I", *[(w[i] + state[i]) & MASK32 for i in range(16)])


def words(seed):
    """The keystream of a seed as little-endian u64 words."""
    key = struct.pack("<Q", seed) + bytes(24)
    counter = 0
    while True:
        block = chacha20_block(key, counter, bytes(12))
        counter += 1
        for k in range(8):
            yield struct.unpack_from("<Q", block, 8 * k)[0]


def normals(seed, n):
    out = []
    w = words(seed)
    while len(out) < n:
        u1 = ((next(w) >> 11) + 1) * 2.0 ** -53
        u2 = (next(w) >> 11) * 2.0 ** -53
        r = math.sqrt(-2.0 * math.log(u1))
        t = math.tau * u2
        out.append(r * math.cos(t))
        out.append(r * math.sin(t))
    return out[:n]


def dot(a, b):
    """Eight interleaved partial sums, a fixed tree, then the tail in order."""
    m = len(a)
    full = m - m % 8
    acc = [0.0] * 8
    for q in range(0, full, 8):
        for t in range(8):
            acc[t] += a[q + t] * b[q + t]
    tail = 0.0
    for i in range(full, m):
        tail += a[i] * b[i]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail


def rotation(d, seed):
    z = normals(seed, d * d)
    # Column c of G holds z[c*d .. (c+1)*d]: G[r][c] = z[c*d + r].
    cols = [z[c * d:(c + 1) * d] for c in range(d)]
    us, signs = [], []
    for k in range(d):
        x = cols[k][k:]
        norm = math.sqrt(dot(x, x))
        alpha = -norm if x[0] >= 0.0 else norm
        v = list(x)
        v[0] = v[0] - alpha
        vv = dot(v, v)
        signs.append(-1.0 if alpha < 0.0 else 1.0)
        if vv > 0.0:
            for c in range(k, d):
                col = cols[c][k:]
                f = 2.0 * dot(col, v) / vv
                cols[c][k:] = [p - f * q for p, q in zip(col, v)]
            s = math.sqrt(2.0 / vv)
            us.append([t * s for t in v])
        else:
            us.append([0.0] * (d - k))
    q = [[1.0 if r == c else 0.0 for r in range(d)] for c in range(d)]  # columns
    for k in range(d - 1, -1, -1):
        u = us[k]
        for c in range(k, d):
            col = q[c][k:]
            f = dot(col, u)
            q[c][k:] = [p - f * t for p, t in zip(col, u)]
    # Pi[r][c] = Q[r][c] * sign_c, rounded to f32 (struct rounds to nearest even).
    return [[struct.unpack("<f", struct.pack("<f", q[c][r] * signs[c]))[0] for c in range(d)] for r in range(d)]


def digest(m):
    h = 0xCBF29CE484222325
    for row in m:
        for x in row:
            for b in struct.pack("<f", x):
                h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def selftest():
    # RFC 8439 A.1 test vectors 1 and 2: all-zero key and nonce, counters 0 and 1.
    a1 = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")
    a2 = bytes.fromhex(
        "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
        "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f")
    assert chacha20_block(bytes(32), 0, bytes(12)) == a1, "RFC 8439 A.1 #1"
    assert chacha20_block(bytes(32), 1, bytes(12)) == a2, "RFC 8439 A.1 #2"
    # RFC 8439 2.4.2: key 00..1f, nonce 00 00 00 00 00 00 00 4a 00 00 00 00, counter 1.
    ks = chacha20_block(bytes(range(32)), 1, bytes.fromhex("000000000000004a00000000"))
    assert ks[:16] == bytes.fromhex("224f51f3401bd9e12fde276fb8631ded"), "RFC 8439 2.4.2"
    print("ok")


def main(argv):
    if argv[1:] == ["--selftest"]:
        selftest()
        return
    if len(argv) == 4 and argv[1] == "--digest":
        print("%016x" % digest(rotation(int(argv[2]), int(argv[3]))))
        return
    d, seed = int(argv[1]), int(argv[2])
    m = rotation(d, seed)
    print("digest %016x" % digest(m))
    for row in m:
        print(" ".join("%08x" % struct.unpack("<I", struct.pack("<f", x))[0] for x in row))


if __name__ == "__main__":
    main(sys.argv)

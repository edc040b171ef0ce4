//! Random orthogonal rotations: a dense Haar matrix for any d, and a
//! randomized Walsh–Hadamard transform for power-of-two d.
//!
//! Both are generated from a seed. The dense matrix comes from a generator
//! docs/FORMAT.md specifies to the bit ([`SeedStream`]: ChaCha20 of RFC 8439,
//! "Seeded rotation"), frozen with the `.tq3s` format: a scene file stores
//! the seed and a digest of the matrix instead of the matrix. Files other
//! than `.tq3s` store the parameters themselves (the matrix, or the sign
//! vectors and the permutation).
//!
//! The batch kernels work on *lane blocks*: [`LANES`] vectors stored
//! coordinate-major (`block[j * LANES + v]` is coordinate j of vector v), so
//! every arithmetic step is one SIMD operation across vectors and each sum
//! runs in a fixed order. Rust never contracts `a * b + c` into an FMA, and
//! the encoder's dense tile ([`Rotation::forward_tile`]) fuses explicitly
//! with `f32::mul_add`, which rounds once with or without FMA hardware, so
//! the results are bit-identical on every platform and SIMD width.

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::codebook::validate_dim;
use crate::{Error, Result};

/// Number of vectors a lane block holds.
pub const LANES: usize = 8;

/// Rounds of the randomized Hadamard transform. One round maps a one-hot
/// vector to entries of equal magnitude (−89 % error at b = 1); two rounds
/// without a permutation map all one-hot vectors to permutations of one
/// vector (+6.0 % at b = 4 for one fixed rotation); two with a permutation
/// reach +4.4 %, too close to the 5 % tolerance. Three rounds with a
/// permutation after the first stay within 0.6 % on every adversarial
/// family (tests/theory_monte_carlo.rs, docs/THEORY.md).
pub const HADAMARD_ROUNDS: usize = 3;

/// Largest d for which [`Rotation::dense`] generates a matrix. Its set-up is
/// a Householder QR, O(d³) (0.26 s at d = 1024, 8× that at 2048), and it
/// stores d² floats (4 MiB at 1024); beyond this, d must be a power of two
/// (Hadamard, O(d log d)) or the rows split into blocks.
pub const MAX_DENSE_DIM: usize = 1024;

/// Which family a rotation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationKind {
    /// A Haar-random orthogonal matrix (QR of a Gaussian matrix).
    Dense,
    /// Randomized Walsh–Hadamard rounds with a permutation.
    Hadamard,
}

impl RotationKind {
    /// The default for a dimension: Hadamard for powers of two from 64 up,
    /// where it is O(d log d) and mixes well; dense everywhere else.
    pub fn default_for(dim: usize) -> RotationKind {
        if dim >= 64 && dim.is_power_of_two() {
            RotationKind::Hadamard
        } else {
            RotationKind::Dense
        }
    }

    /// The name used on the command line and in `info`.
    pub fn name(self) -> &'static str {
        match self {
            RotationKind::Dense => "dense",
            RotationKind::Hadamard => "hadamard",
        }
    }
}

/// A fixed orthogonal transform Π of R^d.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// Π is a stored d×d matrix.
    Dense(DenseRotation),
    /// Π = H·S_R ··· P·H·S_1 (normalised), with sign diagonals S_r and a permutation P.
    Hadamard(HadamardRotation),
}

/// A dense orthogonal matrix, stored row-major, with its transpose.
#[derive(Debug, Clone)]
pub struct DenseRotation {
    dim: usize,
    matrix: Vec<f32>,
    transpose: Vec<f32>,
    /// The seed when the matrix is [`Rotation::dense`]'s output for it.
    seed: Option<u64>,
}

/// Two dense rotations are equal when their matrices are, however they were made.
impl PartialEq for DenseRotation {
    fn eq(&self, other: &DenseRotation) -> bool {
        self.dim == other.dim && self.matrix == other.matrix
    }
}

/// The parameters of a randomized Hadamard transform.
#[derive(Debug, Clone, PartialEq)]
pub struct HadamardRotation {
    dim: usize,
    /// One ±1 vector per round.
    signs: Vec<Vec<f32>>,
    /// Applied after the first round: y[j] = x[perm[j]].
    perm: Vec<u32>,
    inverse_perm: Vec<u32>,
    /// (1/√d)^rounds, applied once at the end.
    scale: f32,
}

impl Rotation {
    /// A rotation of the given kind from a seed.
    pub fn new(kind: RotationKind, dim: usize, seed: u64) -> Result<Rotation> {
        match kind {
            RotationKind::Dense => Rotation::dense(dim, seed),
            RotationKind::Hadamard => Rotation::hadamard(dim, seed),
        }
    }

    /// A Haar-random orthogonal matrix: Householder QR of a seeded Gaussian
    /// matrix G = QR, returned as Q·diag(sign(R_ii)) (Mezzadri 2007), which
    /// makes the law exactly Haar. Every step is specified (docs/FORMAT.md,
    /// "Seeded rotation"): the normals are [`seeded_normals`], the QR runs in
    /// f64 in a fixed order, and the result is rounded to f32 once, so a seed
    /// names the same f32 matrix on every platform. Cost O(d³): refused
    /// beyond [`MAX_DENSE_DIM`]; use Hadamard for large d.
    pub fn dense(dim: usize, seed: u64) -> Result<Rotation> {
        validate_dim(dim)?;
        if dim > MAX_DENSE_DIM {
            return Err(Error::InvalidDim {
                dim,
                why: "the dense rotation is limited to d <= 1024 (its set-up is O(d^3)); \
                      use a power of two (the Hadamard rotation) or split each row into blocks of at most 1024",
            });
        }
        // Column-major: a[c * dim + r], so normal k is G[k mod d][k div d].
        let mut a = seeded_normals(seed, dim * dim);
        let q = haar_q(&mut a, dim);
        let matrix: Vec<f32> = q.iter().map(|&x| x as f32).collect();
        let mut r = DenseRotation::from_matrix(dim, matrix)?;
        r.seed = Some(seed);
        Ok(Rotation::Dense(r))
    }

    /// A randomized Hadamard transform with [`HADAMARD_ROUNDS`] rounds.
    pub fn hadamard(dim: usize, seed: u64) -> Result<Rotation> {
        Self::hadamard_with_rounds(dim, seed, HADAMARD_ROUNDS, true)
    }

    /// A randomized Hadamard transform with an explicit number of rounds and
    /// an optional permutation after the first round (identity if `false`).
    pub fn hadamard_with_rounds(
        dim: usize,
        seed: u64,
        rounds: usize,
        permute: bool,
    ) -> Result<Rotation> {
        validate_dim(dim)?;
        if !dim.is_power_of_two() {
            return Err(Error::InvalidDim {
                dim,
                why: "the Hadamard rotation needs a power of two; use the dense rotation",
            });
        }
        if rounds == 0 || rounds > 16 {
            return Err(Error::InvalidArgument(format!(
                "Hadamard rounds must be in 1..=16, got {rounds}"
            )));
        }
        // Not the specified keystream: the Hadamard parameters are stored
        // explicitly wherever they are used, and drawing them from ChaCha20
        // moved tests/kv_codec's comparison with KIVI across its line (one
        // draw decides it); see docs/FORMAT.md "Seeded rotation".
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let signs: Vec<Vec<f32>> = (0..rounds)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        if rand::RngExt::random::<bool>(&mut rng) {
                            -1.0
                        } else {
                            1.0
                        }
                    })
                    .collect()
            })
            .collect();
        let mut perm: Vec<u32> = (0..dim as u32).collect();
        if permute {
            // Fisher–Yates, written out so the stored result is all that matters.
            for i in (1..dim).rev() {
                let j = rand::RngExt::random_range(&mut rng, 0..=i);
                perm.swap(i, j);
            }
        }
        Ok(Rotation::Hadamard(HadamardRotation::from_parts(
            dim, signs, perm,
        )?))
    }

    /// The kind of rotation.
    pub fn kind(&self) -> RotationKind {
        match self {
            Rotation::Dense(_) => RotationKind::Dense,
            Rotation::Hadamard(_) => RotationKind::Hadamard,
        }
    }

    /// The dimension d.
    pub fn dim(&self) -> usize {
        match self {
            Rotation::Dense(r) => r.dim,
            Rotation::Hadamard(r) => r.dim,
        }
    }

    /// y = Π·x for a batch of contiguous rows of length d.
    pub fn forward_batch(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.batch(x, y, true)
    }

    /// x = Πᵀ·y for a batch of contiguous rows of length d.
    pub fn inverse_batch(&self, y: &[f32], x: &mut [f32]) -> Result<()> {
        self.batch(y, x, false)
    }

    /// Π·x for one vector.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = vec![0.0; x.len()];
        self.forward_batch(x, &mut y)?;
        Ok(y)
    }

    /// Πᵀ·y for one vector.
    pub fn inverse(&self, y: &[f32]) -> Result<Vec<f32>> {
        let mut x = vec![0.0; y.len()];
        self.inverse_batch(y, &mut x)?;
        Ok(x)
    }

    fn batch(&self, input: &[f32], output: &mut [f32], forward: bool) -> Result<()> {
        let d = self.dim();
        if !input.len().is_multiple_of(d) || input.len() != output.len() {
            return Err(Error::Shape(format!(
                "rotation batch: input of {} and output of {} values are not equal multiples of d = {d}",
                input.len(),
                output.len()
            )));
        }
        let mut a = vec![0.0f32; d * LANES];
        let mut b = vec![0.0f32; d * LANES];
        for (rows_in, rows_out) in input.chunks(d * LANES).zip(output.chunks_mut(d * LANES)) {
            let n = rows_in.len() / d;
            a.fill(0.0);
            for v in 0..n {
                for j in 0..d {
                    a[j * LANES + v] = rows_in[v * d + j];
                }
            }
            if forward {
                self.forward_block(&a, &mut b)
            } else {
                self.inverse_block(&a, &mut b)
            }
            for v in 0..n {
                for j in 0..d {
                    rows_out[v * d + j] = b[j * LANES + v];
                }
            }
        }
        Ok(())
    }

    /// Π applied to a lane block: `dst = Π·src`, both `[d][LANES]`.
    #[inline(always)]
    pub(crate) fn forward_block(&self, src: &[f32], dst: &mut [f32]) {
        match self {
            Rotation::Dense(r) => matmul_block(&r.matrix, r.dim, src, dst),
            Rotation::Hadamard(r) => r.forward_block::<LANES>(src, dst),
        }
    }

    /// The encoder's Π on a `[d][W]` tile. Dense: [`matmul_fma_tile`], whose
    /// fused multiply-adds round once per step (docs/THEORY.md §7), so it can
    /// differ from [`Rotation::forward_block`] in the last bit. Hadamard: the
    /// same arithmetic as `forward_block`.
    #[inline(always)]
    pub(crate) fn forward_tile<const W: usize>(&self, src: &[f32], dst: &mut [f32]) {
        match self {
            Rotation::Dense(r) => matmul_fma_tile::<W>(&r.matrix, r.dim, src, dst),
            Rotation::Hadamard(r) => r.forward_block::<W>(src, dst),
        }
    }

    /// Πᵀ applied to a lane block.
    #[inline(always)]
    pub(crate) fn inverse_block(&self, src: &[f32], dst: &mut [f32]) {
        match self {
            Rotation::Dense(r) => matmul_block(&r.transpose, r.dim, src, dst),
            Rotation::Hadamard(r) => r.inverse_block::<LANES>(src, dst),
        }
    }

    /// The serialised parameters (docs/FORMAT.md, rotation section).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Rotation::Dense(r) => r.matrix.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Rotation::Hadamard(r) => {
                let mut out = Vec::new();
                out.extend_from_slice(&(r.signs.len() as u32).to_le_bytes());
                for s in &r.signs {
                    let mut bits = vec![0u8; r.dim.div_ceil(8)];
                    for (j, &x) in s.iter().enumerate() {
                        if x < 0.0 {
                            bits[j / 8] |= 1 << (j % 8);
                        }
                    }
                    out.extend_from_slice(&bits);
                }
                out.extend(r.perm.iter().flat_map(|p| p.to_le_bytes()));
                out
            }
        }
    }

    /// Parses serialised parameters. `Err` names what is wrong; the caller
    /// adds the file name.
    pub fn from_bytes(
        kind: RotationKind,
        dim: usize,
        bytes: &[u8],
    ) -> std::result::Result<Rotation, String> {
        validate_dim(dim).map_err(|e| e.to_string())?;
        match kind {
            RotationKind::Dense => {
                if bytes.len() != dim * dim * 4 {
                    return Err(format!(
                        "dense rotation needs {} bytes for d = {dim}, found {}",
                        dim * dim * 4,
                        bytes.len()
                    ));
                }
                let m: Vec<f32> = bytes
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|c| f32::from_le_bytes(*c))
                    .collect();
                DenseRotation::from_matrix(dim, m)
                    .map(Rotation::Dense)
                    .map_err(|e| e.to_string())
            }
            RotationKind::Hadamard => {
                if !dim.is_power_of_two() {
                    return Err(format!(
                        "Hadamard rotation with d = {dim}, which is not a power of two"
                    ));
                }
                let rounds = bytes
                    .first_chunk::<4>()
                    .map(|b| u32::from_le_bytes(*b) as usize)
                    .ok_or("missing round count")?;
                if rounds == 0 || rounds > 16 {
                    return Err(format!("Hadamard round count {rounds} is not in 1..=16"));
                }
                let sign_bytes = dim.div_ceil(8);
                let need = 4 + rounds * sign_bytes + dim * 4;
                if bytes.len() != need {
                    return Err(format!(
                        "Hadamard rotation with {rounds} rounds needs {need} bytes for d = {dim}, found {}",
                        bytes.len()
                    ));
                }
                let signs = (0..rounds)
                    .map(|r| {
                        let bits = &bytes[4 + r * sign_bytes..4 + (r + 1) * sign_bytes];
                        (0..dim)
                            .map(|j| {
                                if bits[j / 8] >> (j % 8) & 1 == 1 {
                                    -1.0
                                } else {
                                    1.0
                                }
                            })
                            .collect()
                    })
                    .collect();
                let perm = bytes[4 + rounds * sign_bytes..]
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|c| u32::from_le_bytes(*c))
                    .collect();
                HadamardRotation::from_parts(dim, signs, perm)
                    .map(Rotation::Hadamard)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Π as a row-major d×d matrix, whatever the kind (for a Hadamard
    /// rotation, built by applying it to the unit vectors).
    pub fn dense_matrix(&self) -> Vec<f32> {
        let d = self.dim();
        let mut eye = vec![0.0f32; d * d];
        for i in 0..d {
            eye[i * d + i] = 1.0;
        }
        let mut cols = vec![0.0f32; d * d];
        #[allow(clippy::expect_used)] // Both batches are d×d by construction.
        self.forward_batch(&eye, &mut cols).expect("square batch");
        // Row i of `cols` is Π e_i, column i of Π.
        let mut m = vec![0.0f32; d * d];
        for i in 0..d {
            for j in 0..d {
                m[j * d + i] = cols[i * d + j];
            }
        }
        m
    }

    /// The dense matrix Π (row-major), if this is a dense rotation.
    pub fn matrix(&self) -> Option<&[f32]> {
        match self {
            Rotation::Dense(r) => Some(&r.matrix),
            Rotation::Hadamard(_) => None,
        }
    }

    /// The seed, when this is [`Rotation::dense`]'s matrix for it (and so
    /// can be stored as the seed and a digest).
    pub fn dense_seed(&self) -> Option<u64> {
        match self {
            Rotation::Dense(r) => r.seed,
            Rotation::Hadamard(_) => None,
        }
    }

    /// The seeded form of a generated dense rotation: the seed (u64) and
    /// [`matrix_digest`] of Π (u64), little-endian, [`SEEDED_LEN`] bytes;
    /// `None` for a rotation that did not come from [`Rotation::dense`].
    pub fn to_seeded_bytes(&self) -> Option<[u8; SEEDED_LEN]> {
        let seed = self.dense_seed()?;
        let digest = matrix_digest(self.matrix()?);
        let mut out = [0u8; SEEDED_LEN];
        out[..8].copy_from_slice(&seed.to_le_bytes());
        out[8..].copy_from_slice(&digest.to_le_bytes());
        Some(out)
    }

    /// Inverse of [`Rotation::to_seeded_bytes`]: regenerates Π from the seed
    /// and refuses it unless its digest is the stored one (a generator that
    /// departs from the specification, or a damaged seed or digest). `Err`
    /// names what is wrong; the caller adds the file name.
    pub fn from_seeded_bytes(dim: usize, bytes: &[u8]) -> std::result::Result<Rotation, String> {
        let b: &[u8; SEEDED_LEN] = bytes.try_into().map_err(|_| {
            format!(
                "a seeded rotation is {SEEDED_LEN} bytes (seed, digest), found {}",
                bytes.len()
            )
        })?;
        let seed = u64::from_le_bytes(std::array::from_fn(|k| b[k]));
        let stored = u64::from_le_bytes(std::array::from_fn(|k| b[8 + k]));
        let r = Rotation::dense(dim, seed).map_err(|e| e.to_string())?;
        let computed = r.matrix().map(matrix_digest).unwrap_or(!stored);
        if computed != stored {
            return Err(format!(
                "the matrix of seed {seed} (d = {dim}) has digest {computed:#018x}, \
                 the file stores {stored:#018x}"
            ));
        }
        Ok(r)
    }
}

/// Bytes of a seeded dense rotation: seed and digest, u64 each.
pub const SEEDED_LEN: usize = 16;

/// The digest of a dense rotation: 64-bit FNV-1a over the entries' f32
/// little-endian bytes, row-major (offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3).
pub fn matrix_digest(matrix: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in matrix.iter().flat_map(|x| x.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The keystream every rotation is drawn from: ChaCha20 as in RFC 8439,
/// key = the seed's 8 bytes little-endian then 24 zero bytes, nonce zero,
/// block counter 0, 1, 2, …, read as consecutive little-endian u64 words.
/// (`ChaCha20Rng`'s 64-bit counter and 64-bit stream id equal the RFC's
/// 32-bit counter and 96-bit nonce while the nonce is zero and the counter
/// below 2^32, i.e. for the first 256 GiB.)
#[derive(Debug)]
pub struct SeedStream {
    rng: ChaCha20Rng,
    block: [u8; 64],
    at: usize,
}

impl SeedStream {
    /// The keystream of `seed`, from its first byte.
    pub fn new(seed: u64) -> SeedStream {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        SeedStream {
            rng: ChaCha20Rng::from_seed(key),
            block: [0; 64],
            at: 64,
        }
    }

    /// The next keystream byte.
    pub fn next_byte(&mut self) -> u8 {
        if self.at == 64 {
            // Whole 64-byte blocks: the RNG hands out the keystream in order.
            self.rng.fill_bytes(&mut self.block);
            self.at = 0;
        }
        self.at += 1;
        self.block[self.at - 1]
    }

    /// The next eight keystream bytes as a little-endian u64.
    pub fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.next_byte()))
    }
}

/// The first `n` standard normals of a seed's keystream, by Box–Muller on
/// pairs of words (w₁, w₂): u₁ = (⌊w₁/2^11⌋ + 1)·2^−53 ∈ (0, 1],
/// u₂ = ⌊w₂/2^11⌋·2^−53 ∈ [0, 1), r = √(−2·ln u₁), θ = 2π·u₂ (2π the f64
/// nearest), then r·cos θ and r·sin θ in that order (the last sine is
/// dropped when n is odd). `ln`, `cos` and `sin` are the `libm` crate's
/// (a port of musl's), `√` is IEEE's, all in f64, so the bits are the same
/// on every platform.
pub fn seeded_normals(seed: u64, n: usize) -> Vec<f64> {
    let mut ks = SeedStream::new(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = ((ks.next_u64() >> 11) + 1) as f64 * TWO_POW_M53;
        let u2 = (ks.next_u64() >> 11) as f64 * TWO_POW_M53;
        let r = (-2.0 * libm::log(u1)).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push(r * libm::cos(t));
        out.push(r * libm::sin(t));
    }
    out.truncate(n);
    out
}

/// 2^−53, exactly.
const TWO_POW_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

impl DenseRotation {
    /// Wraps a row-major d×d matrix. It must be finite; orthogonality is the
    /// caller's promise (a file's checksum guards what it stored).
    pub fn from_matrix(dim: usize, matrix: Vec<f32>) -> Result<DenseRotation> {
        if matrix.len() != dim * dim {
            return Err(Error::Shape(format!(
                "a dense rotation for d = {dim} needs {} entries, got {}",
                dim * dim,
                matrix.len()
            )));
        }
        if let Some(i) = matrix.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "rotation matrix entry ({}, {}) is not finite",
                i / dim,
                i % dim
            )));
        }
        // An orthogonal matrix's entries lie on [−1, 1].
        if let Some(i) = matrix.iter().position(|x| x.abs() > 1.0) {
            return Err(Error::InvalidArgument(format!(
                "entry ({}, {}) = {} is outside [-1, 1]: not a rotation",
                i / dim,
                i % dim,
                matrix[i]
            )));
        }
        let mut transpose = vec![0.0; dim * dim];
        for r in 0..dim {
            for c in 0..dim {
                transpose[c * dim + r] = matrix[r * dim + c];
            }
        }
        // And every row and column of unit norm (checked in O(d²), not the O(d³)
        // of ΠΠᵀ = I): encoding (rows) and decoding (columns) then bound
        // every output by the input's norm, so no file, hostile or mis-built,
        // decodes to ±Inf. A true rotation stored as f32 is off by ~1e-6.
        for (what, m) in [("row", &matrix), ("column", &transpose)] {
            for (i, line) in m.chunks_exact(dim).enumerate() {
                let n2: f64 = line.iter().map(|&x| f64::from(x).powi(2)).sum();
                if (n2 - 1.0).abs() > 1e-3 {
                    return Err(Error::InvalidArgument(format!(
                        "{what} {i} of the dense rotation has norm {:.4e}, not 1: not a rotation",
                        n2.sqrt()
                    )));
                }
            }
        }
        Ok(DenseRotation {
            dim,
            matrix,
            transpose,
            seed: None,
        })
    }
}

impl HadamardRotation {
    fn from_parts(dim: usize, signs: Vec<Vec<f32>>, perm: Vec<u32>) -> Result<HadamardRotation> {
        if perm.len() != dim || signs.iter().any(|s| s.len() != dim) {
            return Err(Error::Shape(format!(
                "Hadamard parameters do not have d = {dim} entries"
            )));
        }
        let mut inverse_perm = vec![u32::MAX; dim];
        for (j, &p) in perm.iter().enumerate() {
            let slot = inverse_perm.get_mut(p as usize).ok_or_else(|| {
                Error::InvalidArgument(format!("permutation entry {j} = {p} is out of range"))
            })?;
            if *slot != u32::MAX {
                return Err(Error::InvalidArgument(format!(
                    "permutation entry {j} repeats {p}"
                )));
            }
            *slot = j as u32;
        }
        let scale = (1.0 / (dim as f64).sqrt()).powi(signs.len() as i32) as f32;
        Ok(HadamardRotation {
            dim,
            signs,
            perm,
            inverse_perm,
            scale,
        })
    }

    /// The number of rounds.
    pub fn rounds(&self) -> usize {
        self.signs.len()
    }

    /// The ±1 sign vector of each round.
    pub fn signs(&self) -> &[Vec<f32>] {
        &self.signs
    }

    /// The permutation applied after the first round: `y[j] = x[perm[j]]`.
    pub fn permutation(&self) -> &[u32] {
        &self.perm
    }

    /// The inverse permutation.
    pub fn inverse_permutation(&self) -> &[u32] {
        &self.inverse_perm
    }

    #[inline(always)]
    fn forward_block<const W: usize>(&self, src: &[f32], dst: &mut [f32]) {
        let d = self.dim;
        dst[..d * W].copy_from_slice(&src[..d * W]);
        for (r, s) in self.signs.iter().enumerate() {
            apply_signs::<W>(dst, s);
            fwht_block::<W>(&mut dst[..d * W], d);
            if r == 0 {
                permute_block::<W>(dst, &self.perm);
            }
        }
        scale_block(&mut dst[..d * W], self.scale);
    }

    #[inline(always)]
    fn inverse_block<const W: usize>(&self, src: &[f32], dst: &mut [f32]) {
        let d = self.dim;
        dst[..d * W].copy_from_slice(&src[..d * W]);
        for (r, s) in self.signs.iter().enumerate().rev() {
            if r == 0 {
                permute_block::<W>(dst, &self.inverse_perm);
            }
            fwht_block::<W>(&mut dst[..d * W], d);
            apply_signs::<W>(dst, s);
        }
        scale_block(&mut dst[..d * W], self.scale);
    }
}

/// dst = M·src for a row-major d×d matrix and `[d][LANES]` blocks. Eight
/// output rows at a time keep eight independent accumulators in flight;
/// every sum still runs over k = 0..d in order.
#[inline(always)]
fn matmul_block(m: &[f32], d: usize, src: &[f32], dst: &mut [f32]) {
    const R: usize = 8;
    let src = &src.as_chunks::<LANES>().0[..d];
    let mut j = 0;
    while j + R <= d {
        let mut acc = [[0.0f32; LANES]; R];
        for k in 0..d {
            let x = &src[k];
            for (r, a) in acc.iter_mut().enumerate() {
                let w = m[(j + r) * d + k];
                for v in 0..LANES {
                    a[v] += w * x[v];
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            dst[(j + r) * LANES..(j + r + 1) * LANES].copy_from_slice(a);
        }
        j += R;
    }
    while j < d {
        let mut acc = [0.0f32; LANES];
        let row = &m[j * d..(j + 1) * d];
        for (k, &w) in row.iter().enumerate() {
            let x = &src[k];
            for v in 0..LANES {
                acc[v] += w * x[v];
            }
        }
        dst[j * LANES..(j + 1) * LANES].copy_from_slice(&acc);
        j += 1;
    }
}

/// dst = M·src for a row-major d×d matrix and `[d][W]` tiles: the
/// encoder's rotation as a small GEMM, register-tiled. Every sum runs over
/// k = 0..d in order, each step one fused multiply-add (`f32::mul_add`,
/// rounded once), so the bits are the same on every target and for every
/// tiling: an FMA instruction where the CPU has one, the correctly rounded
/// `fmaf` otherwise (the portable path).
///
/// Output rows per register tile: six rows of a 16-vector tile are 12 AVX2
/// accumulators, enough independent chains to cover the FMA latency on
/// both ports with room for the operands; nine rows of a 32-vector tile
/// are 18 of AVX-512's 32 registers, fewer broadcasts per FMA, and d = 45
/// is five such tiles with no remainder.
#[inline(always)]
fn matmul_fma_tile<const W: usize>(m: &[f32], d: usize, src: &[f32], dst: &mut [f32]) {
    if W >= 32 {
        matmul_rows::<W, 9>(m, d, src, dst)
    } else {
        matmul_rows::<W, 6>(m, d, src, dst)
    }
}

#[inline(always)]
fn matmul_rows<const W: usize, const R: usize>(m: &[f32], d: usize, src: &[f32], dst: &mut [f32]) {
    let src = &src.as_chunks::<W>().0[..d];
    let dst = &mut dst.as_chunks_mut::<W>().0[..d];
    let mut j = 0;
    while j + R <= d {
        fma_rows::<W, R>(m, d, j, src, dst);
        j += R;
    }
    match d - j {
        1 => fma_rows::<W, 1>(m, d, j, src, dst),
        2 => fma_rows::<W, 2>(m, d, j, src, dst),
        3 => fma_rows::<W, 3>(m, d, j, src, dst),
        4 => fma_rows::<W, 4>(m, d, j, src, dst),
        5 => fma_rows::<W, 5>(m, d, j, src, dst),
        6 => fma_rows::<W, 6>(m, d, j, src, dst),
        7 => fma_rows::<W, 7>(m, d, j, src, dst),
        8 => fma_rows::<W, 8>(m, d, j, src, dst),
        _ => {}
    }
}

/// Rows j..j+R of dst = M·src, accumulated in registers.
#[inline(always)]
fn fma_rows<const W: usize, const R: usize>(
    m: &[f32],
    d: usize,
    j: usize,
    src: &[[f32; W]],
    dst: &mut [[f32; W]],
) {
    let rows: [&[f32]; R] = std::array::from_fn(|r| &m[(j + r) * d..(j + r + 1) * d]);
    let mut acc = [[0.0f32; W]; R];
    for (k, x) in src.iter().enumerate() {
        for r in 0..R {
            let w = rows[r][k];
            for v in 0..W {
                acc[r][v] = w.mul_add(x[v], acc[r][v]);
            }
        }
    }
    dst[j..j + R].copy_from_slice(&acc);
}

/// Unnormalised in-place Walsh–Hadamard transform of a `[d][W]` block.
#[inline(always)]
fn fwht_block<const W: usize>(x: &mut [f32], d: usize) {
    let mut h = 1;
    while h < d {
        for base in (0..d).step_by(2 * h) {
            for i in base..base + h {
                let (lo, hi) = x.as_chunks_mut::<W>().0.split_at_mut(i + h);
                let (a, b) = (&mut lo[i], &mut hi[0]);
                for v in 0..W {
                    let (p, q) = (a[v], b[v]);
                    a[v] = p + q;
                    b[v] = p - q;
                }
            }
        }
        h *= 2;
    }
}

#[inline(always)]
fn apply_signs<const W: usize>(x: &mut [f32], signs: &[f32]) {
    for (j, &s) in signs.iter().enumerate() {
        for v in x[j * W..(j + 1) * W].iter_mut() {
            *v *= s;
        }
    }
}

#[inline(always)]
fn scale_block(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// y[j] = x[perm[j]] on rows of a block, in place.
#[inline(always)]
fn permute_block<const W: usize>(x: &mut [f32], perm: &[u32]) {
    let d = perm.len();
    let copy = x[..d * W].to_vec();
    for (j, &p) in perm.iter().enumerate() {
        let p = p as usize;
        x[j * W..(j + 1) * W].copy_from_slice(&copy[p * W..(p + 1) * W]);
    }
}

/// Householder QR of the column-major d×d matrix `a` (overwritten), returning
/// Q·diag(sign(R_ii)) row-major. Plain loops in the order docs/FORMAT.md
/// ("Seeded rotation") specifies, so the matrix is the same bits on every
/// platform: the seeded `.tq3s` rotation depends on it.
fn haar_q(a: &mut [f64], d: usize) -> Vec<f64> {
    let mut vs: Vec<Vec<f64>> = Vec::with_capacity(d);
    let mut signs = vec![1.0f64; d];
    for k in 0..d {
        let x = &a[k * d + k..(k + 1) * d];
        let norm = dot(x, x).sqrt();
        let alpha = if x[0] >= 0.0 { -norm } else { norm };
        let mut v = x.to_vec();
        v[0] -= alpha;
        let vv = dot(&v, &v);
        // R_kk = alpha; the Haar correction multiplies column k of Q by sign(R_kk).
        signs[k] = if alpha < 0.0 { -1.0 } else { 1.0 };
        if vv > 0.0 {
            for c in k..d {
                let col = &mut a[c * d + k..(c + 1) * d];
                let f = 2.0 * dot(col, &v) / vv;
                for (p, q) in col.iter_mut().zip(&v) {
                    *p -= f * q;
                }
            }
        }
        vs.push(if vv > 0.0 {
            v.iter().map(|t| t * (2.0 / vv).sqrt()).collect()
        } else {
            vec![0.0; d - k]
        });
    }
    // Q = H_0 H_1 ··· H_{d−1}, built by applying the reflections to I from the right end.
    let mut q = vec![0.0f64; d * d]; // column-major
    for i in 0..d {
        q[i * d + i] = 1.0;
    }
    for k in (0..d).rev() {
        let v = &vs[k];
        // Columns c < k are still e_c here, which H_k leaves alone.
        for c in k..d {
            let col = &mut q[c * d + k..(c + 1) * d];
            let f = dot(col, v);
            for (p, q) in col.iter_mut().zip(v) {
                *p -= f * q;
            }
        }
    }
    let mut out = vec![0.0f64; d * d];
    for r in 0..d {
        for c in 0..d {
            out[r * d + c] = q[c * d + r] * signs[c];
        }
    }
    out
}

/// A dot product with eight interleaved partial sums combined in a fixed
/// tree: vectorisable, and the same bits everywhere.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    // The tail in order from +0.0 (the format specifies this order).
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0.0f64, |s, (p, q)| s + p * q);
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orthogonality_error(rot: &Rotation) -> f64 {
        let d = rot.dim();
        let mut eye = vec![0.0f32; d * d];
        for i in 0..d {
            eye[i * d + i] = 1.0;
        }
        // Rows of the output are Π e_i, i.e. columns of Π.
        let cols = {
            let mut y = vec![0.0; d * d];
            rot.forward_batch(&eye, &mut y).unwrap();
            y
        };
        let mut worst = 0.0f64;
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = (0..d)
                    .map(|k| cols[i * d + k] as f64 * cols[j * d + k] as f64)
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((dot - want).abs());
            }
        }
        worst
    }

    #[test]
    fn dense_is_orthogonal_and_inverse_undoes_it() {
        for &d in &[2usize, 3, 45, 64] {
            let rot = Rotation::dense(d, 7).unwrap();
            assert!(orthogonality_error(&rot) < 1e-5, "d={d}");
            let x: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0.0; x.len()];
            let mut z = vec![0.0; x.len()];
            rot.forward_batch(&x, &mut y).unwrap();
            rot.inverse_batch(&y, &mut z).unwrap();
            for (a, b) in x.iter().zip(&z) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn hadamard_is_orthogonal_and_inverse_undoes_it() {
        for &d in &[2usize, 16, 64, 256] {
            for (rounds, permute) in [(1, false), (2, true), (3, true)] {
                let rot = Rotation::hadamard_with_rounds(d, 11, rounds, permute).unwrap();
                assert!(orthogonality_error(&rot) < 1e-5, "d={d} rounds={rounds}");
                let x: Vec<f32> = (0..5 * d).map(|i| (i as f32 * 0.91).cos()).collect();
                let y = rot.forward(&x).unwrap();
                let z = rot.inverse(&y).unwrap();
                for (a, b) in x.iter().zip(&z) {
                    assert!((a - b).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn one_round_hadamard_matches_the_textbook_matrix() {
        // H_ij = (−1)^popcount(i & j) / √d, Π = H·diag(s).
        let d = 8;
        let rot = Rotation::hadamard_with_rounds(d, 3, 1, false).unwrap();
        let Rotation::Hadamard(h) = &rot else {
            unreachable!()
        };
        let x: Vec<f32> = (0..d).map(|i| i as f32 - 2.5).collect();
        let y = rot.forward(&x).unwrap();
        for (i, yi) in y.iter().enumerate() {
            let want: f64 = (0..d)
                .map(|j| {
                    let hij = if (i & j).count_ones().is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    };
                    hij * h.signs[0][j] as f64 * x[j] as f64
                })
                .sum::<f64>()
                / (d as f64).sqrt();
            assert!((*yi as f64 - want).abs() < 1e-5);
        }
    }

    #[test]
    fn parameters_round_trip_through_bytes() {
        for rot in [
            Rotation::dense(45, 1).unwrap(),
            Rotation::hadamard(64, 2).unwrap(),
        ] {
            let back = Rotation::from_bytes(rot.kind(), rot.dim(), &rot.to_bytes()).unwrap();
            assert_eq!(back, rot);
        }
        assert!(Rotation::from_bytes(RotationKind::Dense, 4, &[0; 60]).is_err());
        // Finite entries that are not a rotation: the identity with one
        // entry off, in a row and a column, is refused; the identity is not.
        let eye = |d: usize| (0..d * d).map(move |i| f32::from(u8::from(i % (d + 1) == 0)));
        let bytes = |m: Vec<f32>| m.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert!(Rotation::from_bytes(RotationKind::Dense, 5, &bytes(eye(5).collect())).is_ok());
        for (at, v) in [(0, 1.01f32), (7, 0.1), (24, 1e30)] {
            let mut m: Vec<f32> = eye(5).collect();
            m[at] = v;
            let e = Rotation::from_bytes(RotationKind::Dense, 5, &bytes(m)).unwrap_err();
            assert!(e.contains("not a rotation"), "{e}");
        }
        let mut bad = Rotation::hadamard(64, 2).unwrap().to_bytes();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&64u32.to_le_bytes()); // out of range for d = 64
        assert!(Rotation::from_bytes(RotationKind::Hadamard, 64, &bad).is_err());
    }

    #[test]
    fn seeded_bytes_regenerate_the_matrix_and_refuse_a_wrong_digest() {
        let rot = Rotation::dense(24, 99).unwrap();
        let b = rot.to_seeded_bytes().unwrap();
        assert_eq!(b[..8], 99u64.to_le_bytes());
        assert_eq!(Rotation::from_seeded_bytes(24, &b).unwrap(), rot);
        for k in [0, 8, 15] {
            let mut bad = b;
            bad[k] ^= 1;
            let e = Rotation::from_seeded_bytes(24, &bad).unwrap_err();
            assert!(e.contains("digest"), "{e}");
        }
        assert!(Rotation::from_seeded_bytes(24, &b[..15]).is_err());
        // Only the generator's output has a seeded form.
        let explicit = Rotation::from_bytes(RotationKind::Dense, 24, &rot.to_bytes()).unwrap();
        assert_eq!(explicit.to_seeded_bytes(), None);
        assert_eq!(Rotation::hadamard(64, 1).unwrap().to_seeded_bytes(), None);
    }

    #[test]
    fn hadamard_rejects_non_powers_of_two() {
        assert!(matches!(
            Rotation::hadamard(45, 0),
            Err(Error::InvalidDim { .. })
        ));
    }
}

//! The 2D multiresolution hash encoding of Instant-NGP (Müller et al. 2022,
//! §3): L levels of T entries × F features, bilinear interpolation of the
//! four grid vertices around a position in [0, 1]².

use crate::{Error, Result};

/// The second prime of the Instant-NGP spatial hash, multiplied into y
/// (x is multiplied by 1): index = (x · 1 ⊕ y · 2654435761) mod T.
pub const HASH_PRIME_Y: u32 = 2_654_435_761;

/// Largest resolution a level may have, so that vertex coordinates and
/// (N + 1)² stay far inside u32 and f32 positions resolve every cell.
pub const MAX_RESOLUTION: u32 = 1 << 16;

/// One level of the encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    /// N_l = ⌊N_min · b^l⌋: the grid has (N_l + 1)² vertices, 0..=N_l on
    /// each axis.
    pub resolution: u32,
    /// Stored one entry per vertex (index = x + y·(N_l + 1)) because
    /// (N_l + 1)² ≤ T; otherwise the vertices are hashed into T entries.
    pub dense: bool,
    /// Entries the level can address: (N_l + 1)² when dense, T when hashed.
    /// The table still holds T entries for every level; a dense level's
    /// entries from `used` on are never read or written.
    pub used: usize,
}

/// The geometry of a hash encoding: its levels, the table size T and the
/// features per entry F. The table itself is a separate `[L, T, F]` f32
/// slice (levels concatenated, each level T·F values), so that any decoded
/// table can be evaluated with the same encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    levels: Vec<Level>,
    log2_table_size: u32,
    features: usize,
}

impl Encoding {
    /// The encoding with `levels` levels of resolution ⌊`base_resolution` ·
    /// `growth`^l⌋, 2^`log2_table_size` entries of `features` features.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a level count, table size, feature
    /// count, base resolution or growth is out of range or a level's
    /// resolution would pass [`MAX_RESOLUTION`].
    pub fn new(
        levels: usize,
        log2_table_size: u32,
        features: usize,
        base_resolution: u32,
        growth: f64,
    ) -> Result<Encoding> {
        let bad = |why: String| Err(Error::InvalidArgument(why));
        if !(1..=32).contains(&levels) {
            return bad(format!("hash grid levels = {levels}: must be in 1..=32"));
        }
        if !(1..=24).contains(&log2_table_size) {
            return bad(format!(
                "hash grid log2 table size = {log2_table_size}: must be in 1..=24"
            ));
        }
        if !(1..=8).contains(&features) {
            return bad(format!("hash grid features = {features}: must be in 1..=8"));
        }
        if !(1..=MAX_RESOLUTION).contains(&base_resolution) {
            return bad(format!(
                "hash grid base resolution = {base_resolution}: must be in 1..={MAX_RESOLUTION}"
            ));
        }
        if !(growth.is_finite() && (1.0..=8.0).contains(&growth)) {
            return bad(format!(
                "hash grid growth factor = {growth}: must be finite and in [1, 8]"
            ));
        }
        let t = 1u64 << log2_table_size;
        let mut out = Vec::with_capacity(levels);
        for l in 0..levels {
            let n = (f64::from(base_resolution) * growth.powi(l as i32)).floor();
            if n > f64::from(MAX_RESOLUTION) {
                return bad(format!(
                    "hash grid level {l}: resolution ⌊{base_resolution}·{growth}^{l}⌋ = {n} \
                     passes the limit {MAX_RESOLUTION}"
                ));
            }
            let resolution = n as u32;
            let vertices = (u64::from(resolution) + 1).pow(2);
            let dense = vertices <= t;
            out.push(Level {
                resolution,
                dense,
                used: if dense { vertices } else { t } as usize,
            });
        }
        Ok(Encoding {
            levels: out,
            log2_table_size,
            features,
        })
    }

    /// The levels, coarsest first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// log2 T.
    pub fn log2_table_size(&self) -> u32 {
        self.log2_table_size
    }

    /// T, the entries per level.
    pub fn table_size(&self) -> usize {
        1 << self.log2_table_size
    }

    /// F, the features per entry.
    pub fn features(&self) -> usize {
        self.features
    }

    /// L · F, the width of the encoded vector (the MLP's input).
    pub fn output_dim(&self) -> usize {
        self.levels.len() * self.features
    }

    /// L · T · F, the length of a table.
    pub fn table_len(&self) -> usize {
        self.levels.len() * self.table_size() * self.features
    }

    /// The entry of vertex (x, y) within level `level`'s T entries:
    /// x + y·(N + 1) for a dense level, (x ⊕ y·2654435761) mod T for a
    /// hashed one. `level` must be below the level count.
    pub fn index(&self, level: usize, x: u32, y: u32) -> usize {
        let lv = &self.levels[level];
        if lv.dense {
            (x + y * (lv.resolution + 1)) as usize
        } else {
            ((x ^ y.wrapping_mul(HASH_PRIME_Y)) & ((1u32 << self.log2_table_size) - 1)) as usize
        }
    }

    /// The four vertices around `pos` ∈ [0, 1]² at level `level` and their
    /// bilinear weights, in the order (x0, y0), (x0+1, y0), (x0, y0+1),
    /// (x0+1, y0+1). Positions outside [0, 1]² are clamped.
    pub fn corners(&self, level: usize, pos: [f32; 2]) -> [(u32, f32); 4] {
        let n = self.levels[level].resolution;
        let cell = |p: f32| -> (u32, f32) {
            let s = p.clamp(0.0, 1.0) * n as f32;
            let i = (s.floor() as u32).min(n.saturating_sub(1));
            (i, s - i as f32)
        };
        let (x0, fx) = cell(pos[0]);
        let (y0, fy) = cell(pos[1]);
        // A resolution-0 level has one vertex: both "corners" are vertex 0.
        let (x1, y1) = ((x0 + 1).min(n), (y0 + 1).min(n));
        let e = |x, y| self.index(level, x, y) as u32;
        [
            (e(x0, y0), (1.0 - fx) * (1.0 - fy)),
            (e(x1, y0), fx * (1.0 - fy)),
            (e(x0, y1), (1.0 - fx) * fy),
            (e(x1, y1), fx * fy),
        ]
    }

    /// Checks that `table` has the shape `[L, T, F]`.
    ///
    /// # Errors
    /// [`Error::Shape`] otherwise.
    pub fn check_table(&self, table: &[f32]) -> Result<()> {
        if table.len() != self.table_len() {
            return Err(Error::Shape(format!(
                "a hash-grid table of {} levels × {} entries × {} features holds {} values, \
                 not {}",
                self.levels.len(),
                self.table_size(),
                self.features,
                self.table_len(),
                table.len()
            )));
        }
        Ok(())
    }

    /// The encoded vector of `pos` (L·F values, level-major) from `table`
    /// (`[L, T, F]`, checked by [`Encoding::check_table`]).
    ///
    /// # Errors
    /// [`Error::Shape`] when `table` or `out` has the wrong length.
    pub fn encode(&self, table: &[f32], pos: [f32; 2], out: &mut [f32]) -> Result<()> {
        self.check_table(table)?;
        if out.len() != self.output_dim() {
            return Err(Error::Shape(format!(
                "the encoded vector has {} values, not {}",
                self.output_dim(),
                out.len()
            )));
        }
        let level_len = self.table_size() * self.features;
        for (l, level_table) in table.chunks_exact(level_len).enumerate() {
            self.encode_level(
                l,
                level_table,
                pos,
                &mut out[l * self.features..][..self.features],
            );
        }
        Ok(())
    }

    /// Level `l`'s F interpolated features at `pos` from that level's T·F
    /// values.
    pub(crate) fn encode_level(
        &self,
        l: usize,
        level_table: &[f32],
        pos: [f32; 2],
        out: &mut [f32],
    ) {
        let f = self.features;
        out.fill(0.0);
        for (e, w) in self.corners(l, pos) {
            let entry = &level_table[e as usize * f..][..f];
            for (o, &v) in out.iter_mut().zip(entry) {
                *o += w * v;
            }
        }
    }
}

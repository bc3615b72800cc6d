//! Weight quantisation (CPU side): quantisers from f32 weights `[N, K]` (row = output channel,
//! like `nn.Linear`) to packed GPU-ready words, GGUF block import, and [`QuantTensor`], the
//! uploaded form the [`qmatmul`](crate::ops::qmatmul) kernels dequantise on the fly.
//!
//! # Schemes and formulas (`q` is the stored integer, `w` the dequantised weight)
//!
//! * `W8`: 8-bit, one **f32** scale per row, `d = max(abs(w))/127`; `w = q·d`, `q` in
//!   `[-127, 127]`; any K.
//! * `W4`: 4-bit in groups of 32 along K, one f16 scale per group, `d = v/−8` where `v` is the
//!   group's value of largest magnitude (llama.cpp's Q4_0 rule: `v` maps to `q = 0`); `w =
//!   (q−8)·d`, `q` in `[0, 15]` (so `q−8` in `[−8, 7]`); any K.
//! * `W4Asym`: 4-bit in groups of 32, f16 `d = (max−min)/15` and f16 `m = min` per group;
//!   `w = q·d + m`, `q` in `[0, 15]`; any K.
//! * `Q4_0`, `Q4_1`: GGUF blocks of 32, the `W4` / `W4Asym` formulas; K a multiple of 32.
//! * `Q8_0`: GGUF blocks of 32, f16 `d = max(abs(w))/127` per block; `w = q·d`; K a multiple
//!   of 32.
//!
//! `W4` is bit-for-bit the Q4_0 encoding and `W4Asym` the Q4_1 one; they differ from the GGUF
//! schemes only in allowing K that is not a multiple of 32 (rows are padded to whole blocks;
//! the kernels mask the activations past K, so padding never contributes). The quantisers
//! quantise against the f16-rounded scale (and minimum) they store, so rounding the scale adds
//! no error beyond the integer rounding.
//!
//! # GPU layout (all 4-byte aligned; GGUF blocks are repacked at upload)
//!
//! Every row holds `nb = ceil(K/32)` blocks of 32 elements.
//! * `values` (u32 words): row `r`, block `b` at words `(r·nb + b)·BW ..`, `BW` = 4 (4-bit) or
//!   8 (8-bit). 4-bit: byte `j` (0..16) of a block holds element `j` in its low nibble and
//!   element `j + 16` in its high nibble (GGUF's order); 8-bit: byte `j` is element `j` (i8).
//!   Bytes are little-endian within a word.
//! * `scales` (u32 words): `W8`: f32 bits per row; `W4`/`Q4_0`/`Q8_0`: f16 per block at index
//!   `r·nb + b`, two per word (low half first); `W4Asym`/`Q4_1`: one word per block, d in the
//!   low half and m in the high half.
//!
//! GGUF's 18/20/34-byte blocks are *repacked* at upload into this split layout rather than read
//! in place with byte-offset arithmetic: the split layout gives one aligned `vec4<u32>` load per
//! 4-bit block (two per 8-bit block) instead of unaligned byte extraction across word
//! boundaries, lets Q4_0/Q4_1 share the kernels of W4/W4Asym, and costs one linear pass over
//! the bytes at load time (the byte count is unchanged).

use std::sync::Arc;

use half::f16;

use crate::context::Context;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::tensor::Tensor;
use crate::texture::{TexelKind, WordTexture};

/// Elements per quantisation block along K.
pub const BLOCK: usize = 32;

/// A weight quantisation scheme (see the [module docs](self) for the formulas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantScheme {
    /// int8 per output channel, symmetric, f32 scale.
    W8,
    /// int4 in groups of 32 along K, symmetric, f16 scale (the Q4_0 encoding, any K).
    W4,
    /// int4 in groups of 32 along K, f16 scale and f16 minimum (the Q4_1 encoding, any K).
    W4Asym,
    /// GGUF Q4_0 (K a multiple of 32).
    Q4_0,
    /// GGUF Q4_1 (K a multiple of 32).
    Q4_1,
    /// GGUF Q8_0 (K a multiple of 32).
    Q8_0,
}

impl QuantScheme {
    /// Every scheme.
    pub const ALL: [QuantScheme; 6] =
        [QuantScheme::W8, QuantScheme::W4, QuantScheme::W4Asym, QuantScheme::Q4_0, QuantScheme::Q4_1, QuantScheme::Q8_0];

    /// Lower-case name (`w8`, `w4`, `w4a`, `q4_0`, `q4_1`, `q8_0`).
    pub const fn name(self) -> &'static str {
        match self {
            QuantScheme::W8 => "w8",
            QuantScheme::W4 => "w4",
            QuantScheme::W4Asym => "w4a",
            QuantScheme::Q4_0 => "q4_0",
            QuantScheme::Q4_1 => "q4_1",
            QuantScheme::Q8_0 => "q8_0",
        }
    }

    /// The scheme of a [`name`](Self::name), or `None`.
    pub fn from_name(name: &str) -> Option<QuantScheme> {
        QuantScheme::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Bits per stored value (4 or 8).
    pub const fn bits(self) -> usize {
        match self {
            QuantScheme::W8 | QuantScheme::Q8_0 => 8,
            _ => 4,
        }
    }

    /// u32 words of values per block of 32.
    pub const fn block_words(self) -> usize {
        self.bits()
    }

    /// GGUF schemes need K to be a multiple of [`BLOCK`].
    pub const fn needs_whole_blocks(self) -> bool {
        matches!(self, QuantScheme::Q4_0 | QuantScheme::Q4_1 | QuantScheme::Q8_0)
    }

    /// One f32 scale per row (`W8`) instead of per-block f16 scales.
    pub const fn row_scale(self) -> bool {
        matches!(self, QuantScheme::W8)
    }

    /// Per-block f16 minimum (`w = q·d + m`).
    pub const fn has_min(self) -> bool {
        matches!(self, QuantScheme::W4Asym | QuantScheme::Q4_1)
    }

    /// Symmetric 4-bit with the −8 offset (`w = (q−8)·d`).
    pub const fn offset8(self) -> bool {
        matches!(self, QuantScheme::W4 | QuantScheme::Q4_0)
    }

    /// Bytes of one GGUF block of 32 weights, for the GGUF schemes (Q4_0: f16 scale + 16 bytes
    /// of nibbles; Q4_1: f16 scale and minimum + 16; Q8_0: f16 scale + 32 int8).
    pub const fn gguf_block_bytes(self) -> Option<usize> {
        match self {
            QuantScheme::Q4_0 => Some(18),
            QuantScheme::Q4_1 => Some(20),
            QuantScheme::Q8_0 => Some(34),
            _ => None,
        }
    }

    /// u32 words of scales for `n` rows of `nb` blocks.
    pub const fn scale_words(self, n: usize, nb: usize) -> usize {
        if self.row_scale() {
            n
        } else if self.has_min() {
            n * nb
        } else {
            (n * nb).div_ceil(2)
        }
    }
}

/// Quantised weights on the CPU, in the GPU layout (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeights {
    /// The scheme.
    pub scheme: QuantScheme,
    /// Rows (output channels).
    pub n: usize,
    /// Columns (input features).
    pub k: usize,
    /// Packed values, `n · ceil(k/32) · block_words` words.
    pub values: Vec<u32>,
    /// Scales (and minima), [`QuantScheme::scale_words`] words.
    pub scales: Vec<u32>,
}

fn shape_err(op: &'static str, detail: String) -> KestrelError {
    KestrelError::Shape { op, detail }
}

/// `[N, K]` from a shape, both non-zero and small enough for 32-bit indexing in the kernels.
fn check_shape(op: &'static str, scheme: QuantScheme, shape: &[usize]) -> Result<(usize, usize)> {
    let &[n, k] = shape else {
        return Err(shape_err(op, format!("weight {shape:?} must be [N, K]")));
    };
    if n == 0 || k == 0 || n > u32::MAX as usize / 16 || k > u32::MAX as usize / 16 {
        return Err(shape_err(op, format!("weight {shape:?} is empty or too large")));
    }
    if scheme.needs_whole_blocks() && k % BLOCK != 0 {
        return Err(shape_err(op, format!("{} needs K a multiple of {BLOCK}, got weight {shape:?}", scheme.name())));
    }
    if n.checked_mul(k.div_ceil(BLOCK) * scheme.block_words() * 4).is_none() {
        return Err(shape_err(op, format!("weight {shape:?} overflows")));
    }
    Ok((n, k))
}

/// `(value words, scale words)` of a weight `[n, k]` packed with `scheme`.
pub fn packed_words(scheme: QuantScheme, n: usize, k: usize) -> (usize, usize) {
    let nb = k.div_ceil(BLOCK);
    (n * nb * scheme.block_words(), scheme.scale_words(n, nb))
}

/// Checks that `shape` is a weight `[N, K]` that `scheme` can pack (non-empty, 32-bit
/// indexable, whole blocks for the GGUF schemes); returns `(N, K)`.
pub fn check_weight_shape(scheme: QuantScheme, shape: &[usize]) -> Result<(usize, usize)> {
    check_shape("quantize", scheme, shape)
}

/// `x` rounded to f16: (bits, value); an error when it overflows f16.
fn f16_bits(x: f32) -> Result<(u32, f32)> {
    let h = f16::from_f32(x);
    if !h.is_finite() {
        return Err(KestrelError::InvalidArgument { op: "quantize", detail: format!("scale {x} overflows f16") });
    }
    Ok((u32::from(h.to_bits()), h.to_f32()))
}

/// Writes value `q` (already offset to its stored form) of element `j` of a block.
fn put(words: &mut [u32], bits: usize, j: usize, q: u32) {
    if bits == 8 {
        words[j / 4] |= (q & 0xFF) << (8 * (j % 4));
    } else {
        let byte = j % 16;
        words[byte / 4] |= (q & 0xF) << (8 * (byte % 4) + 4 * (j / 16));
    }
}

/// Reads stored value of element `j` of a block (4-bit: 0..15; 8-bit: as i8).
fn get(words: &[u32], bits: usize, j: usize) -> i32 {
    if bits == 8 {
        i32::from(((words[j / 4] >> (8 * (j % 4))) & 0xFF) as u8 as i8)
    } else {
        let byte = j % 16;
        ((words[byte / 4] >> (8 * (byte % 4) + 4 * (j / 16))) & 0xF) as i32
    }
}

fn put_half(scales: &mut [u32], i: usize, bits: u32) {
    scales[i / 2] |= bits << (16 * (i % 2));
}

fn get_half(scales: &[u32], i: usize) -> f32 {
    f16::from_bits((scales[i / 2] >> (16 * (i % 2))) as u16).to_f32()
}

impl PackedWeights {
    /// Blocks per row, `ceil(K/32)`.
    pub fn blocks_per_row(&self) -> usize {
        self.k.div_ceil(BLOCK)
    }

    /// Quantises f32 weights `[N, K]` (row-major) with `scheme`. Errors: a shape that is not
    /// `[N, K]`, K not a multiple of 32 for a GGUF scheme, a length mismatch, non-finite weights.
    pub fn quantize(scheme: QuantScheme, w: &[f32], shape: &[usize]) -> Result<PackedWeights> {
        let (n, k) = check_shape("quantize", scheme, shape)?;
        if w.len() != n * k {
            return Err(KestrelError::DataLength { expected: n * k, got: w.len() });
        }
        if w.iter().any(|x| !x.is_finite()) {
            return Err(KestrelError::InvalidArgument { op: "quantize", detail: "weights must be finite".into() });
        }
        let nb = k.div_ceil(BLOCK);
        let (bits, bw) = (scheme.bits(), scheme.block_words());
        let mut values = vec![0u32; n * nb * bw];
        let mut scales = vec![0u32; scheme.scale_words(n, nb)];
        for r in 0..n {
            let row = &w[r * k..(r + 1) * k];
            let row_d = if scheme.row_scale() { row.iter().fold(0f32, |a, x| a.max(x.abs())) / 127.0 } else { 0.0 };
            if scheme.row_scale() {
                scales[r] = row_d.to_bits();
            }
            for b in 0..nb {
                let blk = &row[b * BLOCK..((b + 1) * BLOCK).min(k)];
                let words = &mut values[(r * nb + b) * bw..(r * nb + b + 1) * bw];
                let si = r * nb + b;
                match scheme {
                    QuantScheme::W8 => {
                        let id = if row_d > 0.0 { 1.0 / row_d } else { 0.0 };
                        for (j, &x) in blk.iter().enumerate() {
                            put(words, bits, j, (x * id).round().clamp(-127.0, 127.0) as i32 as u32);
                        }
                    }
                    QuantScheme::Q8_0 => {
                        let (hb, d) = f16_bits(blk.iter().fold(0f32, |a, x| a.max(x.abs())) / 127.0)?;
                        put_half(&mut scales, si, hb);
                        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                        for (j, &x) in blk.iter().enumerate() {
                            put(words, bits, j, (x * id).round().clamp(-127.0, 127.0) as i32 as u32);
                        }
                    }
                    QuantScheme::W4 | QuantScheme::Q4_0 => {
                        // The signed value of largest magnitude maps to −8 exactly.
                        let v = blk.iter().fold(0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
                        let (hb, d) = f16_bits(v / -8.0)?;
                        put_half(&mut scales, si, hb);
                        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                        for j in 0..BLOCK {
                            // Padding past K stores 8, i.e. the value 0.
                            let x = blk.get(j).copied().unwrap_or(0.0);
                            put(words, bits, j, (x * id + 8.5).floor().clamp(0.0, 15.0) as u32);
                        }
                    }
                    QuantScheme::W4Asym | QuantScheme::Q4_1 => {
                        let lo = blk.iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let (mb, m) = f16_bits(lo)?;
                        let (db, d) = f16_bits((hi - m) / 15.0)?;
                        scales[si] = db | (mb << 16);
                        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                        for (j, &x) in blk.iter().enumerate() {
                            put(words, bits, j, ((x - m) * id + 0.5).floor().clamp(0.0, 15.0) as u32);
                        }
                    }
                }
            }
        }
        Ok(PackedWeights { scheme, n, k, values, scales })
    }

    /// Stacks the rows of `parts` (one scheme, one K) into `[N₁ + N₂ + …, K]`: the weight of a
    /// fused projection (q|k|v, gate|up) whose output is the parts' outputs side by side.
    /// Errors: no parts, or parts of different schemes or K.
    pub fn concat_rows(parts: &[PackedWeights]) -> Result<PackedWeights> {
        let first =
            parts.first().ok_or_else(|| KestrelError::InvalidArgument { op: "concat_rows", detail: "no weights to stack".into() })?;
        if let Some(p) = parts.iter().find(|p| p.scheme != first.scheme || p.k != first.k) {
            return Err(KestrelError::InvalidArgument {
                op: "concat_rows",
                detail: format!("{:?} with K = {} cannot stack onto {:?} with K = {}", p.scheme, p.k, first.scheme, first.k),
            });
        }
        let (scheme, k, nb) = (first.scheme, first.k, first.blocks_per_row());
        if let Some(p) =
            parts.iter().find(|p| p.values.len() != p.n * nb * scheme.block_words() || p.scales.len() != scheme.scale_words(p.n, nb))
        {
            return Err(KestrelError::InvalidArgument {
                op: "concat_rows",
                detail: format!("{} value and {} scale words do not pack [{}, {k}] as {scheme:?}", p.values.len(), p.scales.len(), p.n),
            });
        }
        let n = parts.iter().map(|p| p.n).sum();
        let values = parts.iter().flat_map(|p| p.values.iter().copied()).collect();
        let scales = if scheme.row_scale() || scheme.has_min() {
            parts.iter().flat_map(|p| p.scales.iter().copied()).collect()
        } else {
            // Two f16 block scales per word: a part with an odd block count ends mid-word.
            let mut scales = vec![0u32; scheme.scale_words(n, nb)];
            let halves = parts.iter().flat_map(|p| (0..p.n * nb).map(move |i| (p.scales[i / 2] >> (16 * (i % 2))) & 0xFFFF));
            for (i, bits) in halves.enumerate() {
                put_half(&mut scales, i, bits);
            }
            scales
        };
        Ok(PackedWeights { scheme, n, k, values, scales })
    }

    /// The dequantised weights `[N, K]` (exactly the values the kernels multiply by).
    pub fn dequantize(&self) -> Vec<f32> {
        let (n, k, nb) = (self.n, self.k, self.blocks_per_row());
        let (bits, bw) = (self.scheme.bits(), self.scheme.block_words());
        let mut out = vec![0f32; n * k];
        for r in 0..n {
            for c in 0..k {
                let (b, j) = (c / BLOCK, c % BLOCK);
                let si = r * nb + b;
                let q = get(&self.values[si * bw..(si + 1) * bw], bits, j) as f32;
                out[r * k + c] = match self.scheme {
                    QuantScheme::W8 => q * f32::from_bits(self.scales[r]),
                    QuantScheme::Q8_0 => q * get_half(&self.scales, si),
                    QuantScheme::W4 | QuantScheme::Q4_0 => (q - 8.0) * get_half(&self.scales, si),
                    QuantScheme::W4Asym | QuantScheme::Q4_1 => {
                        let s = self.scales[si];
                        let d = f16::from_bits(s as u16).to_f32();
                        let m = f16::from_bits((s >> 16) as u16).to_f32();
                        q * d + m
                    }
                };
            }
        }
        out
    }

    /// Repacks GGUF blocks of a GGUF `scheme` (Q4_0, Q4_1 or Q8_0, as stored in the file; a
    /// file's block type maps to its scheme through [`WeightDType::gguf_scheme`]) of a weight
    /// `shape = [N, K]` (GGUF lists the dimensions innermost first, i.e. `[K, N]`).
    ///
    /// [`WeightDType::gguf_scheme`]: crate::weights::WeightDType::gguf_scheme
    pub fn from_gguf_blocks(scheme: QuantScheme, shape: &[usize], bytes: &[u8]) -> Result<PackedWeights> {
        let Some(bsize) = scheme.gguf_block_bytes() else {
            return Err(KestrelError::InvalidArgument {
                op: "from_gguf_blocks",
                detail: format!("{} is not a GGUF block scheme", scheme.name()),
            });
        };
        let (n, k) = check_shape("from_gguf_blocks", scheme, shape)?;
        let nb = k / BLOCK;
        if bytes.len() != n * nb * bsize {
            return Err(KestrelError::InvalidArgument {
                op: "from_gguf_blocks",
                detail: format!("{} bytes for a {} weight {shape:?}, expected {}", bytes.len(), scheme.name(), n * nb * bsize),
            });
        }
        let bw = scheme.block_words();
        let mut values = vec![0u32; n * nb * bw];
        let mut scales = vec![0u32; scheme.scale_words(n, nb)];
        let le16 = |b: &[u8]| u32::from(u16::from_le_bytes([b[0], b[1]]));
        for (i, blk) in bytes.chunks_exact(bsize).enumerate() {
            let (head, qs) = match scheme {
                QuantScheme::Q4_1 => {
                    scales[i] = le16(&blk[0..2]) | (le16(&blk[2..4]) << 16);
                    (4, &blk[4..])
                }
                _ => {
                    put_half(&mut scales, i, le16(&blk[0..2]));
                    (2, &blk[2..])
                }
            };
            debug_assert_eq!(head + qs.len(), bsize);
            for (w, q) in values[i * bw..(i + 1) * bw].iter_mut().zip(qs.chunks_exact(4)) {
                *w = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            }
        }
        Ok(PackedWeights { scheme, n, k, values, scales })
    }

    /// The weights as GGUF blocks (the inverse of [`from_gguf_blocks`](Self::from_gguf_blocks));
    /// only for the GGUF schemes.
    pub fn to_gguf_blocks(&self) -> Result<Vec<u8>> {
        let Some(block_bytes) = self.scheme.gguf_block_bytes() else {
            return Err(KestrelError::InvalidArgument {
                op: "to_gguf_blocks",
                detail: format!("{} is not a GGUF scheme", self.scheme.name()),
            });
        };
        let blocks = self.n * self.blocks_per_row();
        let bw = self.scheme.block_words();
        let mut out = Vec::with_capacity(blocks * block_bytes);
        for i in 0..blocks {
            if self.scheme.has_min() {
                out.extend_from_slice(&self.scales[i].to_le_bytes());
            } else {
                out.extend_from_slice(&((self.scales[i / 2] >> (16 * (i % 2))) as u16).to_le_bytes());
            }
            for w in &self.values[i * bw..(i + 1) * bw] {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        Ok(out)
    }
}

/// Where the words of a [`QuantTensor`] live.
#[derive(Clone, Debug)]
pub enum QuantStorage {
    /// Storage buffers of u32 words.
    Buffers {
        /// Packed values.
        values: Tensor,
        /// Scales (and minima).
        scales: Tensor,
    },
    /// Textures ([`crate::texture`]), chosen where
    /// [`Capabilities::texture_weights`](crate::Capabilities::texture_weights) says fetches from
    /// them are faster.
    Textures {
        /// Packed values, one `vec4<u32>` per texel (a 4-bit block per texel).
        values: WordTexture,
        /// Scales, one word per texel.
        scales: WordTexture,
    },
}

/// Quantised weights `[N, K]` in GPU memory: packed values and scales (layout in the
/// [module docs](self)), in buffers or textures ([`QuantStorage`]).
#[derive(Clone, Debug)]
pub struct QuantTensor {
    scheme: QuantScheme,
    shape: [usize; 2],
    storage: QuantStorage,
}

/// Stores value and scale words (little-endian bytes) the way the device prefers.
fn store(ctx: &Arc<Context>, values: &[u8], scales: &[u8]) -> Result<QuantStorage> {
    let caps = ctx.caps();
    if caps.texture_weights
        && WordTexture::fits(caps, values.len() / 4, TexelKind::Vec4)
        && WordTexture::fits(caps, scales.len() / 4, TexelKind::Word)
    {
        return Ok(QuantStorage::Textures {
            values: WordTexture::from_le_bytes(ctx, values, TexelKind::Vec4)?,
            scales: WordTexture::from_le_bytes(ctx, scales, TexelKind::Word)?,
        });
    }
    Ok(QuantStorage::Buffers {
        values: Tensor::from_le_bytes(ctx, &[values.len() / 4], DType::U32, values)?,
        scales: Tensor::from_le_bytes(ctx, &[scales.len() / 4], DType::U32, scales)?,
    })
}

impl QuantTensor {
    /// Uploads packed weights.
    pub fn upload(ctx: &Arc<Context>, p: &PackedWeights) -> Result<QuantTensor> {
        check_shape("QuantTensor::upload", p.scheme, &[p.n, p.k])?;
        let nb = p.blocks_per_row();
        if p.values.len() != p.n * nb * p.scheme.block_words() || p.scales.len() != p.scheme.scale_words(p.n, nb) {
            return Err(KestrelError::InvalidArgument {
                op: "QuantTensor::upload",
                detail: "packed buffers do not match the shape".into(),
            });
        }
        // The words' in-memory bytes are their little-endian bytes on every target Kestrel
        // supports (as for `Tensor::from_u32`).
        Ok(QuantTensor {
            scheme: p.scheme,
            shape: [p.n, p.k],
            storage: store(ctx, bytemuck::cast_slice(&p.values), bytemuck::cast_slice(&p.scales))?,
        })
    }

    /// Uploads packed weights given as little-endian bytes of their value and scale words (e.g.
    /// borrowed from a memory-mapped Kestrel file): one upload per buffer, no host copy.
    /// Errors: a bad shape for `scheme`, or byte counts that do not match it.
    pub fn from_le_bytes(ctx: &Arc<Context>, scheme: QuantScheme, shape: &[usize], values: &[u8], scales: &[u8]) -> Result<QuantTensor> {
        let (n, k) = check_shape("QuantTensor::from_le_bytes", scheme, shape)?;
        let (vw, sw) = packed_words(scheme, n, k);
        if values.len() != vw * 4 || scales.len() != sw * 4 {
            return Err(KestrelError::InvalidArgument {
                op: "QuantTensor::from_le_bytes",
                detail: format!(
                    "{} value and {} scale bytes for a {} weight {shape:?}, expected {} and {}",
                    values.len(),
                    scales.len(),
                    scheme.name(),
                    vw * 4,
                    sw * 4
                ),
            });
        }
        Ok(QuantTensor { scheme, shape: [n, k], storage: store(ctx, values, scales)? })
    }

    /// Quantises f32 weights `[N, K]` on the CPU and uploads them.
    pub fn quantize(ctx: &Arc<Context>, scheme: QuantScheme, w: &[f32], shape: &[usize]) -> Result<QuantTensor> {
        QuantTensor::upload(ctx, &PackedWeights::quantize(scheme, w, shape)?)
    }

    /// Uploads GGUF Q4_0 / Q4_1 / Q8_0 block bytes of a weight `[N, K]`, repacked into the
    /// aligned GPU layout (see the [module docs](self) for why).
    pub fn from_gguf_blocks(ctx: &Arc<Context>, scheme: QuantScheme, shape: &[usize], bytes: &[u8]) -> Result<QuantTensor> {
        QuantTensor::upload(ctx, &PackedWeights::from_gguf_blocks(scheme, shape, bytes)?)
    }

    /// The scheme.
    pub fn scheme(&self) -> QuantScheme {
        self.scheme
    }

    /// `[N, K]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Blocks per row, `ceil(K/32)`.
    pub fn blocks_per_row(&self) -> usize {
        self.shape[1].div_ceil(BLOCK)
    }

    /// Where the packed values and scales live.
    pub fn storage(&self) -> &QuantStorage {
        &self.storage
    }

    /// Bytes of values and scales in GPU memory.
    pub fn byte_size(&self) -> u64 {
        match &self.storage {
            QuantStorage::Buffers { values, scales } => values.byte_size() + scales.byte_size(),
            QuantStorage::Textures { values, scales } => values.byte_size() + scales.byte_size(),
        }
    }

    /// Downloads the packed weights (waits for submitted work).
    pub fn download(&self) -> Result<PackedWeights> {
        let (values, scales) = match &self.storage {
            QuantStorage::Buffers { values, scales } => (values.to_vec_u32()?, scales.to_vec_u32()?),
            QuantStorage::Textures { values, scales } => (values.to_vec_u32()?, scales.to_vec_u32()?),
        };
        Ok(PackedWeights { scheme: self.scheme, n: self.shape[0], k: self.shape[1], values, scales })
    }

    /// The dequantised weights `[N, K]`, computed on the CPU from the GPU buffers (for tests).
    pub fn dequantize_cpu(&self) -> Result<Vec<f32>> {
        Ok(self.download()?.dequantize())
    }
}

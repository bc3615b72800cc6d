//! CPU conversion of stored tensors to f32: plain types and ggml's block-quantised layouts.
//!
//! The block layouts and the order of the float operations follow ggml's
//! `dequantize_row_*` (and the `gguf` Python package's `gguf.quants`, which computes the same
//! values in the same order), so the results are bit-identical to both.

use half::f16;

use super::WeightDType;
use crate::error::{KestrelError, Result};

/// Elements in one K-quant super-block.
const QK_K: usize = 256;

/// Converts `numel` stored values of type `dtype` to f32.
///
/// `bytes` must hold exactly `dtype.bytes_for(numel)` bytes. Integers and booleans convert to
/// their (possibly rounded) f32 value. Errors: [`KestrelError::InvalidArgument`] for a length
/// mismatch, a count that is not whole blocks, or an opaque type.
pub fn to_f32(dtype: WeightDType, bytes: &[u8], numel: usize) -> Result<Vec<f32>> {
    let need = dtype
        .bytes_for(numel)
        .ok_or_else(|| invalid(format!("{numel} elements are not a whole number of {} blocks of {}", dtype.name(), dtype.block().0)))?;
    if bytes.len() != need {
        return Err(invalid(format!("{numel} {} elements need {need} bytes, got {}", dtype.name(), bytes.len())));
    }
    let out = match dtype {
        WeightDType::F64 => plain::<8>(bytes, |b| f64::from_le_bytes(b) as f32),
        WeightDType::F32 => plain::<4>(bytes, f32::from_le_bytes),
        WeightDType::F16 => plain::<2>(bytes, |b| f16::from_le_bytes(b).to_f32()),
        WeightDType::BF16 => plain::<2>(bytes, |b| f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)),
        WeightDType::I64 => plain::<8>(bytes, |b| i64::from_le_bytes(b) as f32),
        WeightDType::I32 => plain::<4>(bytes, |b| i32::from_le_bytes(b) as f32),
        WeightDType::I16 => plain::<2>(bytes, |b| f32::from(i16::from_le_bytes(b))),
        WeightDType::I8 => plain::<1>(bytes, |b| f32::from(b[0] as i8)),
        WeightDType::U8 => plain::<1>(bytes, |b| f32::from(b[0])),
        WeightDType::Bool => plain::<1>(bytes, |b| if b[0] != 0 { 1.0 } else { 0.0 }),
        WeightDType::Q4_0 => blocks(bytes, 18, 32, q4_0),
        WeightDType::Q4_1 => blocks(bytes, 20, 32, q4_1),
        WeightDType::Q8_0 => blocks(bytes, 34, 32, q8_0),
        WeightDType::Q4K => blocks(bytes, 144, QK_K, q4_k),
        WeightDType::Q5K => blocks(bytes, 176, QK_K, q5_k),
        WeightDType::Q6K => blocks(bytes, 210, QK_K, q6_k),
        WeightDType::Opaque(o) => return Err(invalid(format!("cannot convert dtype {} to f32", o.name()))),
    };
    Ok(out)
}

fn invalid(detail: String) -> KestrelError {
    KestrelError::InvalidArgument { op: "dequantize", detail }
}

/// Converts fixed-size little-endian elements one by one.
fn plain<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Decodes whole blocks of `block_bytes` bytes into `per` values each.
fn blocks(bytes: &[u8], block_bytes: usize, per: usize, f: impl Fn(&[u8], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / block_bytes * per];
    for (b, o) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(per)) {
        f(b, o);
    }
    out
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Q4_0: f16 d, 16 bytes of nibbles; element j < 16 is the low nibble of byte j, element
/// j + 16 its high nibble; value = (q − 8)·d.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        out[j] = d * f32::from((q & 0x0F) as i8 - 8);
        out[j + 16] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// Q4_1: f16 d, f16 m, nibbles as Q4_0; value = q·d + m.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    for (j, &q) in b[4..20].iter().enumerate() {
        out[j] = d * f32::from(q & 0x0F) + m;
        out[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// Q8_0: f16 d, 32 i8; value = q·d.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = f32::from(q as i8) * d;
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K /
/// Q5_K super-block (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 { (s[j] & 63, s[j + 4] & 63) } else { ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)) }
}

/// Q4_K: f16 d, f16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles. Sub-block
/// j (32 values) reads the low (j even) or high (j odd) nibbles of bytes 32·(j/2)…;
/// value = d·sc·q − dmin·m.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        let shift = 4 * (j % 2);
        let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (l, &q) in chunk.iter().enumerate() {
            out[32 * j + l] = dl * f32::from((q >> shift) & 0x0F) - ml;
        }
    }
}

/// Q5_K: as Q4_K with 32 bytes of high bits before the nibbles; bit j of byte l is the fifth
/// bit of value l of sub-block j.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        let shift = 4 * (j % 2);
        let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (l, &q) in chunk.iter().enumerate() {
            let v = ((q >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
            out[32 * j + l] = dl * f32::from(v) - ml;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 i8 scales (one per 16
/// values), f16 d; value = d·scale·(q − 32). Each half of 128 values uses 64 low-nibble bytes
/// (low nibbles for values 0..64, high for 64..128) and 32 high-bit bytes (bits 2k..2k+2 for
/// values 32k..32k+32).
fn q6_k(b: &[u8], out: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = half_at(b, 208);
    for half in 0..2 {
        for e in 0..128 {
            let lo = (ql[64 * half + e % 64] >> (4 * (e / 64))) & 0x0F;
            let hi = (qh[32 * half + e % 32] >> (2 * (e / 32))) & 0x03;
            let q = (lo | (hi << 4)) as i8 - 32;
            let i = 128 * half + e;
            let sc = d * f32::from(scales[i / 16] as i8);
            out[i] = sc * f32::from(q);
        }
    }
}

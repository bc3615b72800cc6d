//! Attention for LLaMA-family decoders: rotary position embeddings ([`rope`]), a GPU-resident
//! per-layer KV cache ([`KvCache`], [`kv_write`]) and causal grouped-query attention over it
//! ([`attention`]).
//!
//! Prefill (T > 1) is flash attention: one workgroup per (16-query block, head) streams K/V tiles
//! through workgroup memory with an online softmax, so nothing grows with T². Decode (T = 1)
//! splits the keys over the invocations of a workgroup and, for long contexts, over several
//! workgroups whose partial results a second pass combines. The f16 cache is read natively
//! where the device has `SHADER_F16` (and is not a CPU adapter), otherwise as packed `u32` words.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::context::Context;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::rows::row_chunks;
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Largest head_dim the attention kernels handle.
pub const MAX_HEAD_DIM: usize = 256;
/// Largest `rotary_dim` of [`rope`] (its frequency table travels in the parameter struct).
pub const MAX_ROTARY_DIM: usize = 512;

/// Which dimensions RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Hugging Face: dims `(i, i + rotary_dim/2)` form pair `i`.
    RotateHalf,
    /// GGUF / Meta: dims `(2i, 2i + 1)` form pair `i`.
    Interleaved,
}

/// How RoPE positions are scaled for contexts beyond the training length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain positions.
    None,
    /// Positions divided by `factor` (position interpolation).
    Linear {
        /// Divisor of the positions (> 0).
        factor: f32,
    },
    /// Hugging Face `LlamaDynamicNTKScalingRotaryEmbedding`: when the sequence length
    /// `seq = start_pos + T` exceeds `original_max_positions`, the base becomes
    /// `theta · (factor · seq / original_max_positions − (factor − 1))^(rotary_dim / (rotary_dim − 2))`.
    DynamicNtk {
        /// Scaling factor (> 0).
        factor: f32,
        /// Context length the model was trained with (> 0).
        original_max_positions: usize,
    },
}

/// Options of [`rope`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeOptions {
    /// Base of the frequencies (`rope_theta`, e.g. 10000), finite and > 0.
    pub theta: f32,
    /// Dims rotated at the start of each head: even, 2 ≤ rotary_dim ≤ head_dim (and ≤
    /// [`MAX_ROTARY_DIM`]); the remaining dims are copied unchanged. Frequency `i` is
    /// `theta^(−2i / rotary_dim)`.
    pub rotary_dim: usize,
    /// Which dims form a pair.
    pub layout: RopeLayout,
    /// Position scaling.
    pub scaling: RopeScaling,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeParams {
    n: u32,
    slots: u32,
    heads: u32,
    dim: u32,
    rot2: u32,
    start: u32,
    row_base: u32,
    x_base: u32,
    out_base: u32,
    interleaved: u32,
    // `rope_kv_write` only: (k, v) pair invocations, KV heads, cache capacity, the token strides
    // of the q and k/v inputs, the k and v heads' offsets in a k/v row.
    nkv: u32,
    kv_heads: u32,
    cap: u32,
    q_stride: u32,
    kv_stride: u32,
    k_off: u32,
    v_off: u32,
    pad: [u32; 3],
    inv_freq: [f32; MAX_ROTARY_DIM / 2],
}

/// The f32 frequency table of [`rope`] for a sequence of `seq` tokens, computed as Hugging Face
/// does: the base in f64, `inv_freq[i] = 1 / base^(2i/rotary_dim)` in f32, linear scaling
/// dividing the frequencies.
fn inv_freq(opts: &RopeOptions, seq: usize) -> Vec<f32> {
    let dim = opts.rotary_dim;
    let mut base = f64::from(opts.theta);
    let mut divisor = 1.0f32;
    match opts.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => divisor = factor,
        RopeScaling::DynamicNtk { factor, original_max_positions } => {
            if seq > original_max_positions {
                let f = f64::from(factor);
                let ratio = f * seq as f64 / original_max_positions as f64 - (f - 1.0);
                base *= ratio.powf(dim as f64 / (dim as f64 - 2.0));
            }
        }
    }
    let base = base as f32;
    (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32) / divisor).collect()
}

fn check_rope_options(opts: &RopeOptions, dim: usize) -> Result<()> {
    let bad = |detail: String| Err(KestrelError::InvalidArgument { op: "rope", detail });
    let rot = opts.rotary_dim;
    if !(opts.theta.is_finite() && opts.theta > 0.0) {
        return bad(format!("theta {} must be finite and > 0", opts.theta));
    }
    if rot < 2 || !rot.is_multiple_of(2) || rot > dim || rot > MAX_ROTARY_DIM {
        return bad(format!("rotary_dim {rot} must be even, ≥ 2, ≤ head_dim {dim} and ≤ {MAX_ROTARY_DIM}"));
    }
    match opts.scaling {
        RopeScaling::None => Ok(()),
        RopeScaling::Linear { factor } if factor.is_finite() && factor > 0.0 => Ok(()),
        RopeScaling::DynamicNtk { factor, original_max_positions }
            if factor.is_finite() && factor > 0.0 && original_max_positions > 0 && rot > 2 =>
        {
            Ok(())
        }
        s => bad(format!("{s:?}: factors must be finite and > 0, original_max_positions > 0, rotary_dim > 2")),
    }
}

/// Rotary position embedding of `x` (`[T, H, D]` f32): token `t` is at position
/// `start_pos + t`; pair `i` of the first `rotary_dim` dims of every head is rotated by
/// `position · inv_freq[i]` (see [`RopeOptions`], [`RopeScaling`]), the other dims are copied.
/// Returns a new tensor. Angles are f32 products as in Hugging Face, reduced to [−π, π] before
/// `sin`/`cos`.
pub fn rope(rec: &mut Recorder, x: &Tensor, start_pos: usize, opts: &RopeOptions) -> Result<Tensor> {
    const OP: &str = "rope";
    if x.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op: OP, dtype: x.dtype() });
    }
    let &[t, heads, dim] = x.shape() else {
        return Err(KestrelError::Shape { op: OP, detail: format!("x {:?} must be [T, heads, head_dim]", x.shape()) });
    };
    check_rope_options(opts, dim)?;
    let seq = start_pos
        .checked_add(t)
        .filter(|&s| s <= u32::MAX as usize)
        .ok_or_else(|| KestrelError::InvalidArgument { op: OP, detail: format!("positions up to {start_pos} + {t} exceed 32 bits") })?;
    let out = rec.output(x.shape(), DType::F32)?;
    if x.numel() == 0 {
        return Ok(out);
    }
    let caps = rec.context().caps().clone();
    let rot2 = opts.rotary_dim / 2;
    let slots = dim - rot2;
    let mut table = [0.0f32; MAX_ROTARY_DIM / 2];
    table[..rot2].copy_from_slice(&inv_freq(opts, seq));
    let kernel = rec.kernel("attention", "rope", rope_defines())?;
    for chunk in row_chunks(&caps, OP, t * heads, &[dim])? {
        let (bx, x_base) = chunk.bind(&caps, x, dim);
        let (bo, out_base) = chunk.bind(&caps, &out, dim);
        let n = chunk.count() * slots;
        let p = RopeParams {
            n: n as u32,
            slots: slots as u32,
            heads: heads as u32,
            dim: dim as u32,
            rot2: rot2 as u32,
            start: start_pos as u32,
            row_base: chunk.rows.start as u32,
            x_base,
            out_base,
            interleaved: u32::from(opts.layout == RopeLayout::Interleaved),
            nkv: 0,
            kv_heads: 0,
            cap: 0,
            q_stride: 0,
            kv_stride: 0,
            k_off: 0,
            v_off: 0,
            pad: [0; 3],
            inv_freq: table,
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![bx, bo],
            params: param_bytes(&p),
            workgroups: grid(groups(n, 256), caps.max_workgroups_per_dim)?,
            op: OP,
            shape: format!("[{t},{heads},{dim}] rot {} from {start_pos}", opts.rotary_dim),
            flops: (chunk.count() * rot2 * 6) as u64,
            bytes: (chunk.count() * dim * 8) as u64,
        })?;
    }
    Ok(out)
}

fn rope_defines() -> Defines {
    Defines::new().flag("ROPE", true).flag("ROTARY", true)
}

fn rope_kv_key(f16: bool) -> KernelKey {
    KernelKey {
        family: "attention",
        entry: "rope_kv",
        defines: Defines::new().flag("ROPE_KV", true).flag("ROTARY", true).flag("KV_F16", f16),
    }
}

/// [`rope`] of `q` and of `k`, and [`kv_write`] of the rotated `k` and of `v` at positions
/// `start_pos..start_pos + T`, in one dispatch (a decode step's three): returns the rotated q.
/// `q` is `[T, H, D]`, `k` and `v` `[T, n_kv_heads, D]` f32 with the cache's head count and
/// head_dim. Tensors larger than one storage binding are taken a run of tokens per dispatch.
pub fn rope_kv_write(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &KvCache,
    start_pos: usize,
    opts: &RopeOptions,
) -> Result<Tensor> {
    if let Some(t) = [q, k, v].into_iter().find(|t| t.dtype() != DType::F32) {
        return Err(KestrelError::UnsupportedDtype { op: ROPE_KV, dtype: t.dtype() });
    }
    let (nkv, hd) = (cache.n_kv_heads, cache.head_dim);
    let (t, heads) = match (q.shape(), k.shape()) {
        (&[t, h, d], &[tk, hk, dk]) if d == hd && tk == t && hk == nkv && dk == hd && v.shape() == k.shape() => (t, h),
        _ => {
            return Err(KestrelError::Shape {
                op: ROPE_KV,
                detail: format!("q {:?} must be [T, H, {hd}] and k {:?}, v {:?} [T, {nkv}, {hd}]", q.shape(), k.shape(), v.shape()),
            });
        }
    };
    let layout = QkvLayout { t, heads, q_stride: heads * hd, kv_stride: nkv * hd, k_off: 0, v_off: 0 };
    rope_kv_dispatch(rec, [q, k, v], layout, cache, start_pos, opts)
}

/// [`rope_kv_write`] of one fused projection's output: `qkv` is `[T, H + 2·n_kv_heads, D]` f32,
/// each token's row holding the H query heads, then the key heads, then the value heads (the
/// output of a q/k/v linear whose weights are stacked in that order). Returns the rotated q
/// `[T, H, D]`.
pub fn rope_kv_write_fused(
    rec: &mut Recorder,
    qkv: &Tensor,
    heads: usize,
    cache: &KvCache,
    start_pos: usize,
    opts: &RopeOptions,
) -> Result<Tensor> {
    if qkv.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op: ROPE_KV, dtype: qkv.dtype() });
    }
    let (nkv, hd) = (cache.n_kv_heads, cache.head_dim);
    let t = match qkv.shape() {
        &[t, rows, d] if d == hd && rows == heads + 2 * nkv => t,
        s => {
            return Err(KestrelError::Shape { op: ROPE_KV, detail: format!("qkv {s:?} must be [T, {heads} + 2·{nkv}, {hd}]") });
        }
    };
    let stride = (heads + 2 * nkv) * hd;
    let layout = QkvLayout { t, heads, q_stride: stride, kv_stride: stride, k_off: heads * hd, v_off: (heads + nkv) * hd };
    rope_kv_dispatch(rec, [qkv, qkv, qkv], layout, cache, start_pos, opts)
}

/// The op name of [`rope_kv_write`] and [`rope_kv_write_fused`].
const ROPE_KV: &str = "rope_kv";

/// Where the ROPE_KV kernel finds q, k and v: `t` tokens of `heads` query heads; elements per
/// token of the q input and of the k/v inputs; the offsets of the k and v heads in a k/v row.
#[derive(Clone, Copy)]
struct QkvLayout {
    t: usize,
    heads: usize,
    q_stride: usize,
    kv_stride: usize,
    k_off: usize,
    v_off: usize,
}

/// Records the ROPE_KV dispatches over `[q, k, v]` laid out as `layout` says, one per run of
/// tokens whose windows fit the storage bindings; returns the rotated q `[T, H, D]`.
fn rope_kv_dispatch(
    rec: &mut Recorder,
    [q, k, v]: [&Tensor; 3],
    layout: QkvLayout,
    cache: &KvCache,
    start_pos: usize,
    opts: &RopeOptions,
) -> Result<Tensor> {
    let QkvLayout { t, heads, q_stride, kv_stride, .. } = layout;
    let (nkv, hd) = (cache.n_kv_heads, cache.head_dim);
    check_rope_options(opts, hd)?;
    check_fits(ROPE_KV, cache, start_pos, t)?;
    let out = rec.output(&[t, heads, hd], DType::F32)?;
    if t == 0 || heads == 0 {
        return Ok(out);
    }
    let seq = start_pos + t;
    if seq > u32::MAX as usize {
        return Err(KestrelError::InvalidArgument { op: ROPE_KV, detail: format!("positions up to {seq} exceed 32 bits") });
    }
    let rot2 = opts.rotary_dim / 2;
    let slots = hd - rot2;
    let mut table = [0.0f32; MAX_ROTARY_DIM / 2];
    table[..rot2].copy_from_slice(&inv_freq(opts, seq));
    let key = rope_kv_key(cache.dtype() == DType::F16);
    let kernel = rec.kernel(key.family, key.entry, key.defines)?;
    let caps = rec.context().caps().clone();
    for chunk in row_chunks(&caps, ROPE_KV, t, &[q_stride, kv_stride, heads * hd])? {
        let n = chunk.count();
        let (bq, q_base) = chunk.bind(&caps, q, q_stride);
        let (bk, k_base) = chunk.bind(&caps, k, kv_stride);
        let (bv, v_base) = chunk.bind(&caps, v, kv_stride);
        let (bo, out_base) = chunk.bind(&caps, &out, heads * hd);
        let (nq, npairs) = (n * heads * slots, n * nkv * hd / 2);
        let p = RopeParams {
            n: nq as u32,
            slots: slots as u32,
            heads: heads as u32,
            dim: hd as u32,
            rot2: rot2 as u32,
            start: (start_pos + chunk.rows.start) as u32,
            row_base: 0,
            x_base: q_base,
            out_base,
            interleaved: u32::from(opts.layout == RopeLayout::Interleaved),
            nkv: npairs as u32,
            kv_heads: nkv as u32,
            cap: cache.capacity as u32,
            q_stride: q_stride as u32,
            kv_stride: kv_stride as u32,
            k_off: k_base + layout.k_off as u32,
            v_off: v_base + layout.v_off as u32,
            pad: [0; 3],
            inv_freq: table,
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![bq, bk, bv, bo, Binding::whole(&cache.k), Binding::whole(&cache.v)],
            params: param_bytes(&p),
            workgroups: grid(groups(nq + npairs, 256), caps.max_workgroups_per_dim)?,
            op: ROPE_KV,
            shape: format!("q[{n},{heads},{hd}] kv[{n},{nkv},{hd}] rot {} at {} {}", opts.rotary_dim, p.start, cache.dtype().name()),
            flops: ((n * (heads + nkv)) * rot2 * 6) as u64,
            bytes: (n * (2 * heads * hd + 2 * nkv * hd) * 4 + 2 * n * nkv * hd * cache.dtype().size()) as u64,
        })?;
    }
    Ok(out)
}

/// The KV cache of one attention layer, resident on the GPU: `k` and `v`, each
/// `[n_kv_heads, capacity, head_dim]`, f32 or f16. Written by [`kv_write`], read by
/// [`attention`]; positions never written hold garbage and are never read by a correct caller.
#[derive(Clone, Debug)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    n_kv_heads: usize,
    capacity: usize,
    head_dim: usize,
}

impl KvCache {
    /// Allocates a cache for `capacity` positions. `dtype` is F32 or F16 (f16 works with or
    /// without `SHADER_F16`). `head_dim` must be even and ≤ [`MAX_HEAD_DIM`]; each of k and v
    /// must fit one storage binding.
    pub fn new(ctx: &Arc<Context>, n_kv_heads: usize, head_dim: usize, capacity: usize, dtype: DType) -> Result<KvCache> {
        const OP: &str = "KvCache::new";
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(KestrelError::UnsupportedDtype { op: OP, dtype });
        }
        if n_kv_heads == 0 || capacity == 0 || head_dim == 0 || !head_dim.is_multiple_of(2) || head_dim > MAX_HEAD_DIM {
            return Err(KestrelError::InvalidArgument {
                op: OP,
                detail: format!(
                    "n_kv_heads {n_kv_heads}, capacity {capacity} must be > 0 and head_dim {head_dim} even, in 2..={MAX_HEAD_DIM}"
                ),
            });
        }
        let shape = [n_kv_heads, capacity, head_dim];
        let bytes = n_kv_heads.checked_mul(capacity).and_then(|n| n.checked_mul(head_dim * dtype.size()));
        let limit = ctx.caps().max_storage_binding;
        if bytes.is_none_or(|b| b as u64 > limit) {
            return Err(KestrelError::InvalidArgument {
                op: OP,
                detail: format!("cache {shape:?} exceeds one storage binding ({limit} bytes)"),
            });
        }
        Ok(KvCache { k: Tensor::empty(ctx, &shape, dtype)?, v: Tensor::empty(ctx, &shape, dtype)?, n_kv_heads, capacity, head_dim })
    }

    /// Keys, `[n_kv_heads, capacity, head_dim]`.
    pub fn k(&self) -> &Tensor {
        &self.k
    }

    /// Values, `[n_kv_heads, capacity, head_dim]`.
    pub fn v(&self) -> &Tensor {
        &self.v
    }

    /// KV heads.
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Dims per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Storage type (F32 or F16).
    pub fn dtype(&self) -> DType {
        self.k.dtype()
    }
}

/// `T` new positions starting at `start_pos`: an error unless `start_pos + T ≤ capacity`.
fn check_fits(op: &'static str, cache: &KvCache, start_pos: usize, t: usize) -> Result<()> {
    if start_pos.checked_add(t).is_none_or(|end| end > cache.capacity) {
        return Err(KestrelError::InvalidArgument {
            op,
            detail: format!("positions {start_pos}..{start_pos}+{t} exceed the cache capacity {}", cache.capacity),
        });
    }
    Ok(())
}

/// An f32 activation that must fit one storage binding.
fn check_activation(rec: &Recorder, op: &'static str, name: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: t.dtype() });
    }
    if t.byte_size() > rec.context().caps().max_storage_binding {
        return Err(KestrelError::InvalidArgument { op, detail: format!("{name} {:?} exceeds one storage binding", t.shape()) });
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct KvWriteParams {
    n: u32,
    token_pairs: u32,
    hd2: u32,
    cap: u32,
    start: u32,
    pad: [u32; 3],
}

fn kv_write_key(f16: bool) -> KernelKey {
    KernelKey { family: "attention", entry: "kv_write", defines: Defines::new().flag("KV_WRITE", true).flag("KV_F16", f16) }
}

/// Writes `k` and `v` (`[T, n_kv_heads, head_dim]` f32) into cache positions
/// `start_pos..start_pos + T`, in place, in one dispatch (f16 caches store the f32 values
/// rounded to f16). An error when the shapes differ from the cache's or the positions do not fit.
pub fn kv_write(rec: &mut Recorder, cache: &KvCache, k: &Tensor, v: &Tensor, start_pos: usize) -> Result<()> {
    const OP: &str = "kv_write";
    check_activation(rec, OP, "k", k)?;
    check_activation(rec, OP, "v", v)?;
    let (nkv, hd) = (cache.n_kv_heads, cache.head_dim);
    let t = match k.shape() {
        &[t, h, d] if h == nkv && d == hd && v.shape() == k.shape() => t,
        _ => {
            return Err(KestrelError::Shape {
                op: OP,
                detail: format!("k {:?} and v {:?} must both be [T, {nkv}, {hd}]", k.shape(), v.shape()),
            });
        }
    };
    check_fits(OP, cache, start_pos, t)?;
    if t == 0 {
        return Ok(());
    }
    let caps = rec.context().caps().clone();
    let n = t * nkv * hd / 2;
    let p = KvWriteParams {
        n: n as u32,
        token_pairs: (nkv * hd / 2) as u32,
        hd2: (hd / 2) as u32,
        cap: cache.capacity as u32,
        start: start_pos as u32,
        pad: [0; 3],
    };
    let key = kv_write_key(cache.dtype() == DType::F16);
    let kernel = rec.kernel(key.family, key.entry, key.defines)?;
    rec.dispatch(Dispatch {
        kernel,
        bindings: vec![Binding::whole(k), Binding::whole(v), Binding::whole(&cache.k), Binding::whole(&cache.v)],
        params: param_bytes(&p),
        workgroups: grid(groups(n, 256), caps.max_workgroups_per_dim)?,
        op: OP,
        shape: format!("[{t},{nkv},{hd}] at {start_pos} {}", cache.dtype().name()),
        flops: 0,
        bytes: 2 * (k.byte_size() + (t * nkv * hd * cache.dtype().size()) as u64),
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PrefillParams {
    t: u32,
    n_heads: u32,
    group: u32,
    hd2: u32,
    cap: u32,
    start: u32,
    q_blocks: u32,
    scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DecodeParams {
    n_heads: u32,
    group: u32,
    hd2: u32,
    cap: u32,
    kv_len: u32,
    chunk: u32,
    splits: u32,
    scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CombineParams {
    n_heads: u32,
    hd2: u32,
    splits: u32,
    pad: u32,
}

/// Query rows per prefill workgroup (`BQ` in the shader).
const PREFILL_ROWS: usize = 16;
/// Head-dim capacities of the prefill variants.
const PREFILL_HD_MAX: [usize; 3] = [64, 128, 256];

/// Keys per decode workgroup: short on GPUs, so long contexts spread over many workgroups; long
/// on CPU adapters, where fewer workgroups run better. At most `MAX_CHUNK` in the shader.
fn decode_chunk(cpu: bool) -> usize {
    if cpu { 1024 } else { 256 }
}

/// How a variant reads an f16 cache: not at all (f32 cache), natively, or as packed words.
fn cache_defines(defines: Defines, kv_f16: bool, native: bool) -> Defines {
    defines.flag("KV_READ", true).flag("KV_F16", kv_f16).flag("F16", kv_f16 && native)
}

fn prefill_key(hd_max: usize, kv_f16: bool, native: bool) -> KernelKey {
    KernelKey {
        family: "attention",
        entry: "attn_prefill",
        defines: cache_defines(Defines::new().flag("PREFILL", true).set("HD_MAX", hd_max), kv_f16, native),
    }
}

fn decode_key(subgroup: bool, kv_f16: bool, native: bool) -> KernelKey {
    KernelKey {
        family: "attention",
        entry: "attn_decode",
        defines: cache_defines(Defines::new().flag("DECODE", true).flag("SUBGROUPS", subgroup), kv_f16, native),
    }
}

fn combine_key() -> KernelKey {
    KernelKey { family: "attention", entry: "attn_combine", defines: Defines::new().flag("COMBINE", true) }
}

/// Causal attention of `q` (`[T, n_heads, head_dim]` f32, tokens at positions
/// `start_pos..start_pos + T`) over cache positions `0..start_pos + T`: query `t` sees keys
/// `≤ start_pos + t`. Head `h` reads KV head `h / (n_heads / n_kv_heads)` (GQA; `n_heads` must be
/// a multiple of the cache's `n_kv_heads`). `softmax(scale · q·k)` weights the values, with f32
/// accumulation. Write the T new positions with [`kv_write`] first (same recorder is fine).
/// Returns `[T, n_heads, head_dim]` f32.
pub fn attention(rec: &mut Recorder, q: &Tensor, cache: &KvCache, start_pos: usize, scale: f32) -> Result<Tensor> {
    const OP: &str = "attention";
    check_activation(rec, OP, "q", q)?;
    let (nkv, hd) = (cache.n_kv_heads, cache.head_dim);
    let (t, n_heads) = match q.shape() {
        &[t, h, d] if t > 0 && d == hd && h > 0 && h % nkv == 0 => (t, h),
        _ => {
            return Err(KestrelError::Shape {
                op: OP,
                detail: format!("q {:?} must be [T ≥ 1, n_heads (a multiple of {nkv}), {hd}]", q.shape()),
            });
        }
    };
    if !scale.is_finite() {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("scale {scale} must be finite") });
    }
    check_fits(OP, cache, start_pos, t)?;
    let caps = rec.context().caps().clone();
    let out = rec.output(q.shape(), DType::F32)?;
    let kv_f16 = cache.dtype() == DType::F16;
    let native = caps.read_f16_natively();
    let group = n_heads / nkv;
    let hd2 = hd / 2;
    let kv_len = start_pos + t;
    let cache_bytes = (nkv * kv_len * hd * cache.dtype().size()) as u64;
    let bindings = |o: &Tensor| vec![Binding::whole(q), Binding::whole(&cache.k), Binding::whole(&cache.v), Binding::whole(o)];
    let shape = format!("q[{t},{n_heads},{hd}] kv {nkv}x{kv_len} {}", cache.dtype().name());
    if t > 1 {
        let hd_max = PREFILL_HD_MAX.into_iter().find(|&m| m >= hd).unwrap_or(MAX_HEAD_DIM);
        let key = prefill_key(hd_max, kv_f16, native);
        let q_blocks = t.div_ceil(PREFILL_ROWS);
        let p = PrefillParams {
            t: t as u32,
            n_heads: n_heads as u32,
            group: group as u32,
            hd2: hd2 as u32,
            cap: cache.capacity as u32,
            start: start_pos as u32,
            q_blocks: q_blocks as u32,
            scale,
        };
        // Keys seen: Σₜ (start_pos + t + 1).
        let pairs = (t * start_pos + t * (t + 1) / 2) as u64;
        let kernel = rec.kernel(key.family, key.entry, key.defines)?;
        rec.dispatch(Dispatch {
            kernel,
            bindings: bindings(&out),
            params: param_bytes(&p),
            workgroups: grid((n_heads * q_blocks) as u64, caps.max_workgroups_per_dim)?,
            op: OP,
            shape,
            flops: 4 * pairs * (n_heads * hd) as u64,
            // Each workgroup streams (at most) its KV head's keys once.
            bytes: 2 * q.byte_size() + (group * q_blocks) as u64 * 2 * cache_bytes,
        })?;
        return Ok(out);
    }
    let chunk = decode_chunk(caps.cpu);
    let splits = kv_len.div_ceil(chunk);
    let key = decode_key(caps.subgroups, kv_f16, native);
    let p = DecodeParams {
        n_heads: n_heads as u32,
        group: group as u32,
        hd2: hd2 as u32,
        cap: cache.capacity as u32,
        kv_len: kv_len as u32,
        chunk: chunk as u32,
        splits: splits as u32,
        scale,
    };
    let partial = if splits > 1 { Some(rec.output(&[n_heads, splits, hd2 + 1, 2], DType::F32)?) } else { None };
    let kernel = rec.kernel(key.family, key.entry, key.defines)?;
    rec.dispatch(Dispatch {
        kernel,
        bindings: bindings(partial.as_ref().unwrap_or(&out)),
        params: param_bytes(&p),
        workgroups: grid((n_heads * splits) as u64, caps.max_workgroups_per_dim)?,
        op: OP,
        shape: shape.clone(),
        flops: 4 * (kv_len * n_heads * hd) as u64,
        bytes: 2 * q.byte_size() + group as u64 * 2 * cache_bytes,
    })?;
    if let Some(partial) = partial {
        let key = combine_key();
        let kernel = rec.kernel(key.family, key.entry, key.defines)?;
        let p = CombineParams { n_heads: n_heads as u32, hd2: hd2 as u32, splits: splits as u32, pad: 0 };
        rec.dispatch(Dispatch {
            kernel,
            bindings: vec![Binding::whole(&partial), Binding::whole(&out)],
            params: param_bytes(&p),
            workgroups: grid(n_heads as u64, caps.max_workgroups_per_dim)?,
            op: OP,
            shape: format!("{shape} combine {splits}"),
            flops: (4 * n_heads * splits * hd) as u64,
            bytes: partial.byte_size() + out.byte_size(),
        })?;
    }
    Ok(out)
}

/// Every kernel variant of this module (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v = vec![
        KernelKey { family: "attention", entry: "rope", defines: rope_defines() },
        kv_write_key(false),
        kv_write_key(true),
        rope_kv_key(false),
        rope_kv_key(true),
        combine_key(),
    ];
    // (f16 cache, native f16 reads)
    for (kv_f16, native) in [(false, false), (true, false), (true, true)] {
        for hd_max in PREFILL_HD_MAX {
            v.push(prefill_key(hd_max, kv_f16, native));
        }
        for subgroup in [false, true] {
            v.push(decode_key(subgroup, kv_f16, native));
        }
    }
    v
}

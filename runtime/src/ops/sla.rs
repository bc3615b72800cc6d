//! Simplified Linear Attention, the attention of SLAB vision transformers
//! (`SimplifiedLinearAttention` in github.com/xinghaochen/SLAB, `classification/models/`):
//! ReLU kernels, a linear-attention product per head, and a depthwise convolution of `v`
//! (shared by all heads) added back. The `proj` linear that follows is not part of the op.
//!
//! Kernels (`shaders/sla.wgsl`): `sla_kv` sums `relu(k + pos)ᵀ v` and `relu(k + pos)` per
//! (sequence, head, token chunk); `sla_reduce` adds the chunk partials (skipped when a head has
//! one chunk); `sla_out` computes every output token. CPU adapters run `sla_kv_rows` and
//! `sla_out_rows` instead: 8-invocation workgroups, each invocation keeping a few channels of
//! the head's KV (and for the output a sliding 5-row window of v over a strip of 8 image
//! columns) in registers, with head vectors shared through subgroupBroadcast — built for
//! lavapipe, where every load costs a scalar load per SIMD lane and component; `sla_out_rows`
//! takes kernels of side ≤ 5. q, k and v are read in place as column ranges ([`Columns`]) of a
//! fused projection — no split, no copy.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::columns::{Columns, HEAD_DIM_CAPACITIES, capacity, fits_binding};
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Query tokens per `sla_out` workgroup (`TILE` in the shader).
const OUT_TILE: usize = 64;

/// Invocations per workgroup of every SLA kernel.
const WG: usize = 256;

/// Most key tokens per KV chunk. Bounds the loop iterations of one `sla_kv` invocation (at
/// most ≈ 17 per token at head dimension 64, counting the WGSL loops before any unrolling) far
/// below llvmpipe's limit of 65535 per invocation, past which loops are cut off silently.
const MAX_CHUNK: usize = 1024;

/// Key tokens per KV chunk of `sla_kv_rows` at least: each chunk ends with a d×d store and
/// costs the reduction pass a read (a short sequence is one chunk and needs no reduction).
const ROWS_MIN_CHUNK: usize = 256;

/// Workgroups the CPU-adapter passes aim for: a few per CPU thread (the device's threads are
/// the host's), no more, as each workgroup first loads KV (and, `sla_out_rows`, the weights).
fn rows_groups() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    4 * *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
}

/// Largest kernel side of `sla_out_rows` (its tap window is 5×5); the width of its strips of
/// the token image; the fewest and most image rows one of its workgroups walks (each run first
/// reads 4 rows of v for its window; ≤ 1024 rows, about 21 loop iterations each, keep an
/// invocation far below llvmpipe's 65535).
const ROWS_MAX_KERNEL: usize = 5;
const ROWS_STRIP: usize = 8;
const ROWS_RUN: (usize, usize) = (8, 1024);

/// Largest depthwise kernel side: keeps one `sla_out` invocation (16 tokens × K² taps at head
/// dimension 64) well inside llvmpipe's loop-iteration limit.
pub const MAX_KERNEL: usize = 31;

/// Everything of an [`sla`] call but q, k and v.
#[derive(Clone, Copy, Debug)]
pub struct SlaOptions<'a> {
    /// Attention heads; the channels `C` (q's column count) split as `(h c)`: channel `h·d + c`.
    pub heads: usize,
    /// Positional encoding added to k before the ReLU: `[Nk, C]` or `[1, Nk, C]` (`Nk` = key
    /// tokens per sequence), shared by every sequence. `None`: nothing added.
    pub pos: Option<&'a Tensor>,
    /// Depthwise conv weights `[d, 1, K, K]`, `[d, K, K]` or `[d, K·K]` (`d` = head dimension,
    /// K odd, ≤ [`MAX_KERNEL`]; SLAB's default and every released config use K = 5), shared by
    /// all heads.
    pub dwc_weight: &'a Tensor,
    /// Depthwise conv bias `[d]`.
    pub dwc_bias: &'a Tensor,
    /// Rows of the token image (token `i` sits at row `i / width`, column `i % width`).
    pub height: usize,
    /// Columns of the token image; `height · width` = query tokens per sequence.
    pub width: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    d: u32,
    heads: u32,
    channels: u32,
    n: u32,
    nk: u32,
    bh: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    chunk: u32,
    chunks: u32,
    height: u32,
    width: u32,
    ksize: u32,
    interp_scale: f32,
    groups: u32,
    strips: u32,
    runs: u32,
    run_rows: u32,
    pad: u32,
}

/// SLA of separate contiguous q `[B·N, C]` and k, v `[B·Nk, C]` (see [`sla_columns`]).
pub fn sla(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, opts: &SlaOptions) -> Result<Tensor> {
    sla_columns(rec, Columns::all(q), Columns::all(k), Columns::all(v), opts)
}

/// SLA of a fused projection `qkv` `[B·N, 3C]` (q | k | v along the channels, as
/// `nn.Linear(C, 3C)` outputs them; see [`sla_columns`]).
pub fn sla_fused(rec: &mut Recorder, qkv: &Tensor, opts: &SlaOptions) -> Result<Tensor> {
    let width = Columns::all(qkv).width();
    if !width.is_multiple_of(3) {
        return Err(KestrelError::Shape { op: "sla", detail: format!("qkv {:?}: width not a multiple of 3", qkv.shape()) });
    }
    let c = width / 3;
    sla_columns(rec, Columns::range(qkv, 0, c), Columns::range(qkv, c, c), Columns::range(qkv, 2 * c, c), opts)
}

/// Simplified Linear Attention exactly as SLAB computes it, for `B` independent sequences
/// (images or windows) of `N = height·width` query tokens and `Nk` key/value tokens each:
/// q has `B·N` rows, k and v `B·Nk` rows (rows grouped sequence by sequence), all `C` columns;
/// `B = rows(q) / N`. Per sequence and head `h` (channels `h·d .. h·d + d`, `d = C / heads`):
/// ```text
/// k' = relu(k + pos),  q' = relu(q)
/// out_i = (q'_i · Σ_j k'_jᵀ v_j) / (q'_i · Σ_j k'_j + 1e-6) + dwc(v)_i
/// ```
/// `dwc` is the depthwise K×K convolution (zero padding K/2, bias) of the head's v laid out as
/// a `height × width` image with `d` channels (`b (h w) c -> b c h w`). When `Nk ≠ N` (PVT's
/// spatial reduction), v is first resized to N tokens by linear interpolation over the token
/// index, as `F.interpolate(v, size=N, mode='linear')` in the official code. Returns
/// `[B·N, C]` f32 with heads merged (`(h c)`), i.e. q's leading dimensions and `C`.
pub fn sla_columns(rec: &mut Recorder, q: Columns, k: Columns, v: Columns, opts: &SlaOptions) -> Result<Tensor> {
    const OP: &str = "sla";
    let shape_err = |detail: String| KestrelError::Shape { op: OP, detail };
    let caps = rec.context().caps().clone();
    for (what, cols) in [("q", &q), ("k", &k), ("v", &v)] {
        cols.check(OP, what, caps.max_storage_binding)?;
    }
    let c = q.count;
    if k.count != c || v.count != c {
        return Err(shape_err(format!("q, k and v have {}, {} and {} channels", q.count, k.count, v.count)));
    }
    let heads = opts.heads;
    if heads == 0 || !c.is_multiple_of(heads) {
        return Err(shape_err(format!("{c} channels do not split into {heads} heads")));
    }
    let d = c / heads;
    let cap = capacity(OP, d)?;

    for t in [opts.dwc_weight, opts.dwc_bias].into_iter().chain(opts.pos) {
        if t.dtype() != DType::F32 {
            return Err(KestrelError::UnsupportedDtype { op: OP, dtype: t.dtype() });
        }
    }
    let ksize = match *opts.dwc_weight.shape() {
        [wd, 1, kh, kw] | [wd, kh, kw] if wd == d && kh == kw => Some(kh),
        [wd, kk] if wd == d => (1..=kk).find(|s| s * s == kk),
        _ => None,
    };
    let Some(ksize) = ksize else {
        return Err(shape_err(format!("dwc weight {:?} must be [{d}, 1, K, K], [{d}, K, K] or [{d}, K·K]", opts.dwc_weight.shape())));
    };
    if ksize.is_multiple_of(2) || ksize > MAX_KERNEL {
        return Err(KestrelError::InvalidArgument {
            op: OP,
            detail: format!("dwc kernel {ksize}×{ksize}: the size must be odd and ≤ {MAX_KERNEL}"),
        });
    }
    if opts.dwc_bias.shape() != [d] {
        return Err(shape_err(format!("dwc bias {:?} must be [{d}]", opts.dwc_bias.shape())));
    }

    let n = opts.height.checked_mul(opts.width).unwrap_or(0);
    if n == 0 || !q.rows().is_multiple_of(n) || q.rows() == 0 {
        return Err(shape_err(format!("q has {} rows, not a positive multiple of {}×{} tokens", q.rows(), opts.height, opts.width)));
    }
    let batch = q.rows() / n;
    if k.rows() != v.rows() || !k.rows().is_multiple_of(batch) || k.rows() == 0 {
        return Err(shape_err(format!(
            "k and v have {} and {} rows; {batch} sequences need equal positive multiples of {batch}",
            k.rows(),
            v.rows()
        )));
    }
    let nk = k.rows() / batch;
    if let Some(pos) = opts.pos {
        let ok = matches!(*pos.shape(), [a, b] | [1, a, b] if a == nk && b == c);
        if !ok {
            return Err(shape_err(format!("pos {:?} must be [{nk}, {c}]", pos.shape())));
        }
    }
    for (what, t) in [("dwc weight", opts.dwc_weight), ("dwc bias", opts.dwc_bias)].into_iter().chain(opts.pos.map(|p| ("pos", p))) {
        fits_binding(OP, what, t, caps.max_storage_binding)?;
    }
    let rows = q.rows();
    let out_elems = rows * c;
    if out_elems > u32::MAX as usize || (out_elems * 4) as u64 > caps.max_storage_binding {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("output [{rows}, {c}] larger than one storage binding") });
    }
    let mut out_shape = q.tensor.shape().to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = c;
    }
    let out = rec.output(&out_shape, DType::F32)?;

    // Split each head's keys into chunks so the KV pass has enough workgroups: many on a GPU,
    // a few on a CPU adapter (few cores, and every chunk costs a d×d store and a reduction
    // read), and no chunk longer than MAX_CHUNK. A GPU chunk is a whole number of staging tiles
    // (1024 / capacity tokens, which divides MAX_CHUNK).
    let bh = batch * heads;
    let cpu_kernels = caps.cpu;
    let (chunks, chunk) = if cpu_kernels {
        let chunks = rows_groups().div_ceil(bh).clamp(1, nk.div_ceil(ROWS_MIN_CHUNK)).max(nk.div_ceil(MAX_CHUNK));
        let chunk = nk.div_ceil(chunks);
        (nk.div_ceil(chunk), chunk)
    } else {
        let tile = 1024 / cap;
        let chunks = 256usize.div_ceil(bh).clamp(1, nk.div_ceil(2 * tile)).max(nk.div_ceil(MAX_CHUNK));
        let chunk = nk.div_ceil(chunks).div_ceil(tile) * tile;
        (nk.div_ceil(chunk), chunk)
    };
    let block = d * d + d;
    if (bh * chunks * block * 4) as u64 > caps.max_storage_binding || bh * chunks * block > u32::MAX as usize {
        return Err(KestrelError::InvalidArgument {
            op: OP,
            detail: format!("{bh} sequence-heads: KV blocks larger than one storage binding"),
        });
    }

    let mut params = Params {
        d: d as u32,
        heads: heads as u32,
        channels: c as u32,
        n: n as u32,
        nk: nk as u32,
        bh: bh as u32,
        q_off: q.offset as u32,
        q_stride: q.width() as u32,
        k_off: k.offset as u32,
        k_stride: k.width() as u32,
        v_off: v.offset as u32,
        v_stride: v.width() as u32,
        chunk: chunk as u32,
        chunks: chunks as u32,
        height: opts.height as u32,
        width: opts.width as u32,
        ksize: ksize as u32,
        interp_scale: nk as f32 / n as f32,
        groups: 0,
        strips: 0,
        runs: 0,
        run_rows: 0,
        pad: 0,
    };
    let vec4 = [q.offset, q.width(), k.offset, k.width(), v.offset, v.width(), d].iter().all(|x| x.is_multiple_of(4));
    let subgroup = crate::ops::matmul::rows_subgroup(&caps);
    let shape = format!("B{batch} N{n}({}×{}) Nk{nk} C{c} h{heads} k{ksize}", opts.height, opts.width);

    // Pass 1: chunk partials (the final KV blocks when there is one chunk per head).
    let partial = rec.output(&[bh * chunks, block], DType::F32)?;
    let kv_groups = bh * chunks;
    params.groups = kv_groups as u32;
    let kernel = if cpu_kernels {
        rec.kernel("sla", "sla_kv_rows", kv_rows_defines(cap, opts.pos.is_some(), vec4, subgroup))?
    } else {
        rec.kernel("sla", "sla_kv", kv_defines(cap, opts.pos.is_some()))?
    };
    let mut bindings = vec![Binding::whole(k.tensor), Binding::whole(v.tensor), Binding::whole(&partial)];
    bindings.extend(opts.pos.map(Binding::whole));
    rec.dispatch(Dispatch {
        kernel,
        bindings,
        params: param_bytes(&params),
        workgroups: grid(kv_groups as u64, caps.max_workgroups_per_dim)?,
        op: "sla_kv",
        shape: shape.clone(),
        flops: (bh * nk * (2 * d * d + 2 * d)) as u64,
        bytes: (bh * nk * 2 * d * 4 + kv_groups * block * 4) as u64,
    })?;

    // Pass 2: sum the partials of each head.
    let kv = if chunks == 1 {
        partial
    } else {
        let kv = rec.output(&[bh, block], DType::F32)?;
        let kernel = rec.kernel("sla", "sla_reduce", reduce_defines())?;
        rec.dispatch(Dispatch {
            kernel,
            bindings: vec![Binding::whole(&partial), Binding::whole(&kv)],
            params: param_bytes(&params),
            workgroups: grid(groups(bh * block, WG), caps.max_workgroups_per_dim)?,
            op: "sla_reduce",
            shape: shape.clone(),
            flops: (bh * chunks * block) as u64,
            bytes: (bh * (chunks + 1) * block * 4) as u64,
        })?;
        kv
    };

    // Pass 3: every output token. `sla_out_rows` splits each head's image into strips of 8
    // columns and those into runs of rows, aiming at rows_groups() workgroups (each loads KV
    // and the weights first).
    let (out_groups, kernel) = if cpu_kernels && ksize <= ROWS_MAX_KERNEL {
        let strips = opts.width.div_ceil(ROWS_STRIP);
        let (min_run, max_run) = ROWS_RUN;
        let runs = rows_groups().div_ceil(bh * strips).clamp(1, opts.height.div_ceil(min_run)).max(opts.height.div_ceil(max_run));
        let run_rows = opts.height.div_ceil(runs);
        let runs = opts.height.div_ceil(run_rows);
        params.strips = strips as u32;
        params.runs = runs as u32;
        params.run_rows = run_rows as u32;
        (bh * strips * runs, rec.kernel("sla", "sla_out_rows", out_rows_defines(cap, vec4, subgroup, nk != n))?)
    } else {
        (bh * n.div_ceil(OUT_TILE), rec.kernel("sla", "sla_out", out_defines(cap))?)
    };
    params.groups = out_groups as u32;
    rec.dispatch(Dispatch {
        kernel,
        bindings: vec![
            Binding::whole(q.tensor),
            Binding::whole(v.tensor),
            Binding::whole(&kv),
            Binding::whole(opts.dwc_weight),
            Binding::whole(opts.dwc_bias),
            Binding::whole(&out),
        ],
        params: param_bytes(&params),
        workgroups: grid(out_groups as u64, caps.max_workgroups_per_dim)?,
        op: "sla_out",
        shape,
        flops: (out_elems * (4 * d + 2 * ksize * ksize + 2)) as u64,
        bytes: (out_elems * (2 + ksize * ksize) * 4 + bh * block * 4) as u64,
    })?;
    Ok(out)
}

fn kv_defines(cap: usize, pos: bool) -> Defines {
    Defines::new().flag("KV", true).flag("POS", pos).set("D", cap)
}

fn kv_rows_defines(cap: usize, pos: bool, vec4: bool, subgroup: bool) -> Defines {
    Defines::new().flag("KV_ROWS", true).flag("POS", pos).set("D", cap).flag("CP8", cap == 64).flag("VEC4", vec4).flag("SUBGROUP", subgroup)
}

fn out_rows_defines(cap: usize, vec4: bool, subgroup: bool, interp: bool) -> Defines {
    Defines::new()
        .flag("OUT_ROWS", true)
        .set("D", cap)
        .flag("CP8", cap == 64)
        .flag("VEC4", vec4)
        .flag("SUBGROUP", subgroup)
        .flag("INTERP", interp)
}

fn reduce_defines() -> Defines {
    Defines::new().flag("REDUCE", true)
}

fn out_defines(cap: usize) -> Defines {
    Defines::new().flag("OUT", true).set("D", cap)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for cap in HEAD_DIM_CAPACITIES {
        for pos in [false, true] {
            v.push(KernelKey { family: "sla", entry: "sla_kv", defines: kv_defines(cap, pos) });
        }
        v.push(KernelKey { family: "sla", entry: "sla_out", defines: out_defines(cap) });
        for vec4 in [false, true] {
            for subgroup in [false, true] {
                for pos in [false, true] {
                    v.push(KernelKey { family: "sla", entry: "sla_kv_rows", defines: kv_rows_defines(cap, pos, vec4, subgroup) });
                }
                for interp in [false, true] {
                    v.push(KernelKey { family: "sla", entry: "sla_out_rows", defines: out_rows_defines(cap, vec4, subgroup, interp) });
                }
            }
        }
    }
    v.push(KernelKey { family: "sla", entry: "sla_reduce", defines: reduce_defines() });
    v
}

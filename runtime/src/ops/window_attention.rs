//! Softmax attention within windows, in one kernel (`shaders/window_attention.wgsl`): Swin's
//! W-MSA / SW-MSA with its relative-position bias and shift mask, and — with one window of all
//! tokens and no bias — the plain global attention of the DeiT / PVT baselines.
//!
//! GPUs: one workgroup per (window, head, tile of queries); a long window splits each query's
//! keys over several invocations. Keys and values go through workgroup memory a tile at a time
//! under an online softmax, so windows of up to [`MAX_KEYS`] keys work. CPU adapters run
//! `window_attention_rows`: 8-invocation workgroups, each invocation keeping 2 or 4 queries in
//! registers and walking every key, whose k and v are loaded once per workgroup and shared
//! with subgroupBroadcast (built for lavapipe, where every load costs a scalar load per lane
//! and component); windows too long for its loop budget take the GPU kernel. q, k and v are
//! read in place as column ranges ([`Columns`]) of the projections. The output projection is
//! not part of the op.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::columns::{Columns, HEAD_DIM_CAPACITIES, capacity, fits_binding};
use crate::ops::param_bytes;
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Invocations per workgroup (`WG` in the shader); a query takes `splits` of them.
const WG: usize = 64;

/// Invocations per workgroup of `window_attention_rows`.
const ROWS_LANES: usize = 8;

/// Most loop iterations one `window_attention_rows` invocation may run: llvmpipe silently ends
/// an invocation's loops after 65535 in total.
const ROWS_MAX_LOOP_ITERATIONS: usize = 50_000;

/// Loop iterations of one `window_attention_rows` invocation: a step per four keys, and
/// without subgroups eight loops over the head's vec4s in each (the q load and the stores
/// loop over them once).
fn rows_loop_iterations(tk: usize, cap: usize, subgroup: bool) -> usize {
    let d4 = cap / 4;
    tk.div_ceil(4) * (1 + if subgroup { 0 } else { 8 * d4 }) + 2 * d4
}

/// Most keys per window: with every query split over 64 invocations this keeps each invocation
/// far below llvmpipe's limit of 65535 loop iterations per invocation (loops are cut off
/// silently past it).
pub const MAX_KEYS: usize = 32768;

/// Keys one invocation should take at most: few on a GPU (spreads long windows over more
/// workgroups), more on a CPU adapter (fewer, longer invocations; at most ~20 k loop
/// iterations at head dimension 64 counting the WGSL loops before any unrolling, a third of
/// llvmpipe's per-invocation limit).
fn keys_per_invocation(cpu: bool) -> usize {
    if cpu { 512 } else { 128 }
}

/// Options of [`window_attention`].
#[derive(Clone, Copy, Debug)]
pub struct WindowAttentionOptions {
    /// Attention heads; the channels split as `(h c)`: channel `h·d + c`.
    pub heads: usize,
    /// Query tokens per window (Swin: window², e.g. 49); for global attention, the token count.
    pub window_tokens: usize,
    /// Logit multiplier, usually `d^-0.5`; finite.
    pub scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    d: u32,
    heads: u32,
    channels: u32,
    tq: u32,
    tk: u32,
    nm: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    scale: f32,
    splits: u32,
    qtiles: u32,
    groups: u32,
}

/// Window attention of a fused projection `qkv` `[nW·T, 3C]` (q | k | v along the channels,
/// tokens grouped window by window, `T = opts.window_tokens`); see [`window_attention_columns`].
pub fn window_attention(
    rec: &mut Recorder,
    qkv: &Tensor,
    bias: Option<&Tensor>,
    mask: Option<&Tensor>,
    opts: &WindowAttentionOptions,
) -> Result<Tensor> {
    let width = Columns::all(qkv).width();
    if !width.is_multiple_of(3) {
        return Err(KestrelError::Shape { op: "window_attention", detail: format!("qkv {:?}: width not a multiple of 3", qkv.shape()) });
    }
    let c = width / 3;
    let (q, k, v) = (Columns::range(qkv, 0, c), Columns::range(qkv, c, c), Columns::range(qkv, 2 * c, c));
    window_attention_columns(rec, q, k, v, bias, mask, opts)
}

/// Softmax attention per window and head. q has `nW·Tq` rows (`Tq = opts.window_tokens`), k and
/// v `nW·Tk` rows (`Tk = rows(k) / nW`, e.g. PVT's spatially reduced keys; Swin: `Tk = Tq`),
/// rows grouped window by window; all have `C` columns. For window `w`, head `h`
/// (`d = C / heads`), query `t`:
/// ```text
/// out[w·Tq + t, h·d + c] = Σ_s softmax_s(scale · q·k_s + bias[h, t, s] + mask[w mod nM, t, s]) v[w·Tk + s, h·d + c]
/// ```
/// `bias`: `[heads, Tq, Tk]` (Swin's relative-position bias, already gathered from its table),
/// `mask`: `[nM, Tq, Tk]` additive (Swin's 0 / −100 shift mask; `nW` a multiple of `nM`); both
/// optional, f32; `Tk ≤` [`MAX_KEYS`]; `−inf` entries mask (a query with every key masked outputs zeros). Returns
/// `[nW·Tq, C]` f32 with heads merged (q's leading dimensions and `C`); f32 online softmax.
pub fn window_attention_columns(
    rec: &mut Recorder,
    q: Columns,
    k: Columns,
    v: Columns,
    bias: Option<&Tensor>,
    mask: Option<&Tensor>,
    opts: &WindowAttentionOptions,
) -> Result<Tensor> {
    const OP: &str = "window_attention";
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
    if !opts.scale.is_finite() {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("scale {} must be finite", opts.scale) });
    }
    let tq = opts.window_tokens;
    if tq == 0 || q.rows() == 0 || !q.rows().is_multiple_of(tq) {
        return Err(shape_err(format!("q has {} rows, not a positive multiple of {tq} window tokens", q.rows())));
    }
    let nw = q.rows() / tq;
    if k.rows() != v.rows() || k.rows() == 0 || !k.rows().is_multiple_of(nw) {
        return Err(shape_err(format!(
            "k and v have {} and {} rows; {nw} windows need equal positive multiples of {nw}",
            k.rows(),
            v.rows()
        )));
    }
    let tk = k.rows() / nw;
    if tk > MAX_KEYS {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("{tk} keys per window exceed {MAX_KEYS}") });
    }
    if let Some(b) = bias {
        if b.dtype() != DType::F32 {
            return Err(KestrelError::UnsupportedDtype { op: OP, dtype: b.dtype() });
        }
        if b.shape() != [heads, tq, tk] {
            return Err(shape_err(format!("bias {:?} must be [{heads}, {tq}, {tk}]", b.shape())));
        }
        fits_binding(OP, "bias", b, caps.max_storage_binding)?;
    }
    let nm = match mask {
        Some(m) => {
            if m.dtype() != DType::F32 {
                return Err(KestrelError::UnsupportedDtype { op: OP, dtype: m.dtype() });
            }
            match *m.shape() {
                [nm, a, b] if nm > 0 && a == tq && b == tk && nw.is_multiple_of(nm) => nm,
                _ => return Err(shape_err(format!("mask {:?} must be [nM, {tq}, {tk}] with {nw} windows a multiple of nM", m.shape()))),
            }
        }
        None => 1,
    };
    if let Some(m) = mask {
        fits_binding(OP, "mask", m, caps.max_storage_binding)?;
    }
    let out_elems = q.rows() * c;
    if out_elems > u32::MAX as usize || (out_elems * 4) as u64 > caps.max_storage_binding {
        return Err(KestrelError::InvalidArgument {
            op: OP,
            detail: format!("output [{}, {c}] larger than one storage binding", q.rows()),
        });
    }
    let mut out_shape = q.tensor.shape().to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = c;
    }
    let out = rec.output(&out_shape, DType::F32)?;

    // GPU kernel: invocations per query, a power of two, so the slowest takes
    // ≤ keys_per_invocation keys. CPU kernel: 8 invocations of QPL queries per workgroup, where
    // its loops fit llvmpipe's budget (else the GPU kernel, which splits long windows).
    let subgroup = crate::ops::matmul::rows_subgroup(&caps);
    let rows = caps.cpu && rows_loop_iterations(tk, cap, subgroup) <= ROWS_MAX_LOOP_ITERATIONS;
    let qpl4 = tq > 2 * ROWS_LANES;
    let (splits, qtiles) = if rows {
        (1, tq.div_ceil(ROWS_LANES * if qpl4 { 4 } else { 2 }))
    } else {
        let splits = tk.div_ceil(keys_per_invocation(caps.cpu)).next_power_of_two().min(WG);
        (splits, tq.div_ceil(WG / splits))
    };
    let total = nw * heads * qtiles;
    let params = Params {
        d: d as u32,
        heads: heads as u32,
        channels: c as u32,
        tq: tq as u32,
        tk: tk as u32,
        nm: nm as u32,
        q_off: q.offset as u32,
        q_stride: q.width() as u32,
        k_off: k.offset as u32,
        k_stride: k.width() as u32,
        v_off: v.offset as u32,
        v_stride: v.width() as u32,
        scale: opts.scale,
        splits: splits as u32,
        qtiles: qtiles as u32,
        groups: total as u32,
    };
    let kernel = if rows {
        let vec4 = [q.offset, q.width(), k.offset, k.width(), v.offset, v.width(), d].iter().all(|x| x.is_multiple_of(4));
        let rows_defines = RowsDefines { qpl4, vec4, subgroup };
        rec.kernel("window_attention", "window_attention_rows", rows_defines.apply(defines(cap, bias.is_some(), mask.is_some())))?
    } else {
        rec.kernel("window_attention", "window_attention", defines(cap, bias.is_some(), mask.is_some()))?
    };
    let mut bindings = vec![Binding::whole(q.tensor), Binding::whole(k.tensor), Binding::whole(v.tensor), Binding::whole(&out)];
    bindings.extend(bias.map(Binding::whole));
    bindings.extend(mask.map(Binding::whole));
    let logits = nw * heads * tq * tk;
    rec.dispatch(Dispatch {
        kernel,
        bindings,
        params: param_bytes(&params),
        workgroups: grid(total as u64, caps.max_workgroups_per_dim)?,
        op: OP,
        shape: format!(
            "nW{nw} Tq{tq} Tk{tk} C{c} h{heads}{}{}",
            if bias.is_some() { " +bias" } else { "" },
            if mask.is_some() { format!(" +mask{nm}") } else { String::new() }
        ),
        flops: (logits * (4 * d + 6)) as u64,
        bytes: ((q.rows() * c + 2 * k.rows() * c * qtiles + out_elems) * 4) as u64
            + if bias.is_some() { (logits * 4) as u64 } else { 0 }
            + if mask.is_some() { (logits * 4) as u64 } else { 0 },
    })?;
    Ok(out)
}

fn defines(cap: usize, bias: bool, mask: bool) -> Defines {
    Defines::new().set("D", cap).flag("BIAS", bias).flag("MASK", mask)
}

/// The choices of `window_attention_rows` beyond [`defines`].
#[derive(Clone, Copy)]
struct RowsDefines {
    /// Four queries per invocation (else two).
    qpl4: bool,
    /// q, k, v and the output as vec4s.
    vec4: bool,
    /// k and v shared with subgroupBroadcast.
    subgroup: bool,
}

impl RowsDefines {
    fn apply(self, d: Defines) -> Defines {
        d.flag("ROWS", true).flag("QPL4", self.qpl4).flag("VEC4", self.vec4).flag("SUBGROUP", self.subgroup)
    }
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for cap in HEAD_DIM_CAPACITIES {
        for bias in [false, true] {
            for mask in [false, true] {
                v.push(KernelKey { family: "window_attention", entry: "window_attention", defines: defines(cap, bias, mask) });
                for bits in 0..8 {
                    let r = RowsDefines { qpl4: bits & 1 != 0, vec4: bits & 2 != 0, subgroup: bits & 4 != 0 };
                    v.push(KernelKey {
                        family: "window_attention",
                        entry: "window_attention_rows",
                        defines: r.apply(defines(cap, bias, mask)),
                    });
                }
            }
        }
    }
    v
}

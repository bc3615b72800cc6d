//! Weight-quantised products `C = A·Wᵀ (+ bias)` with W a [`QuantTensor`] `[N, K]` (an
//! `nn.Linear` weight), dequantised inside the kernels (no dequantised copy in memory), f32
//! accumulation. M = 1 goes to [`qgemv`] (subgroup or workgroup reduction); larger M to the
//! tiled kernel on GPUs or the `qmatmul_rows` kernel on CPU adapters. Weights larger than one
//! storage binding are split into row windows, A and C into M windows.

use bytemuck::{Pod, Zeroable};

use crate::caps::Capabilities;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::gemv::{self, GemvVariant};
use crate::ops::matmul;
use crate::ops::{accumulator, groups, max_window_elems, param_bytes, window};
use crate::pipeline::KernelKey;
use crate::quant::{BLOCK, QuantScheme, QuantStorage, QuantTensor};
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Invocations per GEMV workgroup: 256 on GPUs; 64 on CPU adapters, where more, smaller
/// workgroups keep every CPU thread busy on short matrices.
fn gemv_workgroup(caps: &Capabilities) -> usize {
    if caps.cpu { 64 } else { 256 }
}
/// Rows each GEMV invocation accumulates on GPUs (see [`gemv_rows`]).
const ROWS_PER_INVOCATION: usize = 8;

/// Rows each `qgemv` invocation accumulates: 16 on CPU adapters, where every activation load
/// is a loop over the SIMD lanes, so serving more rows per loaded activation pays; 8 on GPUs.
fn gemv_rows(caps: &Capabilities) -> usize {
    if caps.cpu { 16 } else { ROWS_PER_INVOCATION }
}

/// Loop iterations per 32-deep K block of `qmatmul_rows` (the block loop and its 8 steps);
/// with at most 8 store iterations they must stay within llvmpipe's per-invocation limit.
const ROWS_LOOPS_PER_BLOCK: usize = 9;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    nb: u32,
    w_off: u32,
    s_off: u32,
    a_off: u32,
    c_off: u32,
    bias_off: u32,
    ldc: u32,
    pad: [u32; 2],
}

/// Which kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `qgemv` with this many lanes per row group, quarter-block lane units (`split`, GPUs) or
    /// whole blocks (CPU adapters), subgroup reduction or not, `rows` (8 or 16) per invocation,
    /// `wg` invocations per workgroup.
    Gemv { lanes: usize, split: bool, subgroup: bool, rows: usize, wg: usize },
    /// `qgemv_rows` (CPU adapters): 4 or 8 (`rpi8`) whole rows per invocation, x shared
    /// through subgroupBroadcast when `subgroup`.
    GemvRows { subgroup: bool, rpi8: bool },
    /// `qmatmul_rows` (CPU adapters): `rg` groups of 8 rows per workgroup, `cv` vec4s of
    /// columns per invocation, A rows shared through subgroupBroadcast when `subgroup`.
    Rows { rg: usize, cv: usize, subgroup: bool },
    /// `qmatmul` (tiled, GPUs).
    Tiled,
}

/// A kernel variant.
#[derive(Clone, Copy, Debug)]
struct Variant {
    kernel: Kernel,
    q8: bool,
    row_scale: bool,
    min: bool,
    a_vec4: bool,
    k_tail: bool,
    bias: bool,
    tex: bool,
    /// GEMV kernels: add into the output (`qgemv_accumulate`).
    accum: bool,
}

impl Variant {
    fn new(kernel: Kernel, scheme: QuantScheme, a_vec4: bool, k: usize, bias: bool, tex: bool) -> Variant {
        Variant {
            kernel,
            q8: scheme.bits() == 8,
            row_scale: scheme.row_scale(),
            min: scheme.has_min(),
            a_vec4,
            k_tail: !k.is_multiple_of(BLOCK),
            bias,
            tex,
            accum: false,
        }
    }

    fn entry(self) -> &'static str {
        match self.kernel {
            Kernel::Gemv { .. } => "qgemv",
            Kernel::GemvRows { .. } => "qgemv_rows",
            Kernel::Rows { .. } => "qmatmul_rows",
            Kernel::Tiled => "qmatmul",
        }
    }

    fn key(self) -> KernelKey {
        let mut d = Defines::new()
            .flag("Q8", self.q8)
            .flag("ROW_SCALE", self.row_scale)
            .flag("MIN", self.min)
            .flag("A_VEC4", self.a_vec4)
            .flag("K_TAIL", self.k_tail)
            .flag("BIAS", self.bias)
            .flag("TEX", self.tex)
            .flag("ACCUM", self.accum);
        match self.kernel {
            Kernel::Gemv { lanes, split, subgroup, rows, wg } => {
                d = d
                    .flag("GEMV", true)
                    .set("LANES", lanes)
                    .flag("SPLIT", split)
                    .flag("SUBGROUP", subgroup)
                    .flag("RPI16", rows == 16)
                    .set("WG", wg)
            }
            Kernel::GemvRows { subgroup, rpi8 } => {
                d = d.flag("GEMV", true).flag("ROWS", true).flag("SUBGROUP", subgroup).flag("RPI8", rpi8)
            }
            Kernel::Rows { rg, cv, subgroup } => d = d.flag("ROWS", true).set("RG", rg).set("CV", cv).flag("SUBGROUP", subgroup),
            Kernel::Tiled => {}
        }
        KernelKey { family: "qmatmul", entry: self.entry(), defines: d }
    }
}

fn check_bias(op: &'static str, bias: Option<&Tensor>, n: usize) -> Result<()> {
    match bias {
        Some(b) if b.dtype() != DType::F32 || b.shape() != [n] => {
            Err(KestrelError::Shape { op, detail: format!("bias {:?} ({}) must be f32 [{n}]", b.shape(), b.dtype().name()) })
        }
        _ => Ok(()),
    }
}

/// Rows of W per window, so that values and scales each fit one storage binding.
fn rows_per_window(caps: &Capabilities, w: &QuantTensor) -> usize {
    let (n, nb, s) = (w.shape()[0], w.blocks_per_row(), w.scheme());
    if matches!(w.storage(), QuantStorage::Textures { .. }) {
        return n;
    }
    let by_values = max_window_elems(caps, 16) / (nb * s.block_words() / 4);
    let by_scales = if s.row_scale() {
        max_window_elems(caps, 4)
    } else if s.has_min() {
        max_window_elems(caps, 4) / nb
    } else {
        max_window_elems(caps, 2) / nb
    };
    by_values.min(by_scales).min(n)
}

/// The value and scale bindings of weight rows `n0..n0 + count`.
struct WeightSlice {
    values: Binding,
    scales: Binding,
    /// Vec4 index of row n0's first block inside the values binding.
    w_off: u32,
    /// Index of row n0's first scale (in scale units) inside the scales binding.
    s_off: u32,
    /// Bytes bound (for profiles).
    bytes: u64,
}

/// Binds weight rows `n0..n0 + count`: windows of the buffers, or the whole textures (which
/// have no binding-size limit) with the rows' offsets.
fn weight_slice(caps: &Capabilities, w: &QuantTensor, n0: usize, count: usize) -> WeightSlice {
    let (nb, s) = (w.blocks_per_row(), w.scheme());
    let bw = s.block_words() / 4;
    // First scale and scale count of the rows, and bytes per scale.
    let (s_start, s_count, s_size) = if s.row_scale() {
        (n0, count, 4)
    } else if s.has_min() {
        (n0 * nb, count * nb, 4)
    } else {
        (n0 * nb, count * nb, 2)
    };
    match w.storage() {
        QuantStorage::Buffers { values, scales } => {
            let wv = window(caps, n0 * nb * bw, count * nb * bw, 16);
            let ws = window(caps, s_start, s_count, s_size);
            WeightSlice {
                values: Binding::window(values, wv.byte_offset, wv.byte_size),
                scales: Binding::window(scales, ws.byte_offset, ws.byte_size),
                w_off: (n0 * nb * bw - wv.elem_start) as u32,
                s_off: (s_start - ws.elem_start) as u32,
                bytes: wv.byte_size + ws.byte_size,
            }
        }
        QuantStorage::Textures { values, scales } => WeightSlice {
            values: Binding::texture(values),
            scales: Binding::texture(scales),
            w_off: (n0 * nb * bw) as u32,
            s_off: s_start as u32,
            bytes: (count * nb * bw * 16 + s_count * s_size) as u64,
        },
    }
}

fn too_big(op: &'static str, what: &str) -> KestrelError {
    KestrelError::InvalidArgument { op, detail: format!("one {what} exceeds a storage binding") }
}

/// `y[n] = Σ_k x[k]·W[n, k] (+ bias[n])`; x f32 `[K]` or `[1, K]`, W quantised `[N, K]`, y f32
/// with x's leading shape and N. `variant` picks the reduction across the lanes that split K.
pub fn qgemv(rec: &mut Recorder, x: &Tensor, w: &QuantTensor, bias: Option<&Tensor>, variant: GemvVariant) -> Result<Tensor> {
    qgemv_into(rec, x, w, bias, variant, None)
}

/// `y[n] += Σ_k x[k]·W[n, k] (+ bias[n])` in place (e.g. a residual stream): `y` f32 of the
/// product's shape, sharing no buffer with x or the bias. Operands as in [`qgemv`].
pub fn qgemv_accumulate(
    rec: &mut Recorder,
    x: &Tensor,
    w: &QuantTensor,
    bias: Option<&Tensor>,
    variant: GemvVariant,
    y: &Tensor,
) -> Result<()> {
    qgemv_into(rec, x, w, bias, variant, Some(y)).map(drop)
}

/// [`qgemv`], accumulating into `into` when given.
fn qgemv_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: &QuantTensor,
    bias: Option<&Tensor>,
    variant: GemvVariant,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "qgemv";
    if x.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op: OP, dtype: x.dtype() });
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    if x.numel() != k || x.shape().len() > 2 || x.shape().len() == 2 && x.shape()[0] != 1 {
        return Err(KestrelError::Shape { op: OP, detail: format!("x {:?} must be [{k}] or [1, {k}]", x.shape()) });
    }
    check_bias(OP, bias, n)?;
    let caps = rec.context().caps().clone();
    let rows_kernel = variant == GemvVariant::Rows || variant == GemvVariant::Auto && caps.cpu;
    let subgroup = match variant {
        GemvVariant::Auto => gemv::subgroup_ok(&caps),
        GemvVariant::Subgroup if gemv::subgroup_ok(&caps) => true,
        GemvVariant::Subgroup => {
            return Err(KestrelError::InvalidArgument { op: OP, detail: "device has no usable subgroups".into() });
        }
        GemvVariant::Workgroup | GemvVariant::Rows => false,
    };
    let rows = rows_per_window(&caps, w);
    if rows == 0 {
        return Err(too_big(OP, "row of W"));
    }
    if x.byte_size() > caps.max_storage_binding {
        return Err(too_big(OP, "x"));
    }
    let mut out_shape = x.shape()[..x.shape().len() - 1].to_vec();
    out_shape.push(n);
    let mut inputs = vec![x];
    inputs.extend(bias);
    let y = accumulator(rec, OP, &out_shape, into, &inputs)?;
    let lanes = gemv::lanes(&caps);
    let (kernel, rows_per_group) = if rows_kernel {
        if w.blocks_per_row() > gemv::MAX_LOOP {
            return Err(KestrelError::InvalidArgument { op: OP, detail: format!("K = {k} exceeds the CPU kernel's loop limit") });
        }
        let rpi8 = n >= gemv::ROWS_RPI8_FROM;
        (Kernel::GemvRows { subgroup: matmul::rows_subgroup(&caps), rpi8 }, if rpi8 { 64 } else { 32 })
    } else {
        (
            Kernel::Gemv { lanes, split: !caps.cpu, subgroup, rows: gemv_rows(&caps), wg: gemv_workgroup(&caps) },
            gemv_rows(&caps) * gemv_workgroup(&caps) / lanes,
        )
    };
    let tex = matches!(w.storage(), QuantStorage::Textures { .. });
    let v = Variant { accum: into.is_some(), ..Variant::new(kernel, w.scheme(), true, k, bias.is_some(), tex) };
    let kernel = rec.kernel("qmatmul", v.entry(), v.key().defines)?;
    let nb = w.blocks_per_row();
    for n0 in (0..n).step_by(rows) {
        let ncur = rows.min(n - n0);
        let ws = weight_slice(&caps, w, n0, ncur);
        let wy = window(&caps, n0, ncur, 4);
        let params = Params {
            m: 1,
            n: ncur as u32,
            k: k as u32,
            nb: nb as u32,
            w_off: ws.w_off,
            s_off: ws.s_off,
            c_off: (n0 - wy.elem_start) as u32,
            bias_off: n0 as u32,
            ldc: n as u32,
            ..Default::default()
        };
        let bytes = ws.bytes + (k * 4 + ncur * 4) as u64;
        let mut bindings = vec![Binding::whole(x), ws.values, ws.scales, Binding::window(&y, wy.byte_offset, wy.byte_size)];
        if let Some(b) = bias {
            bindings.push(Binding::whole(b));
        }
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings,
            params: param_bytes(&params),
            workgroups: grid(groups(ncur, rows_per_group), caps.max_workgroups_per_dim)?,
            op: OP,
            shape: format!("[1,{k}]x{}[{n},{k}]^T", w.scheme().name()),
            flops: 2 * (ncur * k) as u64,
            bytes,
        })?;
    }
    Ok(y)
}

/// `C = A·Wᵀ (+ bias)`: A f32 `[..batch, M, K]`, W quantised `[N, K]`, C f32 `[..batch, M, N]`.
/// A single row (M·batch = 1) runs [`qgemv`].
pub fn qmatmul(rec: &mut Recorder, a: &Tensor, w: &QuantTensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "qmatmul";
    if a.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op: OP, dtype: a.dtype() });
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let ash = a.shape();
    if ash.is_empty() || ash[ash.len() - 1] != k {
        return Err(KestrelError::Shape { op: OP, detail: format!("A {ash:?} must end in K = {k} (W is [{n}, {k}])") });
    }
    check_bias(OP, bias, n)?;
    let m = a.numel() / k;
    if m == 0 || m > u32::MAX as usize / 4 {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("M = {m} out of range") });
    }
    let mut out_shape = ash[..ash.len() - 1].to_vec();
    out_shape.push(n);
    if m == 1 {
        return qgemv(rec, &a.reshape(&[k])?, w, bias, GemvVariant::Auto)?.reshape(&out_shape);
    }
    let caps = rec.context().caps().clone();
    let out = rec.output(&out_shape, DType::F32)?;
    let nb = w.blocks_per_row();
    let (kernel, (tm, tn)) = if caps.cpu {
        if ROWS_LOOPS_PER_BLOCK * nb + 8 > gemv::MAX_LOOP {
            return Err(KestrelError::InvalidArgument { op: OP, detail: format!("K = {k} exceeds the CPU kernel's loop limit") });
        }
        let subgroup = matmul::rows_subgroup(&caps);
        // The same tile choice as `matmul_rows`: both are bound by the loads per multiply-add.
        let (rg, cv) = matmul::rows_tile(m, n, subgroup);
        let (rg, cv) = (rg as usize, cv as usize);
        (Kernel::Rows { rg, cv, subgroup }, (8 * rg, 32 * cv))
    } else {
        (Kernel::Tiled, (64, 64))
    };
    let tex = matches!(w.storage(), QuantStorage::Textures { .. });
    let v = Variant::new(kernel, w.scheme(), k % 4 == 0, k, bias.is_some(), tex);
    let pipeline = rec.kernel("qmatmul", v.entry(), v.key().defines)?;
    let rows = rows_per_window(&caps, w);
    let mc = (max_window_elems(&caps, 4) / k).min(max_window_elems(&caps, 4) / n).min(m);
    if rows == 0 {
        return Err(too_big(OP, "row of W"));
    }
    if mc == 0 {
        return Err(too_big(OP, "row of A or C"));
    }
    for m0 in (0..m).step_by(mc) {
        let mcur = mc.min(m - m0);
        let wa = window(&caps, m0 * k, mcur * k, 4);
        let wc = window(&caps, m0 * n, mcur * n, 4);
        for n0 in (0..n).step_by(rows) {
            let ncur = rows.min(n - n0);
            let ws = weight_slice(&caps, w, n0, ncur);
            let params = Params {
                m: mcur as u32,
                n: ncur as u32,
                k: k as u32,
                nb: nb as u32,
                w_off: ws.w_off,
                s_off: ws.s_off,
                a_off: (m0 * k - wa.elem_start) as u32,
                c_off: (m0 * n - wc.elem_start + n0) as u32,
                bias_off: n0 as u32,
                ldc: n as u32,
                ..Default::default()
            };
            let bytes = ws.bytes + (mcur * k * 4 + mcur * ncur * 4) as u64;
            let mut bindings = vec![
                Binding::window(a, wa.byte_offset, wa.byte_size),
                ws.values,
                ws.scales,
                Binding::window(&out, wc.byte_offset, wc.byte_size),
            ];
            if let Some(b) = bias {
                bindings.push(Binding::whole(b));
            }
            let (gx, gy) = (ncur.div_ceil(tn), mcur.div_ceil(tm));
            if gx.max(gy) > caps.max_workgroups_per_dim as usize {
                return Err(KestrelError::InvalidArgument { op: OP, detail: format!("[{m}, {n}] needs too many workgroups") });
            }
            rec.dispatch(Dispatch {
                kernel: pipeline.clone(),
                bindings,
                params: param_bytes(&params),
                workgroups: [gx as u32, gy as u32, 1],
                op: OP,
                shape: format!("{ash:?}x{}[{n},{k}]^T", w.scheme().name()),
                flops: 2 * (mcur * ncur * k) as u64,
                bytes,
            })?;
        }
    }
    Ok(out)
}

/// Every qmatmul kernel variant.
pub fn variants() -> Vec<KernelKey> {
    let schemes = [QuantScheme::W8, QuantScheme::Q8_0, QuantScheme::W4, QuantScheme::W4Asym];
    let mut kernels = vec![Kernel::Tiled];
    for subgroup in [false, true] {
        let (groups, vecs) = matmul::rows_choices(subgroup);
        for &rg in groups {
            for &cv in vecs {
                kernels.push(Kernel::Rows { rg: rg as usize, cv: cv as usize, subgroup });
            }
        }
    }
    kernels.extend([
        Kernel::GemvRows { subgroup: false, rpi8: false },
        Kernel::GemvRows { subgroup: true, rpi8: false },
        Kernel::GemvRows { subgroup: false, rpi8: true },
        Kernel::GemvRows { subgroup: true, rpi8: true },
    ]);
    for (lanes, split, rows, wg) in [(16, false, 16, 64), (64, true, 8, 256)] {
        for subgroup in [false, true] {
            kernels.push(Kernel::Gemv { lanes, split, subgroup, rows, wg });
        }
    }
    let mut v = Vec::new();
    for kernel in kernels {
        for scheme in schemes {
            for bits in 0u32..8 {
                let on = |i: u32| bits & (1 << i) != 0;
                // The GEMV always reads x as vec4s.
                if matches!(kernel, Kernel::Gemv { .. } | Kernel::GemvRows { .. }) && !on(0) {
                    continue;
                }
                let k = if on(1) { 33 } else { 32 };
                for tex in [false, true] {
                    let var = Variant::new(kernel, scheme, on(0), k, on(2), tex);
                    v.push(var.key());
                    if matches!(kernel, Kernel::Gemv { .. } | Kernel::GemvRows { .. }) {
                        v.push(Variant { accum: true, ..var }.key());
                    }
                }
            }
        }
    }
    v
}

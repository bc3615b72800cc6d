//! Elementwise ops: activations, scale, broadcasting binary ops, casts.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::rows::row_chunks;
use crate::ops::{groups, max_window_elems, param_bytes, window};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Most dimensions a broadcasting op supports.
pub const MAX_RANK: usize = 8;

/// A unary elementwise function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x · sigmoid(x)`.
    Silu,
    /// `0.5 x (1 + erf(x/√2))` (PyTorch's default GELU).
    GeluErf,
    /// `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`.
    GeluTanh,
    /// `x · sigmoid(1.702 x)` (CLIP).
    QuickGelu,
    /// `x · relu6(x + 3) / 6`.
    Hardswish,
    /// `relu6(x + 3) / 6`.
    Hardsigmoid,
    /// `alpha · x + beta`.
    Scale {
        /// Multiplier.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
}

impl Unary {
    /// Name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "relu",
            Unary::Sigmoid => "sigmoid",
            Unary::Silu => "silu",
            Unary::GeluErf => "gelu_erf",
            Unary::GeluTanh => "gelu_tanh",
            Unary::QuickGelu => "quick_gelu",
            Unary::Hardswish => "hardswish",
            Unary::Hardsigmoid => "hardsigmoid",
            Unary::Scale { .. } => "scale",
        }
    }

    /// The WGSL expression of `x`.
    pub(crate) fn wgsl(self) -> &'static str {
        match self {
            Unary::Relu => "max(x, 0.0)",
            Unary::Sigmoid => "sigmoid(x)",
            Unary::Silu => "x * sigmoid(x)",
            Unary::GeluErf => "0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752))",
            Unary::GeluTanh => "0.5 * x * (1.0 + tanh_stable(0.79788456080286536 * (x + 0.044715 * x * x * x)))",
            Unary::QuickGelu => "x * sigmoid(1.702 * x)",
            Unary::Hardswish => "x * clamp(x + 3.0, 0.0, 6.0) / 6.0",
            Unary::Hardsigmoid => "clamp(x + 3.0, 0.0, 6.0) / 6.0",
            Unary::Scale { .. } => "p.alpha * x + p.beta",
        }
    }

    fn alpha_beta(self) -> (f32, f32) {
        match self {
            Unary::Scale { alpha, beta } => (alpha, beta),
            _ => (0.0, 0.0),
        }
    }
}

/// A binary elementwise operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
    /// `silu(a) · b` (SwiGLU: the gate's activation times the up projection).
    SiluMul,
}

impl Binary {
    /// Name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::SiluMul => "silu_mul",
        }
    }

    fn wgsl(self) -> &'static str {
        match self {
            Binary::Add => "a + b",
            Binary::Sub => "a - b",
            Binary::Mul => "a * b",
            Binary::Div => "a / b",
            Binary::SiluMul => "a * sigmoid(a) * b",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    base: u32,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    rank: u32,
    alpha: f32,
    beta: f32,
    shape: [u32; MAX_RANK],
    a_strides: [u32; MAX_RANK],
    b_strides: [u32; MAX_RANK],
}

fn require_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: t.dtype() });
    }
    Ok(())
}

fn index_limit(op: &'static str, n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(KestrelError::InvalidArgument { op, detail: format!("{n} elements exceed 32-bit indexing") });
    }
    Ok(())
}

/// Applies `op` to every element of an f32 tensor.
pub fn unary(rec: &mut Recorder, x: &Tensor, op: Unary) -> Result<Tensor> {
    require_f32(op.name(), x)?;
    let n = x.numel();
    index_limit(op.name(), n)?;
    let out = rec.output(x.shape(), DType::F32)?;
    let kernel = rec.kernel("elementwise", "unary", Defines::new().flag("UNARY", true).set("EXPR", op.wgsl()))?;
    let caps = rec.context().caps().clone();
    let chunk = max_window_elems(&caps, 4);
    let (alpha, beta) = op.alpha_beta();
    let mut start = 0;
    while start < n {
        let count = chunk.min(n - start);
        let w = window(&caps, start, count, 4);
        let params = Params {
            n: count as u32,
            base: start as u32,
            a_off: w.elem_start as u32,
            out_off: w.elem_start as u32,
            alpha,
            beta,
            ..Zeroable::zeroed()
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![Binding::window(x, w.byte_offset, w.byte_size), Binding::window(&out, w.byte_offset, w.byte_size)],
            params: param_bytes(&params),
            workgroups: grid(groups(count, 256), caps.max_workgroups_per_dim)?,
            op: op.name(),
            shape: format!("{:?}", x.shape()),
            flops: count as u64,
            bytes: count as u64 * 8,
        })?;
        start += count;
    }
    Ok(out)
}

/// `alpha · x` (a [`Unary::Scale`] with no offset).
pub fn scale(rec: &mut Recorder, x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(rec, x, Unary::Scale { alpha, beta: 0.0 })
}

/// The numpy-broadcast result shape of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Row-major strides of `shape` right-aligned to `out`, 0 where broadcast.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let o = i + rank - shape.len();
        strides[o] = if shape[i] == 1 && out[o] != 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// `a op b` with numpy broadcasting (f32).
pub fn binary(rec: &mut Recorder, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    require_f32(op.name(), a)?;
    require_f32(op.name(), b)?;
    let shape = broadcast_shape(a.shape(), b.shape())
        .ok_or_else(|| KestrelError::Shape { op: op.name(), detail: format!("{:?} and {:?} do not broadcast", a.shape(), b.shape()) })?;
    if shape.len() > MAX_RANK {
        return Err(KestrelError::InvalidArgument { op: op.name(), detail: format!("rank {} > {MAX_RANK}", shape.len()) });
    }
    let n: usize = shape.iter().product();
    index_limit(op.name(), n)?;
    let out = rec.output(&shape, DType::F32)?;
    let same = a.shape() == shape.as_slice() && b.shape() == shape.as_slice();
    let defines = Defines::new().flag("BINARY", true).flag("SAME_SHAPE", same).set("OP", op.wgsl());
    let kernel = rec.kernel("elementwise", "binary", defines)?;
    let caps = rec.context().caps().clone();
    let mut dims = [1u32; MAX_RANK];
    let mut a_str = [0u32; MAX_RANK];
    let mut b_str = [0u32; MAX_RANK];
    for (i, ((d, sa), sb)) in shape.iter().zip(broadcast_strides(a.shape(), &shape)).zip(broadcast_strides(b.shape(), &shape)).enumerate() {
        dims[i] = *d as u32;
        a_str[i] = sa as u32;
        b_str[i] = sb as u32;
    }
    let chunk = max_window_elems(&caps, 4);
    let mut start = 0;
    while start < n {
        let count = chunk.min(n - start);
        let w = window(&caps, start, count, 4);
        // An operand with the output's element count is windowed like the output; a broadcast
        // operand is smaller and bound whole (it must fit one binding).
        let operand = |t: &Tensor| -> Result<(Binding, u32)> {
            if t.numel() == n {
                Ok((Binding::window(t, w.byte_offset, w.byte_size), w.elem_start as u32))
            } else if t.byte_size() <= caps.max_storage_binding {
                Ok((Binding::whole(t), 0))
            } else {
                Err(KestrelError::InvalidArgument { op: op.name(), detail: "a broadcast operand larger than one storage binding".into() })
            }
        };
        let (ba, a_off) = operand(a)?;
        let (bb, b_off) = operand(b)?;
        let params = Params {
            n: count as u32,
            base: start as u32,
            a_off,
            b_off,
            out_off: w.elem_start as u32,
            rank: shape.len() as u32,
            alpha: 0.0,
            beta: 0.0,
            shape: dims,
            a_strides: a_str,
            b_strides: b_str,
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![ba, bb, Binding::window(&out, w.byte_offset, w.byte_size)],
            params: param_bytes(&params),
            workgroups: grid(groups(count, 256), caps.max_workgroups_per_dim)?,
            op: op.name(),
            shape: format!("{:?}, {:?}", a.shape(), b.shape()),
            flops: count as u64,
            bytes: count as u64 * 12,
        })?;
        start += count;
    }
    Ok(out)
}

/// `a + b` with broadcasting.
pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, Binary::Add)
}

/// `a · b` with broadcasting.
pub fn mul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, Binary::Mul)
}

/// `silu(a) · b` with broadcasting: a SwiGLU MLP's activation in one pass.
pub fn silu_mul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, Binary::SiluMul)
}

/// `silu(x[…, :F]) · x[…, F:]` of `x` `[…, 2F]` → `[…, F]`: SwiGLU of a fused gate|up
/// projection (gate rows first), a [`Binary::SiluMul`] reading both halves of the same buffer
/// (one dispatch per run of rows that fits the storage bindings).
pub fn silu_mul_halves(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "silu_mul";
    require_f32(OP, x)?;
    let (&width, lead) = x.shape().split_last().ok_or_else(|| KestrelError::Shape { op: OP, detail: "a scalar has no halves".into() })?;
    if width % 2 != 0 {
        return Err(KestrelError::Shape { op: OP, detail: format!("{:?}: the last dimension must be even (gate | up)", x.shape()) });
    }
    index_limit(OP, x.numel())?;
    let half = width / 2;
    let mut shape = lead.to_vec();
    shape.push(half);
    let out = rec.output(&shape, DType::F32)?;
    if half == 0 {
        return Ok(out);
    }
    let defines = Defines::new().flag("BINARY", true).flag("HALVES", true).set("OP", Binary::SiluMul.wgsl());
    let kernel = rec.kernel("elementwise", "binary", defines)?;
    let caps = rec.context().caps().clone();
    let mut dims = [1u32; MAX_RANK];
    dims[0] = half as u32;
    for chunk in row_chunks(&caps, OP, x.numel() / width, &[width, half])? {
        // The kernel indexes x and the output globally (`base` = the chunk's first output
        // element); `*_off` are where their windows begin.
        let (r0, n) = (chunk.rows.start, chunk.count() * half);
        let (bx, x_base) = chunk.bind(&caps, x, width);
        let (bo, out_base) = chunk.bind(&caps, &out, half);
        let x_off = (r0 * width) as u32 - x_base;
        let params = Params {
            n: n as u32,
            base: (r0 * half) as u32,
            a_off: x_off,
            b_off: x_off,
            out_off: (r0 * half) as u32 - out_base,
            shape: dims,
            ..Zeroable::zeroed()
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![bx.clone(), bx, bo],
            params: param_bytes(&params),
            workgroups: grid(groups(n, 256), caps.max_workgroups_per_dim)?,
            op: OP,
            shape: format!("{:?} halves", x.shape()),
            flops: n as u64 * 4,
            bytes: n as u64 * 12,
        })?;
    }
    Ok(out)
}

/// Converts between f32 and f16 (works without `SHADER_F16`: packs with `pack2x16float`).
pub fn cast(rec: &mut Recorder, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let (entry, flag) = match (x.dtype(), dtype) {
        (a, b) if a == b => return Ok(x.clone()),
        (DType::F32, DType::F16) => ("cast_f32_to_f16", "CAST_TO_F16"),
        (DType::F16, DType::F32) => ("cast_f16_to_f32", "CAST_TO_F32"),
        (from, _) => return Err(KestrelError::UnsupportedDtype { op: "cast", dtype: from }),
    };
    let n = x.numel();
    let caps = rec.context().caps().clone();
    if x.byte_size().max((n * dtype.size()) as u64) > caps.max_storage_binding {
        return Err(KestrelError::InvalidArgument { op: "cast", detail: "tensor larger than one storage binding".into() });
    }
    let out = rec.output(x.shape(), dtype)?;
    let kernel = rec.kernel("elementwise", entry, Defines::new().flag(flag, true))?;
    let params = Params { n: n as u32, ..Zeroable::zeroed() };
    let threads = if dtype == DType::F16 { n.div_ceil(2) } else { n };
    rec.dispatch(Dispatch {
        kernel,
        bindings: vec![Binding::whole(x), Binding::whole(&out)],
        params: param_bytes(&params),
        workgroups: grid(groups(threads, 256), caps.max_workgroups_per_dim)?,
        op: "cast",
        shape: format!("{:?} {}->{}", x.shape(), x.dtype().name(), dtype.name()),
        flops: 0,
        bytes: n as u64 * 6,
    })?;
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v: Vec<KernelKey> = ALL_UNARY
        .iter()
        .map(|op| KernelKey { family: "elementwise", entry: "unary", defines: Defines::new().flag("UNARY", true).set("EXPR", op.wgsl()) })
        .collect();
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::SiluMul] {
        for same in [false, true] {
            v.push(KernelKey {
                family: "elementwise",
                entry: "binary",
                defines: Defines::new().flag("BINARY", true).flag("SAME_SHAPE", same).set("OP", op.wgsl()),
            });
        }
    }
    v.push(KernelKey { family: "elementwise", entry: "cast_f32_to_f16", defines: Defines::new().flag("CAST_TO_F16", true) });
    v.push(KernelKey { family: "elementwise", entry: "cast_f16_to_f32", defines: Defines::new().flag("CAST_TO_F32", true) });
    v
}

/// One of each unary op (parameters of `Scale` do not change the kernel).
pub const ALL_UNARY: &[Unary] = &[
    Unary::Relu,
    Unary::Sigmoid,
    Unary::Silu,
    Unary::GeluErf,
    Unary::GeluTanh,
    Unary::QuickGelu,
    Unary::Hardswish,
    Unary::Hardsigmoid,
    Unary::Scale { alpha: 1.0, beta: 0.0 },
];

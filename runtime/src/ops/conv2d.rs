//! 2-D convolution ([`conv2d`], NCHW, PyTorch semantics) with kernels chosen by shape
//! (`shaders/conv2d.wgsl`):
//! - depthwise (`groups == Cin == Cout`, e.g. the 3×3 / 5×5 positional convs): one invocation
//!   per output value;
//! - `groups == 1` with at least [`GEMM_MIN_COUT`] output channels: an implicit GEMM with 32×32
//!   workgroup tiles, specialised for 1×1 stride-1 convs (per-pixel matmul) and for patch
//!   embeddings (kernel == stride, no padding);
//! - anything else (grouped convs, few output channels): a direct kernel computing 4 output
//!   channels of one pixel per invocation.
//!
//! Weights (and bias) may be f32 or f16; f16 is read natively where the device has `SHADER_F16`
//! and as packed pairs through `unpack2x16float` otherwise. Input and output are f32.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Fewest output channels for which a `groups == 1` conv uses the GEMM kernel (its tiles hold
/// 32 channels; below this the direct kernel wastes less).
pub const GEMM_MIN_COUT: usize = 16;

/// Side of the GEMM kernel's square output tile (pixels × channels).
const GEMM_TILE: usize = 32;

/// Stride, padding and grouping of a [`conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step between output positions, `(vertical, horizontal)`.
    pub stride: (usize, usize),
    /// Zero padding added on both sides, `(vertical, horizontal)`.
    pub padding: (usize, usize),
    /// Channel groups: `Cin` and `Cout` are both divisible by it.
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions { stride: (1, 1), padding: (0, 0), groups: 1 }
    }
}

/// Which kernel a conv uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Depthwise,
    Direct,
    /// Implicit GEMM; `pointwise` (1×1, stride 1, no padding) or `patch` (kernel == stride, no
    /// padding, not 1×1) selects a specialisation.
    Gemm { pointwise: bool, patch: bool },
}

impl Variant {
    fn key(self, w_f16: bool, native_f16: bool, bias: bool) -> KernelKey {
        let (entry, defines) = match self {
            Variant::Depthwise => ("conv_depthwise", Defines::new().flag("DEPTHWISE", true)),
            Variant::Direct => ("conv_direct", Defines::new().flag("DIRECT", true)),
            Variant::Gemm { pointwise, patch } => (
                "conv_gemm",
                Defines::new().flag("GEMM", true).flag("POINTWISE", pointwise).flag("PATCH", patch),
            ),
        };
        let defines = defines.flag("W_F16", w_f16).flag("F16", w_f16 && native_f16).flag("BIAS", bias);
        KernelKey { family: "conv2d", entry, defines }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    cin_g: u32,
    cout_g: u32,
    n: u32,
    tiles_m: u32,
    k: u32,
    pad: u32,
}

/// Output extent of one spatial dimension, `None` when the kernel does not fit.
fn out_extent(input: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    (input + 2 * pad).checked_sub(kernel).map(|span| span / stride + 1)
}

/// Convolves `x` (`[B, Cin, H, W]`, f32) with `w` (`[Cout, Cin/groups, kh, kw]`, f32 or f16)
/// plus an optional `bias` (`[Cout]`, the dtype of `w`): an f32 tensor
/// `[B, Cout, (H + 2p - kh)/s + 1, (W + 2p - kw)/s + 1]`.
pub fn conv2d(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions) -> Result<Tensor> {
    let op = "conv2d";
    let shape_err = |detail: String| KestrelError::Shape { op, detail };
    let invalid = |detail: String| KestrelError::InvalidArgument { op, detail };
    if x.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: x.dtype() });
    }
    let w_f16 = match w.dtype() {
        DType::F32 => false,
        DType::F16 => true,
        other => return Err(KestrelError::UnsupportedDtype { op, dtype: other }),
    };
    let &[batch, cin, h, wd] = x.shape() else {
        return Err(shape_err(format!("input must be [B, Cin, H, W], got {:?}", x.shape())));
    };
    let &[cout, cin_g, kh, kw] = w.shape() else {
        return Err(shape_err(format!("weight must be [Cout, Cin/groups, kh, kw], got {:?}", w.shape())));
    };
    let Conv2dOptions { stride: (sh, sw), padding: (ph, pw), groups: g } = *opts;
    if g == 0 || sh == 0 || sw == 0 || kh == 0 || kw == 0 {
        return Err(invalid(format!("groups {g}, stride ({sh}, {sw}) and kernel {kh}×{kw} must be positive")));
    }
    if cin % g != 0 || cout % g != 0 || cin_g != cin / g {
        return Err(shape_err(format!("input {:?} and weight {:?} do not fit groups = {g}", x.shape(), w.shape())));
    }
    if let Some(b) = bias {
        if b.shape() != [cout] {
            return Err(shape_err(format!("bias must be [{cout}], got {:?}", b.shape())));
        }
        if b.dtype() != w.dtype() {
            return Err(KestrelError::UnsupportedDtype { op, dtype: b.dtype() });
        }
    }
    let (Some(oh), Some(ow)) = (out_extent(h, kh, sh, ph), out_extent(wd, kw, sw, pw)) else {
        return Err(shape_err(format!("kernel {kh}×{kw} larger than padded input {h}×{wd} (padding ({ph}, {pw}))")));
    };
    let out_shape = [batch, cout, oh, ow];
    let caps = rec.context().caps().clone();
    let out_elems = batch * cout * oh * ow;
    for (what, bytes, elems) in [("input", x.byte_size(), x.numel()), ("weight", w.byte_size(), w.numel()), ("output", (out_elems * 4) as u64, out_elems)] {
        if bytes > caps.max_storage_binding || elems > u32::MAX as usize {
            return Err(invalid(format!("{what} larger than one storage binding")));
        }
    }
    let out = Tensor::empty(rec.context(), &out_shape, DType::F32)?;
    if out_elems == 0 {
        return Ok(out);
    }

    let depthwise = g == cin && cout == cin;
    let variant = if depthwise {
        Variant::Depthwise
    } else if g == 1 && cout >= GEMM_MIN_COUT {
        let pointwise = (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0);
        Variant::Gemm { pointwise, patch: !pointwise && (kh, kw) == (sh, sw) && (ph, pw) == (0, 0) }
    } else {
        Variant::Direct
    };
    let m = batch * oh * ow;
    let tiles_m = m.div_ceil(GEMM_TILE);
    let (items, per_group) = match variant {
        Variant::Depthwise => (out_elems, 64),
        Variant::Direct => (batch * g * (cout / g).div_ceil(4) * oh * ow, 64),
        Variant::Gemm { .. } => (tiles_m * cout.div_ceil(GEMM_TILE), 1),
    };
    let params = Params {
        batch: batch as u32,
        cin: cin as u32,
        h: h as u32,
        w: wd as u32,
        cout: cout as u32,
        oh: oh as u32,
        ow: ow as u32,
        groups: g as u32,
        kh: kh as u32,
        kw: kw as u32,
        sh: sh as u32,
        sw: sw as u32,
        ph: ph as u32,
        pw: pw as u32,
        cin_g: cin_g as u32,
        cout_g: (cout / g) as u32,
        n: items as u32,
        tiles_m: tiles_m as u32,
        k: (cin_g * kh * kw) as u32,
        pad: 0,
    };
    let key = variant.key(w_f16, caps.read_f16_natively(), bias.is_some());
    let kernel = rec.kernel(key.family, key.entry, key.defines)?;
    let mut bindings = vec![Binding::whole(x), Binding::whole(w), Binding::whole(&out)];
    bindings.extend(bias.map(Binding::whole));
    rec.dispatch(Dispatch {
        kernel,
        bindings,
        params: param_bytes(&params),
        workgroups: grid(groups(items, per_group), caps.max_workgroups_per_dim)?,
        op,
        shape: format!(
            "{:?}*{:?} s({sh},{sw}) p({ph},{pw}) g{g} {}",
            x.shape(),
            w.shape(),
            w.dtype().name()
        ),
        flops: 2 * (out_elems * cin_g * kh * kw) as u64,
        bytes: x.byte_size() + w.byte_size() + (out_elems * 4) as u64,
    })?;
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let kinds = [
        Variant::Depthwise,
        Variant::Direct,
        Variant::Gemm { pointwise: false, patch: false },
        Variant::Gemm { pointwise: true, patch: false },
        Variant::Gemm { pointwise: false, patch: true },
    ];
    let mut v = Vec::new();
    for kind in kinds {
        for (w_f16, native) in [(false, false), (true, true), (true, false)] {
            for bias in [false, true] {
                v.push(kind.key(w_f16, native, bias));
            }
        }
    }
    v
}

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
//! On CPU adapters a `groups == 1` conv with enough output channels is instead an im2col
//! gather (`conv_im2col`) followed by the CPU matmul kernel (`matmul_rows`), whose output is
//! token rows (NHWC): [`conv2d_tokens`] returns them as they are, [`conv2d`] permutes them to
//! NCHW.
//!
//! Weights (and bias) may be f32 or f16; f16 is read natively where the device has `SHADER_F16`
//! and as packed pairs through `unpack2x16float` otherwise. Input and output are f32.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::elementwise::cast;
use crate::ops::layout::permute;
use crate::ops::matmul::{self, MatmulOptions};
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
    Gemm {
        pointwise: bool,
        patch: bool,
    },
}

impl Variant {
    fn key(self, w_f16: bool, native_f16: bool, bias: bool) -> KernelKey {
        let (entry, defines) = match self {
            Variant::Depthwise => ("conv_depthwise", Defines::new().flag("DEPTHWISE", true)),
            Variant::Direct => ("conv_direct", Defines::new().flag("DIRECT", true)),
            Variant::Gemm { pointwise, patch } => {
                ("conv_gemm", Defines::new().flag("GEMM", true).flag("POINTWISE", pointwise).flag("PATCH", patch))
            }
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

/// A validated convolution: input, weight and output extents.
struct Geometry {
    batch: usize,
    cin: usize,
    h: usize,
    wd: usize,
    cout: usize,
    cin_g: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    w_f16: bool,
}

impl Geometry {
    /// Multiply-add terms per output value, `Cin/groups·kh·kw`.
    fn k(&self) -> usize {
        self.cin_g * self.kh * self.kw
    }

    /// Output pixels over the batch, `B·OH·OW`.
    fn pixels(&self) -> usize {
        self.batch * self.oh * self.ow
    }
}

/// Checks the operands of a conv (typed errors) and computes its extents.
fn check(rec: &Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions) -> Result<Geometry> {
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
    let caps = rec.context().caps();
    let out_elems = batch * cout * oh * ow;
    for (what, bytes, elems) in
        [("input", x.byte_size(), x.numel()), ("weight", w.byte_size(), w.numel()), ("output", (out_elems * 4) as u64, out_elems)]
    {
        if bytes > caps.max_storage_binding || elems > u32::MAX as usize {
            return Err(invalid(format!("{what} larger than one storage binding")));
        }
    }
    Ok(Geometry { batch, cin, h, wd, cout, cin_g, kh, kw, oh, ow, w_f16 })
}

/// The conv parameters of a validated geometry; `n` and `tiles_m` as the kernel needs them.
fn params(gm: &Geometry, opts: &Conv2dOptions, n: usize, tiles_m: usize) -> Params {
    Params {
        batch: gm.batch as u32,
        cin: gm.cin as u32,
        h: gm.h as u32,
        w: gm.wd as u32,
        cout: gm.cout as u32,
        oh: gm.oh as u32,
        ow: gm.ow as u32,
        groups: opts.groups as u32,
        kh: gm.kh as u32,
        kw: gm.kw as u32,
        sh: opts.stride.0 as u32,
        sw: opts.stride.1 as u32,
        ph: opts.padding.0 as u32,
        pw: opts.padding.1 as u32,
        cin_g: gm.cin_g as u32,
        cout_g: (gm.cout / opts.groups) as u32,
        n: n as u32,
        tiles_m: tiles_m as u32,
        k: gm.k() as u32,
        pad: 0,
    }
}

/// Whether a conv runs as im2col + `matmul_rows` (CPU adapters, `groups == 1`, enough output
/// channels): the matmul kernel is several times faster there than the implicit GEMM, whose
/// staging loads are per-lane gathers on a CPU. Needs the patch matrix within one binding and
/// K within `matmul_rows`' loop limit.
fn im2col_path(rec: &Recorder, gm: &Geometry, opts: &Conv2dOptions) -> bool {
    let caps = rec.context().caps();
    let col_elems = gm.pixels() * gm.k();
    caps.cpu
        && opts.groups == 1
        && gm.cout >= GEMM_MIN_COUT
        && gm.k() <= matmul::ROWS_MAX_K
        && (col_elems as u64) * 4 <= caps.max_storage_binding
        && col_elems <= u32::MAX as usize
}

/// The im2col path: patches gathered into `[B·OH·OW, K]`, times the weights `[Cout, K]`ᵀ plus
/// the bias (f32): token rows `[B·OH·OW, Cout]`.
fn im2col_matmul(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions, gm: &Geometry) -> Result<Tensor> {
    let (m, k) = (gm.pixels(), gm.k());
    let col = rec.output(&[m, k], DType::F32)?;
    let caps = rec.context().caps().clone();
    let key = KernelKey { family: "conv2d", entry: "conv_im2col", defines: Defines::new().flag("IM2COL", true) };
    rec.dispatch(Dispatch {
        kernel: rec.kernel(key.family, key.entry, key.defines)?,
        bindings: vec![Binding::whole(x), Binding::whole(&col)],
        params: param_bytes(&params(gm, opts, m * k, 0)),
        workgroups: grid(groups(m * k, 64), caps.max_workgroups_per_dim)?,
        op: "im2col",
        shape: format!("{:?} k{}×{} s{:?} p{:?}", x.shape(), gm.kh, gm.kw, opts.stride, opts.padding),
        flops: 0,
        bytes: x.byte_size() + (m * k * 4) as u64,
    })?;
    let bias = bias.map(|b| cast(rec, b, DType::F32)).transpose()?;
    matmul::matmul(rec, &col, &w.reshape(&[gm.cout, k])?, &MatmulOptions { bias: bias.as_ref(), transpose_b: true })
}

/// Convolves `x` (`[B, Cin, H, W]`, f32) with `w` (`[Cout, Cin/groups, kh, kw]`, f32 or f16)
/// plus an optional `bias` (`[Cout]`, the dtype of `w`): an f32 tensor
/// `[B, Cout, (H + 2p - kh)/s + 1, (W + 2p - kw)/s + 1]`.
pub fn conv2d(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions) -> Result<Tensor> {
    let gm = check(rec, x, w, bias, opts)?;
    if gm.pixels() > 0 && im2col_path(rec, &gm, opts) {
        let rows = im2col_matmul(rec, x, w, bias, opts, &gm)?;
        return permute(rec, &rows.reshape(&[gm.batch, gm.oh, gm.ow, gm.cout])?, &[0, 3, 1, 2]);
    }
    direct(rec, x, w, bias, opts, &gm)
}

/// [`conv2d`] with the output as token rows: `[B·OH·OW, Cout]`, row `(b·OH + y)·OW + x` holding
/// the channels of output pixel `(y, x)` of image `b` (NHWC). What a patch embedding feeds to
/// a transformer; on CPU adapters it is computed in this layout (no transpose at all).
pub fn conv2d_tokens(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions) -> Result<Tensor> {
    let gm = check(rec, x, w, bias, opts)?;
    if gm.pixels() == 0 {
        return rec.output(&[0, gm.cout], DType::F32);
    }
    if im2col_path(rec, &gm, opts) {
        return im2col_matmul(rec, x, w, bias, opts, &gm);
    }
    let y = direct(rec, x, w, bias, opts, &gm)?;
    permute(rec, &y, &[0, 2, 3, 1])?.reshape(&[gm.pixels(), gm.cout])
}

/// The conv kernels proper (depthwise, implicit GEMM, direct), NCHW output.
fn direct(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions, gm: &Geometry) -> Result<Tensor> {
    let Conv2dOptions { stride: (sh, sw), padding: (ph, pw), groups: g } = *opts;
    let (batch, cin, cout, oh, ow, kh, kw) = (gm.batch, gm.cin, gm.cout, gm.oh, gm.ow, gm.kh, gm.kw);
    let out_elems = batch * cout * oh * ow;
    let out = rec.output(&[batch, cout, oh, ow], DType::F32)?;
    if out_elems == 0 {
        return Ok(out);
    }
    let caps = rec.context().caps().clone();
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
    let params = params(gm, opts, items, tiles_m);
    let key = variant.key(gm.w_f16, caps.read_f16_natively(), bias.is_some());
    let kernel = rec.kernel(key.family, key.entry, key.defines)?;
    let mut bindings = vec![Binding::whole(x), Binding::whole(w), Binding::whole(&out)];
    bindings.extend(bias.map(Binding::whole));
    rec.dispatch(Dispatch {
        kernel,
        bindings,
        params: param_bytes(&params),
        workgroups: grid(groups(items, per_group), caps.max_workgroups_per_dim)?,
        op: "conv2d",
        shape: format!("{:?}*{:?} s({sh},{sw}) p({ph},{pw}) g{g} {}", x.shape(), w.shape(), w.dtype().name()),
        flops: 2 * (out_elems * gm.k()) as u64,
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
    let mut v = vec![KernelKey { family: "conv2d", entry: "conv_im2col", defines: Defines::new().flag("IM2COL", true) }];
    for kind in kinds {
        for (w_f16, native) in [(false, false), (true, true), (true, false)] {
            for bias in [false, true] {
                v.push(kind.key(w_f16, native, bias));
            }
        }
    }
    v
}

//! Matrix-vector product for M = 1 (decode): `y = W·x (+ bias)` with W stored `[N, K]`.
//! Subgroup-reduction and workgroup-reduction variants, and `gemv_rows` for CPU adapters (each
//! invocation owns whole rows); W larger than one storage binding is split into row windows.

use bytemuck::{Pod, Zeroable};

use crate::caps::Capabilities;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::operand::Operand;
use crate::ops::{accumulator, groups, max_window_elems, param_bytes, window};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Which reduction a GEMV uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvVariant {
    /// Subgroups when the device has them (and its subgroups fit a 64-invocation row).
    Auto,
    /// `subgroupAdd` reduction (an error where unsupported).
    Subgroup,
    /// Shared-memory tree reduction (works everywhere).
    Workgroup,
    /// `gemv_rows`, the kernel for CPU adapters (the choice of [`GemvVariant::Auto`] there):
    /// 8-invocation workgroups, each invocation accumulating 4 whole rows (8 from
    /// [`ROWS_RPI8_FROM`] rows of W on), x shared through subgroupBroadcast where subgroups hold
    /// the workgroup. Works everywhere.
    Rows,
}

/// Rows of W from which `gemv_rows` / `qgemv_rows` invocations accumulate 8 rows (fewer x loads
/// per weight) instead of 4 (which leaves more workgroups to spread over the CPU threads).
pub const ROWS_RPI8_FROM: usize = 512;
/// Elements of a `gemv_rows` chunk (one x vec4 per invocation of the workgroup).
pub(crate) const ROWS_CHUNK: usize = 32;
/// Most loop iterations one llvmpipe invocation may run (it silently stops after 65535).
pub(crate) const MAX_LOOP: usize = 65_535;

/// Invocations per workgroup.
const WORKGROUP: usize = 256;
/// Rows each invocation accumulates (each x element it loads serves this many weights).
const ROWS_PER_INVOCATION: usize = 8;

/// Invocations sharing one group of rows: 64 on GPUs; 16 on CPU adapters (lavapipe), where
/// longer per-invocation loops amortise the reduction better. Also bounds the subgroup size.
pub fn lanes(caps: &Capabilities) -> usize {
    if caps.cpu { 16 } else { 64 }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    n: u32,
    k: u32,
    w_off: u32,
    y_off: u32,
    bias_off: u32,
    kc: u32,
    pad: [u32; 2],
}

/// True when the subgroup variant pays on this device: subgroups exist and fit a row group
/// (at most [`lanes`] wide). The kernel is correct for any subgroup size and layout (wider or
/// partial subgroups take a slower path without subgroup operations), so this only picks speed.
pub fn subgroup_ok(caps: &Capabilities) -> bool {
    caps.subgroups && caps.subgroup_max_size as usize <= lanes(caps)
}

#[allow(clippy::too_many_arguments)]
fn key(lanes: usize, native_f16: bool, w_f16: bool, vec4: bool, subgroup: bool, bias: bool, tex: bool, accum: bool) -> KernelKey {
    KernelKey {
        family: "gemv",
        entry: "gemv",
        defines: Defines::new()
            .set("LANES", lanes)
            .flag("TEX", tex)
            .flag("ACCUM", accum)
            .flag("F16", native_f16 && w_f16 && !tex)
            .flag("W_F16", w_f16)
            .flag("W_VEC4", vec4)
            .flag("SUBGROUP", subgroup)
            .flag("BIAS", bias),
    }
}

fn rows_key(w_f16: bool, subgroup: bool, rpi8: bool, bias: bool, tex: bool, accum: bool) -> KernelKey {
    KernelKey {
        family: "gemv",
        entry: "gemv_rows",
        defines: Defines::new()
            .flag("ROWS", true)
            .flag("W_F16", w_f16)
            .flag("SUBGROUP", subgroup)
            .flag("RPI8", rpi8)
            .flag("BIAS", bias)
            .flag("TEX", tex)
            .flag("ACCUM", accum),
    }
}

/// `y[n] = Σ_k x[k]·W[n, k] (+ bias[n])`; x f32 `[K]` or `[1, K]`, W f32/f16 `[N, K]` (a
/// tensor or a [`DenseTexture`](crate::texture::DenseTexture)), y f32 with x's leading shape
/// and N.
pub fn gemv<'w>(rec: &mut Recorder, x: &Tensor, w: impl Into<Operand<'w>>, bias: Option<&Tensor>, variant: GemvVariant) -> Result<Tensor> {
    gemv_into(rec, x, w.into(), bias, variant, None)
}

/// `y[n] += Σ_k x[k]·W[n, k] (+ bias[n])` in place (e.g. a residual stream): `y` f32 of the
/// product's shape, sharing no buffer with x, W or the bias. Operands as in [`gemv`].
pub fn gemv_accumulate<'w>(
    rec: &mut Recorder,
    x: &Tensor,
    w: impl Into<Operand<'w>>,
    bias: Option<&Tensor>,
    variant: GemvVariant,
    y: &Tensor,
) -> Result<()> {
    gemv_into(rec, x, w.into(), bias, variant, Some(y)).map(drop)
}

/// [`gemv`], accumulating into `into` when given.
pub(crate) fn gemv_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: Operand,
    bias: Option<&Tensor>,
    variant: GemvVariant,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let err = |detail: String| KestrelError::Shape { op: "gemv", detail };
    if x.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op: "gemv", dtype: x.dtype() });
    }
    let w_f16 = match w.dtype() {
        DType::F32 => false,
        DType::F16 => true,
        d => return Err(KestrelError::UnsupportedDtype { op: "gemv", dtype: d }),
    };
    let &[n, k] = w.shape() else { return Err(err(format!("W {:?} must be [N, K]", w.shape()))) };
    if x.numel() != k || x.shape().len() > 2 || x.shape().len() == 2 && x.shape()[0] != 1 {
        return Err(err(format!("x {:?} must be [{k}] or [1, {k}]", x.shape())));
    }
    if let Some(b) = bias
        && (b.dtype() != DType::F32 || b.shape() != [n])
    {
        return Err(err(format!("bias {:?} must be f32 [{n}]", b.shape())));
    }
    let caps = rec.context().caps().clone();
    let rows_kernel = variant == GemvVariant::Rows || variant == GemvVariant::Auto && caps.cpu;
    let subgroup = match variant {
        GemvVariant::Auto => subgroup_ok(&caps),
        GemvVariant::Subgroup if subgroup_ok(&caps) => true,
        GemvVariant::Subgroup => {
            return Err(KestrelError::InvalidArgument { op: "gemv", detail: "device has no usable subgroups".into() });
        }
        GemvVariant::Workgroup | GemvVariant::Rows => false,
    };
    let mut out_shape = x.shape()[..x.shape().len() - 1].to_vec();
    out_shape.push(n);
    let y = accumulator(rec, "gemv", &out_shape, into, &operands(x, &w, bias))?;
    let ew = w.dtype().size();
    let tex = matches!(w, Operand::Texture(_));
    let rows_per_window = if tex { n } else { (max_window_elems(&caps, ew) / k.max(1)).min(n) };
    if rows_per_window == 0 || x.byte_size() > caps.max_storage_binding {
        return Err(KestrelError::InvalidArgument { op: "gemv", detail: "one row of W exceeds a storage binding".into() });
    }
    let (defines, entry, rows_per_group) = if rows_kernel {
        let rpi8 = n >= ROWS_RPI8_FROM;
        let key = rows_key(w_f16, crate::ops::matmul::rows_subgroup(&caps), rpi8, bias.is_some(), tex, into.is_some());
        (key.defines, "gemv_rows", if rpi8 { 64 } else { 32 })
    } else {
        let lanes = lanes(&caps);
        let key = key(lanes, caps.read_f16_natively(), w_f16, k % 4 == 0, subgroup, bias.is_some(), tex, into.is_some());
        (key.defines, "gemv", ROWS_PER_INVOCATION * WORKGROUP / lanes)
    };
    let kernel = rec.kernel("gemv", entry, defines)?;
    // `gemv_rows` reads whole 32-element chunks with vec4 loads where W's rows are aligned for
    // them (elements per vec4 load: 8 f16 or 4 f32).
    let align = if w_f16 { 8 } else { 4 };
    for n0 in (0..n).step_by(rows_per_window) {
        let ncur = rows_per_window.min(n - n0);
        let (w_binding, ww) = w.bind(&caps, n0 * k, ncur * k);
        let wy = window(&caps, n0, ncur, 4);
        let w_off = n0 * k - ww.elem_start;
        let kc = if rows_kernel && k.is_multiple_of(align) && w_off.is_multiple_of(align) { k / ROWS_CHUNK } else { 0 };
        if rows_kernel && kc + (k - kc * ROWS_CHUNK) > MAX_LOOP {
            return Err(KestrelError::InvalidArgument { op: "gemv", detail: format!("K = {k} exceeds the CPU kernel's loop limit") });
        }
        let params = Params {
            n: ncur as u32,
            k: k as u32,
            w_off: w_off as u32,
            y_off: (n0 - wy.elem_start) as u32,
            bias_off: n0 as u32,
            kc: kc as u32,
            ..Default::default()
        };
        // The kernels read W as vec4s: a buffer window is rounded up to whole ones (the pooled
        // buffer is padded to 16 bytes).
        let w_binding = match w {
            Operand::Tensor(t) => Binding::window(t, ww.byte_offset, ww.byte_size.div_ceil(16) * 16),
            Operand::Texture(_) => w_binding,
        };
        let mut bindings = vec![Binding::whole(x), w_binding, Binding::window(&y, wy.byte_offset, wy.byte_size)];
        bindings.extend(bias.map(Binding::whole));
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings,
            params: param_bytes(&params),
            workgroups: grid(groups(ncur, rows_per_group), caps.max_workgroups_per_dim)?,
            op: "gemv",
            shape: format!("[1,{k}]x[{n},{k}]^T"),
            flops: 2 * (ncur * k) as u64,
            bytes: (ncur * k * ew + k * 4 + ncur * 4) as u64,
        })?;
    }
    Ok(y)
}

/// The tensors of a GEMV an accumulator must not share a buffer with.
fn operands<'a>(x: &'a Tensor, w: &Operand<'a>, bias: Option<&'a Tensor>) -> Vec<&'a Tensor> {
    let mut v = vec![x];
    if let Operand::Tensor(t) = w {
        v.push(t);
    }
    v.extend(bias);
    v
}

/// Every GEMV kernel variant.
pub fn variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for bits in 0u32..64 {
        let on = |i: u32| bits & (1 << i) != 0;
        v.push(rows_key(on(0), on(1), on(2), on(3), on(4), on(5)));
    }
    for lanes in [16, 64] {
        for bits in 0u32..128 {
            let on = |i: u32| bits & (1 << i) != 0;
            // Native f16 needs f16 weights; a texture is read as words.
            if on(0) && (!on(1) || on(5)) {
                continue;
            }
            v.push(key(lanes, on(0), on(1), on(2), on(3), on(4), on(5), on(6)));
        }
    }
    v
}

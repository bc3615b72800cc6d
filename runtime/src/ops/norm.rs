//! Normalisations over the last dimension (LayerNorm, RMSNorm) and the per-channel affine map.
//!
//! The norms run one workgroup per row (256 invocations on GPUs, 32 on CPU adapters, where
//! fewer SIMD batches per row mean fewer barrier rounds) and loop over rows of any length; the
//! row statistics are reduced with subgroup operations when the device has them, else with a
//! shared-memory tree. Layer norm combines per-invocation Welford statistics exactly, so the
//! variance has no `E[x²] − E[x]²` cancellation. Tensors larger than one storage binding are
//! processed in row chunks.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::rows::row_chunks;
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_base: u32,
    out_base: u32,
    eps: f32,
    pad: [u32; 3],
}

fn require_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: t.dtype() });
    }
    Ok(())
}

/// Rows and channels of `x` viewed as `[rows, C]` (C = last dim, at least 1).
fn rows_cols(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    require_f32(op, x)?;
    match x.shape().last() {
        Some(&c) if c > 0 => Ok((x.numel() / c, c)),
        _ => Err(KestrelError::Shape { op, detail: format!("{:?}: the last dimension must be non-empty", x.shape()) }),
    }
}

/// Checks a per-channel parameter: f32 of shape `[C]`, small enough to bind whole.
fn check_channel(op: &'static str, name: &str, t: &Tensor, c: usize, rec: &Recorder) -> Result<()> {
    require_f32(op, t)?;
    if t.shape() != [c] {
        return Err(KestrelError::Shape { op, detail: format!("{name} is {:?}, expected [{c}]", t.shape()) });
    }
    if t.byte_size() > rec.context().caps().max_storage_binding {
        return Err(KestrelError::InvalidArgument { op, detail: format!("{name} larger than one storage binding") });
    }
    Ok(())
}

fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(KestrelError::InvalidArgument { op, detail: format!("eps {eps} must be finite and >= 0") });
    }
    Ok(())
}

fn norm_defines(entry_flag: &str, subgroups: bool, gamma: bool, beta: bool, cpu: bool) -> Defines {
    Defines::new()
        .flag(entry_flag, true)
        .flag("SUBGROUPS", subgroups)
        .flag("GAMMA", gamma)
        .flag("BETA", beta)
        .set("WG", if cpu { 32 } else { 256 })
}

/// Records a row-per-workgroup norm kernel over every row chunk of `x`.
#[allow(clippy::too_many_arguments)]
fn row_norm(
    rec: &mut Recorder,
    op: &'static str,
    entry: &'static str,
    entry_flag: &str,
    x: &Tensor,
    params: [Option<&Tensor>; 2],
    eps: f32,
    flops_per_elem: u64,
) -> Result<Tensor> {
    let (rows, cols) = rows_cols(op, x)?;
    check_eps(op, eps)?;
    for (t, name) in params.iter().zip(["gamma", "beta"]) {
        if let Some(t) = t {
            check_channel(op, name, t, cols, rec)?;
        }
    }
    let caps = rec.context().caps().clone();
    let chunks = row_chunks(&caps, op, rows, &[cols])?;
    let out = rec.output(x.shape(), DType::F32)?;
    let defines = norm_defines(entry_flag, caps.subgroups, params[0].is_some(), params[1].is_some(), caps.cpu);
    let kernel = rec.kernel("norm", entry, defines)?;
    for chunk in chunks {
        let (bx, x_base) = chunk.bind(&caps, x, cols);
        let (bo, out_base) = chunk.bind(&caps, &out, cols);
        let mut bindings = vec![bx, bo];
        bindings.extend(params.iter().flatten().map(|t| Binding::whole(t)));
        let n = (chunk.count() * cols) as u64;
        let p = Params { rows: chunk.count() as u32, cols: cols as u32, x_base, out_base, eps, pad: [0; 3] };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings,
            params: param_bytes(&p),
            workgroups: grid(chunk.count() as u64, caps.max_workgroups_per_dim)?,
            op,
            shape: format!("{:?}", x.shape()),
            flops: n * flops_per_elem,
            bytes: n * 12,
        })?;
    }
    Ok(out)
}

/// LayerNorm over the last dimension of `x` (`[.., C]`, f32): `(x − mean) / √(var + eps)`,
/// then `· gamma` and `+ beta` when given (each `[C]`). The variance is the biased one, as in
/// PyTorch. `eps` must be finite and non-negative (with `eps = 0` a constant row gives NaN, as
/// in PyTorch).
pub fn layer_norm(rec: &mut Recorder, x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    row_norm(rec, "layer_norm", "layer_norm", "LAYER_NORM", x, [gamma, beta], eps, 8)
}

/// RMSNorm (LLaMA) over the last dimension of `x` (`[.., C]`, f32):
/// `x / √(mean(x²) + eps)`, then `· gamma` when given (`[C]`).
pub fn rms_norm(rec: &mut Recorder, x: &Tensor, gamma: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    row_norm(rec, "rms_norm", "rms_norm", "RMS_NORM", x, [gamma, None], eps, 4)
}

/// Per-channel affine map over the last dimension of `x` (`[.., C]`, f32):
/// `y = x · scale[c] + shift[c]` with `scale` and `shift` of shape `[C]`.
pub fn channel_affine(rec: &mut Recorder, x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    const OP: &str = "channel_affine";
    let (rows, cols) = rows_cols(OP, x)?;
    check_channel(OP, "scale", scale, cols, rec)?;
    check_channel(OP, "shift", shift, cols, rec)?;
    let caps = rec.context().caps().clone();
    let chunks = row_chunks(&caps, OP, rows, &[cols])?;
    let out = rec.output(x.shape(), DType::F32)?;
    let kernel = rec.kernel("norm", "channel_affine", Defines::new().flag("AFFINE", true))?;
    for chunk in chunks {
        let (bx, x_base) = chunk.bind(&caps, x, cols);
        let (bo, out_base) = chunk.bind(&caps, &out, cols);
        let n = chunk.count() * cols;
        let p = Params { rows: chunk.count() as u32, cols: cols as u32, x_base, out_base, eps: 0.0, pad: [0; 3] };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![bx, bo, Binding::whole(scale), Binding::whole(shift)],
            params: param_bytes(&p),
            workgroups: grid(groups(n, 256), caps.max_workgroups_per_dim)?,
            op: OP,
            shape: format!("{:?}", x.shape()),
            flops: 2 * n as u64,
            bytes: 8 * n as u64,
        })?;
    }
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v = vec![KernelKey { family: "norm", entry: "channel_affine", defines: Defines::new().flag("AFFINE", true) }];
    for cpu in [false, true] {
        for subgroups in [false, true] {
            for gamma in [false, true] {
                v.push(KernelKey { family: "norm", entry: "rms_norm", defines: norm_defines("RMS_NORM", subgroups, gamma, false, cpu) });
                for beta in [false, true] {
                    v.push(KernelKey {
                        family: "norm",
                        entry: "layer_norm",
                        defines: norm_defines("LAYER_NORM", subgroups, gamma, beta, cpu),
                    });
                }
            }
        }
    }
    v
}

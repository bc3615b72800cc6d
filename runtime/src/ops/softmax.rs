//! Softmax over the last dimension, with a logit scale, an optional broadcast bias (attention
//! masks, relative-position biases) and an optional causal mask.
//!
//! One 256-invocation workgroup per row; rows of any length are looped over. The row max and
//! sum are reduced with subgroup operations when the device has them, else with a shared-memory
//! tree. Tensors larger than one storage binding are processed in row chunks.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::param_bytes;
use crate::ops::rows::row_chunks;
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Most dimensions `x` may have.
pub const MAX_RANK: usize = 8;

/// Options of [`softmax`].
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxOptions<'a> {
    /// Mask column `j` of query row `i` when `j > i + cols − rows` (`rows` = the second-to-last
    /// dimension of `x`; the KV-cache convention: the last `rows` queries see every earlier key).
    pub causal: bool,
    /// Added to `scale · x` before the softmax. Its shape must broadcast to `x`'s shape with
    /// numpy rules without enlarging it: rank ≤ rank of `x`, each dimension (right-aligned) 1 or
    /// equal to `x`'s. So `[cols]`, `[rows, cols]`, `[heads, rows, cols]`, `[batch, 1, 1, cols]`
    /// (key padding) and `[rows, 1]` all work. `−inf` entries mask. Must fit one storage binding.
    pub bias: Option<&'a Tensor>,
    /// Logit multiplier (e.g. `1/√d`); finite.
    pub scale: f32,
}

impl Default for SoftmaxOptions<'_> {
    /// Plain softmax: no mask, no bias, scale 1.
    fn default() -> Self {
        SoftmaxOptions { causal: false, bias: None, scale: 1.0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_base: u32,
    out_base: u32,
    row_base: u32,
    q_rows: u32,
    causal: u32,
    scale: f32,
    lead_rank: u32,
    bias_col_stride: u32,
    pad: [u32; 2],
    lead_shape: [u32; MAX_RANK],
    bias_strides: [u32; MAX_RANK],
}

/// Row strides of `bias` over `x`'s leading dimensions (0 where broadcast) and its column
/// stride, or a shape error when it does not broadcast to `x`.
fn bias_strides(x: &[usize], bias: &[usize]) -> Result<([u32; MAX_RANK], u32)> {
    let err = || KestrelError::Shape { op: "softmax", detail: format!("bias {bias:?} does not broadcast to x {x:?}") };
    if bias.len() > x.len() {
        return Err(err());
    }
    let pad = x.len() - bias.len();
    let mut strides = [0u32; MAX_RANK];
    let mut col_stride = 0;
    let mut s = 1usize;
    for (k, &b) in bias.iter().enumerate().rev() {
        let d = pad + k;
        if b != 1 && b != x[d] {
            return Err(err());
        }
        let st = if b == 1 { 0 } else { s as u32 };
        if d == x.len() - 1 {
            col_stride = st;
        } else {
            strides[d] = st;
        }
        s *= b;
    }
    Ok((strides, col_stride))
}

/// `softmax(scale · x + bias)` over the last dimension of `x` (`[.., rows, cols]`, f32), with
/// an optional causal mask (see [`SoftmaxOptions`]). Masked entries (causal or a `−inf` logit)
/// are 0, and a row whose entries are all masked is all zeros (not NaN). Max-subtracted, f32
/// accumulation.
pub fn softmax(rec: &mut Recorder, x: &Tensor, opts: &SoftmaxOptions) -> Result<Tensor> {
    softmax_with(rec, x, opts, false)
}

/// The top-1 routing weights of a mixture of experts: [`softmax`] over the last dimension of `x`
/// (`[.., experts]` gate logits, f32), then every entry but the first holding the row's maximum
/// set to 0 — the chosen expert keeps its probability, computed on the GPU so routing never
/// reaches the host.
pub fn softmax_top1(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    softmax_with(rec, x, &SoftmaxOptions::default(), true)
}

/// [`softmax`], with only the first maximum of each row kept when `top1`.
fn softmax_with(rec: &mut Recorder, x: &Tensor, opts: &SoftmaxOptions, top1: bool) -> Result<Tensor> {
    let op = if top1 { "softmax_top1" } else { "softmax" };
    if x.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: x.dtype() });
    }
    let shape = x.shape();
    let cols = match shape.last() {
        Some(&c) if c > 0 => c,
        _ => return Err(KestrelError::Shape { op, detail: format!("{shape:?}: the last dimension must be non-empty") }),
    };
    if shape.len() > MAX_RANK {
        return Err(KestrelError::InvalidArgument { op, detail: format!("rank {} > {MAX_RANK}", shape.len()) });
    }
    if !opts.scale.is_finite() {
        return Err(KestrelError::InvalidArgument { op, detail: format!("scale {} must be finite", opts.scale) });
    }
    let q_rows = if shape.len() >= 2 { shape[shape.len() - 2] } else { 1 };
    let rows = x.numel() / cols;
    let caps = rec.context().caps().clone();
    let (strides, col_stride) = match opts.bias {
        Some(b) => {
            if b.dtype() != DType::F32 {
                return Err(KestrelError::UnsupportedDtype { op, dtype: b.dtype() });
            }
            if b.byte_size() > caps.max_storage_binding {
                return Err(KestrelError::InvalidArgument { op, detail: "bias larger than one storage binding".into() });
            }
            bias_strides(shape, b.shape())?
        }
        None => ([0; MAX_RANK], 0),
    };
    let chunks = row_chunks(&caps, op, rows, &[cols])?;
    let out = rec.output(shape, DType::F32)?;
    let defines = Defines::new().flag("SUBGROUPS", caps.subgroups).flag("BIAS", opts.bias.is_some()).flag("TOP1", top1);
    let kernel = rec.kernel("softmax", "softmax", defines)?;
    let mut lead_shape = [1u32; MAX_RANK];
    for (d, &s) in shape[..shape.len() - 1].iter().enumerate() {
        lead_shape[d] = s as u32;
    }
    for chunk in chunks {
        let (bx, x_base) = chunk.bind(&caps, x, cols);
        let (bo, out_base) = chunk.bind(&caps, &out, cols);
        let mut bindings = vec![bx, bo];
        bindings.extend(opts.bias.map(Binding::whole));
        let n = (chunk.count() * cols) as u64;
        let p = Params {
            rows: chunk.count() as u32,
            cols: cols as u32,
            x_base,
            out_base,
            row_base: chunk.rows.start as u32,
            q_rows: q_rows as u32,
            causal: u32::from(opts.causal),
            scale: opts.scale,
            lead_rank: if opts.bias.is_some() { (shape.len() - 1) as u32 } else { 0 },
            bias_col_stride: col_stride,
            pad: [0; 2],
            lead_shape,
            bias_strides: strides,
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings,
            params: param_bytes(&p),
            workgroups: grid(chunk.count() as u64, caps.max_workgroups_per_dim)?,
            op,
            shape: format!(
                "{shape:?}{}{}",
                if opts.causal { " causal" } else { "" },
                opts.bias.map_or(String::new(), |b| format!(" +{:?}", b.shape()))
            ),
            flops: n * 8,
            bytes: n * if opts.bias.is_some() { 16 } else { 12 },
        })?;
    }
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for subgroups in [false, true] {
        for bias in [false, true] {
            v.push(KernelKey {
                family: "softmax",
                entry: "softmax",
                defines: Defines::new().flag("SUBGROUPS", subgroups).flag("BIAS", bias),
            });
        }
        v.push(KernelKey { family: "softmax", entry: "softmax", defines: Defines::new().flag("SUBGROUPS", subgroups).flag("TOP1", true) });
    }
    v
}

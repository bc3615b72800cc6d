//! Reductions and pooling: token mean, 1-D max pooling, adaptive 2-D average pooling, argmax
//! and top-k over the last dimension.
//!
//! The pools and the token mean run one invocation per output; argmax and top-k run one
//! 256-invocation workgroup per row, reduced with subgroup operations when the device has them,
//! else with a shared-memory tree. Tensors larger than one storage binding are processed in
//! chunks of whole rows (batches, planes).

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Dispatch, Recorder, grid};
use crate::ops::rows::{RowChunk, row_chunks};
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Largest `k` [`top_k`] accepts (each of the `k` rounds re-reads the row).
pub const MAX_TOP_K: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    x_base: u32,
    out_base: u32,
    out2_base: u32,
    dims: [u32; 5],
    pad: [u32; 3],
}

fn require_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: t.dtype() });
    }
    Ok(())
}

/// Checks that `x` is f32 of rank `rank` with no zero dimension.
fn require_shape(op: &'static str, x: &Tensor, rank: usize, layout: &str) -> Result<()> {
    require_f32(op, x)?;
    if x.shape().len() != rank || x.shape().contains(&0) {
        return Err(KestrelError::Shape { op, detail: format!("x is {:?}, expected non-empty {layout}", x.shape()) });
    }
    Ok(())
}

fn u32_dims(dims: &[usize]) -> [u32; 5] {
    let mut d = [0u32; 5];
    for (o, &v) in d.iter_mut().zip(dims) {
        *o = v as u32;
    }
    d
}

/// How one op's dispatches are laid out: the kernel, its rows, and per-row sizes.
struct Plan<'a> {
    op: &'static str,
    entry: &'static str,
    defines: Defines,
    x: &'a Tensor,
    /// `x` elements per row.
    x_row: usize,
    /// Outputs and their elements per row.
    outs: Vec<(&'a Tensor, usize)>,
    rows: usize,
    dims: [u32; 5],
    /// Workgroups of a chunk of `rows`.
    workgroups: fn(usize, &Plan) -> u64,
    /// Flops per row.
    row_flops: u64,
}

/// Records `plan` over every row chunk.
fn run(rec: &mut Recorder, plan: &Plan) -> Result<()> {
    let caps = rec.context().caps().clone();
    let mut widths = vec![plan.x_row];
    widths.extend(plan.outs.iter().map(|o| o.1));
    let chunks: Vec<RowChunk> = row_chunks(&caps, plan.op, plan.rows, &widths)?;
    let kernel = rec.kernel("reduce", plan.entry, plan.defines.clone())?;
    for chunk in chunks {
        let (bx, x_base) = chunk.bind(&caps, plan.x, plan.x_row);
        let mut bindings = vec![bx];
        let mut bases = [0u32; 2];
        for (slot, (t, row)) in bases.iter_mut().zip(&plan.outs) {
            let (b, base) = chunk.bind(&caps, t, *row);
            bindings.push(b);
            *slot = base;
        }
        let out_elems: usize = plan.outs.iter().map(|o| o.1).sum();
        let p = Params { rows: chunk.count() as u32, x_base, out_base: bases[0], out2_base: bases[1], dims: plan.dims, pad: [0; 3] };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings,
            params: param_bytes(&p),
            workgroups: grid((plan.workgroups)(chunk.count(), plan), caps.max_workgroups_per_dim)?,
            op: plan.op,
            shape: format!("{:?}", plan.x.shape()),
            flops: plan.row_flops * chunk.count() as u64,
            bytes: (4 * (plan.x_row + out_elems) * chunk.count()) as u64,
        })?;
    }
    Ok(())
}

/// One invocation per output element.
fn per_output(rows: usize, plan: &Plan) -> u64 {
    groups(rows * plan.outs[0].1, 256)
}

/// One workgroup per row.
fn per_row(rows: usize, _: &Plan) -> u64 {
    rows as u64
}

/// Mean over the tokens: `x` `[B, N, C]` → `[B, C]` (f32 accumulation).
pub fn mean_tokens(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "mean_tokens";
    require_shape(OP, x, 3, "[B, N, C]")?;
    let (b, n, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let out = rec.output(&[b, c], DType::F32)?;
    run(
        rec,
        &Plan {
            op: OP,
            entry: "mean_tokens",
            defines: Defines::new().flag("MEAN_TOKENS", true),
            x,
            x_row: n * c,
            outs: vec![(&out, c)],
            rows: b,
            dims: u32_dims(&[n, c]),
            workgroups: per_output,
            row_flops: (n * c) as u64,
        },
    )?;
    Ok(out)
}

/// 1-D max pooling with PyTorch's semantics (no dilation, floor mode): `x` `[B, C, L]` →
/// `[B, C, Lout]` with `Lout = ⌊(L + 2·padding − kernel) / stride⌋ + 1`; padded positions count
/// as −inf. Requires `kernel ≥ 1`, `stride ≥ 1`, `padding ≤ kernel / 2` and `Lout ≥ 1`.
pub fn max_pool1d(rec: &mut Recorder, x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    const OP: &str = "max_pool1d";
    require_shape(OP, x, 3, "[B, C, L]")?;
    let (b, c, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let invalid = |detail: String| Err(KestrelError::InvalidArgument { op: OP, detail });
    // The kernel does window arithmetic in i32.
    let limit = i32::MAX as usize / 4;
    if kernel == 0 || stride == 0 || kernel > limit || stride > limit || l > limit {
        return invalid(format!("kernel {kernel}, stride {stride} must be in 1..={limit} (L = {l})"));
    }
    if padding > kernel / 2 {
        return invalid(format!("padding {padding} exceeds half the kernel {kernel}"));
    }
    if l + 2 * padding < kernel {
        return invalid(format!("kernel {kernel} longer than the padded input {}", l + 2 * padding));
    }
    let out_len = (l + 2 * padding - kernel) / stride + 1;
    let out = rec.output(&[b, c, out_len], DType::F32)?;
    run(
        rec,
        &Plan {
            op: OP,
            entry: "max_pool1d",
            defines: Defines::new().flag("MAX_POOL1D", true),
            x,
            x_row: l,
            outs: vec![(&out, out_len)],
            rows: b * c,
            dims: u32_dims(&[l, out_len, kernel, stride, padding]),
            workgroups: per_output,
            row_flops: (out_len * kernel) as u64,
        },
    )?;
    Ok(out)
}

/// Adaptive 2-D average pooling with PyTorch's bins: `x` `[B, C, H, W]` → `[B, C, OH, OW]`,
/// output `(i, j)` averaging rows `⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉` and the same for columns.
/// `out_h` and `out_w` must be ≥ 1 (they may exceed `H`, `W`: bins then overlap).
pub fn adaptive_avg_pool2d(rec: &mut Recorder, x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d";
    require_shape(OP, x, 4, "[B, C, H, W]")?;
    let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    if out_h == 0 || out_w == 0 {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("output size {out_h}x{out_w} must be >= 1") });
    }
    // The kernel computes (o + 1)·H + OH in u32.
    let fits = |o: usize, d: usize| (o as u128 + 1) * d as u128 + o as u128 <= u128::from(u32::MAX);
    if !fits(out_h, h) || !fits(out_w, w) || out_h.checked_mul(out_w).is_none_or(|v| v > u32::MAX as usize) {
        return Err(KestrelError::InvalidArgument { op: OP, detail: "sizes exceed 32-bit bin arithmetic".into() });
    }
    let out = rec.output(&[b, c, out_h, out_w], DType::F32)?;
    let bin = h.div_ceil(out_h) * w.div_ceil(out_w);
    run(
        rec,
        &Plan {
            op: OP,
            entry: "adaptive_avg_pool2d",
            defines: Defines::new().flag("ADAPTIVE_AVG_POOL2D", true),
            x,
            x_row: h * w,
            outs: vec![(&out, out_h * out_w)],
            rows: b * c,
            dims: u32_dims(&[h, w, out_h, out_w]),
            workgroups: per_output,
            row_flops: (out_h * out_w * bin) as u64,
        },
    )?;
    Ok(out)
}

/// Splits `x` (`[.., n]`, f32, n ≥ 1) into rows.
fn last_dim_rows(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    require_f32(op, x)?;
    match x.shape().last() {
        Some(&n) if n > 0 => Ok((x.numel() / n, n)),
        _ => Err(KestrelError::Shape { op, detail: format!("{:?}: the last dimension must be non-empty", x.shape()) }),
    }
}

fn argmax_defines(entry_flag: &str, subgroups: bool) -> Defines {
    Defines::new().flag(entry_flag, true).flag("ARGMAX_FAMILY", true).flag("SUBGROUPS", subgroups)
}

/// Index of the largest element of each row of `x` (`[.., n]`, f32) → u32 `[..]`; the first
/// index among equal maxima (−0 equals +0).
pub fn argmax(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "argmax";
    let (rows, n) = last_dim_rows(OP, x)?;
    let shape = &x.shape()[..x.shape().len() - 1];
    let out = rec.output(shape, DType::U32)?;
    run(
        rec,
        &Plan {
            op: OP,
            entry: "argmax",
            defines: argmax_defines("ARGMAX", rec.context().caps().subgroups),
            x,
            x_row: n,
            outs: vec![(&out, 1)],
            rows,
            dims: u32_dims(&[n]),
            workgroups: per_row,
            row_flops: n as u64,
        },
    )?;
    Ok(out)
}

/// The `k` largest elements of each row of `x` (`[.., n]`, f32), sorted descending with ties
/// broken by the lower index: values f32 `[.., k]` and their indices u32 `[.., k]`.
/// `1 ≤ k ≤ min(n, MAX_TOP_K)`. Cost: `k` passes over each row (O(k·n) reads, one workgroup per
/// row); meant for sampling (k ≲ 100) over vocabularies of 50k+ entries.
pub fn top_k(rec: &mut Recorder, x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "top_k";
    let (rows, n) = last_dim_rows(OP, x)?;
    if k == 0 || k > n || k > MAX_TOP_K {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("k {k} must be in 1..={}", n.min(MAX_TOP_K)) });
    }
    let mut shape = x.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = k;
    }
    let values = rec.output(&shape, DType::F32)?;
    let indices = rec.output(&shape, DType::U32)?;
    run(
        rec,
        &Plan {
            op: OP,
            entry: "top_k",
            defines: argmax_defines("TOP_K", rec.context().caps().subgroups),
            x,
            x_row: n,
            outs: vec![(&values, k), (&indices, k)],
            rows,
            dims: u32_dims(&[n, k]),
            workgroups: per_row,
            row_flops: (n * k) as u64,
        },
    )?;
    Ok((values, indices))
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v: Vec<KernelKey> =
        [("mean_tokens", "MEAN_TOKENS"), ("max_pool1d", "MAX_POOL1D"), ("adaptive_avg_pool2d", "ADAPTIVE_AVG_POOL2D")]
            .into_iter()
            .map(|(entry, flag)| KernelKey { family: "reduce", entry, defines: Defines::new().flag(flag, true) })
            .collect();
    for subgroups in [false, true] {
        v.push(KernelKey { family: "reduce", entry: "argmax", defines: argmax_defines("ARGMAX", subgroups) });
        v.push(KernelKey { family: "reduce", entry: "top_k", defines: argmax_defines("TOP_K", subgroups) });
    }
    v
}

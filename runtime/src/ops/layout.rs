//! Layout ops — [`permute`] (and [`transpose`]), [`slice()`] (and the multi-axis
//! [`slice_ranges`]) and [`concat()`] — on f32, f16 and u32 tensors, all as strided copies
//! (`shaders/layout.wgsl`). A plain contiguous duplicate is [`crate::ops::copy::copy`].
//!
//! Each op describes its work as a copy plan (a shape with source and destination strides and
//! offsets, in elements), drops size-1 dimensions and merges dimensions that are contiguous on
//! both sides, then picks a kernel:
//! - 16-byte words (`strided_copy`, `T = vec4<u32>`) when the innermost dimension is contiguous
//!   on both sides and every extent, stride and offset is a multiple of 16 bytes;
//! - a 32×32 tiled transpose through workgroup memory (`transpose_tiled`) for 32-bit copies
//!   whose innermost output dimension is strided in the source while another dimension is
//!   contiguous there (e.g. `[B, C, HW] → [B, HW, C]`), both extents at least 8;
//! - otherwise one 32-bit word per invocation (`strided_copy`, `T = u32`).
//!
//! f16 (16-bit elements): a copy whose innermost extent, strides and offsets are even is done on
//! u32 words holding two halves (and may then use the paths above). Otherwise, when the
//! destination is contiguous (every permute and slice), each invocation assembles one output
//! word from two 16-bit source halves (`f16_pairs`): no word is written twice and no
//! read-modify-write is needed. A concat whose f16 input regions do not start and end on word
//! boundaries goes through f32 instead (an exact cast of each input, an f32 concat, an exact
//! cast back).
//!
//! Every tensor involved must fit one storage binding (no chunking here).

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::elementwise::cast;
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

/// Most dimensions a layout op supports.
pub const MAX_RANK: usize = 8;

/// Side of the square tiles of `transpose_tiled`.
const TILE: usize = 32;

/// Smallest extent (of both transposed dimensions) for which the tiled transpose is chosen.
const MIN_TRANSPOSE_EXTENT: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    rank: u32,
    src_off: u32,
    dst_off: u32,
    shape: [u32; MAX_RANK],
    src_strides: [u32; MAX_RANK],
    dst_strides: [u32; MAX_RANK],
}

/// A strided copy in element units: item `c` (a multi-index over `shape`, row-major) reads
/// `src_off + Σ c·src` and writes `dst_off + Σ c·dst`.
#[derive(Clone, Debug)]
struct Plan {
    shape: Vec<usize>,
    src: Vec<usize>,
    dst: Vec<usize>,
    src_off: usize,
    dst_off: usize,
}

/// Row-major strides of a shape.
fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Plan {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The same copy without size-1 dimensions and with neighbours that are contiguous on both
    /// sides merged (always at least one dimension).
    fn simplified(&self) -> Plan {
        let mut out = Plan { shape: vec![], src: vec![], dst: vec![], src_off: self.src_off, dst_off: self.dst_off };
        for d in 0..self.shape.len() {
            let (e, s, t) = (self.shape[d], self.src[d], self.dst[d]);
            if e == 1 {
                continue;
            }
            match out.shape.len().checked_sub(1) {
                Some(l) if out.src[l] == s * e && out.dst[l] == t * e => {
                    out.shape[l] *= e;
                    out.src[l] = s;
                    out.dst[l] = t;
                }
                _ => {
                    out.shape.push(e);
                    out.src.push(s);
                    out.dst.push(t);
                }
            }
        }
        if out.shape.is_empty() {
            out.shape.push(1);
            out.src.push(1);
            out.dst.push(1);
        }
        out
    }

    /// The same copy in units of `k` elements, when the innermost dimension is contiguous on both
    /// sides and its extent, every other stride and both offsets are multiples of `k`.
    fn in_units(&self, k: usize) -> Option<Plan> {
        let last = self.shape.len() - 1;
        let mut outer = self.src[..last].iter().chain(&self.dst[..last]);
        let divisible = self.shape[last].is_multiple_of(k)
            && self.src_off.is_multiple_of(k)
            && self.dst_off.is_multiple_of(k)
            && outer.all(|s| s.is_multiple_of(k));
        if self.src[last] != 1 || self.dst[last] != 1 || !divisible {
            return None;
        }
        let scale = |v: &[usize]| -> Vec<usize> { v[..last].iter().map(|s| s / k).chain([1]).collect() };
        let mut shape = self.shape.clone();
        shape[last] /= k;
        Some(Plan { shape, src: scale(&self.src), dst: scale(&self.dst), src_off: self.src_off / k, dst_off: self.dst_off / k })
    }

    fn dst_contiguous(&self) -> bool {
        self.dst == row_major(&self.shape)
    }

    /// For the tiled transpose: the same copy reordered as `[a, b, batch…]`, where `a` is
    /// contiguous in the source and `b` (the innermost dimension) in the destination.
    fn as_transpose(&self) -> Option<Plan> {
        let last = self.shape.len() - 1;
        if self.dst[last] != 1 || self.src[last] == 1 {
            return None;
        }
        let a = (0..last).find(|&d| self.src[d] == 1)?;
        if self.shape[a].min(self.shape[last]) < MIN_TRANSPOSE_EXTENT {
            return None;
        }
        let order: Vec<usize> = [a, last].into_iter().chain((0..last).filter(|&d| d != a)).collect();
        let pick = |v: &[usize]| -> Vec<usize> { order.iter().map(|&d| v[d]).collect() };
        Some(Plan { shape: pick(&self.shape), src: pick(&self.src), dst: pick(&self.dst), ..*self })
    }

    fn params(&self, n: usize) -> Params {
        let mut p = Params {
            n: n as u32,
            rank: self.shape.len() as u32,
            src_off: self.src_off as u32,
            dst_off: self.dst_off as u32,
            ..Zeroable::zeroed()
        };
        for d in 0..self.shape.len() {
            p.shape[d] = self.shape[d] as u32;
            p.src_strides[d] = self.src[d] as u32;
            p.dst_strides[d] = self.dst[d] as u32;
        }
        p
    }
}

fn invalid(op: &'static str, detail: String) -> KestrelError {
    KestrelError::InvalidArgument { op, detail }
}

/// Checks a tensor can take part in a layout op: rank, one storage binding, 32-bit indexing.
fn check_tensor(rec: &Recorder, op: &'static str, t: &Tensor) -> Result<()> {
    if t.shape().len() > MAX_RANK {
        return Err(invalid(op, format!("rank {} > {MAX_RANK}", t.shape().len())));
    }
    if t.byte_size() > rec.context().caps().max_storage_binding || t.numel() > u32::MAX as usize {
        return Err(invalid(op, "tensor larger than one storage binding".into()));
    }
    Ok(())
}

/// Records the dispatch(es) of one copy plan from `x` into `out` (same dtype).
fn record(rec: &mut Recorder, op: &'static str, x: &Tensor, out: &Tensor, plan: &Plan) -> Result<()> {
    let plan = plan.simplified();
    let n = plan.numel();
    if n == 0 {
        return Ok(());
    }
    let bytes = n * x.dtype().size();
    let words = match x.dtype() {
        DType::F32 | DType::U32 => plan,
        DType::F16 => match plan.in_units(2) {
            Some(w) => w.simplified(),
            None if plan.dst_contiguous() && plan.dst_off.is_multiple_of(2) => {
                let p = Plan { dst_off: plan.dst_off / 2, ..plan };
                return dispatch(rec, op, x, out, "f16_pairs", Defines::new().flag("PAIR", true), p.params(n), n.div_ceil(2), 256, 2 * n);
            }
            None => return Err(invalid(op, "f16 destination region does not start and end on 32-bit words".into())),
        },
    };
    if let Some(v) = words.in_units(4) {
        let defines = Defines::new().flag("STRIDED", true).set("T", "vec4<u32>");
        let items = v.numel();
        return dispatch(rec, op, x, out, "strided_copy", defines, v.params(items), items, 256, bytes);
    }
    if let Some(t) = words.as_transpose() {
        let batch: usize = t.shape[2..].iter().product();
        let tiles = t.shape[0].div_ceil(TILE) * t.shape[1].div_ceil(TILE) * batch;
        let defines = Defines::new().flag("TRANSPOSE", true);
        return dispatch(rec, op, x, out, "transpose_tiled", defines, t.params(tiles), tiles, 1, bytes);
    }
    let items = words.numel();
    let defines = Defines::new().flag("STRIDED", true).set("T", "u32");
    dispatch(rec, op, x, out, "strided_copy", defines, words.params(items), items, 256, bytes)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    rec: &mut Recorder,
    op: &'static str,
    x: &Tensor,
    out: &Tensor,
    entry: &'static str,
    defines: Defines,
    params: Params,
    items: usize,
    per_group: usize,
    bytes: usize,
) -> Result<()> {
    let kernel = rec.kernel("layout", entry, defines)?;
    let caps = rec.context().caps().clone();
    rec.dispatch(Dispatch {
        kernel,
        bindings: vec![Binding::whole(x), Binding::whole(out)],
        params: param_bytes(&params),
        workgroups: grid(groups(items, per_group), caps.max_workgroups_per_dim)?,
        op,
        shape: format!("{:?}->{:?} {}", x.shape(), out.shape(), x.dtype().name()),
        flops: 0,
        bytes: 2 * bytes as u64,
    })
}

/// Reorders the dimensions: output dimension `i` is input dimension `dims[i]`
/// (`dims` a permutation of `0..rank`).
pub fn permute(rec: &mut Recorder, x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    check_tensor(rec, "permute", x)?;
    let rank = x.shape().len();
    let mut seen = [false; MAX_RANK];
    for &d in dims {
        if d >= rank || seen[d] {
            return Err(invalid("permute", format!("{dims:?} is not a permutation of 0..{rank}")));
        }
        seen[d] = true;
    }
    if dims.len() != rank {
        return Err(invalid("permute", format!("{dims:?} is not a permutation of 0..{rank}")));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| x.shape()[d]).collect();
    let strides = row_major(x.shape());
    let out = rec.output(&shape, x.dtype())?;
    let plan = Plan { src: dims.iter().map(|&d| strides[d]).collect(), dst: row_major(&shape), shape, src_off: 0, dst_off: 0 };
    record(rec, "permute", x, &out, &plan)?;
    Ok(out)
}

/// Swaps dimensions `d0` and `d1`.
pub fn transpose(rec: &mut Recorder, x: &Tensor, d0: usize, d1: usize) -> Result<Tensor> {
    let rank = x.shape().len();
    if d0 >= rank || d1 >= rank {
        return Err(invalid("transpose", format!("dims {d0}, {d1} out of range for rank {rank}")));
    }
    let mut dims: Vec<usize> = (0..rank).collect();
    dims.swap(d0, d1);
    permute(rec, x, &dims)
}

/// Elements `start..end` of dimension `axis` (`start <= end <= shape[axis]`; an empty range gives
/// an empty tensor).
pub fn slice(rec: &mut Recorder, x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor> {
    let rank = x.shape().len();
    if axis >= rank {
        return Err(invalid("slice", format!("axis {axis} out of range for rank {rank}")));
    }
    let ranges: Vec<std::ops::Range<usize>> =
        x.shape().iter().enumerate().map(|(d, &e)| if d == axis { start..end } else { 0..e }).collect();
    slice_ranges(rec, x, &ranges)
}

/// The sub-tensor `x[r0, r1, …]`: one range per dimension (`start <= end <= extent`).
pub fn slice_ranges(rec: &mut Recorder, x: &Tensor, ranges: &[std::ops::Range<usize>]) -> Result<Tensor> {
    check_tensor(rec, "slice", x)?;
    if ranges.len() != x.shape().len() {
        return Err(invalid("slice", format!("{} ranges for rank {}", ranges.len(), x.shape().len())));
    }
    for (d, (r, &e)) in ranges.iter().zip(x.shape()).enumerate() {
        if r.start > r.end || r.end > e {
            return Err(invalid("slice", format!("range {r:?} out of bounds for dimension {d} of extent {e}")));
        }
    }
    let shape: Vec<usize> = ranges.iter().map(|r| r.end - r.start).collect();
    let strides = row_major(x.shape());
    let out = rec.output(&shape, x.dtype())?;
    let plan = Plan {
        src_off: ranges.iter().zip(&strides).map(|(r, s)| r.start * s).sum(),
        src: strides,
        dst: row_major(&shape),
        shape,
        dst_off: 0,
    };
    record(rec, "slice", x, &out, &plan)?;
    Ok(out)
}

/// Joins tensors along `axis`; all other extents and the dtype must agree. One dispatch per
/// (non-empty) input writes that input's region of the output.
pub fn concat(rec: &mut Recorder, inputs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = inputs.first().ok_or_else(|| invalid("concat", "no inputs".into()))?;
    let rank = first.shape().len();
    if axis >= rank {
        return Err(invalid("concat", format!("axis {axis} out of range for rank {rank}")));
    }
    for t in inputs {
        check_tensor(rec, "concat", t)?;
        let same = t.shape().len() == rank && t.shape().iter().zip(first.shape()).enumerate().all(|(d, (a, b))| d == axis || a == b);
        if !same {
            return Err(KestrelError::Shape {
                op: "concat",
                detail: format!("{:?} and {:?} differ outside axis {axis}", first.shape(), t.shape()),
            });
        }
        if t.dtype() != first.dtype() {
            return Err(KestrelError::UnsupportedDtype { op: "concat", dtype: t.dtype() });
        }
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = inputs.iter().map(|t| t.shape()[axis]).sum();
    let n: usize = shape.iter().product();
    if (n * first.dtype().size()) as u64 > rec.context().caps().max_storage_binding || n > u32::MAX as usize {
        return Err(invalid("concat", "output larger than one storage binding".into()));
    }
    let out_strides = row_major(&shape);
    let mut plans = Vec::with_capacity(inputs.len());
    let mut offset = 0;
    for t in inputs {
        plans.push(Plan {
            shape: t.shape().to_vec(),
            src: row_major(t.shape()),
            dst: out_strides.clone(),
            src_off: 0,
            dst_off: offset * out_strides[axis],
        });
        offset += t.shape()[axis];
    }
    let word_aligned = plans.iter().all(|p| p.numel() == 0 || p.simplified().in_units(2).is_some());
    if first.dtype() == DType::F16 && !word_aligned {
        let wide: Vec<Tensor> = inputs.iter().map(|t| cast(rec, t, DType::F32)).collect::<Result<_>>()?;
        let wide_refs: Vec<&Tensor> = wide.iter().collect();
        let joined = concat(rec, &wide_refs, axis)?;
        return cast(rec, &joined, DType::F16);
    }
    let out = rec.output(&shape, first.dtype())?;
    for (t, plan) in inputs.iter().zip(&plans) {
        record(rec, "concat", t, &out, plan)?;
    }
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    vec![
        KernelKey { family: "layout", entry: "strided_copy", defines: Defines::new().flag("STRIDED", true).set("T", "u32") },
        KernelKey { family: "layout", entry: "strided_copy", defines: Defines::new().flag("STRIDED", true).set("T", "vec4<u32>") },
        KernelKey { family: "layout", entry: "transpose_tiled", defines: Defines::new().flag("TRANSPOSE", true) },
        KernelKey { family: "layout", entry: "f16_pairs", defines: Defines::new().flag("PAIR", true) },
    ]
}

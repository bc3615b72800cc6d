//! Scores for prompt-guided selection (`shaders/select.wgsl`): [`cosine_rows`], the cosine
//! similarity of every row of a matrix with one vector (Free Video-LLM's frame and region
//! scores against a text embedding).

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    pad: [u32; 2],
}

/// `cosine_similarity(x[r], y)` for every row `r` of `x` (`[.., D]`, f32) with `y` (`D` values
/// in any shape, f32): f32 `[..]`. As PyTorch: each side divided by `max(‖·‖, 1e-8)`, then the
/// dot product (f32 accumulation). `x` must fit one storage binding.
pub fn cosine_rows(rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    const OP: &str = "cosine_rows";
    for t in [x, y] {
        if t.dtype() != DType::F32 {
            return Err(KestrelError::UnsupportedDtype { op: OP, dtype: t.dtype() });
        }
    }
    let d = match x.shape().last() {
        Some(&d) if d > 0 && x.numel() > 0 => d,
        _ => return Err(KestrelError::Shape { op: OP, detail: format!("x is {:?}, expected non-empty [.., D]", x.shape()) }),
    };
    if y.numel() != d {
        return Err(KestrelError::Shape { op: OP, detail: format!("y has {} values, x's rows {d}", y.numel()) });
    }
    let caps = rec.context().caps().clone();
    if x.byte_size() > caps.max_storage_binding || x.numel() > u32::MAX as usize {
        return Err(KestrelError::InvalidArgument { op: OP, detail: format!("x {:?} exceeds one storage binding", x.shape()) });
    }
    let rows = x.numel() / d;
    let out = rec.output(&x.shape()[..x.shape().len() - 1], DType::F32)?;
    let kernel = rec.kernel("select", "cosine_rows", Defines::new())?;
    rec.dispatch(Dispatch {
        kernel,
        bindings: vec![Binding::whole(x), Binding::whole(y), Binding::whole(&out)],
        params: param_bytes(&Params { rows: rows as u32, d: d as u32, pad: [0; 2] }),
        workgroups: grid(groups(rows, 256), caps.max_workgroups_per_dim)?,
        op: OP,
        shape: format!("{:?}", x.shape()),
        flops: (6 * rows * d) as u64,
        bytes: (4 * (rows * d + d + rows)) as u64,
    })?;
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    vec![KernelKey { family: "select", entry: "cosine_rows", defines: Defines::new() }]
}

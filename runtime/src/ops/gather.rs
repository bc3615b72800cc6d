//! Gathers: [`embedding`] looks up rows of an f32 or f16 table by u32 ids (`shaders/gather.wgsl`).

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::{groups, max_window_elems, param_bytes, window};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    d: u32,
    vocab: u32,
    row0: u32,
    row1: u32,
    tab_off: u32,
    pad: [u32; 2],
}

fn defines(tab_f16: bool, native_f16: bool, vec4: bool) -> Defines {
    Defines::new()
        .flag("TAB_F16", tab_f16)
        .flag("F16", tab_f16 && native_f16)
        .flag("VEC4", vec4)
        .set("OT", if vec4 { "vec4<f32>" } else { "f32" })
}

/// Rows of `table` (`[V, D]`, f32 or f16) picked by `ids` (u32, any shape): an f32 tensor of
/// shape `[ids…, D]`.
///
/// Ids `>= V` are clamped to `V - 1` in the kernel, so they never read outside the table; they
/// are not checked on the host (that would need a GPU readback). A table larger than one storage
/// binding is looked up in row windows, one dispatch per window.
pub fn embedding(rec: &mut Recorder, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let op = "embedding";
    let invalid = |detail: String| KestrelError::InvalidArgument { op, detail };
    if ids.dtype() != DType::U32 {
        return Err(KestrelError::UnsupportedDtype { op, dtype: ids.dtype() });
    }
    let tab_f16 = match table.dtype() {
        DType::F32 => false,
        DType::F16 => true,
        other => return Err(KestrelError::UnsupportedDtype { op, dtype: other }),
    };
    let &[vocab, d] = table.shape() else {
        return Err(KestrelError::Shape { op, detail: format!("table must be [V, D], got {:?}", table.shape()) });
    };
    if vocab == 0 || d == 0 {
        return Err(KestrelError::Shape { op, detail: format!("empty table {:?}", table.shape()) });
    }
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    let n = ids.numel() * d;
    let caps = rec.context().caps().clone();
    if (n * 4) as u64 > caps.max_storage_binding || ids.byte_size() > caps.max_storage_binding {
        return Err(invalid("ids or output larger than one storage binding".into()));
    }
    if table.numel() > u32::MAX as usize {
        return Err(invalid(format!("{} table elements exceed 32-bit indexing", table.numel())));
    }
    let out = rec.output(&shape, DType::F32)?;
    if n == 0 {
        return Ok(out);
    }
    let esize = table.dtype().size();
    // Rows of 4 values read as one item when window starts keep item alignment.
    let vec4 = d.is_multiple_of(4) && (caps.storage_offset_alignment as usize / esize).is_multiple_of(4);
    let per_item = if vec4 { 4 } else { 1 };
    let rows_per_window = max_window_elems(&caps, esize) / d;
    if rows_per_window == 0 {
        return Err(invalid(format!("a table row of {d} values exceeds one storage binding")));
    }
    let kernel = rec.kernel("gather", "embedding", defines(tab_f16, caps.read_f16_natively(), vec4))?;
    let items = n / per_item;
    let windows = vocab.div_ceil(rows_per_window);
    let mut row0 = 0;
    while row0 < vocab {
        let rows = rows_per_window.min(vocab - row0);
        let w = window(&caps, row0 * d, rows * d, esize);
        let params = Params {
            n: items as u32,
            d: (d / per_item) as u32,
            vocab: vocab as u32,
            row0: row0 as u32,
            row1: (row0 + rows) as u32,
            tab_off: (w.elem_start / per_item) as u32,
            pad: [0; 2],
        };
        rec.dispatch(Dispatch {
            kernel: kernel.clone(),
            bindings: vec![Binding::whole(ids), Binding::window(table, w.byte_offset, w.byte_size), Binding::whole(&out)],
            params: param_bytes(&params),
            workgroups: grid(groups(items, 256), caps.max_workgroups_per_dim)?,
            op,
            shape: format!("{:?}[{:?}] {}", table.shape(), ids.shape(), table.dtype().name()),
            flops: 0,
            bytes: ids.byte_size() + (n * (4 + esize) / windows) as u64,
        })?;
        row0 += rows;
    }
    Ok(out)
}

/// Every kernel variant this module can select (validated by the shader test).
pub fn variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for (tab_f16, native) in [(false, false), (true, true), (true, false)] {
        for vec4 in [false, true] {
            v.push(KernelKey { family: "gather", entry: "embedding", defines: defines(tab_f16, native, vec4) });
        }
    }
    v
}

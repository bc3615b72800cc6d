//! Contiguous copy of a tensor (vec4 words), also the bandwidth yardstick of the benchmarks.

use bytemuck::{Pod, Zeroable};

use crate::error::{KestrelError, Result};
use crate::exec::{Binding, Dispatch, Recorder, grid};
use crate::ops::{groups, param_bytes};
use crate::pipeline::KernelKey;
use crate::shader::Defines;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n4: u32,
    pad: [u32; 3],
}

/// A new tensor with the same contents (any dtype; must fit one storage binding).
pub fn copy(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let caps = rec.context().caps().clone();
    if x.byte_size() > caps.max_storage_binding {
        return Err(KestrelError::InvalidArgument { op: "copy", detail: "tensor larger than one storage binding".into() });
    }
    let out = rec.output(x.shape(), x.dtype())?;
    // Buffers are padded to 16 bytes, so whole vec4 words never run past the allocation.
    let n4 = x.byte_size().div_ceil(16) as usize;
    if n4 == 0 {
        return Ok(out);
    }
    let kernel = rec.kernel("copy", "copy_vec4", Defines::new())?;
    rec.dispatch(Dispatch {
        kernel,
        bindings: vec![Binding::whole(x), Binding::whole(&out)],
        params: param_bytes(&Params { n4: n4 as u32, pad: [0; 3] }),
        workgroups: grid(groups(n4, 256), caps.max_workgroups_per_dim)?,
        op: "copy",
        shape: format!("{:?}", x.shape()),
        flops: 0,
        bytes: 2 * x.byte_size(),
    })?;
    Ok(out)
}

/// Kernel variants of this module.
pub fn variants() -> Vec<KernelKey> {
    vec![KernelKey { family: "copy", entry: "copy_vec4", defines: Defines::new() }]
}

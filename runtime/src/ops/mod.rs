//! Ops: shape checks, kernel selection and dispatch. Each op records into a [`Recorder`]
//! and returns its output tensor; the CPU reference of every op is in [`crate::reference`].
//!
//! [`Recorder`]: crate::exec::Recorder

pub mod attention;
pub mod columns;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod gather;
pub mod gemv;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod operand;
pub mod qmatmul;
pub mod reduce;
pub(crate) mod rows;
pub mod select;
pub mod sla;
pub mod softmax;
pub mod window_attention;

use std::sync::Arc;

use crate::caps::Capabilities;
use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::exec::Recorder;
use crate::tensor::Tensor;

/// Serialises a parameter struct for binding 0.
pub(crate) fn param_bytes<T: bytemuck::Pod>(p: &T) -> Vec<u8> {
    bytemuck::bytes_of(p).to_vec()
}

/// A storage-binding window over part of a tensor's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Byte offset of the window (aligned to the device's storage offset alignment).
    pub byte_offset: u64,
    /// Byte size of the window.
    pub byte_size: u64,
    /// Element index (in the whole tensor) at which the window begins.
    pub elem_start: usize,
}

/// The window that covers elements `[start, start + count)` of a tensor with `esize`-byte
/// elements: the start is aligned down to the storage offset alignment.
pub(crate) fn window(caps: &Capabilities, start: usize, count: usize, esize: usize) -> Window {
    let align = u64::from(caps.storage_offset_alignment);
    let begin = (start * esize) as u64;
    let aligned = begin / align * align;
    let end = ((start + count) * esize) as u64;
    Window { byte_offset: aligned, byte_size: end - aligned, elem_start: (aligned / esize as u64) as usize }
}

/// The output of a product: a new f32 tensor of `shape`, or `into` — to be accumulated into
/// in place — once checked to be f32 of that shape and to share no buffer with `inputs`.
pub(crate) fn accumulator(
    rec: &mut Recorder,
    op: &'static str,
    shape: &[usize],
    into: Option<&Tensor>,
    inputs: &[&Tensor],
) -> Result<Tensor> {
    let Some(c) = into else { return rec.output(shape, DType::F32) };
    if c.dtype() != DType::F32 || c.shape() != shape {
        return Err(KestrelError::Shape {
            op,
            detail: format!("accumulator {:?} ({}) must be f32 {shape:?}", c.shape(), c.dtype().name()),
        });
    }
    if inputs.iter().any(|t| Arc::ptr_eq(t.pooled(), c.pooled())) {
        return Err(KestrelError::InvalidArgument { op, detail: "the accumulator shares a buffer with an operand".into() });
    }
    Ok(c.clone())
}

/// Most elements one window may hold, leaving room for the alignment slack and vec4 tails.
pub(crate) fn max_window_elems(caps: &Capabilities, esize: usize) -> usize {
    let usable = caps.max_storage_binding.saturating_sub(u64::from(caps.storage_offset_alignment) + 64);
    (usable / esize as u64) as usize
}

/// Workgroups needed for `n` items at `per_group` items each.
pub(crate) fn groups(n: usize, per_group: usize) -> u64 {
    n.div_ceil(per_group) as u64
}

/// Every kernel variant any op can select: the shader test preprocesses and validates each.
pub fn all_variants() -> Vec<crate::pipeline::KernelKey> {
    let mut v = elementwise::variants();
    v.extend(copy::variants());
    v.extend(norm::variants());
    v.extend(softmax::variants());
    v.extend(reduce::variants());
    v.extend(select::variants());
    v.extend(gemv::variants());
    v.extend(matmul::variants());
    v.extend(layout::variants());
    v.extend(gather::variants());
    v.extend(conv2d::variants());
    v.extend(qmatmul::variants());
    v.extend(attention::variants());
    v.extend(sla::variants());
    v.extend(window_attention::variants());
    v
}

//! Column ranges of row-major tensors and the head-dimension capacities of the attention
//! kernels that read them ([`sla`](crate::ops::sla), [`window_attention`](crate::ops::window_attention)):
//! shared by both, so neither op depends on the other.

use crate::dtype::DType;
use crate::error::{KestrelError, Result};
use crate::tensor::Tensor;

/// Head-dimension capacities the kernels are compiled for (a head of dimension `d` uses the
/// smallest capacity `≥ d`); the largest is the largest supported head dimension.
pub const HEAD_DIM_CAPACITIES: [usize; 3] = [16, 32, 64];

/// Columns `[offset, offset + count)` of every row of an f32 tensor whose last dimension is the
/// row width (`[.., width]`): how q, k and v are read straight out of a fused projection — e.g.
/// q, k, v of `qkv = x·W_qkv` (`[N, 3C]`) are `Columns::range(&qkv, 0, C)`, `(…, C, C)`,
/// `(…, 2C, C)`. Shared by [`sla`](crate::ops::sla::sla_columns) and
/// [`window_attention`](crate::ops::window_attention).
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    /// The tensor (f32, row-major); rows are all its dimensions but the last.
    pub tensor: &'a Tensor,
    /// First column.
    pub offset: usize,
    /// Number of columns.
    pub count: usize,
}

impl<'a> Columns<'a> {
    /// Every column of `t`.
    pub fn all(t: &'a Tensor) -> Columns<'a> {
        Columns { tensor: t, offset: 0, count: t.shape().last().copied().unwrap_or(1) }
    }

    /// Columns `[offset, offset + count)` of `t`.
    pub fn range(t: &'a Tensor, offset: usize, count: usize) -> Columns<'a> {
        Columns { tensor: t, offset, count }
    }

    /// Row width (the tensor's last dimension; 1 for a scalar).
    pub fn width(&self) -> usize {
        self.tensor.shape().last().copied().unwrap_or(1)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.tensor.numel().checked_div(self.width()).unwrap_or(0)
    }

    /// Checks dtype, bounds and 32-bit indexing; `what` names the operand in errors.
    pub(crate) fn check(&self, op: &'static str, what: &str, max_binding: u64) -> Result<()> {
        if self.tensor.dtype() != DType::F32 {
            return Err(KestrelError::UnsupportedDtype { op, dtype: self.tensor.dtype() });
        }
        if self.tensor.shape().len() < 2 {
            return Err(KestrelError::Shape { op, detail: format!("{what} {:?} must be [rows, width]", self.tensor.shape()) });
        }
        if self.count == 0 || self.offset + self.count > self.width() {
            return Err(KestrelError::Shape {
                op,
                detail: format!("{what}: columns {}..{} outside rows of width {}", self.offset, self.offset + self.count, self.width()),
            });
        }
        fits_binding(op, what, self.tensor, max_binding)
    }
}

/// Errors when `t` exceeds one storage binding or 32-bit element indexing.
pub(crate) fn fits_binding(op: &'static str, what: &str, t: &Tensor, max_binding: u64) -> Result<()> {
    if t.byte_size() > max_binding || t.numel() > u32::MAX as usize {
        return Err(KestrelError::InvalidArgument { op, detail: format!("{what} {:?} is larger than one storage binding", t.shape()) });
    }
    Ok(())
}

/// The kernel capacity for head dimension `d`, or an error when `d` is 0 or too large.
pub(crate) fn capacity(op: &'static str, d: usize) -> Result<usize> {
    HEAD_DIM_CAPACITIES.iter().copied().find(|&c| d >= 1 && d <= c).ok_or_else(|| KestrelError::InvalidArgument {
        op,
        detail: format!("head dimension {d} outside 1..={}", HEAD_DIM_CAPACITIES[HEAD_DIM_CAPACITIES.len() - 1]),
    })
}

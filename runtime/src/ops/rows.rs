//! Row-chunked dispatch for row-wise ops (norms, softmax, reductions): the rows of a tensor are
//! split into dispatches whose storage windows each fit one binding. Kernels index inside their
//! windows, so no index exceeds 32 bits however large the whole tensor is.

use std::ops::Range;

use crate::caps::Capabilities;
use crate::error::{KestrelError, Result};
use crate::exec::Binding;
use crate::ops::{max_window_elems, window};
use crate::tensor::Tensor;

/// A run of consecutive rows handled by one dispatch.
#[derive(Clone, Debug)]
pub(crate) struct RowChunk {
    /// The rows covered.
    pub rows: Range<usize>,
}

impl RowChunk {
    /// Rows in the chunk.
    pub fn count(&self) -> usize {
        self.rows.len()
    }

    /// The binding of this chunk's rows of `t` (rows of `row_elems` 4-byte elements) and the
    /// index, inside that window, of the chunk's first element.
    pub fn bind(&self, caps: &Capabilities, t: &Tensor, row_elems: usize) -> (Binding, u32) {
        let w = window(caps, self.rows.start * row_elems, self.count() * row_elems, 4);
        let base = self.rows.start * row_elems - w.elem_start;
        (Binding::window(t, w.byte_offset, w.byte_size), base as u32)
    }
}

/// Splits `rows` rows into chunks such that, for every windowed tensor (one entry of
/// `row_elems` each: its 4-byte elements per row), a chunk's rows fit one storage binding.
/// Errors when a single row is larger than a binding or there are more than 2³² rows.
pub(crate) fn row_chunks(caps: &Capabilities, op: &'static str, rows: usize, row_elems: &[usize]) -> Result<Vec<RowChunk>> {
    if rows > u32::MAX as usize {
        return Err(KestrelError::InvalidArgument { op, detail: format!("{rows} rows exceed 32-bit indexing") });
    }
    let widest = row_elems.iter().copied().max().unwrap_or(1).max(1);
    let per_chunk = (max_window_elems(caps, 4) / widest).min(u32::MAX as usize);
    if per_chunk == 0 {
        return Err(KestrelError::InvalidArgument {
            op,
            detail: format!("a row of {widest} elements exceeds one storage binding ({} bytes)", caps.max_storage_binding),
        });
    }
    let mut chunks = Vec::with_capacity(rows.div_ceil(per_chunk));
    let mut start = 0;
    while start < rows {
        let end = rows.min(start + per_chunk);
        chunks.push(RowChunk { rows: start..end });
        start = end;
    }
    Ok(chunks)
}

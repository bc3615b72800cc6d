//! The weight operand of the products and GEMVs: a tensor in a storage buffer, or a dense
//! weight kept in a texture. Its own module so that `gemv` and `matmul`, which both take it, do
//! not import each other.

use crate::caps::Capabilities;
use crate::dtype::DType;
use crate::exec::Binding;
use crate::ops::{Window, window};
use crate::tensor::Tensor;
use crate::texture::DenseTexture;

/// The B operand of a product or GEMV: a tensor, or a dense weight kept in a texture
/// ([`DenseTexture`], `[N, K]`, transposed-B products only).
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    /// A tensor in a storage buffer.
    Tensor(&'a Tensor),
    /// A weight in a texture.
    Texture(&'a DenseTexture),
}

impl<'a> From<&'a Tensor> for Operand<'a> {
    fn from(t: &'a Tensor) -> Self {
        Operand::Tensor(t)
    }
}

impl<'a> From<&'a DenseTexture> for Operand<'a> {
    fn from(t: &'a DenseTexture) -> Self {
        Operand::Texture(t)
    }
}

impl Operand<'_> {
    /// Shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Operand::Tensor(t) => t.shape(),
            Operand::Texture(t) => t.shape(),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Operand::Tensor(t) => t.dtype(),
            Operand::Texture(t) => t.dtype(),
        }
    }

    /// Elements `start .. start + count` bound: a window of the buffer, or the whole texture
    /// (no binding-size limit; its window starts at element 0).
    pub(crate) fn bind(&self, caps: &Capabilities, start: usize, count: usize) -> (Binding, Window) {
        match self {
            Operand::Tensor(t) => {
                let w = window(caps, start, count, t.dtype().size());
                (Binding::window(t, w.byte_offset, w.byte_size), w)
            }
            Operand::Texture(t) => (Binding::texture(t.words()), Window { byte_offset: 0, byte_size: t.byte_size(), elem_start: 0 }),
        }
    }
}

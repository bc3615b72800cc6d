//! Layers every model is made of, independent of any model: a [`Linear`] layer whose weight is
//! f32, f16 or quantised, dispatched to the matching matmul/GEMV kernel.

use std::sync::Arc;

use crate::Quant;
use crate::context::Context;
use crate::error::{KestrelError, Result};
use crate::exec::Recorder;
use crate::ops::elementwise::{Unary, add, unary};
use crate::ops::gemv::GemvVariant;
use crate::ops::matmul::{MatmulOptions, matmul, matmul_accumulate, matmul_gelu};
use crate::ops::qmatmul::{qgemv_accumulate, qmatmul};
use crate::quant::{BLOCK, QuantTensor, check_weight_shape};
use crate::tensor::Tensor;
use crate::texture::DenseTexture;

/// The weight of a [`Linear`], `[out_features, in_features]` (PyTorch `nn.Linear` layout).
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// f32 or f16 storage.
    Dense(Tensor),
    /// Block-quantised storage, dequantised inside the kernel.
    Quant(QuantTensor),
    /// f32 or f16 in a texture: what a dense weight becomes in [`Linear::new`] on adapters
    /// that read textures faster ([`Capabilities::texture_weights`](crate::Capabilities::texture_weights)).
    Texture(DenseTexture),
}

impl LinearWeight {
    /// `[out_features, in_features]`.
    pub fn shape(&self) -> &[usize] {
        match self {
            LinearWeight::Dense(t) => t.shape(),
            LinearWeight::Quant(q) => q.shape(),
            LinearWeight::Texture(t) => t.shape(),
        }
    }

    /// Bytes the weight occupies on the GPU.
    pub fn byte_size(&self) -> u64 {
        match self {
            LinearWeight::Dense(t) => t.byte_size(),
            LinearWeight::Quant(q) => q.byte_size(),
            LinearWeight::Texture(t) => t.byte_size(),
        }
    }
}

/// `y = x·Wᵀ + b` over the last dimension of `x`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

/// True when a weight of this shape is stored quantised under `quant`: rows of at least one
/// block that the scheme can encode. Narrower layers stay f32 (they are a negligible share of
/// the bytes, and a partial block would waste most of its scale).
pub fn quantisable(quant: Quant, out_features: usize, in_features: usize) -> bool {
    quant.scheme().is_some_and(|s| in_features >= BLOCK && check_weight_shape(s, &[out_features, in_features]).is_ok())
}

impl Linear {
    /// A layer from host f32 values (`weight` `[out, in]` row-major, `bias` `[out]`), stored
    /// as `quant` says: f32, f16, or int8/int4 (with f32 fallback for layers that
    /// [`quantisable`] rejects). The bias always stays f32.
    pub fn from_f32(
        ctx: &Arc<Context>,
        weight: &[f32],
        bias: Option<&[f32]>,
        out_features: usize,
        in_features: usize,
        quant: Quant,
    ) -> Result<Linear> {
        let shape = [out_features, in_features];
        if out_features.checked_mul(in_features) != Some(weight.len()) || out_features == 0 {
            return Err(KestrelError::Shape { op: "linear", detail: format!("weight of {} values is not {shape:?}", weight.len()) });
        }
        let weight = match (quant, quant.scheme()) {
            (_, Some(scheme)) if quantisable(quant, out_features, in_features) => {
                LinearWeight::Quant(QuantTensor::quantize(ctx, scheme, weight, &shape)?)
            }
            (Quant::F16, _) => LinearWeight::Dense(Tensor::from_f32_as_f16(ctx, &shape, weight)?),
            _ => LinearWeight::Dense(Tensor::from_f32(ctx, &shape, weight)?),
        };
        let bias = bias.map(|b| Tensor::from_f32(ctx, &[b.len()], b)).transpose()?;
        Linear::new(weight, bias)
    }

    /// A layer from uploaded parts; the bias (f32) must have `out_features` values. A dense
    /// weight moves into a texture (a GPU-side copy) where the device reads textures faster;
    /// a tensor the caller still holds (e.g. an embedding table shared with a tied head) keeps
    /// its buffer too.
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Result<Linear> {
        let weight = match weight {
            LinearWeight::Dense(t) if t.context().caps().texture_weights => match DenseTexture::from_tensor(&t) {
                Some(tex) => LinearWeight::Texture(tex),
                None => LinearWeight::Dense(t),
            },
            w => w,
        };
        let shape = weight.shape();
        if shape.len() != 2 {
            return Err(KestrelError::Shape { op: "linear", detail: format!("weight {shape:?} is not [out, in]") });
        }
        if let Some(b) = &bias
            && b.numel() != shape[0]
        {
            return Err(KestrelError::Shape { op: "linear", detail: format!("bias {:?} does not match weight {shape:?}", b.shape()) });
        }
        Ok(Linear { weight, bias })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The weight.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Records `x·Wᵀ + b` for f32 `x` `[…, in_features]`, giving f32 `[…, out_features]`.
    /// One row goes to the GEMV kernels, more rows to the tiled matmul.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => matmul(rec, x, w, &self.dense_options()),
            LinearWeight::Texture(w) => matmul(rec, x, w, &self.dense_options()),
            LinearWeight::Quant(q) => qmatmul(rec, x, q, self.bias.as_ref()),
        }
    }

    /// Records `GELU(x·Wᵀ + b)` (erf GELU, PyTorch's `nn.GELU()`): fused into the matmul's
    /// store for dense weights, a separate activation after quantised ones.
    pub fn forward_gelu(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => matmul_gelu(rec, x, w, &self.dense_options()),
            LinearWeight::Texture(w) => matmul_gelu(rec, x, w, &self.dense_options()),
            LinearWeight::Quant(q) => {
                let y = qmatmul(rec, x, q, self.bias.as_ref())?;
                unary(rec, &y, Unary::GeluErf)
            }
        }
    }

    /// Records `residual + x·Wᵀ + b` (a residual connection), `residual` f32
    /// `[…, out_features]` not sharing a buffer with `x`. Dense weights, and quantised ones
    /// for a single row, accumulate into `residual`'s buffer in place and return it: other
    /// clones of `residual` see the sum. Quantised weights over several rows add in a separate
    /// pass and return a new tensor.
    pub fn forward_residual(&self, rec: &mut Recorder, x: &Tensor, residual: Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => {
                matmul_accumulate(rec, x, w, &self.dense_options(), &residual)?;
                Ok(residual)
            }
            LinearWeight::Texture(w) => {
                matmul_accumulate(rec, x, w, &self.dense_options(), &residual)?;
                Ok(residual)
            }
            LinearWeight::Quant(q) if x.numel() == q.shape()[1] => {
                qgemv_accumulate(rec, x, q, self.bias.as_ref(), GemvVariant::Auto, &residual)?;
                Ok(residual)
            }
            LinearWeight::Quant(q) => {
                let y = qmatmul(rec, x, q, self.bias.as_ref())?;
                add(rec, &residual, &y)
            }
        }
    }

    fn dense_options(&self) -> MatmulOptions<'_> {
        MatmulOptions { bias: self.bias.as_ref(), transpose_b: true }
    }
}

//! Eve's `ldpnet` projector (MobileVLM's Lightweight Downsample Projector) on the GPU.
//!
//! `mlp.1` (C → H), GELU (erf), `mlp.3` (H → H) over the patch tokens; the tokens as an h × h map
//! (token `r·h + c` at row `r`, column `c`); then two torchvision MobileNetV3 inverted residuals
//! with expand ratio 1 (`mb_block.1` stride 1 with its residual, `mb_block.2` stride 2 without):
//! `block.0` depthwise 3 × 3 conv (padding 1, no bias) + LayerNorm over channels (eps 1e-5) +
//! Hardswish; `block.1` squeeze-excite (mean over the map, `fc1` H → S with bias, ReLU, `fc2`,
//! Hardsigmoid, times the map); `block.2` pointwise conv (no bias) + LayerNorm. Out: ⌈h/2⌉²
//! tokens × H in the same row-major order (24 × 24 → 144 for ViT-L/14-336).
//!
//! The map is kept as token rows `[h·w, H]` (NHWC) — where the norms, the pointwise conv and
//! the squeeze-excite work — and permuted to NCHW only for the depthwise conv, whose
//! `conv2d_tokens` output is token rows again.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::conv2d::{Conv2dOptions, conv2d_tokens};
use kestrel::ops::elementwise::{Unary, add, mul, unary};
use kestrel::ops::layout::permute;
use kestrel::ops::norm::layer_norm;
use kestrel::ops::reduce::mean_tokens;
use kestrel::{Context, Recorder, Tensor};

use crate::error::{ModelError, Result};
use crate::params::ParamSource;

/// LayerNorm eps of the LDP's LayerNorm2d (timm's default).
const LN_EPS: f32 = 1e-5;

/// Squeeze-excite width of `channels`: torchvision's `_make_divisible(channels // 4, 8)`.
pub fn squeeze_channels(channels: usize) -> usize {
    let v = channels / 4;
    let rounded = ((v + 4) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v as f64 { rounded + 8 } else { rounded }
}

/// A LayerNorm's weight and bias, `[H]` each.
struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    fn load(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, h: usize) -> Result<Norm> {
        let gamma = Tensor::from_f32(ctx, &[h], &p.f32(&format!("{prefix}.weight"), &[h])?)?;
        let beta = Tensor::from_f32(ctx, &[h], &p.f32(&format!("{prefix}.bias"), &[h])?)?;
        Ok(Norm { gamma, beta })
    }

    fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(rec, x, Some(&self.gamma), Some(&self.beta), LN_EPS)?)
    }
}

/// One inverted residual (expand ratio 1, squeeze-excite, Hardswish).
struct Block {
    stride: usize,
    /// Depthwise weight `[H, 1, 3, 3]`.
    depthwise: Tensor,
    norm1: Norm,
    fc1: Linear,
    fc2: Linear,
    pointwise: Linear,
    norm2: Norm,
}

impl Block {
    fn load(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, h: usize, stride: usize, quant: Quant) -> Result<Block> {
        let s = squeeze_channels(h);
        let dw_shape = [h, 1, 3, 3];
        let conv1x1 = |name: &str, out: usize, inp: usize, bias: bool, quant: Quant| -> Result<Linear> {
            let w = p.f32(&format!("{prefix}{name}.weight"), &[out, inp, 1, 1])?;
            let b = if bias { Some(p.f32(&format!("{prefix}{name}.bias"), &[out])?) } else { None };
            Ok(Linear::from_f32(ctx, &w, b.as_deref(), out, inp, quant)?)
        };
        Ok(Block {
            stride,
            depthwise: Tensor::from_f32(ctx, &dw_shape, &p.f32(&format!("{prefix}block.0.0.weight"), &dw_shape)?)?,
            norm1: Norm::load(ctx, p, &format!("{prefix}block.0.1"), h)?,
            // The squeeze-excite runs on one row: f32 (quantising it saves nothing).
            fc1: conv1x1("block.1.fc1", s, h, true, Quant::F32)?,
            fc2: conv1x1("block.1.fc2", h, s, true, Quant::F32)?,
            pointwise: conv1x1("block.2.0", h, h, false, quant)?,
            norm2: Norm::load(ctx, p, &format!("{prefix}block.2.1"), h)?,
        })
    }

    /// `x`: token rows `[side², H]` of a side × side map; returns `[out_side², H]` and `out_side`.
    fn forward(&self, rec: &mut Recorder, x: &Tensor, side: usize) -> Result<(Tensor, usize)> {
        let h = x.shape()[1];
        let nchw = permute(rec, &x.reshape(&[1, side, side, h])?, &[0, 3, 1, 2])?;
        let opts = Conv2dOptions { stride: (self.stride, self.stride), padding: (1, 1), groups: h };
        let y = conv2d_tokens(rec, &nchw, &self.depthwise, None, &opts)?;
        let out_side = (side + 2 - 3) / self.stride + 1;
        let y = self.norm1.forward(rec, &y)?;
        let y = unary(rec, &y, Unary::Hardswish)?;
        let pooled = mean_tokens(rec, &y.reshape(&[1, out_side * out_side, h])?)?;
        let s = self.fc1.forward(rec, &pooled)?;
        let s = unary(rec, &s, Unary::Relu)?;
        let s = self.fc2.forward(rec, &s)?;
        let s = unary(rec, &s, Unary::Hardsigmoid)?;
        let y = mul(rec, &y, &s)?;
        let y = self.pointwise.forward(rec, &y)?;
        let y = self.norm2.forward(rec, &y)?;
        let y = if self.stride == 1 { add(rec, &y, x)? } else { y };
        Ok((y, out_side))
    }
}

/// The projector on the GPU.
pub struct Ldp {
    mm_hidden: usize,
    hidden: usize,
    fc1: Linear,
    fc2: Linear,
    blocks: [Block; 2],
}

impl Ldp {
    /// Uploads the projector from `p` (names below `model.mm_projector.image_spatial_proj.model.`:
    /// `mlp.{1,3}`, `mb_block.{1,2}.block.*`) for `mm_hidden` input and `hidden` output channels;
    /// the linears and pointwise convs stored as `quant` asks.
    pub fn load(ctx: &Arc<Context>, p: &dyn ParamSource, mm_hidden: usize, hidden: usize, quant: Quant) -> Result<Ldp> {
        let fc1 = p.linear(ctx, "mlp.1", hidden, mm_hidden, quant)?;
        let fc2 = p.linear(ctx, "mlp.3", hidden, hidden, quant)?;
        let blocks = [Block::load(ctx, p, "mb_block.1.", hidden, 1, quant)?, Block::load(ctx, p, "mb_block.2.", hidden, 2, quant)?];
        Ok(Ldp { mm_hidden, hidden, fc1, fc2, blocks })
    }

    /// Tokens out for `tokens` in: ⌈h/2⌉² for an h × h map.
    pub fn output_tokens(tokens: usize) -> usize {
        let side = tokens.isqrt();
        side.div_ceil(2).pow(2)
    }

    /// Records the projection of one image's patch features `[N, C]` (N a square): `[⌈√N/2⌉², H]`.
    pub fn forward(&self, rec: &mut Recorder, features: &Tensor) -> Result<Tensor> {
        let side = match *features.shape() {
            [n, c] if c == self.mm_hidden && n > 0 && n.isqrt().pow(2) == n => n.isqrt(),
            _ => {
                return Err(ModelError::Input(format!(
                    "projector input of shape {:?}; it takes [side², {}] patch features",
                    features.shape(),
                    self.mm_hidden
                )));
            }
        };
        let x = self.fc1.forward_gelu(rec, features)?;
        let mut x = self.fc2.forward(rec, &x)?;
        let mut side = side;
        for block in &self.blocks {
            (x, side) = block.forward(rec, &x, side)?;
        }
        debug_assert_eq!(x.shape(), [side * side, self.hidden]);
        Ok(x)
    }
}

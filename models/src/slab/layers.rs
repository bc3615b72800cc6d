//! Pieces shared by the SLAB families: optional RepBN affines (unfolded graphs only), convs,
//! MLPs and the conversion between NCHW maps and token rows.

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::Linear;
use kestrel::ops::conv2d::{Conv2dOptions, conv2d, conv2d_tokens};
use kestrel::ops::elementwise::add;
use kestrel::ops::layout::permute;
use kestrel::ops::norm::channel_affine;
use kestrel::{Context, Recorder, Tensor};

use crate::error::Result;
use crate::params::ParamSource;

/// A RepBN that was not folded (present only in [`FoldMode::Keep`](super::fold::FoldMode)
/// parameters): `y = scale·x + shift` per channel.
pub struct Affine {
    scale: Tensor,
    shift: Tensor,
}

impl Affine {
    /// Loads `{norm}.scale` / `{norm}.shift` when the parameters kept them, else `None`.
    pub fn load(ctx: &Arc<Context>, p: &dyn ParamSource, norm: &str, channels: usize) -> Result<Option<Affine>> {
        let scale_name = format!("{norm}.scale");
        if !p.has(&scale_name) {
            return Ok(None);
        }
        let scale = Tensor::from_f32(ctx, &[channels], &p.f32(&scale_name, &[channels])?)?;
        let shift = Tensor::from_f32(ctx, &[channels], &p.f32(&format!("{norm}.shift"), &[channels])?)?;
        Ok(Some(Affine { scale, shift }))
    }
}

/// Applies an optional affine over the last dimension.
pub fn maybe_affine(rec: &mut Recorder, a: &Option<Affine>, x: Tensor) -> Result<Tensor> {
    match a {
        Some(a) => Ok(channel_affine(rec, &x, &a.scale, &a.shift)?),
        None => Ok(x),
    }
}

/// A 2-D convolution with bias; f16 storage under [`Quant::F16`], f32 otherwise (convs
/// are a small share of the weights, so they are not block-quantised).
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    opts: Conv2dOptions,
}

impl Conv {
    /// Loads `{prefix}.weight` (`wshape` = `[Cout, Cin/groups, kh, kw]`) and `{prefix}.bias`.
    pub fn load(
        ctx: &Arc<Context>,
        p: &dyn ParamSource,
        prefix: &str,
        wshape: [usize; 4],
        opts: Conv2dOptions,
        quant: Quant,
    ) -> Result<Conv> {
        let w = p.f32(&format!("{prefix}.weight"), &wshape)?;
        let b = p.f32(&format!("{prefix}.bias"), &[wshape[0]])?;
        let dtype = if quant == Quant::F16 { kestrel::DType::F16 } else { kestrel::DType::F32 };
        Ok(Conv { weight: Tensor::from_f32_as(ctx, &wshape, &w, dtype)?, bias: Tensor::from_f32_as(ctx, &[wshape[0]], &b, dtype)?, opts })
    }

    /// `[1, Cin, H, W]` → `[1, Cout, H', W']`.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d(rec, x, &self.weight, Some(&self.bias), &self.opts)?)
    }

    /// `[1, Cin, H, W]` → token rows `[H'·W', Cout]`, row-major over H', then W' (the
    /// transposed output of [`forward`](Self::forward); no transpose at all on CPU adapters).
    pub fn forward_tokens(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d_tokens(rec, x, &self.weight, Some(&self.bias), &self.opts)?)
    }
}

/// Token rows `[H·W, C]` → `[1, C, H, W]`.
pub fn tokens_to_map(rec: &mut Recorder, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let c = x.shape()[1];
    let t = x.reshape(&[1, h, w, c])?;
    Ok(permute(rec, &t, &[0, 3, 1, 2])?)
}

/// The transformer MLP `fc2(GELU(fc1(x)))` (GELU with erf, as `nn.GELU`).
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Loads `{prefix}.fc1` (`dim → hidden`) and `{prefix}.fc2` (`hidden → dim`).
    pub fn load(ctx: &Arc<Context>, p: &dyn ParamSource, prefix: &str, dim: usize, hidden: usize, quant: Quant) -> Result<Mlp> {
        Ok(Mlp {
            fc1: p.linear(ctx, &format!("{prefix}.fc1"), hidden, dim, quant)?,
            fc2: p.linear(ctx, &format!("{prefix}.fc2"), dim, hidden, quant)?,
        })
    }

    /// `residual + mlp(x)` for `x` `[N, dim]` and `residual` `[N, dim]`, GELU fused into fc1
    /// and the sum into fc2 (see [`Linear::forward_residual`]: dense weights accumulate into
    /// `residual`'s buffer).
    pub fn forward_residual(&self, rec: &mut Recorder, x: &Tensor, residual: Tensor) -> Result<Tensor> {
        let h = self.fc1.forward_gelu(rec, x)?;
        Ok(self.fc2.forward_residual(rec, &h, residual)?)
    }
}

/// `x + y`.
pub fn residual(rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(add(rec, x, y)?)
}

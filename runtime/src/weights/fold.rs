//! Load-time graph passes that fold normalisation affines into neighbouring linear layers.
//!
//! In inference a BatchNorm is the per-channel affine `y = a·x + c` with `a = γ/√(σ²+ε)` and
//! `c = β − γ·μ/√(σ²+ε)`. RepBN (`BN(x) + α·x`, α a scalar) is the same affine with `a` raised by
//! α. LayerNorm/RMSNorm's own affine (γ, β after the normalisation) is `a = γ`, `c = β`. Such an
//! affine disappears into a neighbouring layer:
//! - into the **preceding** conv or linear (`y = BN(W x + b)`): `W'_o = a_o·W_o`,
//!   `b'_o = a_o·b_o + c_o`;
//! - into the **following** linear (`y = W·BN(x) + b`): `W' = W·diag(a)`, `b' = b + W·c`;
//! - into a classifier head after mean pooling (`y = W·mean(BN(x)) + b`): as the following
//!   linear, because a mean over positions commutes with a per-channel affine.
//!
//! All arithmetic is done in f64 from the stored f32 values; only the results are rounded to f32.

use crate::error::{KestrelError, Result};
use crate::weights::{WeightSource, bad, tensor_f32};

/// A per-channel affine `y_i = scale_i · x_i + shift_i` in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAffine {
    /// Multiplier per channel (`a`).
    pub scale: Vec<f64>,
    /// Offset per channel (`c`).
    pub shift: Vec<f64>,
}

impl ChannelAffine {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// The affine of a LayerNorm/RMSNorm's elementwise weight `gamma` and optional bias `beta`
    /// (the normalisation itself stays; only its affine is folded into the next linear).
    pub fn from_norm(gamma: &[f32], beta: Option<&[f32]>) -> Result<ChannelAffine> {
        if let Some(b) = beta {
            same_len("norm affine", "beta", b.len(), gamma.len())?;
        }
        let scale = gamma.iter().map(|&g| f64::from(g)).collect();
        let shift = match beta {
            Some(b) => b.iter().map(|&v| f64::from(v)).collect(),
            None => vec![0.0; gamma.len()],
        };
        Ok(ChannelAffine { scale, shift })
    }
}

/// Inference-mode BatchNorm parameters (running statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// Weight γ (all ones when the BN has no affine).
    pub gamma: Vec<f32>,
    /// Bias β (all zeros when the BN has no affine).
    pub beta: Vec<f32>,
    /// Running mean μ.
    pub mean: Vec<f32>,
    /// Running variance σ².
    pub var: Vec<f32>,
    /// ε added to the variance.
    pub eps: f64,
}

impl BatchNorm {
    /// Reads `{prefix}.running_mean` / `.running_var` and, when present, `.weight` / `.bias`
    /// (absent for `affine=False`: γ = 1, β = 0) from a PyTorch-style state dict.
    pub fn from_source(src: &dyn WeightSource, prefix: &str, eps: f64) -> Result<BatchNorm> {
        let get = |name: &str| tensor_f32(src, &format!("{prefix}.{name}"));
        let mean = get("running_mean")?;
        let var = get("running_var")?;
        let optional = |name: &str, fill: f32| {
            if src.info(&format!("{prefix}.{name}")).is_some() { get(name) } else { Ok(vec![fill; mean.len()]) }
        };
        let bn = BatchNorm { gamma: optional("weight", 1.0)?, beta: optional("bias", 0.0)?, mean, var, eps };
        if [bn.gamma.len(), bn.beta.len(), bn.var.len()].iter().any(|&n| n != bn.mean.len()) {
            return Err(bad(src.path(), Some(&format!("{prefix}.running_var")), "batch-norm parameters differ in length"));
        }
        Ok(bn)
    }

    /// The equivalent per-channel affine of plain BN (`a = γ/√(σ²+ε)`, `c = β − γ·μ/√(σ²+ε)`).
    pub fn affine(&self) -> Result<ChannelAffine> {
        self.rep_affine(0.0)
    }

    /// The affine of RepBN, `BN(x) + α·x`: `a = γ/√(σ²+ε) + α`, `c = β − γ·μ/√(σ²+ε)`.
    pub fn rep_affine(&self, alpha: f64) -> Result<ChannelAffine> {
        let n = self.gamma.len();
        same_len("batch norm", "beta", self.beta.len(), n)?;
        same_len("batch norm", "running mean", self.mean.len(), n)?;
        same_len("batch norm", "running var", self.var.len(), n)?;
        let mut scale = Vec::with_capacity(n);
        let mut shift = Vec::with_capacity(n);
        for i in 0..n {
            let denom = f64::from(self.var[i]) + self.eps;
            if !(denom > 0.0 && denom.is_finite()) {
                return Err(KestrelError::InvalidArgument {
                    op: "batch norm",
                    detail: format!("channel {i}: var + eps = {denom} is not a positive finite number"),
                });
            }
            let inv = f64::from(self.gamma[i]) / denom.sqrt();
            scale.push(inv + alpha);
            shift.push(f64::from(self.beta[i]) - inv * f64::from(self.mean[i]));
        }
        Ok(ChannelAffine { scale, shift })
    }
}

/// A linear (or conv) layer's folded parameters, rounded to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    /// Weight, same layout as the input weight.
    pub weight: Vec<f32>,
    /// Bias, one per output channel (created when the layer had none).
    pub bias: Vec<f32>,
}

/// Checks a length.
fn same_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want { Ok(()) } else { Err(KestrelError::Shape { op, detail: format!("{what} has {got} values, expected {want}") }) }
}

/// Folds `affine` applied to the OUTPUT of a conv or linear layer into it.
///
/// `weight` is laid out output channel first (`[O, …]`: conv `[O, I/g, kh, kw]`, linear
/// `[O, I]`); `bias` has `O` values or is absent (zero). Returns `W'_o = a_o·W_o`,
/// `b'_o = a_o·b_o + c_o`.
pub fn fold_into_preceding(affine: &ChannelAffine, weight: &[f32], bias: Option<&[f32]>) -> Result<Folded> {
    let out = affine.channels();
    if out == 0 || !weight.len().is_multiple_of(out) {
        return Err(KestrelError::Shape {
            op: "fold_into_preceding",
            detail: format!("weight of {} values is not [{out}, …]", weight.len()),
        });
    }
    if let Some(b) = bias {
        same_len("fold_into_preceding", "bias", b.len(), out)?;
    }
    let per = weight.len() / out;
    let weight =
        weight.chunks_exact(per).zip(&affine.scale).flat_map(|(row, &a)| row.iter().map(move |&w| (a * f64::from(w)) as f32)).collect();
    let bias = (0..out).map(|o| (affine.scale[o] * bias.map_or(0.0, |b| f64::from(b[o])) + affine.shift[o]) as f32).collect();
    Ok(Folded { weight, bias })
}

/// Folds `affine` applied to the INPUT of a linear layer into it.
///
/// `weight` is `[out_features, in_features]` row-major with `in_features = channels · inner`:
/// input feature `i` belongs to channel `i / inner` (so `inner = 1` for a plain feature vector,
/// and `inner = H·W` for a linear after flattening an NCHW map). `bias` has `out_features`
/// values or is absent. Returns `W' = W·diag(a)`, `b' = b + W·c` (accumulated in f64).
pub fn fold_into_following_linear(affine: &ChannelAffine, weight: &[f32], bias: Option<&[f32]>, out_features: usize) -> Result<Folded> {
    let op = "fold_into_following_linear";
    let ch = affine.channels();
    if out_features == 0 || !weight.len().is_multiple_of(out_features) {
        return Err(KestrelError::Shape { op, detail: format!("weight of {} values is not [{out_features}, in_features]", weight.len()) });
    }
    let inf = weight.len() / out_features;
    if ch == 0 || !inf.is_multiple_of(ch) {
        return Err(KestrelError::Shape { op, detail: format!("in_features {inf} is not a multiple of the {ch} normalised channels") });
    }
    if let Some(b) = bias {
        same_len(op, "bias", b.len(), out_features)?;
    }
    let inner = inf / ch;
    let mut w2 = Vec::with_capacity(weight.len());
    let mut b2 = Vec::with_capacity(out_features);
    for (o, row) in weight.chunks_exact(inf).enumerate() {
        let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
        for (i, &w) in row.iter().enumerate() {
            let c = i / inner;
            let w = f64::from(w);
            w2.push((w * affine.scale[c]) as f32);
            acc += w * affine.shift[c];
        }
        b2.push(acc as f32);
    }
    Ok(Folded { weight: w2, bias: b2 })
}

/// Folds `affine`, applied to a `[C, positions]` map that is then mean-pooled, into the
/// classifier head `[out_features, C]` after the pooling. Mean pooling commutes with a
/// per-channel affine, so this is [`fold_into_following_linear`] with one feature per channel.
pub fn fold_into_pooled_head(affine: &ChannelAffine, weight: &[f32], bias: Option<&[f32]>, out_features: usize) -> Result<Folded> {
    let ch = affine.channels();
    if out_features == 0 || out_features.checked_mul(ch) != Some(weight.len()) {
        return Err(KestrelError::Shape {
            op: "fold_into_pooled_head",
            detail: format!("head weight of {} values is not [{out_features}, {ch}]", weight.len()),
        });
    }
    fold_into_following_linear(affine, weight, bias, out_features)
}

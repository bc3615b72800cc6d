//! A decoder's weights on the GPU, loaded from a GGUF file, a Hugging Face checkpoint or a
//! Kestrel model file, stored as [`Quant`] says.
//!
//! - Linears become [`Linear`]s: natively quantised (GGUF Q4_0/Q4_1/Q8_0, Kestrel-packed w8/w4),
//!   f16, f32 or re-quantised to w8/w4.
//! - The embedding table is dense (the gather kernel reads f32/f16 rows): f16, or f32 with
//!   `--quant f32` or when it is stored f32 and kept native. A tied head keeps the stored
//!   (possibly quantised) copy for its matmul and shares the table otherwise.
//! - SLAB's PRepBN norms ([`NormKind::RepBn`]) are folded into the q/k/v and gate/up(/gate2)
//!   linears (which then carry biases) and the final one into the head as a bias, computed in
//!   f64 ([`kestrel::weights::fold`]); [`LoadOptions::fold_repbn`] = false keeps them as a
//!   separate per-channel affine op instead (the graph the fold is checked against).

mod names;
mod repbn;
mod store;

use std::sync::Arc;

use kestrel::Quant;
use kestrel::nn::{Linear, LinearWeight};
use kestrel::ops::attention::RopeLayout;
use kestrel::ops::norm::{channel_affine, rms_norm};
use kestrel::weights::WeightDType;
use kestrel::weights::fold::{ChannelAffine, fold_into_following_linear};
use kestrel::{Context, DType, KestrelError, Recorder, Tensor};

pub use names::{FfnSite, Naming, Part, moe_coefficient, moe_router};
pub use store::Store;

use super::config::{LlmConfig, MlpKind, NormKind};
use crate::error::{ModelError, Result};

/// Loading options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Weight storage.
    pub quant: Quant,
    /// Fold PRepBN norms into the neighbouring linears (true, the inference graph) or run them
    /// as a separate per-channel affine op (false).
    pub fold_repbn: bool,
    /// Stack q/k/v and gate/up into one linear each ([`Stacked::Fused`]: one GEMV instead of
    /// three or two per layer) where their stored forms allow; false keeps them separate.
    pub fuse_projections: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { quant: Quant::Native, fold_repbn: true, fuse_projections: true }
    }
}

/// Linears that read the same input.
#[derive(Clone, Debug)]
pub enum Stacked {
    /// One linear whose weight stacks the parts' rows: its output holds the parts' outputs side
    /// by side, in the order the field's documentation gives.
    Fused(Linear),
    /// The parts, in that order.
    Separate(Vec<Linear>),
}

impl Stacked {
    /// The linears (one when fused).
    pub fn linears(&self) -> &[Linear] {
        match self {
            Stacked::Fused(l) => std::slice::from_ref(l),
            Stacked::Separate(parts) => parts,
        }
    }
}

/// A norm of the decoder.
#[derive(Clone, Debug)]
pub enum Norm {
    /// RMSNorm with this weight (`[d]` f32).
    Rms(Tensor),
    /// A per-channel affine `x·scale + shift` (an unfolded PRepBN).
    Affine {
        /// `[d]` f32.
        scale: Tensor,
        /// `[d]` f32.
        shift: Tensor,
    },
    /// Nothing left to do (a PRepBN folded into the following linears).
    Identity,
}

impl Norm {
    /// Records the norm of `x` (`[…, d]` f32); `eps` is the RMSNorm eps.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(match self {
            Norm::Rms(gamma) => rms_norm(rec, x, Some(gamma), eps)?,
            Norm::Affine { scale, shift } => channel_affine(rec, x, scale, shift)?,
            Norm::Identity => x.clone(),
        })
    }
}

/// One decoder layer's weights.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// Norm before attention.
    pub attn_norm: Norm,
    /// Query, key and value projections: q `[heads·head_dim, d]`, k and v
    /// `[kv_heads·head_dim, d]`.
    pub qkv: Stacked,
    /// Output projection `[d, heads·head_dim]`.
    pub o: Linear,
    /// PanGu-π's augmented shortcut (W1 `[r, d]`, W2 `[d, r]`).
    pub aug: Option<(Linear, Linear)>,
    /// Norm before the MLP.
    pub ffn_norm: Norm,
    /// Gate and up, `[ffn, d]` each (never fused with a second gate).
    pub gate_up: Stacked,
    /// PanGu-π's second gate `[ffn, d]` ([`MlpKind::PanguVanilla`]).
    pub gate2: Option<Linear>,
    /// Down `[d, ffn]`.
    pub down: Linear,
    /// An EVF layer's mixture of experts; the fields above are then its residual FFN.
    pub moe: Option<MoeWeights>,
}

/// One FFN of a mixture of experts (the layer's kind: SwiGLU, or PanGu-π's with a second gate).
#[derive(Clone, Debug)]
pub struct ExpertWeights {
    /// Gate and up, `[ffn, d]` each.
    pub gate_up: Stacked,
    /// The second gate `[ffn, d]` of [`MlpKind::PanguVanilla`].
    pub gate2: Option<Linear>,
    /// Down `[d, ffn]`, without a bias.
    pub down: Linear,
}

/// A residual mixture of experts with top-1 routing (see [`super::config::MoeConfig`]).
#[derive(Clone, Debug)]
pub struct MoeWeights {
    /// Router `[experts, d]`, f32 whatever the quantisation (routing is computed in f32).
    pub router: Linear,
    /// Mixing coefficients `[2, d]` with a bias, f32.
    pub coefficient: Linear,
    /// The experts.
    pub experts: Vec<ExpertWeights>,
}

/// A whole decoder's weights.
#[derive(Clone, Debug)]
pub struct DecoderWeights {
    /// Embedding table `[vocab, d]`, f32 or f16.
    pub embed: Tensor,
    /// The layers.
    pub layers: Vec<LayerWeights>,
    /// Norm before the head.
    pub final_norm: Norm,
    /// Head `[vocab, d]`.
    pub head: Linear,
    /// How Q/K dims pair up for RoPE in this checkpoint.
    pub rope_layout: RopeLayout,
}

impl DecoderWeights {
    /// Bytes of every linear weight (and bias): what one decode step reads.
    pub fn linear_bytes(&self) -> u64 {
        let lin = |l: &Linear| l.weight().byte_size() + l.bias().map_or(0, Tensor::byte_size);
        let expert = |e: &ExpertWeights| e.gate_up.linears().iter().chain([&e.down]).chain(&e.gate2).map(lin).sum::<u64>();
        let moe = |m: &MoeWeights| lin(&m.router) + lin(&m.coefficient) + m.experts.iter().map(expert).sum::<u64>();
        let layer = |w: &LayerWeights| {
            w.qkv.linears().iter().chain(w.gate_up.linears()).chain([&w.o, &w.down]).map(lin).sum::<u64>()
                + w.gate2.as_ref().map_or(0, lin)
                + w.aug.as_ref().map_or(0, |(a, b)| lin(a) + lin(b))
                + w.moe.as_ref().map_or(0, moe)
        };
        self.layers.iter().map(layer).sum::<u64>() + lin(&self.head)
    }
}

/// Sets what the checkpoint's tensor names say about the architecture: q/k/v, o and MLP
/// biases, PanGu-π's second gate and augmented shortcut (read from the first augmented layer
/// where the config has a [`LlmConfig::pangu_split`]), PRepBN norms, tied embeddings (no head
/// tensor) and the vocabulary (rows of the embedding table).
pub fn refine_config(config: &mut LlmConfig, store: &Store, naming: Naming) -> Result<()> {
    let name = |layer: usize, part: Part| naming.layer_in(layer, part, |n| store.has(n));
    let has = |part: Part, suffix: &str| store.has(&format!("{}.{suffix}", name(0, part)));
    config.qkv_bias = has(Part::Q, "bias");
    config.o_bias = has(Part::O, "bias");
    let site = if config.is_moe_layer(0) { FfnSite::Residual } else { FfnSite::Plain };
    config.mlp_bias = store.has(&format!("{}.bias", site.place(&name(0, Part::Gate))));
    if config.pangu_split.is_none() {
        config.mlp = if has(Part::Gate2, "weight") { MlpKind::PanguVanilla } else { MlpKind::SwiGlu };
    }
    let aug_layer = config.pangu_split.unwrap_or(0);
    config.aug_shortcut = store.shape(&format!("{}.weight", name(aug_layer, Part::AugFc1))).and_then(|s| s.first().copied());
    config.norm = if repbn::is_prepbn(store, &naming.layer(0, Part::AttnNorm)) { NormKind::RepBn } else { NormKind::RmsNorm };
    config.tie_embeddings = !store.has(naming.head());
    match store.shape(naming.embed()).as_deref() {
        Some(&[vocab, d]) if d == config.hidden => config.vocab = vocab,
        Some(s) => return Err(store.error(format!("`{}` has shape {s:?}, expected [vocab, {}]", naming.embed(), config.hidden))),
        None => return Err(store.error(format!("missing tensor `{}`", naming.embed()))),
    }
    config.validate()
}

/// Loads every weight of `config` from `store`, calling `progress(done, total)` after each
/// layer (and for the embedding and the head).
pub fn load_weights(
    ctx: &Arc<Context>,
    store: &Store,
    config: &LlmConfig,
    naming: Naming,
    rope_layout: RopeLayout,
    opts: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DecoderWeights> {
    let total = config.layers + 2;
    progress(0, total);
    let loader = Loader { ctx, store, config, naming, opts };
    let embed = loader.embedding()?;
    progress(1, total);
    let mut layers = Vec::with_capacity(config.layers);
    for i in 0..config.layers {
        layers.push(loader.layer(i)?);
        progress(i + 2, total);
    }
    let (final_norm, head) = loader.head(&embed)?;
    progress(total, total);
    Ok(DecoderWeights { embed, layers, final_norm, head, rope_layout })
}

/// Shared state of one load.
struct Loader<'a> {
    ctx: &'a Arc<Context>,
    store: &'a Store,
    config: &'a LlmConfig,
    naming: Naming,
    opts: &'a LoadOptions,
}

/// A norm as loaded: kept as an op, or an affine to fold into the following linears.
enum LoadedNorm {
    /// Run as an op.
    Op(Norm),
    /// Fold this affine into the following linears (the op is [`Norm::Identity`]).
    Fold(ChannelAffine),
}

impl LoadedNorm {
    /// The op and the affine to fold, if any.
    fn split(self) -> (Norm, Option<ChannelAffine>) {
        match self {
            LoadedNorm::Op(n) => (n, None),
            LoadedNorm::Fold(a) => (Norm::Identity, Some(a)),
        }
    }
}

impl Loader<'_> {
    /// The embedding table: f32 with `--quant f32` or when stored f32 and kept native, else f16.
    fn embedding(&self) -> Result<Tensor> {
        let c = self.config;
        let name = self.naming.embed();
        let stored_f32 = self.store.source().info(name).is_some_and(|t| t.dtype == WeightDType::F32);
        let dtype = match self.opts.quant {
            Quant::F32 => DType::F32,
            Quant::Native if stored_f32 => DType::F32,
            _ => DType::F16,
        };
        self.store.dense(self.ctx, name, &[c.vocab, c.hidden], dtype)
    }

    /// A norm over `d` channels at `prefix`.
    fn norm(&self, prefix: &str) -> Result<LoadedNorm> {
        let d = self.config.hidden;
        match self.config.norm {
            NormKind::RmsNorm => {
                let gamma = self.store.f32(&format!("{prefix}.weight"), &[d])?;
                Ok(LoadedNorm::Op(Norm::Rms(Tensor::from_f32(self.ctx, &[d], &gamma)?)))
            }
            NormKind::RepBn => {
                let affine = repbn::read_prepbn(self.store, prefix, d, self.config.norm_eps)?;
                if self.opts.fold_repbn {
                    return Ok(LoadedNorm::Fold(affine));
                }
                let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                Ok(LoadedNorm::Op(Norm::Affine {
                    scale: Tensor::from_f32(self.ctx, &[d], &f(&affine.scale))?,
                    shift: Tensor::from_f32(self.ctx, &[d], &f(&affine.shift))?,
                }))
            }
        }
    }

    /// The linear at `prefix` (`.weight` of `[out, inp]`, `.bias` when `bias`), with `pre`
    /// (an affine applied to its input) folded in.
    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool, pre: Option<&ChannelAffine>) -> Result<Linear> {
        let w_name = format!("{prefix}.weight");
        match (self.opts.quant, pre) {
            (Quant::Native, None) => {
                let weight = self.store.native_weight(self.ctx, &w_name, &[out, inp])?;
                let bias = self.bias(prefix, out, bias)?.map(|b| Tensor::from_f32(self.ctx, &[out], &b)).transpose()?;
                Ok(Linear::new(weight, bias)?)
            }
            (quant, _) => {
                let (w, b) = self.host_linear(prefix, out, inp, bias, pre)?;
                Ok(Linear::from_f32(self.ctx, &w, b.as_deref(), out, inp, quant)?)
            }
        }
    }

    /// The bias `[out]` at `prefix` when `bias`.
    fn bias(&self, prefix: &str, out: usize, bias: bool) -> Result<Option<Vec<f32>>> {
        bias.then(|| self.store.f32(&format!("{prefix}.bias"), &[out])).transpose()
    }

    /// The linear at `prefix` as host f32 weight and bias, with `pre` folded in (which gives it
    /// a bias).
    fn host_linear(
        &self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        pre: Option<&ChannelAffine>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let w_name = format!("{prefix}.weight");
        let w = self.store.f32(&w_name, &[out, inp])?;
        let b = self.bias(prefix, out, bias)?;
        match pre {
            None => Ok((w, b)),
            Some(affine) => {
                let folded = fold_into_following_linear(affine, &w, b.as_deref(), out)
                    .map_err(|e| self.store.error(format!("folding into `{w_name}`: {e}")))?;
                Ok((folded.weight, Some(folded.bias)))
            }
        }
    }

    /// The linears at `parts` (prefix, rows), all `[rows, inp]` reading the same input, stacked
    /// into one ([`Stacked::Fused`]) when `fuse` and [`LoadOptions::fuse_projections`] are set
    /// and their stored forms allow, else separate.
    fn stacked(&self, parts: &[(String, usize)], inp: usize, bias: bool, pre: Option<&ChannelAffine>, fuse: bool) -> Result<Stacked> {
        let separate = || {
            parts.iter().map(|(prefix, out)| self.linear(prefix, *out, inp, bias, pre)).collect::<Result<Vec<_>>>().map(Stacked::Separate)
        };
        if !(fuse && self.opts.fuse_projections) {
            return separate();
        }
        match self.fused(parts, inp, bias, pre) {
            Ok(Some(linear)) => Ok(Stacked::Fused(linear)),
            // Stored forms that do not stack, or a stack larger than the device's largest buffer
            // (the parts alone may fit).
            Ok(None) | Err(ModelError::Runtime(KestrelError::BufferTooLarge { .. })) => separate(),
            Err(e) => Err(e),
        }
    }

    /// The one linear stacking `parts` (see [`stacked`](Self::stacked)), or `None` when their
    /// stored forms do not stack natively.
    fn fused(&self, parts: &[(String, usize)], inp: usize, bias: bool, pre: Option<&ChannelAffine>) -> Result<Option<Linear>> {
        let rows = parts.iter().map(|(_, out)| out).sum::<usize>();
        let mut b = bias.then(|| Vec::with_capacity(rows));
        match (self.opts.quant, pre) {
            (Quant::Native, None) => {
                let names: Vec<(String, usize)> = parts.iter().map(|(prefix, out)| (format!("{prefix}.weight"), *out)).collect();
                let Some(weight) = self.store.native_stacked(self.ctx, &names, inp)? else {
                    return Ok(None);
                };
                for (prefix, out) in parts {
                    if let (Some(all), Some(part)) = (b.as_mut(), self.bias(prefix, *out, bias)?) {
                        all.extend(part);
                    }
                }
                let bias = b.map(|b| Tensor::from_f32(self.ctx, &[rows], &b)).transpose()?;
                Ok(Some(Linear::new(weight, bias)?))
            }
            (quant, _) => {
                let mut w = Vec::with_capacity(rows * inp);
                for (prefix, out) in parts {
                    let (pw, pb) = self.host_linear(prefix, *out, inp, bias, pre)?;
                    w.extend(pw);
                    if let Some(pb) = pb {
                        b.get_or_insert_with(|| Vec::with_capacity(rows)).extend(pb);
                    }
                }
                Ok(Some(Linear::from_f32(self.ctx, &w, b.as_deref(), rows, inp, quant)?))
            }
        }
    }

    /// Layer `i`.
    fn layer(&self, i: usize) -> Result<LayerWeights> {
        let c = self.config;
        let n = |p: Part| self.naming.layer_in(i, p, |name| self.store.has(name));
        let (d, q_dim, kv_dim) = (c.hidden, c.q_dim(), c.kv_dim());
        let (attn_norm, pre) = self.norm(&n(Part::AttnNorm))?.split();
        let qkv = self.stacked(&[(n(Part::Q), q_dim), (n(Part::K), kv_dim), (n(Part::V), kv_dim)], d, c.qkv_bias, pre.as_ref(), true)?;
        let o = self.linear(&n(Part::O), d, q_dim, c.o_bias, None)?;
        let aug = match c.layer_aug(i) {
            Some(r) => Some((self.linear(&n(Part::AugFc1), r, d, false, None)?, self.linear(&n(Part::AugFc2), d, r, false, None)?)),
            None => None,
        };
        let (ffn_norm, pre) = self.norm(&n(Part::FfnNorm))?.split();
        let moe = c.is_moe_layer(i);
        let site = if moe { FfnSite::Residual } else { FfnSite::Plain };
        let ExpertWeights { gate_up, gate2, down } = self.ffn(i, site, pre.as_ref())?;
        let moe = if moe { Some(self.moe(i, pre.as_ref())?) } else { None };
        Ok(LayerWeights { attn_norm, qkv, o, aug, ffn_norm, gate_up, gate2, down, moe })
    }

    /// The FFN of layer `i` at `site`, `pre` folded into its input linears.
    fn ffn(&self, i: usize, site: FfnSite, pre: Option<&ChannelAffine>) -> Result<ExpertWeights> {
        let c = self.config;
        let d = c.hidden;
        let n = |p: Part| site.place(&self.naming.layer_in(i, p, |name| self.store.has(&site.place(name))));
        let mlp = c.layer_mlp(i);
        // PanGu-π's MLP needs the gate's output on its own (it adds a second gate's).
        let swiglu = mlp == MlpKind::SwiGlu;
        let gate_up = self.stacked(&[(n(Part::Gate), c.ffn), (n(Part::Up), c.ffn)], d, c.mlp_bias, pre, swiglu)?;
        let gate2 = match mlp {
            MlpKind::PanguVanilla => Some(self.linear(&n(Part::Gate2), c.ffn, d, c.mlp_bias, pre)?),
            MlpKind::SwiGlu => None,
        };
        let down = self.linear(&n(Part::Down), d, c.ffn, c.mlp_bias, None)?;
        Ok(ExpertWeights { gate_up, gate2, down })
    }

    /// The mixture of experts of layer `i` (Hugging Face names only).
    fn moe(&self, i: usize, pre: Option<&ChannelAffine>) -> Result<MoeWeights> {
        let c = self.config;
        let experts = c.moe.as_ref().map_or(0, |m| m.experts);
        if self.naming != Naming::Hf || c.mlp_bias || pre.is_some() {
            return Err(self.store.error("mixture-of-experts layers are read from Hugging Face names, without MLP biases or PRepBN norms"));
        }
        let f32_linear = |prefix: &str, out: usize, bias: bool| -> Result<Linear> {
            let (w, b) = self.host_linear(prefix, out, c.hidden, bias, None)?;
            Ok(Linear::from_f32(self.ctx, &w, b.as_deref(), out, c.hidden, Quant::F32)?)
        };
        let router = f32_linear(&names::moe_router(i), experts, false)?;
        let coefficient = f32_linear(&names::moe_coefficient(i), 2, true)?;
        let experts = (0..experts).map(|e| self.ffn(i, FfnSite::Expert(e), None)).collect::<Result<Vec<_>>>()?;
        Ok(MoeWeights { router, coefficient, experts })
    }

    /// The final norm and the head (the embedding table when tied).
    fn head(&self, embed: &Tensor) -> Result<(Norm, Linear)> {
        let c = self.config;
        let (norm, pre) = self.norm(self.naming.final_norm())?.split();
        let name = if c.tie_embeddings { self.naming.embed() } else { self.naming.head() };
        let prefix = name.strip_suffix(".weight").unwrap_or(name);
        let shares_table = c.tie_embeddings
            && pre.is_none()
            && match self.opts.quant {
                Quant::F32 | Quant::F16 => true,
                Quant::Native => matches!(self.store.source().info(name).map(|t| t.dtype), Some(WeightDType::F32 | WeightDType::F16)),
                Quant::W8 | Quant::W4 => false,
            };
        let head = if shares_table {
            Linear::new(LinearWeight::Dense(embed.clone()), None)?
        } else {
            self.linear(prefix, c.vocab, c.hidden, false, pre.as_ref())?
        };
        Ok((norm, head))
    }
}

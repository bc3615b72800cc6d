//! The decoder's forward pass over a GPU-resident KV cache.
//!
//! [`Decoder::prefill`] runs any number of new tokens in one recorded pass (embedding → every
//! layer → final norm → head on the last row only) and [`Decoder::decode_step`] one token; both
//! append to the cached sequence and return the last position's [`Logits`] still on the GPU.
//! Nothing is read back until the caller asks for a token id ([`Logits::argmax`]), the top
//! entries ([`Logits::top_k`]) or the whole row ([`Logits::to_vec`]).
//!
//! Context policy: the cache holds [`Decoder::context`] positions; a call whose tokens would
//! not fit is a [`ModelError::ContextFull`] error and changes nothing (prompts are never
//! truncated).

use std::sync::Arc;

use kestrel::ops::attention::{KvCache, RopeOptions, attention, rope_kv_write, rope_kv_write_fused};
use kestrel::ops::copy::copy;
use kestrel::ops::elementwise::{Unary, add, mul, silu_mul, silu_mul_halves, unary};
use kestrel::ops::gather::embedding;
use kestrel::ops::layout::{concat, slice};
use kestrel::ops::reduce::{argmax, top_k};
use kestrel::ops::softmax::{SoftmaxOptions, softmax, softmax_top1};
use kestrel::profile::Profile;
use kestrel::{Context, DType, Recorder, Tensor};

use super::config::LlmConfig;
use super::weights::{DecoderWeights, LayerWeights, MoeWeights, Stacked};
use crate::error::{ModelError, Result};

/// Context used when none is given and the model's is longer.
pub const DEFAULT_CONTEXT: usize = 2048;

/// Options of [`Decoder::new`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Positions the KV cache holds; default `min(context_length, DEFAULT_CONTEXT)`.
    pub context: Option<usize>,
    /// KV cache storage; default f16 where the device has `SHADER_F16`, else f32.
    pub kv_dtype: Option<DType>,
}

/// The last position's logits (`[vocab]` f32), on the GPU.
#[derive(Clone, Debug)]
pub struct Logits {
    tensor: Tensor,
}

impl Logits {
    /// The logits tensor, `[vocab]` f32.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.tensor.numel()
    }

    /// Reads every logit back.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(self.tensor.to_vec_f32()?)
    }

    /// The id of the largest logit, computed on the GPU (one `u32` read back).
    pub fn argmax(&self) -> Result<u32> {
        let mut rec = Recorder::new(self.tensor.context());
        let id = argmax(&mut rec, &self.tensor)?;
        rec.submit()?;
        first(id.to_vec_u32()?)
    }

    /// The `k` largest logits (descending, ties by lower id) and their ids, selected on the GPU
    /// (`2k` values read back). `1 ≤ k ≤ min(vocab, kestrel::ops::reduce::MAX_TOP_K)`.
    pub fn top_k(&self, k: usize) -> Result<(Vec<f32>, Vec<u32>)> {
        let mut rec = Recorder::new(self.tensor.context());
        let (values, ids) = top_k(&mut rec, &self.tensor, k)?;
        rec.submit()?;
        Ok((values.to_vec_f32()?, ids.to_vec_u32()?))
    }
}

/// A run of prompt positions for [`Decoder::prefill_segments`].
#[derive(Clone, Copy, Debug)]
pub enum Segment<'a> {
    /// Token ids, looked up in the model's embedding table.
    Tokens(&'a [u32]),
    /// Rows already in the model's embedding space: `[n, hidden]` f32 on the decoder's GPU (a
    /// vision-language model's image features).
    Embeddings(&'a Tensor),
}

impl Segment<'_> {
    /// Positions the segment fills.
    pub fn len(&self) -> usize {
        match self {
            Segment::Tokens(ids) => ids.len(),
            Segment::Embeddings(rows) => rows.shape().first().copied().unwrap_or(0),
        }
    }

    /// Whether the segment fills no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Decoder::prefill_traced`] keeps of a pass besides the logits (golden tests).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Each layer's output `[t, hidden]` (copies: the residual stream is updated in place).
    pub hidden: Vec<Tensor>,
    /// Each mixture-of-experts layer's index and top-1 routing weights `[t, experts]` (the
    /// chosen expert's gate probability, 0 elsewhere).
    pub routing: Vec<(usize, Tensor)>,
}

/// The single value of a one-element readback.
fn first(v: Vec<u32>) -> Result<u32> {
    v.first().copied().ok_or_else(|| ModelError::Input("empty argmax readback".into()))
}

/// A LLaMA-family decoder with its KV cache: one sequence at a time.
pub struct Decoder {
    ctx: Arc<Context>,
    config: LlmConfig,
    weights: DecoderWeights,
    caches: Vec<KvCache>,
    rope: RopeOptions,
    pos: usize,
}

impl Decoder {
    /// A decoder over `weights` (loaded for `config`) with an empty cache of `opts.context`
    /// positions per layer.
    pub fn new(ctx: &Arc<Context>, config: LlmConfig, weights: DecoderWeights, opts: &DecoderOptions) -> Result<Decoder> {
        config.validate()?;
        if weights.layers.len() != config.layers {
            return Err(ModelError::Config(format!("{} layers of weights for a config of {}", weights.layers.len(), config.layers)));
        }
        let context = opts.context.unwrap_or(config.context_length.min(DEFAULT_CONTEXT));
        if context == 0 {
            return Err(ModelError::Config("the context must hold at least one position".into()));
        }
        if context > config.context_length {
            log::warn!(
                "a context of {context} positions exceeds the {} the model was trained for; output past that is unreliable",
                config.context_length
            );
        }
        let kv_dtype = opts.kv_dtype.unwrap_or(if ctx.caps().f16 { DType::F16 } else { DType::F32 });
        let caches = (0..config.layers)
            .map(|_| KvCache::new(ctx, config.kv_heads, config.head_dim, context, kv_dtype))
            .collect::<kestrel::Result<Vec<_>>>()?;
        let rope = RopeOptions {
            theta: config.rope.theta,
            rotary_dim: config.rope.rotary_dim,
            layout: weights.rope_layout,
            scaling: config.rope.scaling,
        };
        Ok(Decoder { ctx: ctx.clone(), config, weights, caches, rope, pos: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The GPU context the decoder runs on.
    pub fn gpu(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The weights.
    pub fn weights(&self) -> &DecoderWeights {
        &self.weights
    }

    /// Positions the KV cache holds.
    pub fn context(&self) -> usize {
        self.caches.first().map_or(0, KvCache::capacity)
    }

    /// Tokens cached so far (the position of the next token).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The KV cache storage type.
    pub fn kv_dtype(&self) -> DType {
        self.caches.first().map_or(DType::F32, KvCache::dtype)
    }

    /// Forgets the cached sequence (the next token is at position 0).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Forgets the cached tokens from position `pos` on (keeping the first `pos`), so that a
    /// sequence sharing a prefix with the cached one continues from it. No effect when `pos` is
    /// at or past the current position.
    pub fn rewind(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Appends `ids` (one or more tokens) to the sequence in one pass; returns the logits after
    /// the last of them. Errors: no ids, an id outside the vocabulary, or more positions than
    /// the context holds ([`ModelError::ContextFull`]); the sequence is unchanged then.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<Logits> {
        self.run(&[Segment::Tokens(ids)])
    }

    /// Appends a prompt of token ids and embedding rows (in order) in one pass; returns the
    /// logits after its last position. Errors as [`prefill`](Self::prefill), and embedding rows
    /// that are not `[n, hidden]` f32 on this decoder's GPU.
    pub fn prefill_segments(&mut self, segments: &[Segment]) -> Result<Logits> {
        self.run(segments)
    }

    /// Appends one token; returns the logits after it.
    pub fn decode_step(&mut self, id: u32) -> Result<Logits> {
        self.run(&[Segment::Tokens(&[id])])
    }

    /// [`prefill_segments`](Self::prefill_segments) that also keeps every layer's output and
    /// every mixture-of-experts layer's routing weights on the GPU ([`Trace`]).
    pub fn prefill_traced(&mut self, segments: &[Segment]) -> Result<(Logits, Trace)> {
        let mut trace = Trace::default();
        let (logits, _) = self.run_with(segments, false, Some(&mut trace))?;
        Ok((logits, trace))
    }

    /// [`decode_step`](Self::decode_step) with every dispatch timed (`kestrel generate
    /// --profile`): the logits and the step's profile (`None` where the device cannot time).
    pub fn profile_step(&mut self, id: u32) -> Result<(Logits, Option<Profile>)> {
        self.run_with(&[Segment::Tokens(&[id])], true, None)
    }

    /// Records and submits one pass over `segments` at the current position.
    fn run(&mut self, segments: &[Segment]) -> Result<Logits> {
        Ok(self.run_with(segments, false, None)?.0)
    }

    /// Checks a prompt's segments; returns its positions.
    fn check(&self, segments: &[Segment]) -> Result<usize> {
        let c = &self.config;
        for segment in segments {
            match segment {
                Segment::Tokens(ids) => {
                    if let Some(bad) = ids.iter().find(|&&id| id as usize >= c.vocab) {
                        return Err(ModelError::Input(format!("token id {bad} is outside the vocabulary of {} tokens", c.vocab)));
                    }
                }
                Segment::Embeddings(rows) => {
                    let ok = rows.dtype() == DType::F32 && rows.shape().len() == 2 && rows.shape()[1] == c.hidden;
                    if !ok {
                        return Err(ModelError::Input(format!(
                            "embedding rows must be [n, {}] f32, got {:?} {:?}",
                            c.hidden,
                            rows.shape(),
                            rows.dtype()
                        )));
                    }
                    if !Arc::ptr_eq(rows.context(), &self.ctx) {
                        return Err(ModelError::Input("embedding rows live on another GPU context than the decoder".into()));
                    }
                }
            }
        }
        let t: usize = segments.iter().map(Segment::len).sum();
        if t == 0 {
            return Err(ModelError::Input("no tokens to run (empty prompt)".into()));
        }
        Ok(t)
    }

    /// Records the input rows `[t, hidden]` of a prompt: token embeddings and given rows, joined
    /// in order. The layers accumulate residuals into the result in place, so given rows are
    /// always copied (a concat of one input), never written.
    fn embed(&self, rec: &mut Recorder, segments: &[Segment]) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(segments.len());
        for segment in segments.iter().filter(|s| !s.is_empty()) {
            parts.push(match segment {
                Segment::Tokens(ids) => {
                    let ids = Tensor::from_u32(&self.ctx, &[ids.len()], ids)?;
                    (embedding(rec, &self.weights.embed, &ids)?, true)
                }
                Segment::Embeddings(rows) => ((*rows).clone(), false),
            });
        }
        if let [(rows, true)] = parts.as_slice() {
            return Ok(rows.clone());
        }
        Ok(concat(rec, &parts.iter().map(|(rows, _)| rows).collect::<Vec<_>>(), 0)?)
    }

    /// [`run`](Self::run), profiled when `profile`, traced into `trace` when given.
    fn run_with(&mut self, segments: &[Segment], profile: bool, mut trace: Option<&mut Trace>) -> Result<(Logits, Option<Profile>)> {
        let t = self.check(segments)?;
        let c = &self.config;
        let needed = self.pos.saturating_add(t);
        if needed > self.context() {
            return Err(ModelError::ContextFull { needed, context: self.context() });
        }
        let mut rec = if profile { Recorder::with_profiling(&self.ctx) } else { Recorder::new(&self.ctx) };
        let mut x = self.embed(&mut rec, segments)?;
        for (i, (layer, cache)) in self.weights.layers.iter().zip(&self.caches).enumerate() {
            let (out, routing) = self.layer(&mut rec, layer, cache, &x, t)?;
            x = out;
            if let Some(trace) = trace.as_deref_mut() {
                trace.hidden.push(copy(&mut rec, &x)?);
                trace.routing.extend(routing.map(|r| (i, r)));
            }
        }
        let last = if t > 1 { slice(&mut rec, &x, 0, t - 1, t)? } else { x };
        let h = self.weights.final_norm.forward(&mut rec, &last, c.norm_eps)?;
        let logits = self.weights.head.forward(&mut rec, &h)?;
        let profile = if profile {
            rec.finish()?
        } else {
            rec.submit()?;
            None
        };
        self.pos = needed;
        Ok((Logits { tensor: logits.reshape(&[c.vocab])? }, profile))
    }

    /// Records one layer over `x` (`[t, d]`) at the current position; returns `[t, d]` and, for
    /// a mixture-of-experts layer, its routing weights `[t, experts]`.
    fn layer(&self, rec: &mut Recorder, w: &LayerWeights, cache: &KvCache, x: &Tensor, t: usize) -> Result<(Tensor, Option<Tensor>)> {
        let c = &self.config;
        let h = w.attn_norm.forward(rec, x, c.norm_eps)?;
        let q = match &w.qkv {
            Stacked::Fused(qkv) => {
                let qkv = qkv.forward(rec, &h)?.reshape(&[t, c.heads + 2 * c.kv_heads, c.head_dim])?;
                rope_kv_write_fused(rec, &qkv, c.heads, cache, self.pos, &self.rope)?
            }
            Stacked::Separate(parts) => {
                let [q, k, v] = parts.as_slice() else {
                    return Err(ModelError::Config(format!("{} q/k/v projections, expected 3", parts.len())));
                };
                let q = q.forward(rec, &h)?.reshape(&[t, c.heads, c.head_dim])?;
                let k = k.forward(rec, &h)?.reshape(&[t, c.kv_heads, c.head_dim])?;
                let v = v.forward(rec, &h)?.reshape(&[t, c.kv_heads, c.head_dim])?;
                rope_kv_write(rec, &q, &k, &v, cache, self.pos, &self.rope)?
            }
        };
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let a = attention(rec, &q, cache, self.pos, scale)?.reshape(&[t, c.q_dim()])?;
        // Residual sums accumulate into the stream in place where the kernels can (the layer
        // input is not read again).
        let x = match &w.aug {
            None => w.o.forward_residual(rec, &a, x.clone())?,
            Some((w1, w2)) => {
                let o = w.o.forward(rec, &a)?;
                let x = add(rec, x, &o)?;
                let r = w1.forward(rec, &o)?;
                let r = unary(rec, &r, Unary::QuickGelu)?;
                w2.forward_residual(rec, &r, x)?
            }
        };
        let h = w.ffn_norm.forward(rec, &x, c.norm_eps)?;
        let m = ffn_activation(rec, &w.gate_up, w.gate2.as_ref(), &h)?;
        match &w.moe {
            None => Ok((w.down.forward_residual(rec, &m, x)?, None)),
            Some(moe) => {
                let (x, routing) = mixture(rec, moe, &h, &w.down, &m, x)?;
                Ok((x, Some(routing)))
            }
        }
    }
}

/// The FFN's input to its down projection: `SiLU(gate·h) ⊙ up·h`, plus PanGu-π's
/// `QuickGELU(gate2·h)` inside the product where there is a second gate.
fn ffn_activation(rec: &mut Recorder, gate_up: &Stacked, gate2: Option<&kestrel::nn::Linear>, h: &Tensor) -> Result<Tensor> {
    Ok(match (gate_up, gate2) {
        (Stacked::Fused(gate_up), None) => {
            let gu = gate_up.forward(rec, h)?;
            silu_mul_halves(rec, &gu)?
        }
        (Stacked::Separate(parts), gate2) => {
            let [gate, up] = parts.as_slice() else {
                return Err(ModelError::Config(format!("{} gate/up projections, expected 2", parts.len())));
            };
            let (g, u) = (gate.forward(rec, h)?, up.forward(rec, h)?);
            match gate2 {
                None => silu_mul(rec, &g, &u)?,
                Some(g2) => {
                    let act = unary(rec, &g, Unary::Silu)?;
                    let g2 = g2.forward(rec, h)?;
                    let g2 = unary(rec, &g2, Unary::QuickGelu)?;
                    let act = add(rec, &act, &g2)?;
                    mul(rec, &act, &u)?
                }
            }
        }
        (Stacked::Fused(_), Some(_)) => return Err(ModelError::Config("a fused gate|up with a second gate".into())),
    })
}

/// A residual mixture of experts over `h` (`[t, d]`) accumulated into `x`:
/// `x + c0 · p_e · FFN_e(h) + c1 · FFN_res(h)` with `p = softmax(router·h)` kept at its top-1
/// expert only and `c = softmax(coefficient·h)`, all on the GPU. Every expert runs on every
/// token and is weighted by its (mostly zero) routing weight; each weight scales the rows of an
/// FFN's activation before its down projection (which has no bias), so the sums accumulate in
/// place. `m` is the residual FFN's activation, `down` its down projection. Returns the new
/// stream and the routing weights `[t, experts]`.
fn mixture(
    rec: &mut Recorder,
    moe: &MoeWeights,
    h: &Tensor,
    down: &kestrel::nn::Linear,
    m: &Tensor,
    x: Tensor,
) -> Result<(Tensor, Tensor)> {
    let gate = moe.router.forward(rec, h)?;
    let routing = softmax_top1(rec, &gate)?;
    let coef = moe.coefficient.forward(rec, h)?;
    let coef = softmax(rec, &coef, &SoftmaxOptions::default())?;
    let (c0, c1) = (slice(rec, &coef, 1, 0, 1)?, slice(rec, &coef, 1, 1, 2)?);
    let weights = mul(rec, &routing, &c0)?;
    let scaled = mul(rec, m, &c1)?;
    let mut x = down.forward_residual(rec, &scaled, x)?;
    for (e, expert) in moe.experts.iter().enumerate() {
        let act = ffn_activation(rec, &expert.gate_up, expert.gate2.as_ref(), h)?;
        let we = slice(rec, &weights, 1, e, e + 1)?;
        let scaled = mul(rec, &act, &we)?;
        x = expert.down.forward_residual(rec, &scaled, x)?;
    }
    Ok((x, routing))
}

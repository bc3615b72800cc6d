//! [`TextGenerator`]: text generation with a LLaMA-family decoder, streamed piece by piece.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kestrel::Context;
use kestrel::Quant;
use serde::{Deserialize, Serialize};

use super::profile::{ProfileReport, ProfileRequest, measure};
use crate::error::{ModelError, Result};
use crate::llm::chat::ChatMessage;
use crate::llm::decoder::{Decoder, DecoderOptions, Segment};
use crate::llm::generate::{GenerateOptions, chat_prompt, generate_until};
use crate::llm::load::load;
use crate::llm::sampler::SamplerConfig;
use crate::llm::tokenizer::Tokenizer;
use crate::llm::weights::LoadOptions;

/// How to open a [`TextGenerator`] (`kestrel generate`'s model options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// Weight storage.
    pub quant: Quant,
    /// Positions of the KV cache (default: the model's context, at most 2048).
    pub context: Option<usize>,
    /// Keep q/k/v and gate/up as separate linears instead of one stacked linear each.
    pub separate_projections: bool,
}

impl Default for GeneratorOptions {
    /// Weights as the file stores them, the default context, stacked projections.
    fn default() -> Self {
        GeneratorOptions { quant: Quant::Native, context: None, separate_projections: false }
    }
}

/// One generation request. The JSON form (`kestrel_generate`) uses the same keys as `kestrel
/// generate`'s options, with the same defaults except the seed (0 instead of the clock).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    /// The prompt; without `chat` tokenized exactly as given.
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as one user turn (after `system`).
    pub chat: bool,
    /// System prompt of a chat.
    pub system: Option<String>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f32,
    /// Sample from the K most likely tokens; 0 = all.
    pub top_k: usize,
    /// Nucleus sampling threshold; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one; 0 = off.
    pub min_p: f32,
    /// Penalty on the last 64 tokens' logits; 1 = off.
    pub repeat_penalty: f32,
    /// Seed of the sampler: the same seed gives the same text.
    pub seed: u64,
    /// Stop when the text contains one of these (cut from the text).
    pub stop: Vec<String>,
}

impl Default for GenerateRequest {
    /// An empty prompt (which [`TextGenerator::generate`] refuses) with `kestrel generate`'s
    /// defaults: 256 tokens, temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, seed 0.
    fn default() -> Self {
        GenerateRequest {
            prompt: String::new(),
            chat: false,
            system: None,
            max_tokens: 256,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

impl GenerateRequest {
    /// A greedy request for `prompt` (temperature 0), other fields at their defaults.
    pub fn greedy(prompt: &str, max_tokens: usize) -> GenerateRequest {
        GenerateRequest { prompt: prompt.into(), max_tokens, temperature: 0.0, ..Default::default() }
    }

    /// Parses the JSON form. Errors: malformed JSON, an unknown key, a wrongly typed value.
    pub fn from_json(json: &str) -> Result<GenerateRequest> {
        super::runtime::parse_json(Some(json), "generate request")
    }

    fn options(&self) -> Result<GenerateOptions> {
        if self.prompt.is_empty() {
            return Err(ModelError::Input("empty prompt".into()));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(ModelError::Input("stop: an empty stop string is not allowed (it would match everywhere)".into()));
        }
        let sampler = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: 64,
            seed: self.seed,
        };
        sampler.validate()?;
        Ok(GenerateOptions { max_tokens: self.max_tokens, stop: self.stop.clone(), sampler, keep_logits: false })
    }
}

/// What [`TextGenerator::generate`] gives; serialises to `kestrel generate --json`'s keys plus
/// `finish` (`eos`, `stop`, `length`, `context`, `cancelled`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenerateResult {
    /// The generated text: exactly the concatenation of the streamed pieces.
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens per second of the prefill.
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first.
    pub decode_tok_s: f64,
    /// Bytes of linear weights a decode step reads.
    pub weight_bytes: u64,
    /// `weight_bytes` × decode tokens per second, GB/s.
    pub decode_weight_gbps: f64,
    /// Most GPU memory the context held since the model was opened.
    pub peak_gpu_bytes: u64,
    /// Most GPU memory held while the model loaded.
    pub load_peak_gpu_bytes: u64,
    /// Why generation ended.
    pub finish: &'static str,
}

/// Stops a running [`TextGenerator::generate`] or profile from another thread, at the next
/// token (or run). Cheap to clone; the flag is cleared when the next call starts.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks the running call to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked since the current call started.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Clears the flag (each call starts with it).
    pub(crate) fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// `Err(ModelError::Cancelled)` when cancelled.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(ModelError::Cancelled) } else { Ok(()) }
    }
}

/// A decoder, its tokenizer and its KV cache, generating from one prompt at a time (each
/// call starts from an empty cache).
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use kestrel_models::api::{GenerateRequest, GeneratorOptions, RuntimeOptions, TextGenerator};
///
/// # fn main() -> kestrel_models::Result<()> {
/// let ctx = RuntimeOptions::default().open()?;
/// let path = "target/test-weights/SmolLM2-135M-Instruct.Q4_1.gguf"; // scripts/fetch-test-weights.sh
/// let mut model = TextGenerator::open(&ctx, path.as_ref(), &GeneratorOptions::default())?;
/// let request = GenerateRequest::greedy("The capital of France is", 8);
/// let result = model.generate(&request, &mut |piece| {
///     print!("{piece}");
///     ControlFlow::Continue(())
/// })?;
/// assert!(result.text.contains("Paris"));
/// println!("\n{}", serde_json::to_string(&result).unwrap()); // {"text":…,"tokens":…,…}
/// # Ok(())
/// # }
/// ```
pub struct TextGenerator {
    decoder: Decoder,
    tokenizer: Tokenizer,
    load_peak_gpu_bytes: u64,
    cancel: CancelFlag,
}

impl TextGenerator {
    /// Opens a GGUF file, a Hugging Face model directory or a converted Kestrel file, as
    /// `kestrel generate --model` does. Errors: no tokenizer found, unreadable or malformed
    /// files, an unsupported architecture.
    pub fn open(ctx: &Arc<Context>, path: &Path, opts: &GeneratorOptions) -> Result<TextGenerator> {
        let load_opts = LoadOptions { quant: opts.quant, fold_repbn: true, fuse_projections: !opts.separate_projections };
        let model = load(ctx, path, &load_opts, &mut |_, _| {})?;
        let tokenizer = model.tokenizer.ok_or_else(|| ModelError::Checkpoint {
            file: path.display().to_string(),
            detail: "no tokenizer found (tokenizer.json or GGUF metadata)".into(),
        })?;
        let decoder = Decoder::new(ctx, model.config, model.weights, &DecoderOptions { context: opts.context, kv_dtype: None })?;
        // Loading leaves converted and staging buffers in the pool; generation needs the
        // weights, the KV cache and each step's live set.
        let load_peak_gpu_bytes = ctx.peak_gpu_bytes();
        ctx.trim();
        ctx.memory().reset_peak();
        Ok(TextGenerator { decoder, tokenizer, load_peak_gpu_bytes, cancel: CancelFlag::default() })
    }

    /// The flag that cancels this generator's running call from another thread.
    pub fn cancel_flag(&self) -> CancelFlag {
        self.cancel.clone()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Generates a continuation of `req.prompt` from an empty cache, passing each piece of
    /// final text (whole UTF-8 characters) to `on_piece` as it is decoded; the pieces
    /// concatenate to the result's `text`. `on_piece` returning `Break` ends generation there
    /// (`finish` = `cancelled`). Errors: a bad request ([`ModelError::Input`]), a prompt longer
    /// than the context, [`ModelError::Cancelled`] when the [`CancelFlag`] was raised.
    pub fn generate(&mut self, req: &GenerateRequest, on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>) -> Result<GenerateResult> {
        self.cancel.reset();
        let opts = req.options()?;
        let prompt = if req.chat {
            let messages: Vec<ChatMessage> =
                req.system.as_deref().map(ChatMessage::system).into_iter().chain([ChatMessage::user(&req.prompt)]).collect();
            chat_prompt(&self.tokenizer, &messages)?
        } else {
            self.tokenizer.encode(&req.prompt, true)?
        };
        self.decoder.reset();
        let stopped = Cell::new(false);
        let cancel = self.cancel.clone();
        let mut on_text = |piece: &str| {
            if !stopped.get() && on_piece(piece).is_break() {
                stopped.set(true);
            }
        };
        let g = generate_until(&mut self.decoder, Some(&self.tokenizer), &[Segment::Tokens(&prompt)], &opts, &mut on_text, &mut || {
            stopped.get() || cancel.is_cancelled()
        })?;
        cancel.check()?;
        let gpu = self.decoder.gpu();
        let weight_bytes = self.decoder.weights().linear_bytes();
        Ok(GenerateResult {
            text: g.text,
            tokens: g.tokens,
            prompt_tokens: g.prompt_tokens,
            prefill_tok_s: g.prefill_tok_s,
            decode_tok_s: g.decode_tok_s,
            weight_bytes,
            decode_weight_gbps: weight_bytes as f64 * g.decode_tok_s / 1e9,
            peak_gpu_bytes: gpu.peak_gpu_bytes(),
            load_peak_gpu_bytes: self.load_peak_gpu_bytes,
            finish: g.finish.name(),
        })
    }

    /// Profiles one decode step (after a one-token prefill): its latency, per-op table and
    /// trace. Errors: [`ModelError::Cancelled`] when the [`CancelFlag`] was raised.
    pub fn profile(&mut self, req: &ProfileRequest) -> Result<ProfileReport> {
        self.cancel.reset();
        let id = self.tokenizer.bos_id().unwrap_or(0);
        let ctx = self.decoder.gpu().clone();
        let decoder = &mut self.decoder;
        decoder.reset();
        decoder.prefill(&[id])?;
        let run = |profiled: bool| {
            if decoder.position() >= decoder.context() {
                decoder.rewind(1);
            }
            if profiled {
                Ok(decoder.profile_step(id)?.1)
            } else {
                decoder.decode_step(id)?.argmax()?;
                Ok(None)
            }
        };
        let cancel = self.cancel.clone();
        measure(&ctx, "decode step".into(), req, run, &|| cancel.check())
    }
}

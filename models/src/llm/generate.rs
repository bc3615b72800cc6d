//! The generation loop: prompt → prefill → sample → decode, one token per step, until EOS, a
//! stop string, the token limit or a full context; text is streamed per token.

use std::time::Instant;

use super::chat::{ChatMessage, ChatTemplate};
use super::decoder::{Decoder, Logits, Segment};
use super::sampler::{Sampler, SamplerConfig};
use super::tokenizer::Tokenizer;
use crate::error::{ModelError, Result};

/// Options of [`generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation ends when the text contains one of these (which is cut from the text).
    pub stop: Vec<String>,
    /// Sampling parameters.
    pub sampler: SamplerConfig,
    /// Keep the logits each generated token was chosen from ([`Generation::logits`]; one
    /// extra readback per token).
    pub keep_logits: bool,
}

impl Default for GenerateOptions {
    /// 256 tokens, greedy, no stop strings.
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, stop: Vec::new(), sampler: SamplerConfig::default(), keep_logits: false }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token ([`Tokenizer::is_eos`]); it is not part of the output.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The decoder's context is full.
    ContextFull,
    /// The caller asked to stop ([`generate_until`]).
    Cancelled,
}

impl FinishReason {
    /// Lower-case name (`eos`, `stop`, `length`, `context`, `cancelled`).
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
            FinishReason::MaxTokens => "length",
            FinishReason::ContextFull => "context",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// What [`generate`] produced, with timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The generated text (special tokens left out, a stop string cut off).
    pub text: String,
    /// The generated token ids (an ending EOS not included).
    pub tokens: Vec<u32>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens per second of the prefill pass (including reading back the first token).
    pub prefill_tok_s: f64,
    /// Decode steps per second (each: one pass, sampling, one readback).
    pub decode_tok_s: f64,
    /// Why it ended.
    pub finish: FinishReason,
    /// With [`GenerateOptions::keep_logits`]: for each token in `tokens` (and a final EOS),
    /// the logits row it was chosen from; else empty.
    pub logits: Vec<Vec<f32>>,
}

/// The prompt ids of a chat: `messages` rendered with the tokenizer's own template (ChatML
/// when it has none) and an opening assistant turn, encoded without adding BOS/EOS (templates
/// write them).
pub fn chat_prompt(tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>> {
    let template = ChatTemplate::from_tokenizer(tokenizer).unwrap_or(ChatTemplate::ChatMl);
    let text_of = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
    let eos = text_of(tokenizer.eos_ids().first().copied());
    let text = template.render(messages, true, &text_of(tokenizer.bos_id()), &eos)?;
    tokenizer.encode(&text, false)
}

/// Generates a continuation of `prompt` (token ids, appended to whatever `decoder` has cached),
/// calling `on_text` with each piece of final text as it is decoded. Errors: an empty prompt, a
/// prompt that does not fit the context ([`ModelError::ContextFull`]), bad sampling parameters.
pub fn generate(
    decoder: &mut Decoder,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    generate_segments(decoder, Some(tokenizer), &[Segment::Tokens(prompt)], opts, on_text)
}

/// [`generate`] from a prompt of token ids and embedding rows (a vision-language model's image
/// features), with or without a tokenizer. Without one no text is decoded (`text` stays empty,
/// `on_text` is never called) and no token counts as EOS: generation ends at `max_tokens` or a
/// full context.
pub fn generate_segments(
    decoder: &mut Decoder,
    tokenizer: Option<&Tokenizer>,
    prompt: &[Segment],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    generate_until(decoder, tokenizer, prompt, opts, on_text, &mut || false)
}

/// [`generate_segments`] that also ends, with [`FinishReason::Cancelled`], as soon as
/// `cancelled()` returns true; it is asked after each generated token (e.g. after `on_text`
/// asked to stop, or another thread raised a flag). The text is then what `on_text` received:
/// text held back for a possible stop string or an unfinished character is dropped.
pub fn generate_until(
    decoder: &mut Decoder,
    tokenizer: Option<&Tokenizer>,
    prompt: &[Segment],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Generation> {
    let prompt_tokens: usize = prompt.iter().map(Segment::len).sum();
    if prompt_tokens == 0 {
        return Err(ModelError::Input("empty prompt".into()));
    }
    let mut sampler = Sampler::new(opts.sampler)?;
    for segment in prompt {
        if let Segment::Tokens(ids) = segment {
            sampler.observe(ids);
        }
    }
    let mut kept = Vec::new();
    let mut pick = |logits: &Logits, sampler: &mut Sampler| -> Result<u32> {
        if opts.keep_logits {
            kept.push(logits.to_vec()?);
        }
        sampler.sample(logits)
    };
    let start = Instant::now();
    let logits = decoder.prefill_segments(prompt)?;
    let mut out = Output::new(tokenizer, &opts.stop);
    let mut finish = FinishReason::MaxTokens;
    let mut next = if opts.max_tokens > 0 { Some(pick(&logits, &mut sampler)?) } else { None };
    let prefill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut steps = 0usize;
    while let Some(id) = next.take() {
        if tokenizer.is_some_and(|t| t.is_eos(id)) {
            finish = FinishReason::Eos;
            break;
        }
        if out.push(id, on_text)? {
            finish = FinishReason::Stop;
            break;
        }
        if cancelled() {
            finish = FinishReason::Cancelled;
            break;
        }
        if out.tokens.len() >= opts.max_tokens {
            break;
        }
        if decoder.position() >= decoder.context() {
            finish = FinishReason::ContextFull;
            break;
        }
        let logits = decoder.decode_step(id)?;
        next = Some(pick(&logits, &mut sampler)?);
        steps += 1;
    }
    let decode_s = start.elapsed().as_secs_f64();
    match finish {
        FinishReason::Stop => {}
        FinishReason::Cancelled => out.text.truncate(out.emitted),
        _ => out.finish(on_text)?,
    }
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(Generation {
        text: out.text,
        tokens: out.tokens,
        prompt_tokens,
        prefill_tok_s: rate(prompt_tokens, prefill_s),
        decode_tok_s: rate(steps, decode_s),
        finish,
        logits: kept,
    })
}

/// Generated ids and text, with stop-string detection: text that could be the start of a stop
/// string is held back until it is known not to be one.
struct Output<'t> {
    /// `None` without a tokenizer (ids only, no text).
    stream: Option<super::tokenizer::StreamDecoder<'t>>,
    stop: &'t [String],
    tokens: Vec<u32>,
    /// All final text.
    text: String,
    /// Bytes of `text` already passed to the callback.
    emitted: usize,
}

impl<'t> Output<'t> {
    fn new(tokenizer: Option<&'t Tokenizer>, stop: &'t [String]) -> Output<'t> {
        Output { stream: tokenizer.map(|t| t.stream_decoder(true)), stop, tokens: Vec::new(), text: String::new(), emitted: 0 }
    }

    /// Adds a token; returns true when a stop string completed (the text is cut before it).
    fn push(&mut self, id: u32, on_text: &mut dyn FnMut(&str)) -> Result<bool> {
        self.tokens.push(id);
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        let piece = stream.push(id)?;
        self.text.push_str(&piece);
        let found = self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text.find(s.as_str())).min();
        if let Some(at) = found {
            self.text.truncate(at);
            self.emit(self.text.len(), on_text);
            return Ok(true);
        }
        let held = self.stop.iter().map(|s| partial_suffix(&self.text, s)).max().unwrap_or(0);
        self.emit(self.text.len() - held, on_text);
        Ok(false)
    }

    /// Passes `text[emitted..upto]` to the callback.
    fn emit(&mut self, upto: usize, on_text: &mut dyn FnMut(&str)) {
        if upto > self.emitted {
            on_text(&self.text[self.emitted..upto]);
            self.emitted = upto;
        }
    }

    /// Flushes the decoder and any held-back text.
    fn finish(&mut self, on_text: &mut dyn FnMut(&str)) -> Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let rest = stream.finish()?;
        self.text.push_str(&rest);
        self.emit(self.text.len(), on_text);
        Ok(())
    }
}

/// Length in bytes of the longest proper suffix of `text` that is a prefix of `stop` (ending
/// on a character boundary).
fn partial_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

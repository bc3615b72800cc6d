//! Text ↔ token ids for the LLM decoders, on top of the HF `tokenizers` crate.
//!
//! A [`Tokenizer`] is built from a `tokenizer.json` (plus an optional `tokenizer_config.json`
//! for BOS/EOS and the chat template) or from a GGUF file's `tokenizer.*` metadata, where the
//! vocabulary is rebuilt the way llama.cpp and transformers read it:
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from the tokens and merges, with the
//!   pre-tokenizer split that `tokenizer.ggml.pre` names;
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE — merges recovered from the token
//!   scores (best score first), `<0xXX>` byte fallback for characters outside the vocabulary,
//!   spaces written `▁` and, unless `tokenizer.ggml.add_space_prefix` is false, one `▁` put
//!   before the text (SentencePiece's dummy prefix; as in transformers, not when the text
//!   starts with an added token such as `<s>`).
//!
//! SentencePiece `.model` files are read as the GGUF "llama" vocabulary they convert to.
//!
//! Control tokens (and `<unk>`) become special added tokens and user-defined tokens plain added
//! tokens, each keeping its GGUF id, so `<|im_start|>` written in a prompt encodes to its id.
//! [`StreamDecoder`] turns ids into text one at a time for generation.

mod config;
mod gguf_vocab;
mod pre_split;
mod spm_model;
mod stream;

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer as HfTokenizer;

use crate::error::{ModelError, Result};

pub use stream::StreamDecoder;

/// Texts of the tokens that end a turn or the text in the common chat formats; those present in
/// a vocabulary as special tokens join the EOS token in [`Tokenizer::eos_ids`] (llama.cpp calls
/// them end-of-generation tokens).
const END_OF_GENERATION: &[&str] = &[
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "<|return|>",
];

/// A tokenizer: encodes text to token ids and decodes ids back to text.
pub struct Tokenizer {
    inner: HfTokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// EOS, then the other end-of-generation ids.
    eos_ids: Vec<u32>,
    /// `encode(_, true)` prepends BOS (GGUF, or a `tokenizer.json` without a post-processor).
    add_bos: bool,
    /// `encode(_, true)` appends EOS.
    add_eos: bool,
    /// `encode(_, true)` runs the `tokenizer.json` post-processor (its own special tokens).
    post_process: bool,
    /// SentencePiece dummy prefix: a space put before text that does not start with an added token.
    space_prefix: bool,
    /// Contents of the added tokens, for the dummy-prefix check.
    added_texts: Vec<String>,
    vocab_size: usize,
    chat_template: Option<String>,
}

/// What a builder (tokenizer.json or GGUF) found, before the common finishing steps.
struct Parts {
    inner: HfTokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// More end-of-generation ids the source names explicitly (GGUF EOT/EOM).
    extra_eos: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    post_process: bool,
    space_prefix: bool,
    chat_template: Option<String>,
}

/// Maps an error of the `tokenizers` crate to [`ModelError::Tokenizer`], prefixed with `context`.
fn tok_err(context: &str) -> impl Fn(tokenizers::Error) -> ModelError + '_ {
    move |e| ModelError::Tokenizer(format!("{context}: {e}"))
}

/// Runs `f`, turning a panic inside the `tokenizers` crate into a typed error: its BPE builder
/// and some decoders index out of bounds on malformed `tokenizer.json` content.
fn guarded<T>(what: &str, f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(tok_err(what)),
        Err(_) => Err(ModelError::Tokenizer(format!("{what}: the tokenizers crate panicked (malformed tokenizer)"))),
    }
}

impl Tokenizer {
    /// Loads a HF `tokenizer.json` and, optionally, its `tokenizer_config.json` (BOS/EOS tokens,
    /// `add_bos_token`/`add_eos_token`, `chat_template`). The file's truncation and padding are
    /// turned off: prompts are encoded whole. `encode(_, true)` runs the file's post-processor
    /// when it has one (e.g. BERT's `[CLS] … [SEP]`); otherwise it adds BOS/EOS as the config says.
    pub fn from_file(tokenizer_json: &Path, config: Option<&Path>) -> Result<Tokenizer> {
        let name = tokenizer_json.display().to_string();
        let bytes = std::fs::read(tokenizer_json).map_err(|source| ModelError::Io { path: name.clone(), source })?;
        let mut inner = guarded(&name, || HfTokenizer::from_bytes(&bytes))?;
        inner.with_truncation(None).map_err(tok_err(&name))?;
        inner.with_padding(None);
        let config = match config {
            Some(path) => config::TokenizerConfig::read(path)?,
            None => config::TokenizerConfig::default(),
        };
        let lookup = |token: &Option<String>, what: &str| -> Result<Option<u32>> {
            match token {
                None => Ok(None),
                Some(t) => inner
                    .token_to_id(t)
                    .map(Some)
                    .ok_or_else(|| ModelError::Tokenizer(format!("{name}: the {what} token {t:?} of the config is not in the vocabulary"))),
            }
        };
        let bos = lookup(&config.bos_token, "BOS")?;
        let eos = lookup(&config.eos_token, "EOS")?;
        let post_process = inner.get_post_processor().is_some();
        let parts = Parts {
            bos,
            eos,
            extra_eos: Vec::new(),
            add_bos: !post_process && config.add_bos_token.unwrap_or(false),
            add_eos: !post_process && config.add_eos_token.unwrap_or(false),
            post_process,
            space_prefix: false,
            chat_template: config.chat_template,
            inner,
        };
        Ok(Tokenizer::assemble(parts))
    }

    /// Builds the tokenizer a GGUF file describes, from its metadata as JSON (what
    /// `kestrel::weights::open(path)?.metadata()` returns): `tokenizer.ggml.model` "gpt2"
    /// (byte-level BPE) or "llama" (SentencePiece), the tokens, merges or scores, token types,
    /// special ids, `tokenizer.ggml.add_bos_token` (default: true for "llama", false for "gpt2")
    /// and `tokenizer.chat_template`.
    pub fn from_gguf_metadata(metadata: &Value) -> Result<Tokenizer> {
        Ok(Tokenizer::assemble(gguf_vocab::build(metadata)?))
    }

    /// Loads a SentencePiece `.model` file (BPE models without text normalisation: Llama,
    /// Mistral, Gemma…), built as the equivalent GGUF "llama" vocabulary: BOS added by
    /// `encode(_, true)`, the dummy prefix as the model's `add_dummy_prefix` says.
    pub fn from_sentencepiece(model: &Path) -> Result<Tokenizer> {
        Tokenizer::from_gguf_metadata(&spm_model::read(model)?)
    }

    /// The common finishing steps: id range, EOS set, added-token texts.
    fn assemble(parts: Parts) -> Tokenizer {
        let added = parts.inner.get_added_tokens_decoder();
        let vocab = parts.inner.get_vocab(true);
        let vocab_size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let named =
            END_OF_GENERATION.iter().filter_map(|text| vocab.get(*text).copied().filter(|id| added.get(id).is_some_and(|t| t.special)));
        let mut eos_ids = Vec::new();
        for id in parts.eos.into_iter().chain(parts.extra_eos).chain(named) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let mut added_texts: Vec<String> = added.into_values().map(|t| t.content).filter(|c| !c.is_empty()).collect();
        added_texts.sort();
        Tokenizer {
            inner: parts.inner,
            bos: parts.bos,
            eos: parts.eos,
            eos_ids,
            add_bos: parts.add_bos,
            add_eos: parts.add_eos,
            post_process: parts.post_process,
            space_prefix: parts.space_prefix,
            added_texts,
            vocab_size,
            chat_template: parts.chat_template,
        }
    }

    /// Token ids of `text`. Special tokens written in the text (e.g. `<|im_start|>`) map to
    /// their ids. With `add_special`, BOS (and EOS) are added when the model's metadata says so
    /// (`tokenizer.ggml.add_bos_token`, `add_bos_token`, or the `tokenizer.json` post-processor).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let prefixed;
        let input = if self.space_prefix && !text.is_empty() && !self.starts_with_added(text) {
            prefixed = format!(" {text}");
            prefixed.as_str()
        } else {
            text
        };
        let encoding = guarded("encode", || self.inner.encode(input, add_special && self.post_process))?;
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Whether `text` starts with the content of an added (special or user-defined) token.
    fn starts_with_added(&self, text: &str) -> bool {
        self.added_texts.iter().any(|t| text.starts_with(t.as_str()))
    }

    /// The text of `ids`, special tokens included (as transformers' `decode` does by default).
    /// Invalid UTF-8 from byte tokens becomes U+FFFD. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, false)
    }

    /// The text of `ids`, leaving special tokens out when `skip_special` is set.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        guarded("decode", || self.inner.decode(ids, skip_special))
    }

    /// An error naming the first id outside the vocabulary, if any.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            Some(bad) => Err(ModelError::Tokenizer(format!("token id {bad} is outside the vocabulary of {} tokens", self.vocab_size))),
            None => Ok(()),
        }
    }

    /// A decoder that turns ids into text one at a time (see [`StreamDecoder`]), special tokens
    /// left out when `skip_special` is set.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }

    /// The BOS token id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end generation: the EOS token, then the end-of-turn / end-of-text tokens the
    /// vocabulary has as special tokens (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`,
    /// `<end_of_turn>`…) and the GGUF's `tokenizer.ggml.eot_token_id`/`eom_token_id`.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether `id` ends generation (one of [`Tokenizer::eos_ids`]).
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Number of token ids (one more than the largest id), added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The model's own Jinja chat template (`tokenizer.chat_template` or the config's
    /// `chat_template`), if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The vocabulary entry of `id` as stored (e.g. `Ġhello` in a byte-level vocabulary,
    /// `▁hello` in SentencePiece, `<|im_end|>` for a special token), or `None` outside it.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of the vocabulary entry `text` (as stored, see [`Tokenizer::token_text`]).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }
}

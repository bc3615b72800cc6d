//! How a byte-level BPE vocabulary from a GGUF splits text before merging, chosen by
//! `tokenizer.ggml.pre` (llama.cpp's name for the pre-tokenizer its merges were learned with).

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use super::tok_err;
use crate::error::Result;

/// Llama 3's split: contractions, letters with one leading non-letter, numbers of up to three
/// digits, punctuation runs, newlines, other whitespace.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's split: Llama 3's with every digit on its own.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenizer names with Llama 3's split (llama.cpp also ignores merges for whole-word hits).
const LLAMA3_NAMES: &[&str] = &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"];
/// Names with Llama 3's split, merges always applied.
const LLAMA3_SPLIT_NAMES: &[&str] = &["dbrx", "smaug-bpe"];
/// Names with Qwen 2's split.
const QWEN2_NAMES: &[&str] = &["qwen2", "deepseek-r1-qwen", "megrez"];
/// Names that split every digit off, then apply GPT-2's split (StarCoder-style vocabularies).
const DIGITS_NAMES: &[&str] = &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"];
/// Names with GPT-2's own split.
const GPT2_NAMES: &[&str] = &["default", "gpt2", "gpt-2", "olmo", "jais", "trillion"];

/// A byte-level pre-tokenizer and whether BPE skips merging words that are whole tokens.
pub(super) struct ByteLevelSplit {
    pub pre_tokenizer: PreTokenizerWrapper,
    pub ignore_merges: bool,
}

/// The split for `pre`; GPT-2's (with a warning) for a name not listed above.
pub(super) fn byte_level(pre: Option<&str>) -> Result<ByteLevelSplit> {
    let name = pre.unwrap_or("default");
    let gpt2 = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let with_regex = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(SplitPattern::Regex(regex.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(tok_err("pre-tokenizer regex"))?;
        let bytes = ByteLevel::new(false, true, false);
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![split.into(), bytes.into()])))
    };
    let (pre_tokenizer, ignore_merges) = if LLAMA3_NAMES.contains(&name) {
        (with_regex(LLAMA3)?, true)
    } else if LLAMA3_SPLIT_NAMES.contains(&name) {
        (with_regex(LLAMA3)?, false)
    } else if QWEN2_NAMES.contains(&name) {
        (with_regex(QWEN2)?, false)
    } else if DIGITS_NAMES.contains(&name) {
        (PreTokenizerWrapper::Sequence(Sequence::new(vec![Digits::new(true).into(), gpt2()])), false)
    } else {
        if !GPT2_NAMES.contains(&name) {
            log::warn!("GGUF tokenizer.ggml.pre {name:?} is not known here; splitting text as GPT-2 does");
        }
        (gpt2(), false)
    };
    Ok(ByteLevelSplit { pre_tokenizer, ignore_merges })
}

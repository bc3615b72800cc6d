//! A [`super::Tokenizer`] rebuilt from GGUF `tokenizer.*` metadata (llama.cpp's key names).
//!
//! Token types (`tokenizer.ggml.token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte. Unknown and control tokens become special added tokens, user-defined ones
//! plain added tokens (matched whole in the text, like llama.cpp and transformers do); each keeps
//! its GGUF id because its text is also the model's vocabulary entry for that id.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, Tokenizer as HfTokenizer};

use super::pre_split;
use super::{Parts, tok_err};
use crate::error::{ModelError, Result};

const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The SentencePiece space marker.
const SPACE: char = '▁';

fn bad(detail: impl Into<String>) -> ModelError {
    ModelError::Tokenizer(format!("GGUF metadata: {}", detail.into()))
}

/// Typed access to the metadata object; a key of the wrong type is an error, a missing one `None`.
struct Meta<'a>(&'a serde_json::Map<String, Value>);

impl<'a> Meta<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key)
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| bad(format!("{key} is not a string")))).transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| bad(format!("{key} is not a boolean")))).transpose()
    }

    /// A token id, checked against the vocabulary size.
    fn id(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let id = v.as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| bad(format!("{key} is not a u32")))?;
        if id as usize >= vocab {
            return Err(bad(format!("{key} = {id} is outside the vocabulary of {vocab} tokens")));
        }
        Ok(Some(id))
    }

    fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        self.get(key).map(|v| v.as_array().ok_or_else(|| bad(format!("{key} is not an array")))).transpose()
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        let strings = items.iter().map(|v| v.as_str().ok_or_else(|| bad(format!("{key} holds a non-string"))));
        strings.collect::<Result<Vec<_>>>().map(Some)
    }

    /// A numeric array of exactly `len` entries.
    fn numbers<T>(&self, key: &str, len: usize, conv: impl Fn(&Value) -> Option<T>) -> Result<Option<Vec<T>>> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        if items.len() != len {
            return Err(bad(format!("{key} has {} entries for {len} tokens", items.len())));
        }
        let values = items.iter().map(|v| conv(v).ok_or_else(|| bad(format!("{key} holds a non-number"))));
        values.collect::<Result<Vec<_>>>().map(Some)
    }
}

/// The tokenizer the metadata describes (see the module docs of [`super`]).
pub(super) fn build(metadata: &Value) -> Result<Parts> {
    let meta = Meta(metadata.as_object().ok_or_else(|| bad("not a JSON object"))?);
    let model = meta.str("tokenizer.ggml.model")?.ok_or_else(|| bad("no tokenizer.ggml.model"))?;
    let tokens = meta.strings("tokenizer.ggml.tokens")?.ok_or_else(|| bad("no tokenizer.ggml.tokens"))?;
    let n = tokens.len();
    if n == 0 || u32::try_from(n).is_err() {
        return Err(bad(format!("tokenizer.ggml.tokens has {n} entries")));
    }
    let types = meta.numbers("tokenizer.ggml.token_type", n, Value::as_i64)?.unwrap_or_else(|| vec![1; n]);
    let sentencepiece = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(bad(format!(
                "tokenizer.ggml.model {other:?} is not supported (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece)"
            )));
        }
    };
    let unk = meta.id("tokenizer.ggml.unknown_token_id", n)?;
    let (inner, space_prefix) = if sentencepiece {
        let scores = meta.numbers("tokenizer.ggml.scores", n, Value::as_f64)?.ok_or_else(|| bad("no tokenizer.ggml.scores"))?;
        let unk_text = unk.map(|id| tokens[id as usize]);
        let prefix = meta.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        (sentencepiece_tokenizer(&tokens, &scores, unk_text, prefix)?, prefix)
    } else {
        let merges = meta.strings("tokenizer.ggml.merges")?.ok_or_else(|| bad("no tokenizer.ggml.merges"))?;
        (byte_level_tokenizer(&tokens, &types, &merges, meta.str("tokenizer.ggml.pre")?)?, false)
    };
    let mut inner = inner;
    add_special_tokens(&mut inner, &tokens, &types)?;
    let extra_eos = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
        .iter()
        .filter_map(|key| meta.id(key, n).transpose())
        .collect::<Result<Vec<_>>>()?;
    Ok(Parts {
        inner,
        bos: meta.id("tokenizer.ggml.bos_token_id", n)?,
        eos: meta.id("tokenizer.ggml.eos_token_id", n)?,
        extra_eos,
        // llama.cpp and transformers add BOS to a SentencePiece vocabulary that does not say otherwise.
        add_bos: meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(sentencepiece),
        add_eos: meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        post_process: false,
        space_prefix,
        chat_template: meta.str("tokenizer.chat_template")?.map(str::to_owned),
    })
}

/// Token text → id, keeping the first id of a text listed twice.
fn vocab_map<'t>(tokens: impl IntoIterator<Item = (usize, Cow<'t, str>)>) -> Vocab {
    let mut vocab = Vocab::new();
    for (id, text) in tokens {
        // The count was checked to fit in u32.
        vocab.entry(text.into_owned()).or_insert(id as u32);
    }
    vocab
}

/// Byte-level BPE: GPT-2's byte ↔ character alphabet, the file's merges, and the pre-tokenizer
/// split of `pre` (`tokenizer.ggml.pre`).
fn byte_level_tokenizer(tokens: &[&str], types: &[i64], merges: &[&str], pre: Option<&str>) -> Result<HfTokenizer> {
    let alphabet = byte_alphabet();
    let alphabet_set: HashSet<char> = alphabet.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet_set.contains(&c));
    // Normal tokens outside the alphabet are respelled byte by byte (as transformers does); added
    // tokens keep their text, which is what is matched in the input.
    let spelled = tokens.iter().zip(types).enumerate().map(|(id, (&t, &ty))| {
        let added = matches!(ty, UNKNOWN | CONTROL | USER_DEFINED);
        let text = if added || in_alphabet(t) { Cow::Borrowed(t) } else { Cow::Owned(t.bytes().map(|b| alphabet[b as usize]).collect()) };
        (id, text)
    });
    let vocab = vocab_map(spelled);
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        let (a, b) = merge.split_once(' ').ok_or_else(|| bad(format!("merge {i} {merge:?} is not two tokens")))?;
        // tokenizers' BPE builder panics on some merges outside the vocabulary: check all three.
        for piece in [a, b, &format!("{a}{b}")] {
            if !vocab.contains_key(piece) {
                return Err(bad(format!("merge {i} {merge:?}: {piece:?} is not in the vocabulary")));
            }
        }
        pairs.push((a.to_owned(), b.to_owned()));
    }
    let split = pre_split::byte_level(pre)?;
    let bpe =
        BPE::builder().vocab_and_merges(vocab, pairs).ignore_merges(split.ignore_merges).build().map_err(tok_err("GGUF byte-level BPE"))?;
    let mut tokenizer = HfTokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(split.pre_tokenizer));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok(tokenizer)
}

/// GPT-2's byte → character table: printable Latin-1 bytes stand for themselves, the others
/// (controls, space, DEL, NBSP, soft hyphen) for U+0100 onwards in byte order.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
                next += 1;
                c
            }
        })
        .collect()
}

/// SentencePiece BPE: merges recovered from the scores, `<0xXX>` byte fallback, spaces as `▁`.
/// The dummy prefix (`add_space_prefix`) is added by `Tokenizer::encode`; the decoder removes it.
fn sentencepiece_tokenizer(tokens: &[&str], scores: &[f64], unk: Option<&str>, space_prefix: bool) -> Result<HfTokenizer> {
    let vocab = vocab_map(tokens.iter().map(|&t| Cow::Borrowed(t)).enumerate());
    let merges = merges_from_scores(tokens, scores, &vocab);
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.to_owned());
    }
    let bpe = builder.build().map_err(tok_err("GGUF SentencePiece vocabulary"))?;
    let mut tokenizer = HfTokenizer::new(bpe);
    let metaspace = Metaspace::new(SPACE, PrependScheme::Never, false);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(metaspace)));
    let replace = Replace::new(SPACE.to_string(), " ").map_err(tok_err("GGUF SentencePiece decoder"))?;
    let mut steps =
        vec![DecoderWrapper::Replace(replace), DecoderWrapper::ByteFallback(ByteFallback::new()), DecoderWrapper::Fuse(Fuse::new())];
    if space_prefix {
        steps.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(steps))));
    Ok(tokenizer)
}

/// BPE merges equivalent to SentencePiece's score-driven merging: every split of a token into
/// two vocabulary entries, best merged-token score first; ties by longer left piece, then longer
/// right piece, then token order, then the pieces' ids (the order transformers' `generate_merges`
/// gives, so both build the same tokenizer).
fn merges_from_scores(tokens: &[&str], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    struct Merge<'t> {
        score: f64,
        left: &'t str,
        right: &'t str,
        order: usize,
        ids: (u32, u32),
    }
    let mut merges = Vec::new();
    for (order, (&token, &score)) in tokens.iter().zip(scores).enumerate() {
        // A text listed twice merges under its first id's score only (its vocabulary id).
        if vocab.get(token).is_none_or(|&id| id as usize != order) {
            continue;
        }
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                merges.push(Merge { score, left, right, order, ids: (l, r) });
            }
        }
    }
    let chars = |s: &str| s.chars().count();
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| chars(b.left).cmp(&chars(a.left)))
            .then_with(|| chars(b.right).cmp(&chars(a.right)))
            .then_with(|| a.order.cmp(&b.order))
            .then_with(|| a.ids.cmp(&b.ids))
    });
    merges.into_iter().map(|m| (m.left.to_owned(), m.right.to_owned())).collect()
}

/// Registers unknown/control tokens as special and user-defined ones as plain added tokens.
fn add_special_tokens(tokenizer: &mut HfTokenizer, tokens: &[&str], types: &[i64]) -> Result<()> {
    let added = |special: bool, wanted: &[i64]| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|&(t, ty)| wanted.contains(ty) && !t.is_empty())
            .map(|(&t, _)| AddedToken::from(t, special).normalized(false))
            .collect()
    };
    tokenizer.add_special_tokens(added(true, &[UNKNOWN, CONTROL])).map_err(tok_err("GGUF special tokens"))?;
    tokenizer.add_tokens(added(false, &[USER_DEFINED])).map_err(tok_err("GGUF user-defined tokens"))?;
    Ok(())
}

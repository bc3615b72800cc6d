//! Incremental decoding: ids in one at a time, complete text out.

use super::Tokenizer;
use crate::error::Result;

/// Turns generated ids into text one id at a time. Each [`StreamDecoder::push`] returns only
/// text that is final: a character whose UTF-8 bytes are split over several byte tokens is held
/// back until its last byte arrives, and text whose decoding still depends on the tokens after
/// it is not returned early. A byte sequence that can never complete becomes U+FFFD once a
/// later token shows it (or at [`StreamDecoder::finish`]). The pushed pieces plus `finish()`
/// concatenate to `tokenizer.decode(all ids)`.
///
/// It decodes a short window: the ids since the previous emitted piece (`read`) plus those of
/// that piece (from `prefix`), so decoders that treat the first token specially (SentencePiece's
/// leading-space strip, WordPiece's `##` joins) see the same context as in a full decode.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special: bool,
    ids: Vec<u32>,
    /// Start of the context window in `ids`.
    prefix: usize,
    /// End of the ids whose text has been returned.
    read: usize,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder for `tokenizer`'s ids; special tokens are left out when `skip_special` is set.
    pub fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> StreamDecoder<'t> {
        StreamDecoder { tokenizer, skip_special, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Adds one id and returns the text it completes (often empty). An id outside the
    /// vocabulary is an error and is not added.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tokenizer.check_ids(&[id])?;
        self.ids.push(id);
        let window = &self.ids[self.prefix..];
        let before = self.tokenizer.decode_with(&window[..self.read - self.prefix], self.skip_special)?;
        let now = self.tokenizer.decode_with(window, self.skip_special)?;
        // A trailing U+FFFD is an incomplete byte sequence (or one that can never complete, which
        // the next token will show): wait.
        if now.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let new = new_text(&before, &now);
        self.prefix = self.read;
        self.read = self.ids.len();
        // Drop ids no window will read again.
        self.ids.drain(..self.prefix);
        self.read -= self.prefix;
        self.prefix = 0;
        Ok(new)
    }

    /// Returns whatever is still held back, an incomplete trailing byte sequence as U+FFFD, and
    /// starts over (for the next sequence).
    pub fn finish(&mut self) -> Result<String> {
        let window = &self.ids[self.prefix..];
        let before = self.tokenizer.decode_with(&window[..self.read - self.prefix], self.skip_special)?;
        let now = self.tokenizer.decode_with(window, self.skip_special)?;
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        Ok(new_text(&before, &now))
    }
}

/// The part of `now` past `before`. Decoding more ids only appends to the text of the earlier
/// ones; should a decoder ever rewrite the end, the text past the common prefix is returned.
fn new_text(before: &str, now: &str) -> String {
    if let Some(rest) = now.strip_prefix(before) {
        return rest.to_owned();
    }
    let common = before.char_indices().zip(now.chars()).take_while(|((_, a), b)| a == b).count();
    now.chars().skip(common).collect()
}

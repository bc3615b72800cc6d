//! Eve's prompt and image input as the official code builds them: the conversation template
//! "v1" (Vicuna v1: the system line, ` USER: <image>\n{question} ASSISTANT:`, stop at `</s>`),
//! `tokenizer_image_token` (the prompt split on `<image>`, each chunk tokenized with BOS only on
//! the first, joined by −200) and `expand2square` with the CLIP mean colour.

use crate::clip::preprocess::CLIP_MEAN;
use crate::error::{ModelError, Result};
use crate::llm::tokenizer::Tokenizer;
use crate::vision::Rgb8Image;

use super::config::IMAGE_TOKEN_INDEX;

/// The image placeholder of a prompt.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// The system line of the "v1" template.
pub const SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// The "v1" prompt of one question about one image: the question's own `<image>` is removed and
/// the image put first in the user turn, as the official `Conversation.get_prompt` does.
pub fn v1_prompt(question: &str) -> String {
    let q = question.replace(IMAGE_PLACEHOLDER, "");
    format!("{SYSTEM} USER: {IMAGE_PLACEHOLDER}\n{} ASSISTANT:", q.trim())
}

/// `tokenizer_image_token`: `prompt` split on `<image>`, each chunk encoded with the
/// tokenizer's special tokens (BOS), the BOS of every chunk but the first dropped, the chunks
/// joined by [`IMAGE_TOKEN_INDEX`].
pub fn tokenizer_image_token(tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<i64>> {
    let bos = tokenizer.bos_id();
    let mut out = Vec::new();
    for (i, chunk) in prompt.split(IMAGE_PLACEHOLDER).enumerate() {
        let ids = tokenizer.encode(chunk, true)?;
        let skip = usize::from(i > 0 && bos.is_some() && ids.first().copied() == bos);
        if i > 0 {
            out.push(IMAGE_TOKEN_INDEX);
        }
        out.extend(ids[skip..].iter().map(|&id| i64::from(id)));
    }
    Ok(out)
}

/// The official background colour of `expand2square`: `int(mean · 255)` per channel.
pub fn pad_colour() -> [u8; 3] {
    CLIP_MEAN.map(|m| (m * 255.0) as u8)
}

/// `expand2square`: `image` centred (offset floored) on a square of its longer side filled with
/// `colour`; a square image is returned as it is.
pub fn expand2square(image: &Rgb8Image, colour: [u8; 3]) -> Result<Rgb8Image> {
    let (w, h) = (image.width(), image.height());
    if w == h {
        return Ok(image.clone());
    }
    let side = w.max(h);
    let (ox, oy) = ((side - w) / 2, (side - h) / 2);
    let mut data = colour.repeat(side * side);
    let src = image.as_bytes();
    for y in 0..h {
        let dst = ((y + oy) * side + ox) * 3;
        data[dst..dst + w * 3].copy_from_slice(&src[y * w * 3..(y + 1) * w * 3]);
    }
    Rgb8Image::new(side, side, data).map_err(|e| ModelError::Input(format!("expand2square: {e}")))
}

/// A piece of a prompt with image placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A run of token ids.
    Tokens(Vec<u32>),
    /// Where the image's tokens go.
    Image,
}

/// The pieces of a prompt of ids with [`IMAGE_TOKEN_INDEX`] placeholders, in order. Other
/// negative ids and ids past `u32` are errors.
pub fn split_image_tokens(ids: &[i64]) -> Result<Vec<Piece>> {
    let mut out: Vec<Piece> = Vec::new();
    for &id in ids {
        if id == IMAGE_TOKEN_INDEX {
            out.push(Piece::Image);
            continue;
        }
        let id = u32::try_from(id)
            .map_err(|_| ModelError::Input(format!("token id {id} is neither a token nor the image ({IMAGE_TOKEN_INDEX})")))?;
        match out.last_mut() {
            Some(Piece::Tokens(run)) => run.push(id),
            _ => out.push(Piece::Tokens(vec![id])),
        }
    }
    Ok(out)
}

//! SentencePiece `.model` files (a `ModelProto` protobuf) read by hand: the pieces (text, score,
//! type), the trainer's model type and special ids, and the normaliser settings. Only BPE models
//! without text normalisation (Llama, Mistral, Gemma…) are accepted; they are turned into the
//! GGUF `tokenizer.*` metadata llama.cpp would write, and built like a GGUF vocabulary.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{ModelError, Result};

/// `ModelProto` field numbers.
const PIECES: u64 = 1;
const TRAINER_SPEC: u64 = 2;
const NORMALIZER_SPEC: u64 = 3;
/// `SentencePiece` (a piece) field numbers.
const PIECE_TEXT: u64 = 1;
const PIECE_SCORE: u64 = 2;
const PIECE_TYPE: u64 = 3;
/// `TrainerSpec` field numbers: the model type, then `unk_id`, `bos_id`, `eos_id`, `pad_id`
/// (40 to 43).
const MODEL_TYPE: u64 = 3;
const UNK_ID: u64 = 40;
const PAD_ID: u64 = 43;
/// `NormalizerSpec` field numbers.
const NORM_NAME: u64 = 1;
const NORM_CHARSMAP: u64 = 2;
const ADD_DUMMY_PREFIX: u64 = 3;
const REMOVE_EXTRA_WHITESPACES: u64 = 4;
/// `TrainerSpec.ModelType.BPE`.
const MODEL_TYPE_BPE: u64 = 2;

/// A protobuf field value.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

/// A bounds-checked reader over one protobuf message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated field")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    fn next(&mut self) -> std::result::Result<Option<(u64, Field<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok(Some((key >> 3, field)))
    }
}

/// Calls `f` for every field of the message in `buf`.
fn fields<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Field<'a>) -> std::result::Result<(), String>) -> std::result::Result<(), String> {
    let mut reader = Reader { buf, pos: 0 };
    while let Some((number, field)) = reader.next()? {
        f(number, field)?;
    }
    Ok(())
}

fn bytes<'a>(field: Field<'a>, what: &str) -> std::result::Result<&'a [u8], String> {
    match field {
        Field::Bytes(b) => Ok(b),
        _ => Err(format!("{what} is not length-delimited")),
    }
}

fn varint(field: Field<'_>, what: &str) -> std::result::Result<u64, String> {
    match field {
        Field::Varint(v) => Ok(v),
        _ => Err(format!("{what} is not a varint")),
    }
}

/// An `int32` id field (negative ids, e.g. `pad_id = -1`, mean "none").
fn id(field: Field<'_>, what: &str) -> std::result::Result<Option<u64>, String> {
    let v = varint(field, what)? as i64;
    Ok(u64::try_from(v).ok())
}

/// The GGUF-style metadata of the SentencePiece model at `path`.
pub(super) fn read(path: &Path) -> Result<Value> {
    let name = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| ModelError::Io { path: name.clone(), source })?;
    parse(&data).map_err(|detail| ModelError::Tokenizer(format!("{name}: {detail}")))
}

fn parse(data: &[u8]) -> std::result::Result<Value, String> {
    let (mut tokens, mut scores, mut types) = (Vec::new(), Vec::new(), Vec::new());
    let mut model_type = 1; // UNIGRAM, the proto default
    let mut ids: [Option<u64>; 4] = [Some(0), Some(1), Some(2), None]; // unk, bos, eos, pad defaults
    let (mut norm_name, mut charsmap_len, mut dummy_prefix, mut remove_spaces) = (String::new(), 0, true, true);
    fields(data, |number, field| {
        match number {
            PIECES => {
                let (mut text, mut score, mut ty) = (String::new(), 0.0f32, 1u64);
                fields(bytes(field, "piece")?, |n, f| {
                    match n {
                        PIECE_TEXT => text = String::from_utf8(bytes(f, "piece text")?.to_vec()).map_err(|_| "piece text is not UTF-8")?,
                        PIECE_SCORE => match f {
                            Field::Fixed32(bits) => score = f32::from_bits(bits),
                            _ => return Err("piece score is not a float".into()),
                        },
                        PIECE_TYPE => ty = varint(f, "piece type")?,
                        _ => {}
                    }
                    Ok(())
                })?;
                tokens.push(text);
                scores.push(f64::from(score));
                types.push(ty);
            }
            TRAINER_SPEC => fields(bytes(field, "trainer_spec")?, |n, f| {
                match n {
                    MODEL_TYPE => model_type = varint(f, "model_type")?,
                    UNK_ID..=PAD_ID => ids[(n - UNK_ID) as usize] = id(f, "special id")?,
                    _ => {}
                }
                Ok(())
            })?,
            NORMALIZER_SPEC => fields(bytes(field, "normalizer_spec")?, |n, f| {
                match n {
                    NORM_NAME => norm_name = String::from_utf8_lossy(bytes(f, "normalizer name")?).into_owned(),
                    NORM_CHARSMAP => charsmap_len = bytes(f, "precompiled_charsmap")?.len(),
                    ADD_DUMMY_PREFIX => dummy_prefix = varint(f, "add_dummy_prefix")? != 0,
                    REMOVE_EXTRA_WHITESPACES => remove_spaces = varint(f, "remove_extra_whitespaces")? != 0,
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    if tokens.is_empty() {
        return Err("no pieces: not a SentencePiece model".into());
    }
    if model_type != MODEL_TYPE_BPE {
        return Err(format!("model type {model_type} is not supported (only BPE, type 2)"));
    }
    if charsmap_len > 0 || remove_spaces {
        return Err(format!("text normalisation ({norm_name:?}, remove_extra_whitespaces = {remove_spaces}) is not supported"));
    }
    let mut meta = json!({
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.add_space_prefix": dummy_prefix,
    });
    let keys = ["unknown_token_id", "bos_token_id", "eos_token_id", "padding_token_id"];
    for (key, id) in keys.iter().zip(ids) {
        if let (Some(id), Some(obj)) = (id, meta.as_object_mut()) {
            obj.insert(format!("tokenizer.ggml.{key}"), json!(id));
        }
    }
    Ok(meta)
}

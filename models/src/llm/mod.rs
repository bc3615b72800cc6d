//! Large language models: tokenizers, chat templates and the decoders built on them.

pub mod chat;
pub mod tokenizer;

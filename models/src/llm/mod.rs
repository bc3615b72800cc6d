//! Large language models: tokenizers, chat templates and the decoders built on them.

pub mod chat;
pub mod config;
pub mod decoder;
pub mod generate;
pub mod load;
pub mod random;
pub mod sampler;
pub mod tokenizer;
pub mod weights;

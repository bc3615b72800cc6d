//! # Kestrel models
//!
//! Model definitions built only on the [`kestrel`] runtime API: SLAB vision transformers, CLIP,
//! LLM decoders and the pipelines around them. Apps start with [`api`]: a few types that open a
//! model from a path and run it on plain inputs.

pub mod api;
pub mod clip;
pub mod error;
pub mod eve;
pub mod llava;
pub mod llm;
pub mod npy;
pub mod params;
pub mod slab;
pub mod video;
pub mod vision;

pub use error::{ModelError, Result};
pub use kestrel;

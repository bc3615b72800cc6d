//! # Kestrel runtime
//!
//! The engine under Kestrel's models: a GPU [`Context`] (adapter choice, [`Capabilities`]),
//! [`Tensor`]s in pooled GPU buffers, a [`Recorder`] that records a whole forward pass into one
//! command encoder, compiled-once [`pipeline`]s, per-dispatch [`profile`]s, WGSL kernels
//! ([`ops`]) with a plain CPU [`mod@reference`] for each. It knows no model.

pub mod bench;
pub mod caps;
pub mod context;
pub mod dtype;
pub mod error;
pub mod exec;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod pool;
pub mod profile;
pub mod quant;
pub mod reference;
pub mod shader;
pub mod tensor;
pub mod texture;
pub mod weights;

pub use caps::Capabilities;
pub use context::{AdapterSummary, Context, ContextOptions, SubgroupLayoutTest, list_adapters};
pub use dtype::DType;
pub use error::{KestrelError, Result};
pub use exec::Recorder;
pub use profile::{DispatchTiming, Profile, TimingSource};
pub use tensor::Tensor;

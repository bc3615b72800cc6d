//! # Kestrel runtime
//!
//! The engine under Kestrel's models: a GPU [`Context`] (adapter choice, [`Capabilities`]),
//! [`Tensor`]s in pooled GPU buffers, a [`Recorder`] that records a whole forward pass into one
//! command encoder, compiled-once [`pipeline`]s, per-dispatch [`profile`]s, WGSL kernels
//! ([`ops`]) with a plain CPU reference for each. It knows no model.
//!
//! Apps embed Kestrel through `kestrel_models::api` (or the C ABI) rather than this crate. The
//! engine's own plumbing — micro-benchmarks (`bench`), the CPU references of the kernels
//! (`reference`), the WGSL registry (`shader`), the buffer pool (`pool`) and the recorder's
//! internals (`exec`; [`Recorder`] itself is here) — stays public for the CLI, the models and
//! the tests, and is hidden from this documentation.

#[doc(hidden)]
pub mod bench;
pub mod caps;
pub mod context;
pub mod dtype;
pub mod error;
#[doc(hidden)]
pub mod exec;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod output;
pub mod pipeline;
#[doc(hidden)]
pub mod pool;
pub mod profile;
pub mod quant;
#[doc(hidden)]
pub mod reference;
#[doc(hidden)]
pub mod shader;
pub mod tensor;
pub mod texture;
pub mod weight_quant;
pub mod weights;

pub use caps::Capabilities;
pub use context::{AdapterSummary, Context, ContextOptions, SubgroupLayoutTest, list_adapters};
pub use dtype::DType;
pub use error::{KestrelError, Result};
pub use exec::Recorder;
pub use profile::{DispatchTiming, Profile, TimingSource};
pub use tensor::Tensor;
pub use weight_quant::Quant;

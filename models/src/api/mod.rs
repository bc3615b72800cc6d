//! The small API apps embed: open a model from a path with options, run it on plain inputs
//! (pixel buffers with a stride, prompts), get typed results that also serialise to the
//! CLI's JSON. The C ABI (`kestrel-capi`) and the mobile wrappers are built on it.
//!
//! - [`RuntimeOptions::open`] — the GPU context, opened once and shared by models;
//! - [`ImageClassifier`] — SLAB classification of an [`ImageView`] into a [`Classification`];
//! - [`TextGenerator`] — streamed generation of a [`GenerateRequest`] into a
//!   [`GenerateResult`], cancellable from another thread through a [`CancelFlag`];
//! - [`Model`] — either of them, its kind found from the file;
//! - [`ProfileReport`] — the on-device profiler of a loaded model.
//!
//! The smallest complete use, on the small test checkpoint committed with the repository:
//!
//! ```
//! use kestrel_models::api::{Arch, ClassifierOptions, ImageClassifier, ImageView, PixelFormat, RuntimeOptions};
//! use kestrel_models::slab::config::lookup;
//!
//! # fn main() -> kestrel_models::Result<()> {
//! // A DeiT of 2 blocks at 48 px with 10 classes (tools/slab_reference made it).
//! let mut arch = lookup("slab_deit_tiny")?;
//! (arch.embed_dims, arch.depths, arch.img_size, arch.patch_size, arch.num_classes) = (vec![36], vec![2], 48, 8, 10);
//! let opts = ClassifierOptions { arch: Some(Arch::Config(arch)), top: 3, ..Default::default() };
//! let ctx = RuntimeOptions::default().open()?;
//! let model = ImageClassifier::open(&ctx, "tests/fixtures/slab/slab_deit_test.pth".as_ref(), &opts)?;
//! let pixels: Vec<u8> = (0..64 * 48 * 4).map(|i| (i % 251) as u8).collect();
//! let result = model.classify(&ImageView::packed(&pixels, 64, 48, PixelFormat::Rgba8))?;
//! assert_eq!(result.top.len(), 3);
//! assert!(serde_json::to_string(&result).unwrap().starts_with(r#"{"top":[{"index":"#));
//! # Ok(())
//! # }
//! ```

mod classifier;
mod generator;
mod image;
mod model;
mod profile;
mod runtime;

pub use classifier::{Arch, ClassScore, Classification, ClassifierOptions, ImageClassifier};
pub use generator::{CancelFlag, GenerateRequest, GenerateResult, GeneratorOptions, TextGenerator};
pub use image::{ImageView, PixelFormat};
pub use model::{Model, ModelKind, ModelOptions};
pub use profile::{Latency, ProfileReport, ProfileRequest};
pub use runtime::RuntimeOptions;

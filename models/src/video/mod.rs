//! Free Video-LLM (arXiv 2410.10441, contrastive/FreeVideoLLM): a video question answered by a
//! LLaVA with few visual tokens, chosen by the prompt.
//!
//! - [`spec`] — the aggregation spec string (`slow_…-middle_…-fast_…`);
//! - [`sample`] — the official frame sampling, middle positions, RoI geometry and boxes, token
//!   counts (pure arithmetic, also for apps that decode frames themselves);
//! - [`pipeline`] — CLIP scores, the selection on the GPU and the assembly of LLaVA's visual
//!   tokens from decoded frames;
//! - [`error`] — why a video could not be read;
//! - `decode` (cargo feature `video`) — FFmpeg decoding of the sampled frames to RGB.

#[cfg(feature = "video")]
pub mod decode;
pub mod error;
pub mod pipeline;
pub mod sample;
pub mod spec;

pub use error::VideoError;
pub use pipeline::{FrameRoi, PROMPT, Selection, SelectionTimings, encode_video, encode_video_with, frame_pixels, prompt_text};
pub use sample::{DEFAULT_MAX_FRAMES, Plan, RoiBox, RoiGeometry, RoiGrid, middle_positions, seq_frames, text_guided};
pub use spec::{DEFAULT_SPEC, Spec};

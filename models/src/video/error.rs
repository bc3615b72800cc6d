//! Errors of video input.

use std::path::PathBuf;

/// Why a video could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// The file could not be opened or is not a container FFmpeg recognises (missing,
    /// zero-byte, not a video at all).
    #[error("{path}: cannot open as a video: {detail}")]
    Open {
        /// The file.
        path: PathBuf,
        /// FFmpeg's reason.
        detail: String,
    },
    /// The container has no video stream (e.g. audio only).
    #[error("{path}: no video stream")]
    NoVideoStream {
        /// The file.
        path: PathBuf,
    },
    /// FFmpeg has no decoder for the stream's codec.
    #[error("{path}: unsupported video codec {codec}")]
    UnsupportedCodec {
        /// The file.
        path: PathBuf,
        /// The codec's name.
        codec: String,
    },
    /// The stream has no frame.
    #[error("{path}: the video stream has no frames")]
    NoFrames {
        /// The file.
        path: PathBuf,
    },
    /// Decoding failed (corrupt or truncated data).
    #[error("{path}: decoding failed: {detail}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A frame that was asked for never came out of the decoder (truncated stream).
    #[error("{path}: frame {index} was not decoded ({decoded} frames came out of {counted} packets)")]
    MissingFrame {
        /// The file.
        path: PathBuf,
        /// The frame asked for.
        index: usize,
        /// Frames the decoder gave.
        decoded: usize,
        /// Frames counted from the packets.
        counted: usize,
    },
}

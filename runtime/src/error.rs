//! Typed errors of the Kestrel runtime.

use crate::dtype::DType;

/// Every failure the runtime reports. Nothing in the public API panics on user input; it
/// returns one of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KestrelError {
    /// No adapter matched the requested backends / name filter.
    #[error("no GPU adapter found (backends: {backends}, name filter: {filter:?}); available: {available}")]
    NoAdapter {
        /// The backends that were searched.
        backends: String,
        /// The `KESTREL_ADAPTER` substring, if any.
        filter: Option<String>,
        /// A comma-separated list of the adapters that were seen.
        available: String,
    },
    /// The adapter refused to create a device.
    #[error("request_device failed: {0}")]
    RequestDevice(String),
    /// A WGSL source failed to preprocess, parse, validate or compile.
    #[error("shader `{family}` ({variant}): {message}")]
    Shader {
        /// Kernel family (file name in `shaders/`).
        family: String,
        /// The variant's defines.
        variant: String,
        /// What went wrong.
        message: String,
    },
    /// The GPU reported a validation or out-of-memory error.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Mapping a buffer for readback failed.
    #[error("buffer readback failed: {0}")]
    Readback(String),
    /// Tensor shapes do not fit the operation.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The operation that rejected the shapes.
        op: &'static str,
        /// What did not match.
        detail: String,
    },
    /// The operation does not support this element type.
    #[error("{op}: unsupported dtype {dtype:?}")]
    UnsupportedDtype {
        /// The operation.
        op: &'static str,
        /// The offending element type.
        dtype: DType,
    },
    /// A single allocation exceeds what the device allows.
    #[error("buffer of {requested} bytes exceeds the device's max_buffer_size of {limit} bytes")]
    BufferTooLarge {
        /// Bytes asked for.
        requested: u64,
        /// The device limit.
        limit: u64,
    },
    /// Host data does not match the declared tensor size.
    #[error("data length {got} does not match the tensor's {expected} elements")]
    DataLength {
        /// Elements expected from the shape.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A weight file (or one tensor in it) is malformed or unsupported.
    #[error("{file}{}: {detail}", tensor.as_ref().map(|t| format!(" (tensor `{t}`)")).unwrap_or_default())]
    Weights {
        /// The file.
        file: String,
        /// The tensor concerned, if any.
        tensor: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// An argument is out of its valid range.
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Result type of the runtime.
pub type Result<T> = std::result::Result<T, KestrelError>;

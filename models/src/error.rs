//! Typed errors of the model crate.

/// Every failure a model, tokenizer or pipeline reports; nothing here panics on user input.
/// New kinds of failure may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// An error from the runtime (GPU, kernels, weight files).
    #[error(transparent)]
    Runtime(#[from] kestrel::KestrelError),
    /// A checkpoint does not match the architecture: a tensor is missing, misshapen or the
    /// file is of another model.
    #[error("{file}: {detail}")]
    Checkpoint {
        /// The weight file.
        file: String,
        /// What does not match.
        detail: String,
    },
    /// A model configuration is invalid or unknown.
    #[error("config: {0}")]
    Config(String),
    /// An input (image, tensor file, prompt) is unusable.
    #[error("input: {0}")]
    Input(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An image could not be decoded: unknown or unsupported format, corrupt or truncated data.
    #[error("image: {0}")]
    ImageDecode(String),
    /// An image is larger than the decoding limits. Detected from its header, before its pixels
    /// were allocated.
    #[error("image of {width}x{height} pixels exceeds the decoding limit ({limit})")]
    ImageTooLarge {
        /// Width stated by the image header.
        width: u32,
        /// Height stated by the image header.
        height: u32,
        /// The limit that was exceeded.
        limit: String,
    },
    /// A `.npy` file or buffer is malformed or of an unsupported kind.
    #[error("npy {path}: {detail}")]
    Npy {
        /// The file (or `<memory>` for an in-memory buffer).
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A tokenizer could not be built (malformed `tokenizer.json`, GGUF vocabulary or
    /// `tokenizer_config.json`), or could not encode or decode (e.g. a token id out of range).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to parse or render (including `raise_exception` in the template).
    #[error("chat template: {0}")]
    Template(String),
    /// A token sequence does not fit a decoder's context (its preallocated KV cache). Prompts are
    /// never truncated; generation stops when the context is full.
    #[error("{needed} positions exceed the context of {context} tokens (shorten the prompt or raise the context)")]
    ContextFull {
        /// Positions the sequence needs (already cached plus new).
        needed: usize,
        /// Positions the decoder holds.
        context: usize,
    },
    /// The model cannot do what was asked (e.g. an image given to a text-only model).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller cancelled the operation from another thread (a [`crate::api::CancelFlag`]).
    #[error("cancelled")]
    Cancelled,
    /// A video could not be read.
    #[error(transparent)]
    Video(#[from] crate::video::VideoError),
}

/// Result type of the model crate.
pub type Result<T> = std::result::Result<T, ModelError>;

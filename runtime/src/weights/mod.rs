//! Weight files behind one view: name → dtype, shape, stored bytes. Files are memory-mapped;
//! bytes are copied only when a tensor is uploaded or converted.
//!
//! Formats: safetensors, PyTorch checkpoints (zip + pickle), GGUF. [`open`] picks the format
//! from the file's magic bytes. Every malformed input is a [`KestrelError::Weights`] naming the
//! file (and the tensor, where one is concerned); no header field sizes an allocation before it
//! is checked against the file's length.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use crate::error::{KestrelError, Result};

/// Element type of a stored tensor, including block-quantised GGUF types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDType {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean (one byte).
    Bool,
    /// GGUF Q4_0: blocks of 32, f16 scale, 4-bit values − 8.
    Q4_0,
    /// GGUF Q4_1: blocks of 32, f16 scale and minimum, 4-bit values.
    Q4_1,
    /// GGUF Q8_0: blocks of 32, f16 scale, int8 values.
    Q8_0,
    /// GGUF Q4_K: super-blocks of 256.
    #[serde(rename = "q4_k")]
    Q4K,
    /// GGUF Q5_K: super-blocks of 256.
    #[serde(rename = "q5_k")]
    Q5K,
    /// GGUF Q6_K: super-blocks of 256.
    #[serde(rename = "q6_k")]
    Q6K,
}

impl WeightDType {
    /// `(elements per block, bytes per block)`; plain types are blocks of one element.
    pub const fn block(self) -> (usize, usize) {
        match self {
            WeightDType::F64 | WeightDType::I64 => (1, 8),
            WeightDType::F32 | WeightDType::I32 => (1, 4),
            WeightDType::F16 | WeightDType::BF16 | WeightDType::I16 => (1, 2),
            WeightDType::I8 | WeightDType::U8 | WeightDType::Bool => (1, 1),
            WeightDType::Q4_0 => (32, 18),
            WeightDType::Q4_1 => (32, 20),
            WeightDType::Q8_0 => (32, 34),
            WeightDType::Q4K => (256, 144),
            WeightDType::Q5K => (256, 176),
            WeightDType::Q6K => (256, 210),
        }
    }

    /// Bytes needed for `elements` values, or `None` when the count is not whole blocks or
    /// overflows.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        if elements % per != 0 {
            return None;
        }
        (elements / per).checked_mul(bytes)
    }

    /// Lower-case name as `kestrel inspect` prints it.
    pub fn name(self) -> &'static str {
        match self {
            WeightDType::F64 => "f64",
            WeightDType::F32 => "f32",
            WeightDType::F16 => "f16",
            WeightDType::BF16 => "bf16",
            WeightDType::I64 => "i64",
            WeightDType::I32 => "i32",
            WeightDType::I16 => "i16",
            WeightDType::I8 => "i8",
            WeightDType::U8 => "u8",
            WeightDType::Bool => "bool",
            WeightDType::Q4_0 => "q4_0",
            WeightDType::Q4_1 => "q4_1",
            WeightDType::Q8_0 => "q8_0",
            WeightDType::Q4K => "q4_k",
            WeightDType::Q5K => "q5_k",
            WeightDType::Q6K => "q6_k",
        }
    }
}

/// One tensor of a weight file.
#[derive(Clone, Debug, Serialize)]
pub struct TensorInfo {
    /// Name as stored (e.g. `blocks.0.attn.qkv.weight`).
    pub name: String,
    /// Stored element type.
    pub dtype: WeightDType,
    /// Shape, outermost first (GGUF's innermost-first order is reversed on load).
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A weight file opened for reading.
pub trait WeightSource: Send + Sync {
    /// `safetensors`, `pytorch` or `gguf`.
    fn format(&self) -> &'static str;
    /// The file's path, for error messages.
    fn path(&self) -> &Path;
    /// File-level metadata (safetensors `__metadata__`, GGUF key/values, …) as JSON.
    fn metadata(&self) -> serde_json::Value;
    /// Every tensor, in file order.
    fn tensors(&self) -> &[TensorInfo];
    /// The stored bytes of a tensor, row-major and contiguous (borrowed from the mapping when
    /// the file already stores it so).
    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>>;

    /// Looks a tensor up by name.
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors().iter().find(|t| t.name == name)
    }
}

/// Builds the error for a malformed file or tensor.
pub(crate) fn bad(path: &Path, tensor: Option<&str>, detail: impl Into<String>) -> KestrelError {
    KestrelError::Weights { file: path.display().to_string(), tensor: tensor.map(str::to_string), detail: detail.into() }
}

/// Opens a weight file, choosing the format from its first bytes.
pub fn open(path: &Path) -> Result<Box<dyn WeightSource>> {
    // Format detection by magic bytes is added with the loaders.
    Err(bad(path, None, "unrecognised weight file format (expected safetensors, PyTorch zip/pickle or GGUF)"))
}

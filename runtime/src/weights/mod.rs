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

pub mod dequant;
pub mod fold;
pub mod gguf;
pub mod pytorch;
pub mod safetensors;

/// A stored element type Kestrel lists but cannot read or convert (GGUF Q5_0, Q2_K, IQ…,
/// safetensors U16, F8…): its name and block geometry, so that sizes still check out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpaqueDType {
    name: &'static str,
    block: usize,
    bytes: usize,
}

impl OpaqueDType {
    /// An opaque type of `bytes` bytes per `block` elements.
    pub(crate) const fn new(name: &'static str, block: usize, bytes: usize) -> Self {
        OpaqueDType { name, block, bytes }
    }

    /// Lower-case name as the file's format spells it (e.g. `q5_0`, `f8_e4m3`).
    pub const fn name(self) -> &'static str {
        self.name
    }
}

/// Element type of a stored tensor, including block-quantised GGUF types. Serialises as its
/// [`WeightDType::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    Q4K,
    /// GGUF Q5_K: super-blocks of 256.
    Q5K,
    /// GGUF Q6_K: super-blocks of 256.
    Q6K,
    /// A type that is listed but whose bytes cannot be read (see [`OpaqueDType`]).
    Opaque(OpaqueDType),
}

impl Serialize for WeightDType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
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
            WeightDType::Opaque(o) => (o.block, o.bytes),
        }
    }

    /// Bytes needed for `elements` values, or `None` when the count is not whole blocks or
    /// overflows.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        if per == 0 || !elements.is_multiple_of(per) {
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
            WeightDType::Opaque(o) => o.name,
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

/// Memory-maps a whole file read-only.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, None, format!("cannot open: {e}")))?;
    // SAFETY: the mapping is read-only and Kestrel never writes the file; like every mmap-based
    // loader it assumes no other process truncates the file while it is open.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(path, None, format!("cannot map: {e}")))
}

/// Opens a weight file, choosing the format from its first bytes: `GGUF` → GGUF; a zip
/// (`PK\x03\x04`) or a pickle (`0x80` protocol byte) → PyTorch; an 8-byte little-endian
/// header length followed by `{` → safetensors.
pub fn open(path: &Path) -> Result<Box<dyn WeightSource>> {
    let head = read_head(path, 9)?;
    if head.starts_with(b"GGUF") {
        return Ok(Box::new(gguf::open(path)?));
    }
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return pytorch::open(path);
    }
    if head.get(8) == Some(&b'{') {
        return Ok(Box::new(safetensors::open(path)?));
    }
    Err(bad(path, None, "unrecognised weight file format (expected safetensors, PyTorch zip/pickle or GGUF)"))
}

/// The first `n` bytes of the file (fewer if it is shorter).
fn read_head(path: &Path, n: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| bad(path, None, format!("cannot open: {e}")))?;
    let mut head = Vec::new();
    file.take(n).read_to_end(&mut head).map_err(|e| bad(path, None, format!("cannot read: {e}")))?;
    Ok(head)
}

/// A tensor converted to f32 (dequantised on the CPU where it is block-quantised).
pub fn tensor_f32(src: &dyn WeightSource, name: &str) -> Result<Vec<f32>> {
    let info = src.info(name).ok_or_else(|| bad(src.path(), Some(name), "no such tensor"))?;
    let bytes = src.bytes(name)?;
    dequant::to_f32(info.dtype, &bytes, info.numel()).map_err(|e| match e {
        KestrelError::InvalidArgument { detail, .. } => bad(src.path(), Some(name), detail),
        other => other,
    })
}

//! Weight files behind one view: name → dtype, shape, stored bytes. Files are memory-mapped;
//! bytes are copied only when a tensor is uploaded or converted.
//!
//! Formats: safetensors, PyTorch checkpoints (zip + pickle), GGUF, and sharded checkpoints
//! through their `*.index.json`. [`open`] picks the format from the file's structure. Every
//! malformed input is a [`KestrelError::Weights`] naming the file (and the tensor, where one is
//! concerned); no header field sizes an allocation before it is checked against the file's
//! length.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use crate::error::{KestrelError, Result};
use crate::quant::QuantScheme;

pub mod convert;
pub mod dequant;
pub mod fold;
pub mod gguf;
pub mod kestrel_file;
pub mod pytorch;
pub mod renamed;
pub mod safetensors;
pub mod sharded;

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

    /// The quantisation scheme whose GPU kernels read this GGUF block type as stored (Q4_0,
    /// Q4_1, Q8_0); `None` for every other type. The one place file types map to schemes.
    pub const fn gguf_scheme(self) -> Option<QuantScheme> {
        match self {
            WeightDType::Q4_0 => Some(QuantScheme::Q4_0),
            WeightDType::Q4_1 => Some(QuantScheme::Q4_1),
            WeightDType::Q8_0 => Some(QuantScheme::Q8_0),
            _ => None,
        }
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
    /// Number of elements: 0 when any dimension is 0, whatever the others are (a GGUF shape
    /// `[0, 2^40, 2^40]` is valid and empty), else the product of the dimensions. Every loader
    /// rejects a shape whose element count overflows, so the saturation at `usize::MAX` never
    /// shows for a tensor of an opened file.
    pub fn numel(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX)
    }
}

/// A weight file opened for reading.
pub trait WeightSource: Send + Sync {
    /// `safetensors`, `pytorch`, `gguf` or `kestrel`.
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

/// The whole content of an opened weight file: a read-only memory map, or (for
/// [`open_bytes`]) an owned buffer.
pub(crate) enum FileBytes {
    /// A memory-mapped file.
    Mapped(memmap2::Mmap),
    /// Bytes held in memory.
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// Memory-maps a whole file read-only.
pub(crate) fn map_file(path: &Path) -> Result<FileBytes> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, None, format!("cannot open: {e}")))?;
    // SAFETY: the mapping is read-only and Kestrel never writes the file; like every mmap-based
    // loader it assumes no other process truncates the file while it is open.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(path, None, format!("cannot map: {e}")))?;
    Ok(FileBytes::Mapped(map))
}

/// Opens a weight file, choosing the format from its structure (not from one byte): GGUF, a PyTorch
/// zip or legacy-pickle checkpoint, or safetensors — a Kestrel model file when its metadata has
/// the `kestrel` key (then validated as one, see [`kestrel_file`]). A `*.index.json` file is a
/// sharded checkpoint's index: its shards are opened and served as one source ([`sharded`]).
pub fn open(path: &Path) -> Result<Box<dyn WeightSource>> {
    if sharded::is_index(path) {
        return Ok(Box::new(sharded::open_index(path)?));
    }
    from_bytes(path, map_file(path)?)
}

/// Parses a weight file held in memory, detecting the format as [`open`] does; errors name the
/// file `<memory>`. The same parsers as [`open`] (which maps the file instead); exposed for the
/// fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn open_bytes(data: Vec<u8>) -> Result<Box<dyn WeightSource>> {
    from_bytes(Path::new("<memory>"), FileBytes::Owned(data))
}

/// Detects the format of `data` and parses it; `path` names the file in errors.
fn from_bytes(path: &Path, data: FileBytes) -> Result<Box<dyn WeightSource>> {
    if data.is_empty() {
        return Err(bad(path, None, "empty file"));
    }
    match detect(&data) {
        Some(Format::Gguf) => Ok(Box::new(gguf::from_bytes(path, data)?)),
        Some(Format::Pytorch) => pytorch::from_bytes(path, data),
        Some(Format::Safetensors) => {
            let st = safetensors::from_bytes(path, data)?;
            if kestrel_file::KestrelFile::is_kestrel(&st) {
                return Ok(Box::new(kestrel_file::KestrelFile::from_safetensors(st)?));
            }
            Ok(Box::new(st))
        }
        None => Err(unrecognised(path)),
    }
}

/// The container formats [`open`] recognises.
enum Format {
    /// GGUF.
    Gguf,
    /// PyTorch zip or legacy pickle.
    Pytorch,
    /// safetensors.
    Safetensors,
}

/// The format from a file's structure, not from one byte:
/// - `GGUF` magic → GGUF; a zip local-file header (`PK\x03\x04`) → PyTorch zip;
/// - an 8-byte little-endian header length that fits the file, followed by a header that parses
///   as one JSON object → safetensors (Kestrel files are safetensors);
/// - the legacy PyTorch pickle stream (protocol 2–5, then the magic-number opcodes) → PyTorch;
/// - else a `{` after 8 bytes → a damaged safetensors file, for its parser's precise error.
///
/// Safetensors is tried before the legacy pickle: a header length whose low byte is `0x80`
/// makes a safetensors file start like a pickle's `PROTO` opcode.
fn detect(data: &[u8]) -> Option<Format> {
    if data.starts_with(b"GGUF") {
        Some(Format::Gguf)
    } else if data.starts_with(b"PK\x03\x04") {
        Some(Format::Pytorch)
    } else if is_safetensors(data) {
        Some(Format::Safetensors)
    } else if pytorch::is_legacy(data) {
        Some(Format::Pytorch)
    } else if data.get(8) == Some(&b'{') {
        // A damaged safetensors file: its parser says what is wrong with it.
        Some(Format::Safetensors)
    } else {
        None
    }
}

/// Whether `data` is laid out as safetensors: an 8-byte header length that fits in the file,
/// then that many bytes holding one JSON object (trailing space padding allowed).
fn is_safetensors(data: &[u8]) -> bool {
    let Some(len) = data.get(..8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])) else {
        return false;
    };
    let Some(header) = usize::try_from(len).ok().and_then(|n| data.get(8..8usize.checked_add(n)?)) else {
        return false;
    };
    header.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(header).is_ok()
}

/// The error for a file of no known format.
fn unrecognised(path: &Path) -> KestrelError {
    bad(
        path,
        None,
        "unrecognised weight file format (expected safetensors, a Kestrel model file, a PyTorch zip or legacy checkpoint, or GGUF)",
    )
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

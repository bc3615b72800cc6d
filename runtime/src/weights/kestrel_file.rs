//! The Kestrel model file: a safetensors container whose tensors are already in the form the
//! GPU takes, so loading is a memory map plus one upload per buffer.
//!
//! The safetensors `__metadata__` holds one key, `kestrel`, whose value is a JSON string:
//!
//! ```json
//! {"version": 1, "architecture": "llama", "config": {…}, "quant": "w4",
//!  "source": {"file": "model.gguf", "sha256": "…", "format": "gguf"},
//!  "tensors": {"blk.0.attn_q.weight": {"scheme": "w4", "shape": [576, 576]}}}
//! ```
//!
//! `tensors` lists the quantised weights only. A quantised weight `NAME` is stored as two U32
//! tensors, `NAME.qvalues` and `NAME.qscales`, holding the packed words of
//! [`PackedWeights`] (layout in [`crate::quant`]); every other tensor is stored as f32, or as
//! f16 in a file whose `quant` is `f16`. [`KestrelFile::open`] checks all of this against the
//! stored tensors and reports each mismatch as a [`KestrelError::Weights`](crate::KestrelError).
//! Files are written by [`convert`](super::convert::convert). Data is little-endian; like the
//! tensor uploads, the writer assumes a little-endian host.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::safetensors::SafetensorsFile;
use super::{TensorInfo, WeightDType, WeightSource, bad};
use crate::Quant;
use crate::context::Context;
use crate::dtype::DType;
use crate::error::Result;
use crate::quant::{PackedWeights, QuantScheme, QuantTensor, check_weight_shape, packed_words};
use crate::tensor::Tensor;

/// The format version this build writes and reads.
pub const VERSION: u64 = 1;
/// The `__metadata__` key that marks a safetensors file as a Kestrel file.
pub const METADATA_KEY: &str = "kestrel";
/// Suffix of the stored tensor holding a quantised weight's packed values.
pub const VALUES_SUFFIX: &str = ".qvalues";
/// Suffix of the stored tensor holding a quantised weight's packed scales.
pub const SCALES_SUFFIX: &str = ".qscales";

/// Where a Kestrel file was converted from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The source file's name (no directory).
    pub file: String,
    /// sha256 of the source file, lower-case hex.
    pub sha256: String,
    /// The source's format (`safetensors`, `gguf`, `pytorch`, …).
    pub format: String,
}

/// A quantised weight's entry in the metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedInfo {
    /// [`QuantScheme::name`] of its packing.
    pub scheme: String,
    /// The weight's logical shape `[N, K]`.
    pub shape: Vec<usize>,
}

/// The parsed `kestrel` metadata value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KestrelHeader {
    /// Format version ([`VERSION`]).
    pub version: u64,
    /// Model architecture name (free text, e.g. `llama`, `bert`).
    pub architecture: String,
    /// Model configuration, a JSON object.
    pub config: serde_json::Value,
    /// [`Quant::name`] of the storage choice.
    pub quant: String,
    /// Where the file came from.
    pub source: SourceInfo,
    /// Every quantised weight by logical name.
    pub tensors: BTreeMap<String, PackedInfo>,
}

/// A quantised weight of an open file: its scheme, logical shape and stored tensor names.
#[derive(Clone, Debug)]
struct PackedEntry {
    scheme: QuantScheme,
    shape: [usize; 2],
    values: String,
    scales: String,
}

/// Every tensor of a Kestrel file in GPU memory, by logical name.
#[derive(Debug, Default)]
pub struct UploadedWeights {
    /// Tensors stored as f32 / f16.
    pub tensors: HashMap<String, Tensor>,
    /// Quantised weights.
    pub quantised: HashMap<String, QuantTensor>,
}

/// An open, validated Kestrel model file (memory-mapped).
pub struct KestrelFile {
    inner: SafetensorsFile,
    header: KestrelHeader,
    quant: Quant,
    packed: BTreeMap<String, PackedEntry>,
}

impl KestrelFile {
    /// Opens and validates a Kestrel file: the metadata's version, quant, config and every
    /// quantised entry against the stored tensors (names, dtypes, word counts), and every
    /// stored tensor against the metadata.
    pub fn open(path: &Path) -> Result<KestrelFile> {
        KestrelFile::from_safetensors(super::safetensors::open(path)?)
    }

    /// Whether an opened safetensors file carries the Kestrel metadata key.
    pub(crate) fn is_kestrel(st: &SafetensorsFile) -> bool {
        st.metadata().get(METADATA_KEY).is_some()
    }

    /// Validates an opened safetensors file as a Kestrel file.
    pub(crate) fn from_safetensors(inner: SafetensorsFile) -> Result<KestrelFile> {
        let path = inner.path().to_path_buf();
        let err = |tensor: Option<&str>, detail: String| bad(&path, tensor, detail);
        let meta = inner.metadata();
        let raw = meta
            .get(METADATA_KEY)
            .and_then(|v| v.as_str())
            .ok_or_else(|| err(None, format!("not a Kestrel file: no `{METADATA_KEY}` metadata key")))?;
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| err(None, format!("`{METADATA_KEY}` metadata is not JSON: {e}")))?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(VERSION) => {}
            Some(v) => return Err(err(None, format!("unsupported Kestrel file version {v} (this build reads {VERSION})"))),
            None => return Err(err(None, "Kestrel metadata has no integer `version`".into())),
        }
        let header: KestrelHeader = serde_json::from_value(value).map_err(|e| err(None, format!("Kestrel metadata: {e}")))?;
        let quant = Quant::storage_from_name(&header.quant)
            .ok_or_else(|| err(None, format!("unknown quant `{}` (expected f32, f16, w8 or w4)", header.quant)))?;
        if !header.config.is_object() {
            return Err(err(None, "Kestrel metadata `config` must be a JSON object".into()));
        }
        let mut packed = BTreeMap::new();
        let mut claimed = HashSet::new();
        for (name, p) in &header.tensors {
            let scheme = QuantScheme::from_name(&p.scheme).ok_or_else(|| err(Some(name), format!("unknown scheme `{}`", p.scheme)))?;
            if quant.scheme() != Some(scheme) {
                return Err(err(Some(name), format!("scheme {} in a file whose quant is {}", scheme.name(), quant.name())));
            }
            let (n, k) = check_weight_shape(scheme, &p.shape).map_err(|e| err(Some(name), e.to_string()))?;
            if inner.info(name).is_some() {
                return Err(err(Some(name), "stored both as a plain tensor and as a quantised weight".into()));
            }
            let (vw, sw) = packed_words(scheme, n, k);
            let values = format!("{name}{VALUES_SUFFIX}");
            let scales = format!("{name}{SCALES_SUFFIX}");
            for (stored, words) in [(&values, vw), (&scales, sw)] {
                let info = inner.info(stored).ok_or_else(|| err(Some(name), format!("metadata names `{stored}`, which the file lacks")))?;
                if !is_u32(info.dtype) || info.shape != [words] {
                    return Err(err(
                        Some(stored),
                        format!(
                            "stored as {} {:?}, expected u32 [{words}] for a {} weight [{n}, {k}]",
                            info.dtype.name(),
                            info.shape,
                            scheme.name()
                        ),
                    ));
                }
                claimed.insert(stored.clone());
            }
            packed.insert(name.clone(), PackedEntry { scheme, shape: [n, k], values, scales });
        }
        for t in inner.tensors() {
            if claimed.contains(&t.name) {
                continue;
            }
            if t.name.ends_with(VALUES_SUFFIX) || t.name.ends_with(SCALES_SUFFIX) {
                return Err(err(Some(&t.name), "packed buffer that no metadata entry names".into()));
            }
            if t.dtype != quant.float_dtype() {
                return Err(err(
                    Some(&t.name),
                    format!("stored as {}, expected {} in a {} file", t.dtype.name(), quant.float_dtype().name(), quant.name()),
                ));
            }
        }
        Ok(KestrelFile { inner, header, quant, packed })
    }

    /// The parsed metadata.
    pub fn header(&self) -> &KestrelHeader {
        &self.header
    }

    /// The storage choice.
    pub fn quant(&self) -> Quant {
        self.quant
    }

    /// Logical names of the quantised weights, sorted.
    pub fn quantised_names(&self) -> impl Iterator<Item = &str> {
        self.packed.keys().map(String::as_str)
    }

    /// Names of the tensors stored as f32 / f16, in file order.
    pub fn plain_names(&self) -> impl Iterator<Item = &str> {
        self.inner
            .tensors()
            .iter()
            .filter(|t| !(t.name.ends_with(VALUES_SUFFIX) || t.name.ends_with(SCALES_SUFFIX)))
            .map(|t| t.name.as_str())
    }

    /// The packed value and scale bytes of a quantised weight, borrowed from the mapping.
    fn packed_bytes(&self, e: &PackedEntry) -> Result<(&[u8], &[u8])> {
        Ok((self.inner.stored_bytes(&e.values)?, self.inner.stored_bytes(&e.scales)?))
    }

    /// A quantised weight's packed words on the CPU; `Ok(None)` when `name` is a plain tensor,
    /// an error when the file has no tensor of that name.
    pub fn packed(&self, name: &str) -> Result<Option<PackedWeights>> {
        let Some(e) = self.packed.get(name) else {
            return self.plain_info(name).map(|_| None);
        };
        let (v, s) = self.packed_bytes(e)?;
        let words = |b: &[u8]| b.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        Ok(Some(PackedWeights { scheme: e.scheme, n: e.shape[0], k: e.shape[1], values: words(v), scales: words(s) }))
    }

    /// Uploads a quantised weight straight from the mapping (no host copy); `Ok(None)` when
    /// `name` is a plain tensor, an error when the file has no tensor of that name.
    pub fn upload_packed(&self, ctx: &Arc<Context>, name: &str) -> Result<Option<QuantTensor>> {
        let Some(e) = self.packed.get(name) else {
            return self.plain_info(name).map(|_| None);
        };
        let (v, s) = self.packed_bytes(e)?;
        QuantTensor::from_le_bytes(ctx, e.scheme, &e.shape, v, s).map(Some)
    }

    /// Uploads a plain tensor as stored (f32 or f16) straight from the mapping.
    pub fn upload_plain(&self, ctx: &Arc<Context>, name: &str) -> Result<Tensor> {
        let info = self.plain_info(name)?;
        let dtype = if info.dtype == WeightDType::F16 { DType::F16 } else { DType::F32 };
        Tensor::from_le_bytes(ctx, &info.shape, dtype, self.inner.stored_bytes(name)?)
    }

    /// Uploads every tensor: quantised weights as [`QuantTensor`]s, the rest as [`Tensor`]s.
    /// The uploads are queued; call [`Context::sync`] to wait for them.
    pub fn upload_all(&self, ctx: &Arc<Context>) -> Result<UploadedWeights> {
        let mut out = UploadedWeights::default();
        for name in self.packed.keys() {
            if let Some(q) = self.upload_packed(ctx, name)? {
                out.quantised.insert(name.clone(), q);
            }
        }
        for name in self.plain_names() {
            out.tensors.insert(name.to_string(), self.upload_plain(ctx, name)?);
        }
        Ok(out)
    }

    /// The info of a plain (not quantised) stored tensor.
    fn plain_info(&self, name: &str) -> Result<&TensorInfo> {
        match self.inner.info(name) {
            Some(t) if !self.is_packed_buffer(name) => Ok(t),
            Some(_) => Err(bad(self.path(), Some(name), "a packed buffer; use the quantised weight's name")),
            None => Err(bad(self.path(), Some(name), "no such tensor")),
        }
    }

    /// Whether a stored tensor is the value or scale buffer of a quantised weight.
    fn is_packed_buffer(&self, stored: &str) -> bool {
        [VALUES_SUFFIX, SCALES_SUFFIX].iter().any(|s| stored.strip_suffix(s).is_some_and(|n| self.packed.contains_key(n)))
    }
}

/// Whether a safetensors dtype as Kestrel lists it is U32.
fn is_u32(d: WeightDType) -> bool {
    matches!(d, WeightDType::Opaque(o) if o.name() == "u32")
}

impl WeightSource for KestrelFile {
    fn format(&self) -> &'static str {
        "kestrel"
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }

    /// The safetensors metadata with the `kestrel` value parsed into a JSON object.
    fn metadata(&self) -> serde_json::Value {
        let mut meta = self.inner.metadata();
        if let (Some(m), Ok(h)) = (meta.as_object_mut(), serde_json::to_value(&self.header)) {
            m.insert(METADATA_KEY.to_string(), h);
        }
        meta
    }

    /// The stored tensors: packed buffers appear as `NAME.qvalues` / `NAME.qscales` (u32).
    fn tensors(&self) -> &[TensorInfo] {
        self.inner.tensors()
    }

    /// Bytes of a plain tensor; packed buffers are refused (read them with
    /// [`KestrelFile::packed`]).
    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        self.plain_info(name)?;
        self.inner.bytes(name)
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.inner.info(name)
    }
}

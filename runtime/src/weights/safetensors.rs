//! safetensors files: an 8-byte little-endian header length, a JSON header, then the data.
//! The header is parsed and validated by the `safetensors` crate over the memory-mapped file.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype, SafeTensors};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{FileBytes, OpaqueDType, TensorInfo, WeightDType, WeightSource, bad, map_file};
use crate::error::Result;

/// A memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: FileBytes,
    metadata: serde_json::Value,
    tensors: Vec<TensorInfo>,
    /// Absolute byte range of each tensor in the file, parallel to `tensors`.
    ranges: Vec<(usize, usize)>,
    index: HashMap<String, usize>,
}

/// Opens a safetensors file. Tensors whose dtype Kestrel cannot read (U16, U32, U64, F8…, F4,
/// F6) are listed as [`WeightDType::Opaque`]; asking for their bytes is an error.
pub fn open(path: &Path) -> Result<SafetensorsFile> {
    from_bytes(path, map_file(path)?)
}

/// Parses a safetensors file whose bytes are `map`; `path` names it in errors.
pub(crate) fn from_bytes(path: &Path, map: FileBytes) -> Result<SafetensorsFile> {
    let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| bad(path, None, format!("safetensors: {e}")))?;
    // read_metadata checked that 8 + header + data is exactly the file.
    let data_start = 8 + header_len;
    check_unique_keys(path, &map[8..data_start])?;
    let mut tensors = Vec::new();
    let mut ranges = Vec::new();
    let mut index = HashMap::new();
    for name in meta.offset_keys() {
        let info = meta.info(&name).ok_or_else(|| bad(path, Some(&name), "tensor listed without info"))?;
        let dtype = map_dtype(info.dtype).ok_or_else(|| bad(path, Some(&name), format!("unknown dtype {}", info.dtype)))?;
        let (s, e) = info.data_offsets;
        ranges.push((data_start + s, data_start + e));
        index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo { name, dtype, shape: info.shape.clone() });
    }
    let metadata = match meta.metadata() {
        Some(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    Ok(SafetensorsFile { path: path.to_path_buf(), map, metadata, tensors, ranges, index })
}

/// Rejects a header that names a key twice (a JSON map would silently keep the last one).
fn check_unique_keys(path: &Path, header: &[u8]) -> Result<()> {
    let keys: KeyList = serde_json::from_slice(header).map_err(|e| bad(path, None, format!("safetensors header: {e}")))?;
    let mut seen = HashSet::new();
    for k in keys.0 {
        if !seen.insert(k.clone()) {
            return Err(bad(path, Some(&k), "duplicate tensor name in the header"));
        }
    }
    Ok(())
}

/// The top-level keys of a JSON object, in order, duplicates kept.
struct KeyList(Vec<String>);

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = KeyList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<KeyList, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(KeyList(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// Kestrel's view of a safetensors dtype; `None` for a dtype this function does not know.
fn map_dtype(d: Dtype) -> Option<WeightDType> {
    Some(match d {
        Dtype::BOOL => WeightDType::Bool,
        Dtype::U8 => WeightDType::U8,
        Dtype::I8 => WeightDType::I8,
        Dtype::I16 => WeightDType::I16,
        Dtype::F16 => WeightDType::F16,
        Dtype::BF16 => WeightDType::BF16,
        Dtype::I32 => WeightDType::I32,
        Dtype::F32 => WeightDType::F32,
        Dtype::F64 => WeightDType::F64,
        Dtype::I64 => WeightDType::I64,
        Dtype::U16 => WeightDType::Opaque(OpaqueDType::new("u16", 1, 2)),
        Dtype::U32 => WeightDType::Opaque(OpaqueDType::new("u32", 1, 4)),
        Dtype::U64 => WeightDType::Opaque(OpaqueDType::new("u64", 1, 8)),
        Dtype::F8_E5M2 => WeightDType::Opaque(OpaqueDType::new("f8_e5m2", 1, 1)),
        Dtype::F8_E4M3 => WeightDType::Opaque(OpaqueDType::new("f8_e4m3", 1, 1)),
        Dtype::F8_E8M0 => WeightDType::Opaque(OpaqueDType::new("f8_e8m0", 1, 1)),
        Dtype::F4 => WeightDType::Opaque(OpaqueDType::new("f4", 2, 1)),
        Dtype::F6_E2M3 => WeightDType::Opaque(OpaqueDType::new("f6_e2m3", 4, 3)),
        Dtype::F6_E3M2 => WeightDType::Opaque(OpaqueDType::new("f6_e3m2", 4, 3)),
        _ => return None,
    })
}

impl SafetensorsFile {
    /// The stored bytes of a tensor whatever its dtype, borrowed from the mapping (Kestrel
    /// files keep packed quantised weights as U32 words, which [`WeightSource::bytes`] refuses).
    pub(crate) fn stored_bytes(&self, name: &str) -> Result<&[u8]> {
        let &i = self.index.get(name).ok_or_else(|| bad(&self.path, Some(name), "no such tensor"))?;
        let (s, e) = self.ranges[i];
        self.map.get(s..e).ok_or_else(|| bad(&self.path, Some(name), "data range past the end of the file"))
    }
}

impl WeightSource for SafetensorsFile {
    fn format(&self) -> &'static str {
        "safetensors"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> serde_json::Value {
        self.metadata.clone()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let &i = self.index.get(name).ok_or_else(|| bad(&self.path, Some(name), "no such tensor"))?;
        if let WeightDType::Opaque(o) = self.tensors[i].dtype {
            return Err(bad(&self.path, Some(name), format!("dtype {} is not supported", o.name())));
        }
        self.stored_bytes(name).map(Cow::Borrowed)
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
}

//! PyTorch checkpoints (`.pth` / `.pt` / `.bin`) as a [`WeightSource`].
//!
//! Two container formats are read:
//! - **zip** (`torch.save` since 1.6): `<archive>/data.pkl` is the pickled object, each storage is
//!   the uncompressed entry `<archive>/data/<key>`, borrowed from the memory map;
//! - **legacy** (`_use_new_zipfile_serialization=False`): a magic-number pickle, a protocol
//!   pickle, a sys-info pickle, the object pickle, a pickled list of storage keys, then each
//!   storage as an 8-byte element count followed by its bytes.
//!
//! The pickles are read by a safe unpickler that never imports or executes anything (see
//! `pickle.rs`): only torch's tensor-rebuilding globals are interpreted, every other object (a
//! training config, an optimizer state…) is skipped.
//!
//! **Where the state dict is looked for**, first match wins: the top-level object itself if it is
//! a dict holding at least one tensor; else the value under `model`, then `state_dict`, then
//! `model_state`, if it is such a dict. Entries of the chosen dict that are not tensors are
//! skipped and listed in [`WeightSource::metadata`] (`{"format": "zip"|"legacy", "state_dict":
//! key or "" for the top level, "skipped": {name: kind}, "skipped_calls": [callable…]}`; a
//! non-empty `skipped_calls` — `os.system`, a model class — is also logged as a warning). A
//! whole pickled `nn.Module` (not a state dict) is rejected: rebuilding it would mean running
//! its class.
//!
//! Tensors keep their storage's element type (`FloatStorage` → f32, `HalfStorage` → f16,
//! `BFloat16Storage` → bf16, `LongStorage` → i64, …). Storage offset and strides are honoured:
//! a row-major contiguous tensor is borrowed from the map, any other one is materialised by a
//! strided copy. Every size, stride and offset is checked against the storage at open time; a
//! strided tensor may not expand to more bytes than the file holds (only a broadcast, stride-0
//! view could, and a weight file does not store those).

mod pickle;
mod zip;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::Result;
use crate::weights::{FileBytes, TensorInfo, WeightSource, bad, map_file};
use pickle::{PidStyle, TensorRef, Value};

/// Keys under which a nested state dict is looked for, in order (after the top level).
pub const STATE_DICT_KEYS: [&str; 3] = ["model", "state_dict", "model_state"];

/// The legacy format's magic number, as pickled after `PROTO n`: `LONG1` of 10 bytes.
const LEGACY_MAGIC: [u8; 12] = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Whether `data` starts with the legacy format's magic-number pickle: `PROTO n` (2 ≤ n ≤ 5),
/// an optional `FRAME` (protocol 4+), then [`LEGACY_MAGIC`].
pub(crate) fn is_legacy(data: &[u8]) -> bool {
    if data.first() != Some(&0x80) || !matches!(data.get(1), Some(2..=5)) {
        return false;
    }
    let body = if data.get(2) == Some(&0x95) { 11 } else { 2 };
    data.get(body..body + LEGACY_MAGIC.len()) == Some(&LEGACY_MAGIC[..])
}

/// Opens a PyTorch checkpoint (zip or legacy format) and indexes its state dict.
pub fn open(path: &Path) -> Result<Box<dyn WeightSource>> {
    from_bytes(path, map_file(path)?)
}

/// Parses a PyTorch checkpoint whose bytes are `map`; `path` names it in errors.
pub(crate) fn from_bytes(path: &Path, map: FileBytes) -> Result<Box<dyn WeightSource>> {
    Ok(Box::new(PytorchFile::parse(path, map)?))
}

/// Runs the unpickler alone over `data`, with both persistent-id styles, and returns whether
/// either accepted it. Exposed for the `pickle` fuzz target.
#[doc(hidden)]
pub fn fuzz_unpickle(data: &[u8]) -> bool {
    let zip = pickle::unpickle(data, PidStyle::Zip).is_ok();
    let legacy = pickle::unpickle(data, PidStyle::Legacy).is_ok();
    zip || legacy
}

/// Reads the zip central directory of `data` alone and returns its entry count. Exposed for
/// the `pytorch_zip` fuzz target.
#[doc(hidden)]
pub fn fuzz_zip_index(data: &[u8]) -> Result<usize> {
    Ok(zip::ZipIndex::parse(Path::new("<memory>"), data)?.entries.len())
}

/// Where a tensor's elements are in the map.
struct Loc {
    /// Byte offset of the tensor's first element (storage start + offset · element size).
    start: usize,
    /// Element size in bytes.
    elem: usize,
    /// Sizes.
    shape: Vec<usize>,
    /// Strides in elements.
    stride: Vec<usize>,
    /// Total bytes of the contiguous result.
    bytes: usize,
    /// Whether the strides are row-major contiguous (then the bytes are borrowed).
    contiguous: bool,
}

/// An opened PyTorch checkpoint.
struct PytorchFile {
    /// The file.
    path: PathBuf,
    /// The whole file, mapped.
    map: FileBytes,
    /// Tensors in state-dict order.
    tensors: Vec<TensorInfo>,
    /// Locations, parallel to `tensors`.
    locs: Vec<Loc>,
    /// Name → index.
    index: HashMap<String, usize>,
    /// Format details and skipped objects.
    metadata: serde_json::Value,
}

/// What the container parse yields: the object, the storages' byte ranges, format details.
struct Parsed {
    /// The unpickled top-level object.
    top: Value,
    /// Storage key → byte range in the file (keys absent from the file are absent here).
    storages: HashMap<Rc<str>, Range<usize>>,
    /// `zip` or `legacy`.
    format: &'static str,
    /// The unpickled lists and dicts, emptied (breaking any cycle) when this is dropped.
    _containers: pickle::Containers,
    /// Callables the object pickle asked for that were skipped.
    skipped_calls: std::collections::BTreeSet<String>,
}

impl PytorchFile {
    /// Parses the container, the pickle and every tensor's location.
    fn parse(path: &Path, map: FileBytes) -> Result<PytorchFile> {
        let data: &[u8] = &map;
        let parsed = if zip::is_zip(data) {
            parse_zip(path, data)?
        } else if is_legacy(data) {
            parse_legacy(path, data)?
        } else {
            return Err(bad(path, None, "not a PyTorch checkpoint (neither a torch.save zip archive nor the legacy pickle format)"));
        };
        let (key, dict) = find_state_dict(&parsed.top).ok_or_else(|| {
            bad(
                path,
                None,
                format!("no state dict found: neither the top-level object nor its {STATE_DICT_KEYS:?} entries are a dict of tensors"),
            )
        })?;
        let mut skipped = serde_json::Map::new();
        if let (Some(_), Value::Dict(top)) = (key, &parsed.top) {
            for kv in top.borrow().0.chunks_exact(2) {
                if let Value::Str(k) = &kv[0]
                    && Some(&**k) != key
                {
                    skipped.insert(k.to_string(), kv[1].kind().into());
                }
            }
        }
        let (mut tensors, mut locs, mut index) = (Vec::new(), Vec::new(), HashMap::new());
        for kv in dict.borrow().0.chunks_exact(2) {
            let Value::Str(name) = &kv[0] else { continue };
            let Value::Tensor(t) = &kv[1] else {
                skipped.insert(format!("{}{name}", key.map(|k| format!("{k}.")).unwrap_or_default()), kv[1].kind().into());
                continue;
            };
            let (info, loc) = locate(path, name, t, &parsed.storages, data.len())?;
            // A repeated key overrides the earlier entry, as in Python.
            match index.get(&**name) {
                Some(&i) => {
                    tensors[i] = info;
                    locs[i] = loc;
                }
                None => {
                    index.insert(name.to_string(), tensors.len());
                    tensors.push(info);
                    locs.push(loc);
                }
            }
        }
        if !parsed.skipped_calls.is_empty() {
            let names: Vec<&str> = parsed.skipped_calls.iter().map(String::as_str).collect();
            log::warn!(
                "{}: the pickle asks to call {}; skipped, not run (Kestrel never runs pickled code)",
                path.display(),
                names.join(", ")
            );
        }
        let metadata = serde_json::json!({
            "format": parsed.format,
            "state_dict": key.unwrap_or(""),
            "skipped": skipped,
            "skipped_calls": parsed.skipped_calls,
        });
        drop(dict);
        drop(parsed);
        Ok(PytorchFile { path: path.to_path_buf(), map, tensors, locs, index, metadata })
    }
}

/// The state dict: the top-level dict or one under [`STATE_DICT_KEYS`], with its key.
fn find_state_dict(top: &Value) -> Option<(Option<&'static str>, Rc<std::cell::RefCell<pickle::Items>>)> {
    let holds_tensor = |v: &Value| match v {
        Value::Dict(d) => d.borrow().0.chunks_exact(2).any(|kv| matches!(kv[1], Value::Tensor(_))),
        _ => false,
    };
    let Value::Dict(d) = top else { return None };
    if holds_tensor(top) {
        return Some((None, d.clone()));
    }
    let items = d.borrow();
    for key in STATE_DICT_KEYS {
        let found = items.0.chunks_exact(2).rev().find(|kv| matches!(&kv[0], Value::Str(s) if &**s == key));
        if let Some(kv) = found
            && let (true, Value::Dict(inner)) = (holds_tensor(&kv[1]), &kv[1])
        {
            return Some((Some(key), inner.clone()));
        }
    }
    None
}

/// The zip container: `<archive>/data.pkl` and `<archive>/data/<key>` entries.
fn parse_zip(path: &Path, data: &[u8]) -> Result<Parsed> {
    let index = zip::ZipIndex::parse(path, data)?;
    let pkl = index
        .entries
        .keys()
        .filter(|n| n.as_str() == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .min()
        .ok_or_else(|| bad(path, None, "zip archive without a data.pkl: not a torch.save checkpoint"))?;
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    if let Some(r) = index.entries.get(&format!("{prefix}byteorder"))
        && data[r.clone()] != *b"little"
    {
        return Err(bad(path, None, "big-endian checkpoint (byteorder is not `little`): unsupported"));
    }
    let range = index.entries[pkl].clone();
    let up = pickle::unpickle(&data[range], PidStyle::Zip).map_err(|e| bad(path, None, format!("{pkl}: {e}")))?;
    let mut storages = HashMap::new();
    for key in up.storages.keys() {
        if let Some(r) = index.entries.get(&format!("{prefix}data/{key}")) {
            storages.insert(key.clone(), r.clone());
        }
    }
    Ok(Parsed { top: up.value, storages, format: "zip", _containers: up.containers, skipped_calls: up.skipped_calls })
}

/// The legacy container: five pickles then the storages back to back.
fn parse_legacy(path: &Path, data: &[u8]) -> Result<Parsed> {
    let mut pos = 0usize;
    let mut next = |pids: PidStyle, what: &str| -> Result<pickle::Unpickled> {
        let up = pickle::unpickle(&data[pos..], pids).map_err(|e| bad(path, None, format!("legacy {what} pickle: {e}")))?;
        pos += up.consumed;
        Ok(up)
    };
    next(PidStyle::Legacy, "magic")?;
    let proto = next(PidStyle::Legacy, "protocol")?;
    if !matches!(proto.value, Value::Int(1001)) {
        return Err(bad(path, None, format!("legacy checkpoint protocol {} unsupported (expected 1001)", proto.value.kind())));
    }
    next(PidStyle::Legacy, "sys-info")?;
    let main = next(PidStyle::Legacy, "object")?;
    let keys = next(PidStyle::Legacy, "storage-key")?;
    let Value::List(keys) = &keys.value else {
        return Err(bad(path, None, "legacy storage-key list is not a list"));
    };
    let mut storages = HashMap::new();
    for key in keys.borrow().0.iter() {
        let Value::Str(key) = key else {
            return Err(bad(path, None, "legacy storage key is not a string"));
        };
        let dtype =
            main.storages.get(key).ok_or_else(|| bad(path, None, format!("legacy storage `{key}` is not referenced by any tensor")))?;
        let count = data.get(pos..pos + 8).ok_or_else(|| bad(path, None, format!("legacy storage `{key}`: file truncated")))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(count);
        let numel = u64::from_le_bytes(a);
        let start = pos + 8;
        let end = usize::try_from(numel)
            .ok()
            .and_then(|n| dtype.bytes_for(n))
            .and_then(|b| start.checked_add(b))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| bad(path, None, format!("legacy storage `{key}` of {numel} elements runs past the end of the file")))?;
        storages.insert(key.clone(), start..end);
        pos = end;
    }
    Ok(Parsed { top: main.value, storages, format: "legacy", _containers: main.containers, skipped_calls: main.skipped_calls })
}

/// Validates a tensor against its storage and computes where its bytes are.
fn locate(path: &Path, name: &str, t: &TensorRef, storages: &HashMap<Rc<str>, Range<usize>>, file_len: usize) -> Result<(TensorInfo, Loc)> {
    let err = |d: String| bad(path, Some(name), d);
    let range = storages.get(&t.storage.key).ok_or_else(|| err(format!("storage `{}` is missing from the file", t.storage.key)))?;
    let storage_elem = t.storage.dtype.block().1 as u64;
    let declared = t.storage.numel.checked_mul(storage_elem).ok_or_else(|| err(format!("storage size {} overflows", t.storage.numel)))?;
    let view = t.storage.view_offset.checked_mul(storage_elem).ok_or_else(|| err("storage view offset overflows".into()))?;
    let held = (range.end - range.start) as u64;
    if view.checked_add(declared).is_none_or(|e| e > held) {
        return Err(err(format!("storage `{}` declares {declared} bytes (at byte {view}) but the file holds {held}", t.storage.key)));
    }
    let elem = t.dtype.block().1;
    let available = declared / elem as u64;
    let too_big = |what: &str| err(format!("tensor {what} overflows (shape {:?}, strides {:?})", t.shape, t.stride));
    let mut numel = 1u64;
    let mut last = t.offset;
    for (&s, &st) in t.shape.iter().zip(&t.stride) {
        numel = numel.checked_mul(s).ok_or_else(|| too_big("size"))?;
        if s > 0 {
            last = (s - 1).checked_mul(st).and_then(|x| x.checked_add(last)).ok_or_else(|| too_big("extent"))?;
        }
    }
    if (numel > 0 && last >= available) || t.offset > available {
        return Err(err(format!(
            "shape {:?} with strides {:?} at offset {} reaches element {last}, past the end of storage `{}` ({available} elements)",
            t.shape, t.stride, t.offset, t.storage.key
        )));
    }
    let mut contiguous = true;
    let mut expect = 1u64;
    for (&s, &st) in t.shape.iter().zip(&t.stride).rev() {
        if s != 1 && st != expect {
            contiguous = false;
        }
        expect = expect.saturating_mul(s);
    }
    let bytes = numel.checked_mul(elem as u64).ok_or_else(|| too_big("byte size"))?;
    if bytes > file_len as u64 {
        return Err(err(format!("strided tensor expands to {bytes} bytes, more than the {file_len}-byte file")));
    }
    // Every quantity below is now bounded by the file length, so the conversions are lossless.
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| too_big("index"));
    let start = range.start + to_usize(view)? + to_usize(t.offset)? * elem;
    let shape = t.shape.iter().map(|&s| to_usize(s)).collect::<Result<Vec<_>>>()?;
    let stride = if numel == 0 { vec![0; shape.len()] } else { t.stride.iter().map(|&s| to_usize(s)).collect::<Result<Vec<_>>>()? };
    let info = TensorInfo { name: name.to_string(), dtype: t.dtype, shape: shape.clone() };
    Ok((info, Loc { start, elem, shape, stride, bytes: to_usize(bytes)?, contiguous }))
}

/// Copies a strided tensor into a row-major buffer, a run of the innermost dimension at a time
/// when that dimension is dense (stride 1), else element by element.
fn gather(src: &[u8], loc: &Loc) -> Vec<u8> {
    let mut out = Vec::with_capacity(loc.bytes);
    let rank = loc.shape.len();
    if loc.bytes == 0 || rank == 0 {
        out.extend_from_slice(&src[loc.start..loc.start + loc.bytes]);
        return out;
    }
    let inner = loc.shape[rank - 1];
    let (outer_rank, run) = if loc.stride[rank - 1] == 1 { (rank - 1, inner * loc.elem) } else { (rank, loc.elem) };
    let mut idx = vec![0usize; outer_rank];
    loop {
        let off = idx.iter().zip(&loc.stride).map(|(i, s)| i * s).sum::<usize>() * loc.elem;
        out.extend_from_slice(&src[loc.start + off..loc.start + off + run]);
        // Odometer increment, innermost dimension first.
        let mut d = outer_rank;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < loc.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

impl WeightSource for PytorchFile {
    fn format(&self) -> &'static str {
        "pytorch"
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
        let loc = &self.locs[i];
        if loc.contiguous { Ok(Cow::Borrowed(&self.map[loc.start..loc.start + loc.bytes])) } else { Ok(Cow::Owned(gather(&self.map, loc))) }
    }
}

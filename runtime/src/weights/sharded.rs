//! Sharded checkpoints: a Hugging Face index (`model.safetensors.index.json`,
//! `pytorch_model.bin.index.json`) whose `weight_map` names, for every tensor, the shard file
//! (beside the index) that holds it. The shards open as ordinary weight files and are served
//! as one [`WeightSource`].
//!
//! Checked before any tensor is read: the index is a JSON object with a `weight_map` of
//! strings; every shard is a plain file name in the index's directory (no paths, so an index
//! cannot point outside its checkpoint); every mapped tensor is in its shard; no tensor is in two
//! shards. Tensors a shard holds but the map does not name are served too (the map is what
//! the index promises, the shards what exists).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{TensorInfo, WeightSource, bad, open};
use crate::error::Result;

/// Largest index file read (the index of a 70B model is well under 1 MiB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The shards of a checkpoint, read through its index.
pub struct ShardedSource {
    path: PathBuf,
    metadata: Value,
    shards: Vec<Box<dyn WeightSource>>,
    tensors: Vec<TensorInfo>,
    /// Tensor name → (shard, index in `tensors`).
    owner: HashMap<String, (usize, usize)>,
}

/// Whether `path` names a sharded-checkpoint index (`*.index.json`).
pub fn is_index(path: &Path) -> bool {
    path.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.ends_with(".index.json"))
}

/// Opens the checkpoint described by the index file at `path`.
pub fn open_index(path: &Path) -> Result<ShardedSource> {
    let len = std::fs::metadata(path).map_err(|e| bad(path, None, format!("cannot open: {e}")))?.len();
    if len > MAX_INDEX_BYTES {
        return Err(bad(path, None, format!("index of {len} bytes is larger than {MAX_INDEX_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, None, format!("cannot read: {e}")))?;
    let index: Value = serde_json::from_str(&text).map_err(|e| bad(path, None, format!("index is not JSON: {e}")))?;
    let map = index.get("weight_map").and_then(Value::as_object).ok_or_else(|| bad(path, None, "index has no `weight_map` object"))?;
    // Shard file → the tensors the map places there (sorted, so shard order is stable).
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(path, Some(name), "weight_map value is not a file name"))?;
        if Path::new(file).file_name().and_then(|f| f.to_str()) != Some(file) {
            return Err(bad(path, Some(name), format!("shard `{file}` is not a file name in the index's directory")));
        }
        wanted.entry(file).or_default().push(name);
    }
    if wanted.is_empty() {
        return Err(bad(path, None, "weight_map is empty"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut shards = Vec::with_capacity(wanted.len());
    let mut tensors = Vec::new();
    let mut owner = HashMap::new();
    for (file, names) in wanted {
        let shard = open(&dir.join(file))?;
        for name in names {
            if shard.info(name).is_none() {
                return Err(bad(shard.path(), Some(name), "the index places this tensor here, but the shard does not hold it"));
            }
        }
        for info in shard.tensors() {
            if owner.insert(info.name.clone(), (shards.len(), tensors.len())).is_some() {
                return Err(bad(shard.path(), Some(&info.name), "tensor is in two shards"));
            }
            tensors.push(info.clone());
        }
        shards.push(shard);
    }
    let metadata = index.get("metadata").cloned().unwrap_or(Value::Object(Default::default()));
    Ok(ShardedSource { path: path.to_path_buf(), metadata, shards, tensors, owner })
}

impl ShardedSource {
    /// Number of shard files.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl WeightSource for ShardedSource {
    fn format(&self) -> &'static str {
        self.shards.first().map_or("safetensors", |s| s.format())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn metadata(&self) -> Value {
        self.metadata.clone()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let &(shard, _) = self.owner.get(name).ok_or_else(|| bad(&self.path, Some(name), "no such tensor"))?;
        self.shards[shard].bytes(name)
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.owner.get(name).map(|&(_, i)| &self.tensors[i])
    }
}

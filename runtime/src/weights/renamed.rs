//! One model inside a larger checkpoint, or a checkpoint in another naming scheme, under the
//! names a model reads: a vision-language checkpoint's language model
//! (`language_model.model.layers.0…`) read as a plain decoder (`model.layers.0…`), or
//! llama.cpp's `mmproj` names (`v.blk.0.attn_q…`) read as transformers' CLIP names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use super::{TensorInfo, WeightSource};
use crate::Result;

/// The tensors of a [`WeightSource`] that a mapping names, listed under those names; every
/// other tensor is left out.
pub struct Renamed {
    inner: Box<dyn WeightSource>,
    tensors: Vec<TensorInfo>,
    /// Logical name → stored name.
    stored: HashMap<String, String>,
}

impl Renamed {
    /// `inner` with each tensor whose stored name `logical` maps to `Some(name)` listed as
    /// `name` (two stored tensors mapped to one name: the first in file order wins).
    pub fn map(inner: Box<dyn WeightSource>, logical: impl Fn(&str) -> Option<String>) -> Renamed {
        let mut tensors = Vec::new();
        let mut stored = HashMap::new();
        for t in inner.tensors() {
            if let Some(name) = logical(&t.name)
                && !stored.contains_key(&name)
            {
                stored.insert(name.clone(), t.name.clone());
                tensors.push(TensorInfo { name, ..t.clone() });
            }
        }
        Renamed { inner, tensors, stored }
    }

    /// `inner` seen through `(logical prefix, stored prefix)` pairs: a tensor whose name starts
    /// with a stored prefix is listed with the matching logical prefix instead (the first pair
    /// that matches wins).
    pub fn new(inner: Box<dyn WeightSource>, rules: &[(&str, &str)]) -> Renamed {
        let rules: Vec<(String, String)> = rules.iter().map(|&(l, s)| (l.to_string(), s.to_string())).collect();
        Renamed::map(inner, move |name| {
            rules.iter().find(|(_, s)| name.starts_with(s.as_str())).map(|(l, s)| format!("{l}{}", &name[s.len()..]))
        })
    }
}

impl WeightSource for Renamed {
    fn format(&self) -> &'static str {
        self.inner.format()
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn metadata(&self) -> serde_json::Value {
        self.inner.metadata()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        match self.stored.get(name) {
            Some(stored) => self.inner.bytes(stored),
            None => Err(super::bad(self.path(), Some(name), "no such tensor")),
        }
    }
}

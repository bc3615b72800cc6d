//! One model inside a larger checkpoint under the names it would have on its own: a
//! vision-language checkpoint's language model (`language_model.model.layers.0…`) read as a
//! plain decoder (`model.layers.0…`).

use std::borrow::Cow;
use std::path::Path;

use super::{TensorInfo, WeightSource};
use crate::Result;

/// The tensors of a [`WeightSource`] whose names start with one of the stored prefixes of a
/// list of `(logical, stored)` pairs, listed under the matching logical prefix instead (the
/// first pair that matches wins); every other tensor is left out.
pub struct Renamed {
    inner: Box<dyn WeightSource>,
    rules: Vec<(String, String)>,
    tensors: Vec<TensorInfo>,
}

impl Renamed {
    /// `inner` seen through `rules` (`(logical prefix, stored prefix)` pairs).
    pub fn new(inner: Box<dyn WeightSource>, rules: &[(&str, &str)]) -> Renamed {
        let rules: Vec<(String, String)> = rules.iter().map(|&(l, s)| (l.to_string(), s.to_string())).collect();
        let tensors = inner
            .tensors()
            .iter()
            .filter_map(|t| {
                let (logical, stored) = rules.iter().find(|(_, s)| t.name.starts_with(s.as_str()))?;
                Some(TensorInfo { name: format!("{logical}{}", &t.name[stored.len()..]), ..t.clone() })
            })
            .collect();
        Renamed { inner, rules, tensors }
    }

    /// The stored name of a logical one, if a rule maps it.
    fn stored(&self, name: &str) -> Option<String> {
        self.rules.iter().find(|(l, _)| name.starts_with(l.as_str())).map(|(l, s)| format!("{s}{}", &name[l.len()..]))
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
        match (self.info(name), self.stored(name)) {
            (Some(_), Some(stored)) => self.inner.bytes(&stored),
            _ => Err(super::bad(self.path(), Some(name), "no such tensor")),
        }
    }
}

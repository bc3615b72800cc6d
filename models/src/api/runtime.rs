//! The GPU context apps open once and share between models.

use std::path::PathBuf;
use std::sync::Arc;

use kestrel::{Context, ContextOptions};
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// How to open the GPU context: which adapter, where to keep compiled pipelines. Every field
/// is optional; the JSON form (`kestrel_runtime_create`) uses the same names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeOptions {
    /// Backends to search, comma-separated (`vulkan`, `metal`, `dx12`, `gl`); default all.
    pub backend: Option<String>,
    /// Use the first adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Directory where the driver's pipeline cache is kept between runs (Vulkan); `None`: no
    /// file is written (Kestrel reads no environment variable for it, or for anything else).
    pub cache_dir: Option<PathBuf>,
    /// Keep weights in textures (`true`) or storage buffers (`false`); default: textures on
    /// CPU adapters only.
    pub weight_textures: Option<bool>,
    /// Pretend the device has no `SHADER_F16` (the packed-word fallback kernels).
    pub no_f16: bool,
    /// Pretend the device has no subgroups (the workgroup-reduction fallback kernels).
    pub no_subgroups: bool,
}

impl RuntimeOptions {
    /// Parses the JSON form; `None` or `""` give the defaults. Errors: malformed JSON, an
    /// unknown key or a wrongly typed value ([`ModelError::Input`]).
    pub fn from_json(json: Option<&str>) -> Result<RuntimeOptions> {
        parse_json(json, "runtime options")
    }

    /// The runtime's [`ContextOptions`]. Errors: an unknown backend name.
    pub fn context_options(&self) -> Result<ContextOptions> {
        let backends = match &self.backend {
            None => None,
            Some(list) => {
                let b = wgpu::Backends::from_comma_list(list);
                if b.is_empty() {
                    return Err(ModelError::Input(format!("backend `{list}`: expected vulkan, metal, dx12 or gl")));
                }
                Some(b)
            }
        };
        Ok(ContextOptions {
            backends,
            adapter_filter: self.adapter.clone(),
            disable_f16: self.no_f16,
            disable_subgroups: self.no_subgroups,
            weight_textures: self.weight_textures,
            cache_dir: self.cache_dir.clone(),
            ..Default::default()
        })
    }

    /// Opens the GPU context these options describe.
    pub fn open(&self) -> Result<Arc<Context>> {
        Ok(Context::new(&self.context_options()?)?)
    }
}

/// Parses an optional JSON object (`None` / empty / whitespace: the type's default), naming
/// `what` in the error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned + Default>(json: Option<&str>, what: &str) -> Result<T> {
    match json.map(str::trim) {
        None | Some("") => Ok(T::default()),
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ModelError::Input(format!("{what}: {e}")))?;
            if !value.is_object() {
                return Err(ModelError::Input(format!("{what}: expected a JSON object")));
            }
            serde_json::from_value(value).map_err(|e| ModelError::Input(format!("{what}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject_unknown_keys() {
        let o = RuntimeOptions::from_json(Some(r#"{"backend": "vulkan", "no_f16": true}"#)).unwrap();
        assert_eq!(o.context_options().unwrap().backends, Some(wgpu::Backends::VULKAN));
        assert!(o.no_f16);
        assert_eq!(RuntimeOptions::from_json(None).unwrap(), RuntimeOptions::default());
        for bad in ["{", "[]", r#"{"backnd": "gl"}"#, r#"{"no_f16": 1}"#] {
            assert!(matches!(RuntimeOptions::from_json(Some(bad)), Err(ModelError::Input(_))), "{bad}");
        }
        let o = RuntimeOptions { backend: Some("opengl2".into()), ..Default::default() };
        assert!(o.context_options().is_err());
    }
}

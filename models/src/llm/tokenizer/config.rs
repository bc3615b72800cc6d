//! The parts of a HF `tokenizer_config.json` a [`super::Tokenizer`] uses.

use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};

/// BOS/EOS, whether to add them, and the chat template, as a `tokenizer_config.json` states them.
#[derive(Debug, Default)]
pub(super) struct TokenizerConfig {
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
}

impl TokenizerConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<TokenizerConfig> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: name.clone(), source })?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| ModelError::Tokenizer(format!("{name}: not valid JSON: {e}")))?;
        TokenizerConfig::from_json(&json).map_err(|detail| ModelError::Tokenizer(format!("{name}: {detail}")))
    }

    /// The fields of a parsed config; a field of the wrong type is an error, a missing one `None`.
    fn from_json(json: &Value) -> std::result::Result<TokenizerConfig, String> {
        let obj = json.as_object().ok_or("the config is not a JSON object")?;
        let flag = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!("{key} is {}, not a boolean", kind(other))),
        };
        Ok(TokenizerConfig {
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
            bos_token: token(obj.get("bos_token"), "bos_token")?,
            eos_token: token(obj.get("eos_token"), "eos_token")?,
            chat_template: chat_template(obj.get("chat_template"))?,
        })
    }
}

/// A special token field: a string, or an `AddedToken` object with a `content` string.
fn token(value: Option<&Value>, key: &str) -> std::result::Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(format!("{key} is an object without a string \"content\"")),
        },
        Some(other) => Err(format!("{key} is {}, not a token", kind(other))),
    }
}

/// `chat_template`: a string, or a list of `{"name", "template"}` of which the one named
/// `default` (else the first) is taken.
fn chat_template(value: Option<&Value>) -> std::result::Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let template = |v: &Value| v.get("template").and_then(Value::as_str).map(str::to_owned);
            let default = list.iter().find(|v| v.get("name").and_then(Value::as_str) == Some("default"));
            Ok(default.or(list.first()).and_then(template))
        }
        Some(other) => Err(format!("chat_template is {}, not a string or a list of named templates", kind(other))),
    }
}

/// What kind of JSON value `v` is, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

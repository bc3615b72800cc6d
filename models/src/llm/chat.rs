//! Chat prompts: a conversation rendered to the text a chat model was trained on.
//!
//! [`ChatTemplate::Jinja`] runs a model's own template (HF `chat_template`, GGUF
//! `tokenizer.chat_template`) with minijinja set up like transformers' `apply_chat_template`:
//! `trim_blocks` and `lstrip_blocks`, `{% break %}`/`{% continue %}`, the Python string and dict
//! methods templates call (`.strip()`, `.startswith()`, `.items()`…), `raise_exception(msg)`,
//! and a `tojson` that writes JSON as Python's `json.dumps` does (`", "`/`": "` separators, no
//! HTML escaping). The template sees `messages` (each with `role` and `content`),
//! `add_generation_prompt`, `bos_token`, `eos_token`, and `tools`/`documents` as none.
//! `strftime_now` is not provided (templates that call it check whether it is defined).
//! A render is bounded: it may run at most [`TEMPLATE_FUEL`] template instructions plus
//! [`TEMPLATE_FUEL_PER_MESSAGE`] per message (minijinja's fuel), so a hostile template (nested
//! loops over huge ranges) fails with [`ModelError::Template`] instead of running for hours.
//!
//! Two formats are built in: [`ChatTemplate::Vicuna1`] (LLaVA/FastChat `vicuna_v1`) and
//! [`ChatTemplate::ChatMl`].

mod pyjson;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};

use super::tokenizer::Tokenizer;
use crate::error::{ModelError, Result};

/// Vicuna v1's system prompt (LLaVA's `conv_vicuna_v1`).
pub const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may know others, e.g. `tool`).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// How a conversation becomes a prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// A Jinja template (HF / GGUF chat template source).
    Jinja(String),
    /// LLaVA/FastChat `vicuna_v1`: `SYSTEM USER: … ASSISTANT: …EOS` (see [`ChatTemplate::render`]).
    Vicuna1,
    /// ChatML: `<|im_start|>ROLE\nCONTENT<|im_end|>\n` per message.
    ChatMl,
}

impl ChatTemplate {
    /// The tokenizer's own template ([`Tokenizer::chat_template`]) as [`ChatTemplate::Jinja`].
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Option<ChatTemplate> {
        tokenizer.chat_template().map(|t| ChatTemplate::Jinja(t.to_owned()))
    }

    /// The prompt for `messages`; with `add_generation_prompt`, ending with the opening of an
    /// assistant turn. `bos` and `eos` are the tokenizer's BOS/EOS texts (`bos_token` and
    /// `eos_token` in Jinja templates; Vicuna ends each assistant turn with `eos`).
    ///
    /// Vicuna v1 follows LLaVA's `SeparatorStyle.TWO` exactly: the system prompt (a leading
    /// `system` message, else [`VICUNA_SYSTEM`]) and a space, then for the i-th other message
    /// `USER: text` or `ASSISTANT: text` followed by a space (even i) or `eos` (odd i) — or just
    /// `ROLE:` for an empty text; the generation prompt is `ASSISTANT:`. ChatML writes no system
    /// prompt of its own and ignores `bos`/`eos`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool, bos: &str, eos: &str) -> Result<String> {
        match self {
            ChatTemplate::Jinja(source) => render_jinja(source, messages, add_generation_prompt, bos, eos),
            ChatTemplate::Vicuna1 => render_vicuna1(messages, add_generation_prompt, eos),
            ChatTemplate::ChatMl => Ok(render_chatml(messages, add_generation_prompt)),
        }
    }
}

fn render_vicuna1(messages: &[ChatMessage], add_generation_prompt: bool, eos: &str) -> Result<String> {
    let (system, turns) = match messages.split_first() {
        Some((first, rest)) if first.role == "system" => (first.content.as_str(), rest),
        _ => (VICUNA_SYSTEM, messages),
    };
    let mut out = format!("{system} ");
    for (i, m) in turns.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => "USER",
            "assistant" => "ASSISTANT",
            other => return Err(ModelError::Template(format!("vicuna_v1 has no role {other:?} (message {i})"))),
        };
        if m.content.is_empty() {
            out.push_str(&format!("{role}:"));
        } else {
            let sep = if i % 2 == 0 { " " } else { eos };
            out.push_str(&format!("{role}: {}{sep}", m.content));
        }
    }
    if add_generation_prompt {
        out.push_str("ASSISTANT:");
    }
    Ok(out)
}

fn render_chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

fn template_err(e: Error) -> ModelError {
    if e.kind() == ErrorKind::OutOfFuel {
        return ModelError::Template("the chat template ran past its budget of template instructions (does it loop without end?)".into());
    }
    // `{:#}` adds the template line and the failing expression to minijinja's message.
    ModelError::Template(format!("{e:#}"))
}

/// Template instructions any render may run (real chat templates need a few hundred per
/// message; this bounds a hostile one to well under a second).
pub const TEMPLATE_FUEL: u64 = 2_000_000;
/// Further template instructions allowed per message of the conversation.
pub const TEMPLATE_FUEL_PER_MESSAGE: u64 = 10_000;

fn render_jinja(source: &str, messages: &[ChatMessage], add_generation_prompt: bool, bos: &str, eos: &str) -> Result<String> {
    let mut env = Environment::new();
    let fuel = TEMPLATE_FUEL.saturating_add(TEMPLATE_FUEL_PER_MESSAGE.saturating_mul(messages.len() as u64));
    env.set_fuel(Some(fuel));
    let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(template_err)?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", pyjson::tojson);
    let template = env.template_from_str(source).map_err(template_err)?;
    let messages: Vec<Value> =
        messages.iter().map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() }).collect();
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
        tools => (),
        documents => (),
    };
    template.render(ctx).map_err(template_err)
}

/// `raise_exception(message)`: the template rejects the conversation.
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("the template raised: {message}")))
}

//! `kestrel inspect`: a weight file's format, metadata and tensors.
//!
//! Text output lists scalar metadata values (long strings cut at 100 characters) and
//! summarises arrays longer than 8 entries by element type and length. `--json` prints one
//! object `{"format", "metadata", "tensors": [{"name", "dtype", "shape"}]}`; metadata arrays
//! longer than 64 entries (tokenizer vocabularies, merges) are replaced there by
//! `{"type": <element type>, "len": <length>}`.
//!
//! Names come from the file, so text output escapes their control characters (an ESC sequence in
//! a tensor name must not reach the terminal raw), as JSON escapes the values.

use std::borrow::Cow;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;

use kestrel::weights::WeightSource;
use serde_json::{Value, json};

/// Arrays longer than this are summarised in `--json` output.
const JSON_ARRAY_LIMIT: usize = 64;
/// Arrays longer than this are summarised in text output.
const TEXT_ARRAY_LIMIT: usize = 8;
/// Longer strings are cut in text output.
const TEXT_STRING_LIMIT: usize = 100;

/// Arguments of `kestrel inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The weight file (safetensors, PyTorch checkpoint or GGUF).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `kestrel inspect`. A closed stdout (`kestrel inspect … | head`) ends it quietly.
pub fn run(args: &InspectArgs) -> Result<(), Box<dyn std::error::Error>> {
    let src = kestrel::weights::open(&args.file)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    match print(args, src.as_ref(), &mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Writes the report on `src` to `out`.
fn print(args: &InspectArgs, src: &dyn WeightSource, out: &mut impl Write) -> std::io::Result<()> {
    let metadata = src.metadata();
    if args.json {
        let tensors: Vec<Value> =
            src.tensors().iter().map(|t| json!({"name": t.name, "dtype": t.dtype.name(), "shape": t.shape})).collect();
        let v = json!({"format": src.format(), "metadata": summarise(&metadata, JSON_ARRAY_LIMIT), "tensors": tensors});
        return writeln!(out, "{v}");
    }
    writeln!(out, "file: {}", escape_controls(&args.file.display().to_string()))?;
    writeln!(out, "format: {}", src.format())?;
    match &metadata {
        Value::Object(m) => {
            writeln!(out, "metadata ({} keys):", m.len())?;
            for (k, v) in m {
                writeln!(out, "  {} = {}", escape_controls(k), text_value(v))?;
            }
        }
        Value::Null => writeln!(out, "metadata: none")?,
        other => writeln!(out, "metadata: {}", text_value(other))?,
    }
    let tensors = src.tensors();
    let params: u128 = tensors.iter().map(|t| t.numel() as u128).sum();
    let bytes: u128 = tensors.iter().filter_map(|t| t.dtype.bytes_for(t.numel())).map(|b| b as u128).sum();
    writeln!(out, "tensors ({}, {params} parameters, {bytes} bytes):", tensors.len())?;
    let names: Vec<Cow<str>> = tensors.iter().map(|t| escape_controls(&t.name)).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).min(60);
    for (t, name) in tensors.iter().zip(&names) {
        writeln!(out, "  {name:width$}  {:7}  {:?}", t.dtype.name(), t.shape)?;
    }
    Ok(())
}

/// `s` with every control character written as its Rust escape (`\n`, `\u{1b}`…), so that
/// text read from a file cannot move the cursor, clear the screen or forge lines.
fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect())
}

/// The element type of a JSON array, for summaries: `string`, `int`, `float`, `bool`,
/// `array`, `object`, `null` or `mixed`.
fn element_type(items: &[Value]) -> &'static str {
    let kind = |v: &Value| match v {
        Value::String(_) => "string",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::Bool(_) => "bool",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    let mut kinds = items.iter().map(kind);
    let first = kinds.next().unwrap_or("null");
    if kinds.all(|k| k == first) { first } else { "mixed" }
}

/// `v` with every array longer than `limit` (at any depth) replaced by `{"type", "len"}`.
fn summarise(v: &Value, limit: usize) -> Value {
    match v {
        Value::Array(items) if items.len() > limit => json!({"type": element_type(items), "len": items.len()}),
        Value::Array(items) => Value::Array(items.iter().map(|i| summarise(i, limit)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, i)| (k.clone(), summarise(i, limit))).collect()),
        other => other.clone(),
    }
}

/// One metadata value for text output: long arrays summarised, long strings cut.
fn text_value(v: &Value) -> String {
    match v {
        Value::Array(items) if items.len() > TEXT_ARRAY_LIMIT => format!("[{}; {}]", element_type(items), items.len()),
        Value::String(s) if s.chars().count() > TEXT_STRING_LIMIT => {
            let cut: String = s.chars().take(TEXT_STRING_LIMIT).collect();
            format!("{:?}… ({} chars)", cut, s.chars().count())
        }
        other => summarise(other, TEXT_ARRAY_LIMIT).to_string(),
    }
}

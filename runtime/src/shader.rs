//! WGSL sources (from `shaders/`) and the tiny preprocessor that makes their variants.
//!
//! A source may contain `#if NAME`, `#else`, `#endif` lines (nesting allowed; `NAME` is true when
//! defined and not `"0"`), `{{NAME}}` placeholders replaced by the define's value, and
//! `#include NAME` lines replaced by `shaders/include/NAME.wgsl` (see [`INCLUDES`]), itself
//! preprocessed with the same defines; a file included once more is skipped, so an include may
//! include what it needs. This is all the variation kernels need: `enable f16;`, storage element
//! types, workgroup sizes, the expression of an activation, and helpers shared by families.

use std::borrow::Cow;

use crate::error::{KestrelError, Result};

/// Every kernel family: its name and WGSL text. One file per family in `shaders/`.
pub const FAMILIES: &[(&str, &str)] = &[
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    ("copy", include_str!("../../shaders/copy.wgsl")),
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("gather", include_str!("../../shaders/gather.wgsl")),
    ("gemv", include_str!("../../shaders/gemv.wgsl")),
    ("layout", include_str!("../../shaders/layout.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("matmul_baseline", include_str!("../../shaders/matmul_baseline.wgsl")),
    ("norm", include_str!("../../shaders/norm.wgsl")),
    ("qmatmul", include_str!("../../shaders/qmatmul.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("select", include_str!("../../shaders/select.wgsl")),
    ("sla", include_str!("../../shaders/sla.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("window_attention", include_str!("../../shaders/window_attention.wgsl")),
];

/// WGSL shared by several families (`#include NAME`), from `shaders/include/`.
pub const INCLUDES: &[(&str, &str)] = &[
    ("opaque", include_str!("../../shaders/include/opaque.wgsl")),
    ("rows_block", include_str!("../../shaders/include/rows_block.wgsl")),
    ("subgroup_ids", include_str!("../../shaders/include/subgroup_ids.wgsl")),
    ("subgroup_params", include_str!("../../shaders/include/subgroup_params.wgsl")),
    ("tex_words", include_str!("../../shaders/include/tex_words.wgsl")),
    ("wg_reduce", include_str!("../../shaders/include/wg_reduce.wgsl")),
];

/// Returns the WGSL source of a kernel family: the copy built into the binary, or, in a build
/// with the `shader-dir` feature where `KESTREL_SHADER_DIR` is set (kernel development),
/// `$KESTREL_SHADER_DIR/<family>.wgsl`.
pub fn source(family: &str) -> Result<Cow<'static, str>> {
    let builtin = FAMILIES.iter().find(|(name, _)| *name == family).map(|(_, src)| *src).ok_or_else(|| KestrelError::Shader {
        family: family.to_string(),
        variant: String::new(),
        message: "unknown kernel family".into(),
    })?;
    from_dir_or(family, &format!("{family}.wgsl"), builtin)
}

/// The text of `#include name`: the built-in copy, or (feature `shader-dir`)
/// `$KESTREL_SHADER_DIR/include/<name>.wgsl`.
fn include_source(family: &str, name: &str) -> Result<Cow<'static, str>> {
    let builtin = INCLUDES.iter().find(|(n, _)| *n == name).map(|(_, src)| *src).ok_or_else(|| KestrelError::Shader {
        family: family.to_string(),
        variant: String::new(),
        message: format!("#include {name}: no such file in shaders/include"),
    })?;
    from_dir_or(family, &format!("include/{name}.wgsl"), builtin)
}

/// `$KESTREL_SHADER_DIR/<file>` when the `shader-dir` feature is on and that variable is set
/// (kernel development), else `builtin`. Without the feature no variable is read.
fn from_dir_or(family: &str, file: &str, builtin: &'static str) -> Result<Cow<'static, str>> {
    #[cfg(feature = "shader-dir")]
    if let Some(dir) = std::env::var_os("KESTREL_SHADER_DIR") {
        let path = std::path::Path::new(&dir).join(file);
        return std::fs::read_to_string(&path).map(Cow::Owned).map_err(|e| KestrelError::Shader {
            family: family.to_string(),
            variant: String::new(),
            message: format!("{}: {e}", path.display()),
        });
    }
    #[cfg(not(feature = "shader-dir"))]
    let _ = (family, file);
    Ok(Cow::Borrowed(builtin))
}

/// A set of preprocessor defines, kept sorted so equal variants have equal keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Defines(Vec<(String, String)>);

impl Defines {
    /// An empty set.
    pub fn new() -> Self {
        Defines(Vec::new())
    }

    /// Adds or replaces a define.
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        let value = value.to_string();
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name.to_string(), value)),
        }
        self
    }

    /// Adds a boolean flag (`1` when on, absent when off).
    pub fn flag(self, name: &str, on: bool) -> Self {
        if on { self.set(name, 1) } else { self }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn is_true(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "0" && v != "false")
    }

    /// A stable text form, used in pipeline keys and error messages.
    pub fn key(&self) -> String {
        self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// Expands `#if/#else/#endif` blocks, `#include` lines and `{{NAME}}` placeholders.
pub fn preprocess(family: &str, src: &str, defines: &Defines) -> Result<String> {
    let mut out = String::with_capacity(src.len());
    expand(family, src, defines, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// Appends the expansion of `src` to `out`; `included` lists the includes already expanded
/// (each is expanded once, so includes cannot recurse).
fn expand(family: &str, src: &str, defines: &Defines, included: &mut Vec<String>, out: &mut String) -> Result<()> {
    let err = |message: String| KestrelError::Shader { family: family.to_string(), variant: defines.key(), message };
    // Each stack entry: (this block is active, an enclosing block is active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    for (lineno, line) in src.lines().enumerate() {
        let t = line.trim_start();
        let active = stack.last().is_none_or(|&(a, p)| a && p);
        if let Some(rest) = t.strip_prefix("#if ") {
            stack.push((defines.is_true(rest.trim()), active));
        } else if t.starts_with("#else") {
            let top = stack.last_mut().ok_or_else(|| err(format!("line {}: #else without #if", lineno + 1)))?;
            top.0 = !top.0;
        } else if t.starts_with("#endif") {
            stack.pop().ok_or_else(|| err(format!("line {}: #endif without #if", lineno + 1)))?;
        } else if !active {
        } else if let Some(rest) = t.strip_prefix("#include ") {
            let name = rest.trim();
            if included.iter().any(|n| n == name) {
                continue;
            }
            included.push(name.to_string());
            let text = include_source(family, name)?;
            expand(family, &text, defines, included, out).map_err(|e| match e {
                KestrelError::Shader { message, .. } => err(format!("in #include {name}: {message}")),
                other => other,
            })?;
        } else {
            out.push_str(&substitute(line, defines).map_err(|m| err(format!("line {}: {m}", lineno + 1)))?);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err("unterminated #if".into()));
    }
    Ok(())
}

fn substitute(line: &str, defines: &Defines) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed {{")?;
        let name = after[..end].trim();
        out.push_str(defines.get(name).ok_or_else(|| format!("undefined placeholder {{{{{name}}}}}"))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses and validates WGSL with naga (all capabilities a variant may use allowed).
pub fn validate(family: &str, variant: &Defines, wgsl: &str) -> Result<()> {
    let err = |message: String| KestrelError::Shader { family: family.to_string(), variant: variant.key(), message };
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| err(e.emit_to_string(wgsl)))?;
    let caps = naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
        | naga::valid::Capabilities::SUBGROUP
        | naga::valid::Capabilities::SUBGROUP_BARRIER;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps).validate(&module).map_err(|e| err(e.emit_to_string(wgsl)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_else_endif_and_placeholders() {
        let src = "a\n#if X\nb {{V}}\n#if Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf";
        let d = Defines::new().flag("X", true).set("V", 7);
        assert_eq!(preprocess("t", src, &d).unwrap(), "a\nb 7\nd\nf\n");
        let d = Defines::new().set("V", 1);
        assert_eq!(preprocess("t", src, &d).unwrap(), "a\ne\nf\n");
    }

    #[test]
    fn includes_are_expanded_once_with_the_same_defines() {
        let src = "#include subgroup_ids\n#include subgroup_ids\nx";
        let with = preprocess("t", src, &Defines::new().flag("SUBGROUPS", true)).unwrap();
        let without = preprocess("t", src, &Defines::new()).unwrap();
        assert!(with.contains("var<private> sg_lane") && !without.contains("var<private> sg_lane"));
        assert_eq!(with.matches("var<private> lid").count(), 1);
        assert!(preprocess("t", "#include no_such_file\n", &Defines::new()).is_err());
        // An inactive include is not read.
        assert!(preprocess("t", "#if X\n#include no_such_file\n#endif\n", &Defines::new()).is_ok());
    }

    #[test]
    fn errors_are_reported() {
        assert!(preprocess("t", "#if A\n", &Defines::new()).is_err());
        assert!(preprocess("t", "#endif\n", &Defines::new()).is_err());
        assert!(preprocess("t", "x {{MISSING}}\n", &Defines::new()).is_err());
    }

    #[test]
    fn defines_key_is_order_independent() {
        let a = Defines::new().set("B", 1).set("A", 2);
        let b = Defines::new().set("A", 2).set("B", 1);
        assert_eq!(a, b);
        assert_eq!(a.key(), "A=2,B=1");
    }
}

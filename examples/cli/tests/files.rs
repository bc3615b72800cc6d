//! The CLI with hostile or awkward files and paths: `convert` and `bench-load` against every kind
//! of existing output path (regular file, the source itself, a symlink, a directory, a FIFO),
//! `inspect` on names holding terminal escape sequences and on a pickle that calls `os.system`,
//! and arguments that are checked before any model loads. Unix only (symlinks, FIFOs).
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

/// A fresh, empty directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-cli-files-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn kestrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small safetensors source with one weight that w4 quantises.
fn write_source(dir: &Path) -> (PathBuf, Vec<u8>) {
    let w: Vec<u8> = (0..8 * 64).flat_map(|i| ((i as f32 * 0.11).cos()).to_le_bytes()).collect();
    let header = format!(r#"{{"l.weight":{{"dtype":"F32","shape":[8,64],"data_offsets":[0,{}]}}}}"#, w.len());
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&w);
    let path = dir.join("src.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The kinds of existing output path, made in `dir`: (tag, path, what `convert` must say).
fn special_outputs(dir: &Path, src: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.join("link.kestrel");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let sub = dir.join("sub.kestrel");
    std::fs::create_dir(&sub).unwrap();
    let fifo = dir.join("fifo.kestrel");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    vec![("source", src.to_path_buf(), "source"), ("symlink", link, "symlink"), ("directory", sub, "directory"), ("fifo", fifo, "FIFO")]
}

/// Checks that nothing in `dir` changed kind or content: the victim, the source, the FIFO,
/// the directory and the symlink are as made.
fn assert_untouched(dir: &Path, src_bytes: &[u8]) {
    use std::os::unix::fs::FileTypeExt;
    assert_eq!(std::fs::read(dir.join("victim.txt")).unwrap(), b"precious");
    assert_eq!(std::fs::read(dir.join("src.safetensors")).unwrap(), src_bytes);
    assert!(std::fs::symlink_metadata(dir.join("link.kestrel")).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(dir.join("fifo.kestrel")).unwrap().file_type().is_fifo());
    assert!(dir.join("sub.kestrel").is_dir() && listing(&dir.join("sub.kestrel")).is_empty());
}

#[test]
fn convert_refuses_every_output_that_is_not_a_regular_file() {
    let dir = temp_dir("convert");
    let (src, src_bytes) = write_source(&dir);
    for (tag, out, says) in special_outputs(&dir, &src) {
        let o = kestrel(&["convert", s(&src), "--quant", "w4", "--out", s(&out)]);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(says) && !err.contains("panicked"), "{tag}: {err}");
    }
    assert_untouched(&dir, &src_bytes);
    // A regular file is replaced by the converted model, and no temporary file is left.
    let out = dir.join("model.kestrel");
    std::fs::write(&out, b"old").unwrap();
    let o = kestrel(&["convert", s(&src), "--quant", "w4", "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kestrel(&["inspect", s(&out), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["format"], "kestrel");
    assert_eq!(listing(&dir), ["fifo.kestrel", "link.kestrel", "model.kestrel", "src.safetensors", "sub.kestrel", "victim.txt"]);
}

#[test]
fn bench_load_never_touches_an_existing_path() {
    let dir = temp_dir("bench-load");
    let (src, src_bytes) = write_source(&dir);
    let specials = special_outputs(&dir, &src);
    // The default kept name exists as a regular file: it used to be removed after the run.
    let default = dir.join("src.safetensors.w4.kestrel");
    std::fs::write(&default, b"mine").unwrap();
    let before = listing(&dir);
    let o = kestrel(&["bench-load", s(&src), "--quant", "w4", "--runs", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"op\":\"load\""));
    assert_eq!(listing(&dir), before, "bench-load left or removed files");
    assert_eq!(std::fs::read(&default).unwrap(), b"mine");
    // --keep and --out refuse every existing path, whatever its kind.
    let o = kestrel(&["bench-load", s(&src), "--keep"]);
    assert!(!o.status.success() && stderr(&o).contains("exists"), "{}", stderr(&o));
    for (tag, out, _) in specials.iter().chain([&("regular", default.clone(), "")]) {
        let o = kestrel(&["bench-load", s(&src), "--out", s(out)]);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains("exists") && !err.contains("panicked"), "{tag}: {err}");
    }
    assert_untouched(&dir, &src_bytes);
    assert_eq!(std::fs::read(&default).unwrap(), b"mine");
    assert_eq!(listing(&dir), before);
    // A new path keeps the converted file.
    let kept = dir.join("kept.kestrel");
    let o = kestrel(&["bench-load", s(&src), "--out", s(&kept)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kestrel(&["inspect", s(&kept)]).status.success());
}

#[test]
fn inspect_escapes_control_characters_from_the_file() {
    let o = kestrel(&["inspect", s(&seeds().join("safetensors/control_chars.safetensors"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains('\u{1b}'), "raw ESC in: {out:?}");
    assert!(out.contains("\\u{1b}[2J\\u{1b}[Hforged"), "{out}");
    assert!(out.contains("key\\u{1b}[2J"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("forged")), "{out}");
}

#[test]
fn a_safetensors_header_length_ending_in_0x80_is_not_a_pickle() {
    let o = kestrel(&["inspect", s(&seeds().join("safetensors/header_len_0x80.safetensors")), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["format"], "safetensors");
}

#[test]
fn a_pickle_that_calls_os_system_is_reported_on_stderr() {
    let o = kestrel(&["inspect", s(&seeds().join("pytorch/os_system_call.pth"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("os.system") && err.contains("not run"), "{err}");
}

#[test]
fn bad_arguments_fail_before_the_model_loads() {
    // The model path does not exist: each error must be about the argument, found first.
    let dir = temp_dir("args");
    let missing_model = dir.join("no-model.kestrel");
    let o = kestrel(&["classify", "--model", s(&missing_model), s(&dir.join("no-image.png"))]);
    assert!(!o.status.success() && stderr(&o).contains("no-image.png"), "{}", stderr(&o));

    let nan_npy = dir.join("nan.npy");
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<width$}\n", width = 117);
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    [1.0f32, f32::NAN, 0.0].iter().for_each(|v| npy.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(&nan_npy, &npy).unwrap();
    let o = kestrel(&["classify", "--model", s(&missing_model), "--input-npy", s(&nan_npy)]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("element 1 is NaN"), "{err}");

    let o = kestrel(&["generate", "--model", s(&missing_model), "--prompt", "hi", "--stop", ""]);
    assert!(!o.status.success() && stderr(&o).contains("--stop"), "{}", stderr(&o));

    let o = kestrel(&["profile", "slab-deit-t", "--trace", s(&dir.join("no-such-folder/trace.json"))]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("no-such-folder") && err.contains("does not exist"), "{err}");
}

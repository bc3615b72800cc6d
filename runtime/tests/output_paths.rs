//! Files Kestrel writes never clobber anything by accident: `convert` against every kind of
//! existing output path (regular file, the source itself, a symlink, a directory, a FIFO, a
//! source named like the old fixed `<out>.tmp`, a symlink planted at `<out>.tmp`), the checks of
//! [`kestrel::output`] on a device node, and Kestrel files whose header length ends in `0x80`
//! (they start like a pickle) reading back as Kestrel files.

use std::path::{Path, PathBuf};

use kestrel::Quant;
use kestrel::error::KestrelError;
use kestrel::output::{OutputError, PendingFile, check_writable};
use kestrel::weights;
use kestrel::weights::convert::{ConvertOptions, convert};
use serde_json::json;

/// A fresh, empty temporary directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-outputs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A small safetensors source with one quantisable weight and a bias.
fn source_bytes() -> Vec<u8> {
    let w: Vec<u8> = (0..4 * 64).flat_map(|i| ((i as f32 * 0.37).sin()).to_le_bytes()).collect();
    let b: Vec<u8> = (0..4).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let header = json!({
        "l.weight": {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, w.len()]},
        "l.bias": {"dtype": "F32", "shape": [4], "data_offsets": [w.len(), w.len() + b.len()]},
    })
    .to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&w);
    out.extend_from_slice(&b);
    out
}

fn write_source(path: &Path) -> Vec<u8> {
    let bytes = source_bytes();
    std::fs::write(path, &bytes).expect("write source");
    bytes
}

fn run_convert(src: &Path, out: &Path) -> Result<(), KestrelError> {
    let src = weights::open(src)?;
    convert(src.as_ref(), out, &ConvertOptions { quant: Quant::W8, architecture: None, config: None }, |_, _| {})?;
    Ok(())
}

/// The error's detail, or a panic naming `tag` when the conversion succeeded.
fn refused(tag: &str, r: Result<(), KestrelError>) -> String {
    match r {
        Err(KestrelError::Weights { detail, .. }) => detail,
        other => panic!("{tag}: expected a refusal, got {other:?}"),
    }
}

/// Files left in `dir` other than `keep` (a failed or finished conversion leaves no temporary).
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

#[test]
fn an_existing_regular_output_is_replaced_whole() {
    let dir = temp_dir("regular");
    let src = dir.join("src.safetensors");
    write_source(&src);
    let out = dir.join("model.kestrel");
    std::fs::write(&out, b"old contents").expect("write old");
    run_convert(&src, &out).expect("convert over a regular file");
    assert_eq!(weights::open(&out).expect("open output").format(), "kestrel");
    assert_eq!(leftovers(&dir, &["src.safetensors", "model.kestrel"]), Vec::<String>::new());
}

#[test]
fn the_source_itself_is_never_the_output() {
    let dir = temp_dir("source");
    let src = dir.join("src.safetensors");
    let bytes = write_source(&src);
    let detail = refused("source", run_convert(&src, &src));
    assert!(detail.contains("source"), "{detail}");
    assert_eq!(std::fs::read(&src).expect("read source"), bytes, "the source was changed");
}

#[test]
fn a_source_named_like_a_temporary_output_survives() {
    // The old writer used the fixed name `<out>.tmp` and truncated it while it was the mapped source.
    let dir = temp_dir("tmpname");
    let src = dir.join("model.kestrel.tmp");
    let bytes = write_source(&src);
    let out = dir.join("model.kestrel");
    run_convert(&src, &out).expect("convert");
    assert_eq!(std::fs::read(&src).expect("read source"), bytes, "the source was changed");
    assert_eq!(weights::open(&out).expect("open output").format(), "kestrel");
}

#[cfg(unix)]
#[test]
fn symlinks_are_neither_followed_nor_replaced() {
    let dir = temp_dir("symlink");
    let src = dir.join("src.safetensors");
    write_source(&src);
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").expect("write victim");
    // A symlink as the output.
    let out = dir.join("link.kestrel");
    std::os::unix::fs::symlink(&victim, &out).expect("symlink");
    let detail = refused("symlink", run_convert(&src, &out));
    assert!(detail.contains("not a regular file"), "{detail}");
    assert!(std::fs::symlink_metadata(&out).expect("link").file_type().is_symlink());
    // A symlink planted where the old writer put its temporary file.
    let out = dir.join("model.kestrel");
    std::os::unix::fs::symlink(&victim, dir.join("model.kestrel.tmp")).expect("symlink");
    run_convert(&src, &out).expect("convert beside a planted symlink");
    assert_eq!(std::fs::read(&victim).expect("read victim"), b"precious", "the symlink was followed");
    assert_eq!(weights::open(&out).expect("open output").format(), "kestrel");
}

#[test]
fn a_directory_output_is_refused() {
    let dir = temp_dir("directory");
    let src = dir.join("src.safetensors");
    write_source(&src);
    let out = dir.join("out.kestrel");
    std::fs::create_dir(&out).expect("mkdir");
    let detail = refused("directory", run_convert(&src, &out));
    assert!(detail.contains("directory"), "{detail}");
    assert!(out.is_dir());
}

#[cfg(unix)]
#[test]
fn a_fifo_output_is_refused() {
    let dir = temp_dir("fifo");
    let src = dir.join("src.safetensors");
    write_source(&src);
    let out = dir.join("out.kestrel");
    let status = std::process::Command::new("mkfifo").arg(&out).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let detail = refused("fifo", run_convert(&src, &out));
    assert!(detail.contains("FIFO"), "{detail}");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::symlink_metadata(&out).expect("fifo").file_type()), "the FIFO was replaced");
    assert_eq!(leftovers(&dir, &["src.safetensors", "out.kestrel"]), Vec::<String>::new());
}

#[cfg(unix)]
#[test]
fn device_nodes_are_refused_without_being_touched() {
    // Only inspected, never opened: the check runs before anything is created.
    match check_writable(Path::new("/dev/null")) {
        Err(OutputError::NotRegular { kind }) => assert_eq!(kind, "device"),
        other => panic!("/dev/null: {other:?}"),
    }
    assert!(matches!(PendingFile::create(Path::new("/dev/null")), Err(OutputError::NotRegular { .. })));
}

#[test]
fn pending_files_are_unique_and_removed_unless_committed() {
    let dir = temp_dir("pending");
    let target = dir.join("cache.bin");
    let (a, b) = (PendingFile::create(&target).expect("a"), PendingFile::create(&target).expect("b"));
    assert_ne!(a.temp_path(), b.temp_path());
    assert_eq!(a.temp_path().parent(), Some(dir.as_path()));
    drop((a, b));
    assert_eq!(leftovers(&dir, &[]), Vec::<String>::new());
    let mut c = PendingFile::create(&target).expect("c");
    std::io::Write::write_all(c.file(), b"data").expect("write");
    c.commit().expect("commit");
    assert_eq!(std::fs::read(&target).expect("read"), b"data");
    #[cfg(unix)]
    {
        // The committed file has an ordinary file's mode, not a temporary file's 0600.
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.join("plain");
        std::fs::write(&plain, b"").expect("write plain");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&target), mode(&plain));
        std::fs::remove_file(&plain).expect("remove plain");
    }
    assert_eq!(leftovers(&dir, &["cache.bin"]), Vec::<String>::new());
}

#[test]
fn kestrel_files_whose_header_length_ends_in_0x80_open() {
    // The header is padded to a multiple of 8, so its low byte is 0x80 for one padding in 32.
    let dir = temp_dir("len80");
    let src_path = dir.join("src.safetensors");
    write_source(&src_path);
    let src = weights::open(&src_path).expect("open source");
    let out = dir.join("model.kestrel");
    let mut hits = 0;
    for pad in 0..64 {
        let config = json!({"pad": "x".repeat(pad * 8)});
        let opts = ConvertOptions { quant: Quant::W4, architecture: None, config: Some(config) };
        convert(src.as_ref(), &out, &opts, |_, _| {}).expect("convert");
        let bytes = std::fs::read(&out).expect("read output");
        if bytes[0] != 0x80 {
            continue;
        }
        hits += 1;
        let opened = weights::open(&out).expect("a 0x80-length Kestrel file opens");
        assert_eq!(opened.format(), "kestrel");
        assert_eq!(opened.tensors().len(), weights::open_bytes(bytes).expect("open_bytes").tensors().len());
    }
    assert!(hits > 0, "no padding gave a header length ending in 0x80");
}

//! Files Kestrel writes (converted models, the pipeline cache) never clobber anything by
//! accident: the bytes go to a fresh, uniquely named temporary file created beside the target
//! (`O_CREAT | O_EXCL`, so no existing file or symlink is ever opened or followed), which is
//! renamed over the target only once it is complete. The target itself must be absent or a
//! regular file: a directory, FIFO, device node (`/dev/null`) or symlink is refused, never
//! replaced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why an output path cannot be written. The messages do not repeat the target's path: the
/// caller names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The target exists and is not a regular file.
    #[error("exists and is not a regular file ({kind}); refusing to replace it")]
    NotRegular {
        /// What it is: `directory`, `symlink`, `FIFO`, `device`, `socket`.
        kind: &'static str,
    },
    /// An I/O failure while checking the target, creating the temporary file or renaming it.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`inspect`, `create a temporary file in`, `write`, `rename to`).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// Checks that `path` may be written: it is absent or a regular file (not followed if it is a
/// symlink).
pub fn check_writable(path: &Path) -> Result<(), OutputError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(OutputError::Io { action: "inspect", path: path.to_path_buf(), source }),
    };
    match kind_of(&meta.file_type()) {
        None => Ok(()),
        Some(kind) => Err(OutputError::NotRegular { kind }),
    }
}

/// `None` for a regular file, else what the file type is.
fn kind_of(t: &std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("directory");
    }
    if t.is_symlink() {
        return Some("symlink");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("FIFO");
        }
        if t.is_block_device() || t.is_char_device() {
            return Some("device");
        }
        if t.is_socket() {
            return Some("socket");
        }
    }
    Some("special file")
}

/// A file being written for `target`: a fresh temporary file in the target's directory,
/// deleted when dropped unless [`PendingFile::commit`] renamed it over the target.
pub struct PendingFile {
    target: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl PendingFile {
    /// Checks `target` ([`check_writable`]) and creates a new, uniquely named temporary file
    /// beside it (`.<name>.<random>.tmp`) with the mode a new file would get.
    pub fn create(target: &Path) -> Result<PendingFile, OutputError> {
        check_writable(target)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // An ordinary file's mode (0666 less the umask), not a temporary file's private 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder.tempfile_in(dir).map_err(|source| OutputError::Io {
            action: "create a temporary file in",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(PendingFile { target: target.to_path_buf(), temp })
    }

    /// The temporary file's path (never an existing file's: it was created new).
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// The open temporary file, for writing.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Flushes the file to disk and renames it over the target, checking the target again
    /// first (it may have been replaced by a special file meanwhile).
    pub fn commit(self) -> Result<(), OutputError> {
        let PendingFile { target, temp } = self;
        temp.as_file().sync_all().map_err(|source| OutputError::Io { action: "write", path: temp.path().to_path_buf(), source })?;
        check_writable(&target)?;
        temp.persist(&target).map_err(|e| OutputError::Io { action: "rename to", path: target.clone(), source: e.error })?;
        Ok(())
    }
}

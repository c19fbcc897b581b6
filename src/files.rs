//! Reading the files ops supply (plans, playbooks, templates, the config, secrets) with
//! bounds: only regular files, opened without blocking, and at most a fixed size. A FIFO, a
//! device (a symlink to `/dev/zero`), a socket or a directory where a file is expected is an
//! error naming it, never a blocked reader or an unbounded read.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest plan or playbook file read (bytes): 1 MiB, far above any real plan (a few KB).
pub const MAX_PLAN_BYTES: u64 = 1 << 20;
/// Largest template file read (bytes): 256 KiB.
pub const MAX_TEMPLATE_BYTES: u64 = 256 << 10;
/// Largest daemon config file read (bytes): 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest secret (credential, password file) read (bytes): 64 KiB.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file system said no (missing, permissions, …).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file; names what it is instead.
    #[error("it is not a regular file but a {0}")]
    NotRegular(&'static str),
    /// Larger than the bound for its kind.
    #[error("it has {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The file's size (or at least this many bytes were there), in bytes.
        size: u64,
        /// The bound, in bytes.
        max: u64,
    },
    /// Not UTF-8 text.
    #[error("it is not UTF-8 text: {0}")]
    NotUtf8(std::string::FromUtf8Error),
}

impl FileError {
    /// How to fix it, for a diagnostic.
    pub fn hint(&self) -> &'static str {
        match self {
            FileError::Io(_) => "check that the file exists and the daemon's user may read it",
            FileError::NotRegular(_) => "only regular files (or symlinks to them) are read; move the special file away",
            FileError::TooLarge { .. } => {
                "split the file, or check that it is the file you meant (README, \"Operating limits\")"
            }
            FileError::NotUtf8(_) => "save the file as UTF-8",
        }
    }
}

/// The bytes of the regular file at `path` (symlinks followed), at most `max` of them.
///
/// # Errors
/// The file cannot be opened or read, is not a regular file, or is larger than `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(FileError::NotRegular(if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else {
            "special file"
        }));
    }
    if meta.len() > max {
        return Err(FileError::TooLarge { size: meta.len(), max });
    }
    // The size may change after the check: never read more than the bound.
    let mut buf = Vec::with_capacity(meta.len() as usize + 1);
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(FileError::TooLarge { size: buf.len() as u64, max });
    }
    Ok(buf)
}

/// [`read`] as UTF-8 text.
///
/// # Errors
/// As [`read`], or the content is not UTF-8.
pub fn read_text(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, max)?).map_err(FileError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Whatever the size around the bound, a read returns the whole file exactly when it
        /// fits, and never more than the bound plus one byte is read.
        #[test]
        fn a_read_is_whole_or_refused_never_more_than_the_bound(max in 0u64..5000, extra in -3i64..3, byte in any::<u8>()) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("f");
            let len = (max as i64 + extra).max(0) as usize;
            std::fs::write(&file, vec![byte; len]).unwrap();
            match read(&file, max) {
                Ok(bytes) => prop_assert!(bytes.len() == len && len as u64 <= max),
                Err(FileError::TooLarge { size, max: m }) => prop_assert!(len as u64 > max && size == len as u64 && m == max),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }

    #[test]
    fn special_files_and_large_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("plan.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        assert!(matches!(read(&fifo, 100), Err(FileError::NotRegular("FIFO"))));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "no waiting for a writer");

        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(read(&zero, 100), Err(FileError::NotRegular("character device"))));
        assert!(matches!(read(dir.path(), 100), Err(FileError::NotRegular("directory"))));

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 101]).unwrap();
        assert!(matches!(read(&big, 100), Err(FileError::TooLarge { size: 101, max: 100 })));
        assert_eq!(read(&big, 101).unwrap().len(), 101);
        let latin1 = dir.path().join("latin1.toml");
        std::fs::write(&latin1, b"name = \"M\xfcller\"").unwrap();
        assert!(matches!(read_text(&latin1, 100), Err(FileError::NotUtf8(_))));
        assert!(matches!(read(&dir.path().join("missing"), 100), Err(FileError::Io(_))));
    }
}

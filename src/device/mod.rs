//! Backup devices: one small ops table (`Device`), one file per kind.
//!
//! The engine asks capabilities (alignment, capacity, access pattern, how an
//! errno maps to full/failed), never kind names — as fio's engines do.

pub mod block;
pub mod file;
pub mod guard;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::units::parse_size;

/// `--dev PATH[,size=N][,rate=N]` as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub path: PathBuf,
    /// Capacity for a file device (required when the file does not exist yet).
    pub size_bytes: Option<u64>,
    /// Declared bandwidth for `--balance time`.
    pub rate_bytes_per_sec: Option<u64>,
}

impl DeviceSpec {
    /// Parse `PATH[,size=N][,rate=N]`. Sizes are powers of 1024 (K/M/G/T);
    /// a rate is bytes per second with the same suffixes.
    pub fn parse(text: &str) -> Result<DeviceSpec, String> {
        let mut parts = text.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("--dev '{text}': empty device path"));
        }
        let mut spec = DeviceSpec {
            path: PathBuf::from(path),
            size_bytes: None,
            rate_bytes_per_sec: None,
        };
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("--dev '{text}': option '{option}' is not key=value"))?;
            let parsed = parse_size(value).map_err(|e| format!("--dev '{text}': {key}: {e}"))?;
            match key {
                "size" => spec.size_bytes = Some(parsed),
                "rate" => {
                    if parsed == 0 {
                        return Err(format!("--dev '{text}': rate must be positive"));
                    }
                    spec.rate_bytes_per_sec = Some(parsed)
                }
                _ => {
                    return Err(format!(
                        "--dev '{text}': unknown option '{key}' (known: size, rate)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

/// What a device kind is, as far as the engine needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Block,
}

/// How an I/O error on a device is to be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry the same operation (EINTR, EAGAIN).
    Retry,
    /// The medium is full: what reached it is good, the rest goes elsewhere.
    Full,
    /// The device is not to be trusted any more.
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {path}: {what}: {error}")]
    Io {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("device {path}: {why}")]
    Unusable { path: PathBuf, why: String },
}

impl DeviceError {
    pub fn io(path: &Path, what: &'static str, error: std::io::Error) -> DeviceError {
        DeviceError::Io {
            path: path.to_path_buf(),
            what,
            error,
        }
    }
    pub fn unusable(path: &Path, why: impl Into<String>) -> DeviceError {
        DeviceError::Unusable {
            path: path.to_path_buf(),
            why: why.into(),
        }
    }
}

/// The ops table every device kind fills in.
pub trait Device: Send + Sync {
    fn path(&self) -> &Path;
    fn kind(&self) -> Kind;
    /// The descriptor the ring submits to.
    fn fd(&self) -> RawFd;
    /// Usable bytes from offset 0.
    fn capacity_bytes(&self) -> u64;
    /// Offsets and lengths of I/O must be multiples of this.
    fn block_bytes(&self) -> u32;
    /// Whether the descriptor was opened with O_DIRECT.
    fn direct_io(&self) -> bool;
    /// Make everything written so far durable.
    fn sync(&self) -> std::io::Result<()>;
    /// Map a failed operation's errno to what it means for the set.
    fn classify(&self, errno: i32) -> ErrorClass {
        classify_errno(errno)
    }
}

/// The common errno mapping of random-access devices.
pub fn classify_errno(errno: i32) -> ErrorClass {
    match errno {
        libc::EINTR | libc::EAGAIN => ErrorClass::Retry,
        libc::ENOSPC | libc::EFBIG | libc::EDQUOT => ErrorClass::Full,
        _ => ErrorClass::Failed,
    }
}

/// How a device is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Backup target: read-write, exclusive; a file device is created if missing.
    Write,
    /// Restore, verify, list, scan.
    Read,
}

/// Capacity and identity of a device without opening it for writing (for `plan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub capacity_bytes: u64,
    /// Canonical identity used to detect the same device given twice.
    pub identity: (u64, u64),
}

/// Find out what `spec` names and how large it is, without writing.
pub fn probe(spec: &DeviceSpec) -> Result<Probe, DeviceError> {
    let path = &spec.path;
    match std::fs::metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            let ft = meta.file_type();
            if ft.is_dir() {
                return Err(DeviceError::unusable(
                    path,
                    "is a directory, not a device or file",
                ));
            }
            if ft.is_block_device() {
                let file = File::open(path).map_err(|e| DeviceError::io(path, "open", e))?;
                let capacity = block::size_bytes(&file)
                    .map_err(|e| DeviceError::io(path, "BLKGETSIZE64", e))?;
                return Ok(Probe {
                    kind: Kind::Block,
                    capacity_bytes: capacity,
                    identity: (meta.rdev(), 0),
                });
            }
            if ft.is_file() {
                let capacity = spec.size_bytes.unwrap_or(meta.len());
                return Ok(Probe {
                    kind: Kind::File,
                    capacity_bytes: capacity,
                    identity: (meta.dev(), meta.ino()),
                });
            }
            Err(DeviceError::unusable(
                path,
                "is neither a regular file nor a block device",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(size) = spec.size_bytes else {
                return Err(DeviceError::unusable(
                    path,
                    "does not exist (give ,size=N to create a file device)",
                ));
            };
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                return Err(DeviceError::unusable(
                    path,
                    format!("parent directory {} does not exist", parent.display()),
                ));
            }
            Ok(Probe {
                kind: Kind::File,
                capacity_bytes: size,
                identity: (u64::MAX, hash_path(path)),
            })
        }
        Err(e) => Err(DeviceError::io(path, "stat", e)),
    }
}

fn hash_path(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .hash(&mut h);
    h.finish()
}

/// Open a device for the engine.
pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<Box<dyn Device>, DeviceError> {
    let probe = probe(spec)?;
    match probe.kind {
        Kind::Block => Ok(Box::new(block::BlockDevice::open(&spec.path, mode)?)),
        Kind::File => Ok(Box::new(file::FileDevice::open(spec, mode)?)),
    }
}

/// Open `path` with O_DIRECT if the filesystem allows, else buffered.
/// Returns the file and whether O_DIRECT is in effect.
pub fn open_maybe_direct(
    options: &std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut direct = options.clone();
    direct.custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
    match direct.open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut buffered = options.clone();
            buffered.custom_flags(libc::O_CLOEXEC);
            Ok((buffered.open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn raw(file: &File) -> RawFd {
    file.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parse() {
        let s = DeviceSpec::parse("/dev/loop0").unwrap();
        assert_eq!(s.path, PathBuf::from("/dev/loop0"));
        assert_eq!(s.size_bytes, None);
        let s = DeviceSpec::parse("x.img,size=1G,rate=400M").unwrap();
        assert_eq!(s.size_bytes, Some(1 << 30));
        assert_eq!(s.rate_bytes_per_sec, Some(400 << 20));
        assert!(DeviceSpec::parse("").is_err());
        assert!(DeviceSpec::parse("x,size").is_err());
        assert!(DeviceSpec::parse("x,speed=1").is_err());
        assert!(DeviceSpec::parse("x,size=1Q").is_err());
        assert!(DeviceSpec::parse("x,rate=0").is_err());
    }

    #[test]
    fn errno_classes() {
        assert_eq!(classify_errno(libc::ENOSPC), ErrorClass::Full);
        assert_eq!(classify_errno(libc::EIO), ErrorClass::Failed);
        assert_eq!(classify_errno(libc::EINTR), ErrorClass::Retry);
    }

    #[test]
    fn probe_errors_name_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let e = probe(&DeviceSpec::parse(dir.path().to_str().unwrap()).unwrap()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let missing = dir.path().join("nope.img");
        let e = probe(&DeviceSpec::parse(missing.to_str().unwrap()).unwrap()).unwrap_err();
        assert!(e.to_string().contains("nope.img"), "{e}");
        let p =
            probe(&DeviceSpec::parse(&format!("{},size=1M", missing.display())).unwrap()).unwrap();
        assert_eq!(p.capacity_bytes, 1 << 20);
    }
}

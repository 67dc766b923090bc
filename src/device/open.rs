//! Opening a device by its spec: what a path is (probe), which kind
//! opens it, and the direct-I/O alignment of a file (STATX_DIOALIGN).

use super::*;

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

/// What a device name stands for on this machine, by its name alone (no
/// I/O): the place the guard inspects and whose permissions count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// An export of a network server (`nbd://`, `nbd+unix://`): nothing
    /// local; the server says what may be done.
    Remote,
    /// Persistent memory mapped from this file, namespace or device DAX
    /// (`pmem:PATH`, `/dev/pmem*`, `/dev/dax*`).
    Mapped(PathBuf),
    /// An emulated tape kept in this directory (`vtape:DIR`).
    TapeDirectory(PathBuf),
    /// The path itself: a file, a block device or a tape drive.
    Node,
}

impl Backing {
    /// The file, namespace or device DAX behind a pmem name; None for
    /// every other name.
    pub fn mapped_file(self) -> Option<PathBuf> {
        match self {
            Backing::Mapped(file) => Some(file),
            _ => None,
        }
    }
}

/// What `path` stands for (see `Backing`).
pub fn backing(path: &Path) -> Backing {
    if nbd::is_nbd(path) {
        Backing::Remote
    } else if let Some(dir) = vtape::dir_of(path) {
        Backing::TapeDirectory(dir)
    } else if let Some(file) = pmem::file_of(path) {
        Backing::Mapped(file)
    } else {
        Backing::Node
    }
}

/// Find out what `spec` names and how large it is, without writing.
pub fn probe(spec: &DeviceSpec) -> Result<Probe, DeviceError> {
    let path = &spec.path;
    match backing(path) {
        Backing::Remote => return nbd::probe(spec),
        Backing::TapeDirectory(dir) => return vtape::probe(spec, &dir),
        Backing::Mapped(file) => return pmem::probe(spec, &file),
        Backing::Node => {}
    }
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
            if ft.is_char_device() {
                return tape::probe(spec, meta.rdev());
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
                "is neither a regular file, a block device nor a tape drive",
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

pub(crate) fn hash_path(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .hash(&mut h);
    h.finish()
}

/// Open a device for the engine.
pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<Box<dyn Device>, DeviceError> {
    let kind = match probe(spec) {
        Ok(probe) => probe.kind,
        // Reading a tape needs no capacity (`TapeDevice::open`): a drive
        // that reports no density code is read without `,size=`.
        Err(e @ DeviceError::Unusable { .. }) if mode == Mode::Read => {
            if !tape::is_st_node(&spec.path) {
                return Err(e);
            }
            Kind::Tape
        }
        Err(e) => return Err(e),
    };
    match kind {
        Kind::Block => Ok(Box::new(block::open(&spec.path, mode)?)),
        Kind::File => Ok(Box::new(file::open(spec, mode)?)),
        Kind::Tape => Ok(Box::new(tape::TapeDevice::open(spec, mode)?)),
        Kind::VirtualTape => Ok(Box::new(vtape::VirtualTape::open(spec, mode)?)),
        Kind::Pmem => Ok(Box::new(pmem::PmemDevice::open(spec, mode)?)),
        Kind::Nbd => Ok(Box::new(nbd::NbdDevice::open(spec, mode)?)),
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

/// statx(STATX_DIOALIGN) of an open file: the kernel's own O_DIRECT
/// limits as (memory alignment, offset alignment), when the kernel (6.1+)
/// and the filesystem report them. The one place pbio asks for them:
/// devices learn their block size from it at open, qualify reports it.
pub fn dio_align(file: &File) -> Option<(u32, u32)> {
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx writes one struct statx through the pointer, which
    // points to a live, zeroed local; the empty path is a NUL-terminated
    // string and AT_EMPTY_PATH makes the call describe the open fd itself.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call (and zeroed before).
    let stx = unsafe { buf.assume_init() };
    (stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0)
        .then_some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

//! `pmem` devices: persistent memory, mapped into the address space.
//!
//! Named `pmem:PATH` (a file on a DAX filesystem, or any file used as an
//! emulation, e.g. on tmpfs), or `/dev/pmem*` / `/dev/dax*` directly. The
//! whole device is mapped shared; the backup ring reads each record's
//! payload from the source with O_DIRECT straight into the mapping at the
//! record's position, writes the header in place in front of it, and then
//! calls `persist` on the record's range. There is no bounce buffer.
//!
//! Durability mechanism, chosen once at open and logged:
//! - a file is first mapped `MAP_SHARED_VALIDATE | MAP_SYNC`: the kernel
//!   only accepts that for a DAX mapping whose metadata is kept durable by
//!   the filesystem, so stores are made durable by CPU cache-line flushes
//!   and a fence alone (`persist.rs`: CLWB, else CLFLUSHOPT, else CLFLUSH,
//!   then SFENCE);
//! - a device-DAX character device (`/dev/dax*`) is always DAX: flushes too;
//! - anything else (`/dev/pmem*` mapped through the page cache, a file on
//!   tmpfs or another non-DAX filesystem, MAP_SYNC refused) is mapped plain
//!   `MAP_SHARED` and made durable with `msync(MS_SYNC)` of the range.
//!
//! The descriptor is opened without O_DIRECT, so the label and catalog
//! written through it (pwrite) and restore's reads (pread) see the same
//! pages as the mapping. Restore reads through that descriptor in this
//! first version; it does not yet hand out slices of the mapping.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::persist;
pub use super::persist::Durability;
use super::{raw, Device, DeviceError, DeviceSpec, Kind, Mapping, Mode, Probe};

/// Prefix selecting the pmem kind explicitly.
pub const PREFIX: &str = "pmem:";

/// The file behind a pmem device name: `pmem:PATH`, or `/dev/pmem*` and
/// `/dev/dax*` themselves; None for every other name.
pub(in crate::device) fn file_of(path: &Path) -> Option<PathBuf> {
    let text = path.to_str()?;
    if let Some(rest) = text.strip_prefix(PREFIX) {
        return (!rest.is_empty()).then(|| PathBuf::from(rest));
    }
    let auto = text
        .strip_prefix("/dev/pmem")
        .or_else(|| text.strip_prefix("/dev/dax"))
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    auto.then(|| path.to_path_buf())
}

/// Capacity of a device-DAX character device (sysfs).
fn dax_size(rdev: u64) -> std::io::Result<u64> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let text = std::fs::read_to_string(format!("/sys/dev/char/{major}:{minor}/size"))?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}")))
}

fn capacity_of(path: &Path, file: Option<&File>, meta: &std::fs::Metadata) -> std::io::Result<u64> {
    let ft = meta.file_type();
    if ft.is_block_device() {
        let owned;
        let file = match file {
            Some(f) => f,
            None => {
                owned = File::open(path)?;
                &owned
            }
        };
        super::block::size_bytes(file)
    } else if ft.is_char_device() {
        dax_size(meta.rdev())
    } else {
        Ok(meta.len())
    }
}

/// What `pmem:PATH` names and how large it is.
pub fn probe(spec: &DeviceSpec, file: &Path) -> Result<Probe, DeviceError> {
    let path = &spec.path;
    match std::fs::metadata(file) {
        Ok(meta) => {
            if meta.is_dir() {
                return Err(DeviceError::unusable(path, "is a directory"));
            }
            let capacity = match spec.size_bytes {
                Some(size) if meta.is_file() => size,
                _ => {
                    capacity_of(file, None, &meta).map_err(|e| DeviceError::io(path, "size", e))?
                }
            };
            let ft = meta.file_type();
            let identity = if ft.is_block_device() || ft.is_char_device() {
                (meta.rdev(), 0)
            } else {
                (meta.dev(), meta.ino())
            };
            Ok(Probe {
                kind: Kind::Pmem,
                capacity_bytes: capacity,
                identity,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(size) = spec.size_bytes else {
                return Err(DeviceError::unusable(
                    path,
                    "does not exist (give ,size=N to create an emulated pmem file)",
                ));
            };
            Ok(Probe {
                kind: Kind::Pmem,
                capacity_bytes: size,
                identity: (u64::MAX, super::hash_path(file)),
            })
        }
        Err(e) => Err(DeviceError::io(path, "stat", e)),
    }
}

pub struct PmemDevice {
    path: PathBuf,
    file: File,
    base: *mut u8,
    len: usize,
    durability: Durability,
    /// Learned at open: BLKSSZGET for a pmem block device, else pbio's
    /// 4096 (stores into a mapping take any byte; msync's page alignment
    /// is `persist`'s concern).
    block_bytes: u32,
    /// Mapped for writing (opened with `Mode::Write`).
    writable: bool,
    /// What open had to say (the mapping made, a MAP_SYNC refused).
    notes: Vec<super::DeviceNote>,
}

// SAFETY: the mapping is owned by this value and only unmapped on drop;
// the raw pointer is handed out for disjoint record ranges, and the
// engine's ring (one thread per device) is what writes through it.
unsafe impl Send for PmemDevice {}
// SAFETY: as above; `&self` methods only read the pointer or flush/msync.
unsafe impl Sync for PmemDevice {}

impl PmemDevice {
    pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<PmemDevice, DeviceError> {
        let path = &spec.path;
        let target = file_of(path).unwrap_or_else(|| path.clone());
        let write = mode == Mode::Write;
        let mut options = OpenOptions::new();
        options.read(true);
        if write {
            options.write(true);
        }
        let existed = target.exists();
        if write && !existed {
            options.create(true);
        }
        let file = options
            .open(&target)
            .map_err(|e| DeviceError::io(path, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| DeviceError::io(path, "stat", e))?;
        let regular = meta.is_file();
        let mut capacity = capacity_of(&target, Some(&file), &meta)
            .map_err(|e| DeviceError::io(path, "size", e))?;
        if write && regular {
            if let Some(size) = spec.size_bytes {
                if capacity < size {
                    file.set_len(size)
                        .map_err(|e| DeviceError::io(path, "set size", e))?;
                }
                capacity = size;
            }
            // Allocate every block now: a store into a hole of a full
            // filesystem would be a SIGBUS, an ENOSPC here is an error.
            // SAFETY: plain syscall on an open descriptor.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, capacity as i64) };
            if rc != 0 && rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
                return Err(DeviceError::io(
                    path,
                    "allocate",
                    std::io::Error::from_raw_os_error(rc),
                ));
            }
        }
        if capacity == 0 {
            return Err(DeviceError::unusable(
                path,
                "has size 0 (give ,size=N for an emulated pmem file)",
            ));
        }
        let len = usize::try_from(capacity)
            .map_err(|_| DeviceError::unusable(path, "too large to map"))?;
        let block_bytes = if meta.file_type().is_block_device() {
            let bytes = super::block::logical_block_bytes(&file)
                .map_err(|e| DeviceError::io(path, "BLKSSZGET", e))?;
            if !bytes.is_power_of_two() || bytes as usize > crate::format::BLOCK_BYTES {
                return Err(DeviceError::unusable(
                    path,
                    format!("logical block size {bytes} is not supported (at most 4096)"),
                ));
            }
            bytes
        } else {
            crate::format::BLOCK_BYTES as u32
        };
        let device_dax = meta.file_type().is_char_device();
        if device_dax {
            // Device-DAX supports only mmap: the label, the catalog and
            // every read would have to go through the mapping, which this
            // device kind does not do yet (found in the VM test bed:
            // pwrite of the label fails with EINVAL).
            return Err(DeviceError::unusable(
                path,
                "is a device-DAX node, which pbio cannot use yet (it supports only mmap): use /dev/pmemN or a file on an fsdax filesystem",
            ));
        }
        let mut notes = Vec::new();
        let (base, durability) = map(&file, len, write, regular, device_dax, &mut notes)
            .map_err(|e| DeviceError::io(path, "mmap", e))?;
        if write {
            notes.push(super::DeviceNote::PmemMapped {
                device: path.clone(),
                bytes: len,
                durability: durability.describe(),
            });
        }
        Ok(PmemDevice {
            path: path.clone(),
            file,
            base,
            len,
            durability,
            block_bytes,
            writable: write,
            notes,
        })
    }

    /// `offset..offset + len` as an index range of the mapping, if inside it.
    fn within(&self, offset: u64, len: usize) -> std::io::Result<usize> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len as u64 => Ok(offset as usize),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{offset}+{len} beyond the mapping of {} bytes", self.len),
            )),
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }
}

/// Map `len` bytes of `file` shared. A regular file is tried with
/// MAP_SYNC first (accepted only on DAX); a device-DAX node is DAX.
fn map(
    file: &File,
    len: usize,
    write: bool,
    regular: bool,
    device_dax: bool,
    notes: &mut Vec<super::DeviceNote>,
) -> std::io::Result<(*mut u8, Durability)> {
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // Why raw mmap and not memmap2: MAP_SYNC (with MAP_SHARED_VALIDATE),
    // which memmap2 does not offer, is what makes a DAX mapping's stores
    // durable by cache-line flushes alone.
    let mmap = |flags: libc::c_int| {
        // SAFETY: a fresh mapping of an open descriptor at an address the
        // kernel picks; nothing else refers to that range yet.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(p.cast::<u8>())
        }
    };
    let flush = || {
        if persist::available() {
            Durability::Flush(persist::detect())
        } else {
            Durability::Msync
        }
    };
    if write && regular {
        match mmap(libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC) {
            Ok(p) => return Ok((p, flush())),
            // Not DAX (EOPNOTSUPP), or a kernel without MAP_SYNC (EINVAL).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                ) =>
            {
                notes.push(super::DeviceNote::MapSyncRefused {
                    error: e.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    let p = mmap(libc::MAP_SHARED)?;
    Ok((
        p,
        if device_dax {
            flush()
        } else {
            Durability::Msync
        },
    ))
}

impl Drop for PmemDevice {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `open`; nothing refers
        // to it after the device is dropped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Device for PmemDevice {
    super::path_and_kind!(Kind::Pmem);
    fn fd(&self) -> RawFd {
        raw(&self.file)
    }
    fn capacity_bytes(&self) -> u64 {
        self.len as u64
    }
    fn block_bytes(&self) -> u32 {
        self.block_bytes
    }
    fn sync(&self) -> std::io::Result<()> {
        self.persist(0, self.len as u64)?;
        // Writes made through the descriptor (label, catalog).
        self.file.sync_all()
    }
    fn durability_mechanism(&self) -> Option<Durability> {
        Some(self.durability)
    }
    fn notes(&self) -> &[super::DeviceNote] {
        &self.notes
    }
    fn store(&self, offset: u64, src: &[u8]) -> std::io::Result<()> {
        if !self.writable {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        let at = self.within(offset, src.len())?;
        // SAFETY: `at..at + src.len()` is inside the mapping (checked by
        // `within`), which lives as long as `self`; `src` is the caller's
        // own buffer, not the mapping, so the ranges do not overlap; the
        // mapping is writable (checked above).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(at), src.len()) };
        Ok(())
    }
    fn load(&self, offset: u64, dst: &mut [u8]) -> std::io::Result<()> {
        let at = self.within(offset, dst.len())?;
        // SAFETY: as in `store`; the mapping is readable in both modes.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
    fn mapped(&self) -> Option<&[u8]> {
        // SAFETY: base..base + len is the device's mapping, initialised
        // (the medium's bytes), unmapped only when the device is dropped,
        // which the borrow of `self` outlives; the trait's contract: no
        // store goes through the mapping while the slice is read.
        Some(unsafe { std::slice::from_raw_parts(self.base, self.len) })
    }
    fn data_path(&self) -> crate::device::DataPath<'_> {
        crate::device::DataPath::Mapped(Mapping {
            base: self.base,
            len: self.len,
        })
    }
    fn persist(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let end = offset.saturating_add(len).min(self.len as u64);
        if offset >= end {
            return Ok(());
        }
        match self.durability {
            Durability::Flush(flush) => {
                // SAFETY: [offset, end) is within the mapping (clamped above).
                unsafe {
                    persist::flush_range(
                        flush,
                        self.base.add(offset as usize),
                        (end - offset) as usize,
                    )
                };
                Ok(())
            }
            Durability::Msync => {
                let page = 4096u64;
                let start = offset / page * page;
                // SAFETY: a page-aligned sub-range of our own mapping.
                let rc = unsafe {
                    libc::msync(
                        self.base.add(start as usize).cast(),
                        (end - start) as usize,
                        libc::MS_SYNC,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            file_of(Path::new("pmem:/dev/shm/x")),
            Some(PathBuf::from("/dev/shm/x"))
        );
        assert_eq!(
            file_of(Path::new("/dev/pmem0")),
            Some(PathBuf::from("/dev/pmem0"))
        );
        assert_eq!(
            file_of(Path::new("/dev/dax0.0")),
            Some(PathBuf::from("/dev/dax0.0"))
        );
        assert_eq!(file_of(Path::new("/dev/loop0")), None);
        assert_eq!(file_of(Path::new("/dev/pmemx")), None);
        assert_eq!(file_of(Path::new("pmem:")), None);
    }

    #[test]
    fn tmpfs_file_maps_and_persists_with_msync() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let name = format!("pmem:{}", dir.path().join("p.img").display());
        let spec = DeviceSpec::parse(&format!("{name},size=1M")).unwrap();
        let dev = PmemDevice::open(&spec, Mode::Write).unwrap();
        assert_eq!(dev.capacity_bytes(), 1 << 20);
        assert_eq!(dev.durability(), Durability::Msync);
        dev.store(8192, &[0xa5; 100]).unwrap();
        dev.persist(8192, 100).unwrap();
        drop(dev);
        let bytes = std::fs::read(dir.path().join("p.img")).unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert!(bytes[8192..8292].iter().all(|&b| b == 0xa5));
    }
}

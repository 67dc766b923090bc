//! `file` devices: a regular file (the embedded default, tests, demo).

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use super::{open_maybe_direct, raw, Device, DeviceError, DeviceSpec, Kind, Mode};

/// A device that is a node of the filesystem opened as a file: a regular
/// file (`open` here) or a block device (`block::open`). Writes go through
/// the descriptor; fsync makes them durable.
pub struct NodeDevice {
    path: PathBuf,
    file: File,
    kind: Kind,
    capacity_bytes: u64,
    direct: bool,
    /// I/O alignment: a disk's logical block, or the O_DIRECT offset
    /// alignment the kernel reports for a file (statx STATX_DIOALIGN),
    /// else `BLOCK_BYTES_DEFAULT`.
    block_bytes: u32,
}

impl NodeDevice {
    /// A node `open`ed (`direct`: with O_DIRECT) and measured.
    pub(super) fn new(
        path: PathBuf,
        file: File,
        kind: Kind,
        capacity_bytes: u64,
        block_bytes: u32,
        direct: bool,
    ) -> NodeDevice {
        NodeDevice {
            path,
            file,
            kind,
            capacity_bytes,
            direct,
            block_bytes,
        }
    }
}

/// A file's block size when the kernel does not report its O_DIRECT
/// alignment (older kernels, buffered files): the format's block.
const BLOCK_BYTES_DEFAULT: u32 = crate::format::BLOCK_BYTES as u32;

/// Open (and for `Mode::Write`, create or grow to `size=`) a file device.
pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<NodeDevice, DeviceError> {
    let path = &spec.path;
    let mut options = OpenOptions::new();
    options.read(true);
    if mode == Mode::Write {
        options.write(true).create(true);
    }
    let (file, direct) =
        open_maybe_direct(&options, path).map_err(|e| DeviceError::io(path, "open", e))?;
    let len = file
        .metadata()
        .map_err(|e| DeviceError::io(path, "stat", e))?
        .len();
    let capacity_bytes = match (mode, spec.size_bytes) {
        (Mode::Write, Some(size)) => {
            if len < size {
                file.set_len(size)
                    .map_err(|e| DeviceError::io(path, "set size", e))?;
            }
            size
        }
        _ => len,
    };
    if capacity_bytes == 0 {
        return Err(DeviceError::unusable(
            path,
            "has size 0 (give ,size=N for a file device)",
        ));
    }
    // Every structure on media is BLOCK_BYTES aligned; a filesystem
    // asking for more than that cannot take pbio's O_DIRECT writes.
    let block_bytes = match crate::device::dio_align(&file) {
        Some((_, offset)) if direct && offset.is_power_of_two() && offset >= 512 => offset,
        _ => BLOCK_BYTES_DEFAULT,
    };
    if direct && block_bytes > BLOCK_BYTES_DEFAULT {
        return Err(DeviceError::unusable(
            path,
            format!(
                "its filesystem needs O_DIRECT I/O aligned to {block_bytes} bytes, more than pbio's {BLOCK_BYTES_DEFAULT}-byte records"
            ),
        ));
    }
    Ok(NodeDevice::new(
        path.clone(),
        file,
        Kind::File,
        capacity_bytes,
        block_bytes,
        direct,
    ))
}

impl Device for NodeDevice {
    fn path(&self) -> &std::path::Path {
        &self.path
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    fn fd(&self) -> std::os::fd::RawFd {
        raw(&self.file)
    }
    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    fn block_bytes(&self) -> u32 {
        self.block_bytes
    }
    fn direct_io(&self) -> bool {
        self.direct
    }
    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

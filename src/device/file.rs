//! `file` devices: a regular file (the embedded default, tests, demo).

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use super::{open_maybe_direct, Device, DeviceError, DeviceSpec, Kind, Mode};

pub struct FileDevice {
    path: PathBuf,
    file: File,
    capacity_bytes: u64,
    direct: bool,
    /// The O_DIRECT offset alignment the kernel reports for this file
    /// (statx STATX_DIOALIGN), else `BLOCK_BYTES_DEFAULT`.
    block_bytes: u32,
}

/// A file's block size when the kernel does not report its O_DIRECT
/// alignment (older kernels, buffered files): the format's block.
const BLOCK_BYTES_DEFAULT: u32 = crate::format::BLOCK_BYTES as u32;

impl FileDevice {
    /// Open (and for `Mode::Write`, create or grow to `size=`) a file device.
    pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<FileDevice, DeviceError> {
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
        Ok(FileDevice {
            path: path.clone(),
            file,
            capacity_bytes,
            direct,
            block_bytes,
        })
    }
}

impl Device for FileDevice {
    super::field_accessors!(Kind::File);
    fn direct_io(&self) -> bool {
        self.direct
    }
    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

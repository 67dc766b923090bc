//! `file` devices: a regular file (the embedded default, tests, demo).

use std::fs::{File, OpenOptions};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::{open_maybe_direct, raw, Device, DeviceError, DeviceSpec, Kind, Mode};

pub struct FileDevice {
    path: PathBuf,
    file: File,
    capacity_bytes: u64,
    direct: bool,
}

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
        Ok(FileDevice {
            path: path.clone(),
            file,
            capacity_bytes,
            direct,
        })
    }
}

impl Device for FileDevice {
    fn path(&self) -> &Path {
        &self.path
    }
    fn kind(&self) -> Kind {
        Kind::File
    }
    fn fd(&self) -> RawFd {
        raw(&self.file)
    }
    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    fn block_bytes(&self) -> u32 {
        4096
    }
    fn direct_io(&self) -> bool {
        self.direct
    }
    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

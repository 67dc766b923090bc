//! `block` devices: loop, NVMe, SCSI disks, md. O_DIRECT, O_EXCL (which the
//! kernel refuses for a mounted or otherwise claimed device), capacity from
//! BLKGETSIZE64, alignment from BLKSSZGET.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::file::NodeDevice;
use super::{DeviceError, Kind, Mode};
use crate::format::BLOCK_BYTES;

// BLKGETSIZE64 = _IOR(0x12, 114, size_t); BLKSSZGET = _IO(0x12, 104) (returns int through the pointer).
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);

/// Size of the block device behind `file` in bytes.
pub fn size_bytes(file: &File) -> std::io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // to a live local; the fd is open for the duration of the call.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(std::io::Error::from)?;
    Ok(size)
}

/// Logical block size of the block device behind `file`.
pub fn logical_block_bytes(file: &File) -> std::io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer to a live local.
    unsafe { blksszget(file.as_raw_fd(), &mut size) }.map_err(std::io::Error::from)?;
    Ok(size as u32)
}

/// Open a block device: O_DIRECT, and O_EXCL for writing.
pub fn open(path: &Path, mode: Mode) -> Result<NodeDevice, DeviceError> {
    let mut options = OpenOptions::new();
    options.read(true);
    let mut flags = libc::O_DIRECT | libc::O_CLOEXEC;
    if mode == Mode::Write {
        options.write(true);
        flags |= libc::O_EXCL;
    }
    options.custom_flags(flags);
    let file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            DeviceError::unusable(
                path,
                "is in use (mounted, or held by another program): refusing to write to it",
            )
        } else {
            DeviceError::io(path, "open", e)
        }
    })?;
    let capacity_bytes = size_bytes(&file).map_err(|e| DeviceError::io(path, "BLKGETSIZE64", e))?;
    let block_bytes =
        logical_block_bytes(&file).map_err(|e| DeviceError::io(path, "BLKSSZGET", e))?;
    if block_bytes as usize > BLOCK_BYTES || !block_bytes.is_power_of_two() {
        return Err(DeviceError::unusable(
            path,
            format!("logical block size {block_bytes} is not supported (at most {BLOCK_BYTES})"),
        ));
    }
    Ok(NodeDevice::new(
        path.to_path_buf(),
        file,
        Kind::Block,
        capacity_bytes,
        block_bytes,
        true,
    ))
}

//! `tape` devices: Linux st drives through their non-rewinding nodes
//! (`/dev/nst*`, character devices of major 9).
//!
//! Variable-block mode (MTSETBLK 0): every write(2) is one tape block and
//! every read(2) returns one block, or 0 at a filemark. The drive's block
//! limits come from READ BLOCK LIMITS (SCSI, via SG_IO) where the driver
//! lets us ask. Positioning and filemarks are MTIOCTOP, status MTIOCGET.
//! Data blocks go through the ring like any device's records (st has no
//! `write_iter`: io_uring runs them on io-wq workers, one at a time,
//! offset -1 = the driver's position); the ioctls have no io_uring op and
//! are issued synchronously while nothing is in flight.
//!
//! This is the one place where pbio issues st ioctls; each `unsafe` block
//! says why it is sound. Request codes are computed with nix's macros and
//! pinned by tests against the values of `linux/mtio.h` on x86_64.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Access, Device, DeviceError, DeviceSpec, Kind, Mode, Probe, TapeOp, TapeStatus};
use crate::format::BLOCK_BYTES;

/// `struct mtop` (linux/mtio.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MtOp {
    pub mt_op: libc::c_short,
    pub mt_count: libc::c_int,
}

/// `struct mtget` (linux/mtio.h); `__kernel_daddr_t` is an int.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MtGet {
    pub mt_type: libc::c_long,
    pub mt_resid: libc::c_long,
    pub mt_dsreg: libc::c_long,
    pub mt_gstat: libc::c_long,
    pub mt_erreg: libc::c_long,
    pub mt_fileno: libc::c_int,
    pub mt_blkno: libc::c_int,
}

/// `struct mtpos` (linux/mtio.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MtPos {
    pub mt_blkno: libc::c_long,
}

/// `mt_op` codes (linux/mtio.h).
pub mod op {
    pub const MTFSF: i16 = 1;
    pub const MTBSF: i16 = 2;
    pub const MTFSR: i16 = 3;
    pub const MTBSR: i16 = 4;
    pub const MTWEOF: i16 = 5;
    pub const MTREW: i16 = 6;
    pub const MTNOP: i16 = 8;
    pub const MTEOM: i16 = 12;
    pub const MTSETBLK: i16 = 20;
    pub const MTSETDRVBUFFER: i16 = 24;
    pub const MTWEOFI: i16 = 35;
}

/// `mt_gstat` bits (linux/mtio.h).
pub mod gstat {
    pub const GMT_EOF: u32 = 0x8000_0000;
    pub const GMT_BOT: u32 = 0x4000_0000;
    pub const GMT_EOT: u32 = 0x2000_0000;
    pub const GMT_SM: u32 = 0x1000_0000;
    pub const GMT_EOD: u32 = 0x0800_0000;
    pub const GMT_WR_PROT: u32 = 0x0400_0000;
    pub const GMT_ONLINE: u32 = 0x0100_0000;
    pub const GMT_DR_OPEN: u32 = 0x0004_0000;
}

/// `mt_dsreg`: block size in the low 24 bits, density code in the top 8.
pub const MT_ST_BLKSIZE_MASK: u64 = 0x00ff_ffff;
pub const MT_ST_DENSITY_SHIFT: u32 = 24;

nix::ioctl_write_ptr!(mtioctop, b'm', 1, MtOp);
nix::ioctl_read!(mtiocget, b'm', 2, MtGet);
nix::ioctl_read!(mtiocpos, b'm', 3, MtPos);

/// `MTIOCTOP = _IOW('m', 1, struct mtop)`.
pub const MTIOCTOP: u64 = nix::request_code_write!(b'm', 1, std::mem::size_of::<MtOp>()) as u64;
/// `MTIOCGET = _IOR('m', 2, struct mtget)`.
pub const MTIOCGET: u64 = nix::request_code_read!(b'm', 2, std::mem::size_of::<MtGet>()) as u64;
/// `MTIOCPOS = _IOR('m', 3, struct mtpos)`.
pub const MTIOCPOS: u64 = nix::request_code_read!(b'm', 3, std::mem::size_of::<MtPos>()) as u64;

/// Character device major of the SCSI tape driver.
pub const ST_MAJOR: u32 = 9;
/// Minor bit of the non-rewinding nodes (`/dev/nst*`).
pub const ST_MINOR_NO_REWIND: u32 = 0x80;

/// Tape block size used when neither `--tape-block` nor the drive says
/// otherwise: 1 MiB keeps a block within st's default 256 scatter/gather
/// segments of 4 KiB pages (IO-NOTES.md, max_sg_segs).
pub const TAPE_BLOCK_BYTES_DEFAULT: u32 = 1 << 20;

// --- SG_IO, for READ BLOCK LIMITS --------------------------------------

const READ_BLOCK_LIMITS: u8 = 0x05;

/// The drive's block limits: (min, max) bytes of a variable-length block.
fn parse_block_limits(data: &[u8; 6]) -> (u32, u32) {
    let max = u32::from_be_bytes([0, data[1], data[2], data[3]]);
    let min = u32::from(u16::from_be_bytes([data[4], data[5]]));
    (min, max)
}

/// READ BLOCK LIMITS through the st node (needs CAP_SYS_RAWIO).
fn read_block_limits(fd: RawFd) -> std::io::Result<(u32, u32)> {
    let cdb = [READ_BLOCK_LIMITS, 0, 0, 0, 0, 0];
    let mut data = [0u8; 6];
    let mut sense = [0u8; 32];
    let hdr = super::sg::command(fd, &cdb, &mut data, &mut sense, 10_000)?;
    if hdr.status != 0 || hdr.host_status != 0 || hdr.driver_status != 0 {
        return Err(std::io::Error::other(format!(
            "READ BLOCK LIMITS: SCSI status {:#x}, host {:#x}, driver {:#x}",
            hdr.status, hdr.host_status, hdr.driver_status
        )));
    }
    Ok(parse_block_limits(&data))
}

/// Native capacity of a cartridge by density code (mt_dsreg), for planning
/// when `size=` is not given. LTO generations; None: unknown (give size=).
pub fn native_capacity_bytes(density_code: u8) -> Option<u64> {
    const G: u64 = 1_000_000_000;
    Some(match density_code {
        0x40 => 100 * G,    // LTO-1
        0x42 => 200 * G,    // LTO-2
        0x44 => 400 * G,    // LTO-3
        0x46 => 800 * G,    // LTO-4
        0x58 => 1500 * G,   // LTO-5
        0x5a => 2500 * G,   // LTO-6
        0x5c => 6000 * G,   // LTO-7
        0x5d => 9000 * G,   // LTO-7 M8
        0x5e => 12_000 * G, // LTO-8
        0x60 => 18_000 * G, // LTO-9
        _ => return None,
    })
}

fn do_op(fd: RawFd, mt_op: i16, count: i32) -> std::io::Result<()> {
    let arg = MtOp {
        mt_op,
        mt_count: count,
    };
    // SAFETY: MTIOCTOP reads one struct mtop through the pointer, which
    // points to a live local; the fd is open for the call.
    unsafe { mtioctop(fd, &arg) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}

fn get_status(fd: RawFd) -> std::io::Result<TapeStatus> {
    let mut get = MtGet::default();
    // SAFETY: MTIOCGET writes one struct mtget through the pointer to a live local.
    unsafe { mtiocget(fd, &mut get) }.map_err(std::io::Error::from)?;
    let mut status = status_of(&get);
    let mut pos = MtPos::default();
    // SAFETY: MTIOCPOS writes one struct mtpos through the pointer to a live local.
    if unsafe { mtiocpos(fd, &mut pos) }.is_ok() {
        status.logical_object = pos.mt_blkno;
    }
    Ok(status)
}

/// TapeStatus from the raw MTIOCGET answer.
pub fn status_of(get: &MtGet) -> TapeStatus {
    let gstat = get.mt_gstat as u64 as u32;
    let dsreg = get.mt_dsreg as u64;
    TapeStatus {
        file_number: get.mt_fileno as i64,
        block_number: get.mt_blkno as i64,
        logical_object: -1,
        at_bot: gstat & gstat::GMT_BOT != 0,
        at_eot: gstat & gstat::GMT_EOT != 0,
        at_eod: gstat & gstat::GMT_EOD != 0,
        write_protected: gstat & gstat::GMT_WR_PROT != 0,
        online: gstat & gstat::GMT_ONLINE != 0,
        density_code: ((dsreg >> MT_ST_DENSITY_SHIFT) & 0xff) as u8,
        block_size_bytes: (dsreg & MT_ST_BLKSIZE_MASK) as u32,
    }
}

fn check_node(path: &Path, rdev: u64) -> Result<u64, DeviceError> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    if major != ST_MAJOR {
        return Err(DeviceError::unusable(
            path,
            format!("is a character device (major {major}) but not a SCSI tape drive (st, major {ST_MAJOR})"),
        ));
    }
    if minor & ST_MINOR_NO_REWIND == 0 {
        return Err(DeviceError::unusable(
            path,
            "is a rewinding tape node: use the non-rewinding one (/dev/nstN), pbio positions the tape itself",
        ));
    }
    // The same drive whatever the mode bits of the node.
    Ok(libc::makedev(major, minor & !ST_MINOR_NO_REWIND))
}

/// `path` is a non-rewinding st node.
pub fn is_st_node(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::metadata(path)
        .is_ok_and(|m| m.file_type().is_char_device() && check_node(path, m.rdev()).is_ok())
}

/// Capacity and identity of a tape drive without writing to it.
pub fn probe(spec: &DeviceSpec, rdev: u64) -> Result<Probe, DeviceError> {
    let path = &spec.path;
    let drive = check_node(path, rdev)?;
    let capacity_bytes = match spec.size_bytes {
        Some(size) => size,
        None => {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| DeviceError::io(path, "open", e))?;
            let status =
                get_status(file.as_raw_fd()).map_err(|e| DeviceError::io(path, "MTIOCGET", e))?;
            native_capacity_bytes(status.density_code).ok_or_else(|| {
                DeviceError::unusable(
                    path,
                    format!(
                        "unknown cartridge capacity (density code {:#04x}): give ,size=N (its native capacity)",
                        status.density_code
                    ),
                )
            })?
        }
    };
    Ok(Probe {
        kind: Kind::Tape,
        capacity_bytes,
        identity: (drive, 0),
    })
}

pub struct TapeDevice {
    path: PathBuf,
    file: File,
    capacity_bytes: u64,
    /// The drive's largest block (READ BLOCK LIMITS), when it told us.
    block_bytes_max: Option<u32>,
    /// What open had to say (a drive without READ BLOCK LIMITS).
    notes: Vec<super::DeviceNote>,
}

impl TapeDevice {
    pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<TapeDevice, DeviceError> {
        let path = &spec.path;
        let meta = std::fs::metadata(path).map_err(|e| DeviceError::io(path, "stat", e))?;
        let rdev = {
            use std::os::unix::fs::MetadataExt;
            meta.rdev()
        };
        let capacity_bytes = match probe(spec, rdev) {
            Ok(probe) => probe.capacity_bytes,
            // Reading needs no capacity: a drive that reports no density
            // code (tgt's virtual drives, scsi_debug's tape) reads without
            // `,size=`, up to its end of recorded data; restore and list
            // through a library have no `,size=` to give.
            Err(DeviceError::Unusable { .. }) if mode == Mode::Read => {
                check_node(path, rdev)?;
                u64::MAX
            }
            Err(e) => return Err(e),
        };
        let mut options = OpenOptions::new();
        options.read(true).write(mode == Mode::Write);
        // No O_NONBLOCK: st then waits for the drive to become ready, and
        // io_uring must not see the fd as non-blocking (IO-NOTES.md).
        options.custom_flags(libc::O_CLOEXEC);
        let file = options.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                DeviceError::unusable(path, "is in use by another program")
            } else {
                DeviceError::io(path, "open", e)
            }
        })?;
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on an fd we own; no pointers.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        let status = get_status(fd).map_err(|e| DeviceError::io(path, "MTIOCGET", e))?;
        if !status.online {
            return Err(DeviceError::unusable(
                path,
                "no tape loaded (drive offline)",
            ));
        }
        if mode == Mode::Write && status.write_protected {
            return Err(DeviceError::unusable(path, "the tape is write-protected"));
        }
        do_op(fd, op::MTSETBLK, 0)
            .map_err(|e| DeviceError::io(path, "MTSETBLK 0 (variable block mode)", e))?;
        let mut notes = Vec::new();
        let block_bytes_max = match read_block_limits(fd) {
            Ok((_, max)) if max >= BLOCK_BYTES as u32 => Some(max),
            Ok(_) => None,
            Err(e) => {
                notes.push(super::DeviceNote::NoBlockLimits {
                    device: path.clone(),
                    error: e.to_string(),
                });
                None
            }
        };
        Ok(TapeDevice {
            path: path.clone(),
            file,
            capacity_bytes,
            block_bytes_max,
            notes,
        })
    }
}

impl Device for TapeDevice {
    super::path_and_kind!(Kind::Tape);
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    fn block_bytes(&self) -> u32 {
        BLOCK_BYTES as u32
    }
    /// MTWEOF 0: the drive writes out its buffer.
    fn sync(&self) -> std::io::Result<()> {
        do_op(self.fd(), op::MTWEOF, 0)
    }
    fn access(&self) -> Access {
        Access::Sequential
    }
    fn block_bytes_max(&self) -> Option<u32> {
        self.block_bytes_max
    }
    fn notes(&self) -> &[super::DeviceNote] {
        &self.notes
    }
    fn tape_op(&self, tape_op: TapeOp) -> std::io::Result<()> {
        let count =
            |n: u32| i32::try_from(n).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
        match tape_op {
            TapeOp::Rewind => do_op(self.fd(), op::MTREW, 1),
            TapeOp::ForwardFiles(n) => do_op(self.fd(), op::MTFSF, count(n)?),
            TapeOp::BackFiles(n) => do_op(self.fd(), op::MTBSF, count(n)?),
            TapeOp::ForwardBlocks(n) => do_op(self.fd(), op::MTFSR, count(n)?),
            TapeOp::BackBlocks(n) => do_op(self.fd(), op::MTBSR, count(n)?),
            TapeOp::EndOfData => do_op(self.fd(), op::MTEOM, 1),
            TapeOp::WriteFilemarks(n) => do_op(self.fd(), op::MTWEOF, count(n)?),
        }
    }
    fn tape_status(&self) -> std::io::Result<TapeStatus> {
        get_status(self.fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The request codes, computed by nix's macros, against linux/mtio.h
    /// as the kernel's _IOC encoding gives them on x86_64:
    /// dir << 30 | size << 16 | type << 8 | nr.
    #[test]
    fn ioctl_request_codes() {
        assert_eq!(MTIOCTOP, 0x4008_6d01);
        assert_eq!(MTIOCGET, 0x8030_6d02);
        assert_eq!(MTIOCPOS, 0x8008_6d03);
        let ioc = |dir: u64, ty: u8, nr: u64, size: usize| {
            dir << 30 | (size as u64) << 16 | (ty as u64) << 8 | nr
        };
        assert_eq!(MTIOCTOP, ioc(1, b'm', 1, size_of::<MtOp>()));
        assert_eq!(MTIOCGET, ioc(2, b'm', 2, size_of::<MtGet>()));
        assert_eq!(MTIOCPOS, ioc(2, b'm', 3, size_of::<MtPos>()));
    }

    #[test]
    fn struct_sizes_match_the_kernel() {
        // struct mtop { short; int; }: 2 + 2 padding + 4.
        assert_eq!(size_of::<MtOp>(), 8);
        assert_eq!(std::mem::offset_of!(MtOp, mt_count), 4);
        // struct mtget: five longs and two ints.
        assert_eq!(size_of::<MtGet>(), 48);
        assert_eq!(std::mem::offset_of!(MtGet, mt_fileno), 40);
        assert_eq!(std::mem::offset_of!(MtGet, mt_blkno), 44);
        assert_eq!(size_of::<MtPos>(), 8);
    }

    #[test]
    fn op_codes_and_status_bits() {
        assert_eq!(
            (
                op::MTFSF,
                op::MTBSF,
                op::MTFSR,
                op::MTBSR,
                op::MTWEOF,
                op::MTREW
            ),
            (1, 2, 3, 4, 5, 6)
        );
        assert_eq!((op::MTNOP, op::MTEOM, op::MTSETBLK), (8, 12, 20));
        assert_eq!((op::MTSETDRVBUFFER, op::MTWEOFI), (24, 35));
        assert_eq!(gstat::GMT_EOT, 0x2000_0000);
        assert_eq!(gstat::GMT_EOD, 0x0800_0000);
        assert_eq!(gstat::GMT_WR_PROT, 0x0400_0000);
        let get = MtGet {
            mt_gstat: (gstat::GMT_EOT | gstat::GMT_ONLINE) as libc::c_long,
            mt_dsreg: (0x5e << 24) as libc::c_long,
            mt_fileno: 1,
            mt_blkno: 7,
            ..MtGet::default()
        };
        let s = status_of(&get);
        assert!(s.at_eot && s.online && !s.at_eod && !s.write_protected && !s.at_bot);
        assert_eq!((s.file_number, s.block_number), (1, 7));
        assert_eq!((s.density_code, s.block_size_bytes), (0x5e, 0));
        assert_eq!(
            native_capacity_bytes(s.density_code),
            Some(12_000_000_000_000)
        );
        assert_eq!(native_capacity_bytes(0x01), None);
    }

    #[test]
    fn block_limits_parse() {
        // Granularity 0, max 8 MiB (0x800000), min 1.
        assert_eq!(parse_block_limits(&[0, 0x80, 0, 0, 0, 1]), (1, 8 << 20));
        assert_eq!(
            parse_block_limits(&[0, 0xff, 0xff, 0xff, 0, 4]),
            (4, 0xff_ffff)
        );
    }

    #[test]
    fn node_checks() {
        let p = Path::new("/dev/x");
        let nst0 = libc::makedev(ST_MAJOR, 128);
        let st0 = libc::makedev(ST_MAJOR, 0);
        assert_eq!(check_node(p, nst0).unwrap(), st0);
        let e = check_node(p, st0).unwrap_err().to_string();
        assert!(e.contains("non-rewinding"), "{e}");
        let e = check_node(p, libc::makedev(1, 3)).unwrap_err().to_string();
        assert!(e.contains("not a SCSI tape"), "{e}");
    }
}

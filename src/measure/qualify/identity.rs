//! Identity and geometry of a device: block sizes from the kernel (ioctls),
//! what sysfs says about the disk and its queue, and for a file device the
//! filesystem it lives on and the disk under that. Reads only.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::device::nbd::{proto, Address};
use crate::device::{block, Device, ExportIdentity, Kind};

// BLKPBSZGET = _IO(0x12, 123): the physical block size (an unsigned int
// written through the pointer, like BLKSSZGET).
nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc::c_uint);

/// sysfs queue attributes worth archiving (names as in /sys/block/X/queue).
pub const QUEUE_ATTRIBUTES: [&str; 15] = [
    "logical_block_size",
    "physical_block_size",
    "minimum_io_size",
    "optimal_io_size",
    "max_hw_sectors_kb",
    "max_sectors_kb",
    "max_segments",
    "nr_requests",
    "rotational",
    "write_cache",
    "fua",
    "dma_alignment",
    "dax",
    "zoned",
    "discard_max_bytes",
];

/// What sysfs knows about one disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sysfs {
    /// The disk's name (`loop5`, `nvme0n1`, `sda`): the whole disk when the
    /// device is a partition.
    pub name: String,
    /// The partition's name, when the device is one.
    pub partition: Option<String>,
    /// model, vendor, serial, firmware, wwid: whichever exist.
    pub ids: BTreeMap<&'static str, String>,
    /// `queue/*` attributes, raw text (trimmed).
    pub queue: BTreeMap<&'static str, String>,
    /// A loop device's backing file and whether it runs in direct-I/O mode.
    pub loop_backing_file: Option<String>,
    pub loop_dio: Option<bool>,
}

impl Sysfs {
    pub fn queue_u64(&self, name: &str) -> Option<u64> {
        self.queue.get(name).and_then(|v| v.parse().ok())
    }
}

/// The filesystem a file device lives on.
#[derive(Clone, Debug, PartialEq)]
pub struct Filesystem {
    /// A name for the statfs magic (`ext4` covers ext2/3/4), else the magic in hex.
    pub kind: String,
    pub magic: u64,
    /// statfs f_bsize.
    pub block_bytes: u64,
    /// st_blksize: the preferred I/O size.
    pub io_block_bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub path: String,
    pub kind: &'static str,
    pub capacity_bytes: u64,
    pub direct_io: bool,
    /// BLKSSZGET / BLKPBSZGET (block devices).
    pub logical_block_bytes: Option<u32>,
    pub physical_block_bytes: Option<u32>,
    pub rotational: Option<bool>,
    /// The device's own disk (block), or the disk under the filesystem (file).
    pub sysfs: Option<Sysfs>,
    pub filesystem: Option<Filesystem>,
    /// statx STATX_DIOALIGN: the kernel's own O_DIRECT limits (memory, offset).
    pub kernel_dio_align: Option<(u32, u32)>,
    /// Tapes: the drive's status and block limit (`"tape"` in the report).
    pub tape: Option<Value>,
    /// pmem: the mapping and how it is made durable (`"pmem"` in the report).
    pub pmem: Option<Value>,
    /// NBD exports: the server's address, transmission flags, block sizes,
    /// structured replies and the RTT measured at connect (`"nbd"`).
    pub nbd: Option<Value>,
}

impl Identity {
    pub fn id(&self, key: &str) -> Option<&str> {
        self.sysfs
            .as_ref()
            .and_then(|s| s.ids.get(key))
            .map(String::as_str)
    }

    pub fn to_json(&self) -> Value {
        let sysfs = self.sysfs.as_ref().map(|s| {
            let queue: serde_json::Map<String, Value> = s
                .queue
                .iter()
                .map(|(k, v)| {
                    let value = v.parse::<u64>().map(Value::from).unwrap_or(json!(v));
                    (k.to_string(), value)
                })
                .collect();
            json!({
                "name": s.name,
                "partition": s.partition,
                "queue": queue,
                "loop_backing_file": s.loop_backing_file,
                "loop_dio": s.loop_dio,
            })
        });
        let mut j = json!({
            "path": self.path,
            "kind": self.kind,
            "capacity_bytes": self.capacity_bytes,
            "direct_io": self.direct_io,
            "logical_block_bytes": self.logical_block_bytes,
            "physical_block_bytes": self.physical_block_bytes,
            "rotational": self.rotational,
            "model": self.id("model"),
            "vendor": self.id("vendor"),
            "serial": self.id("serial"),
            "firmware": self.id("firmware"),
            "wwid": self.id("wwid"),
            "sysfs": sysfs,
            "filesystem": self.filesystem.as_ref().map(|f| json!({
                "type": f.kind,
                "magic": format!("{:#x}", f.magic),
                "block_bytes": f.block_bytes,
                "io_block_bytes": f.io_block_bytes,
            })),
            "kernel_dio_align": self.kernel_dio_align.map(|(m, o)| json!({
                "memory_bytes": m,
                "offset_bytes": o,
            })),
        });
        if let Some(t) = &self.tape {
            j["tape"] = t.clone();
        }
        if let Some(p) = &self.pmem {
            j["pmem"] = p.clone();
        }
        if let Some(n) = &self.nbd {
            j["nbd"] = n.clone();
        }
        j
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The SCSI unit serial number page (VPD 0x80): 4 header bytes, then ASCII.
fn vpd_serial(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let len = *bytes.get(3)? as usize;
    let text = String::from_utf8_lossy(bytes.get(4..4 + len)?)
        .trim()
        .to_string();
    (!text.is_empty()).then_some(text)
}

/// sysfs of the disk with device number (major, minor).
pub fn sysfs_for(dev: (u32, u32)) -> Option<Sysfs> {
    let node = std::fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    let (disk, partition): (PathBuf, Option<String>) = if node.join("partition").exists() {
        let name = node.file_name()?.to_string_lossy().into_owned();
        (node.parent()?.to_path_buf(), Some(name))
    } else {
        (node, None)
    };
    let mut out = Sysfs {
        name: disk.file_name()?.to_string_lossy().into_owned(),
        partition,
        ..Sysfs::default()
    };
    let first = |names: &[&str]| names.iter().find_map(|n| read_trimmed(&disk.join(n)));
    let ids: [(&'static str, Option<String>); 5] = [
        ("model", first(&["device/model"])),
        ("vendor", first(&["device/vendor"])),
        (
            "serial",
            first(&["device/serial", "serial"])
                .or_else(|| vpd_serial(&disk.join("device/vpd_pg80"))),
        ),
        ("firmware", first(&["device/firmware_rev", "device/rev"])),
        ("wwid", first(&["wwid", "device/wwid"])),
    ];
    for (key, value) in ids {
        if let Some(v) = value {
            out.ids.insert(key, v);
        }
    }
    for attr in QUEUE_ATTRIBUTES {
        if let Some(v) = read_trimmed(&disk.join("queue").join(attr)) {
            out.queue.insert(attr, v);
        }
    }
    out.loop_backing_file = read_trimmed(&disk.join("loop/backing_file"));
    out.loop_dio = read_trimmed(&disk.join("loop/dio")).map(|v| v == "1");
    Some(out)
}

/// Common statfs magics (linux/magic.h).
fn filesystem_name(magic: u64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0xFF53_4D42 => "cifs".into(),
        0x6573_5546 => "fuse".into(),
        0x4d44 => "vfat".into(),
        0x5346_544E => "ntfs".into(),
        0x858458f6 => "ramfs".into(),
        other => format!("{other:#x}"),
    }
}

/// statx(STATX_DIOALIGN) of the file at `path` (see `device::dio_align`).
fn kernel_dio_align(path: &Path) -> Option<(u32, u32)> {
    crate::device::dio_align(&File::open(path).ok()?)
}

fn physical_block_bytes(file: &File) -> std::io::Result<u32> {
    let mut size: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int through the pointer to a
    // live local; the fd is open for the duration of the call.
    unsafe { blkpbszget(file.as_raw_fd(), &mut size) }.map_err(std::io::Error::from)?;
    Ok(size)
}

/// The filesystem a file lives on (statfs).
fn filesystem_of(path: &Path, meta: &std::fs::Metadata) -> Option<Filesystem> {
    let file = File::open(path).ok()?;
    let fs = nix::sys::statfs::fstatfs(&file).ok()?;
    let magic = fs.filesystem_type().0 as u64;
    Some(Filesystem {
        kind: filesystem_name(magic),
        magic,
        block_bytes: fs.block_size() as u64,
        io_block_bytes: meta.blksize(),
    })
}

/// What sysfs says about an st drive (`/sys/class/scsi_tape/nst0/device`):
/// vendor, model, firmware revision, serial (VPD page 0x80).
fn tape_sysfs(name: &str) -> Option<Sysfs> {
    let dev = PathBuf::from(format!("/sys/class/scsi_tape/{name}/device"));
    if !dev.exists() {
        return None;
    }
    let mut out = Sysfs {
        name: name.to_string(),
        ..Sysfs::default()
    };
    let ids: [(&'static str, Option<String>); 4] = [
        ("vendor", read_trimmed(&dev.join("vendor"))),
        ("model", read_trimmed(&dev.join("model"))),
        ("firmware", read_trimmed(&dev.join("rev"))),
        ("serial", vpd_serial(&dev.join("vpd_pg80"))),
    ];
    for (key, value) in ids {
        if let Some(v) = value {
            out.ids.insert(key, v);
        }
    }
    Some(out)
}

/// Everything knowable about `device` without writing it.
pub fn identify(device: &dyn Device) -> Identity {
    let path = device.path();
    let mut out = Identity {
        path: path.display().to_string(),
        kind: "file",
        capacity_bytes: device.capacity_bytes(),
        direct_io: device.direct_io(),
        logical_block_bytes: None,
        physical_block_bytes: None,
        rotational: None,
        sysfs: None,
        filesystem: None,
        kernel_dio_align: kernel_dio_align(path),
        tape: None,
        pmem: None,
        nbd: None,
    };
    // A pmem device is identified as the file or block device behind it.
    let target = crate::device::backing(path)
        .mapped_file()
        .filter(|_| device.kind() == Kind::Pmem)
        .unwrap_or_else(|| path.to_path_buf());
    let path = target.as_path();
    let meta = std::fs::metadata(path).ok();
    #[allow(unreachable_patterns)] // Kind grows: a new kind identifies itself here
    match device.kind() {
        Kind::Nbd => {
            // A remote export: no ioctls, sysfs or statx on the socket.
            out.kind = "nbd";
            out.kernel_dio_align = None;
            out.nbd = device
                .export_identity()
                .map(|n| nbd_identity_json(device.path(), &n));
        }
        Kind::Tape => {
            out.kind = "tape";
            out.kernel_dio_align = None;
            out.sysfs = path
                .file_name()
                .and_then(|n| tape_sysfs(&n.to_string_lossy()));
        }
        Kind::VirtualTape => {
            out.kind = "vtape";
            out.kernel_dio_align = None;
        }
        Kind::Pmem => {
            out.kind = "pmem";
            out.kernel_dio_align = None;
            if let Some(m) = &meta {
                if m.file_type().is_block_device() {
                    if let Ok(file) = File::open(path) {
                        out.logical_block_bytes = block::logical_block_bytes(&file).ok();
                        out.physical_block_bytes = physical_block_bytes(&file).ok();
                    }
                    out.sysfs = sysfs_for((libc::major(m.rdev()), libc::minor(m.rdev())));
                } else if m.is_file() {
                    out.filesystem = filesystem_of(path, m);
                }
            }
        }
        Kind::Block => {
            out.kind = "block";
            if let Ok(file) = File::open(path) {
                out.logical_block_bytes = block::logical_block_bytes(&file).ok();
                out.physical_block_bytes = physical_block_bytes(&file).ok();
            }
            let rdev = meta
                .as_ref()
                .filter(|m| m.file_type().is_block_device())
                .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev())));
            out.sysfs = rdev.and_then(sysfs_for);
        }
        Kind::File => {
            if let Some(m) = &meta {
                out.filesystem = filesystem_of(path, m);
                // Filesystems without a disk (tmpfs, btrfs's anonymous
                // device numbers) have major 0: nothing in sysfs.
                let dev = (libc::major(m.dev()), libc::minor(m.dev()));
                if dev.0 != 0 {
                    out.sysfs = sysfs_for(dev);
                }
            }
        }
        _ => {}
    }
    out.rotational = out
        .sysfs
        .as_ref()
        .and_then(|s| s.queue_u64("rotational"))
        .map(|r| r != 0);
    out
}

pub(super) fn flag(flags: u16, bit: u16) -> bool {
    flags & bit != 0
}

/// The export as the handshake described it (`"nbd"` in the report).
pub fn nbd_identity_json(url: &Path, n: &ExportIdentity) -> Value {
    let info = n.info;
    let flags = info.transmission_flags;
    let (transport, address) = match &n.address {
        Address::Tcp { host, port } => ("tcp", format!("{host}:{port}")),
        Address::Unix { socket } => ("unix", socket.display().to_string()),
    };
    json!({
        "url": url.display().to_string(),
        "transport": transport,
        "address": address,
        "export": n.export,
        "size_bytes": info.size_bytes,
        "transmission_flags": flags,
        "read_only": flag(flags, proto::TFLAG_READ_ONLY),
        "send_flush": flag(flags, proto::TFLAG_SEND_FLUSH),
        "send_fua": flag(flags, proto::TFLAG_SEND_FUA),
        "structured_replies": n.structured_replies,
        "block_sizes": info.block_sizes.map(|(min, pref, max)| json!({
            "minimum": min, "preferred": pref, "maximum": max,
        })),
        "request_bytes_max": n.request_bytes_max,
        "rtt_us": n.rtt.as_micros() as u64,
        "timeout_secs": n.timeout.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpd_serial_page() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vpd_pg80");
        std::fs::write(&p, b"\x00\x80\x00\x06 ABC12").unwrap();
        assert_eq!(vpd_serial(&p).as_deref(), Some("ABC12"));
        std::fs::write(&p, b"\x00\x80\x00\x09AB").unwrap();
        assert_eq!(vpd_serial(&p), None, "shorter than it says");
    }

    #[test]
    fn a_file_device_names_its_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::measure::test_file_device(dir.path(), "1M");
        let id = identify(dev.as_ref());
        assert_eq!(id.kind, "file");
        assert_eq!(id.capacity_bytes, 1 << 20);
        let fs = id.filesystem.as_ref().expect("statfs works on any file");
        assert!(fs.block_bytes > 0 && fs.io_block_bytes > 0);
        assert!(!fs.kind.is_empty());
        let j = id.to_json();
        assert_eq!(j["kind"], "file");
        assert!(j["filesystem"]["type"].is_string());
    }
}

//! Who uses a device: the kernel's own tables (`/proc/self/mountinfo`,
//! `/proc/swaps`, `/sys/block/*/loop/backing_file`) and an `O_EXCL` open.

use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Finding;
use crate::device::DeviceError;

/// One line of /proc/self/mountinfo, the parts the guard needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub mount_point: PathBuf,
    pub source: String,
}

/// Parse /proc/self/mountinfo text (proc(5)): field 3 is major:minor,
/// field 5 the mount point (octal escapes), the source follows " - fstype".
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let mount_point = PathBuf::from(unescape_octal(fields.get(4)?));
            let source = unescape_octal(right.split(' ').nth(1)?);
            Some(Mount {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                mount_point,
                source,
            })
        })
        .collect()
}

/// Undo the kernel's `\ooo` escaping of spaces, tabs, newlines, backslashes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dev_split(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// The block device with number `dev` and its partitions: (name, dev number).
fn device_and_partitions(path: &Path, dev: (u32, u32)) -> Vec<(String, (u32, u32))> {
    let mut out = vec![(path.display().to_string(), dev)];
    let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
    if let Ok(dir) = std::fs::read_dir(&sys) {
        for entry in dir.flatten() {
            let p = entry.path();
            if !p.join("partition").exists() {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(p.join("dev")) else {
                continue;
            };
            let Some((ma, mi)) = text.trim().split_once(':') else {
                continue;
            };
            if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                let name = format!("/dev/{}", entry.file_name().to_string_lossy());
                out.push((name, (ma, mi)));
            }
        }
    }
    out
}

/// Mounted (by device number, or by source path for filesystems such as
/// btrfs whose mounts carry an anonymous device number), claimed, holders.
pub(super) fn block_in_use(path: &Path, rdev: u64) -> Result<Vec<Finding>, DeviceError> {
    let mut findings = Vec::new();
    let ours = device_and_partitions(path, dev_split(rdev));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| DeviceError::io(Path::new("/proc/self/mountinfo"), "read", e))?;
    for mount in parse_mountinfo(&mountinfo) {
        let by_source = std::fs::metadata(&mount.source)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| dev_split(m.rdev()));
        if let Some((name, _)) = ours
            .iter()
            .find(|(_, d)| *d == mount.dev || Some(*d) == by_source)
        {
            let what = if Path::new(name) == path {
                "is".to_string()
            } else {
                format!("has partition {name}")
            };
            let finding = Finding::Mounted {
                what,
                at: mount.mount_point.clone(),
            };
            if !findings.contains(&finding) {
                findings.push(finding);
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let name = unescape_octal(name);
            if let Ok(m) = std::fs::metadata(&name) {
                if m.file_type().is_block_device()
                    && ours.iter().any(|(_, d)| *d == dev_split(m.rdev()))
                {
                    findings.push(Finding::InUse {
                        why: format!("is active swap ({name})"),
                    });
                }
            }
        }
    }
    if findings.is_empty() {
        // The kernel's own answer: an exclusive open fails with EBUSY while
        // anything (a mount, md, dm, another O_EXCL opener) claims it.
        let open = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(path);
        match open {
            Ok(file) => drop(file),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let holders = holders(dev_split(rdev));
                let why = if holders.is_empty() {
                    "is in use: the kernel refuses an exclusive open (EBUSY); another program or a partition holds it".to_string()
                } else {
                    format!("is in use, held by {}", holders.join(", "))
                };
                findings.push(Finding::InUse { why });
            }
            Err(e) => return Err(DeviceError::io(path, "open O_EXCL to inspect", e)),
        }
    }
    Ok(findings)
}

/// Kernel holders of a block device (dm, md, bcache...), from sysfs.
fn holders(dev: (u32, u32)) -> Vec<String> {
    let dir = PathBuf::from(format!("/sys/dev/block/{}:{}/holders", dev.0, dev.1));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A regular file used by the kernel: the backing file of a loop device,
/// or an active swap file.
pub(super) fn file_in_use(meta: &std::fs::Metadata) -> Vec<Finding> {
    let mut findings = Vec::new();
    let same = |other: &Path| {
        std::fs::metadata(other)
            .map(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
            .unwrap_or(false)
    };
    if let Ok(dir) = std::fs::read_dir("/sys/block") {
        let mut loops: Vec<(String, PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
                Some((name, PathBuf::from(backing.trim_end_matches('\n'))))
            })
            .collect();
        loops.sort();
        for (name, backing) in loops {
            if same(&backing) {
                findings.push(Finding::InUse {
                    why: format!(
                        "is the backing file of /dev/{name} (detach it first: losetup -d /dev/{name})"
                    ),
                });
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            if let Some(name) = line.split_whitespace().next() {
                if same(Path::new(&unescape_octal(name))) {
                    findings.push(Finding::InUse {
                        why: "is an active swap file".into(),
                    });
                }
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    100 29 0:52 / /srv rw - btrfs /dev/loop7 rw\n\
                    garbage\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            [
                Mount {
                    dev: (98, 0),
                    mount_point: "/mnt/parent dir".into(),
                    source: "/dev/root".into()
                },
                Mount {
                    dev: (0, 52),
                    mount_point: "/srv".into(),
                    source: "/dev/loop7".into()
                }
            ]
        );
    }
}

//! The overwrite guard: what is on a device, and who is using it, before
//! `backup` writes to it.
//!
//! Detection reads the same magic numbers at the same offsets as util-linux
//! libblkid (`blkid -p`) for the formats one finds on backup targets:
//! ext2/3/4 and jbd, xfs, btrfs, vfat, ntfs, iso9660, swap, LUKS, LVM2 PV,
//! Linux md RAID (0.90 and 1.x superblocks), GPT and DOS (MBR) partition
//! tables, and pbio's own label. Names are blkid's `TYPE`/`PTTYPE` values,
//! and `tests/guard.rs` compares them with `blkid -p` on images made by the
//! real tools. The checks are pure functions over a reader (`detect`), so
//! they are tested on byte buffers too.
//!
//! Use (mounted, claimed O_EXCL, a loop device's backing file, active swap)
//! is checked against the kernel's own tables (`/proc/self/mountinfo`,
//! `/proc/swaps`, `/sys/block/*/loop/backing_file`, an `O_EXCL` open).
//!
//! Policy (`Finding::allowed`): a device in use is always refused (the
//! kernel would refuse the exclusive open anyway, and writing under a
//! mounted filesystem destroys it); anything found on the medium is refused
//! unless `--force`, except a pbio set whose id is given with
//! `--overwrite`. Nothing here writes.

mod in_use;
mod signature;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use crate::device::{self, DeviceError, DeviceSpec};
use crate::format::{Label, LabelState, SetId};
use in_use::{block_in_use, file_in_use};
pub use in_use::{parse_mountinfo, Mount};
use signature::read_findings;
pub use signature::{detect, head_signatures, Signature, Usage, HEAD_BYTES};

/// One thing the guard found about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The device (or one of its partitions) is mounted.
    Mounted { what: String, at: PathBuf },
    /// Somebody else uses the device: an exclusive claim (EBUSY), a loop
    /// device backed by this file, active swap.
    InUse { why: String },
    /// A pbio label with a valid checksum.
    PbioSet { label: Label },
    /// Block 0 has pbio's label magic but does not decode.
    PbioDamaged { error: String },
    /// Another format's signature.
    Signature(Signature),
    /// A tape whose recorded data does not start with a pbio label
    /// (another program's archive).
    TapeData { what: String },
}

/// What the user allowed on the command line.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `--force`: overwrite whatever is on the medium.
    pub force: bool,
    /// `--overwrite SETID` (repeatable): pbio sets that may be overwritten.
    pub overwrite: Vec<SetId>,
}

impl Finding {
    /// Whether `policy` lets backup write over this.
    pub fn allowed(&self, policy: &Policy) -> bool {
        match self {
            Finding::Mounted { .. } | Finding::InUse { .. } => false,
            Finding::PbioSet { label } => policy.force || policy.overwrite.contains(&label.set_id),
            Finding::PbioDamaged { .. } | Finding::Signature(_) | Finding::TapeData { .. } => {
                policy.force
            }
        }
    }

    /// The sentence after the device path in a refusal, with the way out.
    pub fn describe(&self, policy: &Policy) -> String {
        match self {
            Finding::Mounted { what, at } => format!(
                "{what} mounted on {} (unmount it first; --force does not override this)",
                crate::units::shown_path(at)
            ),
            Finding::InUse { why } => format!("{why} (--force does not override this)"),
            Finding::PbioSet { label } => {
                let id = label.set_id.to_string();
                let state = match label.state {
                    LabelState::Writing => "incomplete",
                    LabelState::Complete => "complete",
                };
                let mut s = format!(
                    "holds pbio set {id} (device {} of {}, {state}, created {})",
                    label.device_index + 1,
                    label.device_count,
                    utc_text(label.created_unix_ns / 1_000_000_000)
                );
                if !policy.overwrite.is_empty() {
                    s.push_str(", which is not a set given with --overwrite");
                }
                s.push_str(&format!("; give --overwrite {id} to reuse it, or --force"));
                s
            }
            Finding::PbioDamaged { error } => {
                format!("holds a damaged pbio label ({error}); give --force to overwrite it")
            }
            Finding::Signature(sig) => format!("holds {sig}; give --force to overwrite it"),
            Finding::TapeData { what } => {
                format!("holds recorded data that is not a pbio set ({what}); give --force to overwrite it")
            }
        }
    }
}

/// Everything the guard found on one device.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub path: PathBuf,
    pub findings: Vec<Finding>,
}

impl Inspection {
    /// Refusal sentences under `policy` (empty: the device may be written).
    pub fn refusals(&self, policy: &Policy) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| !f.allowed(policy))
            .map(|f| format!("{}: {}", self.path.display(), f.describe(policy)))
            .collect()
    }
}

/// Inspect the device `spec` names, reading only. A file device that does
/// not exist yet or is empty has nothing to find.
pub fn inspect(spec: &DeviceSpec) -> Result<Inspection, DeviceError> {
    let backing = device::backing(&spec.path);
    // A pmem device is inspected as the file or block device behind it.
    let pmem_file = match &backing {
        device::Backing::Remote => return inspect_nbd(spec),
        device::Backing::Mapped(file) => Some(file),
        _ => None,
    };
    if let Some(file) = pmem_file {
        let ft = std::fs::metadata(file).map(|m| m.file_type());
        if ft.is_ok_and(|ft| ft.is_char_device()) {
            // Device DAX: nothing here reads it to inspect.
            return Ok(Inspection {
                path: spec.path.clone(),
                findings: Vec::new(),
            });
        }
    }
    let path = pmem_file.unwrap_or(&spec.path);
    let is_tape = pmem_file.is_none()
        && (matches!(backing, device::Backing::TapeDirectory(_))
            || std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device()));
    if is_tape {
        return inspect_tape(spec);
    }
    let mut findings = Vec::new();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Inspection {
                path: path.clone(),
                findings,
            })
        }
        Err(e) => return Err(DeviceError::io(path, "stat", e)),
    };
    let ft = meta.file_type();
    let size_bytes;
    if ft.is_block_device() {
        findings.extend(block_in_use(path, meta.rdev())?);
        let file = File::open(path).map_err(|e| DeviceError::io(path, "open to inspect", e))?;
        size_bytes = device::block::size_bytes(&file)
            .map_err(|e| DeviceError::io(path, "BLKGETSIZE64", e))?;
        findings.extend(
            read_findings(&file, size_bytes)
                .map_err(|e| DeviceError::io(path, "read to inspect", e))?,
        );
    } else if ft.is_file() {
        findings.extend(file_in_use(&meta));
        size_bytes = meta.len();
        if size_bytes > 0 {
            let file = File::open(path).map_err(|e| DeviceError::io(path, "open to inspect", e))?;
            findings.extend(
                read_findings(&file, size_bytes)
                    .map_err(|e| DeviceError::io(path, "read to inspect", e))?,
            );
        }
    } else {
        // probe() reports directories and other kinds; nothing to inspect here.
        return Ok(Inspection {
            path: path.clone(),
            findings,
        });
    }
    Ok(Inspection {
        path: path.clone(),
        findings,
    })
}

/// An NBD export: the same signatures, read over the connection (what
/// the server shares with others is its business: nothing is "in use").
fn inspect_nbd(spec: &DeviceSpec) -> Result<Inspection, DeviceError> {
    let dev = device::open(spec, device::Mode::Read)?;
    let size_bytes = dev.capacity_bytes();
    let mut read = |offset: u64, buf: &mut [u8]| {
        // Bytes past the end of the export read as zero.
        buf.fill(0);
        dev.read_at(buf, offset).map(|_| ())
    };
    let findings = detect(&mut read, size_bytes)
        .map_err(|e| DeviceError::io(&spec.path, "read to inspect", e))?;
    Ok(Inspection {
        path: spec.path.clone(),
        findings,
    })
}

/// A tape (a drive, an emulated cartridge): what its first block holds.
/// Reading it rewinds the tape; nothing is written. A blank tape, or an
/// emulated cartridge not created yet, holds nothing.
fn inspect_tape(spec: &DeviceSpec) -> Result<Inspection, DeviceError> {
    use super::{read_label, MediaError};
    use crate::format::FormatError;
    let path = &spec.path;
    let mut findings = Vec::new();
    let done = |findings| {
        Ok(Inspection {
            path: path.clone(),
            findings,
        })
    };
    if device::vtape::dir_of(path).is_some_and(|d| !d.join("vtape.index").exists()) {
        return done(findings);
    }
    let dev = device::open(spec, device::Mode::Read)?;
    // Blank: the end of recorded data is the beginning of the tape. st
    // does not always flag end-of-data after the failed first read (seen
    // on the real driver: gstat without GMT_EOD, block -1), but spacing to
    // the end of data from the start leaves a blank tape at file 0, block 0.
    let blank = || {
        let _ = dev.tape_op(device::TapeOp::Rewind);
        let eom = dev.tape_op(device::TapeOp::EndOfData);
        let status = dev.tape_status();
        let _ = dev.tape_op(device::TapeOp::Rewind);
        status.is_ok_and(|s| {
            let at_start = if s.logical_object >= 0 {
                s.logical_object == 0
            } else {
                s.file_number == 0 && s.block_number <= 0
            };
            at_start && (eom.is_ok() || s.at_eod)
        })
    };
    match read_label(dev.as_ref()) {
        // Every set on the tape (appended sets follow the first one).
        Ok(label) => match super::sets::sets_on_tape(dev.as_ref()) {
            Ok(sets) if !sets.is_empty() => findings.extend(
                sets.into_iter()
                    .map(|set| Finding::PbioSet { label: set.label }),
            ),
            _ => findings.push(Finding::PbioSet { label }),
        },
        Err(MediaError::Format { error, .. }) => match error {
            // Nothing recorded: st and the emulator read 0 at the end of data.
            FormatError::Short { have: 0, .. } if blank() => {}
            FormatError::Short { have: 0, .. } => findings.push(Finding::TapeData {
                what: "it starts with a filemark".into(),
            }),
            FormatError::BadMagic { .. } | FormatError::Short { .. } => {
                findings.push(Finding::TapeData {
                    what: "its first block is not a pbio label".into(),
                })
            }
            other => findings.push(Finding::PbioDamaged {
                error: other.to_string(),
            }),
        },
        Err(MediaError::Io { error, .. }) if error.raw_os_error() == Some(libc::ENOMEM) => findings
            .push(Finding::TapeData {
                what: "its first block is larger than a pbio label".into(),
            }),
        // A blank cartridge in a drive: st reports the blank check as EIO.
        Err(MediaError::Io { .. }) if blank() => {}
        Err(MediaError::Io { op, error, .. }) => return Err(DeviceError::io(path, op, error)),
        Err(other) => {
            return Err(DeviceError::unusable(
                path,
                format!("cannot read the tape to check it: {other}"),
            ))
        }
    }
    done(findings)
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time (civil-from-days, no time zone data).
pub fn utc_text(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Parse a set id as `pbio backup` prints it: 32 hex digits (`--overwrite`).
pub fn parse_set_id(text: &str) -> Result<SetId, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "set id '{text}' must be 32 hex digits, as printed by `pbio backup` and `pbio list`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_is_never_overridden() {
        let force = Policy {
            force: true,
            overwrite: vec![],
        };
        assert!(!Finding::Mounted {
            what: "is".into(),
            at: "/mnt".into()
        }
        .allowed(&force));
        assert!(!Finding::InUse { why: "x".into() }.allowed(&force));
        assert!(
            Finding::Signature(signature::sig(Usage::Filesystem, "ext4", 1080)).allowed(&force)
        );
    }

    #[test]
    fn set_id_text() {
        let id = parse_set_id("00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        assert!(parse_set_id("0011").is_err());
        assert!(parse_set_id(&"zz".repeat(16)).is_err());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00 UTC");
    }
}

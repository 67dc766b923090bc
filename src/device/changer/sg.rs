//! A real library's medium changer through the Linux SCSI generic driver
//! (`/dev/sgN`, `lsscsi -g` lists it as "mediumx"): SMC-3 commands (`smc`)
//! sent with the SG_IO ioctl, sense data decoded into a typed error naming
//! the device, the command, the sense key and ASC/ASCQ.
//!
//! The element address ranges come from the element address assignment
//! page; the status from one READ ELEMENT STATUS per element type with
//! barcodes, and one more for the drives with DVCID alone (some changers
//! refuse both bits at once, as Proxmox Backup Server's pbs-tape notes).
//! A drive's serial number is matched against the st drives' VPD page 80h
//! in sysfs, which gives the drive's tape node (`Drive::device`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::smc::{self, AddressAssignment, Element, ElementType, SmcError};
use super::{Changer, ChangerError, Drive, Slot, Status};
use crate::device::DeviceSpec;

/// Major number of the sg driver's nodes.
const SG_MAJOR: u64 = 21;
const SENSE_BYTES: usize = 64;
/// SAM status CHECK CONDITION.
const STATUS_CHECK_CONDITION: u8 = 0x02;
/// driver_status: sense data is valid.
const DRIVER_SENSE: u16 = 0x08;
/// Most commands answer at once; a move may take minutes on a large
/// library, a full inventory (INITIALIZE ELEMENT STATUS) half an hour (mtx
/// waits as long).
const TIMEOUT_MS: u32 = 5 * 60 * 1000;
const TIMEOUT_INVENTORY_MS: u32 = 30 * 60 * 1000;
/// Allocation length of a READ ELEMENT STATUS: some changers only honour
/// its low 16 bits (pbs-tape), so at most 0xffff unless more is needed.
const ALLOCATION_BYTES: u32 = 0xffff;
const ALLOCATION_BYTES_MAX: u32 = (1 << 24) - 1;

/// How many times a command answered with UNIT ATTENTION is sent again:
/// each answer reports one pending event (a reset, then a medium change,
/// ...), so a few are enough; a device that keeps answering it fails.
const UNIT_ATTENTION_RETRIES: usize = 4;

/// One command through SG_IO: `data` receives what the device returns
/// (empty: no data phase). Returns the bytes received.
fn sg_io(
    file: &File,
    path: &Path,
    command: &'static str,
    cdb: &[u8],
    data: &mut [u8],
    timeout_ms: u32,
) -> Result<usize, ChangerError> {
    let mut sense = [0u8; SENSE_BYTES];
    let hdr = crate::device::sg::command(file.as_raw_fd(), cdb, data, &mut sense, timeout_ms)
        .map_err(|e| ChangerError::Transport {
            device: path.to_path_buf(),
            command,
            why: format!("SG_IO: {e}"),
        })?;
    let sense_len = hdr.sense_bytes;
    if hdr.status == STATUS_CHECK_CONDITION || hdr.driver_status & DRIVER_SENSE != 0 {
        if let Some(s) = smc::parse_sense(&sense[..sense_len]) {
            // NO SENSE and RECOVERED ERROR: the command did its work.
            if s.key > 1 {
                return Err(ChangerError::Sense {
                    device: path.to_path_buf(),
                    command,
                    sense: s,
                });
            }
        }
    }
    if hdr.status & 0x3e != 0 || hdr.host_status != 0 {
        return Err(ChangerError::Transport {
            device: path.to_path_buf(),
            command,
            why: format!(
                "SCSI status {:#04x}, host status {:#06x}, driver status {:#06x}",
                hdr.status, hdr.host_status, hdr.driver_status
            ),
        });
    }
    Ok(hdr.received)
}

/// A real library's changer.
pub struct ScsiChanger {
    path: PathBuf,
    name: String,
    file: File,
    description: String,
    addresses: AddressAssignment,
    /// `,size=S`: the native capacity of the library's cartridges, given
    /// to each drive's device (its `,size=`), for drives that report none.
    cartridge_bytes: Option<u64>,
}

/// Element addresses behind a `Status`'s slot and drive numbers.
struct Layout {
    status: Status,
    slot_addresses: Vec<u16>,
    drive_addresses: Vec<u16>,
}

impl ScsiChanger {
    pub fn open(path: &Path) -> Result<ScsiChanger, ChangerError> {
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|error| ChangerError::Io {
            changer: name.clone(),
            what: "stat".into(),
            error,
        })?;
        use std::os::unix::fs::MetadataExt;
        let rdev = meta.rdev();
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        if !meta.file_type().is_char_device() || major != SG_MAJOR {
            return Err(ChangerError::Refused {
                changer: name,
                why: "is not a SCSI generic node (/dev/sgN; `lsscsi -g` lists the changer's as \"mediumx\"), nor vlib:DIR".into(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| ChangerError::Io {
                changer: name.clone(),
                what: "open".into(),
                error,
            })?;
        let mut changer = ScsiChanger {
            path: path.to_path_buf(),
            name,
            file,
            description: String::new(),
            addresses: AddressAssignment::default(),
            cartridge_bytes: None,
        };
        let mut buf = [0u8; 96];
        let n = changer.command("INQUIRY", &smc::inquiry_cdb(96), &mut buf, TIMEOUT_MS)?;
        let inquiry = smc::parse_inquiry(&buf[..n]).map_err(|e| changer.answer("INQUIRY", e))?;
        if inquiry.peripheral_type != smc::PERIPHERAL_MEDIUM_CHANGER {
            return Err(ChangerError::Refused {
                changer: changer.name,
                why: format!(
                    "is a SCSI device of type {:#04x} ({} {}), not a medium changer (type 08h)",
                    inquiry.peripheral_type, inquiry.vendor, inquiry.product
                ),
            });
        }
        changer.description = format!(
            "{} {} {}",
            inquiry.vendor, inquiry.product, inquiry.revision
        );
        let mut page = [0u8; 255];
        let cdb = smc::mode_sense_element_addresses_cdb(255);
        let n = changer.command(
            "MODE SENSE (element address assignment)",
            &cdb,
            &mut page,
            TIMEOUT_MS,
        )?;
        changer.addresses = smc::parse_address_assignment(&page[..n])
            .map_err(|e| changer.answer("MODE SENSE (element address assignment)", e))?;
        Ok(changer)
    }

    /// The cartridges hold `bytes` each (`--changer /dev/sgN,size=S`):
    /// every drive's device gets it as its `,size=`, which a drive that
    /// reports no density code needs to be written.
    pub fn with_cartridge_bytes(mut self, bytes: Option<u64>) -> ScsiChanger {
        self.cartridge_bytes = bytes;
        self
    }

    fn command(
        &self,
        command: &'static str,
        cdb: &[u8],
        data: &mut [u8],
        timeout_ms: u32,
    ) -> Result<usize, ChangerError> {
        // Sent again after a UNIT ATTENTION: an event reported in place
        // of the command (`smc::Sense::send_again`).
        let mut tries = 0;
        loop {
            match sg_io(&self.file, &self.path, command, cdb, data, timeout_ms) {
                Err(ChangerError::Sense { sense, .. })
                    if sense.send_again() && tries < UNIT_ATTENTION_RETRIES =>
                {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    fn answer(&self, command: &'static str, error: SmcError) -> ChangerError {
        ChangerError::Answer {
            device: self.path.clone(),
            command,
            error,
        }
    }

    /// Every element of `kind`, asking again from the last address
    /// returned when the library returns fewer than asked, and with more
    /// room when the answer was cut by the allocation length.
    fn elements(
        &self,
        kind: ElementType,
        range: smc::AddressRange,
        volume_tags: bool,
        device_ids: bool,
    ) -> Result<Vec<Element>, ChangerError> {
        const COMMAND: &str = "READ ELEMENT STATUS";
        let mut found: Vec<Element> = Vec::new();
        let mut start = range.first;
        let end = range.first as u32 + range.count as u32;
        let mut allocation = ALLOCATION_BYTES;
        while found.len() < range.count as usize {
            let count = (end - start as u32) as u16;
            let cdb = smc::read_element_status_cdb(
                Some(kind),
                start,
                count,
                volume_tags,
                device_ids,
                allocation,
            );
            let mut buf = vec![0u8; allocation as usize];
            let n = self.command(COMMAND, &cdb, &mut buf, TIMEOUT_MS)?;
            let report = match smc::parse_element_status(&buf[..n], device_ids) {
                Err(SmcError::Truncated { need, .. })
                    if n == allocation as usize && allocation < ALLOCATION_BYTES_MAX =>
                {
                    allocation = (need as u32).clamp(allocation + 1, ALLOCATION_BYTES_MAX);
                    continue;
                }
                // Sent short of its own counts with room to spare (tgt):
                // what arrived whole.
                Err(SmcError::Truncated { .. }) if n < allocation as usize => {
                    smc::parse_element_status_short(&buf[..n], device_ids)
                        .map_err(|e| self.answer(COMMAND, e))?
                }
                r => r.map_err(|e| self.answer(COMMAND, e))?,
            };
            let Some(last) = report.elements.iter().map(|e| e.address).max() else {
                break;
            };
            if last < start || report.elements.iter().any(|e| e.kind != kind) {
                return Err(ChangerError::Transport {
                    device: self.path.clone(),
                    command: COMMAND,
                    why: format!("asked for {kind:?} elements from {start:#06x}, got others"),
                });
            }
            // An element the library reports again (an answer that
            // starts before the address asked for) is one element.
            for e in report.elements {
                if !found.iter().any(|f| f.address == e.address) {
                    found.push(e);
                }
            }
            if last as u32 + 1 >= end {
                break;
            }
            start = last + 1;
        }
        found.sort_by_key(|e| e.address);
        Ok(found)
    }

    fn layout(&self) -> Result<Layout, ChangerError> {
        let a = self.addresses;
        let storage = self.elements(ElementType::Storage, a.storage, true, false)?;
        let mail = self.elements(ElementType::ImportExport, a.import_export, true, false)?;
        let mut drives = self.elements(ElementType::DataTransfer, a.data_transfer, true, false)?;
        // Serial numbers: a second query, DVCID alone; a changer that
        // cannot answer it leaves the drives unidentified.
        if let Ok(ids) = self.elements(ElementType::DataTransfer, a.data_transfer, false, true) {
            for d in &mut drives {
                d.identifier = ids
                    .iter()
                    .find(|i| i.address == d.address)
                    .and_then(|i| i.identifier.clone());
            }
        }
        let slot_addresses: Vec<u16> = storage.iter().chain(&mail).map(|e| e.address).collect();
        let slot_of = |address: u16| {
            slot_addresses
                .iter()
                .position(|&a| a == address)
                .map(|i| i as u32 + 1)
        };
        let slots = storage
            .iter()
            .map(|e| (e, false))
            .chain(mail.iter().map(|e| (e, true)))
            .enumerate()
            .map(|(i, (e, import_export))| Slot {
                number: i as u32 + 1,
                full: e.full,
                barcode: e.volume_tag.clone(),
                import_export,
            })
            .collect();
        let nodes = tape_nodes_by_serial();
        let drive_list = drives
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let serial = e
                    .identifier
                    .as_ref()
                    .and_then(smc::DeviceIdentifier::serial);
                let device = serial.as_ref().and_then(|s| {
                    nodes
                        .iter()
                        .find(|(node_serial, _)| serial_matches(node_serial, s))
                        .and_then(|(_, node)| DeviceSpec::parse(&node.display().to_string()).ok())
                        .map(|spec| DeviceSpec {
                            size_bytes: self.cartridge_bytes,
                            ..spec
                        })
                });
                Drive {
                    number: i as u32,
                    full: e.full,
                    barcode: e.volume_tag.clone(),
                    source_slot: e.source.and_then(slot_of),
                    serial,
                    device,
                }
            })
            .collect();
        Ok(Layout {
            status: Status {
                description: self.description.clone(),
                slots,
                drives: drive_list,
            },
            drive_addresses: drives.iter().map(|e| e.address).collect(),
            slot_addresses,
        })
    }

    fn move_medium(&self, source: u16, destination: u16) -> Result<(), ChangerError> {
        let cdb = smc::move_medium_cdb(self.addresses.transport.first, source, destination);
        self.command("MOVE MEDIUM", &cdb, &mut [], TIMEOUT_MS)?;
        Ok(())
    }
}

/// A serial from the changer (DVCID, sometimes cut to 10 characters)
/// against a drive's own (VPD page 80h).
fn serial_matches(drive: &str, changer: &str) -> bool {
    !changer.is_empty()
        && (drive == changer || drive.ends_with(changer) || changer.ends_with(drive))
}

/// The st drives' non-rewinding nodes and serial numbers (VPD page 80h
/// as sysfs exposes it).
fn tape_nodes_by_serial() -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/sys/class/scsi_tape") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // nst0 (not st0, nst0a, ...): the node pbio writes through.
        if !(name.starts_with("nst") && name[3..].chars().all(|c| c.is_ascii_digit())) {
            continue;
        }
        let Ok(page) = std::fs::read(entry.path().join("device/vpd_pg80")) else {
            continue;
        };
        if page.len() > 4 && page[1] == 0x80 {
            let serial = smc::ascii_field(&page[4..]).trim().to_string();
            found.push((serial, PathBuf::from("/dev").join(&name)));
        }
    }
    found
}

impl Changer for ScsiChanger {
    fn name(&self) -> &str {
        &self.name
    }

    fn status(&mut self) -> Result<Status, ChangerError> {
        Ok(self.layout()?.status)
    }

    fn inventory(&mut self) -> Result<Status, ChangerError> {
        self.command(
            "INITIALIZE ELEMENT STATUS",
            &smc::initialize_element_status_cdb(),
            &mut [],
            TIMEOUT_INVENTORY_MS,
        )?;
        self.status()
    }

    fn load(&mut self, slot: u32, drive: u32) -> Result<(), ChangerError> {
        let l = self.layout()?;
        l.status.check_load(&self.name, slot, drive)?;
        self.move_medium(
            l.slot_addresses[slot as usize - 1],
            l.drive_addresses[drive as usize],
        )
    }

    fn unload(&mut self, drive: u32) -> Result<u32, ChangerError> {
        let l = self.layout()?;
        let slot = l.status.unload_target(&self.name, drive)?;
        self.move_medium(
            l.drive_addresses[drive as usize],
            l.slot_addresses[slot as usize - 1],
        )?;
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_an_sg_node_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("changer");
        std::fs::write(&file, b"").unwrap();
        let e = ScsiChanger::open(&file).err().unwrap();
        assert!(e.to_string().contains("is not a SCSI generic node"), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert!(e.is_request());
        // /dev/null: a character device, not sg.
        let e = ScsiChanger::open(Path::new("/dev/null")).err().unwrap();
        assert!(
            e.to_string()
                .contains("/dev/null: is not a SCSI generic node"),
            "{e}"
        );
        let e = ScsiChanger::open(&dir.path().join("nope")).err().unwrap();
        assert!(e.is_request(), "{e}");
        assert!(e.to_string().contains("nope: stat"), "{e}");
    }

    #[test]
    fn serials() {
        assert!(serial_matches("1013000001", "1013000001"));
        assert!(serial_matches("HU1013000001", "1013000001"));
        assert!(!serial_matches("1013000001", ""));
        assert!(!serial_matches("1013000002", "1013000001"));
    }
}

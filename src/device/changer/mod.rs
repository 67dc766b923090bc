//! Tape libraries: the robot that moves cartridges between slots and
//! drives. One trait (`Changer`) with two kinds behind it:
//!
//! - `sg`: a real library's SCSI medium changer (`/dev/sgN`), driven with
//!   SG_IO and the SMC-3 commands of `smc` (pure, unit-tested against
//!   recorded answers of libraries with different address layouts);
//! - `vlib`: the emulated library `vlib:DIR[,slots=N][,drives=D][,size=S]`,
//!   whose drives are the emulated tapes `vtape:DIR/drive0`, ... and whose
//!   cartridges are `vtape:` directories moved between slots and drives.
//!
//! Numbering follows mtx(1), as Bareos' mtx-changer and most scripts
//! expect: slots from 1 (storage slots in address order, then mail slots),
//! drives from 0 in address order. Element addresses stay inside `sg`.
//!
//! Nothing here prints; reading a cartridge's label (a layer above) is the
//! CLI's business (`pbio changer inventory`).

pub mod cache;
pub mod sg;
pub mod shelved;
pub mod smc;
pub mod vlib;

use std::path::PathBuf;

use super::DeviceSpec;

/// One slot as the library reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// From 1.
    pub number: u32,
    pub full: bool,
    /// The cartridge's barcode (None: empty, or a cartridge without a readable label).
    pub barcode: Option<String>,
    /// A mail slot (import/export element) rather than a storage slot.
    pub import_export: bool,
}

/// One drive as the library reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drive {
    /// From 0.
    pub number: u32,
    pub full: bool,
    pub barcode: Option<String>,
    /// The slot the cartridge came from, when the library knows it.
    pub source_slot: Option<u32>,
    /// The drive's identity as the library reports it (serial number).
    pub serial: Option<String>,
    /// The device to read and write the drive's cartridge through, when
    /// known (`vtape:DIR/driveN`; a real drive's st node when mapped).
    pub device: Option<DeviceSpec>,
}

/// What the library holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// What the changer is (vendor and product, or "emulated library").
    pub description: String,
    pub slots: Vec<Slot>,
    pub drives: Vec<Drive>,
}

impl Status {
    pub fn slot(&self, number: u32) -> Option<&Slot> {
        number
            .checked_sub(1)
            .and_then(|i| self.slots.get(i as usize))
    }

    pub fn drive(&self, number: u32) -> Option<&Drive> {
        self.drives.get(number as usize)
    }

    /// Cartridges in the library (slots and drives).
    pub fn cartridges(&self) -> usize {
        self.slots.iter().filter(|s| s.full).count() + self.drives.iter().filter(|d| d.full).count()
    }

    /// The checks every changer makes before moving a cartridge from
    /// `slot` to `drive`, with the errors naming the elements.
    pub fn check_load(&self, changer: &str, slot: u32, drive: u32) -> Result<(), ChangerError> {
        let s = self.slot(slot).ok_or_else(|| ChangerError::NoSuchSlot {
            changer: changer.to_string(),
            slot,
            slots: self.slots.len() as u32,
        })?;
        let d = self.drive(drive).ok_or_else(|| ChangerError::NoSuchDrive {
            changer: changer.to_string(),
            drive,
            drives: self.drives.len() as u32,
        })?;
        if d.full {
            return Err(ChangerError::DriveFull {
                changer: changer.to_string(),
                drive,
                barcode: d.barcode.clone(),
            });
        }
        if !s.full {
            return Err(ChangerError::SlotEmpty {
                changer: changer.to_string(),
                slot,
            });
        }
        Ok(())
    }

    /// The slot a cartridge in `drive` goes back to: the one it came from
    /// if it is empty, else the first empty storage slot.
    pub fn unload_target(&self, changer: &str, drive: u32) -> Result<u32, ChangerError> {
        let d = self.drive(drive).ok_or_else(|| ChangerError::NoSuchDrive {
            changer: changer.to_string(),
            drive,
            drives: self.drives.len() as u32,
        })?;
        if !d.full {
            return Err(ChangerError::DriveEmpty {
                changer: changer.to_string(),
                drive,
            });
        }
        let empty = |n: u32| self.slot(n).is_some_and(|s| !s.full);
        d.source_slot
            .filter(|&n| empty(n))
            .or_else(|| {
                self.slots
                    .iter()
                    .find(|s| !s.full && !s.import_export)
                    .map(|s| s.number)
            })
            .ok_or_else(|| ChangerError::NoEmptySlot {
                changer: changer.to_string(),
                drive,
            })
    }
}

/// The ops table of a tape library.
pub trait Changer: Send {
    /// The name it was opened by (`/dev/sg3`, `vlib:/srv/lib`).
    fn name(&self) -> &str;
    /// What is where, as the library last knew it.
    fn status(&mut self) -> Result<Status, ChangerError>;
    /// Have the library rescan its slots (barcodes), then its status.
    fn inventory(&mut self) -> Result<Status, ChangerError>;
    /// Move the cartridge in `slot` into `drive`.
    fn load(&mut self, slot: u32, drive: u32) -> Result<(), ChangerError>;
    /// Move the cartridge in `drive` back to the slot it came from (or the
    /// first empty one); returns that slot.
    fn unload(&mut self, drive: u32) -> Result<u32, ChangerError>;
    /// A device through which the cartridge in `slot` can be read where it
    /// is, without a drive (an emulated library's cartridge). None: it has
    /// to be loaded.
    fn cartridge_in_slot(&self, slot: u32) -> Option<DeviceSpec> {
        let _ = slot;
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangerError {
    #[error("changer '{0}': not a changer (give /dev/sgN[,size=S] of a medium changer, or vlib:DIR[,slots=N][,drives=D][,size=S])")]
    Spec(String),
    #[error("changer {changer}: no slot {slot} (slots are 1..={slots})")]
    NoSuchSlot {
        changer: String,
        slot: u32,
        slots: u32,
    },
    #[error("changer {changer}: no drive {drive} (drives are 0..{drives})")]
    NoSuchDrive {
        changer: String,
        drive: u32,
        drives: u32,
    },
    #[error("changer {changer}: slot {slot} is empty")]
    SlotEmpty { changer: String, slot: u32 },
    #[error("changer {changer}: drive {drive} already holds a cartridge{}; unload it first", barcode.as_ref().map(|b| format!(" ({b})")).unwrap_or_default())]
    DriveFull {
        changer: String,
        drive: u32,
        barcode: Option<String>,
    },
    #[error("changer {changer}: drive {drive} is empty")]
    DriveEmpty { changer: String, drive: u32 },
    #[error("changer {changer}: no empty slot to unload drive {drive} into")]
    NoEmptySlot { changer: String, drive: u32 },
    #[error("changer {changer}: {what}: {error}")]
    Io {
        changer: String,
        what: String,
        error: std::io::Error,
    },
    /// The name or its options do not give a usable changer (nothing moved).
    #[error("changer {changer}: {why}")]
    Refused { changer: String, why: String },
    /// The library is there but not in a usable state (damaged state).
    #[error("changer {changer}: {why}")]
    Unusable { changer: String, why: String },
    #[error("changer {device}: {command} failed: {sense}")]
    Sense {
        device: PathBuf,
        command: &'static str,
        sense: smc::Sense,
    },
    #[error("changer {device}: {command}: {why}")]
    Transport {
        device: PathBuf,
        command: &'static str,
        why: String,
    },
    #[error("changer {device}: {command}: {error}")]
    Answer {
        device: PathBuf,
        command: &'static str,
        error: smc::SmcError,
    },
}

impl ChangerError {
    /// The request itself was wrong (a slot or drive that does not exist or
    /// is in the wrong state, a name that names no changer): nothing moved.
    /// Otherwise the library or its state failed.
    pub fn is_request(&self) -> bool {
        match self {
            ChangerError::Spec(_)
            | ChangerError::NoSuchSlot { .. }
            | ChangerError::NoSuchDrive { .. }
            | ChangerError::SlotEmpty { .. }
            | ChangerError::DriveFull { .. }
            | ChangerError::DriveEmpty { .. }
            | ChangerError::NoEmptySlot { .. }
            | ChangerError::Refused { .. } => true,
            ChangerError::Io { error, .. } => matches!(
                error.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ENXIO | libc::ENODEV)
            ),
            ChangerError::Unusable { .. }
            | ChangerError::Sense { .. }
            | ChangerError::Transport { .. }
            | ChangerError::Answer { .. } => false,
        }
    }
}

/// Open the changer `text` names: `vlib:DIR[,...]` or a SCSI generic
/// node `/dev/sgN[,size=S]` (S: the cartridges' native capacity, for
/// drives that report none).
pub fn open(text: &str) -> Result<Box<dyn Changer>, ChangerError> {
    if text.starts_with(vlib::PREFIX) {
        return Ok(Box::new(vlib::VirtualLibrary::open(text)?));
    }
    let (path, cartridge_bytes) = parse_scsi(text)?;
    Ok(Box::new(
        sg::ScsiChanger::open(std::path::Path::new(path))?.with_cartridge_bytes(cartridge_bytes),
    ))
}

/// `/dev/sgN[,size=S]`: the node and the cartridges' size.
fn parse_scsi(text: &str) -> Result<(&str, Option<u64>), ChangerError> {
    let mut parts = text.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err(ChangerError::Spec(text.to_string()));
    }
    let mut size = None;
    for option in parts {
        let refused = |why: String| ChangerError::Refused {
            changer: text.to_string(),
            why,
        };
        match option.split_once('=') {
            Some(("size", value)) if size.is_none() => {
                let bytes = crate::units::parse_size(value).map_err(|e| refused(format!("size: {e}")))?;
                if bytes == 0 {
                    return Err(refused("size: a cartridge of 0 bytes".into()));
                }
                size = Some(bytes);
            }
            _ => {
                return Err(refused(format!(
                    "unknown or repeated option '{option}' (a SCSI changer takes ,size=S: its cartridges' native capacity)"
                )))
            }
        }
    }
    Ok((path, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        let slot = |number, full: bool| Slot {
            number,
            full,
            barcode: full.then(|| format!("PB{number:04}L6")),
            import_export: false,
        };
        Status {
            description: String::new(),
            slots: vec![slot(1, true), slot(2, false), slot(3, false)],
            drives: vec![
                Drive {
                    number: 0,
                    full: true,
                    barcode: Some("PB0002L6".into()),
                    source_slot: Some(2),
                    serial: None,
                    device: None,
                },
                Drive {
                    number: 1,
                    full: false,
                    barcode: None,
                    source_slot: None,
                    serial: None,
                    device: None,
                },
            ],
        }
    }

    #[test]
    fn a_scsi_changer_takes_the_cartridge_size() {
        assert_eq!(parse_scsi("/dev/sg1").unwrap(), ("/dev/sg1", None));
        assert_eq!(
            parse_scsi("/dev/sg1,size=40M").unwrap(),
            ("/dev/sg1", Some(40 << 20))
        );
        for bad in [
            "",
            ",size=1M",
            "/dev/sg1,size=",
            "/dev/sg1,size=0",
            "/dev/sg1,size=1M,size=2M",
            "/dev/sg1,slots=3",
            "/dev/sg1,",
        ] {
            let e = parse_scsi(bad).unwrap_err();
            assert!(e.is_request(), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn checks_name_the_element() {
        let s = status();
        assert_eq!(s.cartridges(), 2);
        assert!(s.check_load("c", 1, 1).is_ok());
        let e = s.check_load("c", 1, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "changer c: drive 0 already holds a cartridge (PB0002L6); unload it first"
        );
        assert!(e.is_request());
        let e = s.check_load("c", 2, 1).unwrap_err();
        assert_eq!(e.to_string(), "changer c: slot 2 is empty");
        assert!(matches!(
            s.check_load("c", 0, 1),
            Err(ChangerError::NoSuchSlot { .. })
        ));
        assert!(matches!(
            s.check_load("c", 4, 1),
            Err(ChangerError::NoSuchSlot { .. })
        ));
        assert!(matches!(
            s.check_load("c", 1, 2),
            Err(ChangerError::NoSuchDrive { .. })
        ));
        assert_eq!(s.unload_target("c", 0).unwrap(), 2);
        assert!(matches!(
            s.unload_target("c", 1),
            Err(ChangerError::DriveEmpty { .. })
        ));
        // Its source slot taken meanwhile: the first empty one.
        let mut s = status();
        s.slots[1].full = true;
        assert_eq!(s.unload_target("c", 0).unwrap(), 3);
        s.slots[2].full = true;
        assert!(matches!(
            s.unload_target("c", 0),
            Err(ChangerError::NoEmptySlot { .. })
        ));
    }
}

//! What a backup run reports: per device how it ended, for the set what
//! is not in it; and why a run could not finish.

use std::time::Duration;

use crate::format::SetId;
use crate::media;

use crate::engine::ring::{DeviceFault, RingError, RingStats};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceEnd {
    Complete,
    Full,
    Failed,
}

#[derive(Debug)]
pub struct DeviceReport {
    pub path: String,
    pub end: DeviceEnd,
    /// What filled it up or made it fail.
    pub error: Option<DeviceFault>,
    /// Payload bytes of its work handed to the other devices.
    pub redirected_bytes: u64,
    pub stats: RingStats,
    pub data_end: u64,
    /// Offset just past its End record; None where no catalog was written
    /// (a failed device, or one with no room left for it).
    pub catalog_end: Option<u64>,
    /// Why its catalog or final label could not be made durable.
    pub catalog_error: Option<media::MediaError>,
}

#[derive(Debug)]
pub struct BackupReport {
    pub set_id: SetId,
    pub devices: Vec<DeviceReport>,
    pub files: usize,
    pub segments: usize,
    /// Work no surviving device could take: these ranges are not in the
    /// set. Paths are stored names as they are (print them with
    /// `units::shown_name`).
    pub unplaced: Vec<(Vec<u8>, u64, u64)>,
    /// Sources that could not be opened when their turn came (removed
    /// since the walk, permissions changed): (path, error). Their ranges
    /// are in `unplaced`.
    pub unreadable: Vec<(Vec<u8>, std::io::Error)>,
    /// Files that changed while the backup read them (path, what changed):
    /// their copy in the set may mix old and new contents.
    pub changed: Vec<(Vec<u8>, crate::source::Changed)>,
    /// `--parity M`: parity records and payload bytes written, and what
    /// is left less protected than asked (empty: every stripe has M).
    pub parity: ParitySummary,
    pub elapsed: Duration,
}

/// What `--parity` wrote (all zero without it).
#[derive(Clone, Debug, Default)]
pub struct ParitySummary {
    pub m: usize,
    pub stripes: usize,
    pub records: u64,
    pub payload_bytes: u64,
    /// Stripes decided and written while the data was written (the rest
    /// were made after it, from records read back).
    pub inline_stripes: usize,
    /// Data bytes read back from the devices to compute parity: 0 when
    /// every device stayed healthy (`backup::parity`).
    pub read_back_bytes: u64,
    pub warnings: Vec<super::parity::ParityWarning>,
    /// Wall time of the parity phase (after the data phase).
    pub elapsed: Duration,
}

impl DeviceReport {
    /// A device that did not fail but whose catalog or final label is not
    /// durably written: the set is incomplete.
    pub fn catalog_missing(&self) -> bool {
        self.end != DeviceEnd::Failed && self.catalog_end.is_none()
    }
}

impl BackupReport {
    /// The report of a run that wrote its catalog: the devices' ends and
    /// what the data phase found about the sources.
    pub(super) fn of_run(
        set_id: SetId,
        devices: Vec<DeviceReport>,
        files: usize,
        segments: usize,
        sources: super::catalog::SourceFindings,
        parity: ParitySummary,
        started: std::time::Instant,
    ) -> BackupReport {
        BackupReport {
            set_id,
            devices,
            files,
            segments,
            unplaced: sources.unplaced,
            unreadable: sources.unreadable,
            changed: sources.changed,
            parity,
            elapsed: started.elapsed(),
        }
    }

    pub fn missing_bytes(&self) -> u64 {
        self.unplaced.iter().map(|u| u.2).sum()
    }
    /// Devices (not failed) whose catalog or final label is not durable.
    pub fn catalogs_missing(&self) -> Vec<&DeviceReport> {
        self.devices
            .iter()
            .filter(|d| d.catalog_missing())
            .collect()
    }
    /// Everything is in the set and every device that did not fail is
    /// complete (catalog and label durable).
    pub fn complete(&self) -> bool {
        self.unplaced.is_empty() && self.catalogs_missing().is_empty()
    }
    pub fn degraded(&self) -> bool {
        self.devices.iter().any(|d| d.end == DeviceEnd::Failed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Media(#[from] media::MediaError),
    /// The walk's entries could not be read back from their temporary
    /// file: no catalog was written (the set is not restorable).
    #[error("{0}: no catalog was written")]
    Entries(#[from] crate::source::spill::ReadBackError),
    /// Every device named with why it holds no catalog.
    #[error("no device could take the catalog: the set is not restorable ({})", joined(.devices))]
    NoCatalog { devices: Vec<NoCatalogOn> },
    /// The library could not move a cartridge of a spanning set (the
    /// cartridges written so far hold a partial set).
    #[error(transparent)]
    Changer(#[from] crate::device::changer::ChangerError),
    /// A drive of the library could not be opened after a load.
    #[error("changer drive {drive} (cartridge {barcode}): {error}")]
    Drive {
        drive: u32,
        barcode: String,
        error: crate::device::DeviceError,
    },
}

/// A device that holds no catalog at the end of a run, and why.
#[derive(Debug, thiserror::Error)]
#[error("{device}: {why}")]
pub struct NoCatalogOn {
    pub device: String,
    pub why: NoCatalogWhy,
}

/// Why a device holds no catalog: its catalog's own error, else what
/// ended its data phase.
#[derive(Debug, thiserror::Error)]
pub enum NoCatalogWhy {
    #[error(transparent)]
    Catalog(media::MediaError),
    #[error(transparent)]
    Data(DeviceFault),
    /// Nothing said why.
    #[error("-")]
    Unknown,
}

fn joined(devices: &[NoCatalogOn]) -> String {
    let each: Vec<String> = devices.iter().map(ToString::to_string).collect();
    each.join("; ")
}

//! The planner: a pure function from (files, devices, options) to an
//! assignment of byte ranges to devices. No I/O. Claims 8-12, 16, 19, 24,
//! 29-30, 37-38 of the source document.
//!
//! INTERFACE (fixed; the engine and CLI build on it):
//! - `plan(files, devices, opts) -> Result<Plan, PlanError>`
//! - `media_bytes(length, chunk)`: bytes a segment occupies on media.

/// Bytes of one record header on media (see docs/FORMAT.md).
pub const HEADER_BYTES: u64 = 4096;
/// Alignment of every structure on media.
pub const BLOCK_BYTES: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Strategy {
    /// Claims 10/30: split files larger than T into segments <= T, sort, least filled first.
    Split,
    /// Claims 19/38: sort, place whole files < T, split large files by the space remaining.
    #[default]
    Fill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Order {
    /// Largest first (claim 11).
    #[default]
    Desc,
    /// Smallest first (claim 12).
    Asc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Balance {
    /// Equal bytes per device (the claims).
    #[default]
    Bytes,
    /// Bytes proportional to each device's rate; least predicted finish time first.
    Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub strategy: Strategy,
    pub order: Order,
    pub balance: Balance,
    /// Segment boundaries fall on multiples of this (except at a file's end). Power of two, >= 4096.
    pub chunk_bytes: u64,
}

/// One file to plan. Its id is its index in the slice given to `plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileItem {
    pub size_bytes: u64,
}

/// One device as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSlot {
    /// Media bytes available for data records (label and catalog reserve already subtracted).
    pub capacity_bytes: u64,
    /// Declared or measured bandwidth; required by `Balance::Time`.
    pub rate_bytes_per_sec: Option<u64>,
}

/// A contiguous byte range of one file assigned to one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub file: u32,
    pub offset: u64,
    pub length: u64,
    pub device: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct DeviceLoad {
    /// Payload bytes assigned.
    pub assigned_bytes: u64,
    /// Media bytes those segments occupy (`media_bytes` summed).
    pub media_bytes: u64,
    pub segments: u64,
    /// Distinct files with at least one segment here.
    pub files: u64,
    /// media_bytes / rate, when the rate is known.
    pub finish_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub threshold_bytes: u64,
    /// Every segment, in the order it will be written (the sorted list).
    pub segments: Vec<Segment>,
    pub devices: Vec<DeviceLoad>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no backup devices given")]
    NoDevices,
    #[error("chunk size {0} must be a power of two of at least 4096 bytes")]
    BadChunk(u64),
    #[error(
        "--balance time needs a rate for every device (device {device} has none: add ,rate=N)"
    )]
    MissingRate { device: u32 },
    #[error("the set does not fit: {missing_bytes} more bytes of device capacity are needed")]
    DoesNotFit { missing_bytes: u64 },
}

/// Media footprint of a segment of `length` payload bytes: one header per
/// record of up to `chunk_bytes`, payload rounded up to `BLOCK_BYTES`.
pub fn media_bytes(length: u64, chunk_bytes: u64) -> u64 {
    if length == 0 {
        return 0;
    }
    let records = length.div_ceil(chunk_bytes);
    records * HEADER_BYTES + length.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// Plan the set. Files of size 0 get no segment.
pub fn plan(files: &[FileItem], devices: &[DeviceSlot], opts: &Options) -> Result<Plan, PlanError> {
    let _ = (files, devices, opts);
    unimplemented!("planner: see issue 3")
}

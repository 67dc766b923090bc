//! The planner: a pure function from (files, devices, options) to an
//! assignment of byte ranges to devices. No I/O. Claims 8-12, 16, 19, 24,
//! 29-30, 37-38 of the source document.
//!
//! INTERFACE (fixed; the engine and CLI build on it):
//! - `plan(files, devices, opts) -> Result<Plan, PlanError>`
//! - `media_bytes(length, chunk)`: bytes a segment occupies on media.
//!
//! # Terms
//!
//! - **stored bytes** of a file or segment: its bytes less the holes of a
//!   sparse file (`FileItem::data`), which are recorded, not written. A
//!   dense file stores its size. Every byte count below (total, T, shares,
//!   `DeviceLoad::assigned_bytes`, "least filled") is in stored bytes, so a
//!   mostly-hole file weighs what it writes; segments still cut the
//!   file's logical bytes, and `FileItem::size_bytes` stays its size.
//! - **total**: the sum of all files' stored bytes. **T** (`Plan::threshold_bytes`)
//!   is `total / N`, rounded down (claims 8, 9, 29), in both balance modes.
//! - **share** of a device: the payload bytes it should end with. With
//!   `Balance::Bytes` every share is `T`. With `Balance::Time` the shares are
//!   proportional to the rates and sum to `total` exactly (device `i` gets
//!   `floor(total * R_(i+1) / R) - floor(total * R_i / R)` where `R_i` is the
//!   sum of the first `i` rates).
//!   Shares and "least filled" count payload bytes; `DeviceLoad::finish_secs`
//!   counts media bytes (headers, block rounding), so devices holding many
//!   small files finish slightly later than their share predicts (0.03%
//!   in the planner bench).
//! - **chunk**: every segment starts at a multiple of `chunk_bytes` within
//!   its file, and every segment's length is a multiple of `chunk_bytes`
//!   unless the segment ends at the file's end. Because `chunk_bytes` is a
//!   multiple of `BLOCK_BYTES`, and records never cross a chunk boundary,
//!   splitting a file this way never changes its media footprint: the
//!   media bytes of a file's segments always add up to those of the whole
//!   file (`media_bytes(size)` for a dense file; `FileItem::media`).
//!
//! # Strategies
//!
//! `Strategy::Split` (claims 10, 30) is in [`split`]; `Strategy::Fill`
//! (claims 19, 38) is in [`fill`]. Both are greedy, single pass over a list
//! sorted by size; both treat device capacity (in media bytes) as a hard
//! limit. `Plan::segments` is always sorted by segment length in the chosen
//! order (ties: file id ascending, then offset ascending), which is the
//! order the segments are written in; so every device's own list is in that
//! order too.
//!
//! # Failure
//!
//! When something cannot be placed, `plan` still runs to the end and then
//! reports `DoesNotFit { missing_bytes }`, a lower bound on the media bytes
//! of capacity the set lacks: the larger of (total media bytes needed −
//! total capacity) and the largest single shortfall (media bytes of an
//! item, or of the unplaced rest of a file, minus the most free capacity
//! any device had when it was tried), and at least 1. The first term
//! covers a set that is simply too big; the second a set that fits in
//! total but not in the pieces the strategy may cut (`Split` never cuts
//! an item further to fit a device).
//!
//! # Cost
//!
//! One sort of the segment list (two for `Fill`), and a scan of the N devices
//! per placed segment: O(F log F + F N) time for F files, and one
//! `Segment` (24 bytes) per segment plus O(N) of working memory. No per-file
//! heap allocation.

mod fill;
pub mod redistribute;
mod sparse;
mod split;
mod state;
pub mod stripe;

#[cfg(test)]
mod check;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use state::{Context, DeviceState};

/// Bytes of one record header on media (the format's, docs/FORMAT.md).
pub const HEADER_BYTES: u64 = crate::format::HEADER_BYTES as u64;
/// Alignment of every structure on media (the format's).
pub const BLOCK_BYTES: u64 = crate::format::BLOCK_BYTES as u64;
/// Default `Options::chunk_bytes`: 1 MiB.
pub const CHUNK_BYTES_DEFAULT: u64 = 1 << 20;
/// Smallest chunk `plan` accepts (one block).
pub const CHUNK_BYTES_MIN: u64 = BLOCK_BYTES;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Claims 10/30: split files larger than T into segments <= T, sort, least filled first.
    Split,
    /// Claims 19/38: sort, place whole files < T, split large files by the space remaining.
    #[default]
    Fill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    /// Largest first (claim 11).
    #[default]
    Desc,
    /// Smallest first (claim 12).
    Asc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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

impl Default for Options {
    /// `--strategy fill --order desc --balance bytes --chunk 1M`.
    fn default() -> Self {
        Options {
            strategy: Strategy::default(),
            order: Order::default(),
            balance: Balance::default(),
            chunk_bytes: CHUNK_BYTES_DEFAULT,
        }
    }
}

/// One file to plan. Its id is its index in the slice given to `plan`.
/// Segments cut its logical bytes (`size_bytes`); balance and capacity
/// count what it stores (see [`sparse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileItem<'a> {
    /// The logical (apparent) size.
    pub size_bytes: u64,
    /// When the file is sparse: the byte ranges holding data `(offset,
    /// length)`, ascending, disjoint, within `size_bytes`, starting on a
    /// block boundary (`source::EntryKind::File::data`). Only these are
    /// stored. `None`: every byte is data.
    pub data: Option<&'a [(u64, u64)]>,
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
    /// Payload bytes assigned: stored bytes, holes of sparse files not counted.
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

impl Plan {
    /// Max minus min assigned (stored) bytes over the devices (0 with no devices).
    pub fn spread_bytes(&self) -> u64 {
        let bytes = || self.devices.iter().map(|d| d.assigned_bytes);
        bytes().max().unwrap_or(0) - bytes().min().unwrap_or(0)
    }
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
///
/// Checks, in this order: `NoDevices` (empty `devices`), `BadChunk` (not a
/// power of two or below 4096), `MissingRate` (`Balance::Time` and a device
/// whose rate is `None` or 0). Then places every byte (see [`split`] and
/// [`fill`]) or returns `DoesNotFit`.
///
/// Limits: at most `u32::MAX - 1` files and `u32::MAX` devices (ids are
/// `u32`); more is a caller bug and panics.
pub fn plan(files: &[FileItem], devices: &[DeviceSlot], opts: &Options) -> Result<Plan, PlanError> {
    let ctx = Context::new(files, devices, opts)?;
    let mut states = ctx.device_states(devices);

    let mut segments = whole_file_segments(files, ctx.device_count);
    if opts.strategy == Strategy::Split {
        split::cut_large_files(&ctx, files, &mut segments);
    }
    sort_write_order(&mut segments, ctx.order);
    let shortfall = match opts.strategy {
        Strategy::Split => split::assign(&ctx, files, &mut states, &mut segments),
        Strategy::Fill => fill::assign(&ctx, files, &mut states, &mut segments),
    };
    if let Some(largest_shortfall) = shortfall {
        let overall = ctx.media_total.saturating_sub(ctx.capacity_total);
        let missing = largest_shortfall.max(overall).max(1);
        return Err(PlanError::DoesNotFit {
            missing_bytes: u64::try_from(missing).unwrap_or(u64::MAX),
        });
    }

    let loads = device_loads(&ctx, files, &states, &segments);
    let plan = Plan {
        threshold_bytes: ctx.threshold_bytes,
        segments,
        devices: loads,
    };
    check_plan_cheap(&ctx, &states, &plan);
    Ok(plan)
}

/// One whole-file segment per non-empty file, device not yet chosen. The
/// vector has room for the pieces cutting usually adds (Split: fewer than
/// 2N + 2; Fill with room everywhere: at most 2N + 1), so it is not
/// reallocated (which would briefly double its memory).
fn whole_file_segments(files: &[FileItem], device_count: usize) -> Vec<Segment> {
    let count = files.iter().filter(|f| f.size_bytes > 0).count();
    let mut segments = Vec::with_capacity(count + 2 * device_count + 2);
    for (id, file) in files.iter().enumerate() {
        if file.size_bytes > 0 {
            segments.push(Segment {
                file: id as u32,
                offset: 0,
                length: file.size_bytes,
                device: DEVICE_NONE,
            });
        }
    }
    segments
}

/// `Segment::device` of a segment not (yet) placed. Never in a returned plan.
const DEVICE_NONE: u32 = u32::MAX;

/// Sort segments into write order: by length in `order`, then file id
/// ascending, then offset ascending. The key is unique per segment, so the
/// result does not depend on the input order.
fn sort_write_order(segments: &mut [Segment], order: Order) {
    match order {
        Order::Desc => segments.sort_unstable_by(|a, b| {
            b.length
                .cmp(&a.length)
                .then(a.file.cmp(&b.file))
                .then(a.offset.cmp(&b.offset))
        }),
        Order::Asc => segments.sort_unstable_by(|a, b| {
            a.length
                .cmp(&b.length)
                .then(a.file.cmp(&b.file))
                .then(a.offset.cmp(&b.offset))
        }),
    }
}

/// Per-device summary. Distinct files: a segment that is a whole file counts
/// one; pieces of split files (few: O(N)) are counted through a sorted,
/// deduplicated list of (file, device) pairs.
fn device_loads(
    ctx: &Context,
    files: &[FileItem],
    states: &[DeviceState],
    segments: &[Segment],
) -> Vec<DeviceLoad> {
    let mut loads: Vec<DeviceLoad> = states
        .iter()
        .map(|s| DeviceLoad {
            assigned_bytes: s.assigned_bytes,
            media_bytes: s.media_bytes,
            segments: s.segments,
            files: 0,
            finish_secs: s
                .rate_bytes_per_sec
                .map(|rate| s.media_bytes as f64 / rate as f64),
        })
        .collect();
    let mut pieces: Vec<(u32, u32)> = Vec::new();
    for seg in segments {
        if seg.length == files[seg.file as usize].size_bytes {
            loads[seg.device as usize].files += 1;
        } else {
            pieces.push((seg.file, seg.device));
        }
    }
    pieces.sort_unstable();
    pieces.dedup();
    for &(_, device) in &pieces {
        loads[device as usize].files += 1;
    }
    debug_assert!(loads.len() == ctx.device_count);
    loads
}

/// Invariants cheap enough to check on every plan (O(segments)).
fn check_plan_cheap(ctx: &Context, states: &[DeviceState], plan: &Plan) {
    let mut assigned_total: u128 = 0;
    for load in &plan.devices {
        assigned_total += u128::from(load.assigned_bytes);
    }
    assert_eq!(
        assigned_total, ctx.total_bytes,
        "planner lost or duplicated bytes"
    );
    for (load, state) in plan.devices.iter().zip(states) {
        assert!(
            load.media_bytes <= state.capacity_bytes,
            "planner overfilled a device"
        );
    }
    debug_assert!(plan
        .segments
        .iter()
        .all(|s| s.device != DEVICE_NONE && s.offset % ctx.chunk_bytes == 0 && s.length > 0));
}

/// `media_bytes` without overflow, for sums and capacity checks.
fn media_bytes_wide(length: u64, chunk_bytes: u64) -> u128 {
    if length == 0 {
        return 0;
    }
    let records = u128::from(length.div_ceil(chunk_bytes));
    records * u128::from(HEADER_BYTES)
        + u128::from(length.div_ceil(BLOCK_BYTES)) * u128::from(BLOCK_BYTES)
}

/// Media bytes `media` lacks against the device with the most free capacity.
fn shortfall_bytes(states: &[DeviceState], media: u128) -> u128 {
    let free_max = states
        .iter()
        .map(|s| u128::from(s.capacity_room_bytes()))
        .max()
        .unwrap_or(0);
    media.saturating_sub(free_max)
}

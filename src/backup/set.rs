//! A set before it is written: the planner's inputs from the walked
//! entries, the plan with room kept for the catalog, and the catalog of
//! the entries.

use crate::format::{
    Catalog, CatalogDevice, CatalogFile, CatalogSegment, DeviceState, FileKind, SetId, Stat,
    HEADER_BYTES,
};
use crate::media;
use crate::plan::{self, DeviceSlot, FileItem, Plan};
use crate::source::incremental::Increment;
use crate::source::spill::EntryList;
use crate::source::EntryKind;

/// Planner inputs derived from walked entries: one item per entry (size 0
/// for everything that has no data to store here: directories, links, and
/// in an incremental set the files whose data is in an earlier set), so
/// plan file ids are entry indexes. A sparse file brings its data ranges,
/// so the planner balances the bytes it stores.
pub fn file_items<'a, E: EntryList + ?Sized>(
    entries: &'a E,
    since: Option<&Increment>,
) -> Vec<FileItem<'a>> {
    (0..entries.count())
        .map(|i| match entries.entry(i).kind {
            EntryKind::File { .. } if since.and_then(|s| s.origin(i)).is_some() => {
                FileItem::dense(0)
            }
            EntryKind::File { size_bytes, .. } => FileItem {
                size_bytes,
                data: entries.sparse(i),
            },
            _ => FileItem::dense(0),
        })
        .collect()
}

/// The catalog kind of a special file of st_mode `mode`.
fn special_kind(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockNode,
        _ => FileKind::Fifo,
    }
}

/// The catalog for `entries` with the given segment placements; digests
/// of the data stored in this set are filled by the caller once it is
/// written (those of data in earlier sets come from `since`).
pub fn catalog_for(
    set_id: SetId,
    created_unix_ns: u64,
    chunk_bytes: u32,
    devices: &[CatalogDevice],
    entries: &(impl EntryList + ?Sized),
    since: Option<&Increment>,
    segments: Vec<CatalogSegment>,
) -> Catalog {
    let mut catalog = catalog_head(
        set_id,
        created_unix_ns,
        chunk_bytes,
        devices,
        since,
        segments,
    );
    catalog.files = (0..entries.count())
        .map(|i| catalog_file(entries, i, since))
        .collect();
    catalog
}

/// `catalog_for` without its files: what `Catalog::encode_streamed` takes
/// with `catalog_file` giving the files one at a time.
pub fn catalog_head(
    set_id: SetId,
    created_unix_ns: u64,
    chunk_bytes: u32,
    devices: &[CatalogDevice],
    since: Option<&Increment>,
    segments: Vec<CatalogSegment>,
) -> Catalog {
    let (ancestors, removed, renamed) = match since {
        None => (Vec::new(), Vec::new(), Vec::new()),
        Some(s) => (
            s.ancestors.clone(),
            s.removed.clone(),
            s.renamed
                .iter()
                .map(|(file_id, from)| crate::format::Renamed {
                    file_id: *file_id,
                    from: from.clone(),
                })
                .collect(),
        ),
    };
    Catalog {
        set_id,
        created_unix_ns,
        chunk_bytes,
        devices: devices.to_vec(),
        files: Vec::new(),
        segments,
        ancestors,
        removed,
        renamed,
        parity: None,
        stored_bytes: Vec::new(),
        mac: [0; 32],
    }
}

/// The catalog entry of `entries[i]` (digest zero for data stored in this
/// set: the caller fills it once the data is written).
pub fn catalog_file(
    entries: &(impl EntryList + ?Sized),
    i: usize,
    since: Option<&Increment>,
) -> CatalogFile {
    let e = entries.entry(i);
    let (kind, size_bytes, link_target, hardlink_to) = match &e.kind {
        EntryKind::File { size_bytes, .. } if e.is_block_device() => {
            (FileKind::BlockDevice, *size_bytes, Vec::new(), 0)
        }
        EntryKind::File { size_bytes, .. } => (FileKind::Regular, *size_bytes, Vec::new(), 0),
        EntryKind::Dir => (FileKind::Directory, 0, Vec::new(), 0),
        EntryKind::Symlink { target } => (FileKind::Symlink, 0, target.clone(), 0),
        EntryKind::HardLink { target } => (FileKind::HardLink, 0, Vec::new(), *target),
        EntryKind::Special => (special_kind(e.meta.stat.mode), 0, Vec::new(), 0),
    };
    let origin = since.and_then(|s| s.origin(i));
    CatalogFile {
        path: e.path.clone(),
        kind,
        // rdev and flags only for the kinds that have them (validate).
        stat: Stat {
            rdev: if kind.has_rdev() { e.meta.stat.rdev } else { 0 },
            flags: if kind.has_flags() {
                e.meta.stat.flags
            } else {
                0
            },
            ..e.meta.stat
        },
        size_bytes,
        link_target,
        hardlink_to,
        digest: origin.map(|o| o.digest).unwrap_or([0; 32]),
        origin: origin.map(|o| o.ancestor).unwrap_or(0),
        origin_file_id: origin.map(|o| o.file_id).unwrap_or(0),
        // A hard link's inode (and its xattrs) is its target's.
        xattrs: if kind == FileKind::HardLink {
            Vec::new()
        } else {
            e.meta.xattrs.clone()
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanSetError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("device {device}: too small to hold even the label and catalog ({capacity_bytes} bytes, need {reserve_bytes})")]
    TooSmall {
        device: String,
        capacity_bytes: u64,
        reserve_bytes: u64,
    },
}

/// Plan a set over devices of the given capacities, reserving on each
/// device the label, the catalog and the End record. The catalog's size
/// depends on the plan (one entry per segment), so plan, measure, and plan
/// again with the measured reserve if the first guess was short.
pub fn plan_set(
    entries: &(impl EntryList + ?Sized),
    since: Option<&Increment>,
    devices: &[(String, u64, Option<u64>)],
    options: &plan::Options,
) -> Result<(Plan, u64), PlanSetError> {
    let items = file_items(entries, since);
    let chunk = options.chunk_bytes as u32;
    let names: Vec<CatalogDevice> = devices
        .iter()
        .map(|(n, c, _)| CatalogDevice {
            path: n.as_bytes().to_vec(),
            capacity_bytes: *c,
            state: DeviceState::Complete,
            // The largest value it can take, so the size estimate is an upper bound.
            data_end: *c,
        })
        .collect();
    // The stored section (one varint per file, 10 bytes at most, and its
    // tag) is filled in after the data: counted here at its largest.
    let stored_section_max = 1 + 10 * entries.count() as u64;
    // Counted file by file: no `CatalogFile` per entry held, no encoding
    // kept (issue 23).
    let encoded_bytes = |created_unix_ns, segments| {
        let len = catalog_head(
            SetId([0; 16]),
            created_unix_ns,
            chunk,
            &names,
            since,
            segments,
        )
        .encoded_len_streamed(entries.count(), &|i| catalog_file(entries, i, since))
            as u64
            + stored_section_max;
        // As large as it is sealed (`--encrypt`): an upper bound either way.
        crate::format::seal::sealed_catalog_bytes(len)
    };
    let mut catalog_guess = encoded_bytes(0, Vec::new())
        + 64 * (entries.count() as u64 + 2 * devices.len() as u64)
        + 4096;
    for _ in 0..4 {
        let reserve = HEADER_BYTES as u64 + media::catalog_media_bytes(catalog_guess, chunk);
        let mut slots = Vec::with_capacity(devices.len());
        for (name, capacity, rate) in devices {
            if *capacity <= reserve {
                return Err(PlanSetError::TooSmall {
                    device: name.clone(),
                    capacity_bytes: *capacity,
                    reserve_bytes: reserve,
                });
            }
            slots.push(DeviceSlot {
                capacity_bytes: (*capacity - reserve) / HEADER_BYTES as u64 * HEADER_BYTES as u64,
                rate_bytes_per_sec: *rate,
            });
        }
        let plan = plan::plan(&items, &slots, options)?;
        let segments = plan
            .segments
            .iter()
            .map(|s| CatalogSegment {
                file_id: s.file,
                offset: s.offset,
                length: s.length,
                device: s.device,
                position: u64::MAX,
                records: u32::MAX,
            })
            .collect();
        let actual = encoded_bytes(u64::MAX, segments);
        if actual <= catalog_guess {
            return Ok((plan, reserve));
        }
        catalog_guess = actual + actual / 8;
    }
    unreachable!("catalog size estimate did not converge")
}

//! The read phase of a restore: one thread per device, each streaming its
//! device in media order, checking every record against the label and the
//! catalog, and queueing the writes of the records restored.

use std::fs::File;
use std::sync::Arc;

use crate::device::Device;
use crate::format::catalog::{CatalogStream, FileSummary};
use crate::format::codec::DecompressError;
use crate::format::{Catalog, CatalogSegment, DigestRecord, Label, RecordHeader, RecordKind};
use crate::media;
use crate::media::stream::{self, Flow, Item, Payload};
use crate::units::shown_name;

use super::open::OpenDevice;
use super::problem::{Problem, RecordProblem, Refusal};
use super::select::{targets, Selection, NO_TARGET};
use super::transform::{OpenJob, Opened, Workers};
use super::{tree, writer, OpenSet, RestoreError, TargetOp};

pub(super) struct DeviceRead {
    /// (restored file, offset, length, BLAKE3 of the payload) of the
    /// records with a target.
    pub(super) records: Vec<(u32, DigestRecord)>,
    /// Every record read and checked.
    pub(super) records_read: u64,
    pub(super) payload_bytes: u64,
    pub(super) errors: Vec<Problem>,
}

/// Where the records go.
#[derive(Clone, Copy)]
pub(super) enum Destination<'a> {
    Nowhere,
    Tree(&'a tree::Staged),
    Device(&'a File),
}

/// A device read: (set, device index, path).
pub(super) type Reader = (usize, u32, String);

/// Read phase: every device to read, each on its own thread, in parallel
/// across the sets. A set is read when it is the restored one, when
/// verifying, or when a wanted file has its data in it. Invariant: only
/// records of wanted files reach the destination. Per device read: which
/// one, and what came of it.
pub(super) fn read_devices(
    sets: &[&OpenSet],
    selection: &Selection,
    restored: &Catalog,
    destination: Destination<'_>,
    verify: bool,
) -> Vec<(Reader, Result<DeviceRead, RestoreError>)> {
    let targets = targets(sets, selection);
    let reading = &selection.reading;
    // (set, its device and label, whether its label is still to be read)
    // of every device read. A library's cartridge that holds no record
    // wanted is not loaded to restore (verify reads every one).
    let devices: Vec<(usize, &OpenDevice, bool)> = (0..sets.len())
        .filter(|&s| s == 0 || verify || targets[s].iter().any(|&t| t != NO_TARGET))
        .flat_map(|s| {
            let set = sets[s];
            let unread = |i: usize| set.unread.get(i).copied().unwrap_or(false);
            set.devices
                .iter()
                .enumerate()
                .map(move |(i, d)| (s, d, unread(i)))
        })
        .filter(|(s, (_, label), _)| reading[*s].contains(&label.device_index))
        .filter(|(s, (_, label), _)| {
            verify || sets[*s].unread.is_empty() || holds_wanted(sets[*s], &targets[*s], label)
        })
        .collect();
    let results: Vec<Result<DeviceRead, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .map(|&(s, (dev, label), unread)| {
                let (targets, set) = (&targets[s], sets[s]);
                scope.spawn(move || {
                    let dev = dev.as_ref();
                    // A library's cartridge waits here for a free drive.
                    super::open::attach(dev)?;
                    let read = (if unread {
                        super::open::check_unread(dev, label, set.mac_key.as_ref(), &set.catalog)
                    } else {
                        Ok(())
                    })
                    .and_then(|()| {
                        let ranges = DeviceRanges::new(&set.catalog, label.device_index);
                        let files = (&set.catalog as &dyn Files, ranges);
                        read_device(dev, label, files, Some(targets), restored, destination)
                    })
                    .map(|mut read| {
                        // A library's cartridge: its own catalog compared
                        // while it is loaded (`verify_chain` does the others).
                        if verify && !set.unread.is_empty() {
                            read.errors.extend(own_catalog(dev, label, &set.catalog));
                        }
                        read
                    });
                    dev.detach();
                    read
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect()
    });
    devices
        .iter()
        .map(|(s, (dev, label), _)| (*s, label.device_index, dev.path().display().to_string()))
        .zip(results)
        .collect()
}

/// Whether the device of `label` holds a record of a file read (a target).
fn holds_wanted(set: &OpenSet, targets: &[u32], label: &Label) -> bool {
    set.catalog.segments.iter().any(|seg| {
        seg.device == label.device_index
            && targets
                .get(seg.file_id as usize)
                .is_some_and(|&t| t != NO_TARGET)
    })
}

/// A cartridge's own copy of the set's catalog, read after its records
/// (a volume closed with a "continued" trailer holds none): a problem
/// when it does not read back or differs from the catalog used.
fn own_catalog(dev: &dyn Device, label: &Label, catalog: &Catalog) -> Option<Problem> {
    match media::read_catalog(dev, label) {
        Ok(read) if read.catalog == *catalog => None,
        Ok(_) => Some(Problem::CatalogDiffers {
            device: dev.path().display().to_string(),
        }),
        Err(media::MediaError::Continued { .. }) => None,
        Err(e) => Some(Problem::Catalog(e)),
    }
}

/// What a device's reader needs of a set's files by id: a decoded
/// `Catalog`, or a `CatalogStream` (issue 23: its 17 bytes a file, a path
/// read from the encoding when a problem names it).
pub(super) trait Files: Sync {
    fn summary(&self, id: u32) -> Option<FileSummary>;
    /// File `id`'s path (empty when it cannot be read: only for messages).
    fn path(&self, id: u32) -> Vec<u8>;
    /// File `id`'s whole entry (None when it cannot be read).
    fn file(&self, id: u32) -> Option<std::borrow::Cow<'_, crate::format::CatalogFile>>;
}

impl Files for Catalog {
    fn summary(&self, id: u32) -> Option<FileSummary> {
        let f = self.files.get(id as usize)?;
        Some(FileSummary {
            kind: f.kind,
            earlier: f.origin != 0,
            size_bytes: f.size_bytes,
        })
    }

    fn path(&self, id: u32) -> Vec<u8> {
        self.files
            .get(id as usize)
            .map(|f| f.path.clone())
            .unwrap_or_default()
    }

    fn file(&self, id: u32) -> Option<std::borrow::Cow<'_, crate::format::CatalogFile>> {
        self.files.get(id as usize).map(std::borrow::Cow::Borrowed)
    }
}

impl Files for CatalogStream<'_> {
    fn summary(&self, id: u32) -> Option<FileSummary> {
        CatalogStream::summary(self, id as usize)
    }

    fn path(&self, id: u32) -> Vec<u8> {
        match CatalogStream::file(self, id as usize) {
            Some(Ok(f)) => f.path,
            _ => Vec::new(),
        }
    }

    fn file(&self, id: u32) -> Option<std::borrow::Cow<'_, crate::format::CatalogFile>> {
        match CatalogStream::file(self, id as usize) {
            Some(Ok(f)) => Some(std::borrow::Cow::Owned(f)),
            _ => None,
        }
    }
}

/// Destination files kept open at once by one reader's queued writes.
const OPEN_FILES_MAX: usize = 128;

/// The byte ranges a set's catalog assigns to one device, per file:
/// `(file_id, start, end)`, sorted, overlapping and adjacent segments of
/// a file merged. Built once per device read; every Data record read from
/// the device must lie inside one of them.
pub(super) struct DeviceRanges(pub(super) Vec<(u32, u64, u64)>, ParityRanges);

/// The media ranges of the parity records the catalog lists on one
/// device, sorted: `--parity` writes them among the data records
/// (docs/FORMAT.md 5.1), and a reader streaming the data steps over them.
#[derive(Default)]
pub(super) struct ParityRanges(Vec<(u64, u64)>);

impl ParityRanges {
    pub(super) fn new(catalog: &Catalog, device: u32) -> ParityRanges {
        let mut ranges: Vec<(u64, u64)> = catalog
            .parity
            .iter()
            .flat_map(|p| &p.stripes)
            .flat_map(|s| &s.parity)
            .filter(|r| r.device == device)
            .map(|r| {
                let media = crate::format::HEADER_BYTES as u64
                    + crate::format::round_up_block(r.payload_bytes.into());
                (r.position, r.position.saturating_add(media))
            })
            .collect();
        ranges.sort_unstable();
        ParityRanges(ranges)
    }

    /// Whether media offset `position` lies inside one of them.
    pub(super) fn contains(&self, position: u64) -> bool {
        let i = self.0.partition_point(|&(start, _)| start <= position);
        i > 0 && position < self.0[i - 1].1
    }
}

impl DeviceRanges {
    /// Whether media offset `position` lies in a parity record.
    pub(super) fn in_parity(&self, position: u64) -> bool {
        self.1.contains(position)
    }

    pub(super) fn new(catalog: &Catalog, device: u32) -> DeviceRanges {
        let mut ranges = Self::of(catalog.segments.iter().copied(), device);
        ranges.1 = ParityRanges::new(catalog, device);
        ranges
    }

    /// `new` from a set's segments, in any order, for a set without
    /// parity (no parity ranges).
    pub(super) fn of(segments: impl Iterator<Item = CatalogSegment>, device: u32) -> DeviceRanges {
        let mut ranges: Vec<(u32, u64, u64)> = segments
            .filter(|s| s.device == device)
            // `Catalog::validate` rules out an overflow.
            .map(|s| (s.file_id, s.offset, s.offset + s.length))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u64, u64)> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.0 == r.0 && r.1 <= last.2 => last.2 = last.2.max(r.2),
                _ => merged.push(r),
            }
        }
        DeviceRanges(merged, ParityRanges::default())
    }

    /// Whether `[offset, offset + bytes)` of `file` lies inside one range.
    pub(super) fn contains(&self, file: u32, offset: u64, bytes: u64) -> bool {
        let Some(end) = offset.checked_add(bytes) else {
            return false;
        };
        // The last range of any file starting at or before (file, offset).
        let after = self
            .0
            .partition_point(|&(f, start, _)| (f, start) <= (file, offset));
        after > 0 && {
            let (f, start, range_end) = self.0[after - 1];
            f == file && start <= offset && end <= range_end
        }
    }
}

/// Why a Data record of this set may not be written, checked against the
/// device's label and the set's catalog (docs/FORMAT.md, section 5: what
/// one header cannot check): None when it may. Its CRC is checked after.
pub(super) fn record_refusal(
    header: &RecordHeader,
    label: &Label,
    catalog: &dyn Files,
    ranges: &DeviceRanges,
) -> Option<Refusal> {
    if header.device_index != label.device_index {
        return Some(Refusal::OtherDevice {
            record: header.device_index,
            label: label.device_index,
        });
    }
    if header.payload_bytes > label.chunk_bytes {
        return Some(Refusal::LargerThanChunk {
            payload_bytes: header.payload_bytes,
            chunk_bytes: label.chunk_bytes,
        });
    }
    let Some(file) = catalog.summary(header.file_id) else {
        return Some(Refusal::UnknownFile {
            file_id: header.file_id,
        });
    };
    let path = || catalog.path(header.file_id);
    if !file.kind.has_data() || file.earlier {
        return Some(Refusal::NoDataHere {
            path: path(),
            file_id: header.file_id,
        });
    }
    if header.file_size != file.size_bytes {
        return Some(Refusal::SizeDiffers {
            path: path(),
            record_bytes: header.file_size,
            catalog_bytes: file.size_bytes,
        });
    }
    if !ranges.contains(
        header.file_id,
        header.file_offset,
        header.payload_bytes.into(),
    ) {
        return Some(Refusal::OutsideSegments {
            path: path(),
            file_offset: header.file_offset,
            payload_bytes: header.payload_bytes,
        });
    }
    None
}

/// Stream one device of a set; records whose file has a target are
/// checked and written to it (queued on the reader's own io_uring, the
/// payloads written from the stream's buffers without a copy).
pub(super) fn read_device(
    dev: &dyn Device,
    label: &Label,
    (catalog, ranges): (&dyn Files, DeviceRanges),
    targets: Option<&[u32]>,
    restored: &dyn Files,
    destination: Destination<'_>,
) -> Result<DeviceRead, RestoreError> {
    let mut reader = DeviceReader::new(
        dev,
        label,
        (catalog, ranges),
        targets,
        restored,
        destination,
    )?;
    let mut result: Result<(), RestoreError> = Ok(());
    stream::stream::<RestoreError>(
        dev,
        media::data_start(dev),
        label.data_end,
        label.chunk_bytes,
        |item| match reader.item(item) {
            Ok(flow) => Ok(flow),
            Err(e) => {
                result = Err(e);
                Ok(Flow::Stop)
            }
        },
    )?;
    result?;
    // The small files still being made.
    reader.finish_writes(true)?;
    // The workers' problems came back late: in media order again.
    let mut out = reader.out;
    out.errors.sort_by_key(|p| match p {
        Problem::Record { offset, .. } => *offset,
        _ => u64::MAX,
    });
    Ok(out)
}

/// One device's reading: what every record is checked against, where it
/// goes, and what was read.
struct DeviceReader<'a> {
    name: String,
    dev: &'a dyn Device,
    /// The end of a parity record the catalog does not list (its stripe
    /// lost a member during the backup) that the stream is inside.
    orphan_parity_end: u64,
    parity_buffer: Option<crate::io::BufferPool>,
    label: &'a Label,
    /// The catalog of the device's own set.
    catalog: &'a dyn Files,
    ranges: DeviceRanges,
    /// Per file of `catalog`: the restored file its records go to (None:
    /// the file of the same id, a verify of one set).
    targets: Option<&'a [u32]>,
    /// The catalog restored (`sets[0]`'s).
    restored: &'a dyn Files,
    destination: Destination<'a>,
    /// An image restore's target size (defense in depth: the catalog's
    /// segments already keep records inside the file, the file inside it).
    target_bytes: Option<u64>,
    writer: Option<writer::Writer>,
    /// The destination the previous record went to (restored file id,
    /// writer handle): records of one file are contiguous on media.
    open: Option<(u32, usize)>,
    /// Compressed records' payloads, opened here: a mapped device's
    /// (borrowed, not in a window), or all when no worker could start.
    inflate: super::transform::Inflate,
    /// Sealed and compressed records in windows are opened on these,
    /// started at the first such record.
    workers: Option<Workers>,
    /// Whether starting them failed (not tried again).
    no_workers: bool,
    /// The restored file the workers' records went to last, open.
    worker_file: Option<(u32, Arc<File>, Arc<str>)>,
    /// The last record for the workers, sent at the next item: the
    /// worker opens it in place, so it goes only once the stream's item
    /// of that record (which borrows its bytes) is over.
    deferred: Option<OpenJob>,
    /// Records are opened in place in the windows (a disk's windows hold
    /// many records, so deferring each job by one item costs little). A
    /// tape's buffer holds one record and the next item is the Reclaim
    /// that waits for it: there the workers copy before opening, so that
    /// opening a block overlaps reading the next.
    open_in_place: bool,
    /// The set is sealed and its data key held: a sealed record's CRC32C
    /// is not checked, its tag authenticates the same bytes (FORMAT.md
    /// section 5.2); opening it decides.
    tag_checks: bool,
    /// The record being read was CRC-checked by the stream
    /// (`Item::Record::crc_checked`).
    crc_checked: bool,
    out: DeviceRead,
}

impl<'a> DeviceReader<'a> {
    fn new(
        dev: &'a dyn Device,
        label: &'a Label,
        (catalog, ranges): (&'a dyn Files, DeviceRanges),
        targets: Option<&'a [u32]>,
        restored: &'a dyn Files,
        destination: Destination<'a>,
    ) -> Result<DeviceReader<'a>, RestoreError> {
        let name = dev.path().display().to_string();
        let target_bytes = match destination {
            Destination::Device(target) => {
                let size = target_size_bytes(target);
                let op = TargetOp::Size;
                Some(size.map_err(|error| RestoreError::Target { op, error })?)
            }
            Destination::Tree(_) | Destination::Nowhere => None,
        };
        let writer = match destination {
            Destination::Nowhere => None,
            Destination::Tree(_) | Destination::Device(_) => Some(writer::Writer::new().map_err(
                |error| RestoreError::WriterSetup {
                    device: name.clone(),
                    error,
                },
            )?),
        };
        Ok(DeviceReader {
            ranges,
            name,
            dev,
            orphan_parity_end: 0,
            parity_buffer: None,
            label,
            catalog,
            targets,
            restored,
            destination,
            target_bytes,
            writer,
            open: None,
            inflate: Default::default(),
            workers: None,
            no_workers: false,
            worker_file: None,
            deferred: None,
            open_in_place: dev.access() == crate::device::Access::Random,
            tag_checks: label.seal.is_sealed()
                && crate::format::seal::keyring::data_key(label.set_id).is_some(),
            crc_checked: false,
            out: DeviceRead {
                records: Vec::new(),
                records_read: 0,
                payload_bytes: 0,
                errors: Vec::new(),
            },
        })
    }

    /// One item of the stream. Damage is reported and skipped; an error
    /// of the destination stops the reading.
    fn item(&mut self, item: Item<'_>) -> Result<Flow, RestoreError> {
        // The previous record's job, now that its item is over. An error
        // is returned after a Reclaim has collected every job (a window
        // must not be held past it).
        let sent = match self.deferred.take() {
            Some(job) => self.send_job(job),
            None => Ok(()),
        };
        let sent = match (sent, &item) {
            (Err(e), Item::Reclaim) => Err(e),
            (sent, _) => {
                sent?;
                Ok(())
            }
        };
        match item {
            Item::Record {
                position,
                header,
                payload,
                source,
                padding,
                crc_checked,
                ..
            } => {
                self.crc_checked = crc_checked;
                if !stream::all_zero(padding) {
                    let file_offset = header.file_offset;
                    self.problem(position, RecordProblem::Padding { file_offset });
                }
                self.record(position, &header, payload, source)?;
            }
            // A parity record among the data records (docs/FORMAT.md
            // 5.1): not a data record, read by offset when needed.
            Item::Bad { position, .. }
                if self.ranges.in_parity(position) || position < self.orphan_parity_end => {}
            Item::Bad { position, error } => {
                // One the catalog does not list: a parity record of this
                // set and device whose stripe lost a member is skipped.
                let label = self.label;
                let found = media::scan::parity_at(
                    self.dev,
                    position,
                    &error,
                    Some(label.set_id),
                    &mut self.parity_buffer,
                )
                .filter(|p| p.header.device_index == label.device_index);
                match found {
                    Some(p) => {
                        self.orphan_parity_end = position
                            + crate::format::HEADER_BYTES as u64
                            + crate::format::round_up_block(p.header.shard_bytes.into());
                    }
                    None => self.problem(position, RecordProblem::Header(error)),
                }
            }
            Item::Reclaim => {
                // Every record with the workers and every queued write
                // done before the window is reused.
                // Both, whatever the first gives.
                let opened = self.collect_opened(true);
                let finished = self.finish_writes(false);
                sent?;
                finished?;
                opened?;
            }
        }
        Ok(Flow::Continue)
    }

    /// A record: checked against the label, the catalog and its CRC, then
    /// counted and, when its file is restored, written.
    fn record(
        &mut self,
        position: u64,
        header: &RecordHeader,
        payload: &[u8],
        source: Payload<'_>,
    ) -> Result<(), RestoreError> {
        let transformed = header.transform.codec != crate::format::Codec::Raw
            || header.transform.seal.is_sealed();
        // A raw record in clear in a disk's window: its CRC32C, BLAKE3 and
        // write go to the workers too, so that the reader's thread only
        // drives the device's ring (issue 23: restore used one core a
        // device for hashing while the sealed path used them all).
        let crc_on_workers = !transformed
            && self.open_in_place
            && matches!(source, Payload::Window { .. })
            && self.workers_started();
        let Some((target, crc_pending)) = self.check(position, header, payload, crc_on_workers)
        else {
            return Ok(());
        };
        if let Destination::Tree(staged) = self.destination {
            if let Some(dir) = staged.small_dir(target as usize) {
                if crc_pending && !self.checksum(position, header, payload) {
                    return Ok(());
                }
                return self.small_record(position, header, payload, source, (target, dir));
            }
        }
        if let (true, Payload::Window { window, range }) = (transformed || crc_pending, &source) {
            if self.workers_started() {
                // A raw record is only read by its worker, never changed:
                // it needs no deferring, nor opening in place.
                let in_place = self.open_in_place && !crc_pending;
                let job = OpenJob {
                    position,
                    header: *header,
                    window: window.clone(),
                    range: range.clone(),
                    target,
                    destination: None,
                    in_place,
                    crc: crc_pending,
                };
                if !in_place {
                    return self.send_job(job);
                }
                // Sent at the next item (`deferred`).
                self.deferred = Some(job);
                return Ok(());
            }
        }
        // A compressed record's payload, decompressed (bounded).
        let mut inflate = std::mem::take(&mut self.inflate);
        let plain = match inflate.payload(header, payload) {
            Ok(plain) => plain,
            Err(why) => {
                self.not_opened(position, header, why);
                self.inflate = inflate;
                return Ok(());
            }
        };
        // The file digest proves the bytes (a CRC32C can be forged).
        let hash = crate::format::payload_hash(plain);
        let record = (header.file_offset, header.payload_bytes, hash);
        self.out.records.push((target, record));
        let written = if self.writer.is_none() {
            Ok(())
        } else if header.transform.codec == crate::format::Codec::Raw
            && !header.transform.seal.is_sealed()
        {
            self.write(target, header, source)
        } else {
            self.write(target, header, Payload::Mapped(plain))
        };
        self.inflate = inflate;
        written
    }

    /// A record of a small file (`tree::small`), opened here (not on the
    /// workers): proven against the file's digest first, then, only when
    /// it is the whole file and the first copy read, the file is created
    /// under its name in `dir` and written, as one chain on the writer's
    /// ring (or at once, for a payload not in a window as stored).
    fn small_record(
        &mut self,
        position: u64,
        header: &RecordHeader,
        payload: &[u8],
        source: Payload<'_>,
        (target, dir): (u32, std::os::fd::BorrowedFd<'_>),
    ) -> Result<(), RestoreError> {
        let Destination::Tree(staged) = self.destination else {
            unreachable!("small files only in a tree")
        };
        let mut inflate = std::mem::take(&mut self.inflate);
        let result = (|| {
            let plain = match inflate.payload(header, payload) {
                Ok(plain) => plain,
                Err(why) => {
                    self.not_opened(position, header, why);
                    return Ok(());
                }
            };
            let record = (
                header.file_offset,
                header.payload_bytes,
                crate::format::payload_hash(plain),
            );
            self.out.records.push((target, record));
            let Some(file) = self.restored.file(target) else {
                return Ok(());
            };
            let whole =
                header.file_offset == 0 && u64::from(header.payload_bytes) == file.size_bytes;
            // Nothing unproven is written under the file's own name: the
            // verdict will report it (a second copy is written once). The
            // file digest over this one record proves it is all the file's
            // data: the whole file, or a sparse file's one data record.
            if crate::format::file_digest(&mut [record]) != file.digest
                || !staged.claim_small(target as usize)
            {
                return Ok(());
            }
            let name = crate::restore::at::split_parent(&file.path).1;
            let mode = tree::Staged::small_create_mode(file.stat.mode);
            let w = self.writer.as_mut().expect("a writer with a destination");
            let raw = header.transform.codec == crate::format::Codec::Raw
                && !header.transform.seal.is_sealed();
            match source {
                Payload::Window { window, range } if whole && raw && w.can_create() => {
                    use std::os::fd::AsRawFd;
                    w.create(target, dir.as_raw_fd(), name, mode, &window, range)
                        .map_err(|why| write_error(&self.name, why))
                }
                _ => self.small_now(
                    target,
                    dir,
                    name,
                    mode,
                    (plain, header.file_offset, file.size_bytes),
                ),
            }
        })();
        self.inflate = inflate;
        result
    }

    /// A small file created and written at once on this thread: its one
    /// record's `data` at `offset`, the file `size` bytes long.
    fn small_now(
        &self,
        target: u32,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        mode: u32,
        (data, offset, size): (&[u8], u64, u64),
    ) -> Result<(), RestoreError> {
        use std::os::unix::fs::FileExt;
        let Destination::Tree(staged) = self.destination else {
            unreachable!("small files only in a tree")
        };
        let fd = match crate::restore::at::create_in(dir, name, mode) {
            Ok(fd) => fd,
            Err(e) => {
                staged.small_failed(target as usize, format!("create: {e}"));
                return Ok(());
            }
        };
        let file = File::from(fd);
        // A sparse file's record lies at its offset; the holes around it
        // are the file's length set after.
        let written = file.write_all_at(data, offset).and_then(|()| {
            if offset + data.len() as u64 == size {
                Ok(())
            } else {
                file.set_len(size)
            }
        });
        if let Err(e) = written {
            let _ = crate::restore::at::remove_in(dir, name);
            let path = shown_name(&self.restored.path(target));
            return Err(write_error(&self.name, format!("write {path}: {e}")));
        }
        Ok(())
    }

    /// Wait for every queued write that holds a window (`drain`: every
    /// one, small files' too); the small files whose chain failed
    /// reported (one not created: that file alone; one not written: the
    /// restore stops, as for any failed write).
    fn finish_writes(&mut self, drain: bool) -> Result<(), RestoreError> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        self.open = None;
        let finished = if drain { w.drain() } else { w.finish() };
        let failures = w.take_failures();
        let device = &self.name;
        finished.map_err(|why| write_error(device, why))?;
        let Destination::Tree(staged) = self.destination else {
            return Ok(());
        };
        for (target, failure) in failures {
            let path = || shown_name(&self.restored.path(target));
            match failure {
                writer::CreateFailure::NotCreated(e) => {
                    staged.small_failed(target as usize, format!("create: {e}"));
                }
                writer::CreateFailure::NotWritten(why) => {
                    return Err(write_error(device, format!("{}: {why}", path())));
                }
            }
        }
        Ok(())
    }

    /// Whether there are workers, started at the first call (false: none
    /// could start).
    fn workers_started(&mut self) -> bool {
        if self.workers.is_none() && !self.no_workers {
            self.workers = Workers::start(self.label.device_index);
            self.no_workers = self.workers.is_none();
        }
        self.workers.is_some()
    }

    /// Give `job` its destination and queue it on the workers (put back
    /// after, whatever happened).
    fn send_job(&mut self, mut job: OpenJob) -> Result<(), RestoreError> {
        let mut workers = self.workers.take().expect("a job only with workers");
        let result = (|| {
            if self.writer.is_some() {
                job.destination = Some(self.worker_destination(job.target)?);
            }
            workers.send(job, |opened| self.opened(opened))
        })();
        self.workers = Some(workers);
        result
    }

    /// What the workers finished (all of it, waiting, with `all`).
    fn collect_opened(&mut self, all: bool) -> Result<(), RestoreError> {
        let Some(mut workers) = self.workers.take() else {
            return Ok(());
        };
        let result = workers.collect(all, |opened| self.opened(opened));
        self.workers = Some(workers);
        result
    }

    /// A record back from the workers: counted when placed, reported when
    /// it did not open (nothing of it written); a failed write stops.
    fn opened(&mut self, opened: Opened) -> Result<(), RestoreError> {
        match opened {
            Opened::Placed {
                target,
                record,
                crc_checked,
            } => {
                if crc_checked {
                    self.count(record.1);
                }
                self.out.records.push((target, record));
            }
            Opened::Checksum {
                position,
                header,
                computed,
            } => self.checksum_problem(position, &header, computed),
            Opened::Refused {
                position,
                header,
                why,
            } => self.not_opened(position, &header, why),
            Opened::WriteFailed(why) => return Err(write_error(&self.name, why)),
        }
        Ok(())
    }

    /// Report a record that does not open or decompress (nothing of it
    /// is written).
    fn not_opened(&mut self, position: u64, header: &RecordHeader, why: DecompressError) {
        let path = self.catalog.path(header.file_id);
        let file_offset = header.file_offset;
        let why = RecordProblem::Decompress {
            path,
            file_offset,
            why,
        };
        self.problem(position, why);
    }

    /// The restored file `target` opened for the workers' writes (kept
    /// while its records come: records of one file are contiguous).
    fn worker_destination(&mut self, target: u32) -> Result<(Arc<File>, Arc<str>), RestoreError> {
        if let Some((t, file, name)) = &self.worker_file {
            if *t == target {
                return Ok((file.clone(), name.clone()));
            }
        }
        let (file, name) = self.open_target(target)?;
        let (file, name): (Arc<File>, Arc<str>) = (Arc::new(file), name.into());
        self.worker_file = Some((target, file.clone(), name.clone()));
        Ok((file, name))
    }

    /// The restored file a record goes to, once it passed every check:
    /// None (the reason reported) for a record not of this set's data, one
    /// refused by `record_refusal`, one with a bad CRC, one of a file not
    /// restored, or one beyond the end of an image restore's target. With
    /// `defer_crc`, a record that passed every other check and goes to a
    /// file comes back with its CRC32C not yet checked, nor counted as
    /// read (`true`): whoever takes it checks it (`checksum`, or a worker
    /// job with `crc`) before a byte of it is written.
    fn check(
        &mut self,
        position: u64,
        header: &RecordHeader,
        payload: &[u8],
        defer_crc: bool,
    ) -> Option<(u32, bool)> {
        if header.set_id != self.label.set_id || header.kind != RecordKind::Data {
            self.problem(position, RecordProblem::NotThisSet);
            return None;
        }
        if let Some(why) = record_refusal(header, self.label, self.catalog, &self.ranges) {
            self.problem(position, RecordProblem::Refused(why));
            return None;
        }
        let target = self
            .targets
            .map_or(header.file_id, |t| t[header.file_id as usize]);
        let end = header.file_offset + u64::from(header.payload_bytes);
        let beyond = self.target_bytes.filter(|&bytes| end > bytes);
        // A restore of the catalog read entry by entry has no targets:
        // what the tree did not prepare (refused, incomplete) is not written.
        let taken = target != NO_TARGET
            && match self.destination {
                Destination::Tree(staged) => staged.takes(target as usize),
                _ => true,
            };
        // Only a record that goes somewhere: the others are reported as
        // before, their CRC first.
        let defer_crc = defer_crc && taken && beyond.is_none();
        if !defer_crc && !self.checksum(position, header, payload) {
            return None;
        }
        if !taken {
            return None;
        }
        if let Some(target_bytes) = beyond {
            let why = RecordProblem::BeyondTarget {
                path: self.catalog.path(header.file_id),
                file_offset: header.file_offset,
                payload_bytes: header.payload_bytes,
                target_bytes,
            };
            self.problem(position, why);
            return None;
        }
        Some((target, defer_crc))
    }

    /// Whether a record's CRC32C matches (a sealed one's tag is checked
    /// instead, when its data key is held): counted as read when it does,
    /// reported when not.
    fn checksum(&mut self, position: u64, header: &RecordHeader, payload: &[u8]) -> bool {
        let crc = if self.crc_checked || (self.tag_checks && header.transform.seal.is_sealed()) {
            // Checked by the stream already; or its tag is checked
            // instead, before any byte is written.
            header.payload_crc
        } else {
            crate::format::crc32c(payload)
        };
        if crc != header.payload_crc {
            self.checksum_problem(position, header, crc);
            return false;
        }
        self.count(header.payload_bytes);
        true
    }

    /// A record read and checked, of `payload_bytes`.
    fn count(&mut self, payload_bytes: u32) {
        self.out.records_read += 1;
        self.out.payload_bytes += u64::from(payload_bytes);
    }

    /// Report a record whose CRC32C is `computed`, not the header's.
    fn checksum_problem(&mut self, position: u64, header: &RecordHeader, computed: u32) {
        let why = RecordProblem::Checksum {
            path: self.catalog.path(header.file_id),
            file_offset: header.file_offset,
            stored: header.payload_crc,
            computed,
        };
        self.problem(position, why);
    }

    /// Report what is wrong with the record at `offset` of the device.
    fn problem(&mut self, offset: u64, why: RecordProblem) {
        self.out.errors.push(Problem::Record {
            device: self.name.clone(),
            offset,
            why,
        });
    }

    /// The restored file `target` opened for writing, and its name.
    fn open_target(&self, target: u32) -> Result<(File, String), RestoreError> {
        let restored_path = shown_name(&self.restored.path(target));
        let file = match self.destination {
            Destination::Tree(staged) => {
                staged
                    .open_for_write(target as usize)
                    .map_err(|error| RestoreError::Open {
                        path: restored_path.clone(),
                        error,
                    })?
            }
            Destination::Device(device) => {
                device.try_clone().map_err(|error| RestoreError::Target {
                    op: TargetOp::Clone,
                    error,
                })?
            }
            Destination::Nowhere => unreachable!("no writer without a destination"),
        };
        Ok((file, restored_path))
    }

    /// Queue the write of a checked record's payload to its restored file
    /// (opened when the previous record went elsewhere).
    fn write(
        &mut self,
        target: u32,
        header: &RecordHeader,
        source: Payload<'_>,
    ) -> Result<(), RestoreError> {
        let w = self.writer.as_mut().expect("a writer with a destination");
        if self.open.map(|(id, _)| id) != Some(target) {
            if w.open_files() >= OPEN_FILES_MAX {
                self.finish_writes(false)?;
            }
            let (file, restored_path) = self.open_target(target)?;
            let w = self.writer.as_mut().expect("a writer with a destination");
            self.open = Some((target, w.add_file(file, restored_path)));
        }
        let w = self.writer.as_mut().expect("a writer with a destination");
        let (_, handle) = self.open.expect("opened above");
        // A window is kept by the writer until the write is reaped (on
        // Reclaim at the latest); a mapped payload is written now.
        match source {
            Payload::Window { window, range } => w.write(handle, window, range, header.file_offset),
            Payload::Mapped(bytes) => w.write_mapped(handle, bytes, header.file_offset),
        }
        .map_err(|why| write_error(&self.name, why))
    }
}

/// A failed queued write of `device`'s reader (the writer's message names
/// the file and offset).
fn write_error(device: &str, why: String) -> RestoreError {
    RestoreError::Write {
        device: device.to_string(),
        why,
    }
}

/// The size of an image restore's target: a block device's capacity, or
/// a file's length.
fn target_size_bytes(target: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    let meta = target.metadata()?;
    if meta.file_type().is_block_device() {
        crate::device::block::size_bytes(target)
    } else {
        Ok(meta.len())
    }
}

//! `pbio verify` and `pbio restore` of one set with its catalog read
//! entry by entry (issue 23). The catalog is spilled to a temporary file as it is read from the
//! first device (`media::spill_catalog_bytes`), checked by
//! `CatalogStream` (what `Catalog::decode` checks), and then read in file
//! id order, merged with its segments (which a backup writes sorted by
//! file) and with the records read (sorted by file in `gather`): what is
//! held per file is the stream's 17 bytes and one bit (complete or not),
//! per record read its digest entry, per segment of a device its range.
//!
//! A restore (`restore_streamed`, the whole set into a directory: no
//! `--only`, `--strip-components` or policy for existing names) prepares
//! the tree in one pass over the files (`tree::prepare_entries`), the
//! readers write what the tree takes, and `tree::finish_entries` reads the
//! files again phase by phase, each phase decoding only the entries of its
//! kinds (`CatalogStream::files_where`): per file it holds the bits here, the tree's
//! flags (`Staged`: refused, done, a small file's directory) and, only
//! for the files that take one, a temporary name; per failed file why.
//!
//! The same checks and the same report as `run_chain(Action::Verify)`
//! (or `Action::Restore`) for what it takes: one set of random-access devices, every label
//! Complete, not encrypted, no parity, not an increment, no device failed
//! during the backup, its segments sorted by file. Anything else is handed
//! back (`Streamed::Other`) for `open_devices`.

use std::collections::HashMap;
use std::path::Path;

use crate::device::{Access, Device};
use crate::format::catalog::{CatalogStream, Spilled};
use crate::format::{CatalogSegment, DeviceState, FormatError, Label, LabelState, MacKey};
use crate::media::{self, MediaError};

use super::finish::gather;
use super::open::{attach, check_label_mac, check_members, labels_agree, set_mac_key};
use super::problem::Problem;
use super::read::{read_device, Destination, DeviceRanges, Reader};
use super::select::{missing_ranges, Ranges};
use super::tree::{self, Verdict};
use super::{Missing, OpenSet, Report, RestoreError};

/// What `verify_streamed` did.
pub enum Streamed {
    /// Verified or restored: the set (its catalog without files and segments, for the
    /// summary) and the report, with every device's catalog checked.
    Done(Box<(OpenSet, Report)>),
    /// Not a set this reads: the devices back, untouched but for their
    /// labels read.
    Other(Vec<Box<dyn Device>>),
}

/// Verify the set on `devices` reading its catalog entry by entry, or
/// hand them back (`Streamed::Other`) when they are not one set this
/// reads (module doc).
pub fn verify_streamed(
    devices: Vec<Box<dyn Device>>,
    key: Option<&MacKey>,
) -> Result<Streamed, RestoreError> {
    streamed(devices, key, None)
}

/// Restore the whole set on `devices` under `to` (a directory), reading
/// its catalog entry by entry, or hand them back (`Streamed::Other`) when
/// they are not one set this reads (module doc). A file that fails is
/// removed, or with `keep_partial` kept as `NAME.pbio-partial`.
pub fn restore_streamed(
    devices: Vec<Box<dyn Device>>,
    key: Option<&MacKey>,
    to: &Path,
    keep_partial: bool,
) -> Result<Streamed, RestoreError> {
    streamed(devices, key, Some((to, keep_partial)))
}

/// `verify_streamed`, or with `restore` (the directory, keep partial
/// files) `restore_streamed`.
fn streamed(
    devices: Vec<Box<dyn Device>>,
    key: Option<&MacKey>,
    restore: Option<(&Path, bool)>,
) -> Result<Streamed, RestoreError> {
    let started = std::time::Instant::now();
    let Some((labels, key)) = labels_of(&devices, key)? else {
        return Ok(Streamed::Other(devices));
    };
    let mut devices: Vec<(Box<dyn Device>, Label)> = devices.into_iter().zip(labels).collect();
    let (from, spilled, notes) = spill_first(&devices)?;
    let source = devices[from].0.path().display().to_string();
    let catalog_offset = devices[from].1.catalog_offset;
    let format_error = |error| MediaError::Format {
        device: source.clone(),
        what: "catalog",
        offset: catalog_offset,
        error,
    };
    let stream = CatalogStream::open_spilled(&spilled).map_err(format_error)?;
    let head = stream.head();
    if head.set_id != devices[from].1.set_id {
        return Err(RestoreError::ForeignCatalog { device: source });
    }
    let mac_matches = key
        .as_ref()
        .map(|key| crate::format::hash_eq(&stream.mac_for(key), &head.mac));
    check_members(&mut devices, head, &source, mac_matches)?;
    let failed = |l: &Label| head.devices[l.device_index as usize].state == DeviceState::Failed;
    let sorted = segments_sorted(&stream).map_err(format_error)?;
    if head.parity.is_some() || !head.ancestors.is_empty() || !sorted {
        return Ok(Streamed::Other(
            devices.into_iter().map(|(d, _)| d).collect(),
        ));
    }
    if devices.iter().any(|(_, l)| failed(l)) {
        return Ok(Streamed::Other(
            devices.into_iter().map(|(d, _)| d).collect(),
        ));
    }
    let mut report = Report::default();
    let present: Vec<u32> = devices.iter().map(|(_, l)| l.device_index).collect();
    let incomplete = coverage(&stream, &present, &mut report).map_err(format_error)?;
    let staged = match restore {
        Some((to, keep_partial)) => {
            let staged = prepare(to, &stream, &incomplete, keep_partial, &mut report);
            Some(staged?.map_err(format_error)?)
        }
        None => None,
    };
    let destination = staged
        .as_ref()
        .map_or(Destination::Nowhere, Destination::Tree);
    let results = read_all(&devices, &stream, destination);
    let (records, broken) = gather(results, &mut report)?;
    let mut verdicts = Verdicts {
        stream: &stream,
        devices: &devices,
        broken: &broken,
        incomplete: &incomplete,
    };
    let refused = |i: usize| staged.as_ref().is_some_and(|s| s.refused(i));
    let (complete, failed) = verdicts
        .run(&records, &mut report, &refused)
        .map_err(format_error)?;
    report.files_restored = complete;
    if let (Some(staged), Some((_, keep_partial))) = (staged, restore) {
        let selected = |i: usize| !incomplete.get(i);
        let verdict = |i: usize| {
            failed
                .get(&(i as u32))
                .map_or(Verdict::Good, |why| Verdict::Failed(why.clone()))
        };
        let finished = tree::finish_entries(staged, &stream, &selected, &verdict, keep_partial);
        report
            .errors
            .extend(finished.errors.into_iter().map(Problem::Tree));
        report.warnings.extend(finished.warnings);
        report.files_restored = finished.done.iter().filter(|&&d| d).count();
    }
    // Every device's own catalog must read back and agree, not only the one used.
    for (dev, label) in &devices {
        let read = attach(dev.as_ref()).and_then(|()| media::catalog_digest(dev.as_ref(), label));
        dev.detach();
        match read {
            Ok(digest) if digest == label.catalog_digest => {}
            Ok(_) => report.errors.push(Problem::CatalogDiffers {
                device: dev.path().display().to_string(),
            }),
            Err(e) => report.errors.push(Problem::Catalog(e)),
        }
    }
    report.elapsed = started.elapsed();
    let mut catalog = head.clone();
    catalog.files = Vec::new();
    catalog.segments = Vec::new();
    let keyed = catalog.mac != [0; 32] || devices.iter().any(|(_, l)| l.mac != [0; 32]);
    let set = OpenSet {
        devices,
        catalog,
        unreadable: notes,
        keyed,
        unread: Vec::new(),
        mac_key: None,
    };
    Ok(Streamed::Done(Box::new((set, report))))
}

/// A set's labels (in the devices' order) and its MAC key.
type Labels = (Vec<Label>, Option<MacKey>);

/// The devices' labels, checked as `open_devices` checks them (MACs with
/// the key, agreement), and the set's MAC key; None when they are not
/// one set this reads (a tape, a label that does not read or is not
/// Complete, an encrypted set, several sets).
fn labels_of(
    devices: &[Box<dyn Device>],
    key: Option<&MacKey>,
) -> Result<Option<Labels>, RestoreError> {
    if devices.is_empty() || devices.iter().any(|d| d.access() != Access::Random) {
        return Ok(None);
    }
    let mut labels: Vec<Label> = Vec::with_capacity(devices.len());
    for dev in devices {
        let read = attach(dev.as_ref()).and_then(|()| media::read_label(dev.as_ref()));
        dev.detach();
        let Ok(label) = read else {
            return Ok(None);
        };
        let other_set = labels.first().is_some_and(|l| l.set_id != label.set_id);
        if label.state != LabelState::Complete || label.seal.is_sealed() || other_set {
            return Ok(None);
        }
        labels.push(label);
    }
    let key = set_mac_key(devices[0].as_ref(), &labels[0], key)?;
    for (i, (dev, label)) in devices.iter().zip(&labels).enumerate() {
        if let Some(key) = &key {
            check_label_mac(dev.as_ref(), label, key)?;
        }
        for (other, other_label) in devices[..i].iter().zip(&labels) {
            labels_agree((other.as_ref(), other_label), (dev.as_ref(), label))?;
        }
    }
    Ok(Some((labels, key)))
}

/// The set's catalog from the first device whose catalog reads back and
/// hashes to its label's digest (every label gives the same one:
/// `labels_agree`), spilled; the devices whose catalog did not hash to it.
fn spill_first(
    devices: &[(Box<dyn Device>, Label)],
) -> Result<(usize, Spilled, Vec<RestoreError>), RestoreError> {
    let mut notes = Vec::new();
    let mut last_error = None;
    for (from, (dev, label)) in devices.iter().enumerate() {
        let read =
            attach(dev.as_ref()).and_then(|()| media::spill_catalog_bytes(dev.as_ref(), label));
        dev.detach();
        match read {
            Ok((spilled, digest)) if digest == label.catalog_digest => {
                return Ok((from, spilled, notes))
            }
            Ok(_) => {
                let refused = || RestoreError::CatalogDigest {
                    device: dev.path().display().to_string(),
                };
                notes.push(refused());
                last_error = Some(refused());
            }
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error.expect("at least one device"))
}

/// Whether the segment table is sorted by file (as a backup writes it),
/// so that it can be merged with the files in id order.
fn segments_sorted(stream: &CatalogStream) -> Result<bool, FormatError> {
    let mut last = 0;
    for s in stream.segments() {
        let file = s?.file_id;
        if file < last {
            return Ok(false);
        }
        last = file;
    }
    Ok(true)
}

/// The segments of one file after another, from a table sorted by file.
struct SegmentsOf<'a> {
    segments: std::iter::Peekable<crate::format::catalog::Entries<'a, CatalogSegment>>,
    of_file: Vec<CatalogSegment>,
}

impl<'a> SegmentsOf<'a> {
    fn new(stream: &CatalogStream<'a>) -> SegmentsOf<'a> {
        SegmentsOf {
            segments: stream.segments().peekable(),
            of_file: Vec::new(),
        }
    }

    /// The segments of file `id` (the files asked for in increasing id
    /// order; those of files not asked for are passed over).
    fn of(&mut self, id: u32) -> Result<&[CatalogSegment], FormatError> {
        self.of_file.clear();
        loop {
            match self.segments.peek() {
                Some(Ok(s)) if s.file_id < id => {}
                Some(Ok(s)) if s.file_id == id => self.of_file.push(*s),
                Some(Ok(_)) | None => break,
                Some(Err(_)) => {
                    let Some(Err(e)) = self.segments.next() else {
                        unreachable!("peeked an error");
                    };
                    return Err(e);
                }
            }
            self.segments.next();
        }
        Ok(&self.of_file)
    }
}

/// The select phase of `select` for a verify of one set: each file with
/// data whose segments on the `present` devices do not cover it is in
/// `report.missing` (sorted by path) and incomplete; a hard link is
/// incomplete with its target, and missing with its target's ranges (as
/// `select` reports it). One bit a file.
fn coverage(
    stream: &CatalogStream,
    present: &[u32],
    report: &mut Report,
) -> Result<Bits, FormatError> {
    let mut incomplete = Bits::new(stream.file_count());
    // Incomplete file -> its entry in `report.missing`.
    let mut missing_at: HashMap<u32, usize> = HashMap::new();
    let mut segments = SegmentsOf::new(stream);
    let set_id = stream.head().set_id;
    for id in 0..stream.file_count() {
        let of_file = segments.of(id as u32)?;
        let Some(summary) = stream.summary(id) else {
            break;
        };
        if !summary.kind.has_data() || summary.size_bytes == 0 {
            continue;
        }
        let ranges = missing_of(summary.size_bytes, of_file, present);
        if !ranges.is_empty() {
            incomplete.set(id);
            let path = stream.file(id).expect("a file of the stream")?.path;
            missing_at.insert(id as u32, report.missing.len());
            report.missing.push(Missing {
                path,
                set_id,
                set_given: true,
                ranges,
            });
        }
    }
    let hard_links = stream.files_where(|_, s| s.kind == crate::format::FileKind::HardLink);
    for (id, f) in hard_links {
        let f = f?;
        if incomplete.get(f.hardlink_to as usize) {
            incomplete.set(id);
            if let Some(&at) = missing_at.get(&f.hardlink_to) {
                let missing = Missing {
                    path: f.path,
                    ..report.missing[at].clone()
                };
                report.missing.push(missing);
            }
        }
    }
    report.missing.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(incomplete)
}

/// The tree under `to` prepared for every complete file (`tree::prepare`),
/// the regular files whose data is one whole record (or none), without
/// xattrs or flags, made as small files (`small::candidates`; none with
/// `keep_partial`); the entries refused reported. The outer error: the
/// directory does not open, or the catalog no longer reads.
fn prepare(
    to: &Path,
    stream: &CatalogStream,
    incomplete: &Bits,
    keep_partial: bool,
    report: &mut Report,
) -> Result<Result<tree::Staged, FormatError>, tree::TreeError> {
    let root = super::at::Root::open(to).map_err(|error| tree::TreeError::Io {
        op: "open restore directory",
        path: crate::units::shown_name(std::os::unix::ffi::OsStrExt::as_bytes(to.as_os_str())),
        error,
    })?;
    let mut segments = SegmentsOf::new(stream);
    let mut error = None;
    let mut small = |i: usize, f: &crate::format::CatalogFile| {
        let whole = match segments.of(i as u32) {
            Ok([s]) => s.offset == 0 && s.length == f.size_bytes && s.records == 1,
            Ok(_) => false,
            Err(e) => {
                error = Some(e);
                false
            }
        };
        f.kind == crate::format::FileKind::Regular
            && f.xattrs.is_empty()
            && f.stat.flags == 0
            && (f.size_bytes == 0 || whole)
    };
    let small: Option<tree::SmallCandidate<'_>> = (!keep_partial).then_some(&mut small);
    let mut staged = tree::prepare_entries(root, stream, &|i| !incomplete.get(i), small)?;
    if let Some(e) = error {
        return Ok(Err(e));
    }
    report
        .errors
        .extend(staged.take_errors().into_iter().map(Problem::Tree));
    Ok(Ok(staged))
}

/// `select::coverage` of one file: what its segments on `present`
/// devices leave out.
fn missing_of(size_bytes: u64, segments: &[CatalogSegment], present: &[u32]) -> Ranges {
    let mut covered = Vec::new();
    let mut absent = Vec::new();
    for s in segments {
        if present.contains(&s.device) {
            covered.push((s.offset, s.offset + s.length));
        } else {
            absent.push((s.offset, s.offset + s.length, s.device));
        }
    }
    missing_ranges(size_bytes, &mut covered, &mut absent)
}

/// Every device read on its own thread, as `read_devices` reads them for
/// a verify (no destination, each record's file its own).
fn read_all(
    devices: &[(Box<dyn Device>, Label)],
    stream: &CatalogStream,
    destination: Destination<'_>,
) -> Vec<(Reader, Result<super::read::DeviceRead, RestoreError>)> {
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .map(|(dev, label)| {
                scope.spawn(move || {
                    let dev = dev.as_ref();
                    let ranges = device_ranges(stream, label.device_index).map_err(|error| {
                        MediaError::Format {
                            device: dev.path().display().to_string(),
                            what: "catalog",
                            offset: label.catalog_offset,
                            error,
                        }
                    })?;
                    attach(dev)?;
                    let files = (stream as &dyn super::read::Files, ranges);
                    let read = read_device(dev, label, files, None, stream, destination);
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
        .map(|(dev, label)| (0, label.device_index, dev.path().display().to_string()))
        .zip(results)
        .collect()
}

/// The ranges of `device` (`DeviceRanges`) from the segment table read
/// through once.
fn device_ranges(stream: &CatalogStream, device: u32) -> Result<DeviceRanges, FormatError> {
    let mut error = None;
    let segments = stream.segments().map_while(|s| match s {
        Ok(s) => Some(s),
        Err(e) => {
            error = Some(e);
            None
        }
    });
    let ranges = DeviceRanges::of(segments, device);
    match error {
        Some(e) => Err(e),
        None => Ok(ranges),
    }
}

/// The verdict phase of `finish::verdicts` for a verify of one set.
struct Verdicts<'a, 's> {
    stream: &'a CatalogStream<'s>,
    devices: &'a [(Box<dyn Device>, Label)],
    broken: &'a [Reader],
    incomplete: &'a Bits,
}

impl Verdicts<'_, '_> {
    /// Every complete file with data but those `skip` says checked
    /// against its digest (the failures in `report.errors`); the number of
    /// complete entries (what `run_sets` counts as verified) and why each
    /// file that failed did.
    fn run(
        &mut self,
        records: &super::finish::Records,
        report: &mut Report,
        skip: &dyn Fn(usize) -> bool,
    ) -> Result<(usize, HashMap<u32, String>), FormatError> {
        let taken = |id: usize| !self.incomplete.get(id) && !skip(id);
        let complete = (0..self.stream.file_count())
            .filter(|&id| taken(id))
            .count();
        let mut failed = HashMap::new();
        let mut segments = SegmentsOf::new(self.stream);
        // Only the files with data are decoded.
        let with_data = self
            .stream
            .files_where(|id, s| s.kind.has_data() && taken(id));
        for (id, f) in with_data {
            let f = f?;
            let of_file = segments.of(id as u32)?;
            if crate::format::file_digest(&mut records.of(id)) == f.digest {
                continue;
            }
            let holds = |device: u32| of_file.iter().any(|g| g.device == device && g.records > 0);
            let on_broken: Vec<String> = self
                .broken
                .iter()
                .filter(|(_, device, _)| holds(*device))
                .map(|(_, _, path)| path.clone())
                .collect();
            let path = f.path;
            let problem = if on_broken.is_empty() {
                let devices = self
                    .devices
                    .iter()
                    .filter(|(_, label)| holds(label.device_index))
                    .map(|(dev, _)| dev.path().display().to_string())
                    .collect();
                Problem::Digest { path, devices }
            } else {
                Problem::OnUnread {
                    path,
                    devices: on_broken,
                }
            };
            failed.insert(id as u32, problem.to_string());
            report.errors.push(problem);
        }
        Ok((complete, failed))
    }
}

/// One bit a file.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

//! Several sets on one tape (`backup --append`, docs/FORMAT.md "Tape
//! layout", rule 11): set k begins after the 2k filemarks of the k sets
//! before it (each set is two tape files: label and data, then catalog).
//! A set is read and written through `SetOnTape`, a view of the tape in
//! which "rewind" goes to the set's label and positions count from it, so
//! every reader and writer of a single-set tape works unchanged.

use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{read_catalog, read_label, MediaError};
use crate::device::{
    Access, BlockDone, BlockIo, Device, DeviceNote, ErrorClass, Kind, TapeOp, TapeStatus,
};
use crate::format::seal::SealError;
use crate::format::{Catalog, FormatError, Label, SetId};

/// The sets on a tape are walked at most this far (a limit on a hostile
/// tape's filemarks; a real cartridge holds far fewer sets).
pub const SETS_PER_TAPE_MAX: u32 = 10_000;

/// A view of a tape that begins at the label of one of its sets:
/// `Rewind` spaces over the `files_before` filemarks in front of it, and
/// the head's logical object number counts from that label (so the label
/// is object 0, as on a tape holding one set). `D` is the tape itself
/// (owned, or borrowed for a walk).
pub struct SetOnTape<D> {
    inner: D,
    files_before: u32,
    /// Logical object number of the set's label on the tape (-1: not
    /// known until the first rewind).
    base: AtomicI64,
    /// Bytes recorded on the tape before the set (its capacity is the
    /// tape's less these).
    used_bytes: u64,
}

impl<D> SetOnTape<D>
where
    D: std::ops::Deref + Send + Sync,
    D::Target: Device,
{
    /// The set that begins after `files_before` filemarks of `inner`.
    pub fn new(inner: D, files_before: u32) -> SetOnTape<D> {
        SetOnTape {
            inner,
            files_before,
            base: AtomicI64::new(if files_before == 0 { 0 } else { -1 }),
            used_bytes: 0,
        }
    }

    /// The capacity left to the set: the tape's less `used_bytes`.
    pub fn with_used_bytes(mut self, used_bytes: u64) -> SetOnTape<D> {
        self.used_bytes = used_bytes;
        self
    }

    pub fn files_before(&self) -> u32 {
        self.files_before
    }

    fn base(&self) -> Option<i64> {
        Some(self.base.load(Ordering::SeqCst)).filter(|&b| b >= 0)
    }
}

impl<D> Device for SetOnTape<D>
where
    D: std::ops::Deref + Send + Sync,
    D::Target: Device,
{
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn kind(&self) -> Kind {
        self.inner.kind()
    }
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }
    fn capacity_bytes(&self) -> u64 {
        self.inner.capacity_bytes().saturating_sub(self.used_bytes)
    }
    fn block_bytes(&self) -> u32 {
        self.inner.block_bytes()
    }
    fn direct_io(&self) -> bool {
        self.inner.direct_io()
    }
    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn classify(&self, errno: i32) -> ErrorClass {
        self.inner.classify(errno)
    }
    fn access(&self) -> Access {
        self.inner.access()
    }
    fn block_bytes_max(&self) -> Option<u32> {
        self.inner.block_bytes_max()
    }
    fn before_block_write(&self, bytes: u32) -> BlockIo {
        self.inner.before_block_write(bytes)
    }
    fn after_block_write(&self, result: i32) -> BlockDone {
        self.inner.after_block_write(result)
    }
    fn before_block_read(&self, buffer_bytes: u32) -> BlockIo {
        self.inner.before_block_read(buffer_bytes)
    }
    fn after_block_read(&self, result: i32) -> BlockDone {
        self.inner.after_block_read(result)
    }
    /// `Rewind` goes to the set's label: MTREW, then MTFSF over the sets
    /// before it (the head's object number there is the set's origin).
    /// Where the drive tells its position, a head that did not pass
    /// `files_before` objects did not space over the filemarks (the block
    /// read next would be the first set's again): an error, not a set.
    fn tape_op(&self, op: TapeOp) -> std::io::Result<()> {
        self.inner.tape_op(op)?;
        if op == TapeOp::Rewind && self.files_before > 0 {
            self.inner
                .tape_op(TapeOp::ForwardFiles(self.files_before))?;
            let base = self.inner.head_object().unwrap_or(-1);
            if base >= 0 && base < i64::from(self.files_before) {
                self.base.store(-1, Ordering::SeqCst);
                return Err(std::io::Error::other(format!(
                    "spacing forward over {} filemarks from the beginning left the head at object {base}: the drive did not move",
                    self.files_before
                )));
            }
            self.base.store(base, Ordering::SeqCst);
        }
        Ok(())
    }
    fn tape_status(&self) -> std::io::Result<TapeStatus> {
        let mut status = self.inner.tape_status()?;
        status.file_number = (status.file_number - i64::from(self.files_before)).max(-1);
        match self.base() {
            Some(base) if status.logical_object >= base => {
                status.logical_object -= base;
                status.at_bot = status.logical_object == 0;
            }
            _ => {
                status.logical_object = -1;
                status.at_bot = false;
            }
        }
        Ok(status)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn records_in_flight(&self, record_bytes: u64, floor: usize, max: usize) -> usize {
        self.inner.records_in_flight(record_bytes, floor, max)
    }
    fn head_object(&self) -> Option<i64> {
        let head = self.inner.head_object()?;
        let base = self.base()?;
        (head >= base).then_some(head - base)
    }
    fn notes(&self) -> &[DeviceNote] {
        self.inner.notes()
    }
    fn attach(&self) -> std::io::Result<()> {
        self.inner.attach()
    }
    fn detach(&self) {
        self.inner.detach()
    }
}

/// One set found on a tape.
#[derive(Clone, Debug)]
pub struct TapeSet {
    /// Filemarks in front of its label (`SetOnTape::new`'s argument).
    pub files_before: u32,
    pub label: Label,
    /// How its tape file 1 ends: `Complete` (End record and filemark),
    /// or why it is not.
    pub end: SetEnd,
}

/// How a set's tape file 1 ends on a tape.
#[derive(Clone, Debug)]
pub enum SetEnd {
    /// With the set's catalog, an End record and a filemark.
    Catalog(Box<Catalog>),
    /// A continued volume of a set that spans cartridges: an End record
    /// and a filemark, the catalog being on other cartridges.
    Continued,
    /// An encrypted set closed like `Catalog` (its catalog records, End
    /// record and filemark read), whose catalog this process cannot open
    /// (no key given, or another key): why.
    Sealed(String),
    /// Not closed (an interrupted run, a damaged catalog): why.
    Incomplete(String),
}

impl TapeSet {
    pub fn complete(&self) -> bool {
        !matches!(self.end, SetEnd::Incomplete(_))
    }
    pub fn catalog(&self) -> Option<&Catalog> {
        match &self.end {
            SetEnd::Catalog(c) => Some(c),
            _ => None,
        }
    }
    /// Tape files in front of the set after this one.
    pub fn files_after(&self) -> u32 {
        self.files_before + 2
    }
}

/// The sets on a tape, in tape order, each checked to its closing
/// filemark (its catalog read, or its End record found). The walk stops
/// at the end of recorded data, at what is not a pbio label, and after a
/// set that is not complete: nothing after an unclosed set is trusted (an
/// append never writes there). A tape whose first block is not a label is
/// an error (what `read_label` says). What stopped the walk after the
/// sets, when it was not the end of recorded data, is
/// [`sets_to_append_after`]'s concern: readers take the sets.
pub fn sets_on_tape(dev: &dyn Device) -> Result<Vec<TapeSet>, MediaError> {
    walk_sets(dev).map(|(sets, _)| sets)
}

/// The sets on a tape, for an append after the last one: as
/// [`sets_on_tape`], but data after the sets that is neither the end of
/// recorded data nor a pbio label (another program's, or a drive that
/// keeps old blocks past the last filemark, as tgt's emulated drives do)
/// is an error: an append would write over it.
pub fn sets_to_append_after(dev: &dyn Device) -> Result<Vec<TapeSet>, MediaError> {
    match walk_sets(dev)? {
        (_, Some(after)) => Err(after),
        (sets, None) => Ok(sets),
    }
}

/// The walk of both: the sets, and what was found after them where it
/// was not the end of recorded data.
fn walk_sets(dev: &dyn Device) -> Result<(Vec<TapeSet>, Option<MediaError>), MediaError> {
    assert_eq!(dev.access(), Access::Sequential);
    let mut sets: Vec<TapeSet> = Vec::new();
    let mut files_before = 0u32;
    let mut after = None;
    while (sets.len() as u32) < SETS_PER_TAPE_MAX {
        let view = SetOnTape::new(dev, files_before);
        let label = match read_label(&view) {
            Ok(label) => label,
            Err(e) if files_before == 0 => return Err(e),
            // The end of recorded data after the last set (st reads 0, or
            // reports the blank check as an error).
            Err(MediaError::Format {
                error: FormatError::Short { have: 0, .. },
                ..
            })
            | Err(MediaError::Io { .. }) => break,
            Err(e) => {
                after = Some(e);
                break;
            }
        };
        // A set is written once on a tape: its label found again further
        // on is the first one read again (a drive that did not space over
        // the filemarks), never a second set to count.
        if let Some(first) = sets.iter().find(|s| s.label.set_id == label.set_id) {
            after = Some(MediaError::Invalid {
                device: super::name(dev),
                why: format!(
                    "the label of set {} (after {} filemarks) is found again after {files_before}: the tape's position is not trusted past its first copy",
                    label.set_id, first.files_before
                ),
            });
            break;
        }
        let end = match read_catalog(&view, &label) {
            Ok(read) => SetEnd::Catalog(Box::new(read.catalog)),
            Err(MediaError::Continued { .. }) => SetEnd::Continued,
            // The framing was read to the filemark; only the key is missing.
            Err(
                e @ MediaError::Format {
                    error: FormatError::Sealed(SealError::NoKey | SealError::WrongKey),
                    ..
                },
            ) => SetEnd::Sealed(e.to_string()),
            Err(e) => SetEnd::Incomplete(e.to_string()),
        };
        let set = TapeSet {
            files_before,
            label,
            end,
        };
        let complete = set.complete();
        files_before = set.files_after();
        sets.push(set);
        if !complete {
            break;
        }
    }
    let _ = dev.tape_op(TapeOp::Rewind);
    Ok((sets, after))
}

/// What `choose` found wrong with `--set`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChooseError {
    #[error("no set whose id starts with '{prefix}' (sets here: {})", .sets.join(", "))]
    NoMatch { prefix: String, sets: Vec<String> },
    #[error("--set {prefix} matches several sets: {}; give more digits", .sets.join(", "))]
    Ambiguous { prefix: String, sets: Vec<String> },
    #[error("several sets here: {}; choose one with --set ID (a unique prefix is enough)", .sets.join(", "))]
    Several { sets: Vec<String> },
}

/// The set `prefix` (hex digits, any case) names among `ids`: the one
/// whose id starts with it; without a prefix, the only one.
pub fn choose(ids: &[SetId], prefix: Option<&str>) -> Result<SetId, ChooseError> {
    let mut distinct: Vec<SetId> = Vec::new();
    for id in ids {
        if !distinct.contains(id) {
            distinct.push(*id);
        }
    }
    let names = |ids: &[SetId]| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let Some(prefix) = prefix else {
        return match distinct.as_slice() {
            [one] => Ok(*one),
            _ => Err(ChooseError::Several {
                sets: names(&distinct),
            }),
        };
    };
    let lower = prefix.trim().to_ascii_lowercase();
    let matching: Vec<SetId> = distinct
        .iter()
        .copied()
        .filter(|id| !lower.is_empty() && id.to_string().starts_with(&lower))
        .collect();
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(ChooseError::NoMatch {
            prefix: prefix.to_string(),
            sets: names(&distinct),
        }),
        _ => Err(ChooseError::Ambiguous {
            prefix: prefix.to_string(),
            sets: names(&matching),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte0: u8, byte1: u8) -> SetId {
        let mut id = SetId::default();
        id.0[0] = byte0;
        id.0[1] = byte1;
        id
    }

    #[test]
    fn a_unique_prefix_chooses_a_set() {
        let ids = [id(0xab, 0x01), id(0xab, 0x02), id(0xcd, 0)];
        assert_eq!(choose(&ids, Some("cd")), Ok(ids[2]));
        assert_eq!(choose(&ids, Some("AB01")), Ok(ids[0]));
        match choose(&ids, Some("ab")) {
            Err(ChooseError::Ambiguous { sets, .. }) => assert_eq!(sets.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            choose(&ids, Some("ef")),
            Err(ChooseError::NoMatch { .. })
        ));
        assert!(matches!(
            choose(&ids, Some("")),
            Err(ChooseError::NoMatch { .. })
        ));
        assert!(matches!(
            choose(&ids, None),
            Err(ChooseError::Several { .. })
        ));
        // The same set seen on several devices is one set.
        assert_eq!(choose(&[ids[1], ids[1]], None), Ok(ids[1]));
    }

    /// A tape whose second set has the label of its first (what a drive
    /// that does not space over the filemarks shows: the first label read
    /// again): one set, not two volumes of it (restore --changer counted
    /// such a cartridge twice, "slot 1 and slot 1 are both device 0").
    #[test]
    fn a_set_found_again_on_the_same_tape_is_counted_once() {
        use crate::device::vtape::VirtualTape;
        use crate::device::{DeviceSpec, Mode};
        use crate::format::seal::LabelSeal;
        use crate::format::BLOCK_BYTES;
        use crate::media::{write_label, write_tape_catalog};

        let dir = tempfile::tempdir().unwrap();
        let spec = DeviceSpec::parse(&format!("vtape:{},size=8M", dir.path().display())).unwrap();
        let tape = VirtualTape::open(&spec, Mode::Write).unwrap();
        let label = |set: SetId| {
            Label::new_writing(set, 1, 1 << 20, LabelSeal::NONE, 0, 1, BLOCK_BYTES as u32)
        };
        let first = label(id(0x11, 1));
        // Each set closed with an End record alone (a continued volume):
        // complete without a catalog.
        write_label(&tape, &first).unwrap();
        write_tape_catalog(&tape, first.set_id, 0, 1, 1, &[], 8192).unwrap();
        let again = SetOnTape::new(&tape, 2);
        write_label(&again, &first).unwrap();
        write_tape_catalog(&again, first.set_id, 0, 1, 1, &[], 8192).unwrap();
        let sets = sets_on_tape(&tape).unwrap();
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert_eq!(sets[0].files_before, 0);
        let e = sets_to_append_after(&tape).unwrap_err().to_string();
        assert!(e.contains("found again after 2"), "{e}");
        // Another set there is a second set.
        let other = label(id(0x22, 2));
        write_label(&again, &other).unwrap();
        write_tape_catalog(&again, other.set_id, 0, 1, 1, &[], 8192).unwrap();
        let sets = sets_on_tape(&tape).unwrap();
        assert_eq!(sets.len(), 2, "{sets:?}");
        assert_eq!(sets[1].label.set_id, other.set_id);
    }
}

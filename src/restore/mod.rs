//! Restore and verify: one reader thread and ring per device, each
//! streaming its device in media order, writing payloads to their file
//! offsets, in parallel across devices. Any subset of a set's devices
//! restores every file whose segments it holds and names the missing byte
//! ranges of the rest. Devices of several sets of one chain (a full set
//! and its increments, `chain`) restore the newest set's tree, each file's
//! data read from the set that holds it.

pub mod at;
pub mod chain;
pub mod choose;
pub mod diff;
mod encoded;
mod finish;
mod open;
mod problem;
mod read;
mod rebuild;
pub mod repair;
pub mod scan;
mod scan_parity;
pub mod scrub;
mod select;
mod small;
mod streamed;
mod transform;
pub mod tree;
pub mod writer;

use std::fs::File;
use std::path::Path;

use crate::device;
use crate::format::{Catalog, SetId};
use crate::media::stream::StreamError;
use crate::media::MediaError;
pub use chain::{open_chain, Chain};
pub use choose::{Choice, Existing, Kept, KeptWhy, Only};
pub use encoded::{create_export, open_encoded, EncodedSet};
use finish::{finish_image, gather, verdicts};
pub use open::{open_cartridges, open_devices, open_set, open_sets, Cartridge, OpenSet};
pub use problem::{Problem, RecordProblem, Refusal};
use read::{read_devices, Destination};
pub use rebuild::RebuildSummary;
use select::select;
pub use streamed::{restore_streamed, verify_streamed, Streamed};

/// Why a restore, a verify or a list could not go on. Each names the
/// device (as given), the file and the offset involved; the CLI maps them
/// to exit codes (`cli::exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error("no devices given (use --dev)")]
    NoDevices,
    #[error("no given device can be read: {}", joined(.errors))]
    NoneReadable { errors: Vec<MediaError> },
    /// `open_set` was given devices of more than one set.
    #[error("devices {device} and {other} hold different sets ({set} and {other_set})")]
    DifferentSets {
        device: String,
        other: String,
        set: String,
        other_set: String,
    },
    /// Devices of several sets that are not one chain of increments.
    #[error("the devices hold {count} different sets that are not one chain of increments (no set has all the others as ancestors): {}", .sets.join("; "))]
    NotAChain { count: usize, sets: Vec<String> },
    /// Two devices claim one set but their labels disagree on it.
    #[error("devices {device} and {other} both claim set {set} but {why}: refusing the set (a device of another run, or a forged label?)")]
    Membership {
        device: String,
        other: String,
        set: String,
        why: Disagreement,
    },
    /// A library's cartridge that the catalog (and the label cache or
    /// inventory) named as a volume of the set, whose label, read when it
    /// was loaded for its records, says otherwise: nothing read from it.
    #[error("{device}: the set's catalog names it volume {volume} of set {set}, but its label says {found} (a cartridge swapped since the label cache or inventory was read? `pbio changer inventory` reads them again): nothing read from it")]
    WrongVolume {
        device: String,
        set: String,
        volume: u32,
        found: String,
    },
    #[error("devices {device} and {other} are both device {index} of the set (the same device given twice?)")]
    SameIndex {
        device: String,
        other: String,
        index: u32,
    },
    /// An encrypted set (`backup --encrypt`) given without its key, or
    /// with a key that does not open its label's envelope: nothing read
    /// further, nothing written.
    #[error("{}", encrypted_refusal(.device, .set, *.wrong_key))]
    Encrypted {
        device: String,
        set: String,
        wrong_key: bool,
    },
    /// A label or catalog MAC that does not match `--key`.
    #[error("device {device}: {}", mac_refusal(*.what, *.zero))]
    Mac {
        device: String,
        what: MacOf,
        /// The MAC is zero: the set was written without a key.
        zero: bool,
    },
    #[error("device {device}: catalog belongs to another set")]
    ForeignCatalog { device: String },
    #[error("device {device}: its catalog does not hash to the catalog digest in its label (altered or damaged): not used")]
    CatalogDigest { device: String },
    #[error("set {set}: none of the given devices holds a completed catalog (crashed or interrupted run?): use `pbio scan` to recover records")]
    NoCatalog { set: String },
    #[error("device {device}: its label says device {index} of {count}, but the set's catalog (read from {source_device}) lists {catalog_count} devices: refusing it")]
    NotInCatalog {
        device: String,
        index: u32,
        count: u32,
        source_device: String,
        catalog_count: usize,
    },
    #[error("device {device}: its label disagrees with the set's catalog (read from {source_device}) on the chunk size or the creation time: refusing it")]
    CatalogDisagrees {
        device: String,
        source_device: String,
    },
    /// `backup --since PATH`: PATH is neither a catalog nor a device of a set.
    #[error("{}: {why}", .path.display())]
    Since {
        path: std::path::PathBuf,
        why: String,
    },
    /// The restore target (an image restore's device or file).
    #[error("{op}: {error}")]
    Target { op: TargetOp, error: std::io::Error },
    #[error("device {device}: io_uring for restore writes: {error}")]
    WriterSetup {
        device: String,
        error: std::io::Error,
    },
    /// A restored file that could not be opened for its data.
    #[error("open {path}: {error}")]
    Open { path: String, error: std::io::Error },
    /// A queued write of restored data failed (the writer names the file
    /// and offset).
    #[error("{why}")]
    Write { device: String, why: String },
    /// `--only` patterns that take no entry of the set (nothing was
    /// written; `--allow-no-match` goes on without them).
    #[error("{}", no_match(.patterns))]
    NoMatch { patterns: Vec<String> },
}

fn no_match(patterns: &[String]) -> String {
    let quoted: Vec<String> = patterns.iter().map(|p| format!("'{p}'")).collect();
    format!(
        "--only {}: {} nothing in the set (--allow-no-match goes on without {})",
        quoted.join(", "),
        if patterns.len() == 1 {
            "matches"
        } else {
            "each match"
        },
        if patterns.len() == 1 { "it" } else { "them" }
    )
}

/// What two labels of one set disagree on (`RestoreError::Membership`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Disagreement {
    #[error("disagree on the number of devices ({0} and {1})")]
    DeviceCount(u32, u32),
    #[error("disagree on the chunk size ({0} and {1})")]
    ChunkBytes(u32, u32),
    #[error("disagree on the set's creation time ({0} and {1})")]
    Created(u64, u64),
    #[error("hold different catalogs (their catalog digests differ)")]
    CatalogDigest,
}

fn encrypted_refusal(device: &str, set: &str, wrong_key: bool) -> String {
    if wrong_key {
        format!("wrong key for set {set} on device {device}: the key file (or passphrase) does not open its data key (another key, or an altered label): nothing read")
    } else {
        format!("set {set} on device {device} is encrypted: give its --key-file (or --passphrase-file, if it was written with one) to read it")
    }
}

fn joined(errors: &[MediaError]) -> String {
    let each: Vec<String> = errors.iter().map(ToString::to_string).collect();
    each.join("; ")
}

/// Whose MAC `RestoreError::Mac` refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacOf {
    Label,
    Catalog,
}

fn mac_refusal(what: MacOf, zero: bool) -> &'static str {
    match (what, zero) {
        (MacOf::Label, true) => "its label carries no MAC (the set was written without a key), but --key was given: refusing it",
        (MacOf::Label, false) => "its label's MAC does not match the key: written with another key, or altered: refusing it",
        (MacOf::Catalog, true) => "the set's catalog carries no MAC (the set was written without a key), but --key was given: refusing it",
        (MacOf::Catalog, false) => "the catalog's MAC does not match the key: written with another key, or altered: refusing it",
    }
}

/// What was done to the restore target when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetOp {
    Size,
    Clone,
    Zeros { offset: u64 },
    Sync,
}

impl std::fmt::Display for TargetOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetOp::Size => f.write_str("the size of the restore target"),
            TargetOp::Clone => f.write_str("restore target"),
            TargetOp::Zeros { offset } => {
                write!(f, "write zeros at offset {offset} of the restore target")
            }
            TargetOp::Sync => f.write_str("sync of the restore target"),
        }
    }
}

/// The device index of a missing range that no device of the set holds.
pub const NOWHERE: u32 = u32::MAX;

/// A file that cannot be restored from the given devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub path: Vec<u8>,
    /// The set whose devices hold (or should hold) the file's data: the
    /// set restored, or for a file unchanged since an earlier set of the
    /// chain, that set.
    pub set_id: SetId,
    /// Whether any device of that set was given. When not, `ranges` is the
    /// whole file, on device `NOWHERE`.
    pub set_given: bool,
    /// (offset, length, device index in that set) of every range not on
    /// the given devices; the device is `NOWHERE` when no device of the
    /// set holds it (or the set was not given).
    pub ranges: Vec<(u64, u64, u32)>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub files_restored: usize,
    pub payload_bytes: u64,
    pub records: u64,
    pub missing: Vec<Missing>,
    /// Integrity errors, each naming device, file and offset.
    pub errors: Vec<Problem>,
    /// Entries left as the destination holds them (`--keep-old-files`,
    /// `--overwrite-newer-only`), sorted by path: not errors.
    pub kept: Vec<Kept>,
    /// Metadata the destination refused (an extended attribute, file
    /// flags), each naming the file and the attribute: the entry is
    /// restored without it. Not a failure.
    pub warnings: Vec<String>,
    /// `--parity` sets: the devices missing and what was rebuilt.
    pub rebuild: RebuildSummary,
    pub elapsed: std::time::Duration,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.errors.is_empty()
    }
}

/// What to do with the records.
pub enum Action<'a> {
    /// Rebuild the tree under `to`. A file that cannot be restored
    /// completely is removed, or with `keep_partial` kept as
    /// `NAME.pbio-partial`.
    Restore {
        to: &'a Path,
        keep_partial: bool,
    },
    /// Write the data of one file of the catalog (a block device, or an
    /// image file) onto `target` from offset 0, holes written as zeros.
    /// The caller opened `target` (a block device, exclusively) and
    /// checked that it is large enough.
    RestoreToDevice {
        target: &'a File,
        file: u32,
    },
    Verify,
}

/// Restore (or verify) one set from its opened devices. For an
/// incremental set, the files whose data is in earlier sets are missing
/// (their set is not given): use `run_chain`.
pub fn run(set: &OpenSet, action: Action<'_>, only: &[Vec<u8>]) -> Result<Report, RestoreError> {
    let ancestors = vec![None; set.catalog.ancestors.len()];
    run_sets(&[set], &ancestors, action, &Choice::paths(only))
}

/// Restore (or verify) the newest set of a chain: its tree, each file's
/// data read from the set that holds it, all devices of all sets in parallel.
pub fn run_chain(
    chain: &Chain,
    action: Action<'_>,
    only: &[Vec<u8>],
) -> Result<Report, RestoreError> {
    run_chain_with(chain, action, &Choice::paths(only))
}

/// `run_chain` taking what `choice` says (`--only` patterns,
/// `--strip-components`, what to do with existing names). A pattern that
/// takes nothing is `RestoreError::NoMatch` before anything is written,
/// unless `choice.allow_no_match`.
pub fn run_chain_with(
    chain: &Chain,
    action: Action<'_>,
    choice: &Choice,
) -> Result<Report, RestoreError> {
    let sets: Vec<&OpenSet> = chain.sets.iter().collect();
    run_sets(&sets, &chain.ancestor_sets, action, choice)
}

fn run_sets(
    sets: &[&OpenSet],
    ancestor_sets: &[Option<usize>],
    action: Action<'_>,
    choice: &Choice,
) -> Result<Report, RestoreError> {
    let started = std::time::Instant::now();
    let catalog = &sets[0].catalog;
    assert_eq!(ancestor_sets.len(), catalog.ancestors.len());
    let mut report = Report::default();
    let chosen = choose::choose(catalog, choice, &mut report)?;
    // The tree is made under the names `--strip-components` leaves.
    let tree_catalog = chosen.view.as_ref().unwrap_or(catalog);
    let mut selection = select(sets, ancestor_sets, &action, &chosen.taken, &mut report);
    let (staged, keep_partial) = match action {
        Action::Restore { to, keep_partial } => {
            let kept = choose::keep_existing(
                to,
                tree_catalog,
                &chosen.taken,
                &mut selection,
                choice.existing,
                &mut report,
            )?;
            // What is kept needs no data: its missing ranges do not matter.
            if kept.contains(&true) {
                let kept_paths: std::collections::HashSet<&[u8]> = catalog
                    .files
                    .iter()
                    .zip(&kept)
                    .filter(|(_, &k)| k)
                    .map(|(f, _)| &f.path[..])
                    .collect();
                report.missing.retain(|m| !kept_paths.contains(&m.path[..]));
            }
            let small = small::candidates(sets, &selection, tree_catalog, keep_partial);
            let staged =
                prepare_tree(to, tree_catalog, &mut selection.wanted, &small, &mut report)?;
            (Some(staged), keep_partial)
        }
        _ => (None, false),
    };
    let destination = match action {
        Action::Restore { .. } => Destination::Tree(staged.as_ref().expect("prepared above")),
        Action::RestoreToDevice { target, .. } => Destination::Device(target),
        Action::Verify => Destination::Nowhere,
    };
    let verify = matches!(action, Action::Verify);
    let mut results = read_devices(sets, &selection, catalog, destination, verify);
    let unrebuilt = rebuild::run_all(
        sets,
        &selection,
        &mut results,
        catalog,
        destination,
        &mut report.rebuild,
    );
    let (records, broken) = gather(results, &mut report)?;
    let verdicts = verdicts(sets, &selection, &records, &broken, &mut report);
    finish::name_unrebuilt(sets, catalog, unrebuilt, &mut report);
    let mut done = selection.selected.clone();
    if let Destination::Device(target) = destination {
        finish_image(target, catalog, &selection.wanted, &records)?;
    }
    if let Some(staged) = staged {
        let finished = tree::finish(
            staged,
            tree_catalog,
            &selection.wanted,
            &verdicts,
            keep_partial,
        );
        report
            .errors
            .extend(finished.errors.into_iter().map(Problem::Tree));
        report.warnings.extend(finished.warnings);
        for (d, f) in done.iter_mut().zip(&finished.done) {
            *d = *d && *f;
        }
    }
    report.files_restored = done.iter().filter(|&&d| d).count();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Destination phase of a tree restore: the tree under `to` staged for
/// the wanted entries. Invariant: an entry the destination refuses (an
/// unsafe name, a conflict) is reported and no longer wanted; the rest is
/// restored.
fn prepare_tree(
    to: &Path,
    catalog: &Catalog,
    wanted: &mut [bool],
    small: &[bool],
    report: &mut Report,
) -> Result<tree::Staged, RestoreError> {
    let mut staged = tree::prepare_small(to, catalog, wanted, small)?;
    report
        .errors
        .extend(staged.take_errors().into_iter().map(Problem::Tree));
    for (i, w) in wanted.iter_mut().enumerate() {
        *w = *w && !staged.refused(i);
    }
    Ok(staged)
}

#[cfg(test)]
mod tests;

//! What a tree restore takes of a set and what it does with what the
//! destination already holds: `--only` (gitignore-like patterns, the
//! same matcher as backup's `--exclude`, or exact stored paths),
//! `--strip-components`, `--keep-old-files` and `--overwrite-newer-only`.
//!
//! Rules:
//! - `--only` patterns match the stored paths (as `pbio list` shows them,
//!   before any `--strip-components`). A pattern without a `/` matches a
//!   name at any depth; one with a `/` is anchored at the top of the
//!   stored paths (a leading `/` allowed); a trailing `/` matches
//!   directories only; `**` crosses directories. A pattern also matches
//!   as an exact path, as `--only` always did (so a path holding `[` or
//!   `*`, or bytes that are not UTF-8, still selects itself). A directory
//!   matched takes everything below it.
//! - A pattern that takes no entry is an error before anything is
//!   written, unless `allow_no_match`.
//! - `--strip-components N`: the first N components of every taken path
//!   are dropped (tar's option); an entry with N components or fewer is
//!   skipped. Hard links follow their targets by catalog index, so a link
//!   and its target are stripped alike; a link whose target is skipped is
//!   not made (an error, as tar's). Symlink targets are left as stored.
//! - What is already at a destination name (lstat, never followed):
//!   `Existing::Replace` (the default, tar's) replaces it atomically,
//!   never writing through it; `Existing::Keep` leaves it and reports it;
//!   `Existing::ReplaceOlder` replaces it only when the set's mtime is
//!   newer than its own, and reports the others. Under both, an existing
//!   directory is restored into and keeps its own owner, mode and mtime, a
//!   name below a non-directory that stands where a directory must go is
//!   kept too (the non-directory is not removed), and a hard link whose
//!   target is kept is not made (reported as kept).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::FileStat;

use super::at::{self, Root};
use super::select::Selection;
use super::tree::{check_rel, TreeError};
use super::{Problem, Report, RestoreError};
use crate::format::{Catalog, CatalogFile, FileKind};
use crate::source::select::{Globs, SelectError};
use crate::units::shown_name;

/// `--only`: patterns, each also matched as an exact path.
#[derive(Debug, Default)]
pub struct Only {
    /// The patterns as given (their bytes).
    given: Vec<Vec<u8>>,
    /// Each pattern as an exact path (a trailing '/' dropped).
    exact: Vec<Vec<u8>>,
    /// The patterns that are UTF-8, compiled; `glob_of[i]` is the index
    /// among `given` of glob i.
    globs: Globs,
    glob_of: Vec<usize>,
}

impl Only {
    /// Compile `patterns` (`--only`); a bad glob is an error naming it.
    pub fn new(patterns: &[Vec<u8>]) -> Result<Only, SelectError> {
        let mut texts = Vec::new();
        let mut glob_of = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            if let Ok(text) = std::str::from_utf8(p) {
                texts.push(text.to_string());
                glob_of.push(i);
            }
        }
        Ok(Only {
            globs: Globs::new("--only", &texts)?,
            glob_of,
            ..Only::exact(patterns)
        })
    }

    /// Exact stored paths only (what `--only` was before patterns).
    pub fn exact(paths: &[Vec<u8>]) -> Only {
        Only {
            given: paths.to_vec(),
            exact: paths
                .iter()
                .map(|p| p.strip_suffix(b"/").unwrap_or(p).to_vec())
                .collect(),
            globs: Globs::default(),
            glob_of: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.given.is_empty()
    }

    /// Whether some pattern matches `path` itself; marks each one that does.
    fn hits(&self, path: &[u8], is_dir: bool, hit: &mut [bool]) -> bool {
        let mut any = false;
        for (i, exact) in self.exact.iter().enumerate() {
            if path == exact.as_slice() {
                hit[i] = true;
                any = true;
            }
        }
        for g in self.globs.matching(path, is_dir) {
            hit[self.glob_of[g]] = true;
            any = true;
        }
        any
    }

    /// Per file of `files`, whether a pattern takes it (matches it or a
    /// directory above it); and the indexes of the patterns that take
    /// nothing. With no pattern, everything is taken.
    pub fn choose(&self, files: &[CatalogFile]) -> (Vec<bool>, Vec<usize>) {
        if self.is_empty() {
            return (vec![true; files.len()], Vec::new());
        }
        let mut hit = vec![false; self.given.len()];
        // Directories above entries, each matched once.
        let mut above: HashMap<&[u8], bool> = HashMap::new();
        let taken = files
            .iter()
            .map(|f| {
                let mut taken = self.hits(&f.path, f.kind == FileKind::Directory, &mut hit);
                for (slash, _) in f.path.iter().enumerate().filter(|(_, &b)| b == b'/') {
                    let dir = &f.path[..slash];
                    let matched = match above.get(dir) {
                        Some(&m) => m,
                        None => {
                            let m = self.hits(dir, true, &mut hit);
                            above.insert(dir, m);
                            m
                        }
                    };
                    taken |= matched;
                }
                taken
            })
            .collect();
        let unmatched = (0..self.given.len()).filter(|&i| !hit[i]).collect();
        (taken, unmatched)
    }

    /// Pattern `i` as given, for messages.
    pub fn shown(&self, i: usize) -> String {
        shown_name(&self.given[i])
    }
}

/// What to do with a name that already exists in the destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (atomically, never through a link): tar's default.
    #[default]
    Replace,
    /// Leave it as it is and report it (`--keep-old-files`).
    Keep,
    /// Replace it only when the set's mtime is newer than its own
    /// (`--overwrite-newer-only`); report the others.
    ReplaceOlder,
}

/// What a tree restore takes of the set and how it treats what exists.
#[derive(Debug, Default)]
pub struct Choice {
    pub only: Only,
    /// Leading components dropped from every stored path.
    pub strip_components: usize,
    pub existing: Existing,
    /// A pattern that takes nothing is not an error.
    pub allow_no_match: bool,
}

impl Choice {
    /// Exact stored paths, the rest default (`run`, `run_chain`).
    pub fn paths(only: &[Vec<u8>]) -> Choice {
        Choice {
            only: Only::exact(only),
            ..Choice::default()
        }
    }
}

/// Why an entry was left as the destination holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptWhy {
    /// Something exists at its name (`--keep-old-files`).
    Exists,
    /// What exists at its name is as new as the set's or newer
    /// (`--overwrite-newer-only`).
    NotOlder,
    /// A non-directory stands where one of its directories must go.
    Blocked,
    /// A hard link whose target was kept.
    TargetKept,
}

impl KeptWhy {
    /// The word of `--json` output.
    pub fn code(self) -> &'static str {
        match self {
            KeptWhy::Exists => "exists",
            KeptWhy::NotOlder => "not_older",
            KeptWhy::Blocked => "blocked",
            KeptWhy::TargetKept => "target_kept",
        }
    }
}

impl std::fmt::Display for KeptWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeptWhy::Exists => "exists (--keep-old-files)",
            KeptWhy::NotOlder => "exists and is as new as the set's or newer",
            KeptWhy::Blocked => "a non-directory stands where its directory must go",
            KeptWhy::TargetKept => "hard link not made: its target was kept",
        })
    }
}

/// An entry left as the destination holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Its name below the destination (after `--strip-components`).
    pub path: Vec<u8>,
    pub why: KeptWhy,
}

/// `choice` applied to the catalog restored.
pub(super) struct Chosen {
    /// Per catalog file: taken by `--only` and `--strip-components`.
    pub(super) taken: Vec<bool>,
    /// With `--strip-components`: the catalog with every taken path
    /// stripped (what the tree is made from); None otherwise.
    pub(super) view: Option<Catalog>,
}

/// Drop `n` leading components of `path`; None when it has `n` or fewer.
pub fn strip(path: &[u8], n: usize) -> Option<&[u8]> {
    if n == 0 {
        return Some(path);
    }
    let slash = path
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .nth(n - 1)?
        .0;
    Some(&path[slash + 1..]).filter(|rest| !rest.is_empty())
}

/// Apply `choice` to `catalog`: which entries are taken, under which
/// names. A pattern that takes nothing is `RestoreError::NoMatch` unless
/// allowed; a hard link whose target `--strip-components` skips is an
/// error in `report` (tar's), and not taken.
pub(super) fn choose(
    catalog: &Catalog,
    choice: &Choice,
    report: &mut Report,
) -> Result<Chosen, RestoreError> {
    let (mut taken, unmatched) = choice.only.choose(&catalog.files);
    if !unmatched.is_empty() && !choice.allow_no_match {
        return Err(RestoreError::NoMatch {
            patterns: unmatched.iter().map(|&i| choice.only.shown(i)).collect(),
        });
    }
    if choice.strip_components == 0 {
        return Ok(Chosen { taken, view: None });
    }
    let n = choice.strip_components;
    let mut view = catalog.clone();
    // Every path, taken or not: a hard link's target is restored with it.
    for (i, f) in view.files.iter_mut().enumerate() {
        match strip(&f.path, n) {
            Some(rest) => f.path = rest.to_vec(),
            None => taken[i] = false,
        }
    }
    for (i, f) in catalog.files.iter().enumerate() {
        let target = f.hardlink_to as usize;
        if f.kind == FileKind::HardLink
            && taken[i]
            && catalog
                .files
                .get(target)
                .is_some_and(|t| strip(&t.path, n).is_none())
        {
            taken[i] = false;
            report.errors.push(Problem::Tree(TreeError::Entry {
                path: shown_name(&f.path),
                why: format!(
                    "hard link not made: its target {} has {n} components or fewer (--strip-components)",
                    shown_name(&catalog.files[target].path)
                ),
            }));
        }
    }
    Ok(Chosen {
        taken,
        view: Some(view),
    })
}

/// What stands at a destination name.
enum OnDisk {
    Nothing,
    /// A non-directory (or a symlink) where one of its directories must go.
    Blocked,
    Exists(FileStat),
}

fn on_disk(root: &Root, path: &[u8]) -> std::io::Result<OnDisk> {
    let (parent, name) = at::split_parent(path);
    let dir = match root.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        Ok(dir) => dir,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(OnDisk::Nothing),
                Some(libc::ENOTDIR | libc::ELOOP | libc::EXDEV) => Ok(OnDisk::Blocked),
                _ => Err(e),
            }
        }
    };
    match nix::sys::stat::fstatat(Some(dir_fd(&dir)), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(OnDisk::Exists(st)),
        Err(Errno::ENOENT) => Ok(OnDisk::Nothing),
        Err(e) => Err(std::io::Error::from_raw_os_error(e as i32)),
    }
}

fn dir_fd(fd: &std::os::fd::OwnedFd) -> std::os::fd::RawFd {
    std::os::fd::AsRawFd::as_raw_fd(fd)
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Destination phase, before anything is made under `to`: with
/// `Existing::Keep` or `ReplaceOlder`, the taken entries whose name
/// exists are no longer selected (listed in `report.kept`, existing
/// directories silently: they are restored into), and `wanted` follows.
/// Nothing is changed on disk but the creation of `to` itself. Returns,
/// per catalog file, whether it was kept.
pub(super) fn keep_existing(
    to: &Path,
    view: &Catalog,
    taken: &[bool],
    selection: &mut Selection,
    existing: Existing,
    report: &mut Report,
) -> Result<Vec<bool>, RestoreError> {
    if existing == Existing::Replace {
        return Ok(vec![false; view.files.len()]);
    }
    let root = Root::open(to).map_err(|error| TreeError::Io {
        op: "open restore directory",
        path: shown_name(std::os::unix::ffi::OsStrExt::as_bytes(to.as_os_str())),
        error,
    })?;
    let files = &view.files;
    // Parents before children: a directory replaced lets its contents in.
    // Every taken entry, restorable or not: one kept needs no data.
    let mut order: Vec<usize> = (0..files.len()).filter(|&i| taken[i]).collect();
    order.sort_by_key(|&i| files[i].path.iter().filter(|&&b| b == b'/').count());
    let mut replaced_dirs: HashSet<&[u8]> = HashSet::new();
    let mut kept = vec![false; files.len()];
    for i in order {
        let f = &files[i];
        if check_rel(&f.path).is_err() {
            continue; // refused by `prepare`, which says why
        }
        let state = on_disk(&root, &f.path).map_err(|error| TreeError::Io {
            op: "lstat",
            path: shown_name(&f.path),
            error,
        })?;
        let why = match state {
            OnDisk::Nothing => None,
            OnDisk::Blocked => {
                let under_replaced = f
                    .path
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'/')
                    .any(|(slash, _)| replaced_dirs.contains(&f.path[..slash]));
                (!under_replaced).then_some(KeptWhy::Blocked)
            }
            OnDisk::Exists(st) if f.kind == FileKind::Directory && is_dir(&st) => {
                // Restored into; its own metadata stays.
                selection.selected[i] = false;
                None
            }
            OnDisk::Exists(st) => match existing {
                Existing::Keep => Some(KeptWhy::Exists),
                Existing::ReplaceOlder
                    if (f.stat.mtime_sec, f.stat.mtime_nsec as i64)
                        > (st.st_mtime, st.st_mtime_nsec) =>
                {
                    None
                }
                _ => Some(KeptWhy::NotOlder),
            },
        };
        match why {
            Some(why) => {
                kept[i] = true;
                selection.selected[i] = false;
                report.kept.push(Kept {
                    path: f.path.clone(),
                    why,
                });
            }
            None if f.kind == FileKind::Directory && selection.selected[i] => {
                // Made (or a non-directory replaced) by `prepare`.
                replaced_dirs.insert(&f.path);
            }
            None => {}
        }
    }
    for (i, f) in files.iter().enumerate() {
        if f.kind == FileKind::HardLink
            && taken[i]
            && !kept[i]
            && kept.get(f.hardlink_to as usize) == Some(&true)
        {
            selection.selected[i] = false;
            kept[i] = true;
            report.kept.push(Kept {
                path: f.path.clone(),
                why: KeptWhy::TargetKept,
            });
        }
    }
    selection.wanted.clone_from(&selection.selected);
    for (i, f) in files.iter().enumerate() {
        if selection.selected[i] && f.kind == FileKind::HardLink {
            if let Some(w) = selection.wanted.get_mut(f.hardlink_to as usize) {
                *w = true;
            }
        }
    }
    report.kept.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(kept)
}

#[cfg(test)]
#[path = "choose_tests.rs"]
mod tests;

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
mod tests {
    use super::*;

    fn entry(path: &str, kind: FileKind) -> CatalogFile {
        let mut f = crate::format::catalog::tests::sample().files[0].clone();
        f.path = path.as_bytes().to_vec();
        f.kind = kind;
        f
    }

    /// The catalog `files()` and `taken` choose from.
    const FILES: [(&str, FileKind); 7] = [
        ("src", FileKind::Directory),
        ("src/a.txt", FileKind::Regular),
        ("src/docs", FileKind::Directory),
        ("src/docs/b.txt", FileKind::Regular),
        ("src/docs/c.md", FileKind::Regular),
        ("src/[x]", FileKind::Regular),
        ("other/a.txt", FileKind::Regular),
    ];

    fn files_of(list: &[(&str, FileKind)]) -> Vec<CatalogFile> {
        list.iter().map(|&(path, kind)| entry(path, kind)).collect()
    }

    fn files() -> Vec<CatalogFile> {
        files_of(&FILES)
    }

    fn taken(patterns: &[&str]) -> (Vec<&'static str>, Vec<usize>) {
        let only = Only::new(
            &patterns
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let files = files();
        let (taken, unmatched) = only.choose(&files);
        (
            FILES
                .iter()
                .zip(taken)
                .filter(|(_, t)| *t)
                .map(|((name, _), _)| *name)
                .collect(),
            unmatched,
        )
    }

    #[test]
    fn a_name_glob_matches_at_any_depth_and_a_directory_takes_its_contents() {
        assert_eq!(
            taken(&["*.txt"]).0,
            ["src/a.txt", "src/docs/b.txt", "other/a.txt"]
        );
        assert_eq!(
            taken(&["docs"]).0,
            ["src/docs", "src/docs/b.txt", "src/docs/c.md"]
        );
        assert_eq!(taken(&["src/*.txt"]).0, ["src/a.txt"]);
        assert_eq!(taken(&["/other"]).0, ["other/a.txt"]);
        assert_eq!(taken(&["**/docs/*.md"]).0, ["src/docs/c.md"]);
        // A trailing '/' matches directories only.
        assert!(taken(&["a.txt/"]).0.is_empty());
    }

    #[test]
    fn exact_paths_keep_working_even_with_glob_characters() {
        assert_eq!(taken(&["src/[x]"]).0, ["src/[x]"]);
        assert_eq!(
            taken(&["src/docs/"]).0,
            ["src/docs", "src/docs/b.txt", "src/docs/c.md"]
        );
        let only = Only::exact(&[b"src/docs".to_vec()]);
        let (t, unmatched) = only.choose(&files());
        assert_eq!(t.iter().filter(|&&t| t).count(), 3);
        assert!(unmatched.is_empty());
    }

    #[test]
    fn patterns_that_take_nothing_are_named() {
        let (t, unmatched) = taken(&["*.txt", "nothing*", "src/docs/zz"]);
        assert_eq!(t.len(), 3);
        assert_eq!(unmatched, [1, 2]);
        let err = Only::new(&[b"a[".to_vec()]).unwrap_err().to_string();
        assert!(err.contains("--only 'a['"), "{err}");
    }

    /// A destination holding an older and a newer file, a symlink to
    /// outside, and a file where a stored directory must go: what each
    /// policy keeps, and that nothing on disk is changed or followed.
    #[test]
    fn existing_names_are_kept_never_followed_and_links_follow_their_targets() {
        use super::super::select::DataSource;
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("to");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(to.join("top")).unwrap();
        std::fs::write(&outside, b"outside").unwrap();
        let set_mtime = |path: &Path, secs: u64| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap()
        };
        std::fs::write(to.join("top/old"), b"old").unwrap();
        set_mtime(&to.join("top/old"), 1_600_000_000);
        std::fs::write(to.join("top/new"), b"new").unwrap();
        std::fs::write(to.join("blk"), b"a file where a directory must go").unwrap();
        symlink(&outside, to.join("top/sym")).unwrap();
        let mut catalog = crate::format::catalog::tests::sample();
        catalog.files = files_of(&[
            ("top", FileKind::Directory),
            ("top/old", FileKind::Regular),
            ("top/new", FileKind::Regular),
            ("top/absent", FileKind::Regular),
            ("top/link", FileKind::HardLink),
            ("blk/inner", FileKind::Regular),
            ("top/sym", FileKind::Symlink),
        ]);
        catalog.files[4].hardlink_to = 2;
        let n = catalog.files.len();
        let kept_by = |existing| {
            let mut selection = Selection {
                sources: vec![DataSource::None; n],
                reading: Vec::new(),
                selected: vec![true; n],
                wanted: vec![true; n],
                rebuild: Vec::new(),
            };
            let mut report = Report::default();
            let kept = keep_existing(
                &to,
                &catalog,
                &vec![true; n],
                &mut selection,
                existing,
                &mut report,
            )
            .unwrap();
            for (i, (&k, &s)) in kept.iter().zip(&selection.selected).enumerate() {
                assert!(!(k && s), "{i}: kept and selected");
            }
            let whys: Vec<(String, KeptWhy)> = report
                .kept
                .iter()
                .map(|k| (String::from_utf8_lossy(&k.path).into_owned(), k.why))
                .collect();
            (whys, selection.selected, selection.wanted)
        };
        let (whys, selected, wanted) = kept_by(Existing::Keep);
        assert_eq!(
            whys,
            [
                ("blk/inner".to_string(), KeptWhy::Blocked),
                ("top/link".to_string(), KeptWhy::TargetKept),
                ("top/new".to_string(), KeptWhy::Exists),
                ("top/old".to_string(), KeptWhy::Exists),
                ("top/sym".to_string(), KeptWhy::Exists),
            ]
        );
        // The existing directory is restored into, its metadata left alone.
        assert_eq!(selected, [false, false, false, true, false, false, false]);
        assert_eq!(wanted, selected);
        let (whys, selected, _) = kept_by(Existing::ReplaceOlder);
        assert_eq!(
            whys,
            [
                ("blk/inner".to_string(), KeptWhy::Blocked),
                ("top/link".to_string(), KeptWhy::TargetKept),
                ("top/new".to_string(), KeptWhy::NotOlder),
                ("top/sym".to_string(), KeptWhy::NotOlder),
            ]
        );
        assert_eq!(selected, [false, true, false, true, false, false, false]);
        // Nothing was changed on disk, nothing followed.
        assert_eq!(std::fs::read(&outside).unwrap(), b"outside");
        assert_eq!(std::fs::read(to.join("top/old")).unwrap(), b"old");
        assert!(std::fs::symlink_metadata(to.join("blk")).unwrap().is_file());
        // Replace (the default) keeps nothing and looks at nothing.
        let (whys, selected, _) = kept_by(Existing::Replace);
        assert!(whys.is_empty());
        assert_eq!(selected, vec![true; n]);
    }

    #[test]
    fn strip_drops_leading_components() {
        assert_eq!(strip(b"a/b/c", 0), Some(&b"a/b/c"[..]));
        assert_eq!(strip(b"a/b/c", 1), Some(&b"b/c"[..]));
        assert_eq!(strip(b"a/b/c", 2), Some(&b"c"[..]));
        assert_eq!(strip(b"a/b/c", 3), None);
        assert_eq!(strip(b"a", 1), None);
    }

    #[test]
    fn strip_components_follows_hard_links_and_skips_short_paths() {
        let mut catalog = crate::format::catalog::tests::sample();
        catalog.files = files_of(&[
            ("top", FileKind::Directory),
            ("top/f", FileKind::Regular),
            ("top/d/link", FileKind::HardLink),
            ("g", FileKind::Regular),
            ("top/d/link2", FileKind::HardLink),
        ]);
        catalog.files[2].hardlink_to = 1;
        catalog.files[4].hardlink_to = 3;
        let choice = Choice {
            strip_components: 1,
            ..Choice::default()
        };
        let mut report = Report::default();
        let chosen = choose(&catalog, &choice, &mut report).unwrap();
        assert_eq!(chosen.taken, [false, true, true, false, false]);
        let view = chosen.view.unwrap();
        assert_eq!(view.files[1].path, b"f");
        assert_eq!(view.files[2].path, b"d/link");
        assert_eq!(view.files[2].hardlink_to, 1);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(report.errors[0].to_string().contains("top/d/link2"));
    }
}

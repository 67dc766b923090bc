//! The restored tree: safe names, creating entries, applying metadata.
//!
//! Every operation goes through directory descriptors below the restore
//! root (`at`): no symlink is ever followed, whatever the medium or the
//! destination holds. Files are written under a temporary name
//! (`.NAME.pbio-XXXXXXXXXXXX`, `O_EXCL`) and renamed into place only when
//! the restore found them complete and verified; a symlink or hard link is
//! made under a temporary name and renamed too, so a name in the
//! destination is replaced atomically and never written through.

use crate::format::catalog::CatalogStream;
use crate::format::{Catalog, CatalogFile, FileKind, FormatError, Xattr};
use crate::units::shown_name;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use std::borrow::Cow;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::at::{self, Root};
use dirs::Dirs;
use small::Small;

mod dirs;
mod small;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("refusing to restore '{path}': {why}")]
    Unsafe { path: String, why: &'static str },
    /// `path` is the stored name (or the restore root), shown escaped.
    #[error("{op} {path}: {error}")]
    Io {
        op: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("{path}: {why}")]
    Entry { path: String, why: String },
}

/// Mode a selected directory is created with by `prepare`, so that its
/// contents can be written whatever its final mode; `finish` sets the real one.
pub const DIR_MODE_WHILE_RESTORING: u32 = 0o700;
/// Mode regular files are created with; `finish` sets the real one.
const FILE_MODE_WHILE_RESTORING: u32 = 0o600;
/// What a file that could not be restored completely is renamed to with
/// `--keep-partial` (appended to its name).
pub const PARTIAL_SUFFIX: &[u8] = b".pbio-partial";

/// Check a stored relative path: refused are absolute paths, `..`
/// components, empty paths and NUL bytes.
///
/// Also refused: empty components (`a//b`, a trailing `/`) and `.`
/// components. The walker never stores them, so a catalog holding one is
/// damaged or hostile; refusing is simpler to reason about than normalizing.
pub fn check_rel(rel: &[u8]) -> Result<(), TreeError> {
    let refuse = |why| {
        Err(TreeError::Unsafe {
            path: shown_name(rel),
            why,
        })
    };
    if rel.is_empty() {
        return refuse("empty path");
    }
    if rel.contains(&0) {
        return refuse("path contains a NUL byte");
    }
    if rel[0] == b'/' {
        return refuse("absolute path");
    }
    for component in rel.split(|&b| b == b'/') {
        match component {
            b"" => return refuse("empty path component ('//' or trailing '/')"),
            b"." => return refuse("'.' path component"),
            b".." => return refuse("'..' path component"),
            _ => {}
        }
    }
    Ok(())
}

/// The entries of a tree restore by catalog id: a decoded catalog, or a
/// catalog read entry by entry (`CatalogStream`, issue 23), whose entries
/// are decoded again where a phase needs them and never all held.
pub trait Entries: Sync {
    fn count(&self) -> usize;
    /// Entry `i`'s kind without decoding it (None past the last).
    fn kind(&self, i: usize) -> Option<FileKind>;
    /// Entry `i` (None past the last, or when it no longer reads: a
    /// spilled catalog's I/O error).
    fn entry(&self, i: usize) -> Option<Cow<'_, CatalogFile>>;
    /// Every entry in id order, given to `each`; an entry that no longer
    /// reads (a spilled catalog's I/O error) ends it, as an error.
    fn each(&self, each: &mut dyn FnMut(usize, &CatalogFile)) -> Result<(), FormatError> {
        self.each_of(&mut |_, _| true, each)
    }
    /// `each` of the entries `wanted(id, kind)` takes (asked in id
    /// order); the others are not decoded.
    fn each_of(
        &self,
        wanted: &mut dyn FnMut(usize, FileKind) -> bool,
        each: &mut dyn FnMut(usize, &CatalogFile),
    ) -> Result<(), FormatError>;
}

impl Entries for Catalog {
    fn count(&self) -> usize {
        self.files.len()
    }

    fn kind(&self, i: usize) -> Option<FileKind> {
        Some(self.files.get(i)?.kind)
    }

    fn entry(&self, i: usize) -> Option<Cow<'_, CatalogFile>> {
        self.files.get(i).map(Cow::Borrowed)
    }

    fn each_of(
        &self,
        wanted: &mut dyn FnMut(usize, FileKind) -> bool,
        each: &mut dyn FnMut(usize, &CatalogFile),
    ) -> Result<(), FormatError> {
        for (i, f) in self.files.iter().enumerate() {
            if wanted(i, f.kind) {
                each(i, f);
            }
        }
        Ok(())
    }
}

impl Entries for CatalogStream<'_> {
    fn count(&self) -> usize {
        self.file_count()
    }

    fn kind(&self, i: usize) -> Option<FileKind> {
        Some(self.summary(i)?.kind)
    }

    fn entry(&self, i: usize) -> Option<Cow<'_, CatalogFile>> {
        self.file(i)?.ok().map(Cow::Owned)
    }

    fn each_of(
        &self,
        wanted: &mut dyn FnMut(usize, FileKind) -> bool,
        each: &mut dyn FnMut(usize, &CatalogFile),
    ) -> Result<(), FormatError> {
        for (i, f) in self.files_where(|i, summary| wanted(i, summary.kind)) {
            each(i, &f?);
        }
        Ok(())
    }
}

/// The error of a catalog that no longer reads while the tree is made.
fn unreadable(error: FormatError) -> TreeError {
    TreeError::Entry {
        path: "the catalog".into(),
        why: format!("no longer reads from its temporary file: {error}"),
    }
}

/// Whether a restored file is complete and verified (the restore engine
/// decides; `finish` renames only the good ones into place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    /// Not restored: why (already reported by the engine).
    Failed(String),
}

/// The restore in progress between `prepare` and `finish`: the root, and
/// the temporary name each file's data goes to.
#[derive(Debug)]
pub struct Staged {
    root: Root,
    /// (catalog file, the temporary path its data is written to), sorted
    /// by file: only the files that take one (issue 23: not a slot per
    /// entry).
    temps: Vec<(u32, Vec<u8>)>,
    /// Per catalog file: refused or failed by `prepare` (reported in `errors`).
    refused: Vec<bool>,
    errors: Vec<TreeError>,
    /// The small files made under their own names (`small`), if any.
    small: Option<Small>,
}

impl Staged {
    /// The entries `prepare` refused, one error each.
    pub fn take_errors(&mut self) -> Vec<TreeError> {
        std::mem::take(&mut self.errors)
    }

    /// Whether catalog file `i` was refused (or could not be prepared).
    pub fn refused(&self, i: usize) -> bool {
        self.refused[i]
    }

    /// Whether catalog file `i`'s records are written here: it has a
    /// temporary file or is a small file (not refused, not unselected).
    pub fn takes(&self, i: usize) -> bool {
        self.temp(i).is_some() || self.small_dir(i).is_some()
    }

    /// The temporary path of catalog file `i`, if it has one.
    fn temp(&self, i: usize) -> Option<&[u8]> {
        let i = u32::try_from(i).ok()?;
        let at = self.temps.binary_search_by_key(&i, |t| t.0).ok()?;
        Some(&self.temps[at].1)
    }

    /// The directory small file `i` is made in (`small`: created there
    /// under its own name, by the reader, once its record is proven);
    /// None when `i` takes a temporary file (`open_for_write`).
    pub fn small_dir(&self, i: usize) -> Option<BorrowedFd<'_>> {
        Some(self.small.as_ref()?.dir(i)?.0)
    }

    /// Claim the writing of small file `i`'s data: false when it was
    /// claimed already (a second copy of its record is not written).
    pub fn claim_small(&self, i: usize) -> bool {
        self.small.as_ref().is_some_and(|s| s.claim(i))
    }

    /// Small file `i` could not be made (why): `finish` reports it.
    pub fn small_failed(&self, i: usize, why: String) {
        if let Some(s) = &self.small {
            s.fail(i, why);
        }
    }

    /// The mode a small file of mode `mode` is created with.
    pub fn small_create_mode(mode: u32) -> u32 {
        Small::create_mode(mode)
    }

    /// Open the temporary file of catalog file `i` for the restore's writes.
    pub fn open_for_write(&self, i: usize) -> io::Result<fs::File> {
        let Some(temp) = self.temp(i) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no temporary file was prepared for it",
            ));
        };
        Ok(fs::File::from(self.root.open_at(temp, OFlag::O_WRONLY)?))
    }
}

fn io_error(op: &'static str, rel: &[u8]) -> impl FnOnce(io::Error) -> TreeError {
    let path = shown_name(rel);
    move |error| TreeError::Io { op, path, error }
}

/// `dir/name` as one relative path.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Before data: open (or create) `root`, create every selected directory,
/// and for every selected regular file and block device image a new
/// temporary file in its directory, set to its logical size so that
/// unwritten ranges stay holes. `selected[i]` says whether catalog file i
/// is restored.
///
/// Directories are created with mode `DIR_MODE_WHILE_RESTORING`; parents of
/// selected entries that are not themselves selected are created as needed
/// (mode 0o777 less umask) and keep no catalog metadata. A symlink or other
/// non-directory in the destination where a directory must be is replaced
/// by a directory (tar's default), never followed. An entry that cannot be
/// prepared (an unsafe name, a directory where its file must go, an I/O
/// error) is refused alone: reported in `Staged::take_errors`, the rest goes
/// on. Only a root that cannot be opened is an error.
pub fn prepare(root: &Path, catalog: &Catalog, selected: &[bool]) -> Result<Staged, TreeError> {
    prepare_small(root, catalog, selected, &[])
}

/// `prepare`, with `candidates[i]` (empty: none) saying which regular
/// files may be made as small files (`small`: their data is one record or
/// none, they have no xattrs and no flags, and a failed one need not be
/// kept partial): those in a directory this call makes get no temporary
/// file; the reader creates them once their record is proven.
pub fn prepare_small(
    root: &Path,
    catalog: &Catalog,
    selected: &[bool],
    candidates: &[bool],
) -> Result<Staged, TreeError> {
    let root = Root::open(root).map_err(|error| TreeError::Io {
        op: "open restore directory",
        path: shown_name(std::os::unix::ffi::OsStrExt::as_bytes(root.as_os_str())),
        error,
    })?;
    Ok(prepare_with(root, catalog, selected, candidates))
}

/// `prepare` below an opened root.
pub fn prepare_in(root: Root, catalog: &Catalog, selected: &[bool]) -> Staged {
    prepare_with(root, catalog, selected, &[])
}

/// `prepare_small` below an opened root.
pub fn prepare_with(
    root: Root,
    catalog: &Catalog,
    selected: &[bool],
    candidates: &[bool],
) -> Staged {
    assert_eq!(
        selected.len(),
        catalog.files.len(),
        "one selection flag per catalog file"
    );
    assert!(candidates.is_empty() || candidates.len() == selected.len());
    let mut candidate = |i: usize, _: &CatalogFile| candidates[i];
    let small: Option<SmallCandidate<'_>> = candidates.contains(&true).then_some(&mut candidate);
    prepare_entries(root, catalog, &|i| selected[i], small).expect("a decoded catalog always reads")
}

/// Whether entry i may be a small file (`prepare_entries`), asked in id order.
pub type SmallCandidate<'a> = &'a mut dyn FnMut(usize, &CatalogFile) -> bool;

/// `prepare` below an opened root of the entries `selected(i)` says,
/// `small(i, entry)` (None: no small files) saying which regular files
/// may be made as small files (`prepare_small`), asked in id order. An
/// error only when the entries no longer read.
pub fn prepare_entries(
    root: Root,
    entries: &dyn Entries,
    selected: &dyn Fn(usize) -> bool,
    mut small: Option<SmallCandidate<'_>>,
) -> Result<Staged, TreeError> {
    let n = entries.count();
    let mut staged = Staged {
        root,
        temps: Vec::new(),
        refused: vec![false; n],
        errors: Vec::new(),
        small: small.as_ref().map(|_| Small::new(n)),
    };
    let mut dirs = Dirs::default();
    entries
        .each(&mut |i, file| {
            if !selected(i) {
                return;
            }
            let candidate = small.as_mut().is_some_and(|small| small(i, file));
            if let Err(error) = prepare_one(&mut staged, &mut dirs, i, file, candidate) {
                staged.refused[i] = true;
                staged.errors.push(error);
            }
        })
        .map_err(unreadable)?;
    Ok(staged)
}

/// One entry of `prepare`; the directories it is made in are resolved
/// (and made) once while `dirs` keeps them open.
fn prepare_one(
    staged: &mut Staged,
    dirs: &mut Dirs,
    i: usize,
    file: &CatalogFile,
    candidate: bool,
) -> Result<(), TreeError> {
    check_rel(&file.path)?;
    let root = &staged.root;
    let path = &file.path[..];
    if file.kind == FileKind::Directory {
        let (fd, made) = root
            .ensure_dir_made(path, DIR_MODE_WHILE_RESTORING)
            .map_err(io_error("create directory", path))?;
        if let (true, Some(small)) = (made, staged.small.as_mut()) {
            small.made_dir(path, &fd);
        }
        dirs.put(path, fd);
        return Ok(());
    }
    let parent = at::split_parent(path).0;
    if candidate && file.kind == FileKind::Regular {
        if let Some(small) = staged.small.as_mut() {
            if small.take(i, parent) {
                return Ok(());
            }
        }
    }
    let dir = dirs
        .get(parent, || root.ensure_dir(parent, at::DIR_MODE_IMPLICIT))
        .map_err(io_error("create directories above", path))?;
    // A block device is restored as an image: a regular file. Symlinks,
    // hard links and special files are made by `finish`, their parents
    // made here.
    if file.kind.has_data() {
        let temp = create_file_in(dir, path, file.size_bytes)?;
        staged.temps.push((i as u32, temp));
    }
    Ok(())
}

/// Refuse the entry `path` (a file or node) when a directory stands at
/// `name` in `dir`: it is left as it is.
fn refuse_dir_at(dir: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<(), TreeError> {
    if at::is_dir_in(dir, name).map_err(io_error("lstat", path))? {
        return Err(TreeError::Entry {
            path: shown_name(path),
            why: "a directory stands where this file must go (left as it is)".into(),
        });
    }
    Ok(())
}

/// A new temporary file for the regular file `path` (checked with
/// `check_rel`), its directories made as needed, of logical size
/// `size_bytes` (all hole); returns the temporary file's path below the
/// root. A directory already at `path` refuses the entry.
pub fn create_file(root: &Root, path: &[u8], size_bytes: u64) -> Result<Vec<u8>, TreeError> {
    let (dir, _) = root
        .ensure_parent(path)
        .map_err(io_error("create directories above", path))?;
    create_file_in(dir.as_fd(), path, size_bytes)
}

/// `create_file` in `dir`, the directory of `path`, already made.
fn create_file_in(dir: BorrowedFd<'_>, path: &[u8], size_bytes: u64) -> Result<Vec<u8>, TreeError> {
    let name = at::split_parent(path).1;
    refuse_dir_at(dir, name, path)?;
    let (fd, temp) = at::create_temp(dir, name, FILE_MODE_WHILE_RESTORING)
        .map_err(io_error("create temporary file for", path))?;
    // A new file is empty already: no truncate for an empty one.
    if size_bytes > 0 {
        if let Err(error) = fs::File::from(fd).set_len(size_bytes) {
            let _ = at::remove_in(dir, &temp);
            return Err(io_error("set length of", path)(error));
        }
    }
    Ok(join(at::split_parent(path).0, &temp))
}

/// What `finish` did.
#[derive(Debug, Default)]
pub struct Finished {
    /// Per catalog file: in place with its metadata.
    pub done: Vec<bool>,
    pub errors: Vec<TreeError>,
    /// Metadata the destination refused (an extended attribute, file
    /// flags), each naming the file and what: the entry is restored
    /// without it, and counts as done.
    pub warnings: Vec<String>,
}

/// After data: rename the good files into place (metadata applied to them
/// first, through their descriptor), drop the failed ones' temporary
/// files (`keep_partial`: rename them to `NAME.pbio-partial`), make
/// special files (fifos, device nodes), symlinks and hard links, then set
/// owner, mode, xattrs and mtime of every selected directory (deepest
/// first, so their mtimes stick).
///
/// Metadata order on every entry: owner, mode, extended attributes (after
/// the owner: chown clears `security.capability`), mtime, and last the
/// file flags (after the rename: an immutable file can be neither changed
/// nor renamed). An extended attribute or flags the destination refuses
/// (no xattr support, no privilege for `trusted.*`) is a warning naming
/// the file and the attribute; the rest is applied.
///
/// `verdicts[i]` says whether catalog file i's data is complete and
/// verified (only files with data are looked at). Best effort: every
/// entry that can be done is done; the errors are returned, one per entry.
///
/// Owner comes before mode (chown clears set-id bits). Owners are set
/// only when running as root (as tar does by default); otherwise entries
/// keep the restoring user's ids and modes are masked with the umask (as
/// tar does for users other than root). Mode is never applied to
/// symlinks. Hard-link names get no metadata of their own: they share the
/// target's inode, and are made only to a target restored good.
pub fn finish(
    staged: Staged,
    catalog: &Catalog,
    selected: &[bool],
    verdicts: &[Verdict],
    keep_partial: bool,
) -> Finished {
    assert_eq!(selected.len(), catalog.files.len());
    assert_eq!(verdicts.len(), catalog.files.len());
    let verdict = |i: usize| verdicts[i].clone();
    finish_entries(staged, catalog, &|i| selected[i], &verdict, keep_partial)
}

/// `finish` of the entries `selected(i)` says, `verdict(i)` saying whether
/// entry i's data is complete and verified. The entries are read again
/// phase by phase (issue 23), each phase decoding only the entries of its
/// kinds (`Entries::each_of`; the files with data, small or not, in one
/// pass): what is held per entry is its `done` flag;
/// per directory its depth, for the metadata deepest first.
pub fn finish_entries(
    staged: Staged,
    entries: &dyn Entries,
    selected: &(dyn Fn(usize) -> bool + Sync),
    verdict: &(dyn Fn(usize) -> Verdict + Sync),
    keep_partial: bool,
) -> Finished {
    let root = &staged.root;
    let refused = &staged.refused;
    let meta = Meta::of_process();
    let mut out = Finished {
        done: vec![false; entries.count()],
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    // Each phase is one pass over the entries, in id order.
    let pass = |out: &mut Finished,
                wanted: &dyn Fn(usize, FileKind) -> bool,
                each: &mut dyn FnMut(usize, &CatalogFile, &mut Finished)| {
        let read = entries.each_of(
            &mut |i, kind| selected(i) && !refused[i] && wanted(i, kind),
            &mut |i, file| each(i, file, out),
        );
        if let Err(error) = read {
            out.errors.push(unreadable(error));
        }
    };
    // The directory of each entry, resolved once while kept open.
    let mut dirs = Dirs::default();
    let small = staged.small.as_ref();
    let is_small = |i: usize| small.is_some_and(|s| s.dir(i).is_some());
    let failed = small.map(Small::take_failed).unwrap_or_default();
    let mut batch: Vec<(usize, CatalogFile)> = Vec::new();
    let finish_batch = |batch: &mut Vec<(usize, CatalogFile)>, out: &mut Finished| {
        let Some(small) = small.filter(|_| !batch.is_empty()) else {
            return;
        };
        for (i, result) in finish_smalls(small, batch, verdict, &failed, meta) {
            match result {
                Ok(()) => out.done[i] = true,
                Err(error) => out.errors.push(error),
            }
        }
        batch.clear();
    };
    // Files with data, small ones (in batches) and the others in one pass.
    pass(&mut out, &|_, kind| kind.has_data(), &mut |i, file, out| {
        if is_small(i) {
            batch.push((i, file.clone()));
            if batch.len() >= SMALL_FINISH_BATCH {
                finish_batch(&mut batch, out);
            }
            return;
        }
        let Some(temp) = staged.temp(i) else {
            out.errors.push(TreeError::Entry {
                path: shown_name(&file.path),
                why: "not restored: no temporary file was prepared for it".into(),
            });
            return;
        };
        let temp = at::split_parent(temp).1;
        let path = &file.path[..];
        let warnings = &mut out.warnings;
        let result = directory_of(&mut dirs, root, path).and_then(|dir| match verdict(i) {
            Verdict::Good => {
                place_file(dir, temp, path, Attrs::of(file), meta, warnings).map(|()| true)
            }
            Verdict::Failed(_) => drop_file(dir, temp, path, keep_partial).map(|()| false),
        });
        match result {
            Ok(placed) => out.done[i] = placed,
            Err(error) => out.errors.push(error),
        }
    });
    finish_batch(&mut batch, &mut out);
    // Special files first, then symlinks: each made by its name.
    let specials_then_symlinks: [fn(FileKind) -> bool; 2] =
        [FileKind::is_special, |k| k == FileKind::Symlink];
    for kind in specials_then_symlinks {
        pass(&mut out, &|_, k| kind(k), &mut |i, file, out| {
            let made = directory_of(&mut dirs, root, &file.path)
                .and_then(|dir| make_by_name(dir, file, meta, &mut out.warnings));
            match made {
                Ok(()) => out.done[i] = true,
                Err(error) => out.errors.push(error),
            }
        });
    }
    pass(
        &mut out,
        &|_, k| k == FileKind::HardLink,
        &mut |i, file, out| match make_hard_link(root, entries, &out.done, verdict, file) {
            Ok(()) => out.done[i] = true,
            Err(error) => out.errors.push(error),
        },
    );
    // (depth, id) of every directory: deepest first, so their mtimes stick.
    let mut directories: Vec<(u32, u32)> = Vec::new();
    pass(
        &mut out,
        &|_, k| k == FileKind::Directory,
        &mut |i, file, _| {
            let depth = file.path.iter().filter(|&&b| b == b'/').count();
            directories.push((depth as u32, i as u32));
        },
    );
    directories.sort_by_key(|&(depth, _)| std::cmp::Reverse(depth));
    for (_, i) in directories {
        let i = i as usize;
        let Some(file) = entries.entry(i) else {
            out.errors.push(unreadable(FormatError::Catalog(
                "a directory's entry no longer reads",
            )));
            continue;
        };
        let warnings = &mut out.warnings;
        let result = root
            .open_at(&file.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(io_error("open to set metadata of", &file.path))
            .and_then(|fd| {
                let attrs = Attrs::of(&file);
                apply_through_fd(fd.as_fd(), &file.path, attrs, meta, warnings)?;
                apply_flags(fd.as_fd(), &file.path, attrs.flags, warnings);
                Ok(())
            });
        match result {
            Ok(()) => out.done[i] = true,
            Err(error) => out.errors.push(error),
        }
    }
    out
}

/// Threads that finish small files at most, and files each takes at least.
const SMALL_FINISH_THREADS_MAX: usize = 4;
const SMALL_FINISH_FILES_MIN: usize = 2048;
/// Small files decoded and finished at a time (issue 23: not all held).
const SMALL_FINISH_BATCH: usize = 4 * 8192;

/// `finish_small` of the small files `batch` (in catalog order), shared
/// out over a few threads: each file is its own name in its own
/// directory, so they are independent. Results in the order given.
fn finish_smalls(
    small: &Small,
    batch: &[(usize, CatalogFile)],
    verdict: &(dyn Fn(usize) -> Verdict + Sync),
    failed: &std::collections::HashMap<u32, String>,
    meta: Meta,
) -> Vec<(usize, Result<(), TreeError>)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SMALL_FINISH_THREADS_MAX);
    let per_thread = batch.len().div_ceil(threads).max(SMALL_FINISH_FILES_MIN);
    let finish_all = move |chunk: &[(usize, CatalogFile)]| -> Vec<(usize, Result<(), TreeError>)> {
        chunk
            .iter()
            .map(|(i, file)| {
                let why = failed.get(&(*i as u32)).map(String::as_str);
                (*i, finish_small(small, *i, file, &verdict(*i), why, meta))
            })
            .collect()
    };
    if batch.len() <= per_thread {
        return finish_all(batch);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || finish_all(chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a small-file finish thread panicked"))
            .collect()
    })
}

/// A small file (`small`) after the read: a good one gets its owner, mode
/// and mtime by name in its directory (made now when empty: no record
/// wrote it); one that failed is removed if its data was written. On a
/// failure the name is removed: nothing unproven stays.
fn finish_small(
    small: &Small,
    i: usize,
    file: &CatalogFile,
    verdict: &Verdict,
    failed: Option<&str>,
    meta: Meta,
) -> Result<(), TreeError> {
    let path = &file.path[..];
    let (dir, file_gid) = small.dir(i).expect("a small file");
    let name = at::split_parent(path).1;
    let written = small.written(i);
    let entry = |why: String| TreeError::Entry {
        path: shown_name(path),
        why,
    };
    if let Some(why) = failed {
        return Err(entry(format!("not restored: {why}")));
    }
    if let Verdict::Failed(_) = verdict {
        if written {
            at::remove_in(dir, name).map_err(io_error("remove temporary file of", path))?;
        }
        return Err(entry(
            "not restored; its partial data was removed (--keep-partial keeps it)".into(),
        ));
    }
    if !written {
        if file.size_bytes > 0 {
            return Err(entry("not restored: its data was not written".into()));
        }
        let mode = Small::create_mode(file.stat.mode);
        at::create_in(dir, name, mode).map_err(io_error("create", path))?;
    }
    let result = apply_small(dir, name, path, Attrs::of(file), meta, (small, file_gid));
    if result.is_err() {
        let _ = at::remove_in(dir, name);
    }
    result
}

/// Owner (when not the one it was created with), mode (when the umask
/// or set-ID bits made it differ) and mtime of a small file, by its name
/// `name` in `dir`, a directory only this user can change (`small`): the
/// name is the file this restore made.
fn apply_small(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    attrs: Attrs<'_>,
    meta: Meta,
    (small, file_gid): (&Small, u32),
) -> Result<(), TreeError> {
    let raw = Some(dir.as_raw_fd());
    if meta.owners && (attrs.uid != small.euid || attrs.gid != file_gid) {
        fchownat(
            raw,
            name,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| io_error("chown", path)(errno.into()))?;
    }
    let created = Small::create_mode(attrs.mode) & !small.umask;
    let mode = attrs.mode(meta);
    if mode.bits() != created {
        fchmodat(raw, name, mode, FchmodatFlags::FollowSymlink)
            .map_err(|errno| io_error("chmod", path)(errno.into()))?;
    }
    utimensat(
        raw,
        name,
        &TimeSpec::UTIME_OMIT,
        &attrs.mtime(),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|errno| io_error("set mtime of", path)(errno.into()))
}

/// The directory `path` is in (which must exist as a real directory),
/// opened once while `dirs` keeps it.
fn directory_of<'d>(
    dirs: &'d mut Dirs,
    root: &Root,
    path: &[u8],
) -> Result<BorrowedFd<'d>, TreeError> {
    let parent = at::split_parent(path).0;
    dirs.get(parent, || {
        root.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
    })
    .map_err(io_error("open directory of", path))
}

/// Whether owners are set (root), and the umask applied to modes (not root).
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    owners: bool,
    umask: u32,
}

impl Meta {
    /// As tar does: root restores owners and exact modes; another user
    /// keeps its own ids and gets modes less its umask.
    pub fn of_process() -> Meta {
        let owners = nix::unistd::geteuid().is_root();
        Meta {
            owners,
            umask: if owners { 0 } else { at::umask() },
        }
    }
}

/// The metadata restored onto one entry.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a> {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// File flags (regular files and directories; applied last).
    pub flags: u32,
    /// Extended attributes, POSIX ACLs among them.
    pub xattrs: &'a [Xattr],
}

impl Attrs<'_> {
    fn of(file: &CatalogFile) -> Attrs<'_> {
        Attrs {
            uid: file.stat.uid,
            gid: file.stat.gid,
            mode: file.stat.mode,
            mtime_sec: file.stat.mtime_sec,
            mtime_nsec: file.stat.mtime_nsec,
            flags: file.stat.flags,
            xattrs: &file.xattrs,
        }
    }

    fn mode(&self, meta: Meta) -> Mode {
        Mode::from_bits_truncate(((self.mode & 0o7777) & !meta.umask) as libc::mode_t)
    }

    fn mtime(&self) -> TimeSpec {
        TimeSpec::new(
            self.mtime_sec as libc::time_t,
            self.mtime_nsec as libc::c_long,
        )
    }
}

/// The directory of `path` (a path below the root), opened, and the name
/// in it of `path`'s temporary file `temp` (a path below the root, in the
/// same directory): where `place_file` and `drop_file` work.
pub fn temp_in_parent<'t>(
    root: &Root,
    temp: &'t [u8],
    path: &[u8],
) -> Result<(OwnedFd, &'t [u8]), TreeError> {
    let (dir, _) = root
        .parent(path)
        .map_err(io_error("open directory of", path))?;
    Ok((dir, at::split_parent(temp).1))
}

/// Metadata onto a complete file's temporary file `temp_name` in `dir`
/// (the directory of `path`), then renamed to `path`, replacing any
/// non-directory there atomically, then its file flags; on failure the
/// temporary file is removed. Refused xattrs and flags go to `warnings`.
pub fn place_file(
    dir: BorrowedFd<'_>,
    temp_name: &[u8],
    path: &[u8],
    attrs: Attrs<'_>,
    meta: Meta,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let name = at::split_parent(path).1;
    let result = at::open_in(dir, temp_name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
        .map_err(io_error("open to set metadata of", path))
        .and_then(|fd| {
            apply_through_fd(fd.as_fd(), path, attrs, meta, warnings)?;
            at::rename_in(dir, temp_name, name).map_err(io_error("rename into place", path))?;
            Ok(fd)
        });
    match result {
        Ok(fd) => {
            apply_flags(fd.as_fd(), path, attrs.flags, warnings);
            Ok(())
        }
        Err(error) => {
            let _ = at::remove_in(dir, temp_name);
            Err(error)
        }
    }
}

/// A file that failed: its temporary file `temp_name` in `dir` (the
/// directory of `path`) removed, or with `keep_partial` renamed to
/// `NAME.pbio-partial`. Always an error naming what became of it.
pub fn drop_file(
    dir: BorrowedFd<'_>,
    temp_name: &[u8],
    path: &[u8],
    keep_partial: bool,
) -> Result<(), TreeError> {
    let name = at::split_parent(path).1;
    if !keep_partial {
        at::remove_in(dir, temp_name).map_err(io_error("remove temporary file of", path))?;
        return Err(TreeError::Entry {
            path: shown_name(path),
            why: "not restored; its partial data was removed (--keep-partial keeps it)".into(),
        });
    }
    let mut partial = name.to_vec();
    partial.extend_from_slice(PARTIAL_SUFFIX);
    let partial_rel = join(at::split_parent(path).0, &partial);
    if let Err(error) = at::rename_in(dir, temp_name, &partial) {
        let _ = at::remove_in(dir, temp_name);
        return Err(io_error("keep partial data as", &partial_rel)(error));
    }
    Err(TreeError::Entry {
        path: shown_name(path),
        why: format!(
            "not restored; its partial data is kept as {}",
            shown_name(&partial_rel)
        ),
    })
}

/// A fifo, device node (mknod) or symlink made under a temporary name, its
/// owner, mode (not a symlink's), xattrs and mtime set on the name itself,
/// then renamed into place; on any failure the temporary name is removed.
/// `dir` is the directory of the entry.
fn make_by_name(
    dir: BorrowedFd<'_>,
    file: &CatalogFile,
    meta: Meta,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let path = &file.path[..];
    let name = at::split_parent(path).1;
    let node = |kind: SFlag| -> Result<Vec<u8>, TreeError> {
        refuse_dir_at(dir, name, path)?;
        at::mknod_temp(dir, name, kind, 0o600, file.stat.rdev)
            .map_err(io_error("create special file", path))
    };
    let temp = match file.kind {
        FileKind::Fifo => node(SFlag::S_IFIFO)?,
        FileKind::CharDevice => node(SFlag::S_IFCHR)?,
        FileKind::BlockNode => node(SFlag::S_IFBLK)?,
        FileKind::Symlink => at::symlink_temp(dir, name, &file.link_target)
            .map_err(io_error("create symlink", path))?,
        other => unreachable!("make_by_name of a {other:?}"),
    };
    let with_mode = file.kind != FileKind::Symlink;
    let result = apply_by_name(dir, &temp, path, Attrs::of(file), meta, with_mode, warnings)
        .and_then(|()| {
            at::rename_in(dir, &temp, name).map_err(io_error("rename into place", path))
        });
    if result.is_err() {
        let _ = at::remove_in(dir, &temp);
    }
    result
}

fn make_hard_link(
    root: &Root,
    entries: &dyn Entries,
    done: &[bool],
    verdict: &dyn Fn(usize) -> Verdict,
    file: &CatalogFile,
) -> Result<(), TreeError> {
    let path = &file.path[..];
    let index = file.hardlink_to as usize;
    let linkable = entries
        .kind(index)
        .is_some_and(FileKind::can_be_hard_linked);
    let Some(target) = linkable.then(|| entries.entry(index)).flatten() else {
        return Err(TreeError::Unsafe {
            path: shown_name(path),
            why: "hard link whose target is not a regular or special file of the catalog",
        });
    };
    if !done[index] {
        let why = match verdict(index) {
            Verdict::Failed(why) => format!(
                "hard link not made: its target {} was not restored ({why})",
                shown_name(&target.path)
            ),
            Verdict::Good => format!(
                "hard link not made: its target {} is not being restored",
                shown_name(&target.path)
            ),
        };
        return Err(TreeError::Entry {
            path: shown_name(path),
            why,
        });
    }
    let (target_dir, target_name) = root
        .parent(&target.path)
        .map_err(io_error("open directory of", &target.path))?;
    let (dir, name) = root
        .parent(path)
        .map_err(io_error("open directory of", path))?;
    // linkat(2) without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
    let temp = at::link_temp(target_dir.as_fd(), target_name, dir.as_fd(), name)
        .map_err(io_error("hard link", path))?;
    at::rename_link_in(dir.as_fd(), &temp, name).map_err(|error| {
        let _ = at::remove_in(dir.as_fd(), &temp);
        io_error("rename into place", path)(error)
    })
}

/// Owner, mode, xattrs and mtime of a regular file or directory, through
/// its descriptor (flags come later: `apply_flags`).
fn apply_through_fd(
    fd: BorrowedFd<'_>,
    path: &[u8],
    attrs: Attrs<'_>,
    meta: Meta,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    let raw = fd.as_raw_fd();
    if meta.owners {
        fchown(
            raw,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
        )
        .map_err(|errno| io_error("chown", path)(errno.into()))?;
    }
    fchmod(raw, attrs.mode(meta)).map_err(|errno| io_error("chmod", path)(errno.into()))?;
    for x in attrs.xattrs {
        if let Err(error) = at::set_xattr_fd(fd, &x.name, &x.value) {
            warnings.push(xattr_warning(path, x, &error));
        }
    }
    futimens(raw, &TimeSpec::UTIME_OMIT, &attrs.mtime())
        .map_err(|errno| io_error("set mtime of", path)(errno.into()))
}

/// The file flags of a regular file or directory, last of all; one the
/// destination refuses is a warning.
fn apply_flags(fd: BorrowedFd<'_>, path: &[u8], flags: u32, warnings: &mut Vec<String>) {
    if let Err(error) = at::set_flags(fd, flags) {
        warnings.push(format!(
            "{}: file flags {flags:#x} not restored: {error}",
            shown_name(path)
        ));
    }
}

fn xattr_warning(path: &[u8], x: &Xattr, error: &io::Error) -> String {
    format!(
        "{}: extended attribute {} not restored: {error}",
        shown_name(path),
        shown_name(&x.name)
    )
}

/// Owner, mode (`with_mode`: not for symlinks, whose mode means nothing on
/// Linux), xattrs and mtime of the entry `name` in `dir` itself, never
/// following a symlink: a symlink or special file just made under a
/// temporary name.
fn apply_by_name(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    attrs: Attrs<'_>,
    meta: Meta,
    with_mode: bool,
    warnings: &mut Vec<String>,
) -> Result<(), TreeError> {
    if meta.owners {
        fchownat(
            Some(dir.as_raw_fd()),
            name,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| io_error("chown", path)(errno.into()))?;
    }
    if with_mode {
        // The name is a special file this restore just made, not a symlink.
        fchmodat(
            Some(dir.as_raw_fd()),
            name,
            attrs.mode(meta),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|errno| io_error("chmod", path)(errno.into()))?;
    }
    for x in attrs.xattrs {
        if let Err(error) = at::set_xattr_in(dir, name, &x.name, &x.value) {
            warnings.push(xattr_warning(path, x, &error));
        }
    }
    utimensat(
        Some(dir.as_raw_fd()),
        name,
        &TimeSpec::UTIME_OMIT,
        &attrs.mtime(),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|errno| io_error("set mtime of", path)(errno.into()))
}

#[cfg(test)]
mod tests;

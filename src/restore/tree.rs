//! The restored tree: safe names, creating entries, applying metadata.
//!
//! Every operation goes through directory descriptors below the restore
//! root (`at`): no symlink is ever followed, whatever the medium or the
//! destination holds. Files are written under a temporary name
//! (`.NAME.pbio-XXXXXXXXXXXX`, `O_EXCL`) and renamed into place only when
//! the restore found them complete and verified; a symlink or hard link is
//! made under a temporary name and renamed too, so a name in the
//! destination is replaced atomically and never written through.

use crate::format::{Catalog, CatalogFile, FileKind};
use crate::units::shown_name;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use super::at::{self, Root};

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
    /// Per catalog file: the temporary path its data is written to.
    temps: Vec<Option<Vec<u8>>>,
    /// Per catalog file: refused or failed by `prepare` (reported in `errors`).
    refused: Vec<bool>,
    errors: Vec<TreeError>,
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

    /// Open the temporary file of catalog file `i` for the restore's writes.
    pub fn open_for_write(&self, i: usize) -> io::Result<fs::File> {
        let Some(temp) = &self.temps[i] else {
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
    let root = Root::open(root).map_err(|error| TreeError::Io {
        op: "open restore directory",
        path: shown_name(std::os::unix::ffi::OsStrExt::as_bytes(root.as_os_str())),
        error,
    })?;
    Ok(prepare_in(root, catalog, selected))
}

/// `prepare` below an opened root.
pub fn prepare_in(root: Root, catalog: &Catalog, selected: &[bool]) -> Staged {
    assert_eq!(
        selected.len(),
        catalog.files.len(),
        "one selection flag per catalog file"
    );
    let n = catalog.files.len();
    let mut staged = Staged {
        root,
        temps: vec![None; n],
        refused: vec![false; n],
        errors: Vec::new(),
    };
    for (i, file) in catalog.files.iter().enumerate() {
        if !selected[i] {
            continue;
        }
        if let Err(error) = prepare_one(&mut staged, i, file) {
            staged.refused[i] = true;
            staged.errors.push(error);
        }
    }
    staged
}

fn prepare_one(staged: &mut Staged, i: usize, file: &CatalogFile) -> Result<(), TreeError> {
    check_rel(&file.path)?;
    let root = &staged.root;
    let path = &file.path[..];
    match file.kind {
        FileKind::Directory => {
            root.ensure_dir(path, DIR_MODE_WHILE_RESTORING)
                .map_err(io_error("create directory", path))?;
        }
        // A block device is restored as an image: a regular file.
        FileKind::Regular | FileKind::BlockDevice => {
            staged.temps[i] = Some(create_file(root, path, file.size_bytes)?);
        }
        // Made by `finish`; their parents already exist then.
        FileKind::Symlink | FileKind::HardLink => {
            root.ensure_parent(path)
                .map_err(io_error("create directories above", path))?;
        }
    }
    Ok(())
}

/// A new temporary file for the regular file `path` (checked with
/// `check_rel`), its directories made as needed, of logical size
/// `size_bytes` (all hole); returns the temporary file's path below the
/// root. A directory already at `path` refuses the entry.
pub fn create_file(root: &Root, path: &[u8], size_bytes: u64) -> Result<Vec<u8>, TreeError> {
    let (dir, name) = root
        .ensure_parent(path)
        .map_err(io_error("create directories above", path))?;
    if at::is_dir_in(dir.as_fd(), name).map_err(io_error("lstat", path))? {
        return Err(TreeError::Entry {
            path: shown_name(path),
            why: "a directory stands where this file must go (left as it is)".into(),
        });
    }
    let (fd, temp) = at::create_temp(dir.as_fd(), name, FILE_MODE_WHILE_RESTORING)
        .map_err(io_error("create temporary file for", path))?;
    if let Err(error) = fs::File::from(fd).set_len(size_bytes) {
        let _ = at::remove_in(dir.as_fd(), &temp);
        return Err(io_error("set length of", path)(error));
    }
    Ok(join(at::split_parent(path).0, &temp))
}

/// What `finish` did.
#[derive(Debug, Default)]
pub struct Finished {
    /// Per catalog file: in place with its metadata.
    pub done: Vec<bool>,
    pub errors: Vec<TreeError>,
}

/// After data: rename the good files into place (metadata applied to them
/// first, through their descriptor), drop the failed ones' temporary
/// files (`keep_partial`: rename them to `NAME.pbio-partial`), make
/// symlinks and hard links, then set owner, mode and mtime of every
/// selected directory (deepest first, so their mtimes stick).
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
    let root = &staged.root;
    let refused = &staged.refused;
    let files = &catalog.files;
    let meta = Meta::of_process();
    let mut out = Finished {
        done: vec![false; files.len()],
        errors: Vec::new(),
    };
    let chosen = |kind: fn(FileKind) -> bool| {
        files
            .iter()
            .enumerate()
            .filter(move |&(i, f)| selected[i] && !refused[i] && kind(f.kind))
    };
    for (i, file) in chosen(|k| k.has_data()) {
        let result = match &verdicts[i] {
            Verdict::Good => {
                place_file(root, temp_of(&staged, i), &file.path, Attrs::of(file), meta)
                    .map(|()| true)
            }
            Verdict::Failed(_) => {
                drop_file(root, temp_of(&staged, i), &file.path, keep_partial).map(|()| false)
            }
        };
        match result {
            Ok(placed) => out.done[i] = placed,
            Err(error) => out.errors.push(error),
        }
    }
    for (i, file) in chosen(|k| k == FileKind::Symlink) {
        match make_symlink(root, file, meta) {
            Ok(()) => out.done[i] = true,
            Err(error) => out.errors.push(error),
        }
    }
    for (i, file) in chosen(|k| k == FileKind::HardLink) {
        match make_hard_link(root, files, &out.done, verdicts, file) {
            Ok(()) => out.done[i] = true,
            Err(error) => out.errors.push(error),
        }
    }
    let mut directories: Vec<(usize, &CatalogFile)> =
        chosen(|k| k == FileKind::Directory).collect();
    directories
        .sort_by_key(|(_, f)| std::cmp::Reverse(f.path.iter().filter(|&&b| b == b'/').count()));
    for (i, file) in directories {
        let result = root
            .open_at(&file.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(io_error("open to set metadata of", &file.path))
            .and_then(|fd| apply_through_fd(fd.as_fd(), &file.path, Attrs::of(file), meta));
        match result {
            Ok(()) => out.done[i] = true,
            Err(error) => out.errors.push(error),
        }
    }
    out
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
pub struct Attrs {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

impl Attrs {
    fn of(file: &CatalogFile) -> Attrs {
        Attrs {
            uid: file.uid,
            gid: file.gid,
            mode: file.mode,
            mtime_sec: file.mtime_sec,
            mtime_nsec: file.mtime_nsec,
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

fn temp_of(staged: &Staged, i: usize) -> &[u8] {
    staged.temps[i]
        .as_deref()
        .expect("every prepared file has a temporary name")
}

/// Metadata onto a complete file's temporary file `temp` (a path below the
/// root, in the directory of `path`), then renamed to `path`, replacing
/// any non-directory there atomically; on failure the temporary file is removed.
pub fn place_file(
    root: &Root,
    temp: &[u8],
    path: &[u8],
    attrs: Attrs,
    meta: Meta,
) -> Result<(), TreeError> {
    let (dir, name) = root
        .parent(path)
        .map_err(io_error("open directory of", path))?;
    let temp_name = at::split_parent(temp).1;
    let result = root
        .open_at(temp, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
        .map_err(io_error("open to set metadata of", path))
        .and_then(|fd| apply_through_fd(fd.as_fd(), path, attrs, meta))
        .and_then(|()| {
            at::rename_in(dir.as_fd(), temp_name, name).map_err(io_error("rename into place", path))
        });
    if let Err(error) = result {
        let _ = at::remove_in(dir.as_fd(), temp_name);
        return Err(error);
    }
    Ok(())
}

/// A file that failed: its temporary file `temp` removed, or with
/// `keep_partial` renamed to `NAME.pbio-partial`. Always an error naming
/// what became of it.
pub fn drop_file(
    root: &Root,
    temp: &[u8],
    path: &[u8],
    keep_partial: bool,
) -> Result<(), TreeError> {
    let (dir, name) = root
        .parent(path)
        .map_err(io_error("open directory of", path))?;
    let temp_name = at::split_parent(temp).1;
    if !keep_partial {
        at::remove_in(dir.as_fd(), temp_name)
            .map_err(io_error("remove temporary file of", path))?;
        return Err(TreeError::Entry {
            path: shown_name(path),
            why: "not restored; its partial data was removed (--keep-partial keeps it)".into(),
        });
    }
    let mut partial = name.to_vec();
    partial.extend_from_slice(PARTIAL_SUFFIX);
    let partial_rel = join(at::split_parent(path).0, &partial);
    if let Err(error) = at::rename_in(dir.as_fd(), temp_name, &partial) {
        let _ = at::remove_in(dir.as_fd(), temp_name);
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

fn make_symlink(root: &Root, file: &CatalogFile, meta: Meta) -> Result<(), TreeError> {
    let path = &file.path[..];
    let (dir, name) = root
        .parent(path)
        .map_err(io_error("open directory of", path))?;
    let temp = at::symlink_temp(dir.as_fd(), name, &file.link_target)
        .map_err(io_error("create symlink", path))?;
    let result = apply_to_symlink(dir.as_fd(), &temp, path, Attrs::of(file), meta).and_then(|()| {
        at::rename_in(dir.as_fd(), &temp, name).map_err(io_error("rename into place", path))
    });
    if result.is_err() {
        let _ = at::remove_in(dir.as_fd(), &temp);
    }
    result
}

fn make_hard_link(
    root: &Root,
    files: &[CatalogFile],
    done: &[bool],
    verdicts: &[Verdict],
    file: &CatalogFile,
) -> Result<(), TreeError> {
    let path = &file.path[..];
    let index = file.hardlink_to as usize;
    let Some(target) = files.get(index).filter(|t| t.kind == FileKind::Regular) else {
        return Err(TreeError::Unsafe {
            path: shown_name(path),
            why: "hard link whose target is not a regular file of the catalog",
        });
    };
    if !done[index] {
        let why = match &verdicts[index] {
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
    at::rename_in(dir.as_fd(), &temp, name).map_err(|error| {
        let _ = at::remove_in(dir.as_fd(), &temp);
        io_error("rename into place", path)(error)
    })
}

/// Owner, mode, mtime of a regular file or directory, through its descriptor.
fn apply_through_fd(
    fd: BorrowedFd<'_>,
    path: &[u8],
    attrs: Attrs,
    meta: Meta,
) -> Result<(), TreeError> {
    let fd = fd.as_raw_fd();
    if meta.owners {
        fchown(
            fd,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
        )
        .map_err(|errno| io_error("chown", path)(errno.into()))?;
    }
    fchmod(fd, attrs.mode(meta)).map_err(|errno| io_error("chmod", path)(errno.into()))?;
    futimens(fd, &TimeSpec::UTIME_OMIT, &attrs.mtime())
        .map_err(|errno| io_error("set mtime of", path)(errno.into()))
}

/// Owner and mtime of the symlink `name` in `dir` itself (its mode means
/// nothing on Linux).
fn apply_to_symlink(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &[u8],
    attrs: Attrs,
    meta: Meta,
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
mod tests {
    use super::*;
    use crate::format::CatalogFile;
    use crate::source::test_fixture::{compare_trees, make_fixture_tree};
    use crate::source::{walk, EntryKind};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileExt, MetadataExt};

    fn make_catalog(files: Vec<CatalogFile>) -> Catalog {
        Catalog {
            set_id: crate::format::SetId([7; 16]),
            created_unix_ns: 0,
            chunk_bytes: 1 << 20,
            devices: Vec::new(),
            files,
            segments: Vec::new(),
            ancestors: Vec::new(),
            removed: Vec::new(),
            renamed: Vec::new(),
            mac: [0; 32],
        }
    }

    fn file(path: &[u8], kind: FileKind, mode: u32) -> CatalogFile {
        CatalogFile {
            path: path.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime_sec: 1_500_000_000,
            mtime_nsec: 123_456_789,
            ctime_sec: 0,
            ctime_nsec: 0,
            dev: 0,
            ino: 0,
            size_bytes: 0,
            link_target: Vec::new(),
            hardlink_to: 0,
            digest: [0; 32],
            origin: 0,
            origin_file_id: 0,
        }
    }

    fn why(result: Result<(), TreeError>) -> &'static str {
        match result {
            Err(TreeError::Unsafe { why, .. }) => why,
            other => panic!("expected Unsafe, got {other:?}"),
        }
    }

    /// Every data file good.
    fn all_good(catalog: &Catalog) -> Vec<Verdict> {
        vec![Verdict::Good; catalog.files.len()]
    }

    /// prepare, then `write` for each catalog file with data, then finish.
    fn restore_with(
        root: &Path,
        resolve: at::Resolve,
        catalog: &Catalog,
        selected: &[bool],
        verdicts: &[Verdict],
        write: impl Fn(usize, &fs::File),
    ) -> Finished {
        let staged = prepare_in(Root::open_with(root, resolve).unwrap(), catalog, selected);
        assert!(staged.errors.is_empty(), "{:?}", staged.errors);
        for (i, f) in catalog.files.iter().enumerate() {
            if selected[i] && f.kind.has_data() {
                write(i, &staged.open_for_write(i).unwrap());
            }
        }
        finish(staged, catalog, selected, verdicts, false)
    }

    #[test]
    fn check_rel_accepts_plain_relative_paths() {
        for ok in [&b"a"[..], b"a/b/c", b"..a/b..", b".hidden", b"caf\xe9/x"] {
            check_rel(ok).unwrap();
        }
    }

    #[test]
    fn check_rel_refuses_escapes_and_malformed_paths() {
        assert_eq!(why(check_rel(b"")), "empty path");
        assert_eq!(why(check_rel(b"/etc/passwd")), "absolute path");
        assert_eq!(why(check_rel(b"..")), "'..' path component");
        assert_eq!(why(check_rel(b"a/../../etc")), "'..' path component");
        assert_eq!(why(check_rel(b"a/..")), "'..' path component");
        assert_eq!(why(check_rel(b"a/./b")), "'.' path component");
        assert_eq!(why(check_rel(b".")), "'.' path component");
        assert_eq!(
            why(check_rel(b"a//b")),
            "empty path component ('//' or trailing '/')"
        );
        assert_eq!(
            why(check_rel(b"a/")),
            "empty path component ('//' or trailing '/')"
        );
        assert_eq!(why(check_rel(b"a\0b")), "path contains a NUL byte");
        let error = check_rel(b"x/../\x1b[2Jy").unwrap_err();
        assert_eq!(
            error.to_string(),
            "refusing to restore 'x/../\\e[2Jy': '..' path component"
        );
    }

    #[test]
    fn prepare_and_finish_a_small_catalog() {
        for resolve in [at::Resolve::Openat2, at::Resolve::Walk] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("out");
            let mut files = vec![
                file(b"top", FileKind::Directory, 0o40755),
                file(b"top/ro", FileKind::Directory, 0o40555),
                file(b"top/data", FileKind::Regular, 0o100640),
                file(b"top/implicit/deep/file", FileKind::Regular, 0o100600),
                file(b"top/ro/setuid", FileKind::Regular, 0o104755),
                file(b"top/link", FileKind::Symlink, 0o120777),
                file(b"top/ro/second-name", FileKind::HardLink, 0o100640),
                file(b"top/caf\xe9", FileKind::Regular, 0o100644),
            ];
            files[2].size_bytes = 1 << 20;
            files[2].uid = 1234;
            files[2].gid = 4321;
            files[2].mtime_sec = -1000; // before 1970
            files[3].size_bytes = 10;
            files[4].size_bytes = 3;
            files[5].link_target = b"data".to_vec();
            files[5].mtime_sec = 1_400_000_000;
            files[6].hardlink_to = 2;
            files[1].mtime_nsec = 1;
            let catalog = make_catalog(files);
            let selected = vec![true; catalog.files.len()];

            let staged = prepare_in(
                Root::open_with(&root, resolve).unwrap(),
                &catalog,
                &selected,
            );
            assert!(staged.errors.is_empty(), "{:?}", staged.errors);
            // Nothing is under its final name before finish.
            assert!(fs::symlink_metadata(root.join("top/data")).is_err());
            assert_eq!(
                fs::metadata(root.join("top/ro")).unwrap().mode() & 0o7777,
                DIR_MODE_WHILE_RESTORING
            );
            let data = staged.open_for_write(2).unwrap();
            let m = data.metadata().unwrap();
            assert_eq!(
                (m.len(), m.blocks()),
                (1 << 20, 0),
                "logical size set, all hole"
            );
            data.write_all_at(b"xyz", 4096).unwrap();
            staged
                .open_for_write(4)
                .unwrap()
                .write_all_at(b"#!\n", 0)
                .unwrap();
            let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
            assert!(finished.errors.is_empty(), "{:?}", finished.errors);
            assert!(finished.done.iter().all(|&d| d));
            let only_ours: Vec<_> = fs::read_dir(root.join("top"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.as_bytes().starts_with(b"."))
                .collect();
            assert!(only_ours.is_empty(), "temporary names left: {only_ours:?}");
            let data = root.join("top/data");
            for (i, f) in catalog.files.iter().enumerate() {
                let m = fs::symlink_metadata(root.join(OsStr::from_bytes(&f.path))).unwrap();
                let expect = if f.kind == FileKind::HardLink {
                    &catalog.files[f.hardlink_to as usize]
                } else {
                    f
                };
                let name = f.path.escape_ascii().to_string();
                assert_eq!(m.mode(), expect.mode, "{name}");
                assert_eq!((m.uid(), m.gid()), (expect.uid, expect.gid), "{name}");
                assert_eq!(
                    (m.mtime(), m.mtime_nsec()),
                    (expect.mtime_sec, expect.mtime_nsec as i64),
                    "{name} ({i})"
                );
            }
            assert_eq!(
                fs::read_link(root.join("top/link")).unwrap(),
                Path::new("data")
            );
            let (a, b) = (
                fs::metadata(&data).unwrap(),
                fs::metadata(root.join("top/ro/second-name")).unwrap(),
            );
            assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
            assert!(a.blocks() * 512 < 64 << 10, "holes kept");
            let mut buf = [0u8; 3];
            fs::File::open(&data)
                .unwrap()
                .read_exact_at(&mut buf, 4096)
                .unwrap();
            assert_eq!(&buf, b"xyz");

            // Idempotent: a second restore over the first gives the same tree.
            let finished = restore_with(
                &root,
                resolve,
                &catalog,
                &selected,
                &all_good(&catalog),
                |i, f| {
                    if i == 4 {
                        f.write_all_at(b"#!\n", 0).unwrap()
                    }
                },
            );
            assert!(finished.errors.is_empty(), "{:?}", finished.errors);
            assert_eq!(
                fs::metadata(root.join("top/ro/setuid")).unwrap().mode(),
                0o104755
            );
            assert_eq!(fs::read(root.join("top/ro/setuid")).unwrap(), b"#!\n");
            assert_eq!(fs::metadata(&data).unwrap().nlink(), 2);
        }
    }

    #[test]
    fn failed_files_are_removed_or_kept_partial_and_their_links_fail() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let mut files = vec![
            file(b"bad", FileKind::Regular, 0o100644),
            file(b"link-to-bad", FileKind::HardLink, 0o100644),
            file(b"good", FileKind::Regular, 0o100644),
        ];
        files[0].size_bytes = 8;
        files[2].size_bytes = 4;
        files[1].hardlink_to = 0;
        let catalog = make_catalog(files);
        let selected = [true, true, true];
        let verdicts = [
            Verdict::Failed("digest mismatch".into()),
            Verdict::Good,
            Verdict::Good,
        ];
        for keep_partial in [false, true] {
            let staged = prepare_in(Root::open(&root).unwrap(), &catalog, &selected);
            staged
                .open_for_write(0)
                .unwrap()
                .write_all_at(b"half", 0)
                .unwrap();
            staged
                .open_for_write(2)
                .unwrap()
                .write_all_at(b"good", 0)
                .unwrap();
            let finished = finish(staged, &catalog, &selected, &verdicts, keep_partial);
            let text: Vec<String> = finished.errors.iter().map(|e| e.to_string()).collect();
            assert_eq!(text.len(), 2, "{text:?}");
            assert!(text[0].starts_with("bad: not restored"), "{text:?}");
            assert!(
                text[1].contains("link-to-bad: hard link not made: its target bad was not restored (digest mismatch)"),
                "{text:?}"
            );
            assert_eq!(finished.done, [false, false, true]);
            assert!(fs::symlink_metadata(root.join("bad")).is_err());
            assert!(fs::symlink_metadata(root.join("link-to-bad")).is_err());
            assert_eq!(fs::read(root.join("good")).unwrap(), b"good");
            let partial = root.join("bad.pbio-partial");
            if keep_partial {
                assert!(text[0].contains("kept as bad.pbio-partial"), "{text:?}");
                assert_eq!(&fs::read(&partial).unwrap()[..4], b"half");
            } else {
                assert!(fs::symlink_metadata(&partial).is_err());
            }
            let names = fs::read_dir(&root).unwrap().count();
            assert_eq!(names, 1 + usize::from(keep_partial));
        }
    }

    #[test]
    fn unsafe_names_are_refused_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let mut files = vec![
            file(b"a", FileKind::Regular, 0o100644),
            file(b"../escape", FileKind::Regular, 0o100644),
            file(b"/abs", FileKind::Symlink, 0o120777),
            file(b"b", FileKind::Regular, 0o100644),
        ];
        files[2].link_target = b"x".to_vec();
        let catalog = make_catalog(files);
        let selected = [true; 4];
        let mut staged = prepare_in(Root::open(&root).unwrap(), &catalog, &selected);
        let errors = staged.take_errors();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(staged.refused(1) && staged.refused(2));
        assert!(!staged.refused(0) && !staged.refused(3));
        let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        assert_eq!(finished.done, [true, false, false, true]);
        assert!(root.join("a").is_file() && root.join("b").is_file());
        assert!(!tmp.path().join("escape").exists());
    }

    #[test]
    fn hard_link_to_an_unselected_target_is_reported_and_the_rest_done() {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = vec![
            file(b"target", FileKind::Regular, 0o100644),
            file(b"link", FileKind::HardLink, 0o100644),
            file(b"other", FileKind::Regular, 0o100600),
        ];
        files[1].hardlink_to = 0;
        let catalog = make_catalog(files);
        let selected = [false, true, true];
        let finished = restore_with(
            tmp.path(),
            at::Resolve::Openat2,
            &catalog,
            &selected,
            &all_good(&catalog),
            |_, _| {},
        );
        assert_eq!(finished.errors.len(), 1, "{:?}", finished.errors);
        let text = finished.errors[0].to_string();
        assert!(
            text.starts_with("link: hard link not made")
                && text.contains("target is not being restored"),
            "{text}"
        );
        assert!(!tmp.path().join("link").exists());
        assert!(!tmp.path().join("target").exists());
        assert_eq!(
            fs::metadata(tmp.path().join("other")).unwrap().mode(),
            0o100600
        );
    }

    #[test]
    fn existing_names_are_replaced_without_following_them() {
        for resolve in [at::Resolve::Openat2, at::Resolve::Walk] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("out");
            let outside = tmp.path().join("outside");
            fs::create_dir_all(&root).unwrap();
            fs::write(&outside, b"precious").unwrap();
            let mode_before = fs::metadata(&outside).unwrap().mode();
            // A symlink and a hard link where regular files will go, a file
            // where a symlink will go, a directory where a file will go.
            std::os::unix::fs::symlink(&outside, root.join("file")).unwrap();
            fs::hard_link(&outside, root.join("hard")).unwrap();
            fs::write(root.join("sym"), b"old").unwrap();
            fs::create_dir(root.join("dir")).unwrap();
            let mut files = vec![
                file(b"file", FileKind::Regular, 0o100600),
                file(b"sym", FileKind::Symlink, 0o120777),
                file(b"hard", FileKind::Regular, 0o100600),
                file(b"dir", FileKind::Regular, 0o100600),
            ];
            files[0].size_bytes = 5;
            files[2].size_bytes = 5;
            files[1].link_target = b"file".to_vec();
            let catalog = make_catalog(files);
            let selected = [true; 4];
            let mut staged = prepare_in(
                Root::open_with(&root, resolve).unwrap(),
                &catalog,
                &selected,
            );
            let errors = staged.take_errors();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].to_string().contains("a directory stands where"));
            for i in [0, 2] {
                staged
                    .open_for_write(i)
                    .unwrap()
                    .write_all_at(b"fresh", 0)
                    .unwrap();
            }
            let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
            assert!(finished.errors.is_empty(), "{:?}", finished.errors);
            assert_eq!(fs::read(&outside).unwrap(), b"precious");
            let m = fs::metadata(&outside).unwrap();
            assert_eq!((m.mode(), m.nlink()), (mode_before, 1));
            for name in ["file", "hard"] {
                let m = fs::symlink_metadata(root.join(name)).unwrap();
                assert!(m.is_file() && m.len() == 5, "{name}");
                assert_eq!(fs::read(root.join(name)).unwrap(), b"fresh");
            }
            assert_eq!(fs::read_link(root.join("sym")).unwrap(), Path::new("file"));
            assert!(root.join("dir").is_dir());
        }
    }

    #[test]
    fn symlinks_in_the_way_are_replaced_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        let catalog = make_catalog(vec![file(b"evil/x", FileKind::Regular, 0o100644)]);
        let finished = restore_with(
            &root,
            at::Resolve::Walk,
            &catalog,
            &[true],
            &all_good(&catalog),
            |_, _| {},
        );
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        assert!(fs::symlink_metadata(root.join("evil")).unwrap().is_dir());
        assert!(root.join("evil/x").is_file());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        // Within one catalog: a symlink and an entry below the same name.
        let mut files = vec![
            file(b"a", FileKind::Symlink, 0o120777),
            file(b"a/x", FileKind::Symlink, 0o120777),
        ];
        files[0].link_target = outside.as_os_str().as_bytes().to_vec();
        files[1].link_target = b"y".to_vec();
        let catalog = make_catalog(files);
        let root2 = tmp.path().join("out2");
        let finished = restore_with(
            &root2,
            at::Resolve::Openat2,
            &catalog,
            &[true, true],
            &all_good(&catalog),
            |_, _| {},
        );
        assert_eq!(finished.errors.len(), 1, "{:?}", finished.errors);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    /// Walk the fixture, restore it through prepare / data copy / finish
    /// (the media in between left out), compare with the original.
    #[test]
    fn walk_then_restore_reproduces_the_fixture() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("fixture");
        make_fixture_tree(&source, 40, 2 << 20);
        let walk = walk(std::slice::from_ref(&source)).unwrap();
        assert!(walk.errors.is_empty(), "{:?}", walk.errors);
        let files: Vec<CatalogFile> = walk
            .entries
            .iter()
            .map(|e| {
                let mut f = file(&e.path, FileKind::Regular, e.meta.mode);
                (f.uid, f.gid) = (e.meta.uid, e.meta.gid);
                (f.mtime_sec, f.mtime_nsec) = (e.meta.mtime_sec, e.meta.mtime_nsec);
                match &e.kind {
                    EntryKind::File { size_bytes, .. } => f.size_bytes = *size_bytes,
                    EntryKind::Dir => f.kind = FileKind::Directory,
                    EntryKind::Symlink { target } => {
                        (f.kind, f.link_target) = (FileKind::Symlink, target.clone())
                    }
                    EntryKind::HardLink { target } => {
                        (f.kind, f.hardlink_to) = (FileKind::HardLink, *target)
                    }
                }
                f
            })
            .collect();
        let catalog = make_catalog(files);
        let selected = vec![true; catalog.files.len()];
        let out = tmp.path().join("out");
        let staged = prepare(&out, &catalog, &selected).unwrap();
        for (i, e) in walk.entries.iter().enumerate() {
            let EntryKind::File { size_bytes, data } = &e.kind else {
                continue;
            };
            let ranges = data.clone().unwrap_or(vec![(0, *size_bytes)]);
            let from = fs::File::open(&e.source).unwrap();
            let to = staged.open_for_write(i).unwrap();
            for (offset, len) in ranges {
                let mut buf = vec![0u8; len as usize];
                from.read_exact_at(&mut buf, offset).unwrap();
                to.write_all_at(&buf, offset).unwrap();
            }
        }
        let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        let diffs = compare_trees(&source, &out.join("fixture"));
        assert!(diffs.is_empty(), "{diffs:#?}");
    }
}

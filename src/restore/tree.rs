//! The restored tree: safe paths, creating entries, applying metadata.
//!
//! INTERFACE (fixed; the restore engine builds on it).

use crate::format::{Catalog, CatalogFile, FileKind};
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, futimens, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("refusing to restore '{path}': {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("{op} {path}: {error}")]
    Io {
        op: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Mode a selected directory is created with by `prepare`, so that its
/// contents can be written whatever its final mode; `finish` sets the real one.
pub const DIR_MODE_WHILE_RESTORING: u32 = 0o700;
/// Mode (before umask) of parent directories that are not selected entries.
const DIR_MODE_IMPLICIT: u32 = 0o777;
/// Mode regular files are created with; `finish` sets the real one.
const FILE_MODE_WHILE_RESTORING: u32 = 0o600;

/// Join a stored relative path under `root`, refusing absolute paths, `..`
/// components, empty paths and NUL bytes.
///
/// Also refused: empty components (`a//b`, a trailing `/`) and `.`
/// components. The walker never stores them, so a catalog holding one is
/// damaged or hostile; refusing is simpler to reason about than normalizing.
pub fn safe_join(root: &Path, rel: &[u8]) -> Result<PathBuf, TreeError> {
    let refuse = |why| {
        Err(TreeError::Unsafe {
            path: String::from_utf8_lossy(rel).into_owned(),
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
    Ok(root.join(OsStr::from_bytes(rel)))
}

/// Before data: create `root`, every selected directory, and every selected
/// regular file and block device image (created or truncated, then set to
/// its logical size so that unwritten ranges stay holes). `selected[i]` says whether catalog file i is restored.
///
/// Directories are created with mode `DIR_MODE_WHILE_RESTORING`; parents of
/// selected entries that are not themselves selected are created as needed
/// (mode 0o777 less umask) and keep no catalog metadata. Every directory on
/// the way to an entry is checked to be a real directory, not a symlink, so
/// a restore never writes outside `root` (the symlinks of the set itself
/// are only made by `finish`). A non-directory already at a file's path is
/// removed first: the file is always a fresh inode, so an existing hard
/// link or symlink there is never written through. Stops at the first error.
pub fn prepare(root: &Path, catalog: &Catalog, selected: &[bool]) -> Result<(), TreeError> {
    assert_eq!(
        selected.len(),
        catalog.files.len(),
        "one selection flag per catalog file"
    );
    fs::create_dir_all(root).map_err(io_error("create directory", root))?;
    let mut dirs = Dirs::new(root);
    for (file, _) in catalog.files.iter().zip(selected).filter(|(_, &s)| s) {
        let path = safe_join(root, &file.path)?;
        match file.kind {
            FileKind::Directory => dirs.ensure(&file.path, DIR_MODE_WHILE_RESTORING)?,
            // A block device is restored as an image: a regular file.
            FileKind::Regular | FileKind::BlockDevice => {
                dirs.ensure_parent(&file.path)?;
                create_regular(&path, file.size_bytes)?;
            }
            // Made by `finish`; their parents already exist then.
            FileKind::Symlink | FileKind::HardLink => dirs.ensure_parent(&file.path)?,
        }
    }
    Ok(())
}

/// After data: symlinks and hard links, then owner, mode and mtime of every
/// selected entry (directories last, deepest first, so their mtimes stick).
///
/// Best effort: everything that can be done is done, and the first error
/// is returned (`finish_all` returns all of them).
pub fn finish(root: &Path, catalog: &Catalog, selected: &[bool]) -> Result<(), TreeError> {
    match finish_all(root, catalog, selected).into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// `finish`, returning every error instead of the first.
///
/// Order: symlinks (a non-directory already at the path is replaced), hard
/// links (to the restored path of their target, which must be a selected
/// regular file, else an error for the link), then owner, mode and mtime of
/// regular files and symlinks, then of directories, deepest first. Owner
/// comes before mode (chown clears set-id bits). Owners are set only when
/// running as root (as tar does by default); otherwise entries keep the
/// restoring user's ids. Mode is never applied to symlinks. Hard-link
/// names get no metadata of their own: they share the target's inode.
/// Regular files and directories are opened `O_NOFOLLOW` and changed
/// through the descriptor, so a symlink swapped in is never followed.
pub fn finish_all(root: &Path, catalog: &Catalog, selected: &[bool]) -> Vec<TreeError> {
    assert_eq!(
        selected.len(),
        catalog.files.len(),
        "one selection flag per catalog file"
    );
    let files = &catalog.files;
    let chown = nix::unistd::geteuid().is_root();
    let mut errors = Vec::new();
    let mut dirs = Dirs::new(root);
    let chosen = || files.iter().enumerate().filter(|&(i, _)| selected[i]);

    for (_, file) in chosen().filter(|(_, f)| f.kind == FileKind::Symlink) {
        if let Err(error) = make_symlink(root, &mut dirs, file) {
            errors.push(error);
        }
    }
    for (_, file) in chosen().filter(|(_, f)| f.kind == FileKind::HardLink) {
        if let Err(error) = make_hard_link(root, &mut dirs, files, selected, file) {
            errors.push(error);
        }
    }
    let mut directories = Vec::new();
    for (_, file) in chosen() {
        let result = match file.kind {
            FileKind::Regular | FileKind::BlockDevice => apply_through_fd(root, file, chown, false),
            FileKind::Symlink => apply_to_symlink(root, file, chown),
            FileKind::HardLink => Ok(()),
            FileKind::Directory => {
                directories.push(file);
                Ok(())
            }
        };
        if let Err(error) = result {
            errors.push(error);
        }
    }
    directories
        .sort_by_key(|file| std::cmp::Reverse(file.path.iter().filter(|&&b| b == b'/').count()));
    for file in directories {
        if let Err(error) = apply_through_fd(root, file, chown, true) {
            errors.push(error);
        }
    }
    errors
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |error| TreeError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

/// Directories under the restore root known to be real directories (not
/// symlinks), by stored relative path. Each is lstat'ed (or made) once.
struct Dirs<'a> {
    root: &'a Path,
    known: HashSet<Vec<u8>>,
}

impl<'a> Dirs<'a> {
    fn new(root: &'a Path) -> Dirs<'a> {
        Dirs {
            root,
            known: HashSet::new(),
        }
    }

    /// Make sure every directory on the way to `rel` exists and is a real
    /// directory (`rel` is already known safe).
    fn ensure_parent(&mut self, rel: &[u8]) -> Result<(), TreeError> {
        match rel.iter().rposition(|&b| b == b'/') {
            Some(slash) => self.ensure(&rel[..slash], DIR_MODE_IMPLICIT),
            None => Ok(()),
        }
    }

    /// Make sure `rel` and every directory above it exist as real
    /// directories; `rel` itself, if created, gets `mode`.
    fn ensure(&mut self, rel: &[u8], mode: u32) -> Result<(), TreeError> {
        if self.known.contains(rel) {
            return Ok(());
        }
        self.ensure_parent(rel)?;
        let path = self.root.join(OsStr::from_bytes(rel));
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                match fs::DirBuilder::new().mode(mode).create(&path) {
                    // Lost a race with someone making it: check what it is.
                    Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                    result => result.map_err(io_error("create directory", &path))?,
                }
                fs::symlink_metadata(&path).map_err(io_error("lstat", &path))?
            }
            Err(error) => return Err(io_error("lstat", &path)(error)),
        };
        if !metadata.is_dir() {
            return Err(TreeError::Unsafe {
                path: String::from_utf8_lossy(rel).into_owned(),
                why: if metadata.file_type().is_symlink() {
                    "a symlink stands where a directory must be (would write outside the restore root)"
                } else {
                    "a non-directory stands where a directory must be"
                },
            });
        }
        self.known.insert(rel.to_vec());
        Ok(())
    }
}

/// Create a fresh, empty regular file of logical size `size_bytes` (all
/// hole), replacing any non-directory already at `path`.
fn create_regular(path: &Path, size_bytes: u64) -> Result<(), TreeError> {
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true) // O_EXCL: never follows a symlink, never reuses an inode
            .mode(FILE_MODE_WHILE_RESTORING)
            .open(path)
    };
    let file = match create() {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            remove_non_directory(path)?;
            create()
        }
        result => result,
    }
    .map_err(io_error("create file", path))?;
    file.set_len(size_bytes)
        .map_err(io_error("set length of", path))
}

/// Remove whatever non-directory is at `path`; a directory there is an error.
fn remove_non_directory(path: &Path) -> Result<(), TreeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("remove existing", path)(error)),
    }
}

/// Run `make` (a creation that fails with AlreadyExists when the name is
/// taken); if the name is taken by a non-directory, remove it and retry once.
fn create_replacing(
    path: &Path,
    op: &'static str,
    make: impl Fn() -> io::Result<()>,
) -> Result<(), TreeError> {
    match make() {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            remove_non_directory(path)?;
            make().map_err(io_error(op, path))
        }
        result => result.map_err(io_error(op, path)),
    }
}

fn make_symlink(root: &Path, dirs: &mut Dirs, file: &CatalogFile) -> Result<(), TreeError> {
    let path = safe_join(root, &file.path)?;
    dirs.ensure_parent(&file.path)?;
    let target = OsStr::from_bytes(&file.link_target);
    create_replacing(&path, "create symlink", || {
        std::os::unix::fs::symlink(target, &path)
    })
}

fn make_hard_link(
    root: &Path,
    dirs: &mut Dirs,
    files: &[CatalogFile],
    selected: &[bool],
    file: &CatalogFile,
) -> Result<(), TreeError> {
    let path = safe_join(root, &file.path)?;
    let index = file.hardlink_to as usize;
    let Some(target) = files.get(index).filter(|t| t.kind == FileKind::Regular) else {
        return Err(TreeError::Unsafe {
            path: String::from_utf8_lossy(&file.path).into_owned(),
            why: "hard link whose target is not a regular file of the catalog",
        });
    };
    if !selected[index] {
        let error = io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "its target '{}' is not being restored",
                String::from_utf8_lossy(&target.path)
            ),
        );
        return Err(TreeError::Io {
            op: "hard link",
            path,
            error,
        });
    }
    let target_path = safe_join(root, &target.path)?;
    dirs.ensure_parent(&file.path)?;
    // link(2) does not follow a symlink at `target_path` (and prepare made
    // a fresh regular file there).
    create_replacing(&path, "hard link", || fs::hard_link(&target_path, &path))
}

fn mtime_of(file: &CatalogFile) -> TimeSpec {
    TimeSpec::new(
        file.mtime_sec as libc::time_t,
        file.mtime_nsec as libc::c_long,
    )
}

/// Owner, mode, mtime of a regular file or directory, through an
/// `O_NOFOLLOW` descriptor.
fn apply_through_fd(
    root: &Path,
    file: &CatalogFile,
    chown: bool,
    directory: bool,
) -> Result<(), TreeError> {
    let path = safe_join(root, &file.path)?;
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(&path)
        .map_err(io_error("open to set metadata of", &path))?;
    let fd = handle.as_raw_fd();
    if chown {
        fchown(
            fd,
            Some(Uid::from_raw(file.uid)),
            Some(Gid::from_raw(file.gid)),
        )
        .map_err(|errno| io_error("chown", &path)(errno.into()))?;
    }
    fchmod(
        fd,
        Mode::from_bits_truncate((file.mode & 0o7777) as libc::mode_t),
    )
    .map_err(|errno| io_error("chmod", &path)(errno.into()))?;
    futimens(fd, &TimeSpec::UTIME_OMIT, &mtime_of(file))
        .map_err(|errno| io_error("set mtime of", &path)(errno.into()))
}

/// Owner and mtime of a symlink itself (its mode means nothing on Linux).
fn apply_to_symlink(root: &Path, file: &CatalogFile, chown: bool) -> Result<(), TreeError> {
    let path = safe_join(root, &file.path)?;
    if chown {
        fchownat(
            None,
            &path,
            Some(Uid::from_raw(file.uid)),
            Some(Gid::from_raw(file.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| io_error("chown", &path)(errno.into()))?;
    }
    utimensat(
        None,
        &path,
        &TimeSpec::UTIME_OMIT,
        &mtime_of(file),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|errno| io_error("set mtime of", &path)(errno.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::CatalogFile;
    use crate::source::test_fixture::{compare_trees, make_fixture_tree};
    use crate::source::{walk, EntryKind};
    use std::os::unix::fs::{FileExt, MetadataExt};

    fn make_catalog(files: Vec<CatalogFile>) -> Catalog {
        Catalog {
            set_id: [7; 16],
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

    fn why(result: Result<PathBuf, TreeError>) -> &'static str {
        match result {
            Err(TreeError::Unsafe { why, .. }) => why,
            other => panic!("expected Unsafe, got {other:?}"),
        }
    }

    #[test]
    fn safe_join_accepts_plain_relative_paths() {
        let root = Path::new("/restore");
        assert_eq!(safe_join(root, b"a").unwrap(), Path::new("/restore/a"));
        assert_eq!(
            safe_join(root, b"a/b/c").unwrap(),
            Path::new("/restore/a/b/c")
        );
        assert_eq!(
            safe_join(root, b"..a/b..").unwrap(),
            Path::new("/restore/..a/b..")
        );
        assert_eq!(
            safe_join(root, b".hidden").unwrap(),
            Path::new("/restore/.hidden")
        );
        let odd = safe_join(root, b"caf\xe9/x").unwrap();
        assert_eq!(odd.as_os_str().as_bytes(), b"/restore/caf\xe9/x");
    }

    #[test]
    fn safe_join_refuses_escapes_and_malformed_paths() {
        let root = Path::new("/restore");
        assert_eq!(why(safe_join(root, b"")), "empty path");
        assert_eq!(why(safe_join(root, b"/etc/passwd")), "absolute path");
        assert_eq!(why(safe_join(root, b"..")), "'..' path component");
        assert_eq!(why(safe_join(root, b"a/../../etc")), "'..' path component");
        assert_eq!(why(safe_join(root, b"a/..")), "'..' path component");
        assert_eq!(why(safe_join(root, b"a/./b")), "'.' path component");
        assert_eq!(why(safe_join(root, b".")), "'.' path component");
        assert_eq!(
            why(safe_join(root, b"a//b")),
            "empty path component ('//' or trailing '/')"
        );
        assert_eq!(
            why(safe_join(root, b"a/")),
            "empty path component ('//' or trailing '/')"
        );
        assert_eq!(why(safe_join(root, b"a\0b")), "path contains a NUL byte");
        match safe_join(root, b"x/../y") {
            Err(error @ TreeError::Unsafe { .. }) => {
                assert_eq!(
                    error.to_string(),
                    "refusing to restore 'x/../y': '..' path component"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prepare_and_finish_a_small_catalog() {
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

        prepare(&root, &catalog, &selected).unwrap();
        let data = root.join("top/data");
        let m = fs::metadata(&data).unwrap();
        assert_eq!(
            (m.len(), m.blocks()),
            (1 << 20, 0),
            "logical size set, all hole"
        );
        assert_eq!(
            fs::metadata(root.join("top/ro")).unwrap().mode() & 0o7777,
            DIR_MODE_WHILE_RESTORING
        );
        assert!(fs::metadata(root.join("top/implicit/deep/file"))
            .unwrap()
            .is_file());
        // The restore engine writes data here; mode 0o555 is applied only later.
        fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .write_all_at(b"xyz", 4096)
            .unwrap();
        fs::write(root.join("top/ro/setuid"), b"#!\n").unwrap();

        finish(&root, &catalog, &selected).unwrap();
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
        prepare(&root, &catalog, &selected).unwrap();
        fs::write(root.join("top/ro/setuid"), b"#!\n").unwrap();
        finish(&root, &catalog, &selected).unwrap();
        assert_eq!(
            fs::metadata(root.join("top/ro/setuid")).unwrap().mode(),
            0o104755
        );
        assert_eq!(fs::metadata(&data).unwrap().nlink(), 2);
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
        prepare(tmp.path(), &catalog, &selected).unwrap();
        let errors = finish_all(tmp.path(), &catalog, &selected);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = errors[0].to_string();
        assert!(
            text.starts_with("hard link ") && text.contains("'target' is not being restored"),
            "{text}"
        );
        assert!(!tmp.path().join("link").exists());
        assert!(!tmp.path().join("target").exists());
        assert_eq!(
            fs::metadata(tmp.path().join("other")).unwrap().mode(),
            0o100600
        );
        assert!(finish(tmp.path(), &catalog, &selected).is_err());
    }

    #[test]
    fn existing_names_are_replaced_without_following_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::write(&outside, b"precious").unwrap();
        // A symlink where a regular file will go, a file where a symlink will go.
        std::os::unix::fs::symlink(&outside, root.join("file")).unwrap();
        fs::write(root.join("sym"), b"old").unwrap();
        let mut files = vec![
            file(b"file", FileKind::Regular, 0o100600),
            file(b"sym", FileKind::Symlink, 0o120777),
        ];
        files[0].size_bytes = 5;
        files[1].link_target = b"file".to_vec();
        let catalog = make_catalog(files);
        let selected = [true, true];
        prepare(&root, &catalog, &selected).unwrap();
        finish(&root, &catalog, &selected).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
        assert_ne!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o600);
        let m = fs::symlink_metadata(root.join("file")).unwrap();
        assert!(m.is_file() && m.len() == 5);
        assert_eq!(fs::read_link(root.join("sym")).unwrap(), Path::new("file"));
    }

    #[test]
    fn symlinked_parents_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        let catalog = make_catalog(vec![file(b"evil/x", FileKind::Regular, 0o100644)]);
        match prepare(&root, &catalog, &[true]) {
            Err(TreeError::Unsafe { path, why }) => {
                assert_eq!(path, "evil");
                assert!(why.contains("symlink"), "{why}");
            }
            other => panic!("expected Unsafe, got {other:?}"),
        }
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
        prepare(&root2, &catalog, &[true, true]).unwrap();
        let errors = finish_all(&root2, &catalog, &[true, true]);
        assert!(!errors.is_empty());
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
        prepare(&out, &catalog, &selected).unwrap();
        for e in &walk.entries {
            let EntryKind::File { size_bytes, data } = &e.kind else {
                continue;
            };
            let ranges = data.clone().unwrap_or(vec![(0, *size_bytes)]);
            let from = fs::File::open(&e.source).unwrap();
            let to = fs::OpenOptions::new()
                .write(true)
                .open(safe_join(&out, &e.path).unwrap())
                .unwrap();
            for (offset, len) in ranges {
                let mut buf = vec![0u8; len as usize];
                from.read_exact_at(&mut buf, offset).unwrap();
                to.write_all_at(&buf, offset).unwrap();
            }
        }
        finish(&out, &catalog, &selected).unwrap();
        let diffs = compare_trees(&source, &out.join("fixture"));
        assert!(diffs.is_empty(), "{diffs:#?}");
    }
}

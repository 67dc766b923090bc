//! File-system operations of restore, all relative to one directory file
//! descriptor (the restore root) and never through a symlink: whatever the
//! medium holds and whatever the destination already holds, nothing
//! outside the root is created, changed or removed.
//!
//! Paths are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`; on a kernel without it (ENOSYS, before 5.6)
//! by a walk from the root, one component at a time, each opened
//! `O_NOFOLLOW | O_DIRECTORY` relative to the one before. Every name handed
//! to this module has been checked by `tree::check_rel` (no empty, `.` or
//! `..` component, not absolute, no NUL); the walk refuses them again.
//!
//! The `unsafe` of restore's file-system side is here: the `openat2`
//! system call and taking ownership of descriptors the kernel returned.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

/// Mode (before umask) of directories made on the way to an entry.
pub const DIR_MODE_IMPLICIT: u32 = 0o777;
/// Attempts at one component of `ensure_dir` before giving up (another
/// process replacing what was just made, again and again).
const ENSURE_ATTEMPTS_MAX: usize = 4;
/// Attempts at a fresh temporary name before giving up.
const TEMP_NAME_ATTEMPTS_MAX: usize = 16;
/// Bytes of the entry's own name kept in its temporary name, so that the
/// temporary name stays under NAME_MAX (255).
const TEMP_NAME_STEM_BYTES_MAX: usize = 200;

/// Set once `openat2` returned ENOSYS: later roots walk from the start.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// How paths below the root are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
    Openat2,
    /// Component by component, each `O_NOFOLLOW | O_DIRECTORY`.
    Walk,
}

/// The restore root: a directory opened once, everything else relative to it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    resolve: Resolve,
}

/// Take ownership of a descriptor a system call returned.
fn owned(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0, "descriptor from a successful call");
    // SAFETY: `fd` was just returned by a successful open and is owned by
    // no one else; the OwnedFd closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The components of a checked relative path (empty: the root itself).
fn components(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    rel.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// A component the walk must never meet (the callers refuse these first).
fn bad_component(c: &[u8]) -> bool {
    c == b"." || c == b".." || c.contains(&0)
}

/// Split a checked relative path into its parent (empty: the root) and its last name.
pub fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&rel[..slash], &rel[slash + 1..]),
        None => (&[], rel),
    }
}

impl Root {
    /// Create `path` if missing (its own ancestors are the user's choice and
    /// may be symlinks), open it, and pick `openat2` when the kernel has it.
    pub fn open(path: &Path) -> io::Result<Root> {
        Root::open_with(path, Root::resolve_default())
    }

    /// `openat2` unless the kernel was found without it.
    fn resolve_default() -> Resolve {
        if OPENAT2_MISSING.load(Ordering::Relaxed) {
            Resolve::Walk
        } else {
            Resolve::Openat2
        }
    }

    /// Open the existing directory `path` (nothing is created: `pbio diff`
    /// only reads below it), resolving as `open` does.
    pub fn open_existing(path: &Path) -> io::Result<Root> {
        Root::open_dir(path, Root::resolve_default())
    }

    /// `open` with the resolution chosen (tests force the walk).
    pub fn open_with(path: &Path, resolve: Resolve) -> io::Result<Root> {
        std::fs::create_dir_all(path)?;
        Root::open_dir(path, resolve)
    }

    /// Open the existing directory `path` as the root.
    fn open_dir(path: &Path, resolve: Resolve) -> io::Result<Root> {
        let fd = nix::fcntl::openat(
            None,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Root {
            fd: owned(fd),
            path: path.to_path_buf(),
            resolve,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn resolve(&self) -> Resolve {
        self.resolve
    }

    /// The path of `rel` for messages (never used to open anything).
    pub fn shown(&self, rel: &[u8]) -> PathBuf {
        self.path.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Open `rel` below the root with `flags` (`O_CLOEXEC | O_NOFOLLOW`
    /// added); no component may be a symlink, the last one included
    /// (ELOOP). The empty path opens the root again.
    pub fn open_at(&self, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if rel.is_empty() {
            return reopen(self.fd.as_fd(), flags);
        }
        if rel[0] == b'/' || components(rel).any(bad_component) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        if self.resolve == Resolve::Openat2 && !OPENAT2_MISSING.load(Ordering::Relaxed) {
            match openat2_beneath(self.fd.as_fd(), rel, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    OPENAT2_MISSING.store(true, Ordering::Relaxed);
                }
                result => return result,
            }
        }
        self.walk(rel, flags)
    }

    /// Component by component from the root, each directory `O_NOFOLLOW`.
    fn walk(&self, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
        let (parent, name) = split_parent(rel);
        let mut dir = reopen(self.fd.as_fd(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        for c in components(parent) {
            dir = open_dir_in(dir.as_fd(), c)?;
        }
        open_fd(dir.as_fd(), name, flags | OFlag::O_NOFOLLOW)
    }

    /// Make sure `rel` and every directory above it are real directories
    /// below the root, and open it. A missing one is made (`rel` itself
    /// with `mode`, the others with `DIR_MODE_IMPLICIT`, both less umask);
    /// a symlink or any other non-directory in the way is removed and
    /// replaced by a directory (tar's default), never followed.
    pub fn ensure_dir(&self, rel: &[u8], mode: u32) -> io::Result<OwnedFd> {
        Ok(self.ensure_dir_made(rel, mode)?.0)
    }

    /// `ensure_dir`, and whether `rel` itself was made by this call (its
    /// `mkdirat` succeeded) rather than found.
    pub fn ensure_dir_made(&self, rel: &[u8], mode: u32) -> io::Result<(OwnedFd, bool)> {
        match self.open_at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => return Ok((fd, false)),
            Err(e) if is_not_there_or_not_dir(&e) => {}
            Err(e) => return Err(e),
        }
        let mut dir = reopen(self.fd.as_fd(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut made = false;
        let count = components(rel).count();
        for (i, c) in components(rel).enumerate() {
            if bad_component(c) {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            let mode = if i + 1 == count {
                mode
            } else {
                DIR_MODE_IMPLICIT
            };
            (dir, made) = ensure_one(dir.as_fd(), c, mode)?;
        }
        Ok((dir, made && count > 0))
    }

    /// `ensure_dir` of the parent of `rel`; returns it and `rel`'s last name.
    pub fn ensure_parent<'r>(&self, rel: &'r [u8]) -> io::Result<(OwnedFd, &'r [u8])> {
        let (parent, name) = split_parent(rel);
        Ok((self.ensure_dir(parent, DIR_MODE_IMPLICIT)?, name))
    }

    /// Open the parent directory of `rel` (which must exist as a real
    /// directory); returns it and `rel`'s last name.
    pub fn parent<'r>(&self, rel: &'r [u8]) -> io::Result<(OwnedFd, &'r [u8])> {
        let (parent, name) = split_parent(rel);
        Ok((
            self.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?,
            name,
        ))
    }
}

/// ENOENT, ELOOP (a symlink), ENOTDIR (a non-directory), EXDEV (openat2:
/// the path would leave the root): `ensure_dir` walks and repairs.
fn is_not_there_or_not_dir(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
    )
}

/// A new descriptor of the directory `fd` refers to, with `flags`.
fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> io::Result<OwnedFd> {
    open_fd(fd, b".", flags)
}

/// `openat(dir, name, flags | O_CLOEXEC)`, owned. The callers add
/// `O_NOFOLLOW` where `name` must not be a symlink.
fn open_fd(dir: BorrowedFd<'_>, name: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    Ok(owned(fd))
}

/// Open the directory `name` in `dir`, not following a symlink.
fn open_dir_in(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    if bad_component(name) {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    open_fd(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
    )
}

/// Open the entry `name` (one component) in `dir` with `flags`
/// (`O_NOFOLLOW | O_CLOEXEC` added): never through a symlink.
pub fn open_in(dir: BorrowedFd<'_>, name: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    if bad_component(name) || name.is_empty() || name.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    open_fd(dir, name, flags | OFlag::O_NOFOLLOW)
}

/// Open directory `name` in `dir`, making it (with `mode`) when missing and
/// replacing whatever non-directory stands there.
fn ensure_one(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<(OwnedFd, bool)> {
    let mut last = None;
    let mut made = false;
    for _ in 0..ENSURE_ATTEMPTS_MAX {
        match open_dir_in(dir, name) {
            Ok(fd) => return Ok((fd, made)),
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => {}
                // A symlink (ELOOP under O_NOFOLLOW) or another non-directory.
                Some(libc::ELOOP | libc::ENOTDIR) => {
                    match nix::unistd::unlinkat(
                        Some(dir.as_raw_fd()),
                        name,
                        UnlinkatFlags::NoRemoveDir,
                    ) {
                        Ok(()) | Err(Errno::ENOENT) => {}
                        Err(e) => return Err(errno(e)),
                    }
                    last = Some(e);
                }
                _ => return Err(e),
            },
        }
        match nix::sys::stat::mkdirat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(mode as libc::mode_t),
        ) {
            Ok(()) => made = true,
            Err(Errno::EEXIST) => made = false,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ELOOP)))
}

/// `openat2(dir, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`.
fn openat2_beneath(dir: BorrowedFd<'_>, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    let path =
        std::ffi::CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags.bits() as u64;
    how.mode = 0;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `path` is a NUL-terminated string and `how` a valid
        // open_how, both alive for the call; the size passed is its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            return Ok(owned(fd as RawFd));
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a concurrent rename anywhere on the system made the
        // lookup unsafe to complete; the kernel asks for a retry.
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return Err(e);
        }
    }
}

/// A fresh random temporary name for `name` in its directory:
/// `.NAME.pbio-XXXXXXXXXXXX` (NAME shortened so the result stays a valid name).
pub fn temp_name(name: &[u8]) -> Vec<u8> {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(name);
    let suffix = hasher.finish() & 0xffff_ffff_ffff;
    let stem = &name[..name.len().min(TEMP_NAME_STEM_BYTES_MAX)];
    let mut out = Vec::with_capacity(stem.len() + 20);
    out.push(b'.');
    out.extend_from_slice(stem);
    out.extend_from_slice(format!(".pbio-{suffix:012x}").as_bytes());
    out
}

/// Create a new regular file under a fresh temporary name in `dir`
/// (`O_EXCL`: never an existing name, never through a symlink), mode
/// `mode` less umask, opened read-write. Returns it and its name.
pub fn create_temp(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<(OwnedFd, Vec<u8>)> {
    let mut last = io::Error::from_raw_os_error(libc::EEXIST);
    for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
        let temp = temp_name(name);
        match nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            &temp[..],
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode as libc::mode_t),
        ) {
            Ok(fd) => return Ok((owned(fd), temp)),
            Err(Errno::EEXIST) => last = errno(Errno::EEXIST),
            Err(e) => return Err(errno(e)),
        }
    }
    Err(last)
}

/// Create the new regular file `name` in `dir` (`O_EXCL | O_NOFOLLOW`:
/// never an existing name, never through a symlink), mode `mode` less
/// umask, opened write-only.
pub fn create_in(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<OwnedFd> {
    if bad_component(name) || name.is_empty() || name.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(errno)?;
    Ok(owned(fd))
}

/// Raise the soft limit on open descriptors to the hard limit (at most
/// `max`); returns the soft limit now in force.
pub fn raise_open_files_limit(max: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let want = lim.rlim_max.min(max);
    if want > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit, read by the call only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return want;
        }
    }
    lim.rlim_cur
}

/// Make a symlink `target` under a fresh temporary name in `dir`; returns the name.
pub fn symlink_temp(dir: BorrowedFd<'_>, name: &[u8], target: &[u8]) -> io::Result<Vec<u8>> {
    for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
        let temp = temp_name(name);
        match nix::unistd::symlinkat(target, Some(dir.as_raw_fd()), &temp[..]) {
            Ok(()) => return Ok(temp),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(errno(Errno::EEXIST))
}

/// Hard-link `from_name` in `from_dir` under a fresh temporary name in `dir`;
/// returns the name. A symlink at `from_name` is linked itself, never followed.
pub fn link_temp(
    from_dir: BorrowedFd<'_>,
    from_name: &[u8],
    dir: BorrowedFd<'_>,
    name: &[u8],
) -> io::Result<Vec<u8>> {
    for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
        let temp = temp_name(name);
        match nix::unistd::linkat(
            Some(from_dir.as_raw_fd()),
            from_name,
            Some(dir.as_raw_fd()),
            &temp[..],
            nix::fcntl::AtFlags::empty(),
        ) {
            Ok(()) => return Ok(temp),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(errno(Errno::EEXIST))
}

/// Rename `from` to `to`, both in `dir`: atomically replaces any
/// non-directory at `to` (never writing through it); a directory at `to`
/// is an error (EISDIR). `from` must be an inode this restore just made
/// (a new file, node or symlink), so never one `to` already names: then
/// rename always moves it, and no unlink follows (issue 23: one system
/// call less per file). A hard link uses `rename_link_in`.
pub fn rename_in(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> io::Result<()> {
    nix::fcntl::renameat(Some(dir.as_raw_fd()), from, Some(dir.as_raw_fd()), to).map_err(errno)
}

/// `rename_in` of a hard link just made to an existing inode: when `to`
/// already names that inode, rename does nothing (POSIX), and `from` is
/// then removed.
pub fn rename_link_in(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> io::Result<()> {
    rename_in(dir, from, to)?;
    match nix::unistd::unlinkat(Some(dir.as_raw_fd()), from, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Remove the non-directory `name` in `dir` (restore removes only the
/// temporary names it made itself).
pub fn remove_in(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Whether `name` in `dir` is a directory (not following a symlink).
pub fn is_dir_in(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    match nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// Make a special file (`kind`: S_IFIFO, S_IFCHR or S_IFBLK) of device
/// number `rdev` and permission bits `mode` (less umask) under a fresh
/// temporary name in `dir`; returns the name.
pub fn mknod_temp(
    dir: BorrowedFd<'_>,
    name: &[u8],
    kind: nix::sys::stat::SFlag,
    mode: u32,
    rdev: u64,
) -> io::Result<Vec<u8>> {
    for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
        let temp = temp_name(name);
        match nix::sys::stat::mknodat(
            Some(dir.as_raw_fd()),
            &temp[..],
            kind,
            Mode::from_bits_truncate(mode as libc::mode_t),
            rdev as libc::dev_t,
        ) {
            Ok(()) => return Ok(temp),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(errno(Errno::EEXIST))
}

/// `bytes` as a C string; `what` names it in the error when it holds a NUL.
fn c_string(bytes: impl Into<Vec<u8>>, what: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} with a NUL byte"),
        )
    })
}

/// The result of a libc call that returns a negative number on failure
/// and sets errno.
fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Set the extended attribute `name` to `value` on the open file `fd`.
pub fn set_xattr_fd(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = c_string(name, "xattr name")?;
    // SAFETY: `name` is NUL-terminated; `value` is valid for its length;
    // `fd` is an open descriptor borrowed for the call.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// Set the extended attribute `attr` to `value` on `name` in `dir` itself,
/// never following a symlink there (a symlink or a device node cannot be
/// opened for `fsetxattr` without opening what it stands for):
/// `lsetxattr` on `/proc/self/fd/DIR/NAME`, which resolves to the
/// directory `dir` is (a magic link to the open directory, not a path
/// walk from the root) and does not follow the final name.
pub fn set_xattr_in(dir: BorrowedFd<'_>, name: &[u8], attr: &[u8], value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = c_string(path, "name")?;
    let attr = c_string(attr, "xattr name")?;
    // SAFETY: `path` and `attr` are NUL-terminated; `value` is valid for its length.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            attr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// File flags a process may set with FS_IOC_SETFLAGS (the kernel's
/// FS_FL_USER_MODIFIABLE): the others are the filesystem's own.
pub const FLAGS_SETTABLE: u32 = 0x0003_80ff;

/// The file flags of the open regular file or directory `fd`.
pub fn get_flags(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which
    // points at `flags`, alive for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) })?;
    Ok(flags as u32)
}

/// Give the open regular file or directory `fd` the settable bits of
/// `flags` (`FLAGS_SETTABLE`), keeping the filesystem's own; nothing is
/// asked of the filesystem when they already agree.
pub fn set_flags(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let now = match get_flags(fd) {
        Ok(now) => now,
        // A filesystem without flags holds "none" already.
        Err(e)
            if flags & FLAGS_SETTABLE == 0
                && matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let want = (now & !FLAGS_SETTABLE) | (flags & FLAGS_SETTABLE);
    if want == now {
        return Ok(());
    }
    let want = want as libc::c_int;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
    // points at `want`, alive for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &want) })?;
    Ok(())
}

/// The process umask, read without changing it (`/proc/self/status`),
/// else by setting and restoring it.
pub fn umask() -> u32 {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(mask) = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        {
            return mask & 0o777;
        }
    }
    let mask = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(mask);
    mask.bits() & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn both() -> [Resolve; 2] {
        [Resolve::Openat2, Resolve::Walk]
    }

    #[test]
    fn open_at_never_follows_a_symlink_anywhere() {
        for resolve in both() {
            let tmp = tempfile::tempdir().unwrap();
            let root_path = tmp.path().join("root");
            let outside = tmp.path().join("outside");
            fs::create_dir_all(root_path.join("real/deeper")).unwrap();
            fs::create_dir_all(&outside).unwrap();
            fs::write(outside.join("secret"), b"x").unwrap();
            fs::write(root_path.join("real/file"), b"ok").unwrap();
            std::os::unix::fs::symlink(&outside, root_path.join("abs")).unwrap();
            std::os::unix::fs::symlink("..", root_path.join("real/up")).unwrap();
            std::os::unix::fs::symlink("file", root_path.join("real/flink")).unwrap();
            let root = Root::open_with(&root_path, resolve).unwrap();
            assert_eq!(root.resolve(), resolve);
            let rd = OFlag::O_RDONLY;
            assert!(root.open_at(b"real/file", rd).is_ok(), "{resolve:?}");
            assert!(root.open_at(b"", rd | OFlag::O_DIRECTORY).is_ok());
            for bad in [
                &b"abs/secret"[..],
                b"abs",
                b"real/up/real/file",
                b"real/flink",
                b"../root/real/file",
                b"/etc/passwd",
                b"real/./file",
            ] {
                let e = root.open_at(bad, rd).unwrap_err();
                assert!(
                    matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR)
                    ),
                    "{resolve:?} {}: {e}",
                    bad.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn ensure_dir_replaces_symlinks_and_files_and_never_leaves_the_root() {
        for resolve in both() {
            let tmp = tempfile::tempdir().unwrap();
            let root_path = tmp.path().join("root");
            let outside = tmp.path().join("outside");
            fs::create_dir_all(root_path.join("a")).unwrap();
            fs::create_dir_all(&outside).unwrap();
            std::os::unix::fs::symlink(&outside, root_path.join("a/b")).unwrap();
            fs::write(root_path.join("plain"), b"file").unwrap();
            let root = Root::open_with(&root_path, resolve).unwrap();
            root.ensure_dir(b"a/b/c", 0o700).unwrap();
            let m = fs::symlink_metadata(root_path.join("a/b")).unwrap();
            assert!(m.is_dir(), "{resolve:?}: symlink replaced by a directory");
            let c = fs::symlink_metadata(root_path.join("a/b/c")).unwrap();
            assert!(c.is_dir());
            assert_eq!(c.mode() & 0o777, 0o700);
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
            root.ensure_dir(b"plain/x", 0o755).unwrap();
            assert!(fs::symlink_metadata(root_path.join("plain"))
                .unwrap()
                .is_dir());
            // Existing directories are kept as they are.
            fs::write(root_path.join("a/b/c/keep"), b"k").unwrap();
            root.ensure_dir(b"a/b/c", 0o755).unwrap();
            assert_eq!(fs::read(root_path.join("a/b/c/keep")).unwrap(), b"k");
            assert!(root.ensure_dir(b"a/../..", 0o755).is_err());
        }
    }

    #[test]
    fn temp_files_are_renamed_over_links_without_writing_through_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        fs::create_dir_all(&root_path).unwrap();
        let canary = tmp.path().join("canary");
        fs::write(&canary, b"precious").unwrap();
        fs::hard_link(&canary, root_path.join("hard")).unwrap();
        std::os::unix::fs::symlink(&canary, root_path.join("sym")).unwrap();
        fs::create_dir(root_path.join("dir")).unwrap();
        let root = Root::open_with(&root_path, Resolve::Walk).unwrap();
        let (dir, _) = root.parent(b"hard").unwrap();
        for name in [&b"hard"[..], b"sym"] {
            let (file, temp) = create_temp(dir.as_fd(), name, 0o600).unwrap();
            assert!(temp.starts_with(b".") && temp.len() > name.len() + 6);
            nix::unistd::write(&file, b"new").unwrap();
            rename_in(dir.as_fd(), &temp, name).unwrap();
            assert_eq!(
                fs::read(root_path.join(std::str::from_utf8(name).unwrap())).unwrap(),
                b"new"
            );
        }
        assert_eq!(fs::read(&canary).unwrap(), b"precious");
        let (_, temp) = create_temp(dir.as_fd(), b"dir", 0o600).unwrap();
        assert!(rename_in(dir.as_fd(), &temp, b"dir").is_err());
        remove_in(dir.as_fd(), &temp).unwrap();
        assert!(is_dir_in(dir.as_fd(), b"dir").unwrap());
        let names: Vec<_> = fs::read_dir(&root_path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let long = vec![b'n'; 255];
        let (_, temp) = create_temp(dir.as_fd(), &long, 0o600).unwrap();
        assert!(temp.len() <= 255);
    }

    #[test]
    fn a_hard_link_renamed_onto_a_name_of_its_own_inode_leaves_no_temporary_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        fs::create_dir_all(&root_path).unwrap();
        fs::write(root_path.join("target"), b"t").unwrap();
        fs::hard_link(root_path.join("target"), root_path.join("link")).unwrap();
        let root = Root::open_with(&root_path, Resolve::Walk).unwrap();
        let (dir, _) = root.parent(b"link").unwrap();
        let temp = link_temp(dir.as_fd(), b"target", dir.as_fd(), b"link").unwrap();
        rename_link_in(dir.as_fd(), &temp, b"link").unwrap();
        let mut names: Vec<_> = fs::read_dir(&root_path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["link", "target"]);
    }

    #[test]
    fn umask_reads_the_process_mask() {
        let mask = umask();
        assert_eq!(mask & !0o777, 0);
        assert_eq!(umask(), mask, "reading does not change it");
    }
}

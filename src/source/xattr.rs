//! Reading the metadata beyond `stat` of one entry: its extended
//! attributes (`user.*`, `trusted.*`, `security.*` including
//! `security.capability`, and POSIX ACLs as their `system.posix_acl_*`
//! values) and its file flags (FS_IOC_GETFLAGS: immutable, append-only,
//! ...). Raw `llistxattr`/`lgetxattr` calls on the path, never following
//! a symlink; the `unsafe` of reading them is here.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::format::{Xattr, XATTR_NAME_MAX, XATTR_VALUE_MAX};

/// Attempts at reading a list or value that keeps growing between the
/// size query and the read (ERANGE) before giving up.
const GROW_ATTEMPTS_MAX: usize = 8;

/// Whether an errno says "this filesystem has no xattrs / no flags".
fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Call `f(buf)` with a buffer of the size `f(empty)` reports, growing it
/// while the answer grows (ERANGE). `Ok(None)` when `f` says ENODATA (the
/// attribute went away meanwhile).
fn sized(mut f: impl FnMut(&mut [u8]) -> isize) -> io::Result<Option<Vec<u8>>> {
    for _ in 0..GROW_ATTEMPTS_MAX {
        let n = f(&mut []);
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENODATA) {
                return Ok(None);
            }
            return Err(error);
        }
        let mut buf = vec![0u8; n as usize];
        if buf.is_empty() {
            return Ok(Some(buf));
        }
        let m = f(&mut buf);
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(Some(buf));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ERANGE) => continue,
            Some(libc::ENODATA) => return Ok(None),
            _ => return Err(error),
        }
    }
    Err(io::Error::other(
        "extended attributes kept growing while read",
    ))
}

/// Every extended attribute of `path` (not following a symlink there),
/// sorted by name. A filesystem without xattrs gives none.
pub fn read(path: &Path) -> io::Result<Vec<Xattr>> {
    let c = c_path(path)?;
    let list = sized(|buf| {
        // SAFETY: `c` is a NUL-terminated path; `buf` is valid for
        // `buf.len()` bytes (a null pointer with size 0 asks for the size).
        unsafe { libc::llistxattr(c.as_ptr(), out_ptr(buf), buf.len()) }
    });
    let list = match list {
        Ok(list) => list.unwrap_or_default(),
        Err(error) if unsupported(&error) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.len() > XATTR_NAME_MAX {
            return Err(io::Error::other("an xattr name longer than 255 bytes"));
        }
        let c_name = CString::new(name).expect("split at NUL bytes");
        let value = sized(|buf| {
            // SAFETY: `c` and `c_name` are NUL-terminated; `buf` is valid
            // for `buf.len()` bytes (null with size 0 asks for the size).
            unsafe { libc::lgetxattr(c.as_ptr(), c_name.as_ptr(), out_ptr(buf), buf.len()) }
        })
        .map_err(|e| io::Error::new(e.kind(), format!("xattr {}: {e}", name.escape_ascii())))?;
        // Removed since it was listed: not there any more.
        let Some(value) = value else { continue };
        if value.len() > XATTR_VALUE_MAX {
            return Err(io::Error::other("an xattr value longer than 65536 bytes"));
        }
        out.push(Xattr {
            name: name.to_vec(),
            value,
        });
    }
    out.sort_unstable();
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// The file flags (FS_IOC_GETFLAGS) of the open regular file or
/// directory `file`; 0 when its filesystem has none.
pub fn flags_of(file: &impl AsRawFd) -> io::Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int to the pointer given, which
    // points at `flags`, alive for the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if r < 0 {
        let error = io::Error::last_os_error();
        if unsupported(&error) {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(flags as u32)
}

/// The file flags of the regular file or directory at `path` (opened
/// without following a symlink, without blocking on a FIFO swapped in).
/// One that cannot be opened (no permission) has none as far as the walk
/// can tell: reading its data or listing it reports the error.
pub fn flags(path: &Path, is_dir: bool) -> io::Result<u32> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut custom = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if is_dir {
        custom |= libc::O_DIRECTORY;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(custom)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(0),
        Err(e) => return Err(e),
    };
    flags_of(&file)
}

/// The buffer argument of `llistxattr`/`lgetxattr`: null for an empty
/// buffer (asking for the size), else its start.
fn out_ptr<T>(buf: &mut [u8]) -> *mut T {
    if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_xattrs_sorted_and_none_where_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let set = |name: &str, value: &[u8]| {
            let c = c_path(&file).unwrap();
            let n = CString::new(name).unwrap();
            // SAFETY: NUL-terminated path and name; value valid for its length.
            unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
        };
        if set("user.b", b"2") != 0 {
            // The temporary directory's filesystem has no user xattrs (tmpfs
            // before 6.6): nothing to read, and reading says so.
            assert_eq!(read(&file).unwrap(), Vec::new());
            return;
        }
        assert_eq!(set("user.a", b""), 0);
        let got = read(&file).unwrap();
        let user: Vec<_> = got
            .iter()
            .filter(|x| x.name.starts_with(b"user."))
            .collect();
        assert_eq!(
            user,
            [
                &Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![]
                },
                &Xattr {
                    name: b"user.b".to_vec(),
                    value: b"2".to_vec()
                }
            ]
        );
        assert!(read(&dir.path().join("missing")).is_err());
    }
}

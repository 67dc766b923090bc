//! The directories of the restored tree most recently used, open, by
//! stored path: the files of one directory are prepared and finished
//! through one descriptor of it, resolved once (issue 23: restore of many
//! small files), not once per file and phase.
//!
//! A descriptor is kept only while the few directories after it are
//! used; a directory moved out of the restore root by another process
//! while the restore runs is outside the threat model (the lead's
//! decision, issue 23): no symlink the destination holds is ever followed,
//! every descriptor here was opened by `at` without following one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Directories kept open at once (the catalog lists a directory's files
/// together, so a handful covers a tree walked depth first).
const DIRS_OPEN_MAX: usize = 16;

/// Open directories by stored path, the most recently used first.
#[derive(Debug, Default)]
pub(super) struct Dirs {
    open: Vec<(Vec<u8>, OwnedFd)>,
}

impl Dirs {
    /// The directory `rel` (a stored path, empty: the root), opened by
    /// `open` unless it is open here already.
    pub(super) fn get(
        &mut self,
        rel: &[u8],
        open: impl FnOnce() -> io::Result<OwnedFd>,
    ) -> io::Result<BorrowedFd<'_>> {
        match self.open.iter().position(|(p, _)| p == rel) {
            Some(i) => self.open[..=i].rotate_right(1),
            None => self.put(rel, open()?),
        }
        Ok(self.open[0].1.as_fd())
    }

    /// Keep `fd` as the directory `rel` (replacing one kept for it).
    pub(super) fn put(&mut self, rel: &[u8], fd: OwnedFd) {
        self.open.retain(|(p, _)| p != rel);
        self.open.truncate(DIRS_OPEN_MAX - 1);
        self.open.insert(0, (rel.to_vec(), fd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn dir() -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(std::fs::File::open("/")?))
    }

    #[test]
    fn a_directory_is_opened_once_while_kept_and_at_most_the_bound_stay_open() {
        let mut dirs = Dirs::default();
        let first = dirs.get(b"a", dir).unwrap().as_raw_fd();
        let again = dirs
            .get(b"a", || panic!("kept: not opened again"))
            .unwrap()
            .as_raw_fd();
        assert_eq!(first, again);
        for i in 0..DIRS_OPEN_MAX * 2 {
            dirs.get(format!("d{i}").as_bytes(), dir).unwrap();
            assert!(dirs.open.len() <= DIRS_OPEN_MAX);
        }
        assert_eq!(dirs.open.len(), DIRS_OPEN_MAX);
        let mut opened = false;
        dirs.get(b"a", || {
            opened = true;
            dir()
        })
        .unwrap();
        assert!(opened, "dropped after the bound was passed: opened again");
        let error = dirs
            .get(b"missing", || {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            })
            .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(dirs.open.len(), DIRS_OPEN_MAX);
    }
}

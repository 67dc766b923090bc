//! Small files made whole in directories this restore made (issue 23:
//! restore of many small files).
//!
//! A regular file whose data is one record (or none), restored into a
//! directory that `prepare` itself made and that no one else can write
//! to, needs no temporary name: the reader proves the record against the
//! file's digest before writing anything, then creates the file under its
//! own name (`O_CREAT | O_EXCL | O_NOFOLLOW`, relative to the directory's
//! descriptor), writes and closes it, one linked chain on its ring
//! (`writer::Writer::create`). `finish` then sets its owner, mode and
//! mtime by name in that directory, without opening it again.
//!
//! Why that is safe with a hostile destination: the directory was made by
//! our `mkdirat` (mode 0700), opened `O_NOFOLLOW` and checked by `fstat`
//! to be ours and writable by no one else, so until `finish` gives it its
//! own mode only this user (or root) can add, rename or replace a name in
//! it. Its descriptor is held from `prepare` to `finish`: if the
//! directory is moved meanwhile, even out of the destination, the
//! descriptor follows the inode, so every file is still made in it and
//! never through a path resolved again (no symlink can be slipped in).
//! `O_EXCL` refuses any name that exists (the file alone is then not
//! restored). Everything else (a directory that existed, a file with
//! xattrs or flags, more than one record, `--keep-partial`, data rebuilt
//! from parity) takes the temporary name and the rename.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Directories held open for small files at most (the soft limit on open
/// descriptors is raised to its hard limit first; a quarter of it at most).
const DIRS_HELD_MAX: usize = 16384;
/// Sentinel of `dir_of`: not a small file.
const NOT_SMALL: u32 = u32::MAX;

/// A directory made by this restore, held open.
#[derive(Debug)]
struct Made {
    fd: OwnedFd,
    /// The group a file created in it gets (its own when set-group-ID).
    file_gid: u32,
}

/// The small files of a restore and the directories they are made in.
#[derive(Debug)]
pub(super) struct Small {
    /// Per catalog file: its directory in `dirs`, or `NOT_SMALL`.
    dir_of: Vec<u32>,
    dirs: Vec<Made>,
    /// By stored path: the directories made, while preparing.
    made: HashMap<Vec<u8>, u32>,
    dirs_max: usize,
    /// Per catalog file, one bit: its data was queued for writing.
    written: Vec<AtomicU64>,
    /// Small files a reader could not make, and why.
    failed: Mutex<Vec<(u32, String)>>,
    /// The process's umask and ids (what a created file gets).
    pub(super) umask: u32,
    pub(super) euid: u32,
}

impl Small {
    /// For `files` catalog entries (which of them are small files is the
    /// caller's part, `take`: one record or none, no xattrs, no flags).
    pub(super) fn new(files: usize) -> Small {
        let limit = super::at::raise_open_files_limit(1 << 20) as usize;
        Small {
            dir_of: vec![NOT_SMALL; files],
            dirs: Vec::new(),
            made: HashMap::new(),
            dirs_max: (limit / 4).min(DIRS_HELD_MAX),
            written: (0..files.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            failed: Mutex::new(Vec::new()),
            umask: super::at::umask(),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// `prepare` made the directory `rel` (its `mkdirat` succeeded) and
    /// opened it as `fd`: held for small files when it is this user's and
    /// writable by no one else, and the bound allows.
    pub(super) fn made_dir(&mut self, rel: &[u8], fd: &OwnedFd) {
        if self.dirs.len() >= self.dirs_max {
            return;
        }
        let Ok(st) = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(fd)) else {
            return;
        };
        if st.st_uid != self.euid || st.st_mode & 0o022 != 0 {
            return;
        }
        let Ok(fd) = fd.try_clone() else {
            return;
        };
        let file_gid = if st.st_mode & libc::S_ISGID != 0 {
            st.st_gid
        } else {
            nix::unistd::getegid().as_raw()
        };
        self.made.insert(rel.to_vec(), self.dirs.len() as u32);
        self.dirs.push(Made { fd, file_gid });
    }

    /// Take catalog file `i`, in the directory `parent`, as a small file
    /// when that directory was made here; whether it was taken.
    pub(super) fn take(&mut self, i: usize, parent: &[u8]) -> bool {
        match self.made.get(parent) {
            Some(&d) => {
                self.dir_of[i] = d;
                true
            }
            None => false,
        }
    }

    /// The directory small file `i` is made in, and the group it gets;
    /// None when `i` is not a small file.
    pub(super) fn dir(&self, i: usize) -> Option<(BorrowedFd<'_>, u32)> {
        let d = *self.dir_of.get(i)?;
        (d != NOT_SMALL).then(|| {
            let made = &self.dirs[d as usize];
            (made.fd.as_fd(), made.file_gid)
        })
    }

    /// Mark small file `i`'s data as queued for writing; false when it
    /// was already (a second copy of its record: written once).
    pub(super) fn claim(&self, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        self.written[i / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    pub(super) fn written(&self, i: usize) -> bool {
        self.written[i / 64].load(Ordering::Relaxed) & (1u64 << (i % 64)) != 0
    }

    pub(super) fn fail(&self, i: usize, why: String) {
        self.failed
            .lock()
            .expect("no panic while held")
            .push((i as u32, why));
    }

    /// Why each small file a reader could not make failed, by file.
    pub(super) fn take_failed(&self) -> HashMap<u32, String> {
        std::mem::take(&mut *self.failed.lock().expect("no panic while held"))
            .into_iter()
            .collect()
    }

    /// The mode a small file is created with (what `open` applies the
    /// umask to): its permission bits, never set-ID bits before it has
    /// its owner.
    pub(super) fn create_mode(mode: u32) -> u32 {
        mode & 0o777
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_made_here_take_small_files_and_a_file_is_written_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = super::super::at::Root::open(tmp.path()).unwrap();
        let mut small = Small::new(3);
        let (fd, made) = root.ensure_dir_made(b"d", 0o700).unwrap();
        assert!(made);
        small.made_dir(b"d", &fd);
        let (_, made) = root.ensure_dir_made(b"d", 0o700).unwrap();
        assert!(!made, "found, not made");
        // Writable by others: not held.
        let (open, made) = root.ensure_dir_made(b"open", 0o777).unwrap();
        assert!(made);
        nix::sys::stat::fchmod(
            std::os::fd::AsRawFd::as_raw_fd(&open),
            nix::sys::stat::Mode::from_bits_truncate(0o777),
        )
        .unwrap();
        small.made_dir(b"open", &open);
        assert!(small.take(0, b"d"));
        assert!(!small.take(1, b"open"));
        assert!(!small.take(1, b"elsewhere"));
        assert!(small.dir(0).is_some());
        assert!(small.dir(1).is_none() && small.dir(2).is_none());
        assert!(!small.written(0));
        assert!(small.claim(0));
        assert!(!small.claim(0), "a second copy is not written again");
        assert!(small.written(0));
        small.fail(0, "why".into());
        assert_eq!(small.take_failed().get(&0).map(String::as_str), Some("why"));
        assert!(small.take_failed().is_empty());
    }
}

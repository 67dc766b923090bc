//! The ways a stored entry can differ from the live filesystem, and how
//! `pbio diff` names them.

use crate::units::shown_name;

/// One way an entry differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// In the set, not on disk (or below a non-directory on disk).
    Missing,
    /// On disk inside a stored directory, not in the set.
    New {
        kind: &'static str,
    },
    Kind {
        set: &'static str,
        disk: &'static str,
    },
    Size {
        set: u64,
        disk: u64,
    },
    /// Permission bits (`mode & 0o7777`).
    Mode {
        set: u32,
        disk: u32,
    },
    /// (uid, gid).
    Owner {
        set: (u32, u32),
        disk: (u32, u32),
    },
    /// (seconds, nanoseconds).
    Mtime {
        set: (i64, u32),
        disk: (i64, u32),
    },
    LinkTarget {
        set: Vec<u8>,
        disk: Vec<u8>,
    },
    /// Same size, another digest.
    Content,
    /// A hard link that is no longer the same inode as its target's name.
    NotLinked {
        target: Vec<u8>,
    },
    /// The device number (st_rdev) of a character or block node.
    Rdev {
        set: u64,
        disk: u64,
    },
    /// File flags (only the bits a process can set, `at::FLAGS_SETTABLE`).
    Flags {
        set: u32,
        disk: u32,
    },
    /// One extended attribute: its value in the set and on disk (`None`
    /// where it is absent: added or removed on disk).
    Xattr {
        name: Vec<u8>,
        set: Option<Vec<u8>>,
        disk: Option<Vec<u8>>,
    },
    /// The entry could not be compared (unreadable on disk).
    Unreadable {
        why: String,
    },
    /// The stored path is unsafe (absolute, `..`, ...): not looked at.
    Refused {
        why: String,
    },
}

impl What {
    /// The word of `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            What::Missing => "missing",
            What::New { .. } => "new",
            What::Kind { .. } => "kind",
            What::Size { .. } => "size",
            What::Mode { .. } => "mode",
            What::Owner { .. } => "owner",
            What::Mtime { .. } => "mtime",
            What::LinkTarget { .. } => "symlink_target",
            What::Content => "content",
            What::NotLinked { .. } => "not_linked",
            What::Rdev { .. } => "rdev",
            What::Flags { .. } => "flags",
            What::Xattr { .. } => "xattr",
            What::Unreadable { .. } => "unreadable",
            What::Refused { .. } => "refused",
        }
    }
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Missing => f.write_str("missing on disk"),
            What::New { kind } => write!(f, "new on disk ({kind}, not in the set)"),
            What::Kind { set, disk } => {
                write!(f, "kind differs: {set} in the set, {disk} on disk")
            }
            What::Size { set, disk } => {
                write!(f, "size differs: {set} bytes in the set, {disk} on disk")
            }
            What::Mode { set, disk } => {
                write!(f, "mode differs: {set:04o} in the set, {disk:04o} on disk")
            }
            What::Owner { set, disk } => write!(
                f,
                "owner differs: {}:{} in the set, {}:{} on disk",
                set.0, set.1, disk.0, disk.1
            ),
            What::Mtime { set, disk } => write!(
                f,
                "mtime differs: {}.{:09} in the set, {}.{:09} on disk",
                set.0, set.1, disk.0, disk.1
            ),
            What::LinkTarget { set, disk } => write!(
                f,
                "symlink target differs: '{}' in the set, '{}' on disk",
                shown_name(set),
                shown_name(disk)
            ),
            What::Content => f.write_str("content differs (same size, another digest)"),
            What::NotLinked { target } => {
                write!(f, "not a hard link of {} on disk", shown_name(target))
            }
            What::Rdev { set, disk } => write!(
                f,
                "device number differs: {}:{} in the set, {}:{} on disk",
                libc::major(*set),
                libc::minor(*set),
                libc::major(*disk),
                libc::minor(*disk)
            ),
            What::Flags { set, disk } => write!(
                f,
                "file flags differ: {set:#x} in the set, {disk:#x} on disk"
            ),
            What::Xattr { name, set, disk } => {
                let name = shown_name(name);
                match (set, disk) {
                    (None, _) => write!(f, "xattr {name} added on disk (not in the set)"),
                    (_, None) => write!(f, "xattr {name} removed on disk (in the set)"),
                    (Some(set), Some(disk)) => write!(
                        f,
                        "xattr {name} changed: {} bytes in the set, {} on disk",
                        set.len(),
                        disk.len()
                    ),
                }
            }
            What::Unreadable { why } => write!(f, "cannot be compared: {why}"),
            What::Refused { why } => write!(f, "refused: {why}"),
        }
    }
}

//! The catalog's semantic rules (docs/FORMAT.md, "Catalog rules"), each
//! broken through `validate` and through `decode` of an encoding that
//! skipped `validate`. Helpers and samples are in `tests.rs`.

use super::tests::{entry_err, incremental_sample, sample, xattr};
use super::*;
use crate::format::FormatError;

const NOT_LINKABLE: &str =
    "hardlink_to names a file that is not Regular, Fifo, CharDevice or BlockNode";
const UNSORTED: &str = "xattr names not strictly ascending (unsorted or duplicate)";

/// Each broken rule, through `validate` and through `decode` of an
/// encoding that skipped `validate`.
#[test]
fn semantic_rules() {
    type Edit = fn(&mut Catalog);
    let cases: Vec<(Edit, FormatError)> = vec![
        (
            |c| c.chunk_bytes = 1000,
            FormatError::Field {
                field: "catalog.chunk_bytes",
                value: 1000,
            },
        ),
        (
            |c| c.chunk_bytes = 128 << 20,
            FormatError::Field {
                field: "catalog.chunk_bytes",
                value: 128 << 20,
            },
        ),
        (
            |c| {
                c.devices.clear();
                c.segments.clear();
            },
            FormatError::Catalog("no devices"),
        ),
        (
            |c| c.files[2].path.clear(),
            entry_err("file", 2, "empty path"),
        ),
        (
            |c| c.files[0].stat.mtime_nsec = 1_000_000_000,
            entry_err("file", 0, "mtime_nsec is not below 1e9"),
        ),
        (
            |c| c.files[2].link_target.clear(),
            entry_err("file", 2, "symlink with an empty target"),
        ),
        (
            |c| c.files[3].hardlink_to = 5,
            entry_err("file", 3, "hardlink_to out of range"),
        ),
        (
            |c| c.files[3].hardlink_to = u32::MAX,
            entry_err("file", 3, "hardlink_to out of range"),
        ),
        (
            |c| c.files[3].hardlink_to = 0,
            entry_err("file", 3, NOT_LINKABLE),
        ),
        (
            |c| c.files[3].hardlink_to = 3,
            entry_err("file", 3, NOT_LINKABLE),
        ),
        (
            |c| c.files[3].hardlink_to = 2,
            entry_err("file", 3, NOT_LINKABLE),
        ),
        (
            |c| c.files[4].xattrs = vec![xattr("", b"x")],
            entry_err("file", 4, "xattr with an empty name"),
        ),
        (
            |c| {
                c.files[4].xattrs = vec![Xattr {
                    name: vec![b'u'; 256],
                    value: vec![],
                }]
            },
            entry_err("file", 4, "xattr name longer than 255 bytes"),
        ),
        (
            |c| c.files[4].xattrs = vec![xattr("user.a\0b", b"")],
            entry_err("file", 4, "xattr name contains a NUL byte"),
        ),
        (
            |c| {
                c.files[4].xattrs = vec![Xattr {
                    name: b"user.big".to_vec(),
                    value: vec![0; 65537],
                }]
            },
            entry_err("file", 4, "xattr value longer than 65536 bytes"),
        ),
        (
            |c| c.files[1].xattrs.swap(0, 2),
            entry_err("file", 1, UNSORTED),
        ),
        (
            |c| c.files[1].xattrs[1] = c.files[1].xattrs[0].clone(),
            entry_err("file", 1, UNSORTED),
        ),
        (
            |c| c.files[3].xattrs = vec![xattr("user.x", b"")],
            entry_err("file", 3, "xattrs on a HardLink (its target holds them)"),
        ),
        (
            |c| c.segments[1].file_id = 5,
            entry_err("segment", 1, "file_id out of range"),
        ),
        (
            |c| c.segments[1].file_id = 2,
            entry_err("segment", 1, "file_id names a file without data"),
        ),
        (
            |c| c.segments[2].device = 2,
            entry_err("segment", 2, "device out of range"),
        ),
        (
            |c| {
                c.segments[0].offset = u64::MAX;
                c.segments[0].length = 1;
            },
            entry_err("segment", 0, "offset + length overflows"),
        ),
        (
            |c| c.segments[1].length += 1,
            entry_err(
                "segment",
                1,
                "offset + length is beyond the file's size_bytes",
            ),
        ),
        (
            |c| c.segments[2].length = 1,
            entry_err(
                "segment",
                2,
                "offset + length is beyond the file's size_bytes",
            ),
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut c = sample();
        edit(&mut c);
        assert_eq!(c.validate(), Err(want.clone()), "case {i}");
        assert_eq!(
            Catalog::decode(&c.encode_unchecked()),
            Err(want),
            "case {i}"
        );
    }
}

/// The rules of incremental sets (chain, origins, removed, renamed),
/// through `validate` and through `decode`.
#[test]
fn chain_rules() {
    type Edit = fn(&mut Catalog);
    let cases: Vec<(Edit, FormatError)> = vec![
        (
            |c| c.ancestors[1] = c.set_id,
            FormatError::Catalog("the set is its own ancestor"),
        ),
        (
            |c| c.ancestors[1] = c.ancestors[0],
            FormatError::Catalog("an ancestor is listed twice"),
        ),
        (
            |c| {
                c.ancestors.clear();
                c.renamed.clear();
            },
            FormatError::Catalog("removed or renamed paths in a full set (no ancestors)"),
        ),
        (
            |c| c.files[7].stat.ctime_nsec = 1_000_000_000,
            entry_err("file", 7, "ctime_nsec is not below 1e9"),
        ),
        (
            |c| c.files[7].origin = 3,
            entry_err("file", 7, "origin names no ancestor"),
        ),
        (
            |c| {
                c.files[7].origin = 1;
                c.files[7].origin_file_id = 7;
            },
            entry_err(
                "file",
                7,
                "references the same data of an earlier set as another file",
            ),
        ),
        (
            |c| c.files[3].hardlink_to = 5,
            entry_err("file", 3, NOT_LINKABLE),
        ),
        (
            |c| c.segments[3].file_id = 6,
            entry_err(
                "segment",
                3,
                "file_id names a file whose data is in an earlier set",
            ),
        ),
        (
            |c| c.removed[1].clear(),
            entry_err("removed", 1, "empty path"),
        ),
        (
            |c| c.renamed[0].file_id = 12,
            entry_err("renamed", 0, "file_id out of range"),
        ),
        (
            |c| c.renamed[0].file_id = 5,
            entry_err(
                "renamed",
                0,
                "file_id names a file whose data is not in an earlier set",
            ),
        ),
        (
            |c| c.renamed[0].from.clear(),
            entry_err("renamed", 0, "empty path"),
        ),
        (
            |c| c.renamed.push(c.renamed[0].clone()),
            entry_err("renamed", 1, "file_id listed twice"),
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut c = incremental_sample();
        edit(&mut c);
        assert_eq!(c.validate(), Err(want.clone()), "case {i}");
        assert_eq!(
            Catalog::decode(&c.encode_unchecked()),
            Err(want),
            "case {i}"
        );
    }
    // Fields not stored for the kind: only `validate` sees them.
    let mut c = incremental_sample();
    c.files[0].origin = 1;
    assert_eq!(
        c.validate(),
        Err(entry_err(
            "file",
            0,
            "origin is not 0 for a kind without data"
        ))
    );
    let mut c = incremental_sample();
    c.files[5].origin_file_id = 1;
    assert_eq!(
        c.validate(),
        Err(entry_err(
            "file",
            5,
            "origin_file_id is not 0 for data in this set"
        ))
    );
}

/// Fields that do not apply to a kind are not stored, so only `validate` sees them.
#[test]
fn fields_that_do_not_apply_are_zero() {
    type Edit = fn(&mut Catalog);
    let cases: Vec<(Edit, FormatError)> = vec![
        (
            |c| c.files[0].size_bytes = 4096,
            entry_err("file", 0, "size_bytes is not 0 for a kind without data"),
        ),
        (
            |c| c.files[3].digest[31] = 1,
            entry_err("file", 3, "digest is not zero for a kind without data"),
        ),
        (
            |c| c.files[1].link_target = b"x".to_vec(),
            entry_err("file", 1, "link_target is not empty for a non-symlink"),
        ),
        (
            |c| c.files[4].hardlink_to = 1,
            entry_err("file", 4, "hardlink_to is not 0 for a non-hardlink"),
        ),
        (
            |c| c.files[4].stat.rdev = 1,
            entry_err(
                "file",
                4,
                "rdev is not 0 for a kind other than CharDevice and BlockNode",
            ),
        ),
        (
            |c| c.files[2].stat.flags = 0x10,
            entry_err(
                "file",
                2,
                "flags are not 0 for a kind other than Regular and Directory",
            ),
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut c = sample();
        edit(&mut c);
        assert_eq!(c.validate(), Err(want), "case {i}");
    }
}

//! `Catalog::encode_streamed` against `encode`: the same bytes, the same
//! rules (issue 23: a catalog encoded file by file).

use super::tests::{incremental_sample, sample};
use super::*;
use crate::format::MacKey;

/// `c` encoded file by file (its files taken out and given one at a time).
fn streamed(c: &Catalog, key: Option<&MacKey>) -> Vec<u8> {
    let mut head = c.clone();
    let files = std::mem::take(&mut head.files);
    head.encode_streamed(files.len(), &|i| files[i].clone(), key)
}

fn sealed(c: &Catalog, key: Option<&MacKey>) -> Vec<u8> {
    let mut c = c.clone();
    c.seal(key);
    c.encode()
}

#[test]
fn same_bytes_as_encode_with_and_without_a_key() {
    let key: MacKey = [0x5a; 32];
    for c in [sample(), incremental_sample()] {
        assert!(!c.files.is_empty());
        for key in [None, Some(&key)] {
            let bytes = streamed(&c, key);
            assert_eq!(bytes, sealed(&c, key));
            let mut back = Catalog::decode(&bytes).expect("decodes");
            assert_eq!(back.mac, key.map_or([0; 32], |k| c.mac_for(k)));
            back.mac = c.mac;
            assert_eq!(back, c);
        }
    }
}

#[test]
fn no_files_is_the_same_as_encode() {
    let mut c = sample();
    c.files.clear();
    c.segments.clear();
    assert_eq!(streamed(&c, None), sealed(&c, None));
}

/// A rule that names another file (a hard link's target, a segment's
/// file, a renamed entry's file, earlier data named twice) is checked
/// against the files given, as `encode` checks it.
#[test]
fn rules_that_name_other_files_still_refuse() {
    type Edit = fn(&mut Catalog);
    let edits: [Edit; 4] = [
        |c| {
            let dir = c
                .files
                .iter()
                .position(|f| f.kind == FileKind::Directory)
                .unwrap();
            let link = c
                .files
                .iter_mut()
                .find(|f| f.kind == FileKind::HardLink)
                .unwrap();
            link.hardlink_to = dir as u32;
        },
        |c| c.segments[0].length = u64::MAX - c.segments[0].offset,
        |c| c.segments[0].file_id = c.files.len() as u32,
        |c| {
            let earlier: Vec<usize> = (0..c.files.len())
                .filter(|&i| c.files[i].origin != 0)
                .collect();
            assert!(!earlier.is_empty(), "the sample has data in an earlier set");
            let f = c.files[earlier[0]].clone();
            c.files.push(CatalogFile {
                path: b"again".to_vec(),
                ..f
            });
        },
    ];
    for (n, edit) in edits.iter().enumerate() {
        let mut c = incremental_sample();
        edit(&mut c);
        assert!(c.validate().is_err(), "edit {n} breaks a rule");
        let result = std::panic::catch_unwind(|| streamed(&c, None));
        assert!(result.is_err(), "edit {n}: encode_streamed refused it");
    }
}

//! Which files of a tree restore may be made as small files
//! (`tree::small`): created under their own names once their one record
//! is proven, with no temporary name.

use crate::format::FileKind;

use super::select::{DataSource, Selection};
use super::OpenSet;

/// Per file of `tree_catalog` (the restored catalog, as named in the
/// tree): whether its data is one whole record of one segment (or it is
/// empty), in a set read without parity rebuilding, and it has nothing a
/// small file does not restore (xattrs, file flags). Nothing with
/// `keep_partial` (a small file that fails has no partial data to keep).
pub(super) fn candidates(
    sets: &[&OpenSet],
    selection: &Selection,
    tree_catalog: &crate::format::Catalog,
    keep_partial: bool,
) -> Vec<bool> {
    if keep_partial {
        return Vec::new();
    }
    // Per set and file: whether its data is exactly one segment of one
    // record covering it all.
    let one_record: Vec<Option<Vec<bool>>> = sets
        .iter()
        .zip(&selection.rebuild)
        .map(|(set, rebuild)| rebuild.absent.is_empty().then(|| one_record(set)))
        .collect();
    tree_catalog
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            selection.wanted[i]
                && f.kind == FileKind::Regular
                && f.xattrs.is_empty()
                && f.stat.flags == 0
                && (f.size_bytes == 0
                    || match selection.sources[i] {
                        DataSource::In { set, file } => one_record[set]
                            .as_ref()
                            .and_then(|w| w.get(file as usize).copied())
                            .unwrap_or(false),
                        _ => false,
                    })
        })
        .collect()
}

/// Per file of `set`'s catalog: its data is one segment `[0, size)` of
/// one record.
fn one_record(set: &OpenSet) -> Vec<bool> {
    let files = &set.catalog.files;
    // 0: no segment yet, 1: one whole segment, 2: anything else.
    let mut seen = vec![0u8; files.len()];
    for s in &set.catalog.segments {
        let Some(f) = files.get(s.file_id as usize) else {
            continue;
        };
        let slot = &mut seen[s.file_id as usize];
        let whole = s.offset == 0 && s.length == f.size_bytes && s.records == 1;
        *slot = if *slot == 0 && whole { 1 } else { 2 };
    }
    seen.into_iter().map(|s| s == 1).collect()
}

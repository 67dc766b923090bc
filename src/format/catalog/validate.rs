//! The semantic rules of a catalog (docs/FORMAT.md, "Catalog rules"):
//! `decode` applies them after the structure, `encode` refuses a catalog
//! that breaks one.

use std::collections::HashSet;

use super::{check_xattrs, Catalog, CatalogFile, CatalogSegment, FileKind};
use crate::format::{chunk_bytes_valid, FormatError};

/// Nanoseconds in a second: `mtime_nsec` is below this.
const NSEC_PER_SEC: u32 = 1_000_000_000;

impl Catalog {
    /// The semantic rules a decoder enforces (docs/FORMAT.md, "Catalog
    /// rules"), in that order; `encode` panics on a catalog that breaks one.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.check_head(self.files.len())?;
        let lookup = |i: usize| self.files.get(i).map(Summary::of);
        // Each piece of earlier data is referenced once.
        let mut referenced = HashSet::new();
        for (index, file) in self.files.iter().enumerate() {
            self.check_file(index, file, &lookup, &mut referenced)?;
        }
        self.check_rest(&lookup)
    }

    /// The rules before the files: chunk size, devices, table sizes (with
    /// `file_count` files), the chain.
    pub(super) fn check_head(&self, file_count: usize) -> Result<(), FormatError> {
        if !chunk_bytes_valid(self.chunk_bytes) {
            return Err(FormatError::Field {
                field: "catalog.chunk_bytes",
                value: self.chunk_bytes.into(),
            });
        }
        if self.devices.is_empty() {
            return Err(FormatError::Catalog("no devices"));
        }
        let max = u32::MAX as usize;
        if [
            self.devices.len(),
            file_count,
            self.segments.len(),
            self.ancestors.len(),
            self.removed.len(),
            self.renamed.len(),
        ]
        .iter()
        .any(|&n| n > max)
        {
            return Err(FormatError::Catalog(
                "a table has more than u32::MAX entries",
            ));
        }
        if !self.stored_bytes.is_empty() && self.stored_bytes.len() != file_count {
            return Err(FormatError::Catalog(
                "stored section not one entry per file",
            ));
        }
        self.check_chain().map_err(FormatError::Catalog)
    }

    /// File `index` against the rules, `lookup` giving what the rules need
    /// of any file by id, `referenced` the earlier data named before it.
    pub(super) fn check_file(
        &self,
        index: usize,
        file: &CatalogFile,
        lookup: &dyn Fn(usize) -> Option<Summary>,
        referenced: &mut HashSet<(u32, u32)>,
    ) -> Result<(), FormatError> {
        let entry = |why| FormatError::CatalogEntry {
            table: "file",
            index: index as u64,
            why,
        };
        check_file(file, lookup, self.ancestors.len()).map_err(entry)?;
        let stored = self.stored_bytes.get(index).copied().unwrap_or(0);
        if stored != 0 && !(file.kind.has_data() && file.origin == 0) {
            return Err(entry("stored bytes for a file without data in this set"));
        }
        if file.origin != 0 && !referenced.insert((file.origin, file.origin_file_id)) {
            return Err(entry(
                "references the same data of an earlier set as another file",
            ));
        }
        Ok(())
    }

    /// The rules after the files': segments, removed and renamed entries.
    pub(super) fn check_rest(
        &self,
        lookup: &dyn Fn(usize) -> Option<Summary>,
    ) -> Result<(), FormatError> {
        if let Some(parity) = &self.parity {
            let size = |id: u32| {
                lookup(id as usize)
                    .filter(|f| f.kind.has_data() && f.origin == 0)
                    .map(|f| f.size_bytes)
            };
            let shape = (self.devices.len(), self.chunk_bytes);
            super::parity::validate(parity, shape, size).map_err(FormatError::Catalog)?;
        }
        let entry = |table, index: usize, why| FormatError::CatalogEntry {
            table,
            index: index as u64,
            why,
        };
        for (index, segment) in self.segments.iter().enumerate() {
            check_segment(segment, lookup, self.devices.len())
                .map_err(|why| entry("segment", index, why))?;
        }
        for (index, path) in self.removed.iter().enumerate() {
            if path.is_empty() {
                return Err(entry("removed", index, "empty path"));
            }
        }
        let mut renamed = HashSet::new();
        for (index, r) in self.renamed.iter().enumerate() {
            let why = match lookup(r.file_id as usize) {
                None => Some("file_id out of range"),
                Some(f) if f.origin == 0 => {
                    Some("file_id names a file whose data is not in an earlier set")
                }
                Some(_) if r.from.is_empty() => Some("empty path"),
                Some(_) if !renamed.insert(r.file_id) => Some("file_id listed twice"),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(entry("renamed", index, why));
            }
        }
        Ok(())
    }

    /// The chain section's own rules.
    fn check_chain(&self) -> Result<(), &'static str> {
        if self.ancestors.is_empty() && !(self.removed.is_empty() && self.renamed.is_empty()) {
            return Err("removed or renamed paths in a full set (no ancestors)");
        }
        let mut seen = HashSet::with_capacity(self.ancestors.len());
        for id in &self.ancestors {
            if *id == self.set_id {
                return Err("the set is its own ancestor");
            }
            if !seen.insert(id) {
                return Err("an ancestor is listed twice");
            }
        }
        Ok(())
    }
}

/// What the rules of one entry need to know of a file it names.
#[derive(Clone, Copy, Debug)]
pub(super) struct Summary {
    pub(super) kind: FileKind,
    pub(super) origin: u32,
    pub(super) size_bytes: u64,
}

impl Summary {
    pub(super) fn of(f: &CatalogFile) -> Summary {
        Summary {
            kind: f.kind,
            origin: f.origin,
            size_bytes: f.size_bytes,
        }
    }
}

fn check_file(
    f: &CatalogFile,
    files: &dyn Fn(usize) -> Option<Summary>,
    ancestors: usize,
) -> Result<(), &'static str> {
    if f.path.is_empty() {
        return Err("empty path");
    }
    if f.stat.mtime_nsec >= NSEC_PER_SEC {
        return Err("mtime_nsec is not below 1e9");
    }
    if f.stat.ctime_nsec >= NSEC_PER_SEC {
        return Err("ctime_nsec is not below 1e9");
    }
    let data = f.kind.has_data();
    if !data && f.size_bytes != 0 {
        return Err("size_bytes is not 0 for a kind without data");
    }
    if !data && f.digest != [0u8; 32] {
        return Err("digest is not zero for a kind without data");
    }
    if f.kind == FileKind::Symlink {
        if f.link_target.is_empty() {
            return Err("symlink with an empty target");
        }
    } else if !f.link_target.is_empty() {
        return Err("link_target is not empty for a non-symlink");
    }
    if f.kind == FileKind::HardLink {
        match files(f.hardlink_to as usize) {
            None => return Err("hardlink_to out of range"),
            Some(target) if !target.kind.can_be_hard_linked() => {
                return Err(
                    "hardlink_to names a file that is not Regular, Fifo, CharDevice or BlockNode",
                );
            }
            Some(_) => {}
        }
    } else if f.hardlink_to != 0 {
        return Err("hardlink_to is not 0 for a non-hardlink");
    }
    if !data && f.origin != 0 {
        return Err("origin is not 0 for a kind without data");
    }
    if f.origin as usize > ancestors {
        return Err("origin names no ancestor");
    }
    if f.origin == 0 && f.origin_file_id != 0 {
        return Err("origin_file_id is not 0 for data in this set");
    }
    if !f.kind.has_rdev() && f.stat.rdev != 0 {
        return Err("rdev is not 0 for a kind other than CharDevice and BlockNode");
    }
    if !f.kind.has_flags() && f.stat.flags != 0 {
        return Err("flags are not 0 for a kind other than Regular and Directory");
    }
    if f.kind == FileKind::HardLink && !f.xattrs.is_empty() {
        return Err("xattrs on a HardLink (its target holds them)");
    }
    check_xattrs(&f.xattrs)?;
    Ok(())
}

pub(super) fn check_segment(
    s: &CatalogSegment,
    files: &dyn Fn(usize) -> Option<Summary>,
    device_count: usize,
) -> Result<(), &'static str> {
    let Some(file) = files(s.file_id as usize) else {
        return Err("file_id out of range");
    };
    if !file.kind.has_data() {
        return Err("file_id names a file without data");
    }
    if file.origin != 0 {
        return Err("file_id names a file whose data is in an earlier set");
    }
    if s.device as usize >= device_count {
        return Err("device out of range");
    }
    match s.offset.checked_add(s.length) {
        None => Err("offset + length overflows"),
        Some(end) if end > file.size_bytes => {
            Err("offset + length is beyond the file's size_bytes")
        }
        Some(_) => Ok(()),
    }
}

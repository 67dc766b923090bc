//! The restored tree: safe paths, creating entries, applying metadata.
//!
//! INTERFACE (fixed; the restore engine builds on it).

use crate::format::Catalog;
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

/// Join a stored relative path under `root`, refusing absolute paths, `..`
/// components, empty paths and NUL bytes.
pub fn safe_join(root: &Path, rel: &[u8]) -> Result<PathBuf, TreeError> {
    let _ = (root, rel);
    unimplemented!()
}

/// Before data: create `root`, every selected directory, and every selected
/// regular file (created or truncated, then set to its logical size so that
/// unwritten ranges stay holes). `selected[i]` says whether catalog file i is restored.
pub fn prepare(root: &Path, catalog: &Catalog, selected: &[bool]) -> Result<(), TreeError> {
    let _ = (root, catalog, selected);
    unimplemented!()
}

/// After data: symlinks and hard links, then owner, mode and mtime of every
/// selected entry (directories last, deepest first, so their mtimes stick).
pub fn finish(root: &Path, catalog: &Catalog, selected: &[bool]) -> Result<(), TreeError> {
    let _ = (root, catalog, selected);
    unimplemented!()
}

//! What went wrong in one tape operation of a check: the operation (as the
//! check names it), where the head was and what the layout expected. A
//! check's detail is this error's text.

use crate::device::TapeStatus;

use super::layout::position;

#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    /// MTIOCGET failed.
    #[error("MTIOCGET after {after}: {error}")]
    Status {
        after: String,
        error: std::io::Error,
    },
    /// The head is not where the layout says.
    #[error(
        "after {after}: at {}, expected file {file}{} (object {object})",
        position(at),
        block.map(|b| format!(" block {b}")).unwrap_or_default()
    )]
    Misplaced {
        after: String,
        at: TapeStatus,
        file: i64,
        block: Option<i64>,
        object: i64,
    },
    /// MTREW landed at file 0 block 0 without BOT reported.
    #[error("after MTREW {from}: at {} without BOT reported", position(at))]
    NotAtBot { from: String, at: TapeStatus },
    /// A tape operation (`what`) failed.
    #[error("{what}: {error}")]
    Op { what: String, error: std::io::Error },
    /// A read (`what`) failed.
    #[error("{what}: read: {error}")]
    Read { what: String, error: std::io::Error },
    /// A write (`what`; with the block's `bytes` where the check names
    /// them) failed.
    #[error(
        "{what}{}: write: {error}",
        bytes.map(|b| format!(" ({b} B)")).unwrap_or_default()
    )]
    Write {
        what: String,
        bytes: Option<usize>,
        error: std::io::Error,
    },
    /// A write took `wrote` of the block's `want` bytes.
    #[error("{what}: wrote {wrote} of {want} bytes")]
    ShortWrite {
        what: String,
        wrote: usize,
        want: usize,
    },
    /// A read returned a filemark where a block of `want` bytes was due.
    #[error("{what}: read a filemark, expected a {want}-byte block")]
    Filemark { what: String, want: usize },
    /// A read returned a block of `got` bytes where a filemark was due.
    #[error("{what}: read a {got}-byte block, expected a filemark")]
    NoFilemark { what: String, got: usize },
    /// A read returned `got` bytes where one block of `want` was due.
    #[error("{what}: read returned {got} bytes, expected one {want}-byte block")]
    Length {
        what: String,
        got: usize,
        want: usize,
    },
}

/// A check's detail.
impl From<TapeError> for String {
    fn from(e: TapeError) -> String {
        e.to_string()
    }
}

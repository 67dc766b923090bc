//! Restore and verify readers.

pub mod tree;

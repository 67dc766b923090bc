//! pbio: a parallel backup engine. See DESIGN in README.md and docs/FORMAT.md.
//!
//! The planner decides (`plan`), the engine does (`engine`, `device`), the
//! CLI shows (`cli`). `format` is the pure media format; `source` walks the
//! inputs; `restore` reads sets back.

pub mod cli;
pub mod device;
pub mod engine;
pub mod format;
pub mod io;
pub mod measure;
pub mod plan;
pub mod restore;
pub mod source;
pub mod units;

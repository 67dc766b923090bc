//! pbio: a parallel backup engine. docs/DESIGN.md is the map (layers, the
//! path of a record, threads, failures); docs/FORMAT.md the media format.
//!
//! The layers, lowest first; a module imports only layers below it:
//! - `units`: sizes, rates and names as shown (no pbio types).
//! - `parity`: the Reed-Solomon erasure code of `--parity`, pure bytes.
//! - `format`: the on-media bytes, pure: label, record header, catalog, `SetId`.
//! - `plan`: the planner, pure: files and devices in, segments per device out.
//! - `io`: the transport: aligned buffers registered with io_uring rings.
//! - `device`: the device kinds (file, block, tape, pmem, NBD) behind one trait.
//! - `source`: walking the inputs (trees, block devices, incremental sets).
//! - `media`: label, catalog and record streams on a device, the record
//!   scanner and the overwrite guard: the one place that reads and writes
//!   the on-media structures.
//! - `engine`: the data path (dispatcher, ring workers, failure handling).
//! - `backup`: the backup run over the engine (labels, data, parity,
//!   catalog, finish; spanning cartridges).
//! - `restore`: restore and verify runs (catalog, chain, scan restore).
//! - `measure`: hardware measurement (bench, qualify, the rate probe), beside the engine.
//! - `cli`: the commands: parse, run a layer, show, map errors to exit codes.

pub mod backup;
pub mod cli;
pub mod device;
pub mod engine;
pub mod format;
pub mod io;
pub mod measure;
pub mod media;
pub mod parity;
pub mod plan;
pub mod restore;
pub mod source;
pub mod units;

//! Hardware measurement beside the backup engine, not inside it: `bench`
//! drives devices through the same rings and buffers a backup uses and
//! compares them with fio; `qualify` checks a device family's behaviour
//! (identity, throughput matrix, durability, pattern) before it is trusted
//! with a set; `probe` rates devices for `--balance time` (the CLI runs it
//! before planning). No backup or restore run imports this module.

pub mod bench;
pub mod probe;
pub mod qualify;

/// Tests: a file device `d.img` of `size` (`1M`, `8M`) in `dir`, opened
/// for writing.
#[cfg(test)]
fn test_file_device(dir: &std::path::Path, size: &str) -> Box<dyn crate::device::Device> {
    let text = format!("{},size={size}", dir.join("d.img").display());
    let spec = crate::device::DeviceSpec::parse(&text).unwrap();
    crate::device::open(&spec, crate::device::Mode::Write).unwrap()
}

//! `pbio list`: the catalog of a set, from one device.

use clap::Args;
use serde_json::json;

use super::{parse_dev, path_text, CliResult, Failure, EXIT_OK};
use crate::device::DeviceSpec;
use crate::format::FileKind;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One device of the set (every device carries the whole catalog).
    #[arg(long = "dev", value_parser = parse_dev)]
    pub dev: DeviceSpec,
    /// Also print every segment (file range, device, position).
    #[arg(long)]
    pub segments: bool,
    /// Machine-readable catalog: one JSON object (set id, devices, files, segments).
    #[arg(long)]
    pub json: bool,
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Regular => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
        FileKind::HardLink => "hardlink",
        FileKind::BlockDevice => "blockdev",
    }
}

pub fn run(args: ListArgs) -> CliResult {
    let set = crate::restore::open_set(std::slice::from_ref(&args.dev)).map_err(|e| match e {
        crate::restore::RestoreError::Device(d) => Failure::Usage(d.to_string()),
        other => Failure::Data(other.to_string()),
    })?;
    let (_, label) = &set.devices[0];
    let c = &set.catalog;
    if args.json {
        let files: Vec<_> = c
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": path_text(&f.path),
                    "kind": kind_name(f.kind),
                    "mode": f.mode,
                    "uid": f.uid,
                    "gid": f.gid,
                    "mtime_sec": f.mtime_sec,
                    "size_bytes": f.size_bytes,
                })
            })
            .collect();
        let segments: Vec<_> = c
            .segments
            .iter()
            .map(|s| {
                json!({
                    "path": path_text(&c.files[s.file_id as usize].path),
                    "offset": s.offset, "length": s.length, "device": s.device,
                    "position": s.position, "records": s.records,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "set_id": crate::engine::set_id_hex(&c.set_id),
                "device_index": label.device_index,
                "device_count": label.device_count,
                "chunk_bytes": c.chunk_bytes,
                "devices": c.devices.iter().map(|d| json!({"path": path_text(&d.path), "capacity_bytes": d.capacity_bytes})).collect::<Vec<_>>(),
                "files": files,
                "segments": segments,
            })
        );
        return Ok(EXIT_OK);
    }
    println!(
        "set {} (device {} of {}), {} entries, {} segments",
        crate::engine::set_id_hex(&c.set_id),
        label.device_index,
        label.device_count,
        c.files.len(),
        c.segments.len()
    );
    for f in &c.files {
        let extra = match f.kind {
            FileKind::Symlink => format!(" -> {}", path_text(&f.link_target)),
            FileKind::HardLink => {
                format!(" => {}", path_text(&c.files[f.hardlink_to as usize].path))
            }
            _ => String::new(),
        };
        println!(
            "{:<8} {:06o} {:>5}:{:<5} {:>14} {}{}",
            kind_name(f.kind),
            f.mode & 0o7777,
            f.uid,
            f.gid,
            f.size_bytes,
            path_text(&f.path),
            extra
        );
    }
    if args.segments {
        for s in &c.segments {
            println!(
                "segment {} {}..{} device {} position {} records {}",
                path_text(&c.files[s.file_id as usize].path),
                s.offset,
                s.offset + s.length,
                s.device,
                s.position,
                s.records
            );
        }
    }
    Ok(EXIT_OK)
}

//! `pbio diff`: a set against the live filesystem (`restore::diff`).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{parse_dev, path_text, with_path, CliResult, Failure, Outcome};
use crate::device::DeviceSpec;
use crate::restore::diff::{self, DiffError, What};
use crate::restore::Only;
use crate::units::{human_bytes, shown_name};

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Devices of the set (any one holding its catalog is enough; for an
    /// incremental set, give the chain's earlier sets too so that the
    /// contents of files unchanged since them are compared exactly).
    #[arg(long = "dev", value_parser = parse_dev, required = true)]
    pub devs: Vec<DeviceSpec>,
    /// The directory whose contents correspond to the set's stored paths
    /// (where it was restored, or the parent of what was backed up: as
    /// `tar --compare -C DIR`). Only read, never followed through a symlink.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub to: PathBuf,
    /// Compare only these stored paths (and what is under them), with the
    /// patterns of `restore --only`; one that matches nothing is an error (exit 2).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Machine-readable report: one JSON summary object (set_id, entries, differences with path, what, set and disk values, the attribute's name for an xattr, same).
    #[arg(long)]
    pub json: bool,
    /// The key the set was written with (`backup --key`, or `--encrypt
    /// --key-file`): the labels' and the catalog's MACs must match it, and
    /// an encrypted set is opened with it.
    #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The passphrase of a set written with `backup --encrypt
    /// --passphrase-file`: the file's contents (one trailing newline
    /// dropped).
    #[arg(long = "passphrase-file", value_name = "FILE", conflicts_with = "key")]
    pub passphrase_file: Option<PathBuf>,
}

pub fn run(args: DiffArgs) -> CliResult {
    let patterns: Vec<Vec<u8>> = args
        .paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let only = Only::new(&patterns).map_err(Failure::Select)?;
    if !args.to.is_dir() {
        return Err(Failure::Usage(format!(
            "--to {}: not a directory",
            args.to.display()
        )));
    }
    super::key::load_passphrase(args.passphrase_file.as_deref())?;
    let chain = super::restore::open(&args.devs, args.key.as_deref())?;
    let started = std::time::Instant::now();
    let report = diff::diff(&chain, &args.to, &only).map_err(|e| match e {
        DiffError::NoMatch { .. } | DiffError::Root { .. } => Failure::Usage(e.to_string()),
    })?;
    let secs = started.elapsed().as_secs_f64();
    let code = if report.same() {
        Outcome::Done
    } else {
        Outcome::Differs
    };
    let set_id = chain.tip().catalog.set_id;
    if args.json {
        let differences: Vec<_> = report
            .differences
            .iter()
            .map(|d| {
                let mut v = with_path(&d.path, json!({ "what": d.what.code() }));
                if let What::Xattr { name, .. } = &d.what {
                    v["name"] = json!(path_text(name));
                }
                if let Some((set, disk)) = values(&d.what) {
                    v["set"] = set;
                    v["disk"] = disk;
                }
                v
            })
            .collect();
        outln!(
            "{}",
            json!({
                "event": "summary",
                "set_id": set_id.to_string(),
                "to": args.to.display().to_string(),
                "entries": report.entries,
                "content_bytes": report.content_bytes,
                "seconds": secs,
                "differences": differences,
                "same": report.same(),
            })
        );
        return Ok(code);
    }
    for d in &report.differences {
        outln!("{}: {}", shown_name(&d.path), d.what);
    }
    let differing: std::collections::BTreeSet<&[u8]> =
        report.differences.iter().map(|d| &d.path[..]).collect();
    outln!(
        "set {set_id}: {} entries compared with {}, {} read, {:.2} s: {}",
        report.entries,
        args.to.display(),
        human_bytes(report.content_bytes),
        secs,
        if report.same() {
            "same".to_string()
        } else {
            format!("{} differ", differing.len())
        }
    );
    Ok(code)
}

/// The set's and the disk's values of a difference, for `--json`.
fn values(what: &What) -> Option<(serde_json::Value, serde_json::Value)> {
    Some(match what {
        What::Kind { set, disk } => (json!(set), json!(disk)),
        What::Size { set, disk } => (json!(set), json!(disk)),
        What::Mode { set, disk } => (json!(format!("{set:04o}")), json!(format!("{disk:04o}"))),
        What::Owner { set, disk } => (
            json!({"uid": set.0, "gid": set.1}),
            json!({"uid": disk.0, "gid": disk.1}),
        ),
        What::Mtime { set, disk } => (
            json!({"sec": set.0, "nsec": set.1}),
            json!({"sec": disk.0, "nsec": disk.1}),
        ),
        What::LinkTarget { set, disk } => (json!(path_text(set)), json!(path_text(disk))),
        What::Rdev { set, disk } => (
            json!({"major": libc::major(*set), "minor": libc::minor(*set)}),
            json!({"major": libc::major(*disk), "minor": libc::minor(*disk)}),
        ),
        What::Flags { set, disk } => (json!(set), json!(disk)),
        // Values as hex (binary in general); null where absent.
        What::Xattr { set, disk, .. } => {
            let hex = |v: &Option<Vec<u8>>| match v {
                Some(v) => json!(v.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                None => serde_json::Value::Null,
            };
            (hex(set), hex(disk))
        }
        What::New { kind } => (serde_json::Value::Null, json!(kind)),
        What::NotLinked { target } => (json!(path_text(target)), serde_json::Value::Null),
        What::Unreadable { why } | What::Refused { why } => (serde_json::Value::Null, json!(why)),
        What::Missing | What::Content => return None,
    })
}

//! `pbio plan`: the plan, per-device bytes and predicted finish, no device I/O.

use clap::Args;
use serde_json::json;

use super::{path_text, prepare, CliResult, Failure, Outcome, SetArgs};
use crate::source::select::Excluded;
use crate::units::{human_bytes, shown_name};

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// Also list what the selection options (--exclude, --exclude-caches, ...) left out, and why.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// The key file of an encrypted `--since` set (`backup --encrypt
    /// --key-file`): its catalog is opened with it.
    #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// The passphrase of an encrypted `--since` set (`backup --encrypt
    /// --passphrase-file`).
    #[arg(long = "passphrase-file", value_name = "FILE", conflicts_with = "key")]
    pub passphrase_file: Option<std::path::PathBuf>,
}

/// One line per excluded name: its stored path and the reason.
/// (path, reason) of each exclusion; `show` turns the stored path into
/// text (escaped for a terminal, exact for JSON).
fn excluded_lines<'a>(
    excluded: &'a [Excluded],
    show: fn(&[u8]) -> String,
) -> impl Iterator<Item = (String, String)> + 'a {
    excluded.iter().map(move |e| {
        // The directory itself is kept; what was left out is inside it.
        let what = if e.kept { "/* (contents)" } else { "" };
        (format!("{}{what}", show(&e.path)), e.reason.to_string())
    })
}

pub fn run(args: PlanArgs) -> CliResult {
    if args.set.changer.is_some() {
        return Err(Failure::Usage(
            "plan --changer: not supported; `pbio backup --changer` plans over the library's scratch cartridges itself".into(),
        ));
    }
    super::key::load_optional(args.key.as_deref())?;
    super::key::load_passphrase(args.passphrase_file.as_deref())?;
    let prepared = prepare(&args.set)?;
    // What `backup` would refuse, said now (stderr: the JSON on stdout stays one object).
    let policy = crate::media::guard::Policy::default();
    for spec in &args.set.devs {
        if let Ok(inspection) = crate::media::guard::inspect(spec) {
            for refusal in inspection.refusals(&policy) {
                errln!("pbio: note: backup would refuse {refusal}");
            }
        }
    }
    let plan = &prepared.plan;
    // The planner read every entry back from the walk's temporary file.
    let read_back = |entries: &crate::source::spill::SpilledEntries| {
        entries.check().map_err(|e| Failure::Data(e.to_string()))
    };
    read_back(&prepared.entries)?;
    if args.set.json {
        let devices: Vec<_> = plan
            .devices
            .iter()
            .zip(&prepared.devices)
            .map(|(load, (path, capacity, rate))| {
                json!({
                    "path": path,
                    "capacity_bytes": capacity,
                    "rate_bytes_per_sec": rate,
                    "assigned_bytes": load.assigned_bytes,
                    "media_bytes": load.media_bytes,
                    "segments": load.segments,
                    "files": load.files,
                    "finish_secs": load.finish_secs,
                })
            })
            .collect();
        let segments: Vec<_> = plan
            .segments
            .iter()
            .map(|s| {
                let path = &prepared.entries.at(s.file as usize).path;
                super::segment_json(path, s.offset, s.length, s.device)
            })
            .collect();
        read_back(&prepared.entries)?;
        let out = json!({
            "threshold_bytes": plan.threshold_bytes,
            "strategy": format!("{:?}", args.set.strategy).to_lowercase(),
            "order": format!("{:?}", args.set.order).to_lowercase(),
            "balance": format!("{:?}", args.set.balance).to_lowercase(),
            "chunk_bytes": args.set.chunk,
            "devices": devices,
            "segments": segments,
        });
        let mut out = out;
        if args.verbose {
            out["excluded"] = excluded_lines(&prepared.excluded, path_text)
                .map(|(path, reason)| json!({"path": path, "reason": reason}))
                .collect();
        }
        outln!("{out}");
        return Ok(Outcome::Done);
    }
    let total: u64 = plan.devices.iter().map(|d| d.assigned_bytes).sum();
    outln!(
        "{} entries, {} in {} segments; threshold T = {} ({} bytes)",
        prepared.entries.len(),
        human_bytes(total),
        plan.segments.len(),
        human_bytes(plan.threshold_bytes),
        plan.threshold_bytes
    );
    outln!(
        "{:>3}  {:<32} {:>12} {:>12} {:>9} {:>8} {:>10}",
        "dev",
        "path",
        "assigned",
        "capacity",
        "segments",
        "files",
        "finish"
    );
    for (i, (load, (path, capacity, _))) in plan.devices.iter().zip(&prepared.devices).enumerate() {
        let finish = load
            .finish_secs
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:>3}  {:<32} {:>12} {:>12} {:>9} {:>8} {:>10}",
            i,
            path,
            human_bytes(load.assigned_bytes),
            human_bytes(*capacity),
            load.segments,
            load.files,
            finish
        );
    }
    if !prepared.excluded.is_empty() {
        outln!(
            "{} names excluded by the selection options",
            prepared.excluded.len()
        );
        if args.verbose {
            for (path, reason) in excluded_lines(&prepared.excluded, shown_name) {
                outln!("  excluded {path}: {reason}");
            }
        }
    }
    Ok(Outcome::Done)
}

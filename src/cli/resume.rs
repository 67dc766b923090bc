//! `pbio backup --resume`: finish an interrupted set (`backup::resume`).

use std::sync::atomic::AtomicU64;

use clap::Args;
use serde_json::json;

use super::backup::{
    backup_config, backup_failed, check_devices, check_writable, outcome, print_report,
    with_progress, BackupArgs,
};
use super::progress::{DeviceInfo, Output, Reporter};
use super::{path_text, prepare, CliResult, Failure};
use crate::backup::resume::{self, StreamEnd};
use crate::backup::SetInput;
use crate::device::{self, Mode};
use crate::media::guard::Policy;
use crate::units::{human_bytes, shown_name};

#[derive(Args, Debug, Default, Clone)]
pub struct ResumeArgs {
    /// Finish a backup that was interrupted (killed, power lost, a cable
    /// pulled): give the same devices (in the same order), sources and
    /// options. Only what is not durable on the devices yet is written;
    /// files changed since are written again whole.
    #[arg(long)]
    pub resume: bool,
}

pub fn run(args: BackupArgs) -> CliResult {
    if args.parity > 0 {
        return Err(Failure::Usage(
            "--resume with --parity: not supported yet (run the backup again with --overwrite SETID)".into(),
        ));
    }
    if args.set.changer.is_some() {
        return super::resume_span::run(args);
    }
    let mac_key = super::key::load_optional(args.key.as_deref())?;
    super::check_paths(&args.set.sources, &args.set.devs)?;
    let prepared = prepare(&args.set)?;
    super::key::check_since_encrypted(args.encrypt, prepared.since.as_ref())?;
    check_writable(&args.set.devs)?;
    let mut devices = Vec::with_capacity(args.set.devs.len());
    for spec in &args.set.devs {
        let dev = device::open(spec, Mode::Write).map_err(Failure::DeviceToWrite)?;
        super::show_notes(dev.as_ref());
        devices.push(dev);
    }
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let mut config = backup_config(&args, prepared.reserve_bytes, events_tx, mac_key, None);
    let input = SetInput {
        entries: prepared.entries,
        plan: prepared.plan,
        since: prepared.since,
    };
    let durable =
        resume::durable(&input, &devices, &config).map_err(|e| Failure::Usage(e.to_string()))?;
    // A blank device joins the set: what it holds goes through the guard.
    let joining: Vec<_> = args
        .set
        .devs
        .iter()
        .zip(&durable.devices)
        .filter(|(_, d)| d.label.is_none())
        .map(|(spec, _)| spec.clone())
        .collect();
    let policy = Policy {
        force: args.force,
        overwrite: args.overwrite.clone(),
    };
    check_devices(&joining, &policy)?;
    config.set_id = durable.set_id;
    config.created_unix_ns = durable.created_unix_ns;
    let json = args.set.json;
    let names: Vec<String> = devices
        .iter()
        .map(|d| d.path().display().to_string())
        .collect();
    show_durable(&input, &durable, &names, json);
    let work = resume::plan(&input, &durable, &config);
    let infos: Vec<DeviceInfo> = prepared
        .devices
        .iter()
        .enumerate()
        .map(|(i, (path, capacity, rate))| DeviceInfo {
            path: path.clone(),
            planned_bytes: work
                .iter()
                .filter(|(d, _)| *d as usize == i)
                .map(|(_, w)| w.length)
                .sum(),
            capacity_bytes: *capacity,
            rate_bytes_per_sec: *rate,
        })
        .collect();
    let mut reporter = Reporter::new(
        Output::choose(json, args.json_interval),
        infos,
        std::io::stdout(),
    );
    reporter.start(&config.set_id.to_string(), input.entries.len(), work.len());
    let progress: Vec<AtomicU64> = devices.iter().map(|_| AtomicU64::new(0)).collect();
    let result = with_progress(reporter, &progress, events_rx, |progress| {
        resume::resume_backup(&input, &devices, &config, &durable, work, progress)
    });
    let r = result.map_err(|e| backup_failed(e, json))?;
    let outcome = outcome(&r.backup);
    if json {
        outln!("{}", finished_json(&r, outcome));
    } else {
        outln!("{}", resumed_line(&r));
    }
    print_report(&r.backup, json);
    Ok(outcome)
}

/// The "finished" event of a resumed run.
pub(super) fn finished_json(
    r: &resume::ResumeReport,
    outcome: super::Outcome,
) -> serde_json::Value {
    json!({
        "event": "finished",
        "ok": r.backup.complete(),
        "exit_code": outcome.code(),
        "set_id": r.backup.set_id.to_string(),
        "payload_bytes": r.written_payload_bytes,
        "missing_bytes": r.backup.missing_bytes(),
        "seconds": r.backup.elapsed.as_secs_f64(),
        "resumed": {
            "kept_records": r.kept_records,
            "kept_payload_bytes": r.kept_payload_bytes,
            "written_payload_bytes": r.written_payload_bytes,
            "set_payload_bytes": r.kept_payload_bytes + r.written_payload_bytes,
            "changed": r.changed.iter().map(|p| path_text(p)).collect::<Vec<_>>(),
        },
    })
}

/// The summary line of a resumed run.
pub(super) fn resumed_line(r: &resume::ResumeReport) -> String {
    format!(
        "resumed set {}: {} kept from the interrupted run ({} records), {} written now",
        r.backup.set_id,
        human_bytes(r.kept_payload_bytes),
        r.kept_records,
        human_bytes(r.written_payload_bytes)
    )
}

/// Where each device's kept stream ends and which files changed: on
/// stderr (with `--json` also as one "resume" event on stdout).
pub(super) fn show_durable(
    input: &SetInput,
    durable: &resume::Durable,
    devices: &[String],
    json: bool,
) {
    for &f in &durable.changed {
        let path = &input.entries.at(f as usize).path;
        errln!(
            "pbio: {}: changed since the interrupted run wrote part of it: written again whole",
            shown_name(path)
        );
    }
    let mut shown = Vec::new();
    for (dev, d) in devices.iter().zip(&durable.devices) {
        let bytes: u64 = d
            .records
            .iter()
            .map(|k| k.record.payload_bytes as u64)
            .sum();
        let (end, at) = match &d.end {
            StreamEnd::Clean => ("clean".to_string(), None),
            StreamEnd::Broken { position, why } => (why.clone(), Some(*position)),
            StreamEnd::Changed { position, file_id } => (
                format!(
                    "record of changed file {}",
                    shown_name(&input.entries.at(*file_id as usize).path)
                ),
                Some(*position),
            ),
        };
        let joins = d.label.is_none();
        if !json {
            errln!(
                "pbio: resume: device {}: {}{} records kept ({}){}",
                dev,
                if joins { "blank, joins the set; " } else { "" },
                d.records.len(),
                human_bytes(bytes),
                at.map(|p| format!(", stream ends at {p}: {end}"))
                    .unwrap_or_default()
            );
        }
        shown.push(json!({
            "device": dev,
            "joins": joins,
            "kept_records": d.records.len(),
            "kept_payload_bytes": bytes,
            "end": end,
            "end_position": at,
        }));
    }
    if json {
        outln!(
            "{}",
            json!({
                "event": "resume",
                "set_id": durable.set_id.to_string(),
                "devices": shown,
                "changed": durable.changed.iter().map(|&f| path_text(&input.entries.at(f as usize).path)).collect::<Vec<_>>(),
            })
        );
    }
}

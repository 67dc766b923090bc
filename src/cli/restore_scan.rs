//! `restore --scan` and `verify --scan`: a set read from its records
//! alone, with no catalog (after a crash, or with every catalog lost);
//! a `--parity` set's missing records rebuilt from its parity records.

use serde_json::json;

use super::{path_text, CliResult, Failure, Outcome};
use crate::device::DeviceSpec;
use crate::restore;
use crate::units::{human_bytes, shown_line, shown_name};

/// `restore --scan` of an encrypted set: its data key, opened from the
/// first label of the set that carries an envelope with the key file's
/// key (exit 2 without one or with another, before anything is written).
fn scan_keys(
    devs: &[Box<dyn crate::device::Device>],
    set_id: crate::format::SetId,
    key: Option<&std::path::Path>,
) -> Result<(), Failure> {
    super::key::load_optional(key)?;
    for dev in devs {
        let Ok(label) = crate::media::read_label(dev.as_ref()) else {
            continue;
        };
        if label.set_id != set_id || !label.seal.is_sealed() {
            continue;
        }
        return match crate::format::seal::keyring::open(set_id, &label.seal) {
            Ok(_) => Ok(()),
            Err(refusal) => Err(Failure::Restore {
                doing: "restore --scan: ",
                error: restore::RestoreError::Encrypted {
                    device: dev.path().display().to_string(),
                    set: set_id.to_string(),
                    wrong_key: refusal == crate::format::seal::keyring::Refusal::WrongKey,
                },
            }),
        };
    }
    Ok(())
}

/// `restore --scan` (into `to`) and `verify --scan` (`to` None).
pub(super) fn run(
    specs: &[DeviceSpec],
    to: Option<&std::path::Path>,
    open: &super::OpenArgs,
    (keep_partial, as_json): (bool, bool),
) -> CliResult {
    let mut devs = Vec::with_capacity(specs.len());
    for spec in specs {
        let dev =
            crate::device::open(spec, crate::device::Mode::Read).map_err(Failure::DeviceToRead)?;
        super::show_notes(dev.as_ref());
        devs.push(dev);
    }
    let started = std::time::Instant::now();
    let scan_failed = |error| Failure::Restore {
        doing: if to.is_some() {
            "restore --scan failed: "
        } else {
            "verify --scan failed: "
        },
        error,
    };
    let device_sets = crate::media::scan::device_sets(&devs).map_err(|e| scan_failed(e.into()))?;
    let chosen = crate::media::scan::choose_set(&device_sets, open.set.as_deref())
        .map_err(Failure::Usage)?;
    let report = match chosen {
        Some(set_id) => {
            super::key::load_passphrase(open.passphrase_file.as_deref())?;
            scan_keys(&devs, set_id, open.key.as_deref())?;
            restore::scan::restore_from_scan(&devs, to, set_id, keep_partial)
                .map_err(scan_failed)?
        }
        None => restore::scan::ScanRestoreReport::default(),
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let set = report
        .set_id
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    let code = if report.incomplete.is_empty()
        && report.lost.is_empty()
        && report.bad_records == 0
        && report.errors.is_empty()
    {
        Outcome::Done
    } else {
        Outcome::Incomplete
    };
    let rebuild = &report.rebuild;
    if as_json {
        let range = |&(o, l, d): &(u64, u64, u32)| json!({"offset": o, "length": l, "device": d});
        outln!(
            "{}",
            json!({
                "event": "summary",
                "set_id": set,
                "files": report.restored.len(),
                "restored": report.restored.iter().map(|p| path_text(p)).collect::<Vec<_>>(),
                "payload_bytes": report.payload_bytes,
                "seconds": secs,
                "bad_records": report.bad_records,
                "incomplete": report.incomplete.iter().map(|i| json!({
                    "path": path_text(&i.path), "found_bytes": i.found_bytes,
                    "data_bytes": i.data_bytes, "why": i.why,
                    "kept_as": i.kept_as.as_deref().map(path_text),
                    "ranges": i.ranges.iter().map(range).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "lost": report.lost.iter().map(|&(f, o, l, d)| json!({
                    "file_id": f, "offset": o, "length": l, "device": d,
                })).collect::<Vec<_>>(),
                "other_sets": report.other_sets.iter().map(|(id, n)| json!({
                    "set_id": id.to_string(), "records": n,
                })).collect::<Vec<_>>(),
                "errors": report.errors,
                "warnings": report.warnings,
                "rebuild": super::restore::rebuild_json(rebuild),
                "ok": code == Outcome::Done,
            })
        );
        return Ok(code);
    }
    outln!(
        "set {set}: {} {} complete files, {} from records alone, {:.2} s",
        if to.is_some() { "restored" } else { "verified" },
        report.restored.len(),
        human_bytes(report.payload_bytes),
        secs
    );
    super::restore::say_rebuild(rebuild);
    for i in &report.incomplete {
        let ranges: Vec<String> = i
            .ranges
            .iter()
            .map(|&(o, l, d)| format!("{o}..{} on device {d}", o + l))
            .collect();
        errln!(
            "incomplete: {}: {} of {} bytes found ({}{}); {}",
            shown_name(&i.path),
            i.found_bytes,
            i.data_bytes,
            i.why,
            if ranges.is_empty() {
                String::new()
            } else {
                format!("; not rebuildable from parity: {}", ranges.join(", "))
            },
            match (&i.kept_as, to) {
                (Some(kept), _) =>
                    format!("not restored, partial data kept as {}", shown_name(kept)),
                (None, Some(_)) => "not restored".to_string(),
                (None, None) => "it would not be restored".to_string(),
            }
        );
    }
    for &(f, o, l, d) in &report.lost {
        errln!(
            "missing: a file (id {f}) no record of which was found: bytes {o}..{} on device {d}, not rebuildable from parity",
            o + l
        );
    }
    for e in &report.errors {
        errln!("error: {}", crate::units::shown_line(e));
    }
    for w in &report.warnings {
        errln!("warning: {}", shown_line(w));
    }
    if report.bad_records > 0 {
        errln!("{} damaged records skipped", report.bad_records);
    }
    for (id, n) in &report.other_sets {
        errln!(
            "note: {n} records of set {} skipped (not the set restored; --set {} restores them)",
            id,
            id
        );
    }
    Ok(code)
}

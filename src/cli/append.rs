//! `backup --append` and `--retention`: where a new set goes on a tape
//! that already holds sets (after the last complete one, never over one:
//! docs/FORMAT.md "Tape layout", rule 11), and the age below which a set
//! is never overwritten without `--force`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backup::BackupArgs;
use super::Failure;
use crate::device::{self, Access, Device, DeviceSpec, Kind, Mode};
use crate::format::Label;
use crate::media::guard::{self, Finding, Policy};
use crate::media::sets::{self, SetEnd, SetOnTape, TapeSet};

/// Where a new set is written on a tape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendPoint {
    /// Filemarks in front of the new set's label.
    pub files_before: u32,
    /// Bytes recorded before it, where known (an emulated cartridge);
    /// 0 on a real drive (its early warning ends the new set's data).
    pub used_bytes: u64,
    /// Complete sets left in front of it.
    pub sets_before: usize,
}

impl AppendPoint {
    /// `dev` (a tape opened for writing) seen from the new set's label.
    pub fn view(&self, dev: Box<dyn Device>) -> Box<dyn Device> {
        if self.files_before == 0 && self.used_bytes == 0 {
            return dev;
        }
        Box::new(SetOnTape::new(dev, self.files_before).with_used_bytes(self.used_bytes))
    }
}

/// Where `backup --append` writes on the tape `spec` names: after the
/// last set, once every set on it is checked to its closing filemark. A
/// random-access device is refused (exit 2: a disk holds one set), as is
/// a tape whose last set is not closed (an interrupted run) unless
/// `force` (the new set then takes its place), and a tape holding another
/// program's data.
pub fn append_point(spec: &DeviceSpec, force: bool) -> Result<AppendPoint, Failure> {
    let name = spec.path.display().to_string();
    let probe = device::probe(spec).map_err(Failure::DeviceToWrite)?;
    if !matches!(probe.kind, Kind::Tape | Kind::VirtualTape) {
        return Err(Failure::Usage(format!(
            "device {name}: --append writes a new set after the sets on a tape; this is a random-access device ({:?}), which holds one set (replace it with --overwrite SETID or --force)",
            probe.kind
        )));
    }
    let inspection = guard::inspect(spec).map_err(Failure::DeviceToWrite)?;
    if let Some(other) = inspection
        .findings
        .iter()
        .find(|f| !matches!(f, Finding::PbioSet { .. }))
    {
        return Err(Failure::Usage(format!(
            "device {name}: --append: {}",
            other.describe(&guard::Policy::default())
        )));
    }
    if inspection.findings.is_empty() {
        return Ok(AppendPoint::default());
    }
    let dev = device::open(spec, Mode::Read).map_err(Failure::DeviceToWrite)?;
    let found = sets::sets_to_append_after(dev.as_ref())
        .map_err(|e| Failure::Usage(format!("device {name}: --append: {e}")))?;
    drop(dev);
    let used_bytes = match device::vtape::dir_of(&spec.path) {
        Some(dir) => device::vtape::recorded_bytes(&dir)
            .map_err(|why| Failure::Usage(format!("device {name}: {why}")))?,
        None => 0,
    };
    let Some(last) = found.last() else {
        return Ok(AppendPoint::default());
    };
    if let SetEnd::Incomplete(why) = &last.end {
        if !force {
            return Err(Failure::Usage(format!(
                "device {name}: its last set {} (created {}) is not complete ({why}); --append never writes over a set: give --force to write the new set in its place",
                last.label.set_id,
                guard::utc_text(last.label.created_unix_ns / 1_000_000_000)
            )));
        }
        return Ok(AppendPoint {
            files_before: last.files_before,
            used_bytes,
            sets_before: found.len() - 1,
        });
    }
    Ok(AppendPoint {
        files_before: last.files_after(),
        used_bytes,
        sets_before: found.len(),
    })
}

/// The overwrite guard over every device: all refusals at once, before
/// anything is opened for writing.
pub fn check_devices(devs: &[DeviceSpec], policy: &Policy) -> Result<(), Failure> {
    check_devices_kept(devs, policy, None)
}

/// `check_devices`; with `retention`, a set younger than it is refused
/// too (unless `--force`), even when `--overwrite` names it.
pub fn check_devices_kept(
    devs: &[DeviceSpec],
    policy: &Policy,
    retention: Option<Duration>,
) -> Result<(), Failure> {
    let mut refusals = Vec::new();
    let mut sets_found = Vec::new();
    for spec in devs {
        let inspection = guard::inspect(spec).map_err(Failure::DeviceToWrite)?;
        for finding in &inspection.findings {
            if let Finding::PbioSet { label } = finding {
                sets_found.push(label.set_id);
                if let (Some(retention), false) = (retention, policy.force) {
                    let device = inspection.path.display().to_string();
                    refusals.extend(super::append::retention_refusal(&device, label, retention));
                }
            }
        }
        refusals.extend(inspection.refusals(policy));
    }
    if !refusals.is_empty() {
        return Err(Failure::Usage(format!(
            "refusing to write to {} (nothing was written):\n  {}",
            if refusals.len() == 1 {
                "this device".to_string()
            } else {
                format!("these devices ({} findings)", refusals.len())
            },
            refusals.join("\n  ")
        )));
    }
    for id in &policy.overwrite {
        if !sets_found.contains(id) {
            errln!("pbio: note: --overwrite {}: no device holds that set", id);
        }
    }
    Ok(())
}

/// `backup`: with `--append`, where the new set goes on each device;
/// without it, the overwrite guard (and `--retention`) over them.
pub fn points_or_guard(args: &BackupArgs, policy: &Policy) -> Result<Vec<AppendPoint>, Failure> {
    if !args.append {
        check_devices_kept(&args.set.devs, policy, args.retention)?;
        return Ok(Vec::new());
    }
    let points = args
        .set
        .devs
        .iter()
        .map(|spec| append_point(spec, args.force));
    points.collect()
}

/// `--retention DURATION`: a number and a unit, s, m, h, d or w (30d, 12h).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("'{text}': give a number and a unit (s, m, h, d, w), as 30d or 12h")
    })?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (give s, m, h, d or w, as 30d or 12h)"
            ))
        }
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{text}': too long"))
}

/// `90s`, `5m`, `3h`, `12d`: a duration as the messages show it.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How old the set of `label` is, if younger than `retention`.
pub fn younger_than(label: &Label, retention: Duration) -> Option<Duration> {
    let age = Duration::from_nanos(now_unix_ns().saturating_sub(label.created_unix_ns));
    (age < retention).then_some(age)
}

/// The refusal of `--retention` for a device holding `label`'s set.
pub fn retention_refusal(device: &str, label: &Label, retention: Duration) -> Option<String> {
    let age = younger_than(label, retention)?;
    Some(format!(
        "{device}: holds pbio set {} created {} ({} ago), younger than --retention {}; give --force to overwrite it",
        label.set_id,
        guard::utc_text(label.created_unix_ns / 1_000_000_000),
        duration_text(age),
        duration_text(retention)
    ))
}

/// The sets on each tape of `devices` (attached while walked: a
/// cartridge of a library is loaded), by device index. A tape that
/// cannot be walked is left out (its reader reports it).
pub fn sets_on_tapes(devices: &[Box<dyn Device>]) -> Vec<(usize, Vec<TapeSet>)> {
    let mut out = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        if dev.access() != Access::Sequential || dev.attach().is_err() {
            continue;
        }
        if let Ok(found) = sets::sets_on_tape(dev.as_ref()) {
            out.push((i, found));
        }
        dev.detach();
    }
    out
}

/// Restore, verify and list with `--dev`: a tape holding several sets is
/// seen as the one `--set` names (a unique prefix of its id); without
/// `--set`, several sets on the tapes given are refused, naming them
/// (exit 2). Tapes without that set are left out; other devices are kept
/// as they are (their labels say which set they hold).
pub fn choose_on_tapes(
    devices: Vec<Box<dyn Device>>,
    set: Option<&str>,
) -> Result<Vec<Box<dyn Device>>, Failure> {
    let found = sets_on_tapes(&devices);
    let several = found.iter().any(|(_, sets)| sets.len() > 1);
    if set.is_none() && !several {
        return Ok(devices);
    }
    let ids: Vec<_> = found
        .iter()
        .flat_map(|(_, sets)| sets.iter().map(|s| s.label.set_id))
        .collect();
    let chosen = if ids.is_empty() {
        return Ok(devices);
    } else {
        sets::choose(&ids, set).map_err(|e| Failure::Usage(e.to_string()))?
    };
    let mut kept = Vec::new();
    for (i, dev) in devices.into_iter().enumerate() {
        match found.iter().find(|(d, _)| *d == i) {
            None => kept.push(dev),
            Some((_, sets)) => {
                if let Some(s) = sets.iter().find(|s| s.label.set_id == chosen) {
                    kept.push(if s.files_before == 0 {
                        dev
                    } else {
                        Box::new(SetOnTape::new(dev, s.files_before)) as Box<dyn Device>
                    });
                }
            }
        }
    }
    if kept.is_empty() {
        return Err(Failure::Usage(format!(
            "no device given holds set {chosen}"
        )));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
        assert_eq!(duration_text(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(duration_text(Duration::from_secs(3 * 3600)), "3h");
    }

    #[test]
    fn retention_names_the_set_and_its_age() {
        let mut label = Label {
            set_id: Default::default(),
            device_index: 0,
            device_count: 1,
            chunk_bytes: 1 << 20,
            block_bytes: 4096,
            created_unix_ns: now_unix_ns() - 3600 * 1_000_000_000,
            state: crate::format::LabelState::Writing,
            catalog_offset: 0,
            catalog_bytes: 0,
            data_end: 0,
            catalog_digest: [0; 32],
            mac: [0; 32],
            seal: Default::default(),
        };
        let why = retention_refusal("vtape:x", &label, Duration::from_secs(86_400)).unwrap();
        assert!(
            why.contains("vtape:x") && why.contains("60m ago") && why.contains("24h"),
            "{why}"
        );
        assert!(retention_refusal("vtape:x", &label, Duration::from_secs(60)).is_none());
        label.created_unix_ns = 0;
        assert!(younger_than(&label, Duration::from_secs(86_400)).is_none());
    }
}

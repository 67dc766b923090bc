//! What a running backup shows: per-device bars and a total bar on a
//! terminal (indicatif), or one JSON object per line for harnesses
//! (`--json`), or nothing but device events when stderr is not a terminal.
//!
//! The reporter only reads: the engine's per-device payload counters
//! (`progress` atomics) and its `Event` channel. It runs on its own thread
//! while `backup::run_backup` runs (`run`), and tells the caller how each
//! device ended (`LiveState`) for the summary and the exit code.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::backup::Event;
use crate::units::{human_bytes, shown_line};

/// How often bars are redrawn.
pub const BAR_INTERVAL: Duration = Duration::from_millis(100);
/// Default interval between `--json` progress events.
pub const JSON_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Bars on stderr (a terminal).
    Bars,
    /// JSON lines on stdout, one progress event per device per interval.
    Json { interval: Duration },
    /// Nothing but a line on stderr for each device event.
    Quiet,
}

impl Output {
    /// Bars when stderr is a terminal, JSON when asked, else quiet.
    pub fn choose(json: bool, interval: Duration) -> Output {
        use std::io::IsTerminal;
        if json {
            Output::Json { interval }
        } else if std::io::stderr().is_terminal() {
            Output::Bars
        } else {
            Output::Quiet
        }
    }
}

/// One device as the reporter knows it before the run.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub path: String,
    /// Payload bytes the plan gives the device.
    pub planned_bytes: u64,
    pub capacity_bytes: u64,
    /// The rate the plan used (declared with rate=, or measured by the
    /// `--balance time` probe); None: not needed.
    pub rate_bytes_per_sec: Option<u64>,
}

/// How a device is doing, as far as its events tell (for the display; the
/// engine's `BackupReport` is the authority on how it ended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveState {
    Complete,
    /// Filled up early; `durable_bytes` of payload stayed on it.
    Full {
        error: String,
        durable_bytes: u64,
    },
    /// Failed: nothing on it counts; its work was written on the others.
    Failed {
        error: String,
    },
}

impl LiveState {
    pub fn name(&self) -> &'static str {
        match self {
            LiveState::Complete => "complete",
            LiveState::Full { .. } => "full",
            LiveState::Failed { .. } => "failed",
        }
    }
    pub fn error(&self) -> Option<&str> {
        match self {
            LiveState::Complete => None,
            LiveState::Full { error, .. } | LiveState::Failed { error } => Some(error),
        }
    }
}

struct Bars {
    multi: MultiProgress,
    devices: Vec<ProgressBar>,
    total: ProgressBar,
}

impl Bars {
    fn new(devices: &[DeviceInfo]) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template(
            "{prefix:>5} {msg:<20!} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>4}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let total_style = ProgressStyle::with_template(
            "{prefix:>5} {msg:<20!} [{bar:30.green}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>4} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let bars: Vec<ProgressBar> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let bar = multi.add(ProgressBar::new(d.planned_bytes.max(1)));
                bar.set_style(style.clone());
                bar.set_prefix(format!("dev{i}"));
                bar.set_message(d.path.clone());
                bar
            })
            .collect();
        let total = multi.add(ProgressBar::new(
            devices.iter().map(|d| d.planned_bytes).sum::<u64>().max(1),
        ));
        total.set_style(total_style);
        total.set_prefix("total");
        total.set_message(format!("{} devices", devices.len()));
        Bars {
            multi,
            devices: bars,
            total,
        }
    }
}

/// The reporter's state; `W` is where JSON lines go (stdout in the binary).
pub struct Reporter<W: Write> {
    output: Output,
    devices: Vec<DeviceInfo>,
    ends: Vec<LiveState>,
    /// Device bytes at the moment it failed (its bar stops there).
    failed_at: Vec<Option<u64>>,
    out: W,
    bars: Option<Bars>,
    started: Instant,
    /// `--compress`, `--encrypt`: the devices' wait for the workers.
    cpu_wait: Option<CpuWait>,
}

/// How long the devices have waited for the compression and encryption
/// workers (`BackupConfig::cpu_wait_us`), as of the last tick.
struct CpuWait {
    waited_us: Arc<AtomicU64>,
    last_us: u64,
    last_at: Instant,
}

/// A device waiting for the workers a tenth of an interval or more:
/// the CPUs do not keep up (the summary then gives the CPU-bound rate).
const CPU_BOUND_SHARE: f64 = 0.1;

impl CpuWait {
    /// Whether the devices waited for the workers since the last call
    /// for `CPU_BOUND_SHARE` of the time or more.
    fn bound_since_last(&mut self) -> bool {
        let now_us = self.waited_us.load(Ordering::Relaxed);
        let now = Instant::now();
        let wall_us = now.duration_since(self.last_at).as_micros() as f64;
        let waited_us = now_us.saturating_sub(self.last_us) as f64;
        (self.last_us, self.last_at) = (now_us, now);
        wall_us > 0.0 && waited_us >= CPU_BOUND_SHARE * wall_us
    }
}

/// A backup's input from what `prepare` found, and its reporter, started
/// (the `start` event or the bars) on stdout.
pub fn start_run(
    prepared: super::Prepared,
    output: Output,
    devices: Vec<DeviceInfo>,
    config: &crate::backup::BackupConfig,
) -> (crate::backup::SetInput, Reporter<std::io::Stdout>) {
    let set_id = config.set_id;
    let input = crate::backup::SetInput {
        entries: prepared.entries,
        plan: prepared.plan,
        since: prepared.since,
    };
    let mut reporter = Reporter::new(output, devices, std::io::stdout());
    if config.compression.is_some() || config.encryption.is_some() {
        reporter.watch_cpu_wait(config.cpu_wait_us.clone());
    }
    reporter.start(
        &set_id.to_string(),
        input.entries.len(),
        input.plan.segments.len(),
    );
    (input, reporter)
}

impl<W: Write> Reporter<W> {
    pub fn new(output: Output, devices: Vec<DeviceInfo>, out: W) -> Reporter<W> {
        let n = devices.len();
        Reporter {
            output,
            bars: None,
            devices,
            ends: vec![LiveState::Complete; n],
            failed_at: vec![None; n],
            out,
            started: Instant::now(),
            cpu_wait: None,
        }
    }

    /// Say in the progress (bars, `--json` progress events) when the
    /// devices wait for the workers: `waited_us` is their wait so far.
    pub fn watch_cpu_wait(&mut self, waited_us: Arc<AtomicU64>) {
        let last_us = waited_us.load(Ordering::Relaxed);
        self.cpu_wait = Some(CpuWait {
            waited_us,
            last_us,
            last_at: Instant::now(),
        });
    }

    fn json_line(&mut self, value: serde_json::Value) {
        // A closed stdout (harness went away) must not stop the backup.
        let _ = writeln!(self.out, "{value}");
        let _ = self.out.flush();
    }

    /// Announce the run: the `start` event, or the bars.
    pub fn start(&mut self, set_id: &str, files: usize, segments: usize) {
        self.started = Instant::now();
        match self.output {
            Output::Json { .. } => {
                let devices: Vec<_> = self
                    .devices
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        json!({
                            "device": i,
                            "path": d.path,
                            "planned_bytes": d.planned_bytes,
                            "capacity_bytes": d.capacity_bytes,
                            "rate_bytes_per_sec": d.rate_bytes_per_sec,
                        })
                    })
                    .collect();
                let total: u64 = self.devices.iter().map(|d| d.planned_bytes).sum();
                self.json_line(json!({
                    "event": "start",
                    "set_id": set_id,
                    "files": files,
                    "segments": segments,
                    "payload_bytes": total,
                    "devices": devices,
                }));
            }
            Output::Bars => self.bars = Some(Bars::new(&self.devices)),
            Output::Quiet => {}
        }
    }

    /// Bytes the device is expected to end with, as far as is known now.
    fn expected_bytes(&self, device: usize, bytes: u64) -> u64 {
        match &self.ends[device] {
            LiveState::Complete => self.devices[device].planned_bytes.max(bytes),
            LiveState::Full { durable_bytes, .. } => *durable_bytes,
            LiveState::Failed { .. } => self.failed_at[device].unwrap_or(bytes),
        }
    }

    /// Payload bytes of the set that are safely placed so far: a failed
    /// device's bytes do not count (they are written again elsewhere).
    fn placed_bytes(&self, now: &[u64]) -> u64 {
        now.iter()
            .enumerate()
            .map(|(i, &b)| match &self.ends[i] {
                LiveState::Complete => b,
                LiveState::Full { durable_bytes, .. } => b.min(*durable_bytes),
                LiveState::Failed { .. } => 0,
            })
            .sum()
    }

    /// Show the counters as they are now.
    pub fn tick(&mut self, now: &[u64]) {
        let cpu_bound = self.cpu_wait.as_mut().map(CpuWait::bound_since_last);
        match self.output {
            Output::Json { .. } => {
                let seconds = self.started.elapsed().as_secs_f64();
                for (i, &written) in now.iter().enumerate() {
                    // A full device keeps only its durable bytes: writes
                    // that completed past the fill point do not count.
                    let bytes = match &self.ends[i] {
                        LiveState::Full { durable_bytes, .. } => written.min(*durable_bytes),
                        _ => written,
                    };
                    let total = self.expected_bytes(i, bytes);
                    let mut line = json!({
                        "event": "progress",
                        "device": i,
                        "bytes": bytes,
                        "total": total,
                        "seconds": seconds,
                    });
                    // With workers: whether the devices waited for them
                    // (the CPUs do not keep up) since the last tick.
                    if let Some(bound) = cpu_bound {
                        line["cpu_bound"] = bound.into();
                    }
                    self.json_line(line);
                }
            }
            Output::Bars => {
                let placed = self.placed_bytes(now);
                let Some(bars) = &self.bars else { return };
                for (i, &bytes) in now.iter().enumerate() {
                    if self.ends[i] != LiveState::Complete {
                        continue; // abandoned at the event
                    }
                    let bar = &bars.devices[i];
                    if bytes > bar.length().unwrap_or(0) {
                        bar.set_length(bytes);
                    }
                    bar.set_position(bytes);
                }
                let total_len = bars.total.length().unwrap_or(0);
                bars.total.set_position(placed.min(total_len));
                match cpu_bound {
                    Some(true) => bars.total.set_message("CPU-bound (workers)"),
                    Some(false) => bars.total.set_message(format!("{} devices", now.len())),
                    None => {}
                }
            }
            Output::Quiet => {}
        }
    }

    /// A device filled up or failed: record it and say so.
    pub fn event(&mut self, event: &Event, now: &[u64]) {
        let seconds = self.started.elapsed().as_secs_f64();
        let (device, line, value) = match event {
            Event::DeviceFull {
                device,
                error,
                durable_bytes,
                redirected_bytes,
            } => {
                let i = *device as usize;
                let error = error.to_string();
                self.ends[i] = LiveState::Full {
                    error: error.clone(),
                    durable_bytes: *durable_bytes,
                };
                let path = &self.devices[i].path;
                (
                    i,
                    format!(
                        "device {i} {path} is full ({}) after {}: {} of its work goes to the other devices",
                        shown_line(&error),
                        human_bytes(*durable_bytes),
                        human_bytes(*redirected_bytes)
                    ),
                    json!({
                        "event": "device_full",
                        "device": i,
                        "path": path,
                        "error": error,
                        "durable_bytes": durable_bytes,
                        "redirected_bytes": redirected_bytes,
                        "seconds": seconds,
                    }),
                )
            }
            Event::DeviceFailed {
                device,
                error,
                redirected_bytes,
            } => {
                let i = *device as usize;
                let error = error.to_string();
                self.ends[i] = LiveState::Failed {
                    error: error.clone(),
                };
                self.failed_at[i] = Some(now.get(i).copied().unwrap_or(0));
                let path = &self.devices[i].path;
                (
                    i,
                    format!(
                        "device {i} {path} FAILED ({}): {} of its work is written again on the other devices",
                        shown_line(&error),
                        human_bytes(*redirected_bytes)
                    ),
                    json!({
                        "event": "device_failed",
                        "device": i,
                        "path": path,
                        "error": error,
                        "redirected_bytes": redirected_bytes,
                        "seconds": seconds,
                    }),
                )
            }
        };
        assert!(
            device < self.devices.len(),
            "event for device {device}: engine bug"
        );
        match self.output {
            Output::Json { .. } => self.json_line(value),
            Output::Bars => {
                if let Some(bars) = &self.bars {
                    let bar = &bars.devices[device];
                    let state = self.ends[device].name();
                    bar.set_position(now.get(device).copied().unwrap_or(0));
                    bar.abandon_with_message(format!("{} ({state})", self.devices[device].path));
                    let _ = bars.multi.println(format!("pbio: {line}"));
                }
            }
            Output::Quiet => errln!("pbio: {line}"),
        }
    }

    /// The last counters, bars cleared; how each device ended.
    pub fn finish(mut self, now: &[u64]) -> Vec<LiveState> {
        self.tick(now);
        if let Some(bars) = self.bars.take() {
            for bar in &bars.devices {
                bar.finish_and_clear();
            }
            bars.total.finish_and_clear();
            let _ = bars.multi.clear();
        }
        self.ends
    }

    pub fn interval(&self) -> Duration {
        match self.output {
            Output::Json { interval } => interval,
            Output::Bars => BAR_INTERVAL,
            // Only events to wait for; wake now and then regardless.
            Output::Quiet => Duration::from_secs(3600),
        }
    }
}

fn snapshot(progress: &[AtomicU64]) -> Vec<u64> {
    progress.iter().map(|p| p.load(Ordering::Relaxed)).collect()
}

/// Report until `stop` is signalled (sent to or dropped): a tick every
/// interval, each event as it arrives, then the events still queued and a
/// final tick.
pub fn run<W: Write>(
    mut reporter: Reporter<W>,
    progress: &[AtomicU64],
    events: Receiver<Event>,
    stop: Receiver<()>,
) -> Vec<LiveState> {
    let interval = reporter.interval();
    let mut next_tick = Instant::now() + interval;
    let mut events_open = true;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if events_open {
            select! {
                recv(events) -> ev => match ev {
                    Ok(ev) => reporter.event(&ev, &snapshot(progress)),
                    Err(_) => events_open = false,
                },
                recv(stop) -> _ => break,
                default(timeout) => {}
            }
        } else {
            select! {
                recv(stop) -> _ => break,
                default(timeout) => {}
            }
        }
        if Instant::now() >= next_tick {
            reporter.tick(&snapshot(progress));
            next_tick += interval;
            let now = Instant::now();
            if next_tick < now {
                next_tick = now + interval;
            }
        }
    }
    while let Ok(ev) = events.try_recv() {
        reporter.event(&ev, &snapshot(progress));
    }
    reporter.finish(&snapshot(progress))
}

/// `--json-interval SECONDS`: 0.01 to 3600.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("'{text}': give between 0.01 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ring::{DeviceFault, Fault};
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Sink {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn devices() -> Vec<DeviceInfo> {
        (0..3)
            .map(|i| DeviceInfo {
                path: format!("/dev/x{i}"),
                planned_bytes: 100,
                capacity_bytes: 1000,
                rate_bytes_per_sec: None,
            })
            .collect()
    }

    /// With workers, each progress event says whether the devices waited
    /// for them since the last one (the CPUs not keeping up); without,
    /// the field is absent.
    #[test]
    fn progress_says_when_the_devices_wait_for_the_workers() {
        let sink = Sink::default();
        let output = Output::Json {
            interval: Duration::from_millis(5),
        };
        let waited_us = Arc::new(AtomicU64::new(0));
        let mut reporter = Reporter::new(output, devices(), sink.clone());
        reporter.watch_cpu_wait(waited_us.clone());
        reporter.start("ab", 10, 12);
        // An hour of waiting since the last tick: bound, whatever the
        // wall time between them.
        waited_us.fetch_add(3_600_000_000, Ordering::Relaxed);
        reporter.tick(&[10, 20, 30]);
        // No waiting since: not bound.
        reporter.tick(&[20, 30, 40]);
        let progress: Vec<Value> = sink
            .lines()
            .into_iter()
            .filter(|l| l["event"] == "progress")
            .collect();
        assert_eq!(progress.len(), 6);
        assert!(progress[..3].iter().all(|l| l["cpu_bound"] == true));
        assert!(progress[3..].iter().all(|l| l["cpu_bound"] == false));
        let plain = Sink::default();
        let mut reporter = Reporter::new(output, devices(), plain.clone());
        reporter.start("ab", 10, 12);
        reporter.tick(&[10, 20, 30]);
        assert!(plain.lines().iter().all(|l| l.get("cpu_bound").is_none()));
    }

    #[test]
    fn json_events_in_order_with_full_and_failed() {
        let sink = Sink::default();
        let output = Output::Json {
            interval: Duration::from_millis(5),
        };
        let mut reporter = Reporter::new(output, devices(), sink.clone());
        reporter.start("ab", 10, 12);
        let progress: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let ends = std::thread::scope(|s| {
            let h = s.spawn(|| run(reporter, &progress, rx, stop_rx));
            progress[0].store(40, Ordering::Relaxed);
            progress[1].store(70, Ordering::Relaxed);
            tx.send(Event::DeviceFull {
                device: 0,
                error: DeviceFault {
                    device: "/dev/x0".into(),
                    fault: Fault::Write {
                        offset: 40,
                        error: std::io::Error::from_raw_os_error(libc::ENOSPC),
                    },
                },
                durable_bytes: 40,
                redirected_bytes: 60,
            })
            .unwrap();
            tx.send(Event::DeviceFailed {
                device: 2,
                error: DeviceFault {
                    device: "/dev/x2".into(),
                    fault: Fault::Transport(crate::device::TransportError::Stopped("EIO".into())),
                },
                redirected_bytes: 100,
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(30));
            progress[1].store(260, Ordering::Relaxed);
            drop(stop_tx);
            h.join().unwrap()
        });
        assert_eq!(ends[0].name(), "full");
        assert_eq!(ends[1], LiveState::Complete);
        assert_eq!(
            ends[2],
            LiveState::Failed {
                error: "EIO".into()
            }
        );
        let lines = sink.lines();
        assert_eq!(lines[0]["event"], "start");
        assert_eq!(lines[0]["devices"][2]["planned_bytes"], 100);
        assert_eq!(lines[0]["payload_bytes"], 300);
        let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        let full = kinds.iter().position(|k| *k == "device_full").unwrap();
        let failed = kinds.iter().position(|k| *k == "device_failed").unwrap();
        assert!(full < failed);
        assert_eq!(lines[full]["redirected_bytes"], 60);
        assert_eq!(lines[failed]["path"], "/dev/x2");
        // The final tick: one progress event per device, in device order.
        let last: Vec<&Value> = lines[lines.len() - 3..].iter().collect();
        for (i, l) in last.iter().enumerate() {
            assert_eq!(l["event"], "progress");
            assert_eq!(l["device"], i);
        }
        assert_eq!(
            last[0]["total"], 40,
            "a full device ends at its durable bytes"
        );
        assert_eq!(last[1]["bytes"], 260);
        assert_eq!(
            last[1]["total"], 260,
            "a survivor's total grows with redirected work"
        );
        assert!(
            kinds.iter().filter(|k| **k == "progress").count() > 3,
            "{kinds:?}"
        );
    }

    #[test]
    fn placed_bytes_ignore_failed_devices() {
        let mut r = Reporter::new(Output::Quiet, devices(), Sink::default());
        r.ends[0] = LiveState::Full {
            error: String::new(),
            durable_bytes: 30,
        };
        r.ends[2] = LiveState::Failed {
            error: String::new(),
        };
        assert_eq!(r.placed_bytes(&[50, 70, 90]), 30 + 70);
    }
}

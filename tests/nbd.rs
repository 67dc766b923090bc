//! `nbd` devices end to end (issue 9), against real servers: qemu-nbd and
//! nbdkit in network namespaces behind tc-shaped links (tests/common/netns.rs),
//! a local loop device beside them, and a hostile NBD server written here
//! (a real TCP server speaking real NBD until the moment it misbehaves).
//!
//! Every pbio run is bounded: a run that outlives its limit is killed and
//! the test fails saying it hung. Root and CI rules as in the other tests:
//! under `CI=true` a missing capability fails, elsewhere the test is skipped.
//!
//! The tests that drive the shaped sites hold a shared lock, the
//! `--balance time` test an exclusive one, so that its timing figure is
//! not measured while other tests load the two cores.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;
#[path = "common/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use loopdev::{loop_devices_available, LoopDev};
use netns::{nbd_available, NbdSite, Server, Shape, SiteOptions};
use serde_json::Value;

static TIMING: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(|e| e.into_inner())
}

/// The end of one pbio run.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn summary(&self) -> Value {
        self.out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap_or(Value::Null)
    }

    fn show(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.out, self.err
        )
    }

    /// Never a panic, whatever happened.
    fn no_panic(&self) -> &Run {
        assert!(
            !self.err.contains("panicked") && !self.out.contains("panicked"),
            "pbio panicked: {}",
            self.show()
        );
        self
    }
}

fn pbio_command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pbio"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Wait for `child` until `deadline`; kill it and panic (a hang) after.
fn wait_bounded(child: &mut Child, deadline: Instant, what: &str) -> i32 {
    loop {
        if let Some(status) = child.try_wait().expect("wait for pbio") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pbio {what} did not end in time: a hang (killed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run pbio with `args`; a run longer than `limit` is killed and fails the test.
fn pbio(args: &[String], limit: Duration) -> Run {
    let mut child = pbio_command(args).spawn().expect("spawn pbio");
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let code = wait_bounded(&mut child, Instant::now() + limit, &format!("{args:?}"));
    Run {
        code,
        out: out.join().unwrap(),
        err: err.join().unwrap(),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn with_devs(mut args: Vec<String>, devs: &[String]) -> Vec<String> {
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    args
}

fn backup_args(src: &Path, devs: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["backup", "--json"]);
    args.extend(strings(extra));
    args.push(src.display().to_string());
    with_devs(args, devs)
}

fn restore(devs: &[String], to: &Path, limit: Duration) -> Run {
    let args = with_devs(
        strings(&["restore", "--to", &to.display().to_string()]),
        devs,
    );
    pbio(&args, limit)
}

fn verify(devs: &[String], limit: Duration) -> Run {
    pbio(&with_devs(strings(&["verify"]), devs), limit)
}

fn assert_identical(src: &Path, restored: &Path) {
    let diffs = common::compare_trees(src, restored);
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

/// `dir/src/tree` with the fixture: `small_files` small files, a big
/// file of `large_bytes` (split across devices), the odd entries.
fn tree(dir: &Path, small_files: usize, large_bytes: u64) -> PathBuf {
    let src = dir.join("src/tree");
    common::make_fixture_tree(&src, small_files, large_bytes);
    src
}

fn states(summary: &Value) -> Vec<String> {
    summary["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["state"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn dev_u64(summary: &Value, i: usize, field: &str) -> u64 {
    summary["devices"][i][field]
        .as_u64()
        .unwrap_or_else(|| panic!("device {i} has no {field}: {summary}"))
}

/// Loop device plus the two NBD sites: a LAN qemu-nbd and a WAN nbdkit.
struct Bed {
    dir: tempfile::TempDir,
    // Drop order: sites before the loop device, all before the directory.
    lan: NbdSite,
    wan: NbdSite,
    disk: LoopDev,
}

impl Bed {
    fn available(test: &str) -> bool {
        loop_devices_available(test)
            && nbd_available(test, Server::QemuNbd, true, false)
            && nbd_available(test, Server::NbdkitFile, true, false)
    }

    fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let disk = LoopDev::new(&dir.path().join("disk.img"), 128 << 20);
        let lan = NbdSite::tcp(Server::QemuNbd, 128 << 20, Some(Shape::LAN));
        let wan = NbdSite::tcp(Server::NbdkitFile, 128 << 20, Some(Shape::WAN));
        Bed {
            dir,
            lan,
            wan,
            disk,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The three `--dev` values: loop, LAN, WAN (with device options appended).
    fn devs(&self, opts: [&str; 3]) -> Vec<String> {
        vec![
            format!("{}{}", self.disk.arg(), opts[0]),
            format!("{}{}", self.lan.url(), opts[1]),
            format!("{}{}", self.wan.url(), opts[2]),
        ]
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn round_trip_over_a_loop_device_a_lan_and_a_wan_site() {
    let test = "round_trip_over_a_loop_device_a_lan_and_a_wan_site";
    if !Bed::available(test) {
        return;
    }
    let _shared = shared();
    let bed = Bed::new();
    // About 48 MiB: a 40 MiB file split across the three, 200 small files.
    let src = tree(bed.path(), 200, 40 << 20);
    let devs = bed.devs(["", "", ""]);
    let run = pbio(&backup_args(&src, &devs, &[]), MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "backup: {}", run.show());
    let summary = run.summary();
    assert_eq!(states(&summary), ["complete"; 3], "{summary}");
    assert_eq!(summary["missing_bytes"], 0);
    for i in 0..3 {
        assert!(
            dev_u64(&summary, i, "payload_bytes") > 0,
            "device {i}: {summary}"
        );
    }
    // The big file is split: it is larger than any device's share.
    for i in 0..3 {
        assert!(
            dev_u64(&summary, i, "payload_bytes") < 40 << 20,
            "device {i}: {summary}"
        );
    }

    let out = bed.path().join("restored");
    let run = restore(&devs, &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore: {}", run.show());
    assert_identical(&src, &out.join("tree"));

    let run = verify(&devs, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "verify: {}", run.show());

    // The WAN site alone carries the catalog.
    let run = pbio(&strings(&["list", "--dev", &bed.wan.url()]), MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "list of the WAN site: {}", run.show());
    assert!(
        run.out.contains("large.bin") && run.out.contains("small/"),
        "{}",
        run.show()
    );
}

/// `--parity 1` over a loop device and two NBD exports: the parity
/// records go to the exports through their transport like data records,
/// computed while the data is written (nothing read back), and a restore
/// without the LAN site rebuilds its records from the other two.
#[test]
fn parity_over_nbd_exports_is_written_inline_and_rebuilds_a_missing_site() {
    let test = "parity_over_nbd_exports_is_written_inline_and_rebuilds_a_missing_site";
    if !Bed::available(test) {
        return;
    }
    let _shared = shared();
    let bed = Bed::new();
    let src = tree(bed.path(), 100, 24 << 20);
    let devs = bed.devs(["", "", ""]);
    let run = pbio(&backup_args(&src, &devs, &["--parity", "1"]), MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "backup: {}", run.show());
    let summary = run.summary();
    assert_eq!(states(&summary), ["complete"; 3], "{summary}");
    let parity = &summary["parity"];
    assert!(parity["records"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(parity["read_back_bytes"], 0, "{summary}");
    assert_eq!(parity["inline_stripes"], parity["stripes"], "{summary}");

    let without_lan = [devs[0].clone(), devs[2].clone()];
    let out = bed.path().join("restored");
    let to = out.display().to_string();
    let args = with_devs(strings(&["restore", "--json", "--to", &to]), &without_lan);
    let run = pbio(&args, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore without the LAN site: {}", run.show());
    assert_identical(&src, &out.join("tree"));
    assert!(
        run.summary()["rebuild"]["bytes"].as_u64().unwrap() > 0,
        "nothing rebuilt: {}",
        run.show()
    );
}

#[test]
fn balance_time_gives_the_wan_site_proportionally_less() {
    let test = "balance_time_gives_the_wan_site_proportionally_less";
    if !Bed::available(test) {
        return;
    }
    let _exclusive = exclusive();
    let bed = Bed::new();
    let src = tree(bed.path(), 200, 40 << 20);
    // No rate=: pbio measures each device with a short write probe.
    let devs = bed.devs(["", "", ""]);
    let run = pbio(&backup_args(&src, &devs, &["--balance", "time"]), MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "backup --balance time: {}", run.show());
    let summary = run.summary();
    assert_eq!(states(&summary), ["complete"; 3], "{summary}");
    assert_eq!(summary["missing_bytes"], 0);
    let start = run
        .out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "start")
        .expect("a start event");
    let rates: Vec<u64> = (0..3)
        .map(|i| {
            start["devices"][i]["rate_bytes_per_sec"]
                .as_u64()
                .unwrap_or_else(|| panic!("device {i} has no measured rate: {start}"))
        })
        .collect();
    eprintln!(
        "measured write rates (bytes/s): loop {}, lan {}, wan {}",
        rates[0], rates[1], rates[2]
    );
    // 40 Mbit/s is 5 MB/s at most: the probe must see the WAN site as the slowest.
    assert!(rates[2] > 0 && rates[2] <= 5_000_000, "{rates:?}");
    assert!(rates[2] < rates[0] && rates[2] < rates[1], "{rates:?}");
    let payload: Vec<u64> = (0..3)
        .map(|i| dev_u64(&summary, i, "payload_bytes"))
        .collect();
    let seconds: Vec<f64> = (0..3)
        .map(|i| summary["devices"][i]["seconds"].as_f64().unwrap())
        .collect();
    let max = seconds.iter().cloned().fold(f64::MIN, f64::max);
    let min = seconds.iter().cloned().fold(f64::MAX, f64::min);
    eprintln!(
        "--balance time: payload loop {} lan {} wan {} bytes; finish loop {:.2} s lan {:.2} s wan {:.2} s; spread (max-min)/max = {:.1} %",
        payload[0],
        payload[1],
        payload[2],
        seconds[0],
        seconds[1],
        seconds[2],
        100.0 * (max - min) / max
    );
    // The slow site got proportionally less: less than the loop device, and
    // less than an equal share.
    let total: u64 = payload.iter().sum();
    assert!(payload[2] < payload[0], "{payload:?}");
    assert!(payload[2] < total / 3, "{payload:?}");

    let out = bed.path().join("restored");
    let run = restore(&devs, &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore: {}", run.show());
    assert_identical(&src, &out.join("tree"));
}

/// A backup running as a child, its `--json` events read as they come.
struct Live {
    child: Child,
    lines: mpsc::Receiver<String>,
    out: Vec<String>,
    err: Option<std::thread::JoinHandle<String>>,
    deadline: Instant,
}

impl Live {
    fn start(args: &[String], limit: Duration) -> Live {
        let mut child = pbio_command(args).spawn().expect("spawn pbio");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = Some(reader(child.stderr.take().unwrap()));
        Live {
            child,
            lines,
            out: Vec::new(),
            err,
            deadline: Instant::now() + limit,
        }
    }

    /// The first event for which `want` holds (bounded; panics if the run
    /// ends first).
    fn wait_for(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.out.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if want(&v) {
                            return v;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no awaited event in time:\n{}", self.out.join("\n"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "pbio ended before the awaited event:\n{}",
                    self.out.join("\n")
                ),
            }
        }
    }

    fn finish(mut self) -> Run {
        let code = wait_bounded(&mut self.child, self.deadline, "backup");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.out.push(line);
        }
        Run {
            code,
            out: self.out.join("\n"),
            err: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // A test that failed mid-run leaves no pbio behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start a backup over the bed and wait until the WAN device (2) has
/// written at least `at_least` bytes and has at least `left` to go;
/// returns the run and the bytes that progress event showed.
fn backup_until_wan_progress(
    bed: &Bed,
    src: &Path,
    devs: &[String],
    extra: &[&str],
    at_least: u64,
    left: u64,
) -> (Live, u64) {
    let mut args = vec!["--json-interval", "0.05"];
    args.extend_from_slice(extra);
    let mut live = Live::start(&backup_args(src, devs, &args), MINUTE);
    let event = live.wait_for(|v| {
        v["event"] == "progress"
            && v["device"] == 2
            && v["bytes"].as_u64().unwrap_or(0) >= at_least
            && v["total"].as_u64().unwrap_or(0) >= v["bytes"].as_u64().unwrap_or(0) + left
    });
    let _ = bed;
    (live, event["bytes"].as_u64().unwrap())
}

#[test]
fn a_killed_nbd_server_fails_its_device_and_the_rest_complete_the_set() {
    let test = "a_killed_nbd_server_fails_its_device_and_the_rest_complete_the_set";
    if !Bed::available(test) {
        return;
    }
    let _shared = shared();
    let mut bed = Bed::new();
    // About 44 MiB of payload (and the 8 MiB sparse file, mostly holes): the
    // WAN site's share takes a few seconds.
    let src = tree(bed.path(), 100, 40 << 20);
    let devs = bed.devs(["", "", ""]);
    let (live, seen) = backup_until_wan_progress(&bed, &src, &devs, &[], 1, 4 << 20);
    bed.wan.kill_server().expect("the WAN server was running");
    let run = live.finish();
    run.no_panic();
    assert_eq!(
        run.code,
        1,
        "a failed device makes the set degraded: {}",
        run.show()
    );
    let summary = run.summary();
    assert_eq!(
        states(&summary),
        ["complete", "complete", "failed"],
        "killed after {seen} bytes: {summary}"
    );
    let wan = &summary["devices"][2];
    let error = wan["error"].as_str().unwrap_or("");
    assert!(
        error.contains("connection lost") && error.contains("reconnect failed"),
        "{wan}"
    );
    assert!(dev_u64(&summary, 2, "redirected_bytes") > 0, "{wan}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    assert!(
        run.err.contains(&bed.wan.url()) && run.err.contains("connection lost"),
        "stderr names the device and why: {}",
        run.err
    );

    // The survivors alone hold the whole set.
    let survivors = devs[..2].to_vec();
    let run = verify(&survivors, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "verify survivors: {}", run.show());
    let out = bed.path().join("restored");
    let run = restore(&survivors, &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore from the survivors: {}", run.show());
    assert_identical(&src, &out.join("tree"));
}

/// Kill the server and start it again at once: the device reconnects (the
/// first attempt is 200 ms after the loss, the last 1.7 s after it; a
/// restarted nbdkit accepts well within that) and resends what had no reply.
///
/// Not racy by construction: the kill happens while the WAN device still
/// has at least 4 MiB to write (about a second at 40 Mbit/s), so the loss
/// is seen mid-run, and the restarted server comes back within the
/// reconnect window (restart_server waits until it accepts). That the
/// device really wrote through the new connection is checked from its
/// bytes (at the end it has written well past what it had at the kill)
/// and from the summary's count of reconnects.
#[test]
fn an_nbd_server_restarted_at_once_is_reconnected_and_the_device_completes() {
    let test = "an_nbd_server_restarted_at_once_is_reconnected_and_the_device_completes";
    if !Bed::available(test) {
        return;
    }
    let _shared = shared();
    let mut bed = Bed::new();
    let src = tree(bed.path(), 100, 40 << 20);
    let devs = bed.devs(["", "", ""]);
    let (live, seen) = backup_until_wan_progress(&bed, &src, &devs, &[], 1, 4 << 20);
    let t = Instant::now();
    bed.wan.restart_server();
    let restarted_in = t.elapsed();
    let run = live.finish();
    run.no_panic();
    assert!(
        restarted_in < Duration::from_millis(1500),
        "the server took {restarted_in:?} to restart: outside the reconnect window"
    );
    assert_eq!(run.code, 0, "reconnected: {}", run.show());
    let summary = run.summary();
    assert_eq!(states(&summary), ["complete"; 3], "{summary}");
    let wan_bytes = dev_u64(&summary, 2, "payload_bytes");
    assert!(
        wan_bytes >= seen + (2 << 20),
        "the WAN device wrote {wan_bytes} bytes, {seen} before the kill: most after reconnecting"
    );
    assert_eq!(dev_u64(&summary, 2, "redirected_bytes"), 0, "{summary}");
    // The summary counts the repaired connection loss.
    assert!(dev_u64(&summary, 2, "reconnects") >= 1, "{summary}");
    assert_eq!(dev_u64(&summary, 0, "reconnects"), 0, "{summary}");
    eprintln!(
        "server restarted in {restarted_in:?}; WAN device at {seen} bytes then, {wan_bytes} at the end"
    );

    let out = bed.path().join("restored");
    let run = restore(&devs, &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore: {}", run.show());
    assert_identical(&src, &out.join("tree"));
}

/// A source file that shrinks while the backup reads it does not abort
/// the set: the records past its new end hold zeros (as GNU tar pads a
/// file that shrank), the file is named as changed, the exit code is 1,
/// and the restored file has its walked size: every byte either the
/// original or zero. The WAN site makes the reading slow enough to
/// truncate the file in the middle of it (`--qd 2`: two records read
/// ahead of the link).
#[test]
fn a_file_that_shrinks_while_read_is_padded_and_named_as_changed() {
    let test = "a_file_that_shrinks_while_read_is_padded_and_named_as_changed";
    if !Bed::available(test) {
        return;
    }
    let _shared = shared();
    let bed = Bed::new();
    let src = tree(bed.path(), 100, 40 << 20);
    let large = src.join("large.bin");
    let original = std::fs::read(&large).unwrap();
    let devs = bed.devs(["", "", ""]);
    let (live, _) = backup_until_wan_progress(&bed, &src, &devs, &["--qd", "2"], 1, 4 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&large)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let run = live.finish();
    run.no_panic();
    assert_eq!(
        run.code,
        1,
        "a changed file makes the exit code 1: {}",
        run.show()
    );
    let summary = run.summary();
    assert_eq!(states(&summary), ["complete"; 3], "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    let changed = summary["changed"].to_string();
    assert!(changed.contains("large.bin"), "{summary}");
    let zeros: u64 = (0..3)
        .map(|i| dev_u64(&summary, i, "zero_filled_bytes"))
        .sum();
    assert!(zeros > 0, "no record was padded: {summary}");

    let out = bed.path().join("restored");
    let run = restore(&devs, &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore: {}", run.show());
    let restored = std::fs::read(out.join("tree/large.bin")).unwrap();
    assert_eq!(restored.len(), original.len(), "the walked size");
    let zeroed = restored
        .iter()
        .zip(&original)
        .filter(|(r, o)| r != o)
        .inspect(|(r, _)| assert_eq!(**r, 0, "a restored byte is neither original nor zero"))
        .count() as u64;
    assert!(zeroed > 0, "nothing was padded in the restored file");
    assert_eq!(
        &restored[..1 << 20],
        &original[..1 << 20],
        "the kept first MiB"
    );
    eprintln!(
        "shrunk to 1 MiB mid-run: {zeros} payload bytes padded with zeros, {zeroed} restored bytes differ (all zeros)"
    );
}

/// A real NBD server over TCP, correct (fixed newstyle, structured replies
/// if asked to offer them, an in-memory export) until its fault fires.
mod hostile {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Duration;

    pub const SIZE: u64 = 64 << 20;
    pub const EXPORT: &str = "hostile";

    const ACK: u32 = 1;
    const REP_INFO: u32 = 3;
    const ERR_UNSUP: u32 = (1 << 31) | 1;
    const ERR_UNKNOWN: u32 = (1 << 31) | 6;
    const SIMPLE: u32 = 0x6744_6698;
    const STRUCTURED: u32 = 0x668e_33ef;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// Never misbehaves.
        None,
        /// "NBDMAGIX" instead of "NBDMAGIC".
        BadGreeting,
        /// NBD_REP_ERR_UNKNOWN to NBD_OPT_GO.
        UnknownExport,
        /// A reply whose magic is 0xdeadbeef.
        BadMagic,
        /// A reply for a handle that was never sent.
        UnknownHandle,
        /// A read's OFFSET_DATA chunk 4 KiB longer than the request.
        LongChunk,
        /// A correct simple read reply, then 64 bytes of junk.
        JunkAfterRead,
        /// No more replies; new connections refused.
        Silent,
    }

    /// When the fault fires (and from then on, for every matching request).
    #[derive(Clone, Copy, Debug)]
    pub enum When {
        /// A write once this many bytes were written (the data phase).
        WriteAfter(u64),
        /// A read of at least this many bytes once armed (`arm`), ending
        /// below the armed bound.
        ArmedRead(u32),
    }

    struct Shared {
        fault: Fault,
        when: When,
        structured: bool,
        disk: Mutex<Vec<u8>>,
        written: AtomicU64,
        armed: AtomicBool,
        below: AtomicU64,
        fired: AtomicBool,
        stop: AtomicBool,
        conns: Mutex<Vec<TcpStream>>,
    }

    pub struct Hostile {
        addr: SocketAddr,
        shared: Arc<Shared>,
        accept: Option<JoinHandle<()>>,
    }

    impl Hostile {
        pub fn start(fault: Fault, when: When, structured: bool) -> Hostile {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Shared {
                fault,
                when,
                structured,
                disk: Mutex::new(vec![0u8; SIZE as usize]),
                written: AtomicU64::new(0),
                armed: AtomicBool::new(false),
                below: AtomicU64::new(u64::MAX),
                fired: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                conns: Mutex::new(Vec::new()),
            });
            let s = shared.clone();
            let accept = std::thread::spawn(move || loop {
                if s.stop.load(Ordering::SeqCst)
                    || (s.fault == Fault::Silent && s.fired.load(Ordering::SeqCst))
                {
                    // Dropping the listener: reconnects are refused.
                    return;
                }
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        s.conns.lock().unwrap().push(conn.try_clone().unwrap());
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&s, conn);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            });
            Hostile {
                addr,
                shared,
                accept: Some(accept),
            }
        }

        pub fn url(&self) -> String {
            format!("nbd://{}/{EXPORT}", self.addr)
        }

        /// Let `When::ArmedRead` faults fire from now on, on reads that end
        /// at or below `below`.
        pub fn arm(&self, below: u64) {
            self.shared.below.store(below, Ordering::SeqCst);
            self.shared.armed.store(true, Ordering::SeqCst);
        }

        /// Whether the fault fired.
        pub fn fired(&self) -> bool {
            self.shared.fired.load(Ordering::SeqCst)
        }
    }

    impl Drop for Hostile {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::SeqCst);
            for c in self.shared.conns.lock().unwrap().iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }

    fn be16(b: &[u8]) -> u16 {
        u16::from_be_bytes(b[..2].try_into().unwrap())
    }
    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes(b[..4].try_into().unwrap())
    }
    fn be64(b: &[u8]) -> u64 {
        u64::from_be_bytes(b[..8].try_into().unwrap())
    }

    fn option_reply(c: &mut TcpStream, option: u32, reply: u32, data: &[u8]) -> io::Result<()> {
        let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
        m.extend(option.to_be_bytes());
        m.extend(reply.to_be_bytes());
        m.extend((data.len() as u32).to_be_bytes());
        m.extend(data);
        c.write_all(&m)
    }

    fn simple(
        c: &mut TcpStream,
        magic: u32,
        error: u32,
        handle: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let mut m = magic.to_be_bytes().to_vec();
        m.extend(error.to_be_bytes());
        m.extend(handle.to_be_bytes());
        m.extend(data);
        c.write_all(&m)
    }

    fn chunk(c: &mut TcpStream, kind: u16, handle: u64, payload: &[&[u8]]) -> io::Result<()> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let mut m = STRUCTURED.to_be_bytes().to_vec();
        m.extend(1u16.to_be_bytes()); // NBD_REPLY_FLAG_DONE
        m.extend(kind.to_be_bytes());
        m.extend(handle.to_be_bytes());
        m.extend((len as u32).to_be_bytes());
        for p in payload {
            m.extend(*p);
        }
        c.write_all(&m)
    }

    /// A successful reply to a write or flush.
    fn done(c: &mut TcpStream, structured: bool, handle: u64) -> io::Result<()> {
        if structured {
            chunk(c, 0, handle, &[])
        } else {
            simple(c, SIMPLE, 0, handle, &[])
        }
    }

    fn read_reply(
        c: &mut TcpStream,
        structured: bool,
        handle: u64,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        if structured {
            chunk(c, 1, handle, &[&offset.to_be_bytes(), data])
        } else {
            simple(c, SIMPLE, 0, handle, data)
        }
    }

    fn serve(s: &Shared, mut c: TcpStream) -> io::Result<()> {
        c.set_nodelay(true)?;
        let magic: &[u8] = if s.fault == Fault::BadGreeting {
            b"NBDMAGIX"
        } else {
            b"NBDMAGIC"
        };
        let mut greeting = magic.to_vec();
        greeting.extend(b"IHAVEOPT");
        greeting.extend(3u16.to_be_bytes()); // fixed newstyle, no zeroes
        c.write_all(&greeting)?;
        let mut client_flags = [0u8; 4];
        c.read_exact(&mut client_flags)?;
        let mut structured = false;
        loop {
            let mut head = [0u8; 16];
            c.read_exact(&mut head)?;
            if &head[..8] != b"IHAVEOPT" {
                return Ok(());
            }
            let option = be32(&head[8..]);
            let mut data = vec![0u8; be32(&head[12..]) as usize];
            c.read_exact(&mut data)?;
            match option {
                8 if s.structured => {
                    structured = true;
                    option_reply(&mut c, option, ACK, &[])?
                }
                7 => {
                    let n = data.get(..4).map_or(usize::MAX, |b| be32(b) as usize);
                    let name = data.get(4..4usize.saturating_add(n));
                    if s.fault == Fault::UnknownExport || name != Some(EXPORT.as_bytes()) {
                        option_reply(&mut c, option, ERR_UNKNOWN, b"no export by that name here")?;
                        continue;
                    }
                    let mut info = 0u16.to_be_bytes().to_vec(); // NBD_INFO_EXPORT
                    info.extend(SIZE.to_be_bytes());
                    info.extend((1u16 | 4).to_be_bytes()); // HAS_FLAGS | SEND_FLUSH
                    option_reply(&mut c, option, REP_INFO, &info)?;
                    option_reply(&mut c, option, ACK, &[])?;
                    break;
                }
                2 => {
                    option_reply(&mut c, option, ACK, &[])?;
                    return Ok(());
                }
                _ => option_reply(&mut c, option, ERR_UNSUP, b"not here")?,
            }
        }
        loop {
            let mut r = [0u8; 28];
            c.read_exact(&mut r)?;
            if be32(&r) != 0x2560_9513 {
                return Ok(());
            }
            let (command, handle, offset, len) =
                (be16(&r[6..]), be64(&r[8..]), be64(&r[16..]), be32(&r[24..]));
            let in_range = offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= SIZE);
            match command {
                1 => {
                    let mut buf = vec![0u8; len as usize];
                    c.read_exact(&mut buf)?;
                    if let When::WriteAfter(after) = s.when {
                        if s.fault != Fault::None && s.written.load(Ordering::SeqCst) >= after {
                            s.fired.store(true, Ordering::SeqCst);
                            misbehave(s, &mut c, structured, handle, offset, len)?;
                            continue;
                        }
                    }
                    if !in_range {
                        simple(&mut c, SIMPLE, 22, handle, &[])?;
                        continue;
                    }
                    let o = offset as usize;
                    s.disk.lock().unwrap()[o..o + len as usize].copy_from_slice(&buf);
                    s.written.fetch_add(len as u64, Ordering::SeqCst);
                    done(&mut c, structured, handle)?;
                }
                0 => {
                    if let When::ArmedRead(min) = s.when {
                        if s.fault != Fault::None
                            && s.armed.load(Ordering::SeqCst)
                            && len >= min
                            && offset + len as u64 <= s.below.load(Ordering::SeqCst)
                        {
                            s.fired.store(true, Ordering::SeqCst);
                            misbehave(s, &mut c, structured, handle, offset, len)?;
                            continue;
                        }
                    }
                    if !in_range {
                        simple(&mut c, SIMPLE, 22, handle, &[])?;
                        continue;
                    }
                    let o = offset as usize;
                    let data = s.disk.lock().unwrap()[o..o + len as usize].to_vec();
                    read_reply(&mut c, structured, handle, offset, &data)?;
                }
                3 => done(&mut c, structured, handle)?,
                2 => return Ok(()),
                _ => simple(&mut c, SIMPLE, 22, handle, &[])?,
            }
        }
    }

    fn misbehave(
        s: &Shared,
        c: &mut TcpStream,
        structured: bool,
        handle: u64,
        offset: u64,
        len: u32,
    ) -> io::Result<()> {
        match s.fault {
            Fault::None | Fault::BadGreeting | Fault::UnknownExport => unreachable!(),
            Fault::BadMagic => simple(c, 0xdead_beef, 0, handle, &[]),
            Fault::UnknownHandle => done(c, structured, handle ^ 0x5a5a_0000_0000_0000),
            Fault::LongChunk => {
                assert!(structured, "LongChunk needs structured replies");
                let o = offset as usize;
                let end = (o + len as usize + 4096).min(SIZE as usize);
                let data = s.disk.lock().unwrap()[o..end].to_vec();
                chunk(c, 1, handle, &[&offset.to_be_bytes(), &data])
            }
            Fault::JunkAfterRead => {
                let o = offset as usize;
                let data = s.disk.lock().unwrap()[o..o + len as usize].to_vec();
                read_reply(c, structured, handle, offset, &data)?;
                c.write_all(&[0xa5; 64])
            }
            Fault::Silent => {
                while !s.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(io::Error::other("stopped"))
            }
        }
    }
}

use hostile::{Fault, Hostile, When};

/// A backup to a loop device and a hostile server whose fault fires in the
/// data phase: the hostile device fails (its work goes to the loop
/// device), exit 1, the error says `why`; the loop device alone restores
/// the tree.
fn hostile_in_backup(test: &str, fault: Fault, structured: bool, device_opts: &str, why: &[&str]) {
    if !loop_devices_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 50, 12 << 20);
    let disk = LoopDev::new(&dir.path().join("disk.img"), 64 << 20);
    let server = Hostile::start(fault, When::WriteAfter(2 << 20), structured);
    let url = server.url();
    let devs = vec![disk.arg(), format!("{url}{device_opts}")];
    let t = Instant::now();
    let run = pbio(&backup_args(&src, &devs, &[]), Duration::from_secs(40));
    run.no_panic();
    assert!(server.fired(), "the fault never fired: {}", run.show());
    assert_eq!(run.code, 1, "degraded: {}", run.show());
    let summary = run.summary();
    assert_eq!(states(&summary), ["complete", "failed"], "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    assert!(dev_u64(&summary, 1, "redirected_bytes") > 0, "{summary}");
    let error = summary["devices"][1]["error"].as_str().unwrap_or("");
    for w in why {
        assert!(error.contains(w), "device error lacks '{w}': {error}");
    }
    assert!(
        run.err.contains(&url) && why.iter().all(|w| run.err.contains(w)),
        "stderr names the device and what was wrong: {}",
        run.err
    );
    eprintln!("{test}: {:?}: {error}", t.elapsed());
    let out = dir.path().join("restored");
    let run = restore(&devs[..1], &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore from the loop device: {}", run.show());
    assert_identical(&src, &out.join("tree"));
}

#[test]
fn hostile_reply_with_a_bad_magic_fails_the_device() {
    hostile_in_backup(
        "hostile_reply_with_a_bad_magic_fails_the_device",
        Fault::BadMagic,
        false,
        "",
        &["bad reply magic", "0xdeadbeef"],
    );
}

#[test]
fn hostile_reply_for_a_handle_never_sent_fails_the_device() {
    hostile_in_backup(
        "hostile_reply_for_a_handle_never_sent_fails_the_device",
        Fault::UnknownHandle,
        true,
        "",
        &["handle", "not awaiting"],
    );
}

#[test]
fn a_server_that_stops_answering_times_out() {
    hostile_in_backup(
        "a_server_that_stops_answering_times_out",
        Fault::Silent,
        true,
        ",timeout=2",
        &["timeout", "connection lost"],
    );
}

/// A backup to the hostile server alone while it behaves, a correct
/// restore from it, then restores while its reads misbehave: first on the
/// catalog (read whole, the synchronous requests), then only in the data
/// area (below `data_end`: the restore's pipelined window reads). Each: a
/// clear error naming the device and what was wrong, no panic, no hang.
/// Returns the exit codes of the two.
fn hostile_in_restore(fault: Fault, structured: bool, why: &[&str]) -> [i32; 2] {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 50, 12 << 20);
    let server = Hostile::start(fault, When::ArmedRead(64 << 10), structured);
    let devs = vec![server.url()];
    let run = pbio(&backup_args(&src, &devs, &[]), MINUTE);
    run.no_panic();
    assert_eq!(
        run.code,
        0,
        "backup to the server while it behaves: {}",
        run.show()
    );
    let data_end = dev_u64(&run.summary(), 0, "data_end");
    let out = dir.path().join("restored");
    let run = restore(&devs, &out, MINUTE);
    run.no_panic();
    assert_eq!(run.code, 0, "restore while it behaves: {}", run.show());
    assert_identical(&src, &out.join("tree"));

    let mut codes = [0; 2];
    for (k, (below, what)) in [(u64::MAX, "catalog"), (data_end, "data")]
        .into_iter()
        .enumerate()
    {
        server.arm(below);
        let out = dir.path().join(format!("restored-{what}"));
        let run = restore(&devs, &out, Duration::from_secs(30));
        run.no_panic();
        assert!(server.fired(), "the fault never fired: {}", run.show());
        assert_ne!(run.code, 0, "{}", run.show());
        assert!(
            run.err.contains(&server.url()) && why.iter().all(|w| run.err.contains(w)),
            "{what}: stderr names the device and what was wrong ({why:?}): {}",
            run.show()
        );
        if what == "data" {
            // The files it leaves short are named with the device as the
            // reason, not as content that does not match.
            assert!(
                run.err.contains("not restored completely")
                    && !run.err.contains("content digest mismatch"),
                "{}",
                run.show()
            );
        }
        eprintln!(
            "{fault:?} in the {what} reads of a restore: exit {}: {}",
            run.code,
            run.err.trim()
        );
        codes[k] = run.code;
    }
    codes
}

#[test]
fn hostile_read_chunk_outside_the_request_is_a_clear_error() {
    let codes = hostile_in_restore(Fault::LongChunk, true, &["outside the request"]);
    // Catalog or data unreadable: the set cannot be restored (3).
    assert_eq!(codes, [3, 3]);
}

#[test]
fn hostile_junk_after_a_read_reply_is_a_clear_error() {
    let codes = hostile_in_restore(
        Fault::JunkAfterRead,
        false,
        &["bad reply magic", "0xa5a5a5a5"],
    );
    assert_eq!(codes, [3, 3]);
}

/// A server that is wrong from the handshake on: pbio refuses to start
/// (exit 2), naming the device and why, even with a good device beside it.
fn hostile_at_connect(test: &str, fault: Fault, why: &[&str]) {
    if !loop_devices_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 10, 1 << 20);
    let disk = LoopDev::new(&dir.path().join("disk.img"), 64 << 20);
    let server = Hostile::start(fault, When::WriteAfter(0), true);
    let devs = vec![disk.arg(), server.url()];
    let run = pbio(&backup_args(&src, &devs, &[]), Duration::from_secs(30));
    run.no_panic();
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(
        run.err.contains(&server.url()) && why.iter().all(|w| run.err.contains(w)),
        "stderr names the device and why ({why:?}): {}",
        run.show()
    );
}

#[test]
fn a_wrong_greeting_magic_is_refused_at_connect() {
    hostile_at_connect(
        "a_wrong_greeting_magic_is_refused_at_connect",
        Fault::BadGreeting,
        &["bad greeting magic"],
    );
}

#[test]
fn an_unknown_export_is_refused_at_connect() {
    hostile_at_connect(
        "an_unknown_export_is_refused_at_connect",
        Fault::UnknownExport,
        &["no such export", "hostile"],
    );
}

#[test]
fn bad_nbd_device_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 5, 1 << 20);
    let limit = Duration::from_secs(30);
    let cases: [(&str, &[&str]); 4] = [
        (
            "nbd://host:notaport/x",
            &["port 'notaport' is not a number"],
        ),
        (
            "nbd://127.0.0.1:1/x",
            &["nbd://127.0.0.1:1/x", "connect", "refused"],
        ),
        (
            "nbd://127.0.0.1:10809/x,timeout=0",
            &["timeout= is a number of seconds"],
        ),
        (
            "/dev/null,timeout=5",
            &["timeout= is an option of nbd:// devices only"],
        ),
    ];
    for (dev, why) in cases {
        let run = pbio(&backup_args(&src, &[dev.to_string()], &[]), limit);
        run.no_panic();
        assert_eq!(run.code, 2, "--dev {dev}: {}", run.show());
        for w in why {
            assert!(
                run.err.contains(w),
                "--dev {dev}: stderr lacks '{w}': {}",
                run.show()
            );
        }
    }
}

/// `pbio bench` drives an export through the same pipe as a backup:
/// every byte of --size moved, latency percentiles reported; writing
/// needs --force, as on a block device.
#[test]
fn pbio_bench_drives_an_nbd_export() {
    let test = "pbio_bench_drives_an_nbd_export";
    if !nbd_available(test, Server::QemuNbd, false, false) {
        return;
    }
    let site = NbdSite::unix(Server::QemuNbd, 64 << 20);
    let url = site.url();
    let limit = Duration::from_secs(60);
    let run = pbio(
        &strings(&["bench", "--dev", &url, "--rw", "write", "--size", "16M"]),
        limit,
    );
    run.no_panic();
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(run.err.contains("--force"), "{}", run.show());
    for rw in ["write", "read"] {
        let run = pbio(
            &strings(&[
                "bench", "--dev", &url, "--rw", rw, "--size", "16M", "--bs", "256K", "--qd", "8",
                "--force", "--json",
            ]),
            limit,
        );
        run.no_panic();
        assert_eq!(run.code, 0, "bench --rw {rw}: {}", run.show());
        let summary: Value = run
            .out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary: {}", run.show()));
        assert_eq!(summary["bytes"], 16 << 20, "{summary}");
        assert_eq!(summary["devices"][0]["ios"], 64, "{summary}");
        assert!(
            summary["lat_us"]["p50"].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
}

/// One export under two spellings of its URL is one device given twice.
#[test]
fn the_same_export_under_two_urls_is_refused() {
    let test = "the_same_export_under_two_urls_is_refused";
    if !nbd_available(test, Server::QemuNbd, false, false) {
        return;
    }
    let site = NbdSite::unix(Server::QemuNbd, 64 << 20);
    let url = site.url();
    let socket = site.socket_path().unwrap();
    let other = format!(
        "nbd+unix:///{}?socket={}/./{}",
        site.export(),
        socket.parent().unwrap().display(),
        socket.file_name().unwrap().to_string_lossy()
    );
    assert_ne!(url, other);
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 5, 1 << 20);
    let run = pbio(
        &backup_args(&src, &[url.clone(), other], &[]),
        Duration::from_secs(30),
    );
    run.no_panic();
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(run.err.contains("given twice"), "{}", run.show());
}

#[test]
fn a_read_only_export_is_refused_for_backup() {
    let test = "a_read_only_export_is_refused_for_backup";
    if !nbd_available(test, Server::QemuNbd, false, false) {
        return;
    }
    let site = NbdSite::start(SiteOptions {
        server: Server::QemuNbd,
        unix: true,
        read_only: true,
        ..SiteOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 5, 1 << 20);
    let run = pbio(
        &backup_args(&src, &[site.url()], &[]),
        Duration::from_secs(30),
    );
    run.no_panic();
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(
        run.err.contains(&site.url()) && run.err.contains("read-only"),
        "{}",
        run.show()
    );
}

/// Every check of `pbio qualify` on an NBD export, in order.
const QUALIFY_CHECKS: [&str; 8] = [
    "identity",
    "write_throughput",
    "read_throughput",
    "write_latency_p99",
    "read_latency_p99",
    "flush_latency_p99",
    "pattern_verify",
    "durability",
];

fn qualify_check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

fn qualify_json(args: &[&str]) -> (Run, Value) {
    let run = pbio(&strings(args), Duration::from_secs(120));
    run.no_panic();
    let line = run.out.lines().last().unwrap_or("");
    let report = serde_json::from_str(line).unwrap_or(Value::Null);
    (run, report)
}

#[test]
fn qualify_an_nbd_export_compare_and_recheck() {
    let test = "qualify_an_nbd_export_compare_and_recheck";
    if !nbd_available(test, Server::QemuNbd, false, false) {
        return;
    }
    let mut site = NbdSite::unix(Server::QemuNbd, 64 << 20);
    let url = site.url();
    let dir = tempfile::tempdir().unwrap();

    // It writes across the export: not without --force.
    let (run, _) = qualify_json(&["qualify", "--dev", &url, "--quick"]);
    assert_eq!(run.code, 2, "{}", run.show());
    assert!(run.err.contains("--force"), "{}", run.show());

    let (run, r1) = qualify_json(&["qualify", "--dev", &url, "--quick", "--force", "--json"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(r1["schema"], 1);
    assert_eq!(r1["verdict"], "PASS", "{r1:#}");
    let names: Vec<&str> = r1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, QUALIFY_CHECKS);
    for c in r1["checks"].as_array().unwrap() {
        assert_eq!(c["verdict"], "PASS", "{c}");
    }
    let device = &r1["device"];
    assert_eq!(device["kind"], "nbd");
    assert_eq!(device["capacity_bytes"], 64u64 << 20);
    assert_eq!(device["kernel_dio_align"], Value::Null, "no statx on a URL");
    let nbd = &device["nbd"];
    assert_eq!(nbd["url"], url.as_str());
    assert_eq!(nbd["transport"], "unix");
    assert_eq!(nbd["export"], site.export());
    assert_eq!(nbd["size_bytes"], 64u64 << 20);
    assert_eq!(nbd["read_only"], false);
    assert_eq!(nbd["send_flush"], true, "qemu-nbd advertises flush");
    assert!(nbd["structured_replies"].is_boolean(), "{nbd}");
    assert!(nbd["rtt_us"].is_u64(), "{nbd}");
    assert!(nbd["request_bytes_max"].as_u64().unwrap() >= 4096, "{nbd}");
    let identity = qualify_check(&r1, "identity")["detail"].as_str().unwrap();
    assert!(
        identity.contains("flush yes") && identity.contains("RTT at connect"),
        "{identity}"
    );
    // The matrix ran through the NBD pipe, every cell.
    let matrix = r1["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 8);
    for cell in matrix {
        assert_eq!(cell["error"], Value::Null, "{cell}");
        assert_eq!(cell["bytes"], cell["size_bytes"], "{cell}");
        assert!(cell["mib_per_sec"].as_f64().unwrap() > 0.0, "{cell}");
        assert!(cell["lat_us"]["p99"].as_f64().unwrap() > 0.0, "{cell}");
    }
    let flush = qualify_check(&r1, "flush_latency_p99");
    assert!(flush["value"].as_f64().unwrap() > 0.0, "{flush}");
    assert_eq!(flush["better"], "lower");
    let durability = qualify_check(&r1, "durability")["detail"].as_str().unwrap();
    assert!(durability.contains("new connection"), "{durability}");
    assert_eq!(r1["pattern"]["bytes"], 4u64 << 20);
    let r1_path = dir.path().join("r1.json");
    std::fs::write(&r1_path, r1.to_string()).unwrap();
    let r1_path = r1_path.display().to_string();

    // The pattern is still there...
    let (run, rc) = qualify_json(&["qualify", "--dev", &url, "--recheck", &r1_path, "--json"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(
        qualify_check(&rc, "pattern_recheck")["verdict"],
        "PASS",
        "{rc}"
    );
    // ...until one block of the export's backing file changes: FAIL, by offset.
    let bad = r1["pattern"]["extents"][1][0].as_u64().unwrap() + 4096;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(site.backing().unwrap())
            .unwrap();
        f.write_all_at(&[0xEE; 512], bad).unwrap();
        f.sync_all().unwrap();
    }
    let (run, rc) = qualify_json(&["qualify", "--dev", &url, "--recheck", &r1_path, "--json"]);
    assert_eq!(run.code, 3, "{}", run.show());
    assert_eq!(rc["verdict"], "FAIL");
    let c = qualify_check(&rc, "pattern_recheck");
    assert_eq!(c["verdict"], "FAIL", "{c}");
    assert_eq!(c["data"]["first_bad_offset"], bad);
    assert_eq!(c["data"]["bad_units"], 1);
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("mismatch at offset {bad}")),
        "{detail}"
    );

    // Compared with itself under wide limits (a shared test machine): PASS,
    // a delta for every check and every cell.
    let (run, r2) = qualify_json(&[
        "qualify",
        "--dev",
        &url,
        "--quick",
        "--force",
        "--json",
        "--compare",
        &r1_path,
        "--max-throughput-drop",
        "99",
        "--max-latency-rise",
        "100000",
    ]);
    assert_eq!(run.code, 0, "{}\n{r2:#}", run.show());
    let c = qualify_check(&r2, "compare");
    assert_eq!(c["verdict"], "PASS", "{c}");
    assert_eq!(c["value"], 0);
    let deltas: Vec<&str> = r2["compare"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, QUALIFY_CHECKS);
    // Two deltas a cell: throughput and p99.
    assert_eq!(r2["compare"]["matrix"].as_array().unwrap().len(), 16);
    assert_eq!(r2["verdict"], "PASS");

    // A full run: the larger matrix (4K, 64K, 1M at depths 1, 8, 32).
    let (run, r3) = qualify_json(&["qualify", "--dev", &url, "--force", "--json"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(r3["verdict"], "PASS", "{r3:#}");
    let matrix = r3["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 18);
    assert!(matrix.iter().all(|c| c["error"].is_null()), "{r3:#}");
    let r3_path = dir.path().join("r3.json");
    std::fs::write(&r3_path, r3.to_string()).unwrap();
    let r3_path = r3_path.display().to_string();
    // What was flushed survives a restart of the server.
    site.restart_server();
    let (run, rc) = qualify_json(&["qualify", "--dev", &url, "--recheck", &r3_path, "--json"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(
        qualify_check(&rc, "pattern_recheck")["verdict"],
        "PASS",
        "{rc}"
    );
}

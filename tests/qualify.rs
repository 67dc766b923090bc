//! `pbio qualify` on a file device and on real loop devices (512-byte and
//! 4096-byte sectors, direct I/O): every check present with sane values,
//! alignment found by trying equal to what the kernel says, `--compare`
//! between runs and against a report edited to claim 10x the throughput,
//! `--recheck` catching a tampered and a misplaced block by offset, and
//! the refusals that protect data.

#[path = "common/loopdev.rs"]
mod loopdev;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use loopdev::pbio;
use serde_json::Value;

const SIZE_BYTES: u64 = 64 << 20;
/// pbio's default record: a 4 KiB header and a 1 MiB payload.
const RECORD_BYTES: u64 = (1 << 20) + 4096;

/// Every check of a run, in order.
const CHECKS: [&str; 12] = [
    "identity",
    "alignment_offset",
    "alignment_memory",
    "max_io",
    "write_throughput",
    "read_throughput",
    "write_latency_p99",
    "read_latency_p99",
    "fsync_latency_p99",
    "dsync_write_latency_p99",
    "write_cache",
    "pattern_verify",
];

fn parse(stdout: &str) -> Value {
    let line = stdout.lines().last().expect("qualify printed a line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

fn check_latency(lat: &Value, what: &str) {
    let get = |k: &str| num(&lat[k], &format!("{what} lat_us.{k}"));
    let (min, p50, p99, p999, max) = (get("min"), get("p50"), get("p99"), get("p999"), get("max"));
    assert!(min > 0.0, "{what}: {lat}");
    assert!(
        min <= p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{what}: percentiles out of order: {lat}"
    );
    assert!(lat["count"].as_u64().unwrap() > 0, "{what}: {lat}");
}

/// Everything a `--quick` report must hold, whatever the device.
fn check_report(r: &Value, kind: &str) {
    assert_eq!(r["schema"], 1, "{r}");
    assert_eq!(r["verdict"], "PASS", "{r:#}");
    assert_eq!(r["options"]["quick"], true);
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS, "every check, in order");
    let dev = &r["device"];
    assert_eq!(dev["kind"], kind);
    assert_eq!(dev["capacity_bytes"], SIZE_BYTES);
    assert_eq!(check(r, "identity")["value"], SIZE_BYTES);
    // Block devices are always O_DIRECT; a file is where its filesystem allows.
    let direct = dev["direct_io"] == true;
    assert!(direct || kind == "file", "{dev}");
    const DIRECT_ONLY: [&str; 3] = ["alignment_offset", "alignment_memory", "max_io"];
    for c in r["checks"].as_array().unwrap() {
        let verdict = c["verdict"].as_str().unwrap();
        let name = c["name"].as_str().unwrap();
        let allowed: &[&str] = if name == "write_cache" && kind == "file" {
            // A file on a filesystem without a disk (tmpfs, overlay) has none.
            &["PASS", "SKIP"]
        } else if DIRECT_ONLY.contains(&name) && !direct {
            &["SKIP"]
        } else {
            &["PASS"]
        };
        assert!(allowed.contains(&verdict), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
    }
    if direct {
        for name in ["alignment_offset", "alignment_memory"] {
            let v = check(r, name)["value"].as_u64().unwrap();
            assert!(
                v.is_power_of_two() && (512..=4096).contains(&v),
                "{name} {v}"
            );
        }
        let max_io = check(r, "max_io")["value"].as_u64().unwrap();
        assert!(
            (RECORD_BYTES..=16 << 20).contains(&max_io),
            "max_io {max_io}"
        );
    }

    // The matrix: 2 directions x 2 block sizes x 2 queue depths, writes first.
    let matrix = r["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 8);
    let mut best = [0.0f64; 2];
    for (i, cell) in matrix.iter().enumerate() {
        let what = format!("{} bs={} qd={}", cell["rw"], cell["bs"], cell["qd"]);
        assert_eq!(cell["rw"], if i < 4 { "write" } else { "read" }, "{what}");
        assert!(cell["error"].is_null(), "{what}: {cell}");
        let bs = cell["bs"].as_u64().unwrap();
        let bytes = cell["bytes"].as_u64().unwrap();
        assert_eq!(bytes, cell["size_bytes"].as_u64().unwrap(), "{what}");
        assert!(bytes >= bs && bytes <= SIZE_BYTES, "{what}");
        assert_eq!(cell["ios"].as_u64().unwrap(), bytes.div_ceil(bs), "{what}");
        assert_eq!(cell["retries"], 0, "{what}");
        let mibs = num(&cell["mib_per_sec"], &what);
        assert!(mibs > 0.0, "{what}");
        best[usize::from(i >= 4)] = best[usize::from(i >= 4)].max(mibs);
        check_latency(&cell["lat_us"], &what);
    }
    // The headline numbers are the matrix's own.
    for (i, name) in ["write_throughput", "read_throughput"].iter().enumerate() {
        let c = check(r, name);
        assert_eq!(c["better"], "higher");
        assert!(
            (num(&c["value"], name) - best[i]).abs() < 0.01,
            "{c} vs {}",
            best[i]
        );
    }
    for name in [
        "write_latency_p99",
        "read_latency_p99",
        "fsync_latency_p99",
        "dsync_write_latency_p99",
    ] {
        let c = check(r, name);
        assert_eq!(c["better"], "lower", "{c}");
        check_latency(&c["data"]["lat_us"], name);
        assert_eq!(c["value"], c["data"]["lat_us"]["p99"], "{c}");
    }
    assert_eq!(check(r, "fsync_latency_p99")["data"]["lat_us"]["count"], 16);

    // The pattern: read back intact, spread to the last block of the device.
    let pv = check(r, "pattern_verify");
    let pattern = &r["pattern"];
    assert_eq!(pv["value"], pattern["bytes"]);
    assert_eq!(pv["data"]["bad_units"], 0);
    let extents = pattern["extents"].as_array().unwrap();
    assert!(extents.len() > 1, "{pattern}");
    assert_eq!(extents[0][0], 0);
    let last = extents.last().unwrap();
    assert_eq!(
        last[0].as_u64().unwrap() + last[1].as_u64().unwrap(),
        SIZE_BYTES
    );
    assert_eq!(pattern["nonce"].as_str().unwrap().len(), 16);
}

fn run_json(args: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = pbio(args);
    let report = if out.trim().is_empty() {
        Value::Null
    } else {
        parse(&out)
    };
    (code, report, err)
}

fn write_json(path: &Path, v: &Value) -> String {
    std::fs::write(path, v.to_string()).unwrap();
    path.display().to_string()
}

/// The same report claiming 10x the throughput, everywhere.
fn claim_10x(report: &Value) -> Value {
    let mut old = report.clone();
    for c in old["checks"].as_array_mut().unwrap() {
        if c["name"] == "write_throughput" || c["name"] == "read_throughput" {
            c["value"] = (c["value"].as_f64().unwrap() * 10.0).into();
        }
    }
    for cell in old["matrix"].as_array_mut().unwrap() {
        cell["mib_per_sec"] = (cell["mib_per_sec"].as_f64().unwrap() * 10.0).into();
    }
    old
}

fn extent(report: &Value, i: usize) -> u64 {
    report["pattern"]["extents"][i][0].as_u64().unwrap()
}

/// Write `bytes` at `offset` of a file, durably.
fn tamper(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn qualify_a_file_device_compare_and_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.img");
    let dev = format!("{},size=64M", img.display());
    let path = img.display().to_string();

    let (code, r1, err) = run_json(&["qualify", "--dev", &dev, "--quick", "--json"]);
    assert_eq!(code, 0, "{err}");
    check_report(&r1, "file");
    // What trying found is what the kernel states (statx), where it does.
    let kernel = r1["device"]["kernel_dio_align"].as_object();
    if let Some(k) = kernel.filter(|_| r1["device"]["direct_io"] == true) {
        assert_eq!(
            check(&r1, "alignment_offset")["value"],
            k["offset_bytes"],
            "{k:?}"
        );
        let mem = k["memory_bytes"].as_u64().unwrap().max(512);
        assert_eq!(check(&r1, "alignment_memory")["value"], mem, "{k:?}");
    }
    assert!(r1["device"]["filesystem"]["type"].is_string());
    let r1_path = write_json(&dir.path().join("r1.json"), &r1);

    // The pattern is still there, block by block...
    let (code, rc, err) = run_json(&["qualify", "--dev", &path, "--recheck", &r1_path, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(check(&rc, "pattern_recheck")["verdict"], "PASS", "{rc}");
    assert_eq!(rc["recheck_of"], r1_path.as_str());
    // ...until one block of the medium changes: FAIL, with its offset.
    let bad = extent(&r1, 1) + 4096;
    tamper(&img, bad, &[0xEE; 512]);
    let (code, rc, err) = run_json(&["qualify", "--dev", &path, "--recheck", &r1_path, "--json"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(rc["verdict"], "FAIL");
    let c = check(&rc, "pattern_recheck");
    assert_eq!(c["verdict"], "FAIL");
    assert_eq!(c["data"]["first_bad_offset"], bad);
    assert_eq!(c["data"]["bad_units"], 1);
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("mismatch at offset {bad}")),
        "{detail}"
    );

    // A second run over what the first left needs no --force; compared
    // with the first under wide limits (this is a shared test machine) it
    // lists a delta for every check.
    let (code, r2, err) = run_json(&[
        "qualify",
        "--dev",
        &path,
        "--quick",
        "--json",
        "--compare",
        &r1_path,
        "--max-throughput-drop",
        "99",
        "--max-latency-rise",
        "100000",
    ]);
    assert_eq!(code, 0, "{err}\n{r2:#}");
    let c = check(&r2, "compare");
    assert_eq!(c["verdict"], "PASS", "{c}");
    assert_eq!(c["value"], 0);
    let deltas: Vec<&str> = r2["compare"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, CHECKS);
    assert_eq!(r2["compare"]["matrix"].as_array().unwrap().len(), 16);
    assert_eq!(r2["compare"]["against"], r1_path.as_str());

    // Against a report that claims 10x the throughput: a regression, FAIL.
    let fake = write_json(&dir.path().join("fake.json"), &claim_10x(&r1));
    let (code, out, err) = pbio(&["qualify", "--dev", &path, "--quick", "--compare", &fake]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("REGRESSION (limit -20%)"), "{out}");
    let fail = out
        .lines()
        .find(|l| l.contains("FAIL compare"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(fail.contains("_throughput -"), "{fail}");
    assert!(out.contains("verdict: FAIL"), "{out}");

    // The last run's pattern replaced the first's: rechecking the first
    // report now finds another run's blocks.
    let (code, rc, _) = run_json(&["qualify", "--dev", &path, "--recheck", &r1_path, "--json"]);
    assert_eq!(code, 3);
    let detail = check(&rc, "pattern_recheck")["detail"].as_str().unwrap();
    assert!(detail.contains("the pattern of another run"), "{detail}");
}

#[test]
fn qualify_refuses_what_would_lose_data_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("data.img");
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().skip(3 << 20) {
        *b = (i % 251) as u8 | 1;
    }
    std::fs::write(&img, &data).unwrap();
    let path = img.display().to_string();
    let (code, out, err) = pbio(&["qualify", "--dev", &path, "--quick"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("holds data") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains(&format!("offset {}", 3 << 20)), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), data, "nothing was written");

    // A file holding a pbio set: the overwrite guard, as for backup.
    let set = dir.path().join("set.img");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let set_dev = format!("{},size=8M", set.display());
    let (code, _, err) = pbio(&["backup", src.to_str().unwrap(), "--dev", &set_dev]);
    assert_eq!(code, 0, "{err}");
    let set_path = set.display().to_string();
    let (code, _, err) = pbio(&["qualify", "--dev", &set_path, "--quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds pbio set"), "{err}");

    // With --force the data file is qualified (and overwritten).
    let (code, r, err) = run_json(&[
        "qualify",
        "--dev",
        &path,
        "--quick",
        "--force",
        "--json",
        "--verify-fraction",
        "50%",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(check(&r, "pattern_verify")["value"], 4 << 20);
    assert_eq!(r["options"]["verify_fraction"], 0.5);

    // Usage errors: exit 2, nothing run.
    let not_report = dir.path().join("x.json");
    std::fs::write(&not_report, r#"{"hello": 1}"#).unwrap();
    let not_report = not_report.display().to_string();
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, r#"{"schema": 2, "checks": []}"#).unwrap();
    let newer = newer.display().to_string();
    let tiny = format!("{},size=1M", dir.path().join("tiny.img").display());
    let dirpath = dir.path().display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["qualify", "--dev", &path, "--verify-fraction", "0"],
            "fraction",
        ),
        (
            vec!["qualify", "--dev", &path, "--verify-fraction", "150%"],
            "fraction",
        ),
        (
            vec!["qualify", "--dev", &path, "--compare", "/nonexistent.json"],
            "/nonexistent.json",
        ),
        (
            vec!["qualify", "--dev", &path, "--compare", &not_report],
            "not a pbio qualify report",
        ),
        (
            vec!["qualify", "--dev", &path, "--compare", &newer],
            "schema is 2",
        ),
        (
            vec!["qualify", "--dev", &path, "--recheck", &not_report],
            "not a pbio qualify report",
        ),
        (
            vec!["qualify", "--dev", &path, "--recheck", &newer, "--force"],
            "--force",
        ),
        (vec!["qualify", "--dev", &path, "--dev", &path], "--dev"),
        (vec!["qualify", "--dev", &dirpath], "directory"),
        (vec!["qualify", "--dev", &tiny], "smaller than"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = pbio(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

fn sysfs_queue(dev: &Path, attr: &str) -> u64 {
    let name = dev.file_name().unwrap().to_string_lossy();
    let text = std::fs::read_to_string(format!("/sys/block/{name}/queue/{attr}")).unwrap();
    text.trim().parse().unwrap()
}

/// A loop device with 4096-byte logical sectors; detached on drop.
struct Loop4k {
    path: PathBuf,
}

impl Loop4k {
    fn new(backing: &Path, size_bytes: u64) -> Loop4k {
        std::fs::File::create(backing)
            .unwrap()
            .set_len(size_bytes)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--direct-io=on", "--sector-size", "4096", "-f", "--show"])
            .arg(backing)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup --sector-size 4096: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop4k {
            path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }
}

impl Drop for Loop4k {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

#[test]
fn qualify_loop_devices() {
    if !loopdev::loop_devices_available("qualify_loop_devices") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = loopdev::LoopDev::new(&dir.path().join("lo.img"), SIZE_BYTES);
    let dev = lo.arg();

    // A block device is qualified only with --force.
    let (code, _, err) = pbio(&["qualify", "--dev", &dev, "--quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--force") && err.contains("block device"),
        "{err}"
    );

    let (code, r, err) = run_json(&["qualify", "--dev", &dev, "--quick", "--force", "--json"]);
    assert_eq!(code, 0, "{err}");
    check_report(&r, "block");
    // Alignment found by trying = the loop device's own limits (sysfs,
    // read here independently of pbio).
    let logical = sysfs_queue(&lo.path, "logical_block_size");
    assert_eq!(logical, 512);
    assert_eq!(check(&r, "alignment_offset")["value"], logical);
    assert_eq!(
        check(&r, "alignment_memory")["value"],
        (sysfs_queue(&lo.path, "dma_alignment") + 1).max(512)
    );
    let d = &r["device"];
    assert_eq!(d["logical_block_bytes"], logical);
    assert_eq!(
        d["physical_block_bytes"],
        sysfs_queue(&lo.path, "physical_block_size")
    );
    assert_eq!(d["sysfs"]["loop_dio"], true, "{d}");
    assert_eq!(
        d["sysfs"]["queue"]["max_sectors_kb"],
        sysfs_queue(&lo.path, "max_sectors_kb")
    );
    let name = lo.path.file_name().unwrap().to_string_lossy().into_owned();
    let cache = std::fs::read_to_string(format!("/sys/block/{name}/queue/write_cache")).unwrap();
    assert_eq!(check(&r, "write_cache")["value"], cache.trim());
    let r_path = write_json(&dir.path().join("r.json"), &r);

    // A block moved to the wrong place on the medium (in the backing file):
    // the recheck names where, and whose data it holds.
    let (from, to) = (extent(&r, 2), extent(&r, 1) + 1024);
    let mut block = vec![0u8; 512];
    std::fs::File::open(&lo.backing)
        .unwrap()
        .read_exact_at(&mut block, from)
        .unwrap();
    tamper(&lo.backing, to, &block);
    let (code, rc, err) = run_json(&["qualify", "--dev", &dev, "--recheck", &r_path, "--json"]);
    assert_eq!(code, 3, "{err}");
    let c = check(&rc, "pattern_recheck");
    assert_eq!(c["data"]["first_bad_offset"], to);
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("offset {to}"))
            && detail.contains(&format!("data for offset {from}")),
        "{detail}"
    );
    assert!(detail.contains("misplaced write"), "{detail}");

    // Against a report claiming 10x the throughput: exit 3, compare FAILs.
    let fake = write_json(&dir.path().join("fake.json"), &claim_10x(&r));
    let (code, r2, err) = run_json(&[
        "qualify",
        "--dev",
        &dev,
        "--quick",
        "--force",
        "--json",
        "--compare",
        &fake,
    ]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(r2["verdict"], "FAIL");
    let c = check(&r2, "compare");
    assert_eq!(c["verdict"], "FAIL");
    let regressions: Vec<&Value> = r2["compare"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["regression"] == true)
        .collect();
    assert!(
        regressions
            .iter()
            .any(|d| d["name"].as_str().unwrap().ends_with("_throughput")),
        "{regressions:?}"
    );
    // The run itself was fine: only the comparison failed.
    for c in r2["checks"].as_array().unwrap() {
        if c["name"] != "compare" {
            assert_eq!(c["verdict"], "PASS", "{c}");
        }
    }

    // 4096-byte sectors: the probe finds 4096, not 512.
    let lo4k = Loop4k::new(&dir.path().join("lo4k.img"), SIZE_BYTES);
    let dev4k = lo4k.path.display().to_string();
    let (code, r4, err) = run_json(&["qualify", "--dev", &dev4k, "--quick", "--force", "--json"]);
    assert_eq!(code, 0, "{err}");
    check_report(&r4, "block");
    assert_eq!(sysfs_queue(&lo4k.path, "logical_block_size"), 4096);
    assert_eq!(check(&r4, "alignment_offset")["value"], 4096);
    assert_eq!(r4["device"]["logical_block_bytes"], 4096);
    for e in r4["pattern"]["extents"].as_array().unwrap() {
        assert_eq!(e[0].as_u64().unwrap() % 4096, 0, "{e}");
    }
}

/// Every check of a tape run, in order.
const TAPE_CHECKS: [&str; 11] = [
    "identity",
    "block_limits",
    "write_throughput",
    "read_throughput",
    "write_latency_p99",
    "read_latency_p99",
    "rewind",
    "pattern_verify",
    "filemarks",
    "space",
    "end_of_data",
];

/// Every check of a pmem run, in order.
const PMEM_CHECKS: [&str; 8] = [
    "identity",
    "write_throughput",
    "read_throughput",
    "write_latency_p99",
    "read_latency_p99",
    "persist_latency_p99",
    "pattern_verify",
    "durability",
];

/// A report whose every check PASSed, in the order given; details given.
fn check_all_pass(r: &Value, names: &[&str], kind: &str) {
    assert_eq!(r["schema"], 1, "{r}");
    assert_eq!(r["verdict"], "PASS", "{r:#}");
    assert_eq!(r["device"]["kind"], kind, "{r:#}");
    let got: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, names, "every check, in order");
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["verdict"], "PASS", "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
    }
    for cell in r["matrix"].as_array().unwrap() {
        assert!(cell["error"].is_null(), "{cell}");
        assert_eq!(cell["qd"], 1, "{cell}");
        assert_eq!(cell["bytes"], cell["size_bytes"], "{cell}");
        let what = format!("{} bs={}", cell["rw"], cell["bs"]);
        assert!(num(&cell["mib_per_sec"], &what) > 0.0, "{what}");
        check_latency(&cell["lat_us"], &what);
    }
    for name in ["write_latency_p99", "read_latency_p99"] {
        check_latency(&check(r, name)["data"]["lat_us"], name);
    }
}

#[test]
fn qualify_an_emulated_tape_compare_and_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let tape_dir = dir.path().join("tape");
    let dev = format!("vtape:{},size=256M", tape_dir.display());
    let (code, r1, err) = run_json(&["qualify", "--dev", &dev, "--quick", "--json"]);
    assert_eq!(code, 0, "{err}");
    check_all_pass(&r1, &TAPE_CHECKS, "vtape");
    let t = &r1["device"]["tape"];
    assert_eq!(t["online"], true, "{t}");
    assert_eq!(t["block_size_bytes"], 0, "variable-block mode: {t}");
    assert_eq!(check(&r1, "block_limits")["value"], 8 << 20);
    // Two block sizes written and read, one tape file each.
    let matrix = r1["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 4);
    let bs: Vec<u64> = matrix.iter().map(|c| c["bs"].as_u64().unwrap()).collect();
    assert_eq!(bs, [256 << 10, 1 << 20, 256 << 10, 1 << 20]);
    // The pattern: one extent per tape block, back to back from BOT,
    // several sizes, the largest pbio's tape block.
    let extents = r1["pattern"]["extents"].as_array().unwrap();
    let mut at = 0;
    for e in extents {
        assert_eq!(e[0].as_u64().unwrap(), at, "{e}");
        at += e[1].as_u64().unwrap();
    }
    let sizes: std::collections::BTreeSet<u64> =
        extents.iter().map(|e| e[1].as_u64().unwrap()).collect();
    assert_eq!(
        sizes.into_iter().collect::<Vec<_>>(),
        [4096, 12800, 65536, 1 << 20]
    );
    assert_eq!(check(&r1, "pattern_verify")["value"], at);
    assert_eq!(check(&r1, "filemarks")["value"], 3);
    let space = check(&r1, "space")["detail"].as_str().unwrap();
    assert!(space.contains("MTIOCPOS"), "{space}");
    let r1_path = write_json(&dir.path().join("r1.json"), &r1);

    // The cartridge now holds data: a second run needs --force.
    let plain = format!("vtape:{}", tape_dir.display());
    let (code, _, err) = pbio(&["qualify", "--dev", &plain, "--quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force") && err.contains(&plain), "{err}");
    // With it, compared with the first under wide limits: a delta per check.
    let (code, r2, err) = run_json(&[
        "qualify",
        "--dev",
        &plain,
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
    assert_eq!(code, 0, "{err}\n{r2:#}");
    assert_eq!(check(&r2, "compare")["verdict"], "PASS");
    let deltas: Vec<&str> = r2["compare"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, TAPE_CHECKS);
    assert_eq!(r2["compare"]["matrix"].as_array().unwrap().len(), 8);
    // Against a report claiming 10x the throughput: FAIL.
    let fake = write_json(&dir.path().join("fake.json"), &claim_10x(&r2));
    let (code, r3, err) = run_json(&[
        "qualify",
        "--dev",
        &plain,
        "--quick",
        "--force",
        "--json",
        "--compare",
        &fake,
    ]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(check(&r3, "compare")["verdict"], "FAIL");
    let r3_path = write_json(&dir.path().join("r3.json"), &r3);

    // The layout is still on the tape: --recheck reads it back...
    let (code, rc, err) = run_json(&["qualify", "--dev", &plain, "--recheck", &r3_path, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(check(&rc, "pattern_recheck")["verdict"], "PASS", "{rc}");
    // ...until one byte of the third block changes on the medium: FAIL,
    // naming the block and the tape byte.
    let third = extent(&r3, 2);
    let bad = third + 2 * 512 + 17;
    tamper(&tape_dir.join("vtape.data"), bad, &[0x5A]);
    let (code, rc, err) = run_json(&["qualify", "--dev", &plain, "--recheck", &r3_path, "--json"]);
    assert_eq!(code, 3, "{err}");
    let c = check(&rc, "pattern_recheck");
    assert_eq!(c["verdict"], "FAIL");
    assert_eq!(c["data"]["first_bad_block"], 2);
    assert_eq!(c["data"]["first_bad_offset"], third + 1024);
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains("file 0 block 2 at byte 1024")
            && detail.contains(&format!("tape byte {}", third + 1024)),
        "{detail}"
    );
    // The first run's report: its blocks were overwritten by later runs.
    let (code, rc, _) = run_json(&["qualify", "--dev", &plain, "--recheck", &r1_path, "--json"]);
    assert_eq!(code, 3, "{rc}");
    let detail = check(&rc, "pattern_recheck")["detail"].as_str().unwrap();
    assert!(detail.contains("the pattern of another run"), "{detail}");
    // A disk's report (extents that are not tape blocks) is refused as such.
    let mut disk = r3.clone();
    disk["pattern"]["extents"] = serde_json::json!([[0, 4 << 20], [8 << 20, 4 << 20]]);
    let disk_path = write_json(&dir.path().join("disk.json"), &disk);
    let (code, rc, _) = run_json(&[
        "qualify",
        "--dev",
        &plain,
        "--recheck",
        &disk_path,
        "--json",
    ]);
    assert_eq!(code, 3, "{rc}");
    let detail = check(&rc, "pattern_recheck")["detail"].as_str().unwrap();
    assert!(detail.contains("not a tape's"), "{detail}");
}

#[test]
fn qualify_a_pmem_file_and_recheck() {
    let dir = tempfile::tempdir_in("/dev/shm").expect("a folder in /dev/shm");
    let file = dir.path().join("pmem.img");
    let dev = format!("pmem:{},size=64M", file.display());
    let (code, r, err) = run_json(&["qualify", "--dev", &dev, "--quick", "--json"]);
    assert_eq!(code, 0, "{err}");
    check_all_pass(&r, &PMEM_CHECKS, "pmem");
    let p = &r["device"]["pmem"];
    assert_eq!(p["mapping_bytes"], 64 << 20, "{p}");
    assert_eq!(p["dax"], false, "tmpfs is not DAX: {p}");
    assert_eq!(p["persist"], "msync(MS_SYNC)", "{p}");
    assert_eq!(r["device"]["filesystem"]["type"], "tmpfs");
    assert_eq!(r["matrix"].as_array().unwrap().len(), 4);
    let persist = check(&r, "persist_latency_p99");
    assert_eq!(persist["better"], "lower");
    for size in ["64", "4096", "65536"] {
        check_latency(&persist["data"]["lat_us_by_bytes"][size], size);
    }
    assert_eq!(
        persist["value"],
        persist["data"]["lat_us_by_bytes"]["4096"]["p99"]
    );
    assert_eq!(check(&r, "pattern_verify")["value"], 4 << 20);
    assert_eq!(check(&r, "durability")["value"], 4 << 20);
    let durable = check(&r, "durability")["detail"].as_str().unwrap();
    assert!(durable.contains("mapped again"), "{durable}");
    let r_path = write_json(&dir.path().join("r.json"), &r);
    let plain = format!("pmem:{}", file.display());

    let (code, rc, err) = run_json(&["qualify", "--dev", &plain, "--recheck", &r_path, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(check(&rc, "pattern_recheck")["verdict"], "PASS");
    let bad = extent(&r, 1) + 8192;
    tamper(&file, bad, &[0u8; 512]);
    let (code, rc, err) = run_json(&["qualify", "--dev", &plain, "--recheck", &r_path, "--json"]);
    assert_eq!(code, 3, "{err}");
    let c = check(&rc, "pattern_recheck");
    assert_eq!(c["data"]["first_bad_offset"], bad);
    assert_eq!(c["data"]["bad_units"], 1);
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("mismatch at offset {bad}")) && detail.contains("zeros"),
        "{detail}"
    );

    // A pmem file holding other data needs --force; a directory is refused.
    std::fs::write(&file, vec![7u8; 8 << 20]).unwrap();
    let (code, _, err) = pbio(&["qualify", "--dev", &plain, "--quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("holds data") && err.contains("--force"),
        "{err}"
    );
    let d = format!("pmem:{}", dir.path().display());
    let (code, _, err) = pbio(&["qualify", "--dev", &d, "--quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("directory") && err.contains(&d), "{err}");
}

/// pmem through a block device (as `/dev/pmemN` is one): the namespace's
/// sysfs, --force required, and the durability read-back with O_DIRECT.
#[test]
fn qualify_pmem_on_a_loop_device() {
    if !loopdev::loop_devices_available("qualify_pmem_on_a_loop_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = loopdev::LoopDev::new(&dir.path().join("lo.img"), SIZE_BYTES);
    let dev = format!("pmem:{}", lo.arg());
    let (code, _, err) = pbio(&["qualify", "--dev", &dev, "--quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force") && err.contains(&dev), "{err}");
    let (code, r, err) = run_json(&["qualify", "--dev", &dev, "--quick", "--force", "--json"]);
    assert_eq!(code, 0, "{err}");
    check_all_pass(&r, &PMEM_CHECKS, "pmem");
    let name = lo.path.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(r["device"]["sysfs"]["name"], name.as_str());
    assert_eq!(r["device"]["logical_block_bytes"], 512);
    let durable = check(&r, "durability")["detail"].as_str().unwrap();
    assert!(
        durable.contains("O_DIRECT, past the page cache: intact"),
        "{durable}"
    );
    // What the run left is on the loop device's backing file.
    let mut unit = vec![0u8; 512];
    std::fs::File::open(&lo.backing)
        .unwrap()
        .read_exact_at(&mut unit, extent(&r, 1))
        .unwrap();
    assert_eq!(&unit[..8], b"PBIOQUAL");
}

//! `backup --compress` (issue 22) on real devices: loop devices with
//! direct I/O, an emulated tape (vtape:) and an NBD export; round trips
//! byte-identical, a compressible tree under half its size on the devices,
//! incompressible data stored raw, and a crafted decompression bomb
//! refused naming device and offset.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;
#[path = "common/netns.rs"]
mod netns;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use faults::{full_device_available, FullDevice};
use loopdev::{loop_devices_available, pbio, LoopDev};
use netns::{nbd_available, NbdSite, Server};
use pbio::format::codec::{compress, Compression};
use pbio::format::{Codec, RecordHeader, Transform, HEADER_BYTES};
use serde_json::Value;

fn summary(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in: {out}"))
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn with_devs(mut args: Vec<String>, devs: &[String]) -> Vec<String> {
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    args
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Text (repetitive lines), zeros and, when `random_bytes > 0`, one file
/// of pseudo-random bytes, with distinctive names.
fn tree(root: &Path, text_files: usize, random_bytes: u64) -> PathBuf {
    let src = root.join("src/tree");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    for i in 0..text_files {
        let mut f = std::fs::File::create(src.join(format!("docs/chapter-{i:03}.txt"))).unwrap();
        let mut text = String::new();
        for line in 0..40_000 {
            text.push_str(&format!(
                "chapter {i} line {line}: the quick brown fox jumps over the lazy dog\n"
            ));
        }
        f.write_all(text.as_bytes()).unwrap();
    }
    std::fs::write(src.join("zeros.img"), vec![0u8; 6 << 20]).unwrap();
    std::fs::write(src.join("small.txt"), b"a small file\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    if random_bytes > 0 {
        let mut rng = common::Rng::new(22);
        let mut buf = vec![0u8; random_bytes as usize];
        rng.fill(&mut buf);
        std::fs::write(src.join("random.bin"), buf).unwrap();
    }
    src
}

fn backup(src: &Path, devs: &[String], extra: &[&str]) -> Value {
    let mut args = strings(&["backup", &src.display().to_string(), "--json", "--force"]);
    args.extend(strings(extra));
    let (code, out, err) = run(&with_devs(args, devs));
    assert_eq!(code, 0, "backup: {out}\n{err}");
    summary(&out)
}

fn restore_identical(src: &Path, devs: &[String], to: &Path) {
    let args = strings(&["restore", "--to", &to.display().to_string()]);
    let (code, out, err) = run(&with_devs(args, devs));
    assert_eq!(code, 0, "restore: {out}\n{err}");
    let diffs = common::compare_trees(src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
    let (code, out, err) = run(&with_devs(strings(&["verify"]), devs));
    assert_eq!(code, 0, "verify: {out}\n{err}");
}

fn total(summary: &Value, field: &str) -> u64 {
    summary["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[field].as_u64().unwrap())
        .sum()
}

#[test]
fn zstd_round_trip_on_loop_devices_a_vtape_and_nbd_under_half_the_size() {
    let test = "zstd_round_trip_on_loop_devices_a_vtape_and_nbd_under_half_the_size";
    if !loop_devices_available(test) || !nbd_available(test, Server::NbdkitFile, false, false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 12, 0);
    let a = LoopDev::new(&dir.path().join("a.img"), 64 << 20);
    let b = LoopDev::new(&dir.path().join("b.img"), 64 << 20);
    let nbd = NbdSite::unix(Server::NbdkitFile, 64 << 20);
    let tape = dir.path().join("tape");
    std::fs::create_dir(&tape).unwrap();
    let devs = vec![
        a.arg(),
        b.arg(),
        format!("vtape:{},size=128M", tape.display()),
        nbd.url(),
    ];
    let s = backup(&src, &devs, &["--compress", "zstd:1"]);
    let (payload, media) = (total(&s, "payload_bytes"), total(&s, "media_bytes"));
    // 12 chapters of about 2.7 MiB and 6 MiB of zeros.
    assert!(payload > 30 << 20, "{s}");
    assert!(
        media < payload / 2,
        "media {media} of payload {payload}: {s}"
    );
    for (i, d) in s["devices"].as_array().unwrap().iter().enumerate() {
        assert!(d["payload_bytes"].as_u64().unwrap() > 0, "device {i}: {s}");
        assert!(
            d["compress_cpu_seconds"].as_f64().unwrap() > 0.0,
            "device {i}: {s}"
        );
    }
    // The tape holds what the summary says (its blocks are the records).
    let tape_bytes = std::fs::metadata(tape.join("vtape.data")).unwrap().len();
    assert!(tape_bytes < payload / 2, "tape {tape_bytes}");
    let devs_back = vec![
        a.arg(),
        b.arg(),
        format!("vtape:{}", tape.display()),
        nbd.url(),
    ];
    restore_identical(&src, &devs_back, &dir.path().join("out"));
    // restore --scan reads the records alone.
    let scan_to = dir.path().join("scanned");
    let args = with_devs(
        strings(&["restore", "--scan", "--to", &scan_to.display().to_string()]),
        &devs_back,
    );
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "restore --scan: {out}\n{err}");
    for name in ["docs/chapter-007.txt", "zeros.img", "small.txt"] {
        assert_eq!(
            std::fs::read(scan_to.join("tree").join(name)).unwrap(),
            std::fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn lz4_round_trip_and_incompressible_data_stored_raw() {
    let test = "lz4_round_trip_and_incompressible_data_stored_raw";
    if !loop_devices_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 4, 24 << 20);
    let a = LoopDev::new(&dir.path().join("a.img"), 64 << 20);
    let b = LoopDev::new(&dir.path().join("b.img"), 64 << 20);
    let devs = vec![a.arg(), b.arg()];
    let s = backup(&src, &devs, &["--compress", "lz4"]);
    restore_identical(&src, &devs, &dir.path().join("out"));
    // Every record of random.bin is raw; the text's are lz4.
    let mut codecs = std::collections::BTreeMap::<String, u64>::new();
    for dev in &devs {
        let (code, out, err) = run(&strings(&["scan", "--json", "--dev", dev]));
        assert_eq!(code, 0, "scan: {out}\n{err}");
        for line in out.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["kind"] != "data" {
                continue;
            }
            let codec = v["codec"].as_str().unwrap_or("?").to_string();
            let (payload, stored) = (v["payload_bytes"].as_u64(), v["stored_bytes"].as_u64());
            if codec == "raw" {
                assert_eq!(stored, payload, "{v}");
            } else {
                assert!(stored < payload, "{v}");
            }
            *codecs.entry(codec).or_default() += 1;
        }
    }
    // 24 MiB of random data in records of at most 1 MiB: 24 or more raw.
    assert!(codecs.get("raw").copied().unwrap_or(0) >= 24, "{codecs:?}");
    assert!(codecs.get("lz4").copied().unwrap_or(0) >= 4, "{codecs:?}");
    // Raw records take their payload's room: the random part does not shrink.
    assert!(total(&s, "media_bytes") > 24 << 20, "{s}");
}

/// Rewrite the first compressed record of the file device `path` so that
/// its stored bytes (with a good CRC) expand to twice its payload: what a
/// forger who knows the format can write.
fn plant_bomb(path: &Path) -> u64 {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut position = HEADER_BYTES as u64;
    let mut block = vec![0u8; HEADER_BYTES];
    loop {
        dev.read_exact_at(&mut block, position).unwrap();
        let header = RecordHeader::decode(&block).expect("a record header");
        if header.transform.codec != Codec::Raw {
            let info = RecordHeader::decode_info(&block);
            let zeros = vec![0u8; 2 * header.payload_bytes as usize];
            let mut bomb = Vec::new();
            let setting = Compression {
                codec: Codec::Zstd,
                level: 1,
            };
            let n = compress(setting, &zeros, &mut bomb).unwrap();
            assert!(n < header.payload_bytes as usize);
            let forged = RecordHeader {
                transform: Transform {
                    codec: Codec::Zstd,
                    stored_bytes: n as u32,
                    ..Transform::RAW
                },
                payload_crc: pbio::format::crc32c(&bomb[..n]),
                ..header
            };
            let mut out = vec![0u8; HEADER_BYTES + pbio::format::round_up_block(n as u64) as usize];
            forged.encode_with_info(info.as_ref(), &mut out[..HEADER_BYTES]);
            out[HEADER_BYTES..HEADER_BYTES + n].copy_from_slice(&bomb[..n]);
            dev.write_all_at(&out, position).unwrap();
            return position;
        }
        position += header.media_bytes();
    }
}

#[test]
fn a_decompression_bomb_is_refused_naming_device_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 2, 0);
    let dev = dir.path().join("dev.img");
    std::fs::File::create(&dev)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let devs = vec![dev.display().to_string()];
    backup(&src, &devs, &["--compress", "zstd"]);
    let offset = plant_bomb(&dev);
    let to = dir.path().join("out");
    let args = with_devs(
        strings(&["restore", "--to", &to.display().to_string()]),
        &devs,
    );
    let (code, out, err) = run(&args);
    assert_eq!(code, 3, "restore of a bomb: {out}\n{err}");
    assert!(
        err.contains(&format!("offset {offset}")) && err.contains("decompresses to more than"),
        "{err}"
    );
    let (code, _, err) = run(&with_devs(strings(&["verify"]), &devs));
    assert_eq!(code, 3, "verify of a bomb: {err}");
}

/// Records are placed on media once compressed, in order: a device that
/// fills up (ENOSPC from its backing store) keeps the prefix that is
/// durable and the others take the rest, as without compression.
#[test]
fn a_device_that_fills_up_mid_run_with_compression() {
    if !full_device_available("a_device_that_fills_up_mid_run_with_compression") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Random content (stored raw) and text (compressed), about 30 MiB a device.
    let src = tree(dir.path(), 8, 0);
    common::make_fixture_tree(&src.join("fixture"), 300, 80 << 20);
    let loops: Vec<LoopDev> = (0..3)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    let full = FullDevice::new(dir.path(), 96 << 20, 16 << 20);
    let mut devs: Vec<String> = loops.iter().map(|l| l.arg()).collect();
    devs.insert(1, full.arg());
    let mut args = strings(&["backup", &src.display().to_string(), "--json", "--force"]);
    args.extend(strings(&["--compress", "zstd:1", "--qd", "8"]));
    let (code, out, err) = run(&with_devs(args, &devs));
    let s = summary(&out);
    assert_eq!(code, 0, "a full device is healthy: {s}\n{err}");
    let states: Vec<&str> = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["complete", "full", "complete", "complete"], "{s}");
    let d = &s["devices"][1];
    assert!(d["redirected_bytes"].as_u64().unwrap() > 0, "{d}");
    assert!(d["payload_bytes"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(s["missing_bytes"], 0);
    restore_identical(&src, &devs, &dir.path().join("out"));
}

#[test]
fn bad_compress_level_or_codec_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 1, 0);
    let devs: Vec<String> = (0..3)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    // A level out of range or an unknown codec is a usage error (with
    // --parity too: --parity with --compress is allowed, tests/parity_stored.rs).
    for bad in ["zstd:0", "zstd:20", "gzip", "lz4:1"] {
        for parity in [None, Some("1")] {
            let mut args = strings(&["backup", &src.display().to_string(), "--compress", bad]);
            if let Some(p) = parity {
                args.extend(strings(&["--parity", p]));
            }
            let (code, out, err) = run(&with_devs(args, &devs));
            assert_eq!(
                code, 2,
                "--compress {bad} --parity {parity:?}: {out}\n{err}"
            );
            for d in &devs {
                assert!(!Path::new(d).exists(), "{d} was created");
            }
        }
    }
}

/// The catalog records per file the bytes its data takes as stored
/// (FORMAT.md 6.1, amendment ten): `list --json` gives `stored_bytes`,
/// under the size for compressible files, equal to it for random data
/// (stored raw), absent for entries without data; the text listing says
/// so per file and in total. File devices, two of them (the catalog is
/// the whole set's on each).
#[test]
fn the_catalog_records_each_files_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 2, 3 << 20);
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=64M")).collect();
    backup(&src, &sized, &["--compress", "zstd:1", "--chunk", "256K"]);
    for dev in &devs {
        let (code, out, err) = run(&strings(&["list", "--json", "--dev", dev]));
        assert_eq!(code, 0, "list: {err}");
        let listed: Value = serde_json::from_str(&out).unwrap();
        let files = listed["files"].as_array().unwrap();
        let of = |name: &str| {
            files
                .iter()
                .find(|f| f["path"].as_str().unwrap().ends_with(name))
                .unwrap_or_else(|| panic!("{name} not listed: {out}"))
        };
        let size = |f: &Value| f["size_bytes"].as_u64().unwrap();
        let stored = |f: &Value| f["stored_bytes"].as_u64();
        let text = of("docs/chapter-000.txt");
        assert!(
            stored(text).unwrap() * 4 < size(text),
            "text compresses: {text}"
        );
        let zeros = of("zeros.img");
        assert!(stored(zeros).unwrap() * 100 < size(zeros), "{zeros}");
        let random = of("random.bin");
        assert_eq!(stored(random), Some(3 << 20), "random data is stored raw");
        assert_eq!(stored(of("empty")), Some(0));
        assert_eq!(stored(of("tree/docs")), None, "a directory has no data");
        let (code, out, err) = run(&strings(&["list", "--dev", dev]));
        assert_eq!(code, 0, "list: {err}");
        let line = |name: &str| {
            out.lines()
                .find(|l| l.ends_with(name) || l.contains(&format!("{name} (")))
                .unwrap_or_else(|| panic!("{name}: {out}"))
                .to_string()
        };
        let text_line = line("chapter-000.txt");
        assert!(
            text_line.ends_with(&format!("(stored {} bytes)", stored(text).unwrap())),
            "{text_line}"
        );
        assert!(line("random.bin").ends_with("random.bin"), "raw: no note");
        let total: u64 = files.iter().filter_map(stored).sum();
        let payload: u64 = files.iter().filter(|f| stored(f).is_some()).map(size).sum();
        let head = out.lines().next().unwrap();
        assert!(
            head.ends_with(&format!(" segments, data {payload} bytes, {total} stored")),
            "{head}"
        );
    }
}

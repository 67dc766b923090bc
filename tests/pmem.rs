//! pmem devices (issue 8): a file on tmpfs as the emulated persistent
//! memory (mapped, not DAX: made durable with msync), next to a loop
//! device. Under CI (`CI=true`) a missing capability fails, never skips.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::{Path, PathBuf};

use loopdev::{loop_devices_available, pbio, LoopDev};
use pbio::device::persist::{self, Flush};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

/// A directory on tmpfs for the emulated pmem file (None: skipped).
fn shm_dir(test: &str) -> Option<tempfile::TempDir> {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => Some(d),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: needs a tmpfs at /dev/shm under CI, but: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no tmpfs at /dev/shm: {e}");
            None
        }
    }
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn devs(args: &[&str]) -> Vec<String> {
    args.iter()
        .flat_map(|d| ["--dev".to_string(), d.to_string()])
        .collect()
}

fn restore_and_compare(src: &Path, to: &Path, dev_args: &[&str]) {
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
        "--json".into(),
    ];
    args.extend(devs(dev_args));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "restore failed: {out}\n{err}");
    let diffs = common::compare_trees(src, &to.join("tree"));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn pmem_and_loop_round_trip_in_place() {
    let test = "pmem_and_loop_round_trip_in_place";
    if !loop_devices_available(test) {
        return;
    }
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/tree");
    common::make_fixture_tree(&src, 400, 40 << 20);
    let lo = LoopDev::new(&dir.path().join("loop.img"), 64 << 20);
    let pmem_file = shm.path().join("pmem.img");
    let pmem = format!("pmem:{}", pmem_file.display());
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(&[&format!("{pmem},size=64M"), &lo.arg()]));
    args.push("--json".into());
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    assert!(
        err.contains("msync"),
        "the durability choice is logged: {err}"
    );
    let summary = json(&out);
    let devices = summary["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        let payload = d["payload_bytes"].as_u64().unwrap();
        assert!(payload > 0, "every device got work: {summary}");
        assert_eq!(d["payload_bytes_zero_copy"], d["payload_bytes"], "{d}");
    }
    let pm = devices.iter().find(|d| d["path"] == pmem.as_str()).unwrap();
    let lp = devices
        .iter()
        .find(|d| d["path"] == lo.arg().as_str())
        .unwrap();
    // The pmem device's payload was read straight into the mapping: no
    // buffer in between, no write of its own.
    assert_eq!(pm["payload_bytes_in_place"], pm["payload_bytes"], "{pm}");
    assert_eq!(lp["payload_bytes_in_place"], 0, "{lp}");
    assert_eq!(pm["short_writes"], 0);
    assert_eq!(std::fs::metadata(&pmem_file).unwrap().len(), 64 << 20);

    restore_and_compare(&src, &dir.path().join("out"), &[&pmem, &lo.arg()]);
    restore_and_compare(&src, &dir.path().join("out-rev"), &[&lo.arg(), &pmem]);
    let mut args = vec!["verify".to_string()];
    args.extend(devs(&[&pmem, &lo.arg()]));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "verify failed: {out}\n{err}");
}

#[test]
fn pmem_file_given_without_size_round_trip() {
    let test = "pmem_file_given_without_size_round_trip";
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/tree");
    common::make_fixture_tree(&src, 50, 3 << 20);
    // A file the user made: its length is the capacity.
    let file: PathBuf = shm.path().join("made.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let pmem = format!("pmem:{}", file.display());
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(&[&pmem]));
    args.push("--json".into());
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    let d = &json(&out)["devices"][0];
    assert_eq!(d["payload_bytes_in_place"], d["payload_bytes"], "{d}");
    restore_and_compare(&src, &dir.path().join("out"), &[&pmem]);
    // Restore and verify read records as slices of the mapping: a byte
    // changed in the first record's payload is seen there.
    let (code, out, err) = run(&["verify".to_string(), "--dev".into(), pmem.clone()]);
    assert_eq!(code, 0, "verify failed: {out}\n{err}");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        let at = 2 * 4096 + 100;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[!b[0]], at).unwrap();
    }
    let (code, out, err) = run(&["verify".to_string(), "--dev".into(), pmem.clone()]);
    assert_ne!(code, 0, "verify of a changed record passed: {out}\n{err}");
    assert!(err.contains("checksum mismatch"), "{out}\n{err}");
    // A pmem name whose file does not exist and no size: refused, named.
    let missing = format!("pmem:{}", shm.path().join("nope.img").display());
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(&[&missing]));
    let (code, _, err) = run(&args);
    assert_ne!(code, 0);
    assert!(err.contains("nope.img"), "{err}");
}

#[test]
fn flush_selection_from_cpuid_bits() {
    assert_eq!(persist::select(0), Flush::Clflush);
    assert_eq!(persist::select(1 << 23), Flush::ClflushOpt);
    assert_eq!(persist::select(1 << 24), Flush::Clwb);
    assert_eq!(persist::select((1 << 24) | (1 << 23)), Flush::Clwb);
    assert_eq!(persist::select(!((1 << 24) | (1 << 23))), Flush::Clflush);
    // This CPU's answer is one of them and flushing with it works.
    let flush = persist::detect();
    let buf = vec![1u8; 4096];
    persist::flush_slice(flush, &buf);
    assert_eq!(buf.iter().map(|&b| b as usize).sum::<usize>(), 4096);
}

/// A file name and a content string found nowhere else.
const NAME: &str = "okapi-pmem-vellum-ledger";
const CONTENT: &[u8] = b"the pangolin lent 4471 drachmae to the lamplighter";

/// Text with the distinctive content in every line under the distinctive
/// name, zeros, random bytes and an empty file.
fn secret_tree(root: &Path) -> PathBuf {
    use std::io::Write;
    let src = root.join("src/tree");
    let named = src.join(NAME);
    std::fs::create_dir_all(&named).unwrap();
    let mut text = Vec::new();
    for line in 0..50_000 {
        text.extend_from_slice(format!("{line}: ").as_bytes());
        text.extend_from_slice(CONTENT);
        text.push(b'\n');
    }
    std::fs::File::create(named.join("notes.txt"))
        .unwrap()
        .write_all(&text)
        .unwrap();
    std::fs::write(src.join(format!("{NAME}.txt")), CONTENT).unwrap();
    std::fs::write(src.join("zeros.img"), vec![0u8; 3 << 20]).unwrap();
    let mut rng = common::Rng::new(2212);
    let mut random = vec![0u8; 4 << 20];
    rng.fill(&mut random);
    std::fs::write(src.join("random.bin"), random).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    src
}

fn new_key(dir: &Path) -> String {
    let key = dir.join("set.key");
    let (code, out, err) = pbio(&["key", "new", key.to_str().unwrap()]);
    assert_eq!(code, 0, "key new: {out}\n{err}");
    key.display().to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn backup_json(src: &Path, dev_args: &[&str], extra: &[&str]) -> Value {
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(dev_args));
    args.extend(["--json".to_string(), "--force".to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup {extra:?} failed: {out}\n{err}");
    json(&out)
}

fn with_key(cmd: &[&str], key: &str, dev_args: &[&str]) -> (i32, String, String) {
    let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    args.extend(["--key-file".to_string(), key.to_string()]);
    args.extend(devs(dev_args));
    run(&args)
}

/// `--encrypt` on a pmem device next to a loop device: records are sealed
/// in their slot and copied into the mapping, so the pmem file never holds
/// the tree's names or contents in clear (an unencrypted backup of the
/// same tree does); the round trip is byte-identical, and it needs the key.
#[test]
fn encrypted_pmem_round_trip_hides_names_and_contents() {
    let test = "encrypted_pmem_round_trip_hides_names_and_contents";
    if !loop_devices_available(test) {
        return;
    }
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = secret_tree(dir.path());
    let key = new_key(dir.path());
    let lo = LoopDev::new(&dir.path().join("loop.img"), 64 << 20);
    let pmem_file = shm.path().join("pmem.img");
    let pmem = format!("pmem:{}", pmem_file.display());
    let sized = format!("{pmem},size=64M");

    // The same tree unencrypted (on a pmem file of its own: a device
    // keeps what lies past a new set's end): its name and content are there.
    let plain = shm.path().join("plain.img");
    backup_json(&src, &[&format!("pmem:{},size=64M", plain.display())], &[]);
    let raw = std::fs::read(&plain).unwrap();
    assert!(contains(&raw, CONTENT), "plain backup holds the content");
    assert!(
        contains(&raw, NAME.as_bytes()),
        "plain backup holds the name"
    );

    let s = backup_json(
        &src,
        &[&sized, &lo.arg()],
        &["--chunk", "256K", "--encrypt", "--key-file", &key],
    );
    let devices = s["devices"].as_array().unwrap();
    let pm = devices.iter().find(|d| d["path"] == pmem.as_str()).unwrap();
    assert!(pm["payload_bytes"].as_u64().unwrap() > 0, "{s}");
    // Sealed in the slot, then copied: nothing was read into place.
    assert_eq!(pm["payload_bytes_in_place"], 0, "{pm}");
    for image in [pmem_file.clone(), dir.path().join("loop.img")] {
        let raw = std::fs::read(&image).unwrap();
        assert!(
            !contains(&raw, CONTENT),
            "{} holds the content",
            image.display()
        );
        assert!(
            !contains(&raw, NAME.as_bytes()),
            "{} holds the name",
            image.display()
        );
    }
    let to = dir.path().join("out");
    let (code, out, err) = with_key(
        &["restore", "--to", to.to_str().unwrap()],
        &key,
        &[&pmem, &lo.arg()],
    );
    assert_eq!(code, 0, "restore: {out}\n{err}");
    let diffs = common::compare_trees(&src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
    let (code, out, err) = with_key(&["verify"], &key, &[&pmem, &lo.arg()]);
    assert_eq!(code, 0, "verify: {out}\n{err}");
    // Without the key: exit 2, nothing restored.
    let to = dir.path().join("nokey");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(devs(&[&pmem, &lo.arg()]));
    let (code, out, err) = run(&args);
    assert_eq!(code, 2, "restore without the key: {out}\n{err}");
    assert!(
        !to.join("tree").exists(),
        "nothing is written without the key"
    );
}

/// Any single flipped byte of an encrypted pmem device's used area
/// (label, sealed records, catalog) is detected by verify.
#[test]
fn any_flipped_byte_of_an_encrypted_pmem_device_is_detected() {
    let test = "any_flipped_byte_of_an_encrypted_pmem_device_is_detected";
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut rng = common::Rng::new(0x229E_2026);
    for i in 0..10 {
        let len = rng.range(1, 300_000) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        std::fs::write(src.join(format!("d/f{i}")), data).unwrap();
    }
    let key = new_key(dir.path());
    let file = shm.path().join("pmem.img");
    let pmem = format!("pmem:{}", file.display());
    let s = backup_json(
        &src,
        &[&format!("{pmem},size=8M")],
        &["--chunk", "64K", "--encrypt", "--key-file", &key],
    );
    let end = s["devices"][0]["catalog_end"].as_u64().unwrap();
    let verify = || with_key(&["verify"], &key, &[&pmem]);
    let (code, out, err) = verify();
    assert_eq!(code, 0, "the clean set verifies: {out}\n{err}");
    let original = std::fs::read(&file).unwrap();
    let cases: u64 = std::env::var("PBIO_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for case in 0..cases {
        let at = rng.range(0, end - 1) as usize;
        let flip = rng.range(1, 255) as u8;
        let mut image = original.clone();
        image[at] ^= flip;
        std::fs::write(&file, &image).unwrap();
        let (code, out, err) = verify();
        assert!(
            code != 0,
            "case {case}: byte {at} xor {flip:#04x} went undetected\n{out}\n{err}"
        );
    }
    std::fs::write(&file, &original).unwrap();
    let (code, out, err) = verify();
    assert_eq!(code, 0, "the restored image verifies again: {out}\n{err}");
}

/// `--compress zstd` on a pmem device: records are compressed in their
/// slot and copied into the mapping; a compressible tree takes less than
/// half its size there, and the round trip is byte-identical.
#[test]
fn compressed_pmem_round_trip_takes_less_room() {
    let test = "compressed_pmem_round_trip_takes_less_room";
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/tree");
    std::fs::create_dir_all(&src).unwrap();
    let mut text = Vec::new();
    for line in 0..200_000 {
        text.extend_from_slice(format!("{line}: ").as_bytes());
        text.extend_from_slice(CONTENT);
        text.push(b'\n');
    }
    std::fs::write(src.join("text.txt"), &text).unwrap();
    std::fs::write(src.join("zeros.img"), vec![0u8; 6 << 20]).unwrap();
    let file = shm.path().join("pmem.img");
    let pmem = format!("pmem:{}", file.display());
    let s = backup_json(
        &src,
        &[&format!("{pmem},size=64M")],
        &["--compress", "zstd:1"],
    );
    let d = &s["devices"][0];
    let (payload, media) = (
        d["payload_bytes"].as_u64().unwrap(),
        d["media_bytes"].as_u64().unwrap(),
    );
    assert!(payload > 10 << 20, "{d}");
    assert!(
        media * 2 < payload,
        "compressed {payload} into {media}: {d}"
    );
    assert_eq!(d["payload_bytes_in_place"], 0, "{d}");
    restore_and_compare(&src, &dir.path().join("out"), &[&pmem]);
    let (code, out, err) = run(&["verify".to_string(), "--dev".into(), pmem.clone()]);
    assert_eq!(code, 0, "verify failed: {out}\n{err}");
}

//! `backup --encrypt --key-file FILE` (issue 22) on real devices: loop
//! devices with direct I/O, an emulated tape (vtape:) and an NBD export.
//! Round trips byte-identical (with and without --compress); the raw
//! devices hold neither a distinctive file name nor a distinctive content
//! string (while an unencrypted backup of the same tree does); no key or
//! a wrong key: exit 2 and nothing written; any single flipped byte of a
//! device's used area is detected by verify.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;
#[path = "common/netns.rs"]
mod netns;

use std::io::Write;
use std::path::{Path, PathBuf};

use loopdev::{loop_devices_available, pbio, LoopDev};
use netns::{nbd_available, NbdSite, Server};
use serde_json::Value;

/// A file name and a content string found nowhere else.
const NAME: &[u8] = b"zanzibar-quokka-ledger";
const CONTENT: &[u8] = b"the aardvark paid 8813 obols for the lighthouse";

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

/// Text with the distinctive content in every line, a file with the
/// distinctive name (in a directory named after it too), zeros, random
/// bytes, small and empty files.
fn tree(root: &Path) -> PathBuf {
    let src = root.join("src/tree");
    let named = src.join(std::str::from_utf8(NAME).unwrap());
    std::fs::create_dir_all(&named).unwrap();
    let mut text = Vec::new();
    for line in 0..60_000 {
        text.extend_from_slice(format!("{line}: ").as_bytes());
        text.extend_from_slice(CONTENT);
        text.push(b'\n');
    }
    std::fs::File::create(named.join("notes.txt"))
        .unwrap()
        .write_all(&text)
        .unwrap();
    std::fs::write(src.join("zanzibar-quokka-ledger.txt"), CONTENT).unwrap();
    std::fs::write(src.join("zeros.img"), vec![0u8; 3 << 20]).unwrap();
    let mut rng = common::Rng::new(2022);
    let mut random = vec![0u8; 5 << 20];
    rng.fill(&mut random);
    std::fs::write(src.join("random.bin"), random).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    src
}

fn new_key(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    let (code, out, err) = pbio(&["key", "new", key.to_str().unwrap()]);
    assert_eq!(code, 0, "key new: {out}\n{err}");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    key.display().to_string()
}

fn backup(src: &Path, devs: &[String], extra: &[&str]) -> Value {
    let mut args = strings(&["backup", &src.display().to_string(), "--json", "--force"]);
    args.extend(strings(extra));
    let (code, out, err) = run(&with_devs(args, devs));
    assert_eq!(code, 0, "backup: {out}\n{err}");
    summary(&out)
}

fn restore_identical(src: &Path, devs: &[String], to: &Path, key: &str) {
    let args = strings(&[
        "restore",
        "--to",
        &to.display().to_string(),
        "--key-file",
        key,
    ]);
    let (code, out, err) = run(&with_devs(args, devs));
    assert_eq!(code, 0, "restore: {out}\n{err}");
    let diffs = common::compare_trees(src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
    // `--key` is the same option.
    let (code, out, err) = run(&with_devs(strings(&["verify", "--key", key]), devs));
    assert_eq!(code, 0, "verify: {out}\n{err}");
    let (code, out, err) = run(&with_devs(
        strings(&["list", "--json", "--key-file", key]),
        &devs[..1],
    ));
    assert_eq!(code, 0, "list: {out}\n{err}");
    assert!(
        out.contains("zanzibar-quokka-ledger/notes.txt"),
        "list with the key names the files: {out}"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where `needle` lies in any of `files` (whole raw images).
fn found_in(files: &[PathBuf], needle: &[u8]) -> Vec<String> {
    files
        .iter()
        .filter(|f| contains(&std::fs::read(f).unwrap(), needle))
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn encrypted_round_trip_on_loop_devices_a_vtape_and_nbd_hides_names_and_contents() {
    let test = "encrypted_round_trip_on_loop_devices_a_vtape_and_nbd_hides_names_and_contents";
    if !loop_devices_available(test) || !nbd_available(test, Server::NbdkitFile, false, false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
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
    let s = backup(&src, &devs, &["--encrypt", "--key-file", &key]);
    for (i, d) in s["devices"].as_array().unwrap().iter().enumerate() {
        assert!(d["payload_bytes"].as_u64().unwrap() > 0, "device {i}: {s}");
    }
    let raw = vec![
        a.backing.clone(),
        b.backing.clone(),
        tape.join("vtape.data"),
        nbd.backing().expect("a file export").to_path_buf(),
    ];
    assert_eq!(found_in(&raw, NAME), Vec::<String>::new(), "name in clear");
    assert_eq!(
        found_in(&raw, CONTENT),
        Vec::<String>::new(),
        "content in clear"
    );
    assert_eq!(
        found_in(&raw, b"notes.txt"),
        Vec::<String>::new(),
        "name in clear"
    );
    let devs_back = vec![
        a.arg(),
        b.arg(),
        format!("vtape:{}", tape.display()),
        nbd.url(),
    ];
    restore_identical(&src, &devs_back, &dir.path().join("out"), &key);

    // The same search finds both in an unencrypted backup of the tree (the
    // search itself works).
    let c = LoopDev::new(&dir.path().join("c.img"), 64 << 20);
    backup(&src, &[c.arg()], &[]);
    assert_eq!(found_in(std::slice::from_ref(&c.backing), NAME).len(), 1);
    assert_eq!(found_in(std::slice::from_ref(&c.backing), CONTENT).len(), 1);
}

#[test]
fn encrypted_and_compressed_round_trip_takes_less_room_and_hides_contents() {
    let test = "encrypted_and_compressed_round_trip_takes_less_room_and_hides_contents";
    if !loop_devices_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
    let a = LoopDev::new(&dir.path().join("a.img"), 64 << 20);
    let b = LoopDev::new(&dir.path().join("b.img"), 64 << 20);
    let devs = vec![a.arg(), b.arg()];
    let s = backup(
        &src,
        &devs,
        &["--encrypt", "--key-file", &key, "--compress", "zstd:1"],
    );
    let total = |field: &str| -> u64 {
        s["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[field].as_u64().unwrap())
            .sum()
    };
    // Text and zeros shrink before they are sealed; random bytes do not.
    let (payload, media) = (total("payload_bytes"), total("media_bytes"));
    assert!(
        media < payload * 3 / 4,
        "media {media} of payload {payload}: {s}"
    );
    let raw = vec![a.backing.clone(), b.backing.clone()];
    assert_eq!(found_in(&raw, NAME), Vec::<String>::new());
    assert_eq!(found_in(&raw, CONTENT), Vec::<String>::new());
    restore_identical(&src, &devs, &dir.path().join("out"), &key);
}

#[test]
fn without_the_key_or_with_a_wrong_one_exit_2_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
    let wrong = new_key(dir.path(), "other.key");
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=32M")).collect();
    backup(&src, &sized, &["--encrypt", "--key-file", &key]);
    // --encrypt without a key is a usage error, nothing written.
    let e = dir.path().join("e.img");
    let args = strings(&[
        "backup",
        &src.display().to_string(),
        "--encrypt",
        "--dev",
        &format!("{},size=32M", e.display()),
    ]);
    assert_eq!(run(&args).0, 2);
    let to = dir.path().join("out");
    for (extra, what) in [
        (vec![], "is encrypted"),
        (vec!["--key-file", wrong.as_str()], "wrong key for set"),
    ] {
        let mut args = strings(&["restore", "--to", &to.display().to_string()]);
        args.extend(strings(&extra));
        let (code, out, err) = run(&with_devs(args, &devs));
        assert_eq!(code, 2, "restore {extra:?}: {out}\n{err}");
        assert!(err.contains(what), "restore {extra:?}: {err}");
        assert!(err.contains(&devs[0]) || err.contains(&devs[1]), "{err}");
        assert!(
            !to.exists() || std::fs::read_dir(&to).unwrap().next().is_none(),
            "restore {extra:?} wrote into the destination"
        );
        for cmd in ["verify", "list"] {
            let mut args = strings(&[cmd]);
            args.extend(strings(&extra));
            // list reads one device.
            let given = if cmd == "list" { &devs[..1] } else { &devs[..] };
            let (code, out, err) = run(&with_devs(args, given));
            assert_eq!(code, 2, "{cmd} {extra:?}: {out}\n{err}");
            assert!(err.contains(what), "{cmd} {extra:?}: {err}");
        }
    }
    // And the right key reads it.
    restore_identical(&src, &devs, &to, &key);
}

/// Any single byte changed anywhere in the written part of an encrypted
/// set's device (label and its envelope, record headers with their sealed
/// file info and tags, sealed payloads, padding, the sealed catalog, End
/// record) makes `verify` fail: never "ok". File devices.
#[test]
fn any_single_flipped_byte_of_an_encrypted_set_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut rng = common::Rng::new(0xE1C2_2022);
    for i in 0..12 {
        let len = rng.range(1, 300_000) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        std::fs::write(src.join(format!("d/f{i}")), data).unwrap();
    }
    let key = new_key(dir.path(), "set.key");
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=8M")).collect();
    let s = backup(
        &src,
        &sized,
        &["--chunk", "64K", "--encrypt", "--key-file", &key],
    );
    let ends: Vec<u64> = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["catalog_end"].as_u64().unwrap())
        .collect();
    let verify = || run(&with_devs(strings(&["verify", "--key-file", &key]), &devs));
    let (code, _, err) = verify();
    assert_eq!(code, 0, "the clean set verifies: {err}");
    let originals: Vec<Vec<u8>> = devs.iter().map(|d| std::fs::read(d).unwrap()).collect();
    let cases: u64 = std::env::var("PBIO_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    for case in 0..cases {
        let device = rng.range(0, 1) as usize;
        let at = rng.range(0, ends[device] - 1) as usize;
        let flip = rng.range(1, 255) as u8;
        let mut image = originals[device].clone();
        image[at] ^= flip;
        std::fs::write(&devs[device], &image).unwrap();
        let (code, out, err) = verify();
        assert!(
            code != 0,
            "case {case}: byte {at} of device {device} xor {flip:#04x} went undetected\n{out}\n{err}"
        );
        std::fs::write(&devs[device], &originals[device]).unwrap();
    }
    let (code, _, err) = verify();
    assert_eq!(code, 0, "restored images verify again: {err}");
}

/// `restore --scan` opens each record alone with the key (and refuses
/// without it); `pbio key change` re-wraps the data key on every disk of
/// the set (the old key then fails, the new one reads it, the data
/// untouched), refuses a wrong old key, and refuses a tape.
#[test]
fn scan_opens_records_alone_and_key_change_rewraps_the_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let old = new_key(dir.path(), "old.key");
    let new = new_key(dir.path(), "new.key");
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=32M")).collect();
    backup(
        &src,
        &sized,
        &["--encrypt", "--key-file", &old, "--compress", "lz4"],
    );

    let scanned = dir.path().join("scanned");
    let scan = |extra: &[&str]| {
        let mut args = strings(&["restore", "--scan", "--to", &scanned.display().to_string()]);
        args.extend(strings(extra));
        run(&with_devs(args, &devs))
    };
    let (code, out, err) = scan(&[]);
    assert_eq!(code, 2, "scan without the key: {out}\n{err}");
    assert!(err.contains("is encrypted"), "{err}");
    let (code, out, err) = scan(&["--key-file", &old]);
    assert_eq!(code, 0, "scan with the key: {out}\n{err}");
    for name in [
        "zanzibar-quokka-ledger/notes.txt",
        "random.bin",
        "zeros.img",
    ] {
        assert_eq!(
            std::fs::read(scanned.join("tree").join(name)).unwrap(),
            std::fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }

    let data_before: Vec<Vec<u8>> = devs
        .iter()
        .map(|d| std::fs::read(d).unwrap()[4096..].to_vec())
        .collect();
    let change = |from: &str, to: &str, devs: &[String]| {
        let args = strings(&["key", "change", "--key-file", from, "--new-key-file", to]);
        run(&with_devs(args, devs))
    };
    // A wrong old key changes nothing.
    let (code, out, err) = change(&new, &new, &devs);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("wrong key for set"), "{err}");
    let (code, out, err) = change(&old, &new, &devs);
    assert_eq!(code, 0, "key change: {out}\n{err}");
    for (d, before) in devs.iter().zip(&data_before) {
        assert_eq!(
            &std::fs::read(d).unwrap()[4096..],
            &before[..],
            "{d}: data touched"
        );
    }
    let to = dir.path().join("out");
    let args = strings(&[
        "restore",
        "--to",
        &to.display().to_string(),
        "--key-file",
        &old,
    ]);
    let (code, out, err) = run(&with_devs(args, &devs));
    assert_eq!(code, 2, "the old key after a change: {out}\n{err}");
    assert!(err.contains("wrong key for set"), "{err}");
    restore_identical(&src, &devs, &to, &new);

    // A tape's label cannot be rewritten: refused, named.
    let tape = dir.path().join("tape");
    std::fs::create_dir(&tape).unwrap();
    backup(
        &src,
        &[format!("vtape:{},size=64M", tape.display())],
        &["--encrypt", "--key-file", &old],
    );
    let (code, out, err) = change(&old, &new, &[format!("vtape:{}", tape.display())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("is a tape"), "{err}");
}

/// An incremental set `--since` an encrypted one (the same key file; each
/// set its own data key): the base's catalog opens with the key, only the
/// change is stored, and the chain restores identical with the key (exit
/// 2 without it).
#[test]
fn an_encrypted_chain_shares_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
    let dev = |name: &str| dir.path().join(name).display().to_string();
    let full = vec![dev("full0.img"), dev("full1.img")];
    let sized =
        |devs: &[String]| -> Vec<String> { devs.iter().map(|d| format!("{d},size=32M")).collect() };
    backup(&src, &sized(&full), &["--encrypt", "--key-file", &key]);
    let changed = src.join("zanzibar-quokka-ledger/changed.txt");
    std::fs::write(&changed, b"written after the full set\n").unwrap();
    let inc = vec![dev("inc0.img"), dev("inc1.img")];
    // Without the key, the base's catalog cannot be read.
    let mut args = strings(&[
        "backup",
        &src.display().to_string(),
        "--force",
        "--since",
        &full[0],
    ]);
    args.extend(strings(&["--json"]));
    assert_eq!(run(&with_devs(args, &sized(&inc))).0, 2);
    let s = backup(
        &src,
        &sized(&inc),
        &["--since", &full[0], "--encrypt", "--key-file", &key],
    );
    assert_eq!(
        s["payload_bytes"].as_u64().unwrap(),
        27,
        "only the change: {s}"
    );
    let chain: Vec<String> = full.iter().chain(&inc).cloned().collect();
    let to = dir.path().join("out");
    let args = strings(&["restore", "--to", &to.display().to_string()]);
    assert_eq!(run(&with_devs(args, &chain)).0, 2);
    let args = strings(&[
        "restore",
        "--to",
        &to.display().to_string(),
        "--key-file",
        &key,
    ]);
    let (code, out, err) = run(&with_devs(args, &chain));
    assert_eq!(code, 0, "restore of the chain: {out}\n{err}");
    let diffs = common::compare_trees(&src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
}

/// `--passphrase-file`: argon2id with its salt and parameters in the
/// labels; the right passphrase reads the set, another one (or a key file)
/// is a wrong key, exit 2, nothing written.
#[test]
fn a_passphrase_wraps_the_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let pass = dir.path().join("pass.txt");
    std::fs::write(&pass, b"a long and memorable passphrase\n").unwrap();
    let other = dir.path().join("other.txt");
    std::fs::write(&other, b"a long and memorable passphrasf\n").unwrap();
    let key = new_key(dir.path(), "set.key");
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=32M")).collect();
    let pass = pass.display().to_string();
    backup(&src, &sized, &["--encrypt", "--passphrase-file", &pass]);
    let label = std::fs::read(&devs[0]).unwrap();
    // kdf 2 (argon2id), 64 MiB, 3 passes, 1 lane, a salt.
    assert_eq!(
        label[148..164],
        [2, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 1, 0, 0, 0]
    );
    assert_ne!(label[164..180], [0; 16]);
    let raw = vec![PathBuf::from(&devs[0]), PathBuf::from(&devs[1])];
    assert_eq!(found_in(&raw, CONTENT), Vec::<String>::new());
    let to = dir.path().join("out");
    for wrong in [
        vec!["--passphrase-file".to_string(), other.display().to_string()],
        vec!["--key-file".to_string(), key.clone()],
    ] {
        let mut args = strings(&["restore", "--to", &to.display().to_string()]);
        args.extend(wrong.iter().cloned());
        let (code, out, err) = run(&with_devs(args, &devs));
        assert_eq!(code, 2, "{wrong:?}: {out}\n{err}");
        assert!(err.contains("wrong key for set"), "{err}");
        assert!(!to.exists() || std::fs::read_dir(&to).unwrap().next().is_none());
    }
    let args = strings(&[
        "restore",
        "--to",
        &to.display().to_string(),
        "--passphrase-file",
        &pass,
    ]);
    let (code, out, err) = run(&with_devs(args, &devs));
    assert_eq!(code, 0, "restore: {out}\n{err}");
    let diffs = common::compare_trees(&src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
    let (code, out, err) = run(&with_devs(
        strings(&["verify", "--passphrase-file", &pass]),
        &devs,
    ));
    assert_eq!(code, 0, "verify: {out}\n{err}");
}

/// `pbio key change` given some of the devices (or stopped halfway) names
/// the devices left under the old key; running it again over every device
/// finishes it (the devices done already are skipped, not refused as a
/// wrong key), and the set then opens with the new key alone. A set
/// wrapped by a passphrase is named as such.
#[test]
fn a_key_change_over_some_devices_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let old = new_key(dir.path(), "old.key");
    let new = new_key(dir.path(), "new.key");
    let devs: Vec<String> = (0..3)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=32M")).collect();
    backup(&src, &sized, &["--encrypt", "--key-file", &old]);
    let change = |devs: &[String]| {
        let args = strings(&["key", "change", "--key-file", &old, "--new-key-file", &new]);
        run(&with_devs(args, devs))
    };
    let (code, out, err) = change(&devs[..1]);
    assert_eq!(code, 0, "key change of device 0: {out}\n{err}");
    assert!(
        err.contains("device index 1, 2 of set") && err.contains("not given"),
        "the devices left under the old key are named: {err}"
    );
    let to = dir.path().join("out");
    for key in [&old, &new] {
        let args = strings(&["verify", "--key-file", key]);
        let (code, out, err) = run(&with_devs(args, &devs));
        assert_eq!(code, 2, "a half-changed set with one key: {out}\n{err}");
        assert!(err.contains("wrong key for set"), "{err}");
    }
    let (code, out, err) = change(&devs);
    assert_eq!(
        code, 0,
        "key change run again over every device: {out}\n{err}"
    );
    assert!(
        out.contains("already opens with") && out.matches("now opens with").count() == 2,
        "{out}"
    );
    assert!(!err.contains("not given"), "{err}");
    restore_identical(&src, &devs, &to, &new);

    let pass = dir.path().join("pass.txt");
    std::fs::write(&pass, b"a long and memorable passphrase\n").unwrap();
    let pdev = dir.path().join("p.img").display().to_string();
    backup(
        &src,
        &[format!("{pdev},size=32M")],
        &[
            "--encrypt",
            "--passphrase-file",
            &pass.display().to_string(),
        ],
    );
    let (code, out, err) = change(&[pdev]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("encrypted with a passphrase"), "{err}");
}

/// A passphrase set: `echo`'s trailing newline is not part of the
/// passphrase (the file without it opens the set); `list`, `restore` and
/// `diff` take `--passphrase-file` and do not claim the set's MACs went
/// unchecked (they are keyed by the data key the passphrase opened);
/// `diff` takes `--key-file` like the other readers.
#[test]
fn readers_of_a_passphrase_set_check_its_macs_and_diff_takes_the_key_options() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let echoed = dir.path().join("echoed.txt");
    std::fs::write(&echoed, b"correct horse battery staple\n").unwrap();
    let printed = dir.path().join("printed.txt");
    std::fs::write(&printed, b"correct horse battery staple").unwrap();
    let dev = dir.path().join("p.img").display().to_string();
    let devs = vec![dev.clone()];
    backup(
        &src,
        &[format!("{dev},size=32M")],
        &[
            "--encrypt",
            "--passphrase-file",
            &echoed.display().to_string(),
        ],
    );
    let printed = printed.display().to_string();
    let to = dir.path().join("out");
    for args in [
        strings(&["list", "--passphrase-file", &printed]),
        strings(&["verify", "--passphrase-file", &printed]),
        strings(&[
            "restore",
            "--passphrase-file",
            &printed,
            "--to",
            &to.display().to_string(),
        ]),
    ] {
        let (code, out, err) = run(&with_devs(args.clone(), &devs));
        assert_eq!(code, 0, "{args:?}: {out}\n{err}");
        assert!(!err.contains("give --key"), "{args:?}: {err}");
    }
    let diffs = common::compare_trees(&src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
    let parent = src.parent().unwrap().display().to_string();
    let diff = |key: &[&str], devs: &[String]| {
        let mut args = strings(&["diff", "--to", &parent]);
        args.extend(strings(key));
        run(&with_devs(args, devs))
    };
    let (code, out, err) = diff(&["--passphrase-file", &printed], &devs);
    assert_eq!(code, 0, "diff with the passphrase: {out}\n{err}");
    assert!(out.contains("same"), "{out}");
    let (code, out, err) = diff(&[], &devs);
    assert_eq!(code, 2, "diff without the passphrase: {out}\n{err}");
    assert!(err.contains("is encrypted"), "{err}");

    let key = new_key(dir.path(), "set.key");
    let kdev = dir.path().join("k.img").display().to_string();
    backup(
        &src,
        &[format!("{kdev},size=32M")],
        &["--encrypt", "--key-file", &key],
    );
    for option in ["--key-file", "--key"] {
        let (code, out, err) = diff(&[option, &key], std::slice::from_ref(&kdev));
        assert_eq!(code, 0, "diff {option}: {out}\n{err}");
        assert!(!err.contains("give --key"), "{err}");
    }
    // `list --export` writes the catalog in the clear: mode 0600 (an
    // existing file too), as the key file.
    use std::os::unix::fs::PermissionsExt;
    let exported = dir.path().join("catalog.export");
    std::fs::write(&exported, b"an older export").unwrap();
    std::fs::set_permissions(&exported, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (dev, key) in [
        (&kdev, vec!["--key-file", &key]),
        (&dev, vec!["--passphrase-file", &printed]),
    ] {
        let mut args = strings(&["list", "--export", &exported.display().to_string()]);
        args.extend(strings(&key));
        let (code, out, err) = run(&with_devs(args, std::slice::from_ref(dev)));
        assert_eq!(code, 0, "list --export: {out}\n{err}");
        let mode = std::fs::metadata(&exported).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: mode {mode:o}", exported.display());
        assert!(contains(&std::fs::read(&exported).unwrap(), NAME));
        std::fs::set_permissions(&exported, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// An increment over an encrypted set without `--encrypt` would hold the
/// names of the whole chain (its catalog names the unchanged files too)
/// and the changed contents in the clear: refused, exit 2, nothing written.
#[test]
fn an_increment_over_an_encrypted_set_must_be_encrypted_too() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
    let full = dir.path().join("full.img").display().to_string();
    backup(
        &src,
        &[format!("{full},size=32M")],
        &["--encrypt", "--key-file", &key],
    );
    std::fs::write(src.join("after.txt"), CONTENT).unwrap();
    let inc = dir.path().join("inc.img");
    std::fs::write(&inc, vec![0u8; 32 << 20]).unwrap();
    let inc_dev = vec![inc.display().to_string()];
    let args = strings(&[
        "backup",
        &src.display().to_string(),
        "--force",
        "--since",
        &full,
        "--key-file",
        &key,
    ]);
    let (code, out, err) = run(&with_devs(args, &inc_dev));
    assert_eq!(
        code, 2,
        "a plain increment of an encrypted set: {out}\n{err}"
    );
    assert!(err.contains("give --encrypt too"), "{err}");
    assert!(
        std::fs::read(&inc).unwrap().iter().all(|b| *b == 0),
        "nothing written to {}",
        inc.display()
    );
    // `plan --since` opens the base with the key options too.
    let plan = |extra: &[&str]| {
        let mut args = strings(&["plan", &src.display().to_string(), "--since", &full]);
        args.extend(strings(extra));
        run(&with_devs(args, &inc_dev))
    };
    let (code, out, err) = plan(&[]);
    assert_eq!(
        code, 2,
        "plan --since an encrypted set without its key: {out}\n{err}"
    );
    assert!(err.contains("is encrypted"), "{err}");
    let (code, out, err) = plan(&["--key-file", &key]);
    assert_eq!(
        code, 0,
        "plan --since an encrypted set with its key: {out}\n{err}"
    );
    backup(
        &src,
        &inc_dev,
        &["--since", &full, "--encrypt", "--key-file", &key],
    );
    let raw = vec![inc.clone()];
    assert_eq!(found_in(&raw, NAME), Vec::<String>::new());
    assert_eq!(found_in(&raw, CONTENT), Vec::<String>::new());
}

/// A tape holding an encrypted set: `backup --append` without its key
/// writes after it (the set is closed, only its catalog is sealed; before,
/// it was taken for an incomplete set and `--force` offered to write over
/// it), `list` without the key lists every set of the tape, the encrypted
/// one as encrypted and without its names, and each set restores.
#[test]
fn an_encrypted_set_on_a_tape_is_appended_after_and_listed_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
    let tape_dir = dir.path().join("tape");
    std::fs::create_dir(&tape_dir).unwrap();
    let tape = format!("vtape:{}", tape_dir.display());
    let sized = vec![format!("{tape},size=64M")];
    let encrypted = backup(&src, &sized, &["--encrypt", "--key-file", &key]);
    let plain = backup(&src, &sized, &["--append"]);
    let (encrypted, plain) = (
        encrypted["set_id"].as_str().unwrap().to_string(),
        plain["set_id"].as_str().unwrap().to_string(),
    );
    let tapes = vec![tape.clone()];
    let (code, out, err) = run(&with_devs(strings(&["list", "--json"]), &tapes));
    assert_eq!(code, 0, "list of the tape without the key: {out}\n{err}");
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    let sets = listed["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{out}");
    assert_eq!(sets[0]["set_id"], encrypted.as_str());
    assert!(
        sets[0]["state"]
            .as_str()
            .unwrap()
            .starts_with("complete, encrypted"),
        "{out}"
    );
    assert!(sets[0]["files"].is_null(), "{out}");
    assert_eq!(sets[1]["set_id"], plain.as_str());
    assert_eq!(sets[1]["state"], "complete");
    assert!(!out.contains("zanzibar"), "{out}");
    for (set, extra) in [(&encrypted, vec!["--key-file", &key]), (&plain, vec![])] {
        let to = dir.path().join(format!("out-{set}"));
        let mut args = strings(&["restore", "--set", set, "--to", &to.display().to_string()]);
        args.extend(strings(&extra));
        let (code, out, err) = run(&with_devs(args, &tapes));
        assert_eq!(code, 0, "restore of set {set}: {out}\n{err}");
        let diffs = common::compare_trees(&src, &to.join("tree"));
        assert!(
            diffs.is_empty(),
            "set {set}: restored tree differs: {diffs:#?}"
        );
    }
}

/// `backup --resume` and `backup --changer` check `--encrypt`'s key
/// options and load the passphrase like a plain backup (both panicked,
/// exit 101: `--encrypt` without a key, or with `--passphrase-file`).
#[test]
fn a_resumed_or_library_backup_checks_and_loads_the_key_options() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let pass = dir.path().join("pass.txt");
    std::fs::write(&pass, b"a long and memorable passphrase\n").unwrap();
    let pass = pass.display().to_string();
    let dev = dir.path().join("d.img").display().to_string();
    backup(
        &src,
        &[format!("{dev},size=32M")],
        &["--encrypt", "--passphrase-file", &pass],
    );
    let source = src.display().to_string();
    let resume = |extra: &[&str]| {
        let mut args = strings(&["backup", &source, "--resume", "--dev", &dev]);
        args.extend(strings(extra));
        run(&args)
    };
    let (code, out, err) = resume(&["--encrypt"]);
    assert_eq!(code, 2, "--resume --encrypt without a key: {out}\n{err}");
    assert!(err.contains("--encrypt needs --key-file"), "{err}");
    let (code, out, err) = resume(&["--encrypt", "--passphrase-file", &pass]);
    assert_eq!(code, 2, "--resume of an encrypted set: {out}\n{err}");
    assert!(
        err.contains("--resume cannot finish an encrypted set"),
        "{err}"
    );

    let existing = format!("vlib:{}", dir.path().join("lib").display());
    let library = format!("{existing},slots=4,drives=1,size=64M");
    let to_library = |extra: &[&str]| {
        let mut args = strings(&["backup", &source, "--changer", &library]);
        args.extend(strings(extra));
        run(&args)
    };
    let (code, out, err) = to_library(&["--encrypt"]);
    assert_eq!(code, 2, "--changer --encrypt without a key: {out}\n{err}");
    assert!(err.contains("--encrypt needs --key-file"), "{err}");
    let (code, out, err) = to_library(&["--encrypt", "--passphrase-file", &pass]);
    assert_eq!(
        code, 0,
        "--changer --encrypt --passphrase-file: {out}\n{err}"
    );
    let to = dir.path().join("out");
    let args = strings(&[
        "restore",
        "--changer",
        &existing,
        "--passphrase-file",
        &pass,
        "--to",
        &to.display().to_string(),
    ]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "restore from the library: {out}\n{err}");
    let diffs = common::compare_trees(&src, &to.join("tree"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
    let (code, out, err) = run(&strings(&["list", "--changer", &existing]));
    assert_eq!(
        code, 2,
        "list from the library without the key: {out}\n{err}"
    );
    assert!(err.contains("is encrypted"), "{err}");
}

/// The data records of the file device `path`: (position, header), in
/// device order, up to the catalog.
fn data_records(path: &Path) -> Vec<(u64, pbio::format::RecordHeader)> {
    use pbio::format::{RecordHeader, RecordKind, HEADER_BYTES};
    use std::os::unix::fs::FileExt;
    let dev = std::fs::File::open(path).unwrap();
    let mut position = HEADER_BYTES as u64;
    let mut block = vec![0u8; HEADER_BYTES];
    let mut found = Vec::new();
    loop {
        dev.read_exact_at(&mut block, position).unwrap();
        let header = RecordHeader::decode(&block).expect("a record header");
        if header.kind != RecordKind::Data {
            return found;
        }
        let next = position + header.media_bytes();
        found.push((position, header));
        position = next;
    }
}

/// Sealed records moved on the media: one copied over another record of
/// the same file (a replay) fails the file's digest; one copied to another
/// device fails the device check (its record key and associated data bind
/// the device index); two records of a file swapped restore the same
/// bytes (each record's file offset is in its associated data, so it is
/// written where it belongs) and verify passes.
#[test]
fn sealed_records_moved_on_the_media_are_caught_or_land_where_they_belong() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = new_key(dir.path(), "set.key");
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let sized: Vec<String> = devs.iter().map(|d| format!("{d},size=32M")).collect();
    backup(&src, &sized, &["--encrypt", "--key-file", &key]);
    let records = data_records(Path::new(&devs[0]));
    // Two whole records of one file, of the same size on the media.
    let (a, b) = records
        .iter()
        .enumerate()
        .find_map(|(i, (_, x))| {
            records[i + 1..]
                .iter()
                .find(|(_, y)| y.file_id == x.file_id && y.media_bytes() == x.media_bytes())
                .map(|y| (records[i], *y))
        })
        .expect("two records of one file on device 0");
    let bytes_at = |path: &str, (at, h): (u64, pbio::format::RecordHeader)| {
        let mut buf = vec![0u8; h.media_bytes() as usize];
        std::fs::File::open(path)
            .unwrap()
            .read_exact_at(&mut buf, at)
            .unwrap();
        buf
    };
    let put = |path: &str, at: u64, bytes: &[u8]| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .write_all_at(bytes, at)
            .unwrap();
    };
    let (a_bytes, b_bytes) = (bytes_at(&devs[0], a), bytes_at(&devs[0], b));
    let verify = || run(&with_devs(strings(&["verify", "--key-file", &key]), &devs));

    put(&devs[0], b.0, &a_bytes);
    let (code, out, err) = verify();
    assert_eq!(code, 3, "a replayed record: {out}\n{err}");
    assert!(err.contains("content digest mismatch"), "{err}");

    put(&devs[0], a.0, &b_bytes);
    let (code, out, err) = verify();
    assert_eq!(code, 0, "two records swapped: {out}\n{err}");
    let to = dir.path().join("out");
    restore_identical(&src, &devs, &to, &key);
    put(&devs[0], a.0, &a_bytes);
    put(&devs[0], b.0, &b_bytes);

    // Device 1's first record is a whole one too (1 MiB of notes.txt or
    // random.bin): device 0's record takes exactly its room.
    let (at, h) = data_records(Path::new(&devs[1]))[0];
    assert_eq!(h.media_bytes(), a.1.media_bytes());
    put(&devs[1], at, &a_bytes);
    let (code, out, err) = verify();
    assert_eq!(code, 3, "a record of device 0 on device 1: {out}\n{err}");
    assert!(err.contains("record says it is on device 0"), "{err}");
}

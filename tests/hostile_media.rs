//! Restore against hostile media (issue 17): sets crafted through pbio's
//! own format module (`common/craft.rs`) on real loop devices, each
//! asserting the safe outcome: nothing written outside or beyond what the
//! catalog assigns, a clear error naming the device(s), the right exit
//! code. Set membership, records against the catalog, the catalog write
//! that fails, the content proof (BLAKE3 over the payloads, not their
//! CRC32C) and the keyed MACs of `--key`.

mod common;
#[path = "common/craft.rs"]
mod craft;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use craft::{Medium, Record};
use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

const DEVICE_BYTES: u64 = 48 << 20;
const BIG_BYTES: usize = 6 << 20;

struct Bed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The tree backed up: `root/src/tree`.
    src: PathBuf,
    devs: Vec<LoopDev>,
}

/// `devices` loop devices of `DEVICE_BYTES`, a small tree (a 6 MiB file,
/// a 1.5 MiB file, a small one, a directory) and a canary directory
/// outside every restore destination.
fn bed(test: &str, devices: usize) -> Option<Bed> {
    if !loop_devices_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = common::Rng::new(17);
    for (name, bytes) in [
        ("big.bin", BIG_BYTES),
        ("sub/mid.bin", 3 << 19),
        ("small.txt", 3000),
    ] {
        let mut data = vec![0u8; bytes];
        rng.fill(&mut data);
        fs::write(src.join(name), data).unwrap();
    }
    fs::create_dir_all(root.join("canary")).unwrap();
    fs::write(root.join("canary/file"), b"canary\n").unwrap();
    let devs = (0..devices)
        .map(|i| LoopDev::new(&root.join(format!("loop{i}.img")), DEVICE_BYTES))
        .collect();
    Some(Bed {
        _dir: dir,
        root,
        src,
        devs,
    })
}

impl Bed {
    fn dev(&self, i: usize) -> String {
        self.devs[i].arg()
    }

    /// The canary outside every destination is as it was.
    fn assert_canary(&self) {
        let path = self.root.join("canary/file");
        assert_eq!(fs::read(&path).unwrap(), b"canary\n");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        let names: Vec<_> = fs::read_dir(self.root.join("canary"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"], "nothing new beside the canary");
    }
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

fn backup(src: &Path, devs: &[String], extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&with_devs(args, devs))
}

fn restore(devs: &[String], to: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&with_devs(args, devs))
}

fn verify(devs: &[String], extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["verify".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&with_devs(args, devs))
}

/// Nothing was restored: the destination was not even created.
fn assert_untouched(to: &Path) {
    assert!(
        !to.exists() || fs::read_dir(to).unwrap().next().is_none(),
        "{} was written to",
        to.display()
    );
}

fn assert_same_tree(src: &Path, restored: &Path) {
    let diffs = common::compare_trees(src, restored);
    assert!(diffs.is_empty(), "restored tree differs: {diffs:#?}");
}

/// Defect 2: a device whose label claims the set's id with a device index
/// outside the set (index 3 of a 2-device set, its label saying 4
/// devices), its records changed, given with the real devices or alone.
#[test]
fn a_device_index_outside_the_set_is_refused() {
    let Some(bed) = bed("a_device_index_outside_the_set_is_refused", 3) else {
        return;
    };
    let devs = [bed.dev(0), bed.dev(1)];
    let (code, out, err) = backup(&bed.src, &devs, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut m = Medium::read(&bed.devs[1].path);
    m.label.device_index = 3;
    m.label.device_count = 4;
    for r in &mut m.records {
        r.header.device_index = 3;
        for b in &mut r.payload {
            *b ^= 0xff;
        }
        r.reseal();
    }
    let hostile = bed.dev(2);
    m.write(&bed.devs[2].path);

    for (i, given) in [
        vec![bed.dev(0), bed.dev(1), hostile.clone()],
        vec![hostile.clone(), bed.dev(0), bed.dev(1)],
        vec![bed.dev(0), hostile.clone()],
    ]
    .iter()
    .enumerate()
    {
        let to = bed.root.join(format!("out{i}"));
        let (code, out, err) = restore(given, &to, &[]);
        assert_eq!(code, 3, "{given:?}: {out}\n{err}");
        assert!(
            err.contains(&hostile) && err.contains(&bed.dev(0)),
            "names both devices: {err}"
        );
        assert!(err.contains("number of devices"), "{err}");
        assert_untouched(&to);
        let (code, _, err) = verify(given, &[]);
        assert_eq!(code, 3, "verify {given:?}: {err}");
    }
    // Alone, its label disagrees with the catalog it carries.
    let to = bed.root.join("out-alone");
    let (code, out, err) = restore(std::slice::from_ref(&hostile), &to, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&hostile) && err.contains("lists 2 devices"),
        "{err}"
    );
    assert_untouched(&to);
    // The real devices alone still restore everything.
    let to = bed.root.join("out-real");
    let (code, out, err) = restore(&devs, &to, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same_tree(&bed.src, &to.join("tree"));
    bed.assert_canary();
}

/// Defect 3: records whose range lies beyond the file's size in the
/// catalog, outside the segments the catalog assigns to the device, or
/// that name a file without data, are reported and not written.
#[test]
fn records_outside_the_catalog_are_not_written() {
    let Some(bed) = bed("records_outside_the_catalog_are_not_written", 2) else {
        return;
    };
    let devs = [bed.dev(0), bed.dev(1)];
    let (code, out, err) = backup(&bed.src, &devs, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut m = Medium::read(&bed.devs[0].path);
    let big = m.file_id(b"tree/big.bin");
    let big_bytes = m.catalog.files[big as usize].size_bytes;
    let like = m.records[m.records_of(big)[0]].clone();
    // (a) 1 TiB into the file, its header claiming a 1 TiB file.
    let mut far = Record::data_like(&like, big, (1 << 40) - 4096, vec![0xEE; 4096]);
    far.header.file_size = 1 << 40;
    // (b) inside the file, with its true size, but on a range the
    // catalog gives device 1.
    let on_other = m
        .catalog
        .segments
        .iter()
        .find(|s| s.file_id == big && s.device == 1 && s.length >= 4096)
        .map(|s| s.offset)
        .expect("big.bin has a segment on device 1");
    let elsewhere = Record::data_like(&like, big, on_other, vec![0xDD; 4096]);
    // (c) a record of the directory.
    let dir_id = m.file_id(b"tree/sub");
    let mut of_dir = Record::data_like(&like, dir_id, 0, vec![0xCC; 4096]);
    of_dir.header.file_size = 4096;
    m.records.extend([far, elsewhere, of_dir]);
    m.write(&bed.devs[0].path);

    let to = bed.root.join("out");
    let (code, out, err) = restore(&devs, &to, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains(&bed.dev(0)), "names the device: {err}");
    assert!(
        err.contains("says the file has 1099511627776 bytes"),
        "{err}"
    );
    assert!(err.contains("not written"), "{err}");
    assert!(err.contains("has no data"), "{err}");
    assert!(err.contains("lies outside the segments"), "{err}");
    // Nothing beyond or outside: the tree is exactly the source's.
    let restored = to.join("tree/big.bin");
    assert_eq!(fs::metadata(&restored).unwrap().len(), big_bytes);
    assert!(fs::metadata(&restored).unwrap().blocks() * 512 <= big_bytes + (1 << 20));
    assert_same_tree(&bed.src, &to.join("tree"));
    let (code, _, err) = verify(&devs, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not written"), "{err}");
    bed.assert_canary();
}

/// Defect 4: two devices with the set's id but different catalogs are
/// refused whatever their order, naming both; devices of two sets that
/// are not one chain are named and refused.
#[test]
fn devices_with_different_catalogs_are_refused() {
    let Some(bed) = bed("devices_with_different_catalogs_are_refused", 3) else {
        return;
    };
    let devs = [bed.dev(0), bed.dev(1)];
    let (code, out, err) = backup(&bed.src, &devs, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut m = Medium::read(&bed.devs[1].path);
    let small = m.file_id(b"tree/small.txt") as usize;
    m.catalog.files[small].stat.mode |= 0o4755; // setuid, world-executable
    m.write(&bed.devs[1].path);
    for (i, given) in [devs.to_vec(), vec![bed.dev(1), bed.dev(0)]]
        .iter()
        .enumerate()
    {
        let to = bed.root.join(format!("out{i}"));
        let (code, out, err) = restore(given, &to, &[]);
        assert_eq!(code, 3, "{given:?}: {out}\n{err}");
        assert!(
            err.contains(&bed.dev(0)) && err.contains(&bed.dev(1)),
            "names both: {err}"
        );
        assert!(err.contains("different catalogs"), "{err}");
        assert_untouched(&to);
    }
    // A device whose catalog does not hash to its label's digest is not used.
    let mut m = Medium::read(&bed.devs[0].path);
    let digest = m.label.catalog_digest;
    m.catalog.files[small].stat.mode |= 0o4755;
    m.write(&bed.devs[0].path);
    m.label.catalog_digest = digest;
    craft::write_label(&bed.devs[0].path, &m.label);
    let to = bed.root.join("out-digest");
    let (code, out, err) = restore(&[bed.dev(0)], &to, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("does not hash to the catalog digest"), "{err}");
    assert_untouched(&to);

    // Another set given with this one: both named, refused.
    let (code, out, err) = backup(&bed.src, &[bed.dev(2)], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let to = bed.root.join("out-two-sets");
    let (code, out, err) = restore(&[bed.dev(1), bed.dev(2)], &to, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&bed.dev(1)) && err.contains(&bed.dev(2)),
        "{err}"
    );
    assert!(err.contains("not one chain"), "{err}");
    assert_untouched(&to);
    bed.assert_canary();
}

/// Defect 6: a record substituted by one with the same CRC32C (4 bytes
/// patched so that the CRC, which is linear, does not change) passes every
/// record check but not the file's BLAKE3 digest: verify and restore fail
/// naming the file.
#[test]
fn a_substituted_record_with_a_matching_crc_fails_the_digest() {
    let Some(bed) = bed(
        "a_substituted_record_with_a_matching_crc_fails_the_digest",
        1,
    ) else {
        return;
    };
    let devs = [bed.dev(0)];
    let (code, out, err) = backup(&bed.src, &devs, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let m = Medium::read(&bed.devs[0].path);
    let big = m.file_id(b"tree/big.bin");
    let mut r = m.records[m.records_of(big)[1]].clone();
    let crc = r.header.payload_crc;
    r.payload = craft::forge_crc32c(&r.payload, 1000, b"EVIL BYTES, SAME CRC");
    assert_eq!(pbio::format::crc32c(&r.payload), crc);
    craft::write_record(&bed.devs[0].path, &r);

    let (code, out, err) = verify(&devs, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("tree/big.bin") && err.contains("content digest mismatch"),
        "{err}"
    );
    assert!(!err.contains("checksum mismatch"), "the CRC matched: {err}");
    let to = bed.root.join("out");
    let (code, out, err) = restore(&devs, &to, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("tree/big.bin") && err.contains("content digest mismatch"),
        "{err}"
    );
    bed.assert_canary();
}

/// Defect 9: a device whose catalog write fails (EIO, armed at the
/// catalog's region, past the data) leaves the set incomplete: exit 3,
/// the device named in the summary and the JSON, never "complete". What
/// the devices hold still restores from the other device's catalog.
#[test]
fn a_catalog_write_that_fails_makes_the_set_incomplete() {
    let test = "a_catalog_write_that_fails_makes_the_set_incomplete";
    if !faults::faults_available(test) {
        return;
    }
    let Some(bed) = bed(test, 1) else {
        return;
    };
    let failing = faults::FailingDevice::new(&bed.root, DEVICE_BYTES, None);
    let devs = [bed.dev(0), failing.arg()];
    // A first run says where the failing device's data ends (the plan
    // is the same for the same tree and devices).
    let (code, out, err) = backup(&bed.src, &devs, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let data_end = craft::read_label(&failing.path).data_end;
    assert!(data_end > 4096);
    failing.fail_from_offset(data_end);
    let (code, out, err) = backup(&bed.src, &devs, &["--force", "--json"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(failing.stats().failed_writes > 0);
    let summary = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {out}"));
    assert_eq!(summary["exit_code"], 3, "{summary}");
    assert_eq!(summary["complete"], false, "{summary}");
    assert_eq!(summary["devices"][1]["state"], "incomplete", "{summary}");
    assert_eq!(summary["devices"][0]["state"], "complete", "{summary}");
    assert_eq!(
        summary["devices_without_catalog"],
        serde_json::json!([failing.arg()]),
        "{summary}"
    );
    assert!(
        err.contains(&failing.arg()) && err.contains("INCOMPLETE"),
        "{err}"
    );
    let finished = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap();
    assert_eq!(finished["ok"], false, "{finished}");
    // The label of the failing device is not complete.
    let label = craft::read_label(&failing.path);
    assert_eq!(label.state, pbio::format::LabelState::Writing);
    // Its data is listed in the other device's catalog: both restore all.
    failing.heal();
    let to = bed.root.join("out");
    let (code, out, err) = restore(&devs, &to, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_same_tree(&bed.src, &to.join("tree"));
}

/// Defect 11 (second half): an image restore onto a block device writes
/// nothing outside the image, whatever a record claims.
#[test]
fn an_image_restore_writes_nothing_outside_the_image() {
    let Some(bed) = bed("an_image_restore_writes_nothing_outside_the_image", 1) else {
        return;
    };
    const IMAGE: u64 = 8 << 20;
    let source = LoopDev::new(&bed.root.join("image.img"), IMAGE);
    let mut image = vec![0u8; IMAGE as usize];
    common::Rng::new(11).fill(&mut image);
    craft::write_bytes(&source.path, 0, &image);
    let devs = [bed.dev(0)];
    let (code, out, err) = backup(&source.path, &devs, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut m = Medium::read(&bed.devs[0].path);
    let id = m
        .catalog
        .files
        .iter()
        .position(|f| f.kind == pbio::format::FileKind::BlockDevice)
        .expect("the image") as u32;
    let like = m.records[m.records_of(id)[0]].clone();
    // A record for bytes [12 MiB, 13 MiB) of a "16 MiB" image.
    let mut beyond = Record::data_like(&like, id, 12 << 20, vec![0xEE; 1 << 20]);
    beyond.header.file_size = 16 << 20;
    m.records.push(beyond);
    m.write(&bed.devs[0].path);

    let target = LoopDev::new(&bed.root.join("target.img"), 16 << 20);
    let canary = vec![0xC5u8; 16 << 20];
    craft::write_bytes(&target.path, 0, &canary);
    let (code, out, err) = restore(&devs, &target.path, &["--force"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("not written") && err.contains(&bed.dev(0)),
        "{err}"
    );
    let mut got = vec![0u8; 16 << 20];
    craft::open(&target.path)
        .read_exact_at(&mut got, 0)
        .unwrap();
    assert!(got[..IMAGE as usize] == image[..], "the image is restored");
    assert!(
        got[IMAGE as usize..].iter().all(|&b| b == 0xC5),
        "nothing written past the image"
    );
    bed.assert_canary();
}

fn new_key(bed: &Bed, name: &str) -> PathBuf {
    let path = bed.root.join(name);
    let (code, out, err) = pbio(&["key", "new", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&path).unwrap().len(), 32);
    path
}

/// `--key`: a keyed set restores (and lists, verifies) with its key, and
/// without it (saying the MACs were not checked); another key is refused
/// at the label, naming the device; an unkeyed set given a key is refused.
#[test]
fn a_keyed_set_restores_with_its_key_and_not_with_another() {
    let Some(bed) = bed("a_keyed_set_restores_with_its_key_and_not_with_another", 3) else {
        return;
    };
    let key = new_key(&bed, "k1");
    let other = new_key(&bed, "k2");
    let key_arg = key.to_str().unwrap();
    let other_arg = other.to_str().unwrap();
    // `key new` never overwrites; a short key file is a usage error.
    let (code, _, err) = pbio(&["key", "new", key_arg]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(fs::metadata(&key).unwrap().len(), 32);
    let short = bed.root.join("short");
    fs::write(&short, [1u8; 31]).unwrap();
    let devs = [bed.dev(0), bed.dev(1)];
    let (code, _, err) = backup(&bed.src, &devs, &["--key", short.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(short.to_str().unwrap()) && err.contains("31 bytes"),
        "{err}"
    );

    let (code, out, err) = backup(&bed.src, &devs, &["--key", key_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let to = bed.root.join("out");
    let (code, out, err) = restore(&devs, &to, &["--key", key_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("give --key"), "{err}");
    assert_same_tree(&bed.src, &to.join("tree"));
    let (code, _, err) = verify(&devs, &["--key", key_arg]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pbio(&["list", "--dev", &bed.dev(0), "--key", key_arg]);
    assert_eq!(code, 0, "{err}");

    let to = bed.root.join("out-no-key");
    let (code, out, err) = restore(&devs, &to, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("set is authenticated; give --key to check it"),
        "{err}"
    );
    assert_same_tree(&bed.src, &to.join("tree"));

    let to = bed.root.join("out-other-key");
    let (code, out, err) = restore(&devs, &to, &["--key", other_arg]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&bed.dev(0)) && err.contains("label's MAC does not match"),
        "{err}"
    );
    assert_untouched(&to);
    let (code, _, err) = verify(&devs, &["--key", other_arg]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = pbio(&["list", "--dev", &bed.dev(1), "--key", other_arg]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&bed.dev(1)), "{err}");

    // A set written without a key, given one: refused.
    let (code, out, err) = backup(&bed.src, &[bed.dev(2)], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let to = bed.root.join("out-unkeyed");
    let (code, out, err) = restore(&[bed.dev(2)], &to, &["--key", key_arg]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&bed.dev(2)) && err.contains("without a key"),
        "{err}"
    );
    assert_untouched(&to);
    bed.assert_canary();
}

/// A forger without the key alters the catalog (a file made setuid) and
/// repairs every CRC and the label's catalog digest, but cannot compute
/// the MACs: with the key the set is refused, naming the device. Even a
/// label MAC made with the key (here: by the test) does not carry a
/// catalog whose own MAC does not match.
#[test]
fn a_forged_catalog_is_refused_with_the_key() {
    let Some(bed) = bed("a_forged_catalog_is_refused_with_the_key", 1) else {
        return;
    };
    let key = new_key(&bed, "k");
    let key_arg = key.to_str().unwrap();
    let devs = [bed.dev(0)];
    let (code, out, err) = backup(&bed.src, &devs, &["--key", key_arg]);
    assert_eq!(code, 0, "{out}\n{err}");

    let mut m = Medium::read(&bed.devs[0].path);
    let small = m.file_id(b"tree/small.txt") as usize;
    m.catalog.files[small].stat.mode |= 0o4755;
    // Re-encoded with the old MAC, the CRC recomputed.
    let forged = m.catalog.encode();
    pbio::format::Catalog::decode(&forged).expect("a forged catalog decodes");
    m.catalog_bytes = Some(forged.clone());
    m.label.catalog_bytes = forged.len() as u64;
    m.label.catalog_digest = *blake3::hash(&forged).as_bytes();
    m.write_as_is(&bed.devs[0].path);
    let to = bed.root.join("out");
    let (code, out, err) = restore(&devs, &to, &["--key", key_arg]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&bed.dev(0)) && err.contains("label's MAC does not match"),
        "{err}"
    );
    assert_untouched(&to);

    // The label sealed with the key, the catalog's MAC still the old one.
    m.key = Some(pbio::format::mac_key(&fs::read(&key).unwrap()));
    m.write(&bed.devs[0].path);
    let (code, out, err) = restore(&devs, &to, &["--key", key_arg]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&bed.dev(0)) && err.contains("catalog's MAC does not match"),
        "{err}"
    );
    assert_untouched(&to);
    let (code, _, err) = verify(&devs, &["--key", key_arg]);
    assert_eq!(code, 3, "{err}");
    bed.assert_canary();
}

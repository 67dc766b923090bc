//! Restore against hostile destinations and media (issue 17, the file-system
//! side): planted symlinks and hard links in the destination, a catalog
//! whose symlink points outside, damaged records, unsafe names, the umask
//! of a user other than root, and devices of two sets given to
//! `restore --scan`. Every test checks a canary directory outside the
//! destination: nothing in it (content, mode, owner, mtime, names) changes.
//!
//! Catalogs are crafted by patching a real set's catalog through the
//! shared crafting helper (`common/craft.rs`, the `pbio::format` API).

mod common;
#[path = "common/craft.rs"]
mod craft;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use loopdev::{loop_devices_available, pbio, LoopDev};
use pbio::format::{Catalog, FileKind};
use serde_json::Value;

const DEVICE_BYTES: u64 = 48 << 20;
const BIG_BYTES: u64 = 3 << 20;

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn random_file(path: &Path, size_bytes: u64, seed: u64, mode: u32) {
    let mut rng = common::Rng::new(seed);
    let mut buf = vec![0u8; size_bytes as usize];
    rng.fill(&mut buf);
    fs::write(path, &buf).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The backed-up tree, as `tree/...`:
/// `sub/a` (10 KiB), `sub/b`, `big` (3 MiB: three records), `c`, `t/x`,
/// `mode666` (0o666), `mode777` (0o777), `opendir/` (0o777).
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::create_dir_all(root.join("t")).unwrap();
    fs::create_dir_all(root.join("opendir")).unwrap();
    random_file(&root.join("sub/a"), 10 << 10, 1, 0o644);
    random_file(&root.join("sub/b"), 300, 2, 0o600);
    random_file(&root.join("big"), BIG_BYTES, 3, 0o644);
    random_file(&root.join("c"), 77, 4, 0o644);
    random_file(&root.join("t/x"), 500, 5, 0o644);
    random_file(&root.join("mode666"), 66, 6, 0o666);
    random_file(&root.join("mode777"), 77, 7, 0o777);
    fs::set_permissions(root.join("opendir"), fs::Permissions::from_mode(0o777)).unwrap();
}

/// A temporary directory with the source tree, devices, and `outer/`,
/// which holds the destinations and the canary directory.
struct Bed {
    dir: tempfile::TempDir,
    src: PathBuf,
    outer: PathBuf,
    canary: PathBuf,
    devs: Vec<LoopDev>,
}

impl Bed {
    fn new(test: &str, devices: usize) -> Option<Bed> {
        if !loop_devices_available(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src/tree");
        make_tree(&src);
        let outer = dir.path().join("outer");
        let canary = outer.join("canary");
        fs::create_dir_all(&canary).unwrap();
        random_file(&canary.join("file"), 123, 99, 0o640);
        // Same names as the tree's, for a restore led astray to hit.
        random_file(&canary.join("a"), 55, 98, 0o640);
        fs::create_dir(canary.join("t")).unwrap();
        for p in [
            canary.join("file"),
            canary.join("a"),
            canary.join("t"),
            canary.clone(),
        ] {
            let t = nix::sys::time::TimeSpec::new(1_000_000_000, 5);
            nix::sys::stat::utimensat(
                None,
                &p,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        let devs = (0..devices)
            .map(|i| LoopDev::new(&dir.path().join(format!("loop{i}.img")), DEVICE_BYTES))
            .collect();
        Some(Bed {
            dir,
            src,
            outer,
            canary,
            devs,
        })
    }

    fn dev_args(&self, which: &[usize]) -> Vec<String> {
        which
            .iter()
            .flat_map(|&i| ["--dev".to_string(), self.devs[i].arg()])
            .collect()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.devs.len()).collect()
    }

    fn backup(&self, src: &Path, which: &[usize]) -> Value {
        let mut args = vec![
            "backup".to_string(),
            src.display().to_string(),
            "--json".into(),
        ];
        args.extend(self.dev_args(which));
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "backup failed: {out}\n{err}");
        json(&out)
    }

    fn restore(&self, to: &Path, which: &[usize], extra: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "restore".to_string(),
            "--to".into(),
            to.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.dev_args(which));
        run(&args)
    }

    fn list(&self, dev: usize) -> Value {
        let (code, out, err) = pbio(&[
            "list",
            "--dev",
            &self.devs[dev].arg(),
            "--segments",
            "--json",
        ]);
        assert_eq!(code, 0, "list failed: {err}");
        json(&out)
    }
}

/// Everything a restore must leave alone: `outer`'s own names (besides the
/// destinations) and the whole canary tree, lstat'ed, with file contents.
type Snapshot = BTreeMap<Vec<u8>, (u32, u32, u32, i64, i64, Option<Vec<u8>>)>;

fn snapshot(bed: &Bed, destinations: &[&Path]) -> Snapshot {
    let mut out = Snapshot::new();
    for entry in fs::read_dir(&bed.outer).unwrap() {
        let entry = entry.unwrap();
        if destinations.iter().any(|d| *d == entry.path()) {
            continue;
        }
        out.insert(
            [b"outer/", entry.file_name().as_bytes()].concat(),
            (0, 0, 0, 0, 0, None),
        );
    }
    for (rel, m) in common::lstat_tree(&bed.canary) {
        let path = bed.canary.join(std::ffi::OsStr::from_bytes(&rel));
        let content = m.is_file().then(|| fs::read(&path).unwrap());
        out.insert(
            [b"canary/", &rel[..]].concat(),
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                content,
            ),
        );
    }
    out
}

fn assert_untouched(before: &Snapshot, bed: &Bed, destinations: &[&Path], what: &str) {
    let after = snapshot(bed, destinations);
    assert_eq!(
        before, &after,
        "{what}: something outside the destination changed"
    );
}

/// No temporary file of a restore is left anywhere under `root`.
fn assert_no_temporaries(root: &Path) {
    for (rel, _) in common::lstat_tree(root) {
        let name = rel.rsplit(|&b| b == b'/').next().unwrap();
        assert!(
            !(name.starts_with(b".") && name.windows(6).any(|w| w == b".pbio-")),
            "temporary file left: {}",
            rel.escape_ascii()
        );
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    fs::read(a).unwrap() == fs::read(b).unwrap()
}

/// Rewrite the catalog on every device of the set after `edit` (records
/// kept, the label's catalog fields and digest made to match).
fn patch_catalog(bed: &Bed, which: &[usize], edit: impl Fn(&mut Catalog)) {
    for &i in which {
        let mut medium = craft::Medium::read(&bed.devs[i].path);
        edit(&mut medium.catalog);
        medium.catalog.validate().unwrap();
        medium.write(&bed.devs[i].path);
    }
}

/// Flip one payload byte of the first record of `path` (a stored path);
/// returns the device path it is on.
fn damage_record(bed: &Bed, path: &str) -> String {
    let listing = bed.list(0);
    let segment = listing["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == path && s["records"].as_u64().unwrap() > 0)
        .unwrap_or_else(|| panic!("no segment of {path}: {listing}"));
    let device = listing["devices"][segment["device"].as_u64().unwrap() as usize]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let byte_at = segment["position"].as_u64().unwrap() + 4096 + 100;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, byte_at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, byte_at).unwrap();
    f.sync_all().unwrap();
    device
}

/// Plain restore, and `restore --scan`.
const MODES: [&[&str]; 2] = [&[], &["--scan"]];

fn mode_name(extra: &[&str]) -> &'static str {
    if extra.is_empty() {
        "restore"
    } else {
        "restore --scan"
    }
}

/// A destination prepared by `plant` (given the destination and the
/// canary), restored into by plain restore and by --scan: the canary is
/// untouched, exit 0, the tree's files are there with their content.
fn planted(test: &str, plant: impl Fn(&Path, &Path)) {
    let Some(bed) = Bed::new(test, 2) else {
        return;
    };
    bed.backup(&bed.src, &bed.all());
    for (k, extra) in MODES.iter().enumerate() {
        let to = bed.outer.join(format!("dest{k}"));
        fs::create_dir_all(to.join("tree")).unwrap();
        plant(&to, &bed.canary);
        let before = snapshot(&bed, &[&to]);
        let (code, out, err) = bed.restore(&to, &bed.all(), extra);
        let what = format!("{test}: {}", mode_name(extra));
        assert_eq!(code, 0, "{what}: {out}\n{err}");
        assert_untouched(&before, &bed, &[&to], &what);
        for f in ["sub/a", "sub/b", "big", "c", "t/x"] {
            let restored = to.join("tree").join(f);
            let m = fs::symlink_metadata(&restored).unwrap();
            assert!(m.is_file(), "{what}: {f} is not a regular file");
            assert!(same_content(&restored, &bed.src.join(f)), "{what}: {f}");
        }
        assert!(fs::symlink_metadata(to.join("tree/sub")).unwrap().is_dir());
        assert_no_temporaries(&to);
        if extra.is_empty() {
            let diffs = common::compare_trees(&bed.src, &to.join("tree"));
            assert!(diffs.is_empty(), "{what}: {diffs:#?}");
        }
    }
}

#[test]
fn planted_directory_symlink_is_replaced_not_followed() {
    planted(
        "planted_directory_symlink_is_replaced_not_followed",
        |to, canary| {
            std::os::unix::fs::symlink(canary, to.join("tree/sub")).unwrap();
        },
    );
}

#[test]
fn planted_symlink_at_a_file_name_is_replaced() {
    planted(
        "planted_symlink_at_a_file_name_is_replaced",
        |to, canary| {
            fs::create_dir_all(to.join("tree/sub")).unwrap();
            std::os::unix::fs::symlink(canary.join("file"), to.join("tree/sub/a")).unwrap();
            std::os::unix::fs::symlink(canary.join("missing"), to.join("tree/c")).unwrap();
        },
    );
}

#[test]
fn planted_hard_link_at_a_file_name_is_replaced() {
    planted(
        "planted_hard_link_at_a_file_name_is_replaced",
        |to, canary| {
            fs::create_dir_all(to.join("tree/sub")).unwrap();
            fs::hard_link(canary.join("file"), to.join("tree/sub/a")).unwrap();
            fs::hard_link(canary.join("a"), to.join("tree/big")).unwrap();
        },
    );
}

/// A catalog whose `tree/t` is a symlink to the canary directory, while the
/// records of `tree/t/x` still say `tree/t/x` (its catalog entry renamed):
/// restore makes the symlink, then restore --scan into the same
/// destination replaces it by a directory instead of writing through it.
#[test]
fn catalog_symlink_then_scan_into_the_same_destination() {
    let Some(bed) = Bed::new("catalog_symlink_then_scan_into_the_same_destination", 2) else {
        return;
    };
    bed.backup(&bed.src, &bed.all());
    let canary_t = bed.canary.join("t");
    patch_catalog(&bed, &bed.all(), |c| {
        for f in &mut c.files {
            if f.path == b"tree/t" {
                f.kind = FileKind::Symlink;
                f.stat.mode = 0o120777;
                f.stat.flags = 0; // a directory's (ext4: extents), not a symlink's
                f.link_target = canary_t.as_os_str().as_bytes().to_vec();
            } else if f.path == b"tree/t/x" {
                f.path = b"tree/x-moved".to_vec();
            }
        }
    });
    let to = bed.outer.join("dest");
    let before = snapshot(&bed, &[&to]);
    let (code, out, err) = bed.restore(&to, &bed.all(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(fs::read_link(to.join("tree/t")).unwrap(), canary_t);
    assert!(same_content(&to.join("tree/x-moved"), &bed.src.join("t/x")));
    assert_untouched(&before, &bed, &[&to], "restore");

    let (code, out, err) = bed.restore(&to, &bed.all(), &["--scan"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_untouched(&before, &bed, &[&to], "restore --scan");
    assert!(fs::symlink_metadata(to.join("tree/t")).unwrap().is_dir());
    assert!(same_content(&to.join("tree/t/x"), &bed.src.join("t/x")));
    assert_eq!(fs::read_dir(&canary_t).unwrap().count(), 0);
    assert_no_temporaries(&to);
}

/// One payload byte flipped: the file is absent (or kept as
/// NAME.pbio-partial with --keep-partial), named with the device, the rest
/// restored, exit 3; with a planted directory symlink where the damaged
/// file's directory goes, --scan removes nothing outside.
#[test]
fn damaged_record_leaves_no_file_with_wrong_content() {
    let Some(bed) = Bed::new("damaged_record_leaves_no_file_with_wrong_content", 2) else {
        return;
    };
    bed.backup(&bed.src, &bed.all());
    let big_device = damage_record(&bed, "tree/big");
    let a_device = damage_record(&bed, "tree/sub/a");
    for (k, extra) in MODES.iter().enumerate() {
        for keep_partial in [false, true] {
            let to = bed.outer.join(format!("dest{k}{}", u8::from(keep_partial)));
            fs::create_dir_all(to.join("tree")).unwrap();
            // The old --scan removed the incomplete `a` through this link.
            std::os::unix::fs::symlink(&bed.canary, to.join("tree/sub")).unwrap();
            let before = snapshot(&bed, &[&to]);
            let mut args = extra.to_vec();
            if keep_partial {
                args.push("--keep-partial");
            }
            let (code, out, err) = bed.restore(&to, &bed.all(), &args);
            let what = format!("{} keep_partial={keep_partial}", mode_name(extra));
            assert_eq!(code, 3, "{what}: {out}\n{err}");
            assert_untouched(&before, &bed, &[&to], &what);
            assert!(
                err.contains("tree/big") && err.contains("tree/sub/a"),
                "{what}: {err}"
            );
            if extra.is_empty() {
                // Plain restore names the device of each damaged record.
                assert!(
                    err.contains(&big_device) && err.contains(&a_device),
                    "{what}: {err}"
                );
            }
            for f in ["big", "sub/a"] {
                assert!(
                    fs::symlink_metadata(to.join("tree").join(f)).is_err(),
                    "{what}: damaged {f} left in place"
                );
                // --scan has nothing of `sub/a` to keep: its one record is the damaged one.
                let kept = keep_partial && (extra.is_empty() || f == "big");
                let partial = to.join("tree").join(format!("{f}.pbio-partial"));
                assert_eq!(partial.exists(), kept, "{what}: {}", partial.display());
                if kept {
                    assert!(
                        err.contains(&format!("tree/{f}.pbio-partial")),
                        "{what}: {err}"
                    );
                }
            }
            for f in ["sub/b", "c", "t/x", "mode666"] {
                assert!(
                    same_content(&to.join("tree").join(f), &bed.src.join(f)),
                    "{what}: {f}"
                );
            }
            assert_no_temporaries(&to);
        }
    }
}

/// Unsafe names among good ones: refused one by one, named, exit 3, the
/// rest restored, nothing outside created.
#[test]
fn unsafe_names_are_refused_one_by_one() {
    let Some(bed) = Bed::new("unsafe_names_are_refused_one_by_one", 2) else {
        return;
    };
    bed.backup(&bed.src, &bed.all());
    patch_catalog(&bed, &bed.all(), |c| {
        for f in &mut c.files {
            if f.path == b"tree/c" {
                f.path = b"../escape".to_vec();
            } else if f.path == b"tree/mode666" {
                f.path = b"tree/../../escape\x1b[2J".to_vec();
            }
        }
    });
    let to = bed.outer.join("dest");
    let before = snapshot(&bed, &[&to]);
    let (code, out, err) = bed.restore(&to, &bed.all(), &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert_untouched(&before, &bed, &[&to], "restore");
    assert!(err.contains("refusing to restore '../escape'"), "{err}");
    assert!(
        err.contains("refusing to restore 'tree/../../escape\\e[2J'"),
        "names are shown escaped: {err}"
    );
    assert!(!err.contains('\x1b'), "raw escape sequence printed: {err}");
    for f in ["sub/a", "sub/b", "big", "t/x", "mode777"] {
        assert!(
            same_content(&to.join("tree").join(f), &bed.src.join(f)),
            "{f}"
        );
    }
    assert!(!bed.dir.path().join("escape").exists());
    assert_no_temporaries(&to);
}

/// A user other than root restoring with umask 027 gets modes less the
/// umask (as tar does), and its own ids.
#[test]
fn non_root_restore_honours_the_umask() {
    let Some(bed) = Bed::new("non_root_restore_honours_the_umask", 1) else {
        return;
    };
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        let why = "setpriv is not installed (util-linux)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED non_root_restore_honours_the_umask: {why}");
        return;
    }
    bed.backup(&bed.src, &[0]);
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    // nobody reads the device and writes into its own directory.
    fs::set_permissions(&bed.devs[0].path, fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(bed.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&bed.outer, fs::Permissions::from_mode(0o755)).unwrap();
    let to = bed.outer.join("dest");
    fs::create_dir(&to).unwrap();
    std::os::unix::fs::chown(&to, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    let before = snapshot(&bed, &[&to]);
    let command = format!(
        "umask 027 && exec '{}' restore --dev '{}' --to '{}'",
        env!("CARGO_BIN_EXE_pbio"),
        bed.devs[0].arg(),
        to.display()
    );
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={}", nobody.uid),
            &format!("--regid={}", nobody.gid),
            "--clear-groups",
            "sh",
            "-c",
            &command,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_untouched(&before, &bed, &[&to], "non-root restore");
    for (f, mode) in [
        ("mode666", 0o640),
        ("mode777", 0o750),
        ("opendir", 0o750),
        ("big", 0o640),
        ("sub/b", 0o600),
        ("sub", 0o750),
    ] {
        let m = fs::symlink_metadata(to.join("tree").join(f)).unwrap();
        assert_eq!(m.mode() & 0o7777, mode, "{f}: {:o}", m.mode());
        assert_eq!(
            (m.uid(), m.gid()),
            (nobody.uid.as_raw(), nobody.gid.as_raw()),
            "{f}"
        );
    }
    assert!(same_content(&to.join("tree/big"), &bed.src.join("big")));
}

/// Devices of two sets given to restore --scan: refused (exit 2) naming
/// both sets and their devices, nothing written; `--set` picks one, and
/// the other set's records are counted in the report.
#[test]
fn scan_of_two_sets_is_refused_unless_one_is_chosen() {
    let Some(bed) = Bed::new("scan_of_two_sets_is_refused_unless_one_is_chosen", 2) else {
        return;
    };
    let other = bed.dir.path().join("src2/other");
    fs::create_dir_all(&other).unwrap();
    random_file(&other.join("z"), 4000, 42, 0o644);
    bed.backup(&bed.src, &[0]);
    bed.backup(&other, &[1]);
    let ids: Vec<String> = (0..2)
        .map(|i| bed.list(i)["set_id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(ids[0], ids[1]);

    let to = bed.outer.join("dest");
    let (code, out, err) = bed.restore(&to, &bed.all(), &["--scan"]);
    assert_eq!(code, 2, "{out}\n{err}");
    for needle in [
        &ids[0],
        &ids[1],
        &bed.devs[0].arg(),
        &bed.devs[1].arg(),
        &"--set".to_string(),
    ] {
        assert!(
            err.contains(needle.as_str()),
            "does not name {needle}: {err}"
        );
    }
    assert!(!to.exists() || fs::read_dir(&to).unwrap().count() == 0);

    let (code, _, err) = bed.restore(&to, &bed.all(), &["--scan", "--set", "0123456789abcdef"]);
    assert_eq!(code, 2, "a prefix of no set: {err}");

    let (code, out, err) = bed.restore(
        &to,
        &bed.all(),
        &["--scan", "--json", "--set", &ids[0][..8]],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json(&out);
    assert_eq!(report["set_id"], ids[0].as_str());
    assert!(same_content(&to.join("tree/big"), &bed.src.join("big")));
    assert!(!to.join("other").exists());
    let others = report["other_sets"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{report}");
    assert_eq!(others[0]["set_id"], ids[1].as_str());
    assert!(others[0]["records"].as_u64().unwrap() > 0, "{report}");

    let to2 = bed.outer.join("dest2");
    let (code, out, err) = bed.restore(&to2, &bed.all(), &["--scan", "--set", &ids[1]]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(same_content(&to2.join("other/z"), &other.join("z")));
    assert!(!to2.join("tree").exists());
    assert!(
        err.contains(&ids[0]),
        "the other set's records are reported: {err}"
    );
}

/// Add a fifo and a character device node (`/dev/null`'s numbers) to the
/// bed's source tree, as `tree/fifo` and `tree/cnode`.
fn add_special_files(bed: &Bed) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let mode = Mode::from_bits_truncate(0o640);
    mknod(&bed.src.join("fifo"), SFlag::S_IFIFO, mode, 0).unwrap();
    mknod(&bed.src.join("cnode"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
}

/// A catalog whose fifo and device node are renamed to climb out of the
/// destination: both refused by name, exit 3, nothing made outside, the
/// rest restored.
#[test]
fn special_files_with_unsafe_names_are_refused() {
    let Some(bed) = Bed::new("special_files_with_unsafe_names_are_refused", 2) else {
        return;
    };
    add_special_files(&bed);
    bed.backup(&bed.src, &bed.all());
    patch_catalog(&bed, &bed.all(), |c| {
        for f in &mut c.files {
            if f.path == b"tree/fifo" {
                assert_eq!(f.kind, FileKind::Fifo);
                f.path = b"../escape-fifo".to_vec();
            } else if f.path == b"tree/cnode" {
                assert_eq!(f.kind, FileKind::CharDevice);
                f.path = b"tree/../../escape-node".to_vec();
            }
        }
    });
    let to = bed.outer.join("dest");
    let before = snapshot(&bed, &[&to]);
    let (code, out, err) = bed.restore(&to, &bed.all(), &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert_untouched(&before, &bed, &[&to], "restore");
    assert!(
        err.contains("refusing to restore '../escape-fifo'"),
        "{err}"
    );
    assert!(
        err.contains("refusing to restore 'tree/../../escape-node'"),
        "{err}"
    );
    for name in ["escape-fifo", "escape-node"] {
        for dir in [bed.dir.path(), bed.outer.as_path()] {
            assert!(
                fs::symlink_metadata(dir.join(name)).is_err(),
                "{name} made in {}",
                dir.display()
            );
        }
    }
    for f in ["sub/a", "big", "c", "t/x"] {
        assert!(
            same_content(&to.join("tree").join(f), &bed.src.join(f)),
            "{f}"
        );
    }
    assert_no_temporaries(&to);
}

/// The destination holds symlinks (into the canary) at the names of a
/// fifo and a device node: the links are replaced by the nodes themselves,
/// never followed, and the canary is untouched.
#[test]
fn planted_symlinks_at_special_file_names_are_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let Some(bed) = Bed::new("planted_symlinks_at_special_file_names_are_replaced", 2) else {
        return;
    };
    add_special_files(&bed);
    bed.backup(&bed.src, &bed.all());
    let to = bed.outer.join("dest");
    fs::create_dir_all(to.join("tree")).unwrap();
    std::os::unix::fs::symlink(bed.canary.join("a"), to.join("tree/cnode")).unwrap();
    std::os::unix::fs::symlink(bed.canary.join("t"), to.join("tree/fifo")).unwrap();
    let before = snapshot(&bed, &[&to]);
    let (code, out, err) = bed.restore(&to, &bed.all(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_untouched(&before, &bed, &[&to], "restore");
    let node = fs::symlink_metadata(to.join("tree/cnode")).unwrap();
    assert!(node.file_type().is_char_device(), "{node:?}");
    assert_eq!(node.rdev(), nix::sys::stat::makedev(1, 3));
    let fifo = fs::symlink_metadata(to.join("tree/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "{fifo:?}");
    assert_no_temporaries(&to);
}

/// Extended attributes a crafted catalog gives a file that no file system
/// takes (no namespace, a malformed capability and ACL): each is a warning
/// naming the file and the attribute, the good attribute and the content
/// are restored, and nothing panics.
#[test]
fn hostile_xattrs_are_warnings_naming_file_and_attribute() {
    let Some(bed) = Bed::new("hostile_xattrs_are_warnings_naming_file_and_attribute", 2) else {
        return;
    };
    bed.backup(&bed.src, &bed.all());
    let x = |name: &[u8], value: &[u8]| pbio::format::Xattr {
        name: name.to_vec(),
        value: value.to_vec(),
    };
    patch_catalog(&bed, &bed.all(), |c| {
        let f = c.files.iter_mut().find(|f| f.path == b"tree/c").unwrap();
        f.xattrs = vec![
            x(b"bogus\x1b[2J", b"v"),
            x(b"security.capability", b"\x01\x02\x03"),
            x(b"system.posix_acl_access", b"not an acl"),
            x(b"user.ok", b"fine"),
        ];
    });
    let to = bed.outer.join("dest");
    let before = snapshot(&bed, &[&to]);
    let (code, out, err) = bed.restore(&to, &bed.all(), &["--json"]);
    assert_eq!(code, 0, "warnings are not failures: {out}\n{err}");
    assert_untouched(&before, &bed, &[&to], "restore");
    let report = json(&out);
    let warnings: Vec<String> = report["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {report}"))
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    for name in [
        "bogus\\e[2J",
        "security.capability",
        "system.posix_acl_access",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("tree/c") && w.contains(name)),
            "no warning for {name}: {warnings:?}"
        );
    }
    assert!(
        !out.contains('\x1b') && !err.contains('\x1b'),
        "raw escape printed"
    );
    let restored = to.join("tree/c");
    assert!(same_content(&restored, &bed.src.join("c")));
    let ok = nix_getxattr(&restored, "user.ok");
    assert_eq!(ok.as_deref(), Some(&b"fine"[..]));
    assert_eq!(nix_getxattr(&restored, "security.capability"), None);
    assert_no_temporaries(&to);
}

fn nix_getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated, buf is valid for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// Small files (one record or none) restored into directories the restore
/// makes are created under their own names once their record is proven
/// (issue 23, `tree::small`): every owner, mode (set-ID bits, modes the
/// umask would strip), mtime and empty file as backed up; a damaged one
/// is not created at all (not even partially, nor under a temporary
/// name), named with exit 3; nothing outside the destination touched.
#[test]
fn small_files_in_new_directories_keep_metadata_and_nothing_unproven() {
    let Some(bed) = Bed::new(
        "small_files_in_new_directories_keep_metadata_and_nothing_unproven",
        1,
    ) else {
        return;
    };
    let fresh = bed.src.join("fresh");
    fs::create_dir_all(fresh.join("deeper")).unwrap();
    for (i, (name, size, mode)) in [
        ("plain", 4000u64, 0o644),
        ("setuid", 1000, 0o4755),
        ("setgid", 10, 0o2750),
        ("wide", 100, 0o666),
        ("narrow", 70, 0o400),
        ("owned", 5000, 0o640),
        ("damaged", 3000, 0o644),
        ("deeper/x", 65536, 0o600),
        ("empty", 0, 0o604),
    ]
    .into_iter()
    .enumerate()
    {
        random_file(&fresh.join(name), size, 200 + i as u64, mode);
    }
    nix::unistd::chown(
        &fresh.join("owned"),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1001)),
    )
    .unwrap();
    fs::set_permissions(&fresh, fs::Permissions::from_mode(0o751)).unwrap();
    let t = nix::sys::time::TimeSpec::new(1_234_567_890, 123);
    for p in ["plain", "empty", "owned", "deeper"] {
        nix::sys::stat::utimensat(
            None,
            &fresh.join(p),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    bed.backup(&bed.src, &bed.all());
    let device = damage_record(&bed, "tree/fresh/damaged");
    let to = bed.outer.join("dest");
    let before = snapshot(&bed, &[&to]);
    let (code, out, err) = bed.restore(&to, &bed.all(), &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert_untouched(&before, &bed, &[&to], "small files");
    assert!(
        err.contains("tree/fresh/damaged") && err.contains(&device),
        "{err}"
    );
    assert!(
        fs::symlink_metadata(to.join("tree/fresh/damaged")).is_err(),
        "a damaged small file was created"
    );
    assert_no_temporaries(&to);
    // Everything else is as backed up: content, mode, owner, mtime.
    let diffs: Vec<String> = common::compare_trees(&bed.src, &to.join("tree"))
        .into_iter()
        .filter(|d| d != "fresh/damaged: missing in b")
        .collect();
    assert!(diffs.is_empty(), "{diffs:#?}");
}

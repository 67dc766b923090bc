//! Restore of a mutated medium touches nothing outside its destination.
//!
//! Setup, once per process: a small valid set (a directory, files, one of
//! two records, a symlink, a hard link) is backed up with pbio's own
//! backup onto a file device and its bytes kept. Each input is a list of
//! mutations of a copy of those bytes (single bytes, or one replaced
//! window), written to the device file; then restore (the catalog path,
//! `restore`) and restore from records (`restore --scan`) run into
//! SANDBOX/dest, where SANDBOX also holds a canary directory and a planted
//! symlink DEST/tree/sub -> ../../canary (the tree has a `sub` directory,
//! so a restore that follows the link writes into the canary). After each
//! run, everything outside SANDBOX/dest must be as it was: names, types,
//! sizes, modes, owners, mtimes and contents.
//!
//! Restore errors are fine (most mutated media are refused); a panic, an
//! abort or a change outside the destination is a crash.
//!
//! Confinement: a mutated catalog can name any absolute path, so the
//! restores run on one thread that has its own root (`unshare(CLONE_FS)`
//! then `chroot` into a temporary directory holding the device file and
//! SANDBOX): whatever the medium says, the fuzzer cannot write outside it,
//! and the snapshot covers all of it. The threads restore starts share
//! that root. Needs CAP_SYS_CHROOT (root, as CI runs).
//!
//! `PBIO_FUZZ_PLANT=0` leaves the planted symlink out, to look for escapes
//! a medium alone can cause.
#![no_main]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pbio::device::{self, DeviceSpec, Mode};
use pbio::restore::{self, Action};

/// Inside the jail.
const DEVICE: &str = "/dev.img";
const DEST: &str = "/sandbox/dest";
/// Largest mutation list applied (4 bytes each).
const MUTATIONS_MAX: usize = 64;

struct Jail {
    image: Vec<u8>,
    to_jail: Mutex<SyncSender<(Vec<u8>, Runs)>>,
    from_jail: Mutex<Receiver<()>>,
}

static JAIL: OnceLock<Jail> = OnceLock::new();
/// The jail's directory, removed when the process exits.
static JAIL_ROOT: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_jail() {
    if let Some(root) = JAIL_ROOT.get() {
        let _ = fs::remove_dir_all(root);
    }
}

/// The source tree of the set: `tree/sub` is a directory so that the
/// planted `DEST/tree/sub` link lies on the way of its files.
fn make_tree(root: &Path) -> PathBuf {
    let tree = root.join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/a"), b"the file a\n").unwrap();
    fs::hard_link(tree.join("sub/a"), tree.join("sub/hard")).unwrap();
    // Two records with 4 KiB chunks.
    let two: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(tree.join("sub/two"), two).unwrap();
    fs::write(tree.join("top"), b"top level\n").unwrap();
    std::os::unix::fs::symlink("sub/a", tree.join("link")).unwrap();
    fs::set_permissions(tree.join("top"), fs::Permissions::from_mode(0o640)).unwrap();
    tree
}

/// The device image of the set, made by pbio's own backup.
fn build_image() -> Vec<u8> {
    let work = tempfile::tempdir().unwrap();
    let tree = make_tree(work.path());
    let image = work.path().join("dev.img");
    let spec = DeviceSpec::parse(&format!("{},size=128K", image.display())).unwrap();
    let mut args = pbio::cli::backup::BackupArgs::with_defaults(pbio::cli::SetArgs {
        sources: vec![tree],
        devs: vec![spec],
        strategy: Default::default(),
        order: Default::default(),
        balance: Default::default(),
        chunk: 4096,
        since: None,
        json: false,
        select: Default::default(),
        changer: None,
    });
    args.force = true;
    let code = pbio::cli::backup::run(args).expect("backup of the fuzz set");
    assert_eq!(code, pbio::cli::Outcome::Done, "backup of the fuzz set");
    fs::read(&image).unwrap()
}

fn jail_setup(root: &Path) {
    fs::create_dir_all(root.join("sandbox/canary")).unwrap();
    fs::write(root.join("sandbox/canary/a"), b"canary a\n").unwrap();
    fs::write(root.join("sandbox/canary/keep"), b"canary keep\n").unwrap();
    fs::write(root.join("sandbox/outside"), b"outside dest\n").unwrap();
    // SAFETY: unshare(CLONE_FS) only detaches this thread's root, cwd and
    // umask from the other threads; no memory is involved.
    let rc = unsafe { libc::unshare(libc::CLONE_FS) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_FS): {}",
        std::io::Error::last_os_error()
    );
    let c_root = CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::chroot(c_root.as_ptr()) };
    assert_eq!(
        rc,
        0,
        "chroot {} (restore_tree needs CAP_SYS_CHROOT: run as root): {}",
        root.display(),
        std::io::Error::last_os_error()
    );
    std::env::set_current_dir("/").unwrap();
}

fn jail() -> &'static Jail {
    JAIL.get_or_init(|| {
        let image = build_image();
        let plant = std::env::var("PBIO_FUZZ_PLANT").as_deref() != Ok("0");
        let (to_jail, jail_rx) = sync_channel::<(Vec<u8>, Runs)>(0);
        let (jail_tx, from_jail) = sync_channel::<()>(0);
        let root = tempfile::Builder::new()
            .prefix("pbio-fuzz-jail")
            .tempdir()
            .unwrap()
            .keep();
        JAIL_ROOT.set(root.clone()).unwrap();
        // SAFETY: registers a plain function with no arguments.
        unsafe { libc::atexit(remove_jail) };
        std::thread::Builder::new()
            .name("restore-jail".into())
            .spawn(move || {
                jail_setup(&root);
                for (image, runs) in jail_rx {
                    restore_all(&image, plant, runs);
                    jail_tx.send(()).unwrap();
                }
            })
            .unwrap();
        Jail {
            image,
            to_jail: Mutex::new(to_jail),
            from_jail: Mutex::new(from_jail),
        }
    })
}

/// One entry as it must stay: type and mode bits, owner, size, mtime, and
/// its content (file) or target (symlink).
type Seen = (u32, u32, u32, u64, i64, i64, Vec<u8>);

/// Everything under the jail's root except the destination and the device.
fn snapshot() -> BTreeMap<PathBuf, Seen> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Seen>) {
        let m = fs::symlink_metadata(dir).unwrap();
        out.insert(dir.to_path_buf(), seen(dir, &m));
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            if path == Path::new(DEST) || path == Path::new(DEVICE) {
                continue;
            }
            let m = fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), seen(&path, &m));
            }
        }
    }
    fn seen(path: &Path, m: &fs::Metadata) -> Seen {
        let content = if m.file_type().is_symlink() {
            fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if m.is_file() {
            fs::read(path).unwrap()
        } else {
            Vec::new()
        };
        (
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            content,
        )
    }
    let mut out = BTreeMap::new();
    walk(Path::new("/"), &mut out);
    out
}

fn check(before: &BTreeMap<PathBuf, Seen>, what: &str) {
    let after = snapshot();
    if &after == before {
        return;
    }
    let mut diffs = Vec::new();
    for (path, b) in before {
        match after.get(path) {
            None => diffs.push(format!("removed {}", path.display())),
            Some(a) if a != b => diffs.push(format!(
                "changed {}: (mode, uid, gid, size, mtime) {:o} {} {} {} {}.{:09} -> {:o} {} {} {} {}.{:09}{}",
                path.display(),
                b.0, b.1, b.2, b.3, b.4, b.5,
                a.0, a.1, a.2, a.3, a.4, a.5,
                if a.6 != b.6 { ", content changed" } else { "" }
            )),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("created {}", path.display()));
    }
    panic!(
        "{what} touched what lies outside {DEST}:\n  {}",
        diffs.join("\n  ")
    );
}

/// A fresh destination, with the planted link unless told not to.
fn reset(plant: bool) {
    match fs::symlink_metadata(DEST) {
        Ok(_) => fs::remove_dir_all(DEST).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{DEST}: {e}"),
    }
    fs::create_dir_all(format!("{DEST}/tree")).unwrap();
    if plant {
        std::os::unix::fs::symlink("../../canary", format!("{DEST}/tree/sub")).unwrap();
    }
}

/// `PBIO_FUZZ_DEBUG=1`: say how each restore ended (to read a crash).
fn debug(what: &str, outcome: &dyn std::fmt::Debug) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("PBIO_FUZZ_DEBUG").is_some()) {
        eprintln!("{what}: {outcome:?}");
    }
}

fn restore_catalog() {
    let spec = DeviceSpec::parse(DEVICE).unwrap();
    match restore::open_chain(std::slice::from_ref(&spec), None) {
        Ok(chain) => {
            let to = Path::new(DEST);
            let report = restore::run_chain(
                &chain,
                Action::Restore {
                    to,
                    keep_partial: false,
                },
                &[],
            );
            debug("restore", &report);
        }
        Err(e) => debug("restore: open", &e),
    }
}

fn restore_scan() {
    let spec = DeviceSpec::parse(DEVICE).unwrap();
    match device::open(&spec, Mode::Read) {
        Ok(dev) => {
            let devs = [dev];
            // As the CLI does: the set from the label or the first record.
            let chosen = pbio::media::scan::device_sets(&devs)
                .map_err(|e| e.to_string())
                .and_then(|sets| pbio::media::scan::choose_set(&sets, None));
            match chosen {
                Ok(Some(set_id)) => {
                    let report = restore::scan::restore_from_scan(
                        &devs,
                        Some(Path::new(DEST)),
                        set_id,
                        false,
                    );
                    debug("restore --scan", &report);
                }
                other => debug("restore --scan: no set", &other),
            }
        }
        Err(e) => debug("restore --scan: open", &e),
    }
}

/// Which restores an input runs (a scan allocates its 16 MiB windows
/// anew each time, the slowest part: one scan per input).
#[derive(Clone, Copy)]
enum Runs {
    /// restore, then restore --scan over what it left (a medium can plant
    /// a link in the first for the second to follow).
    RestoreThenScan,
    /// restore --scan into a fresh destination.
    Scan,
}

fn restore_all(image: &[u8], plant: bool, runs: Runs) {
    fs::write(DEVICE, image).unwrap();
    reset(plant);
    let before = snapshot();
    match runs {
        Runs::RestoreThenScan => {
            restore_catalog();
            check(&before, "restore");
            restore_scan();
            check(&before, "restore then restore --scan");
        }
        Runs::Scan => {
            restore_scan();
            check(&before, "restore --scan");
        }
    }
}

/// The input: a mode byte, then with bit 0 clear up to MUTATIONS_MAX
/// (offset u24 LE, byte) pairs, with it set an offset (u24 LE) and the
/// bytes that replace the window there; bit 1 chooses the runs.
fn mutate(image: &mut [u8], data: &[u8]) -> Runs {
    let Some((&mode, rest)) = data.split_first() else {
        return Runs::RestoreThenScan;
    };
    let runs = if mode & 2 == 0 {
        Runs::RestoreThenScan
    } else {
        Runs::Scan
    };
    let len = image.len();
    let offset = |b: &[u8]| (b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16) % len;
    if mode & 1 == 0 {
        for m in rest.chunks_exact(4).take(MUTATIONS_MAX) {
            image[offset(m)] = m[3];
        }
    } else if rest.len() >= 3 {
        let at = offset(rest);
        let window = &rest[3..];
        let n = window.len().min(image.len() - at);
        image[at..at + n].copy_from_slice(&window[..n]);
    }
    runs
}

fuzz_target!(|data: &[u8]| {
    let jail = jail();
    let mut image = jail.image.clone();
    let runs = mutate(&mut image, data);
    jail.to_jail.lock().unwrap().send((image, runs)).unwrap();
    jail.from_jail.lock().unwrap().recv().unwrap();
});

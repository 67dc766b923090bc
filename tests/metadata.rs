//! Metadata beyond stat (issue 21), on real filesystems: a source tree on
//! ext4 in a loop device holding user, trusted and security xattrs, an
//! access and a default POSIX ACL, a file capability, a fifo with a second
//! name, a character and a block device node, a socket, an immutable and an
//! append-only file; backed up to two raw loop devices, restored onto
//! another ext4 loop mount, and every attribute compared: kind, mode,
//! owner, rdev, mtime, content, hard links, every xattr (read with this
//! file's own llistxattr/lgetxattr reader), `getcap`, `getfacl` and
//! `lsattr`. `restore --scan` (no catalog) gives the regular files their
//! xattrs back too. The socket is named as skipped. `pbio diff` finds the
//! restored tree the same as the set, then names an ACL changed on it.
//!
//! Needs root, loop devices, mkfs.ext4, setfacl/getfacl (acl), setcap/getcap
//! (libcap2-bin), chattr/lsattr (e2fsprogs), setfattr (attr): under
//! `CI=true` a missing one fails the test, elsewhere it is skipped with a
//! printed reason.

#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use loopdev::{loop_devices_available, pbio, LoopDev};

const DEVICE_BYTES: u64 = 64 << 20;
const EXT4_BYTES: u64 = 64 << 20;

/// The tools the test runs, and the package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("mkfs.ext4", "e2fsprogs"),
    ("chattr", "e2fsprogs"),
    ("lsattr", "e2fsprogs"),
    ("setfacl", "acl"),
    ("getfacl", "acl"),
    ("setcap", "libcap2-bin"),
    ("getcap", "libcap2-bin"),
    ("setfattr", "attr"),
    ("mount", "mount"),
];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when everything the test needs is here; panics under CI when not.
fn available(test: &str) -> bool {
    if !loop_devices_available(test) {
        return false;
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| !have(tool))
        .map(|(tool, package)| format!("{tool} ({package})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("missing tools: {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs them under CI, but {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// An ext4 filesystem on a loop device, mounted; on drop every file's
/// immutable and append-only flags are cleared (so nothing is left that
/// cannot be removed), then it is unmounted and the device detached.
struct Ext4 {
    mnt: PathBuf,
    _dev: LoopDev,
}

impl Ext4 {
    fn new(dir: &Path, name: &str) -> Ext4 {
        let dev = LoopDev::new(&dir.join(format!("{name}.img")), EXT4_BYTES);
        // 4 KiB blocks, and xattr values in their own inodes (ea_inode)
        // so that one larger than a block fits.
        sh(&[
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-O",
            "ea_inode",
            &dev.arg(),
        ]);
        let mnt = dir.join(name);
        fs::create_dir(&mnt).unwrap();
        sh(&["mount", "-t", "ext4", &dev.arg(), p(&mnt)]);
        Ext4 { mnt, _dev: dev }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-f", "-i", "-a"])
            .arg(&self.mnt)
            .status();
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// Every xattr of `path` (not following a symlink), by name: this test's
/// own reader, independent of pbio's.
fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut list = vec![0u8; 65536];
    // SAFETY: NUL-terminated path; buffer valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    list.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: NUL-terminated path and name; buffer valid for its length.
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cn.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(
            m >= 0,
            "lgetxattr {} {}",
            path.display(),
            name.escape_ascii()
        );
        value.truncate(m as usize);
        out.insert(name.to_vec(), value);
    }
    out
}

/// Everything compared of one entry: kind, mode, owner, rdev, mtime,
/// content (regular files), symlink target, xattrs.
fn describe(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap();
    let t = m.file_type();
    let kind = if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "other"
    };
    let content = if t.is_file() {
        format!("{:?}", blake3_like(&fs::read(path).unwrap()))
    } else if t.is_symlink() {
        format!("-> {}", fs::read_link(path).unwrap().display())
    } else {
        String::new()
    };
    let mtime = if t.is_dir() {
        // Directory mtimes are restored too, but the source's change as
        // the test adds to it: compared separately where they matter.
        String::new()
    } else {
        format!("{}.{:09}", m.mtime(), m.mtime_nsec())
    };
    format!(
        "{kind} {:o} {}:{} rdev {}:{} mtime {mtime} {content} xattrs {:?}",
        m.mode(),
        m.uid(),
        m.gid(),
        libc::major(m.rdev()),
        libc::minor(m.rdev()),
        xattrs(path)
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect::<Vec<_>>()
    )
}

/// A cheap content fingerprint (length and a rolling sum).
fn blake3_like(bytes: &[u8]) -> (usize, u64) {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (bytes.len(), h)
}

/// Paths below `root` (relative, sorted), not following symlinks.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        if !rel.as_os_str().is_empty() {
            out.push(rel.clone());
        }
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                let name = e.unwrap().file_name();
                if name != "lost+found" {
                    stack.push(rel.join(name));
                }
            }
        }
    }
    out.sort();
    out
}

fn touch(path: &Path, when: &str) {
    sh(&["touch", "-h", "-d", when, p(path)]);
}

/// The source tree on `mnt`: see the module docs.
fn make_source(mnt: &Path) -> PathBuf {
    let src = mnt.join("tree");
    let sub = src.join("sub");
    fs::create_dir_all(&sub).unwrap();
    let write = |name: &str, bytes: &[u8]| fs::write(src.join(name), bytes).unwrap();
    write("plain", b"plain content\n");
    sh(&[
        "setfattr",
        "-n",
        "user.comment",
        "-v",
        "hello",
        p(&src.join("plain")),
    ]);
    sh(&["setfattr", "-n", "user.empty", p(&src.join("plain"))]);
    sh(&[
        "setfattr",
        "-n",
        "user.binary",
        "-v",
        "0x00ff10",
        p(&src.join("plain")),
    ]);
    sh(&[
        "setfattr",
        "-n",
        "trusted.t",
        "-v",
        "trusted value",
        p(&src.join("plain")),
    ]);
    sh(&[
        "setfattr",
        "-n",
        "security.pbio",
        "-v",
        "sec",
        p(&src.join("plain")),
    ]);
    write("acl", b"with an access ACL\n");
    sh(&["setfacl", "-m", "u:1234:r,g:100:rw", p(&src.join("acl"))]);
    write("ping", &[0x7f, b'E', b'L', b'F', 1, 2, 3]);
    sh(&["chmod", "755", p(&src.join("ping"))]);
    sh(&["setcap", "cap_net_raw+ep", p(&src.join("ping"))]);
    write("big-xattr", &vec![7u8; 300_000]);
    // Too big for a record header: the catalog keeps it, a scan cannot.
    sh(&[
        "setfattr",
        "-n",
        "user.big",
        "-v",
        &format!("0s{}", "QUJD".repeat(1500)),
        p(&src.join("big-xattr")),
    ]);
    sh(&[
        "setfattr",
        "-n",
        "user.small",
        "-v",
        "s",
        p(&src.join("big-xattr")),
    ]);
    write("immutable", b"cannot change\n");
    sh(&[
        "setfattr",
        "-n",
        "user.before",
        "-v",
        "i",
        p(&src.join("immutable")),
    ]);
    write("append-only", b"log line\n");
    // A default ACL (inherited by new entries) and an access ACL on a directory.
    sh(&["setfacl", "-d", "-m", "u:1234:rwx", p(&sub)]);
    sh(&["setfacl", "-m", "u:1234:rx", p(&sub)]);
    sh(&["setfattr", "-n", "user.dir", "-v", "d", p(&sub)]);
    fs::write(sub.join("inherits"), b"made under a default ACL\n").unwrap();
    // Special files: a fifo with a second name, device nodes, a socket.
    sh(&["mkfifo", "-m", "0640", p(&src.join("fifo"))]);
    sh(&[
        "setfattr",
        "-n",
        "trusted.fifo",
        "-v",
        "f",
        p(&src.join("fifo")),
    ]);
    fs::hard_link(src.join("fifo"), src.join("fifo-link")).unwrap();
    sh(&["mknod", "-m", "0666", p(&src.join("null")), "c", "1", "3"]);
    sh(&["chown", "1234:100", p(&src.join("null"))]);
    sh(&[
        "mknod",
        "-m",
        "0660",
        p(&src.join("loop200")),
        "b",
        "7",
        "200",
    ]);
    std::os::unix::fs::symlink("plain", src.join("link")).unwrap();
    sh(&[
        "setfattr",
        "-h",
        "-n",
        "trusted.link",
        "-v",
        "l",
        p(&src.join("link")),
    ]);
    let socket = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    drop(socket); // the name stays
    for (i, name) in [
        "plain",
        "acl",
        "ping",
        "big-xattr",
        "immutable",
        "append-only",
        "fifo",
        "null",
        "loop200",
        "link",
        "sub/inherits",
    ]
    .iter()
    .enumerate()
    {
        touch(
            &src.join(name),
            &format!("2021-0{}-0{} 12:34:56.123456789", 1 + i % 9, 1 + i % 9),
        );
    }
    // Flags last: an immutable file takes no more changes.
    sh(&["chattr", "+i", p(&src.join("immutable"))]);
    sh(&["chattr", "+a", p(&src.join("append-only"))]);
    src
}

/// `lsattr -d` flags of a regular file or directory, e.g. "----i---------e-------".
fn lsattr(path: &Path) -> String {
    sh(&["lsattr", "-d", p(path)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn getfacl(path: &Path) -> String {
    // Without the "# file:" header (the paths differ).
    sh(&["getfacl", "-c", "-p", p(path)])
}

#[test]
fn xattrs_acls_capabilities_flags_and_special_files_round_trip() {
    let test = "xattrs_acls_capabilities_flags_and_special_files_round_trip";
    if !available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let source_fs = Ext4::new(dir, "srcfs");
    let dest_fs = Ext4::new(dir, "dstfs");
    let src = make_source(&source_fs.mnt);
    let devs: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&dir.join(format!("dev{i}.img")), DEVICE_BYTES))
        .collect();
    let dev_args: Vec<String> = devs
        .iter()
        .flat_map(|d| ["--dev".to_string(), d.arg()])
        .collect();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(dev_args.iter().map(String::as_str));
        pbio(&all)
    };

    let (code, out, err) = run(&["backup", p(&src), "--force"]);
    assert_eq!(code, 0, "backup: {out}\n{err}");
    // The socket is named as skipped, nothing else is.
    let skipped: Vec<&str> = err.lines().filter(|l| l.contains("skipped")).collect();
    assert_eq!(skipped.len(), 1, "{err}");
    assert!(
        skipped[0].contains("sock") && skipped[0].contains("socket"),
        "{err}"
    );

    // The catalog lists the kinds.
    let (code, list, err) = pbio(&["list", "--dev", &devs[0].arg()]);
    assert_eq!(code, 0, "list: {err}");
    for (kind, name) in [
        ("fifo", "tree/fifo"),
        ("hardlink", "tree/fifo-link"),
        ("chardev", "tree/null"),
        ("blocknod", "tree/loop200"),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(kind) && l.contains(name)),
            "{kind} {name} in:\n{list}"
        );
    }
    assert!(!list.contains("tree/sock"), "{list}");

    let to = dest_fs.mnt.join("out");
    let (code, out, err) = run(&["restore", "--to", p(&to)]);
    assert_eq!(code, 0, "restore: {out}\n{err}");
    assert!(!err.contains("warning"), "no warning on ext4: {err}");
    let restored = to.join("tree");

    // The same entries (the socket left out), each with every attribute.
    let mut expected = tree(&src);
    expected.retain(|rel| rel != Path::new("sock"));
    assert_eq!(tree(&restored), expected);
    for rel in &expected {
        assert_eq!(
            describe(&restored.join(rel)),
            describe(&src.join(rel)),
            "{}",
            rel.display()
        );
    }
    // The things the description covers, spelled out.
    let plain = xattrs(&restored.join("plain"));
    assert_eq!(plain[&b"user.comment"[..]], b"hello");
    assert_eq!(plain[&b"user.empty"[..]], b"");
    assert_eq!(plain[&b"user.binary"[..]], [0, 0xff, 0x10]);
    assert_eq!(plain[&b"trusted.t"[..]], b"trusted value");
    assert_eq!(plain[&b"security.pbio"[..]], b"sec");
    let sub = xattrs(&restored.join("sub"));
    assert!(sub.contains_key(&b"system.posix_acl_access"[..]), "{sub:?}");
    assert!(
        sub.contains_key(&b"system.posix_acl_default"[..]),
        "{sub:?}"
    );
    for rel in ["acl", "sub", "sub/inherits"] {
        assert_eq!(
            getfacl(&restored.join(rel)),
            getfacl(&src.join(rel)),
            "{rel}"
        );
    }
    assert!(getfacl(&restored.join("acl")).contains("user:1234:r--"));
    assert!(getfacl(&restored.join("sub")).contains("default:user:1234:rwx"));
    let cap = sh(&["getcap", p(&restored.join("ping"))]);
    assert!(cap.contains("cap_net_raw=ep"), "getcap: {cap}");
    assert_eq!(
        xattrs(&restored.join("big-xattr"))[&b"user.big"[..]].len(),
        4500
    );
    for rel in ["plain", "immutable", "append-only", "sub", "ping"] {
        assert_eq!(lsattr(&restored.join(rel)), lsattr(&src.join(rel)), "{rel}");
    }
    assert!(lsattr(&restored.join("immutable")).contains('i'));
    assert!(lsattr(&restored.join("append-only")).contains('a'));
    assert!(fs::write(restored.join("immutable"), b"x").is_err());
    // The fifo's two names are one inode; device numbers kept.
    let fifo = fs::symlink_metadata(restored.join("fifo")).unwrap();
    let link = fs::symlink_metadata(restored.join("fifo-link")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!((fifo.ino(), fifo.nlink()), (link.ino(), 2));
    let null = fs::symlink_metadata(restored.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert_eq!((null.uid(), null.gid()), (1234, 100));
    let node = fs::symlink_metadata(restored.join("loop200")).unwrap();
    assert!(node.file_type().is_block_device());
    assert_eq!(
        (libc::major(node.rdev()), libc::minor(node.rdev())),
        (7, 200)
    );

    // pbio diff: the restored tree is the same as the set, xattrs, ACLs,
    // capability, flags and device numbers included; an ACL changed on
    // disk is named as its xattr.
    let (code, out, err) = run(&["diff", "--to", p(&to)]);
    assert_eq!(code, 0, "diff: {out}\n{err}");
    sh(&["setfacl", "-m", "u:4321:r", p(&restored.join("acl"))]);
    let (code, out, err) = run(&["diff", "--to", p(&to)]);
    assert_eq!(code, 1, "diff: {out}\n{err}");
    assert!(
        out.contains("tree/acl: xattr system.posix_acl_access changed"),
        "{out}"
    );

    // restore --scan: no catalog, the regular files' xattrs from their
    // first record; one too big for a record header is named.
    let scan_to = dest_fs.mnt.join("scan");
    let (code, out, err) = run(&["restore", "--scan", "--to", p(&scan_to)]);
    assert_eq!(code, 0, "restore --scan: {out}\n{err}");
    let scanned = scan_to.join("tree");
    for rel in [
        "plain",
        "acl",
        "ping",
        "immutable",
        "append-only",
        "sub/inherits",
    ] {
        assert_eq!(
            xattrs(&scanned.join(rel)),
            xattrs(&src.join(rel)),
            "--scan: {rel}"
        );
    }
    assert!(sh(&["getcap", p(&scanned.join("ping"))]).contains("cap_net_raw=ep"));
    let big = xattrs(&scanned.join("big-xattr"));
    assert_eq!(
        big.get(&b"user.small"[..]).map(Vec::as_slice),
        Some(&b"s"[..])
    );
    assert!(!big.contains_key(&b"user.big"[..]));
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning:") && l.contains("big-xattr")),
        "{err}"
    );
}

//! The command line against names and media it must not trust (issue 17),
//! on real loop devices:
//! - names with escape sequences, line ends, a bidi override and invalid
//!   UTF-8 are printed escaped by backup, list, restore (with a damaged
//!   record naming one), restore --scan and verify; `--json` keeps them;
//! - `scan` of a device holding no pbio record (seeded random bytes,
//!   zeros) exits 3 naming the device;
//! - output into a pipe closed early (`pbio list | head -1`) ends quietly,
//!   not with a panic.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use loopdev::{loop_devices_available, LoopDev};
use serde_json::Value;

/// What follows the line end inside one name: a line starting with it
/// would mean the name's LF reached the output raw.
const AFTER_LF: &str = "second-half";

/// The hostile names, under `tree/`: (raw name, as shown escaped).
fn names() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"red\x1b[31mred".to_vec(), "red\\e[31mred"),
        (
            format!("first\n{AFTER_LF}").into_bytes(),
            "first\\nsecond-half",
        ),
        (b"cr\rreturn".to_vec(), "cr\\rreturn"),
        (
            "rtl\u{202e}txt.exe".as_bytes().to_vec(),
            "rtl\\u{202e}txt.exe",
        ),
        (b"bad\xff\xfeutf8".to_vec(), "bad\\xff\\xfeutf8"),
        (b"title\x1b]0;pwned\x07".to_vec(), "title\\e]0;pwned\\u{7}"),
    ]
}

/// Run pbio; (exit code, raw stdout, raw stderr).
fn run(args: &[&OsStr]) -> (i32, Vec<u8>, Vec<u8>) {
    let out = Command::new(env!("CARGO_BIN_EXE_pbio"))
        .args(args)
        .output()
        .expect("run pbio");
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// No byte of a hostile name reaches the output raw: no ESC, CR, BEL,
/// C1 control or bidi override, only valid UTF-8, and no line begins
/// with what follows a name's own line end.
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what}: output is not UTF-8 ({e}): {bytes:?}"));
    for (i, c) in text.char_indices() {
        let bad = match c {
            '\n' | '\t' => false,
            c if c.is_control() => true,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
            _ => false,
        };
        assert!(
            !bad,
            "{what}: raw {c:?} at byte {i} of the output:\n{}",
            text.escape_debug()
        );
    }
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with(AFTER_LF),
            "{what}: a name's line end reached the output raw:\n{text}"
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn make_tree(root: &Path) -> PathBuf {
    let tree = root.join("tree");
    std::fs::create_dir(&tree).unwrap();
    for (i, (name, _)) in names().iter().enumerate() {
        let path = tree.join(OsStr::from_bytes(name));
        std::fs::write(&path, vec![i as u8 + 1; 5000 + i * 100]).unwrap();
    }
    let dir = tree.join(OsStr::from_bytes(b"dir\x1b[2J"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("inner"), b"inside").unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"target\x1b[5m\r"),
        tree.join(OsStr::from_bytes(b"link\x1b[7m")),
    )
    .unwrap();
    tree
}

#[test]
fn hostile_names_are_shown_escaped_and_exact_in_json() {
    if !loop_devices_available("hostile_names_are_shown_escaped_and_exact_in_json") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let dev = LoopDev::new(&dir.path().join("d0.img"), 64 << 20);
    let d = dev.arg();
    let dev_arg = os(&d);

    // A socket named with an escape sequence is skipped and named, escaped.
    let socket = tree.join(OsStr::from_bytes(b"sock\x1b[31m"));
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let (code, out, err) = run(&[os("plan"), os("--dev"), dev_arg, tree.as_os_str()]);
    assert_eq!(code, 0, "{}", text(&err));
    assert_clean("backup with a socket (stdout)", &out);
    assert_clean("backup with a socket (stderr)", &err);
    assert!(text(&err).contains("sock\\e[31m"), "{}", text(&err));
    std::fs::remove_file(&socket).unwrap();

    // The plan's JSON carries the names exactly.
    let (code, out, err) = run(&[
        os("plan"),
        os("--json"),
        os("--dev"),
        dev_arg,
        tree.as_os_str(),
    ]);
    assert_eq!(code, 0, "{}", text(&err));
    let plan: Value = serde_json::from_slice(&out).unwrap();
    let planned: Vec<&str> = plan["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(planned.contains(&"tree/red\u{1b}[31mred"), "{planned:?}");

    // Backup: progress and summary clean.
    let (code, out, err) = run(&[
        os("backup"),
        os("--chunk"),
        os("4K"),
        os("--dev"),
        dev_arg,
        tree.as_os_str(),
    ]);
    assert_eq!(code, 0, "{}\n{}", text(&out), text(&err));
    assert_clean("backup (stdout)", &out);
    assert_clean("backup (stderr)", &err);

    // list: every name escaped, one line per entry.
    let (code, out, err) = run(&[os("list"), os("--segments"), os("--dev"), dev_arg]);
    assert_eq!(code, 0, "{}", text(&err));
    assert_clean("list (stdout)", &out);
    assert_clean("list (stderr)", &err);
    let listing = text(&out);
    for (_, shown) in names() {
        assert!(
            listing.contains(&format!("tree/{shown}")),
            "{shown} not in\n{listing}"
        );
    }
    assert!(listing.contains("tree/dir\\e[2J/inner"), "{listing}");
    assert!(
        listing.contains("tree/link\\e[7m -> target\\e[5m\\r"),
        "{listing}"
    );

    // list --json: the names exactly (invalid UTF-8 as U+FFFD in "path",
    // its exact bytes in "path_hex").
    let (code, out, err) = run(&[os("list"), os("--json"), os("--dev"), dev_arg]);
    assert_eq!(code, 0, "{}", text(&err));
    let catalog: Value = serde_json::from_slice(&out).unwrap();
    let listed: Vec<&str> = catalog["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for (name, _) in names() {
        let want = format!("tree/{}", String::from_utf8_lossy(&name));
        assert!(
            listed.contains(&want.as_str()),
            "{want:?} not in {listed:?}"
        );
    }
    assert!(listed.contains(&"tree/first\nsecond-half"));
    assert!(listed.contains(&"tree/bad\u{fffd}\u{fffd}utf8"));
    for f in catalog["files"].as_array().unwrap() {
        let exact = f["path_hex"].as_str().map(|hex| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        });
        match f["path"].as_str().unwrap() {
            "tree/bad\u{fffd}\u{fffd}utf8" => {
                assert_eq!(exact.as_deref(), Some(&b"tree/bad\xff\xfeutf8"[..]), "{f}")
            }
            _ => assert_eq!(exact, None, "a UTF-8 name needs no path_hex: {f}"),
        }
    }

    // Damage the payload of the record of `red\e[31mred`: restore, verify
    // and restore --scan name it, escaped.
    let (_, out, _) = run(&[
        os("list"),
        os("--segments"),
        os("--json"),
        os("--dev"),
        dev_arg,
    ]);
    let catalog: Value = serde_json::from_slice(&out).unwrap();
    let segment = catalog["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "tree/red\u{1b}[31mred")
        .expect("a segment of the red file");
    let payload_at = segment["position"].as_u64().unwrap() + 4096 + 10;
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev.path)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, payload_at).unwrap();
        f.write_all_at(&[byte[0] ^ 0x55], payload_at).unwrap();
        f.sync_all().unwrap();
    }

    let dest = dir.path().join("restored");
    let (code, out, err) = run(&[
        os("restore"),
        os("--dev"),
        dev_arg,
        os("--to"),
        dest.as_os_str(),
    ]);
    assert_eq!(code, 3, "{}\n{}", text(&out), text(&err));
    assert_clean("restore (stdout)", &out);
    assert_clean("restore (stderr)", &err);
    assert!(text(&err).contains("red\\e[31mred"), "{}", text(&err));
    // The other hostile names came back exactly.
    let inner = dest
        .join("tree")
        .join(OsStr::from_bytes(b"dir\x1b[2J/inner"));
    assert_eq!(std::fs::read(inner).unwrap(), b"inside");
    assert!(dest
        .join("tree")
        .join(OsStr::from_bytes(b"bad\xff\xfeutf8"))
        .exists());

    let (code, out, err) = run(&[os("verify"), os("--dev"), dev_arg]);
    assert_eq!(code, 3, "{}\n{}", text(&out), text(&err));
    assert_clean("verify (stdout)", &out);
    assert_clean("verify (stderr)", &err);
    assert!(text(&err).contains("red\\e[31mred"), "{}", text(&err));

    let dest_scan = dir.path().join("scanned");
    let (code, out, err) = run(&[
        os("restore"),
        os("--scan"),
        os("--dev"),
        dev_arg,
        os("--to"),
        dest_scan.as_os_str(),
    ]);
    assert_eq!(code, 3, "{}\n{}", text(&out), text(&err));
    assert_clean("restore --scan (stdout)", &out);
    assert_clean("restore --scan (stderr)", &err);
    assert!(text(&err).contains("red\\e[31mred"), "{}", text(&err));

    // restore --scan --json: exact names.
    let dest_json = dir.path().join("scanned-json");
    let (code, out, _) = run(&[
        os("restore"),
        os("--scan"),
        os("--json"),
        os("--dev"),
        dev_arg,
        os("--to"),
        dest_json.as_os_str(),
    ]);
    assert_eq!(code, 3);
    let summary: Value = serde_json::from_slice(&out).unwrap();
    let incomplete: Vec<&str> = summary["incomplete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(incomplete, ["tree/red\u{1b}[31mred"]);
    let restored: Vec<&str> = summary["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        restored.contains(&"tree/rtl\u{202e}txt.exe"),
        "{restored:?}"
    );
}

/// A loop device of `bytes`, filled by `fill`.
fn filled_loop(dir: &Path, name: &str, bytes: u64, fill: impl Fn(&mut [u8])) -> LoopDev {
    let backing = dir.join(name);
    let dev = LoopDev::new(&backing, bytes);
    let mut buf = vec![0u8; bytes as usize];
    fill(&mut buf);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.path)
        .unwrap();
    f.write_all_at(&buf, 0).unwrap();
    f.sync_all().unwrap();
    dev
}

#[test]
fn scan_of_a_device_with_no_record_fails_naming_it() {
    if !loop_devices_available("scan_of_a_device_with_no_record_fails_naming_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let random = filled_loop(dir.path(), "random.img", 8 << 20, |buf| {
        common::Rng::new(0x005c_a917).fill(buf)
    });
    let zeros = filled_loop(dir.path(), "zeros.img", 8 << 20, |_| {});
    for dev in [&random, &zeros] {
        let d = dev.arg();
        let (code, out, err) = run(&[os("scan"), os("--dev"), os(&d)]);
        let err = text(&err);
        assert_eq!(code, 3, "{d}: {}\n{err}", text(&out));
        // Every block after the label's is read and none holds a record.
        let blocks = (8u64 << 20) / 4096 - 1;
        assert!(
            err.contains(&format!(
                "no pbio record found on {d}: {blocks} blocks read"
            )),
            "{d}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let (code, out, _) = run(&[os("scan"), os("--json"), os("--dev"), os(&d)]);
        assert_eq!(code, 3);
        let summary: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(summary["records"], 0);
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    if !loop_devices_available("output_into_a_closed_pipe_ends_quietly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Enough entries that the listing outgrows the pipe's buffer (64 KiB).
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..3000 {
        std::fs::write(tree.join(format!("file-with-a-longish-name-{i:05}")), b"").unwrap();
    }
    // And enough records that the scan's listing does too.
    std::fs::write(tree.join("big"), vec![3u8; 8 << 20]).unwrap();
    let dev = LoopDev::new(&dir.path().join("d0.img"), 64 << 20);
    let d = dev.arg();
    let (code, _, err) = run(&[
        os("backup"),
        os("--chunk"),
        os("4K"),
        os("--dev"),
        os(&d),
        tree.as_os_str(),
    ]);
    assert_eq!(code, 0, "{}", text(&err));

    for args in [
        vec!["list", "--dev", &d],
        vec!["list", "--json", "--dev", &d],
        vec!["scan", "--dev", &d],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pbio"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?}: no output");
        drop(reader); // `| head -1`
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{args:?}: panicked: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

//! The overwrite guard on real loop devices (issue 11's acceptance): a
//! device holding ext4, a mounted one, one claimed by another opener, one
//! holding another pbio set, a file backing a loop device, a block device
//! that is also a source; `--force` and `--overwrite`. Every refusal is
//! exit 2, names the device and what was found, and writes nothing. Also:
//! the signatures pbio names agree with `blkid -p` on images made by the
//! real tools (each tool that is installed), and the `--json` stream of a
//! real backup on loop devices is complete and consistent.

mod common;
#[path = "common/events.rs"]
mod events;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use events::tool;
use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = common::Rng::new(7);
    let mut big = vec![0u8; 6 << 20];
    rng.fill(&mut big);
    std::fs::write(src.join("big.bin"), big).unwrap();
    std::fs::write(src.join("sub/note.txt"), b"note").unwrap();
    src
}

/// The first and last MiB of a device, to show a refusal wrote nothing.
fn ends(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let size = {
        use std::io::Seek;
        let mut f = &f;
        f.seek(std::io::SeekFrom::End(0)).unwrap()
    };
    let n = size.min(1 << 20);
    let mut out = vec![0u8; 2 * n as usize];
    let (head, tail) = out.split_at_mut(n as usize);
    f.read_exact_at(head, 0).unwrap();
    f.read_exact_at(tail, size - n).unwrap();
    out
}

fn must(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mkfs_ext4(dev: &Path, label: &str) {
    must(
        Command::new(tool("mkfs.ext4").expect("mkfs.ext4 (e2fsprogs)"))
            .args(["-q", "-F", "-L", label])
            .arg(dev),
    );
}

/// Refused with exit 2, the error naming every needle, nothing written on `dev`.
fn refused(args: &[String], dev: &Path, needles: &[&str]) -> String {
    let before = ends(dev);
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "{args:?}: expected exit 2\n{out}\n{err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: error lacks {needle:?}: {err}"
        );
    }
    assert!(
        err.contains("nothing was written") || err.contains("also a source"),
        "{err}"
    );
    assert!(
        ends(dev) == before,
        "{args:?}: the refused device was written"
    );
    err
}

/// A filesystem mounted on a temporary directory; unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(dev: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        must(Command::new("mount").arg(dev).arg(dir.path()));
        Mounted { dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn ext4_is_refused_and_force_overrides() {
    if !loop_devices_available("ext4_is_refused_and_force_overrides") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let dev = LoopDev::new(&dir.path().join("ext4.img"), 64 << 20);
    mkfs_ext4(&dev.path, "precious");
    let args = vec!["backup".into(), s(&src), "--dev".into(), dev.arg()];
    let err = refused(
        &args,
        &dev.path,
        &[&dev.arg(), "(ext4)", "\"precious\"", "--force"],
    );
    assert!(!err.contains("mounted"), "{err}");
    // The no-subcommand form is guarded the same way.
    refused(&args[1..], &dev.path, &["(ext4)"]);
    // --force overrides: the backup runs and the device then holds the set.
    let mut forced = args.clone();
    forced.extend(["--force".into(), "--json".into()]);
    let (code, out, err) = run(&forced);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let id = summary["set_id"].as_str().unwrap();
    let (code, out, err) = pbio(&["verify", "--dev", &dev.arg()]);
    assert_eq!(code, 0, "{out}\n{err}");
    refused(&args, &dev.path, &[id, "--overwrite"]);
}

#[test]
fn mounted_device_is_refused_even_with_force() {
    if !loop_devices_available("mounted_device_is_refused_even_with_force") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let dev = LoopDev::new(&dir.path().join("mounted.img"), 64 << 20);
    mkfs_ext4(&dev.path, "live");
    let mount = Mounted::new(&dev.path);
    std::fs::write(mount.dir.path().join("data"), b"in use").unwrap();
    let mut args = vec!["backup".into(), s(&src), "--dev".into(), dev.arg()];
    let at = s(mount.dir.path());
    refused(&args, &dev.path, &[&dev.arg(), "mounted on", &at]);
    args.push("--force".into());
    refused(
        &args,
        &dev.path,
        &[&dev.arg(), "mounted on", &at, "--force does not override"],
    );
    assert_eq!(
        std::fs::read(mount.dir.path().join("data")).unwrap(),
        b"in use"
    );

    // btrfs mounts carry an anonymous device number: found by source instead.
    if let Some(mkfs) = tool("mkfs.btrfs") {
        let dev = LoopDev::new(&dir.path().join("btrfs.img"), 128 << 20);
        must(Command::new(mkfs).arg("-q").arg(&dev.path));
        let _mount = Mounted::new(&dev.path);
        let args = vec![
            "backup".into(),
            s(&src),
            "--dev".into(),
            dev.arg(),
            "--force".into(),
        ];
        refused(&args, &dev.path, &[&dev.arg(), "mounted on"]);
    } else {
        eprintln!("note: mkfs.btrfs not installed; btrfs mount case not run");
    }
}

#[test]
fn device_claimed_by_another_opener_is_refused() {
    if !loop_devices_available("device_claimed_by_another_opener_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let dev = LoopDev::new(&dir.path().join("claimed.img"), 64 << 20);
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev.path)
        .unwrap();
    let args = vec![
        "backup".into(),
        s(&src),
        "--dev".into(),
        dev.arg(),
        "--force".into(),
    ];
    refused(&args, &dev.path, &[&dev.arg(), "in use"]);
    drop(held);
    // The claim goes with the last close. Other tests of this binary fork
    // children concurrently, and a child holds a copy of every descriptor
    // until its exec closes them (O_CLOEXEC): give the release a moment.
    let mut attempt = 0;
    let (code, out, err) = loop {
        let (code, out, err) = run(&args);
        attempt += 1;
        if code == 0 || attempt == 5 || !err.contains("in use") {
            break (code, out, err);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn another_pbio_set_is_refused_until_overwrite_names_it() {
    if !loop_devices_available("another_pbio_set_is_refused_until_overwrite_names_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let a = LoopDev::new(&dir.path().join("a.img"), 48 << 20);
    let b = LoopDev::new(&dir.path().join("b.img"), 48 << 20);
    let mut args = vec!["backup".to_string(), s(&src)];
    args.extend(["--dev".into(), a.arg(), "--dev".into(), b.arg()]);
    let mut first = args.clone();
    first.push("--json".into());
    let (code, out, err) = run(&first);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = events::check_stream(&out, 2);
    let id = summary["set_id"].as_str().unwrap().to_string();

    // Both devices are named, each with the set it holds.
    let err = refused(
        &args,
        &a.path,
        &[&a.arg(), &b.arg(), &id, &format!("--overwrite {id}")],
    );
    assert!(
        err.contains("device 1 of 2") && err.contains("device 2 of 2"),
        "{err}"
    );
    let mut wrong = args.clone();
    wrong.extend(["--overwrite".into(), "ab".repeat(16)]);
    refused(&wrong, &a.path, &[&id]);

    let mut overwrite = args.clone();
    overwrite.extend(["--overwrite".into(), id.clone(), "--json".into()]);
    let (code, out, err) = run(&overwrite);
    assert_eq!(code, 0, "{out}\n{err}");
    let second = events::check_stream(&out, 2);
    assert_ne!(second["set_id"], id.as_str());
    let (code, out, err) = pbio(&["list", "--dev", &b.arg(), "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(second["set_id"].as_str().unwrap()), "{out}");
}

#[test]
fn loop_backing_file_and_block_source_are_refused() {
    if !loop_devices_available("loop_backing_file_and_block_source_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let backing = dir.path().join("backing.img");
    let dev = LoopDev::new(&backing, 48 << 20);
    let name = dev.path.file_name().unwrap().to_string_lossy().into_owned();
    let args = vec![
        "backup".into(),
        s(&src),
        "--dev".into(),
        s(&backing),
        "--force".into(),
    ];
    refused(&args, &backing, &[&s(&backing), "backing file", &name]);
    let args = vec!["backup".into(), dev.arg(), "--dev".into(), dev.arg()];
    refused(&args, &dev.path, &["also a source"]);
}

#[test]
fn json_events_of_a_loop_device_backup() {
    if !loop_devices_available("json_events_of_a_loop_device_backup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    std::fs::create_dir_all(&src).unwrap();
    common::make_fixture_tree(&src, 300, 24 << 20);
    let devs: Vec<LoopDev> = (0..3)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 40 << 20))
        .collect();
    let mut args = vec!["backup".to_string(), s(&src), "--json".into()];
    args.extend([
        "--json-interval".into(),
        "0.02".into(),
        "--chunk".into(),
        "256K".into(),
    ]);
    for d in &devs {
        args.extend(["--dev".into(), d.arg()]);
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = events::check_stream(&out, 3);
    for (i, d) in summary["devices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(d["path"], devs[i].arg());
        assert!(d["payload_bytes_zero_copy"].as_u64().is_some());
    }
}

/// blkid's name for what an image holds: TYPE, else PTTYPE.
fn blkid_name(blkid: &Path, image: &Path) -> Option<String> {
    let out = Command::new(blkid)
        .args(["-p", "-o", "export"])
        .arg(image)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.to_string()))
    };
    field("TYPE=").or_else(|| field("PTTYPE="))
}

#[test]
fn signatures_agree_with_blkid() {
    let Some(blkid) = tool("blkid") else {
        eprintln!("SKIPPED signatures_agree_with_blkid: blkid (util-linux) not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let key = dir.path().join("key");
    std::fs::write(&key, b"not a secret").unwrap();
    let iso_src = dir.path().join("iso");
    std::fs::create_dir(&iso_src).unwrap();
    std::fs::write(iso_src.join("f"), b"x").unwrap();
    type Make = Box<dyn Fn(&Path) -> Command>;
    let with = |tool: &str, args: &'static [&'static str]| -> Make {
        let t = tool.to_string();
        Box::new(move |img: &Path| {
            let mut c = Command::new(events::tool(&t).unwrap());
            c.args(args).arg(img);
            c
        })
    };
    let sfdisk = |script: &'static str| -> Make {
        Box::new(move |img: &Path| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "printf '{script}' | '{}' -q '{}'",
                events::tool("sfdisk").unwrap().display(),
                img.display()
            ));
            c
        })
    };
    let cases: Vec<(&str, &str, u64, Make)> = vec![
        (
            "ext2",
            "mkfs.ext4",
            16,
            with("mkfs.ext4", &["-q", "-F", "-t", "ext2", "-L", "old"]),
        ),
        (
            "ext3",
            "mkfs.ext4",
            16,
            with("mkfs.ext4", &["-q", "-F", "-t", "ext3"]),
        ),
        ("ext4", "mkfs.ext4", 16, with("mkfs.ext4", &["-q", "-F"])),
        ("swap", "mkswap", 16, with("mkswap", &["-L", "sw"])),
        ("xfs", "mkfs.xfs", 320, with("mkfs.xfs", &["-q", "-f"])),
        (
            "btrfs",
            "mkfs.btrfs",
            128,
            with("mkfs.btrfs", &["-q", "-f"]),
        ),
        ("vfat", "mkfs.vfat", 16, with("mkfs.vfat", &["-n", "BKP"])),
        (
            "ntfs",
            "mkfs.ntfs",
            16,
            with("mkfs.ntfs", &["-q", "-F", "-Q"]),
        ),
        ("gpt", "sfdisk", 16, sfdisk("label: gpt\\n,,L\\n")),
        ("dos", "sfdisk", 16, sfdisk("label: dos\\n,,L\\n")),
        (
            "crypto_LUKS",
            "cryptsetup",
            32,
            Box::new({
                let key = key.clone();
                move |img: &Path| {
                    let mut c = Command::new(events::tool("cryptsetup").unwrap());
                    c.args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
                        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
                        .arg(&key)
                        .arg(img);
                    c
                }
            }),
        ),
        (
            "iso9660",
            "genisoimage",
            0,
            Box::new({
                let iso_src = iso_src.clone();
                move |img: &Path| {
                    let mut c = Command::new(events::tool("genisoimage").unwrap());
                    c.args(["-quiet", "-o"]).arg(img).arg(&iso_src);
                    c
                }
            }),
        ),
    ];
    let mut checked = Vec::new();
    for (name, needs, mib, make) in cases {
        if tool(needs).is_none() {
            eprintln!("note: {needs} not installed; {name} not checked against blkid");
            continue;
        }
        let img = dir.path().join(format!("{name}.img"));
        if mib > 0 {
            std::fs::File::create(&img)
                .unwrap()
                .set_len(mib << 20)
                .unwrap();
        }
        must(&mut make(&img));
        let found = blkid_name(&blkid, &img);
        assert_eq!(found.as_deref(), Some(name), "blkid on the {name} image");
        let args = vec!["backup".into(), s(&src), "--dev".into(), s(&img)];
        refused(&args, &img, &[&s(&img), &format!("({name})")]);
        checked.push(name);
    }
    eprintln!("checked against blkid: {checked:?}");
    assert!(!checked.is_empty() || tool("mkfs.ext4").is_none());
}

/// md members (0.90, 1.0, 1.2 superblocks), when mdadm is installed and
/// the kernel has md: in use while assembled, then named like blkid does.
#[test]
fn raid_members() {
    if !loop_devices_available("raid_members") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let blkid = tool("blkid");
    if !Path::new("/proc/mdstat").exists() {
        eprintln!("note: no md driver (/proc/mdstat); md members not checked on devices");
    } else if let Some(mdadm) = tool("mdadm") {
        for (i, metadata) in ["0.90", "1.0", "1.2"].into_iter().enumerate() {
            let a = LoopDev::new(&dir.path().join(format!("md{i}a.img")), 32 << 20);
            let b = LoopDev::new(&dir.path().join(format!("md{i}b.img")), 32 << 20);
            let array = format!("/dev/md/pbio-guard-{}-{i}", std::process::id());
            must(
                Command::new(&mdadm)
                    .args(["--create", &array, "--run", "--quiet", "--assume-clean"])
                    .args(["--metadata", metadata, "--level=1", "--raid-devices=2"])
                    .arg(&a.path)
                    .arg(&b.path),
            );
            let args = vec![
                "backup".into(),
                s(&src),
                "--dev".into(),
                a.arg(),
                "--force".into(),
            ];
            let held = refused(&args, &a.path, &[&a.arg(), "in use"]);
            must(Command::new(&mdadm).args(["--stop", &array]));
            assert!(held.contains("held by md"), "{held}");
            let args = vec!["backup".into(), s(&src), "--dev".into(), a.arg()];
            refused(
                &args,
                &a.path,
                &["(linux_raid_member)", &format!("version {metadata}")],
            );
            if let Some(blkid) = &blkid {
                assert_eq!(
                    blkid_name(blkid, &a.path).as_deref(),
                    Some("linux_raid_member")
                );
            }
            let _ = Command::new(&mdadm)
                .arg("--zero-superblock")
                .arg(&a.path)
                .arg(&b.path)
                .status();
        }
    } else {
        eprintln!("note: mdadm not installed; md members not checked");
    }
}

/// An LVM physical volume, when lvm2 is installed.
#[test]
fn lvm_member() {
    if !loop_devices_available("lvm_member") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let blkid = tool("blkid");
    if let Some(pvcreate) = tool("pvcreate") {
        let pv = LoopDev::new(&dir.path().join("pv.img"), 32 << 20);
        let config = "devices { use_devicesfile = 0 }";
        must(
            Command::new(&pvcreate)
                .args(["-q", "-y", "--config", config])
                .arg(&pv.path)
                .env("LVM_SUPPRESS_FD_WARNINGS", "1"),
        );
        let args = vec!["backup".into(), s(&src), "--dev".into(), pv.arg()];
        refused(&args, &pv.path, &["(LVM2_member)"]);
        if let Some(blkid) = &blkid {
            assert_eq!(blkid_name(blkid, &pv.path).as_deref(), Some("LVM2_member"));
        }
        if let Some(pvremove) = tool("pvremove") {
            let _ = Command::new(pvremove)
                .args(["-q", "-y", "--config", config])
                .arg(&pv.path)
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .output();
        }
    } else {
        eprintln!("note: lvm2 not installed; LVM PV not checked");
    }
}

/// Partitions added to a loop device with `partx -a`; removed on drop.
struct Partitions(PathBuf);

impl Drop for Partitions {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.0).output();
    }
}

#[test]
fn a_mounted_partition_refuses_the_whole_disk() {
    if !loop_devices_available("a_mounted_partition_refuses_the_whole_disk") {
        return;
    }
    let Some(partx) = tool("partx") else {
        eprintln!("SKIPPED a_mounted_partition_refuses_the_whole_disk: partx not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    // A DOS partition table by hand: one Linux partition from sector 2048 to the end.
    let disk_bytes: u64 = 64 << 20;
    let dev = LoopDev::new(&dir.path().join("disk.img"), disk_bytes);
    {
        use std::os::unix::fs::FileExt;
        let mut mbr = [0u8; 512];
        let entry = &mut mbr[446..462];
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
        entry[12..16].copy_from_slice(&((disk_bytes / 512 - 2048) as u32).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev.path)
            .unwrap();
        f.write_all_at(&mbr, 0).unwrap();
        f.sync_all().unwrap();
    }
    must(Command::new(&partx).arg("-a").arg(&dev.path));
    let _parts = Partitions(dev.path.clone());
    let part = PathBuf::from(format!("{}p1", dev.arg()));
    for _ in 0..50 {
        if part.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(part.exists(), "{} did not appear", part.display());
    mkfs_ext4(&part, "inner");
    let mount = Mounted::new(&part);
    let args = vec![
        "backup".into(),
        s(&src),
        "--dev".into(),
        dev.arg(),
        "--force".into(),
    ];
    refused(
        &args,
        &dev.path,
        &[
            &dev.arg(),
            &format!("has partition {} mounted on", part.display()),
            &s(mount.dir.path()),
        ],
    );
    drop(mount);
    // Unmounted: the table itself is what is found.
    let args = vec!["backup".into(), s(&src), "--dev".into(), dev.arg()];
    refused(&args, &dev.path, &["(dos)"]);
}

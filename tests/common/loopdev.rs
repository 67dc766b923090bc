#![allow(dead_code)]
//! Real block devices for integration tests: loop devices with direct I/O
//! over files. Under CI (`CI=true`) a missing capability (not root, no
//! losetup, no loop driver) fails the test; elsewhere the test is skipped
//! with a printed reason.

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the test may use loop devices. Panics under CI when it cannot.
pub fn loop_devices_available(test: &str) -> bool {
    let why = if !nix::unistd::Uid::effective().is_root() {
        Some("not running as root".to_string())
    } else if Command::new("losetup").arg("--version").output().is_err() {
        Some("losetup is not installed (util-linux)".to_string())
    } else if !Path::new("/dev/loop-control").exists() {
        Some("/dev/loop-control is missing (no loop driver)".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: needs loop devices under CI, but {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// A loop device with `--direct-io=on` over a sparse backing file; detached on drop.
pub struct LoopDev {
    pub path: PathBuf,
    pub backing: PathBuf,
}

impl LoopDev {
    pub fn new(backing: &Path, size_bytes: u64) -> LoopDev {
        let f = std::fs::File::create(backing).expect("create loop backing file");
        f.set_len(size_bytes).expect("size loop backing file");
        drop(f);
        let out = Command::new("losetup")
            .args(["--direct-io=on", "-f", "--show"])
            .arg(backing)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup {}: {}",
            backing.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        LoopDev {
            path,
            backing: backing.to_path_buf(),
        }
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// `pbio` with owned arguments (argument lists built with `dev_args`).
pub fn pbio_owned(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

/// `--dev PATH` for each device, in order.
pub fn dev_args(devs: &[&LoopDev]) -> Vec<String> {
    devs.iter()
        .flat_map(|d| ["--dev".to_string(), d.arg()])
        .collect()
}

/// Run the pbio binary; returns (exit code, stdout, stderr).
pub fn pbio(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pbio"))
        .args(args)
        .output()
        .expect("run pbio");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

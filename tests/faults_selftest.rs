//! Self-tests of the fault fixtures in tests/common/faults.rs: each device
//! is driven directly with pbio-style I/O (O_DIRECT pwrite at 4 KiB-aligned
//! offsets, fsync, and io_uring writes) and must fail the documented way.

#[path = "common/faults.rs"]
mod faults;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use faults::{
    block_device_bytes, faults_available, full_device_available, open_direct, AlignedBuf,
    FailingDevice, FullDevice,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// O_DIRECT pwrite of the whole buffer; Err(errno) on failure.
fn pwrite(file: &File, buf: &[u8], offset: u64) -> Result<(), i32> {
    match file.write_at(buf, offset) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => panic!(
            "short O_DIRECT write: {n} of {} bytes at {offset}",
            buf.len()
        ),
        Err(e) => Err(e.raw_os_error().expect("errno")),
    }
}

fn pread(file: &File, buf: &mut [u8], offset: u64) -> Result<(), i32> {
    match file.read_at(buf, offset) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => panic!(
            "short O_DIRECT read: {n} of {} bytes at {offset}",
            buf.len()
        ),
        Err(e) => Err(e.raw_os_error().expect("errno")),
    }
}

fn fsync(file: &File) -> Result<(), i32> {
    file.sync_all()
        .map_err(|e| e.raw_os_error().expect("errno"))
}

/// One io_uring write (opcode::Write) of the whole buffer; Err(errno).
fn uring_write(file: &File, buf: &[u8], offset: u64) -> Result<(), i32> {
    use io_uring::{opcode, types, IoUring};
    let mut ring = IoUring::new(2).expect("io_uring setup");
    let sqe = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), buf.len() as u32)
        .offset(offset)
        .build()
        .user_data(7);
    // SAFETY: buf outlives the operation: we wait for its completion below.
    unsafe { ring.submission().push(&sqe).expect("push sqe") };
    ring.submit_and_wait(1).expect("io_uring submit");
    let cqe = ring.completion().next().expect("completion");
    match cqe.result() {
        n if n == buf.len() as i32 => Ok(()),
        n if n < 0 => Err(-n),
        n => panic!("short io_uring write: {n} of {} bytes", buf.len()),
    }
}

fn errno_name(errno: i32) -> String {
    format!("{} ({errno})", nix::errno::Errno::from_raw(errno))
}

/// Loop devices (by name) whose backing file path contains `needle`.
fn loops_backed_by(needle: &Path) -> Vec<String> {
    let out = std::process::Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .expect("losetup -l");
    let needle = needle.display().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(|l| l.to_string())
        .collect()
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn full_device_fails_with_enospc_when_backing_fills() {
    if !full_device_available("full_device_fails_with_enospc_when_backing_fills") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (loop_bytes, limit) = (64 * MIB, 8 * MIB);
    let dev = FullDevice::new(dir.path(), loop_bytes, limit);
    assert!(
        dev.direct_io,
        "loop device {} is not in direct-I/O mode",
        dev.arg()
    );
    let file = open_direct(&dev.path);
    assert_eq!(block_device_bytes(&file), loop_bytes, "device capacity");

    let chunk = 256 * KIB;
    let mut buf = AlignedBuf::new(chunk as usize);
    let mut offset = 0;
    let errno = loop {
        buf.fill(offset);
        match pwrite(&file, &buf, offset) {
            Ok(()) => offset += chunk,
            Err(errno) => break errno,
        }
        assert!(
            offset < loop_bytes,
            "filled the whole device without an error"
        );
    };
    eprintln!(
        "full device: {offset} bytes written, then {}; tmpfs holds {} bytes",
        errno_name(errno),
        dev.backing_used_bytes()
    );
    assert_eq!(errno, libc::ENOSPC, "got {}", errno_name(errno));
    assert!(
        offset <= limit && offset >= limit - 2 * chunk,
        "failed after {offset} bytes, limit {limit}"
    );

    // The same through io_uring, as pbio writes.
    buf.fill(offset);
    assert_eq!(uring_write(&file, &buf, offset), Err(libc::ENOSPC));
    // Nothing more was stored; what was stored reads back; rewriting it works.
    assert!(dev.backing_used_bytes() <= limit);
    let mut back = AlignedBuf::new(chunk as usize);
    for at in [0, offset - chunk] {
        buf.fill(at);
        pread(&file, &mut back, at).unwrap();
        assert!(back[..] == buf[..], "data at {at} did not read back");
    }
    buf.fill(0);
    assert_eq!(pwrite(&file, &buf, 0), Ok(()), "rewriting stored blocks");
    // Measured: fsync of the device does not report the ENOSPC.
    assert_eq!(fsync(&file), Ok(()));
}

#[test]
fn failing_device_fails_with_eio_after_limit() {
    if !faults_available("failing_device_fails_with_eio_after_limit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bytes, limit) = (32 * MIB, 4 * MIB);
    let dev = FailingDevice::new(dir.path(), bytes, Some(limit));
    assert!(
        dev.direct_io,
        "loop device {} is not in direct-I/O mode",
        dev.arg()
    );
    let file = open_direct(&dev.path);
    assert_eq!(block_device_bytes(&file), bytes, "device capacity");

    let chunk = 64 * KIB;
    let mut buf = AlignedBuf::new(chunk as usize);
    let mut offset = 0;
    while offset < limit {
        buf.fill(offset);
        pwrite(&file, &buf, offset)
            .unwrap_or_else(|e| panic!("write at {offset} before the limit: {}", errno_name(e)));
        offset += chunk;
    }
    assert_eq!(fsync(&file), Ok(()), "fsync before the limit");
    assert_eq!(dev.bytes_written(), limit);

    buf.fill(offset);
    let errno = pwrite(&file, &buf, offset).expect_err("write past the limit succeeded");
    eprintln!(
        "failing device: {limit} bytes written, then {}",
        errno_name(errno)
    );
    assert_eq!(errno, libc::EIO, "got {}", errno_name(errno));
    // Sticky: a small write, a rewrite of old blocks and io_uring fail too.
    let small = AlignedBuf::new(4096);
    assert_eq!(pwrite(&file, &small, offset), Err(libc::EIO));
    assert_eq!(pwrite(&file, &small, 0), Err(libc::EIO));
    assert_eq!(uring_write(&file, &buf, offset), Err(libc::EIO));
    assert_eq!(fsync(&file), Err(libc::EIO), "fsync after the failure");

    // Data written before the failure reads back intact.
    let mut back = AlignedBuf::new(chunk as usize);
    let mut at = 0;
    while at < limit {
        buf.fill(at);
        pread(&file, &mut back, at).unwrap();
        assert!(back[..] == buf[..], "data at {at} did not read back");
        at += chunk;
    }
    let stats = dev.stats();
    assert_eq!(stats.written, limit);
    assert!(stats.failing && stats.failed_writes >= 4, "{stats:?}");
}

#[test]
fn failing_device_fails_on_cue_and_heals() {
    if !faults_available("failing_device_fails_on_cue_and_heals") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = FailingDevice::new(dir.path(), 16 * MIB, None);
    let file = open_direct(&dev.path);
    let chunk = 128 * KIB;
    let mut buf = AlignedBuf::new(chunk as usize);
    let mut back = AlignedBuf::new(chunk as usize);
    for k in 0..8 {
        buf.fill(k);
        pwrite(&file, &buf, k * chunk).unwrap();
    }
    assert_eq!(fsync(&file), Ok(()));

    dev.fail_now();
    buf.fill(100);
    assert_eq!(pwrite(&file, &buf, 8 * chunk), Err(libc::EIO));
    assert_eq!(uring_write(&file, &buf, 9 * chunk), Err(libc::EIO));
    assert_eq!(fsync(&file), Err(libc::EIO));
    // Reads still work and see the data from before the failure.
    buf.fill(3);
    pread(&file, &mut back, 3 * chunk).unwrap();
    assert!(back[..] == buf[..]);

    dev.fail_reads(true);
    assert_eq!(pread(&file, &mut back, 3 * chunk), Err(libc::EIO));
    dev.fail_reads(false);
    pread(&file, &mut back, 3 * chunk).unwrap();

    dev.heal();
    buf.fill(200);
    assert_eq!(pwrite(&file, &buf, 8 * chunk), Ok(()));
    assert_eq!(fsync(&file), Ok(()));
    pread(&file, &mut back, 8 * chunk).unwrap();
    assert!(back[..] == buf[..]);

    // A limit relative to now.
    dev.fail_after(2 * chunk);
    pwrite(&file, &buf, 9 * chunk).unwrap();
    pwrite(&file, &buf, 10 * chunk).unwrap();
    assert_eq!(pwrite(&file, &buf, 11 * chunk), Err(libc::EIO));
    let stats = dev.stats();
    assert_eq!(stats.written, 11 * chunk, "{stats:?}");
    assert!(stats.failing);
}

#[test]
fn failing_device_large_write_across_limit_fails_as_a_whole() {
    if !faults_available("failing_device_large_write_across_limit_fails_as_a_whole") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let limit = 768 * KIB;
    let dev = FailingDevice::new(dir.path(), 16 * MIB, Some(limit));
    let file = open_direct(&dev.path);
    // 4 MiB: several loop requests, each split into several FUSE writes.
    let mut buf = AlignedBuf::new(4 * MIB as usize);
    buf.fill(1);
    assert_eq!(pwrite(&file, &buf, 0), Err(libc::EIO));
    // Pieces below the limit may have been stored: at most `limit` bytes.
    let stats = dev.stats();
    eprintln!("4 MiB write across a {limit}-byte limit: {stats:?}");
    assert!(stats.written <= limit && stats.failing, "{stats:?}");
    assert!(stats.write_requests > 1, "not split: {stats:?}");
}

#[test]
fn failing_device_with_enospc_is_an_exact_full_device() {
    if !faults_available("failing_device_with_enospc_is_an_exact_full_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let limit = 8 * MIB + 128 * KIB;
    let dev = FailingDevice::with_errno(dir.path(), 32 * MIB, Some(limit), libc::ENOSPC);
    let file = open_direct(&dev.path);
    let chunk = 256 * KIB;
    let mut buf = AlignedBuf::new(chunk as usize);
    let mut offset = 0;
    let errno = loop {
        buf.fill(offset);
        match pwrite(&file, &buf, offset) {
            Ok(()) => offset += chunk,
            Err(errno) => break errno,
        }
    };
    // The write crossing the limit fails as a whole, with ENOSPC.
    assert_eq!(errno, libc::ENOSPC, "got {}", errno_name(errno));
    assert_eq!(offset, 8 * MIB);
    assert_eq!(uring_write(&file, &buf, offset), Err(libc::ENOSPC));
    // A full device still flushes.
    assert_eq!(fsync(&file), Ok(()));
    let mut back = AlignedBuf::new(chunk as usize);
    buf.fill(offset - chunk);
    pread(&file, &mut back, offset - chunk).unwrap();
    assert!(back[..] == buf[..]);
}

#[test]
fn full_device_write_crossing_the_fill_point() {
    if !full_device_available("full_device_write_crossing_the_fill_point") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The tmpfs fills in the middle of the 33rd 256 KiB write.
    let limit = 8 * MIB + 128 * KIB;
    let dev = FullDevice::new(dir.path(), 32 * MIB, limit);
    let file = open_direct(&dev.path);
    let chunk = 256 * KIB;
    let mut buf = AlignedBuf::new(chunk as usize);
    let mut offset = 0;
    while offset < 8 * MIB {
        buf.fill(offset);
        pwrite(&file, &buf, offset).unwrap();
        offset += chunk;
    }
    buf.fill(offset);
    match pwrite(&file, &buf, offset) {
        Err(errno) => {
            eprintln!("crossing write failed with {}", errno_name(errno));
            assert_eq!(errno, libc::ENOSPC);
        }
        Ok(()) => {
            // The documented caveat: reported written, tail lost.
            let mut back = AlignedBuf::new(chunk as usize);
            pread(&file, &mut back, offset).unwrap();
            let half = (chunk / 2) as usize;
            eprintln!(
                "crossing write reported success; first half stored: {}, second half zero: {}",
                back[..half] == buf[..half],
                back[half..].iter().all(|&b| b == 0)
            );
            assert!(back[..half] == buf[..half]);
            assert!(back[half..].iter().all(|&b| b == 0), "tail was stored");
            buf.fill(offset + chunk);
            assert_eq!(pwrite(&file, &buf, offset + chunk), Err(libc::ENOSPC));
        }
    }
}

#[test]
fn fixtures_clean_up_even_when_the_test_panics() {
    if !faults_available("fixtures_clean_up_even_when_the_test_panics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut exited = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let full = FullDevice::new(dir.path(), 16 * MIB, 4 * MIB);
        let failing = FailingDevice::new(dir.path(), 16 * MIB, Some(MIB));
        exited = Some(failing.server_exited_flag());
        // Open devices, as a test would have when it panics.
        let _f1 = open_direct(&full.path);
        let _f2 = open_direct(&failing.path);
        assert!(!loops_backed_by(dir.path()).is_empty());
        assert_eq!(mounted_under(dir.path()).len(), 2);
        panic!("deliberate panic with fixtures alive");
    }));
    assert!(result.is_err());
    assert_eq!(
        loops_backed_by(dir.path()),
        Vec::<String>::new(),
        "loop devices left"
    );
    assert_eq!(
        mounted_under(dir.path()),
        Vec::<String>::new(),
        "mounts left"
    );
    let exited = exited.expect("server flag");
    assert!(
        exited.load(std::sync::atomic::Ordering::SeqCst),
        "FUSE server still running"
    );
}

#[test]
fn fixtures_dropped_while_device_still_open_do_not_hang() {
    if !faults_available("fixtures_dropped_while_device_still_open_do_not_hang") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let failing = FailingDevice::new(dir.path(), 16 * MIB, None);
    let full = FullDevice::new(dir.path(), 16 * MIB, 4 * MIB);
    let f1 = open_direct(&failing.path);
    let f2 = open_direct(&full.path);
    let exited = failing.server_exited_flag();
    // Dropped while open: detach is deferred (auto-clear), unmounts fall
    // back to lazy ones, the FUSE server is stopped.
    drop(failing);
    drop(full);
    assert!(exited.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        mounted_under(dir.path()),
        Vec::<String>::new(),
        "mounts left"
    );
    // I/O to the orphaned FUSE-backed device fails instead of hanging.
    let buf = AlignedBuf::new(4096);
    let result = pwrite(&f1, &buf, 0);
    eprintln!("write after the FUSE server ended: {result:?}");
    assert!(result.is_err());
    drop(f1);
    drop(f2);
    // The last close clears the loop devices.
    let start = std::time::Instant::now();
    while !loops_backed_by(dir.path()).is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "loop devices left: {:?}",
            loops_backed_by(dir.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

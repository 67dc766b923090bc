#![allow(dead_code)]
//! Real block devices that fail in real ways, for integration tests (no
//! mocks). Include with `#[path = "common/faults.rs"] mod faults;`.
//!
//! - [`FullDevice`]: a loop device larger than the tmpfs holding its
//!   backing file. Writes fail with **ENOSPC** once the tmpfs is full (but
//!   see its caveat: the write that fills the tmpfs silently loses its tail).
//! - [`FailingDevice`]: a loop device over a file on a small FUSE
//!   filesystem served by a thread of the test process. Writes fail with
//!   **EIO** (or a chosen errno, e.g. ENOSPC for an exact "device full")
//!   after a byte limit or on cue ([`FailingDevice::fail_now`]), optionally
//!   reads too; [`FailingDevice::heal`] ends the failure.
//!
//! Both use `losetup --direct-io=on` (verified: the loop device really runs
//! in direct-I/O mode over tmpfs and over the FUSE file, see
//! [`FullDevice::direct_io`] / [`FailingDevice::direct_io`]). Both clean up
//! on drop, panics included: loop device detached first, then the
//! filesystem unmounted (lazily if still busy), then the FUSE server ended.
//!
//! Under CI (`CI=true`) a missing capability fails the test; elsewhere the
//! test is skipped with a printed reason (as in `loopdev.rs`).
//!
//! Uses only std, libc and nix: nothing here depends on pbio itself, and no
//! package beyond util-linux (losetup) is needed: no libfuse, no fusermount.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// How long to wait for the FUSE filesystem to answer INIT.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to retry a busy unmount before falling back to a lazy one.
const UNMOUNT_RETRY: Duration = Duration::from_secs(2);
/// How long to wait for the FUSE server thread to end after unmounting.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn skip_or_panic(test: &str, what: &str, why: Option<String>) -> bool {
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: needs {what} under CI, but {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn missing_for_full_device() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        Some("not running as root".to_string())
    } else if Command::new("losetup").arg("--version").output().is_err() {
        Some("losetup is not installed (util-linux)".to_string())
    } else if !Path::new("/dev/loop-control").exists() {
        Some("/dev/loop-control is missing (no loop driver)".to_string())
    } else if !std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("tmpfs"))
        })
        .unwrap_or(false)
    {
        Some("the kernel has no tmpfs".to_string())
    } else {
        None
    }
}

fn missing_for_failing_device() -> Option<String> {
    if let Some(why) = missing_for_full_device() {
        Some(why)
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing (no FUSE)".to_string())
    } else {
        None
    }
}

/// True when the test may use [`FullDevice`] (root, losetup, loop driver,
/// tmpfs). Panics under CI when it cannot; elsewhere prints why and skips.
pub fn full_device_available(test: &str) -> bool {
    skip_or_panic(test, "a full device", missing_for_full_device())
}

/// True when the test may use both [`FullDevice`] and [`FailingDevice`]
/// (root, losetup, loop driver, tmpfs, /dev/fuse).
/// Panics under CI when it cannot; elsewhere prints why and skips.
pub fn faults_available(test: &str) -> bool {
    skip_or_panic(
        test,
        "fault-injection devices",
        missing_for_failing_device(),
    )
}

/// A fresh directory `dir/<kind>-<pid>-<n>` for one fixture's mount point
/// and files.
fn unique_dir(dir: &Path, kind: &str) -> PathBuf {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{kind}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    path
}

/// `losetup --direct-io=on -f --show FILE`; panics on failure.
fn attach_loop(file: &Path) -> PathBuf {
    let out = Command::new("losetup")
        .args(["--direct-io=on", "-f", "--show"])
        .arg(file)
        .output()
        .expect("run losetup");
    assert!(
        out.status.success(),
        "losetup --direct-io=on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Is the loop device really in direct-I/O mode (`/sys/block/loopN/loop/dio`)?
fn loop_direct_io(dev: &Path) -> bool {
    let name = dev.file_name().unwrap_or_default().to_string_lossy();
    std::fs::read_to_string(format!("/sys/block/{name}/loop/dio"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// Detach a loop device; never panics (runs in Drop). A device still open
/// elsewhere is only marked for auto-clear by the kernel; the caller's
/// unmount retries cover the short time until its last user closes it.
fn detach_loop(dev: &Path) {
    if dev.as_os_str().is_empty() {
        return;
    }
    match Command::new("losetup").arg("-d").arg(dev).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "faults: losetup -d {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("faults: losetup -d {}: {e}", dev.display()),
    }
}

/// Unmount `path`, retrying while busy, then lazily; never panics.
fn unmount(path: &Path) {
    let start = Instant::now();
    loop {
        match umount2(path, MntFlags::empty()) {
            Ok(()) => return,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(nix::errno::Errno::EBUSY) if start.elapsed() < UNMOUNT_RETRY => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                eprintln!("faults: umount {}: {e}; unmounting lazily", path.display());
                if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
                    eprintln!("faults: umount -l {}: {e}", path.display());
                }
                return;
            }
        }
    }
}

/// A 4096-aligned, zero-filled buffer for O_DIRECT I/O.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub const ALIGN: usize = 4096;

    pub fn new(len: usize) -> AlignedBuf {
        assert!(
            len > 0 && len.is_multiple_of(Self::ALIGN),
            "AlignedBuf: bad length {len}"
        );
        let layout = Layout::from_size_align(len, Self::ALIGN).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "AlignedBuf: out of memory");
        AlignedBuf { ptr, len }
    }

    /// Fill with a pattern derived from `seed` (distinct per seed and offset).
    pub fn fill(&mut self, seed: u64) {
        for (i, chunk) in self.chunks_mut(8).enumerate() {
            let v = seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(i as u64)
                .rotate_left(17);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of len bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this exact layout.
        unsafe {
            dealloc(
                self.ptr,
                Layout::from_size_align(self.len, Self::ALIGN).unwrap(),
            )
        }
    }
}

// SAFETY: AlignedBuf owns its memory exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

/// Open a block device read-write with O_DIRECT, as pbio does.
pub fn open_direct(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_DIRECT: {e}", path.display()))
}

/// Size of a block device in bytes (BLKGETSIZE64).
pub fn block_device_bytes(file: &File) -> u64 {
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    let mut bytes = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer given.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut bytes) }.expect("BLKGETSIZE64");
    bytes
}

/// A loop device that runs out of space: `loop_bytes` of capacity, backed
/// by a sparse file on a tmpfs of `backing_limit_bytes` mounted for the
/// fixture.
///
/// Measured on Linux 6.18 (tests/faults_selftest.rs): O_DIRECT writes (pwrite
/// and io_uring alike) to blocks not yet written succeed until
/// `backing_limit_bytes` (rounded up to 4 KiB pages) have been stored, then
/// fail with **ENOSPC** (`BLK_STS_NOSPC`; the kernel logs "critical space
/// allocation error" for the loop device), not EIO. Rewriting blocks already
/// stored still succeeds, reads keep working, and `fsync` on the device
/// succeeds after the ENOSPC.
///
/// **Caveat, a real kernel behaviour:** the write that *crosses* the fill
/// point does not fail. tmpfs stores what fits and returns a short write,
/// and the loop driver completes a short write as success
/// (`lo_complete_rq` only retries short reads): that write reports all its
/// bytes written, its tail is lost (reads back as zeros), and only the next
/// write gets ENOSPC. To avoid it, make `backing_limit_bytes` a multiple of
/// the write size and write aligned, or use
/// `FailingDevice::with_errno(.., libc::ENOSPC)`, which fails the crossing
/// write as a whole.
pub struct FullDevice {
    /// The loop device, e.g. `/dev/loop3`.
    pub path: PathBuf,
    /// The tmpfs mount point holding the backing file.
    pub mount: PathBuf,
    /// The sparse backing file (`loop_bytes` long) on the tmpfs.
    pub backing: PathBuf,
    pub loop_bytes: u64,
    pub backing_limit_bytes: u64,
    /// The loop device really runs with direct I/O.
    pub direct_io: bool,
}

impl FullDevice {
    /// Panics (with cleanup) if the tmpfs cannot be mounted or losetup fails.
    pub fn new(dir: &Path, loop_bytes: u64, backing_limit_bytes: u64) -> FullDevice {
        assert!(
            loop_bytes > 0 && loop_bytes.is_multiple_of(4096),
            "loop_bytes {loop_bytes}"
        );
        assert!(backing_limit_bytes > 0, "backing_limit_bytes must be > 0");
        let mount_point = unique_dir(dir, "full").join("tmpfs");
        std::fs::create_dir(&mount_point).unwrap_or_else(|e| panic!("mkdir {mount_point:?}: {e}"));
        let options = format!("size={backing_limit_bytes},mode=0700,huge=never");
        mount(
            Some("tmpfs"),
            &mount_point,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs ({options}) on {mount_point:?}: {e}"));
        // From here on Drop cleans up, whatever panics below.
        let mut device = FullDevice {
            path: PathBuf::new(),
            backing: mount_point.join("disk.img"),
            mount: mount_point,
            loop_bytes,
            backing_limit_bytes,
            direct_io: false,
        };
        let f = File::create(&device.backing).expect("create backing file on tmpfs");
        f.set_len(loop_bytes).expect("size backing file on tmpfs");
        drop(f);
        device.path = attach_loop(&device.backing);
        device.direct_io = loop_direct_io(&device.path);
        device
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// Bytes the tmpfs has stored so far (from statvfs).
    pub fn backing_used_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.mount).expect("statvfs tmpfs");
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for FullDevice {
    fn drop(&mut self) {
        detach_loop(&self.path);
        unmount(&self.mount);
    }
}

/// State of a [`FailingDevice`], as its FUSE server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Bytes accepted by the device's file (failed writes not counted).
    pub written: u64,
    /// Writes (and fsync) currently fail.
    pub failing: bool,
    /// While failing, reads fail too.
    pub fail_reads: bool,
    /// Total written bytes beyond which writes fail.
    pub limit: Option<u64>,
    /// A write reaching at or past this device offset fails (and every
    /// write after it): a fault armed at a region, e.g. where the
    /// catalog goes.
    pub fail_from_offset: Option<u64>,
    /// fsync requests served (accepted or refused).
    pub fsyncs: u64,
    /// The fsync with this number (1: the first) fails, and every write
    /// and fsync after it: a device that dies when first asked to make
    /// its writes durable.
    pub fail_at_fsync: Option<u64>,
    /// Once this many fsyncs have been served, the next write fails (and
    /// every one after it): a device that dies after a point the program
    /// marks with a sync.
    pub fail_after_fsyncs: Option<u64>,
    /// FUSE write requests refused.
    pub failed_writes: u64,
    /// FUSE read requests refused.
    pub failed_reads: u64,
    /// FUSE write requests served (accepted or refused).
    pub write_requests: u64,
    /// Largest FUSE write request seen, in bytes.
    pub max_write_request: u64,
}

/// Shared between a [`FailingDevice`] and its FUSE server thread.
struct FaultControl {
    stats: Mutex<FaultStats>,
    /// errno for refused writes and fsyncs (reads always get EIO).
    errno: i32,
    initialized: AtomicBool,
    /// The kernel offered FUSE_ASYNC_DIO (and so it is in use).
    async_dio: AtomicBool,
    stop: AtomicBool,
    exited: Arc<AtomicBool>,
    error: Mutex<Option<String>>,
}

/// A loop device whose writes fail like a dying disk's: **EIO** (or another
/// errno, see [`with_errno`](Self::with_errno)) after a byte limit or on
/// cue. A loop device (`--direct-io=on`) over `disk.img` on a small FUSE
/// filesystem served by a thread of the test process itself (raw
/// `/dev/fuse` protocol, no libfuse, no extra package); data is kept in a
/// sparse file under `dir`.
///
/// Measured on Linux 6.18 (tests/faults_selftest.rs): the loop device runs
/// in direct-I/O mode over the FUSE file. An O_DIRECT pwrite (or io_uring
/// write) to the loop device fails with **EIO** once the limit is reached
/// or after [`fail_now`](Self::fail_now), also when the write crosses the
/// limit partway; `fsync` of the device then fails with EIO too. Reads keep
/// working (data written before the failure reads back intact) unless
/// [`fail_reads`](Self::fail_reads) is on; then they fail with EIO as well.
///
/// Why not fusepy/libfuse2: the kernel splits each loop request into FUSE
/// writes of at most `max_write` bytes. Without `FUSE_ASYNC_DIO` (libfuse2
/// cannot negotiate it) a failure after some pieces succeeded comes back
/// to the loop driver as a *short write*, and the loop driver completes a
/// short write as success: the write "succeeds" and its tail is lost. This
/// server negotiates `FUSE_ASYNC_DIO`, under which any failed piece fails
/// the whole request (`fuse_get_res_by_io`).
///
/// The limit counts bytes accepted by the file, rewrites included: a FUSE
/// write that would cross it fails, and from then on every write fails
/// (sticky) until [`heal`](Self::heal). Pieces of a failing write that lie
/// below the limit may have been stored, as on a real disk.
pub struct FailingDevice {
    /// The loop device, e.g. `/dev/loop3`.
    pub path: PathBuf,
    /// The FUSE mount point; the loop device's file is `mount/disk.img`.
    pub mount: PathBuf,
    /// The sparse file holding the data.
    pub backing: PathBuf,
    pub bytes: u64,
    /// The loop device really runs with direct I/O.
    pub direct_io: bool,
    control: Arc<FaultControl>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl FailingDevice {
    /// `bytes` of capacity; `fail_after_bytes`: writes fail with EIO once
    /// that many bytes have been written in total (None: only on cue).
    /// Waits (at most 20 s) for the FUSE mount to answer; panics with the
    /// reason if it does not.
    pub fn new(dir: &Path, bytes: u64, fail_after_bytes: Option<u64>) -> FailingDevice {
        FailingDevice::with_errno(dir, bytes, fail_after_bytes, libc::EIO)
    }

    /// As [`new`](Self::new), but refused writes fail with `errno` (the
    /// loop driver passes ENOSPC, EIO and a few others through as such;
    /// see `blk_status_to_errno`). With `libc::ENOSPC` this is an exact
    /// "device full": unlike [`FullDevice`], the write that crosses the
    /// limit fails as a whole, with ENOSPC, and fsync keeps succeeding.
    /// With any other errno a failing device's fsync fails, and the loop
    /// driver reports every flush error as EIO.
    pub fn with_errno(
        dir: &Path,
        bytes: u64,
        fail_after_bytes: Option<u64>,
        errno: i32,
    ) -> FailingDevice {
        assert!(bytes > 0 && bytes.is_multiple_of(4096), "bytes {bytes}");
        let base = unique_dir(dir, "eio");
        let mount_point = base.join("mnt");
        std::fs::create_dir(&mount_point).unwrap_or_else(|e| panic!("mkdir {mount_point:?}: {e}"));
        let backing_path = base.join("disk.backing");
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&backing_path)
            .unwrap_or_else(|e| panic!("create {backing_path:?}: {e}"));
        backing.set_len(bytes).expect("size backing file");

        // O_CLOEXEC: a child process (losetup, pbio) holding the fd would
        // keep the connection alive after the server is gone.
        let fuse_fd = nix::fcntl::open(
            "/dev/fuse",
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open /dev/fuse: {e}"));
        // SAFETY: open returned a fresh fd that nothing else owns.
        let fuse_fd = unsafe { OwnedFd::from_raw_fd(fuse_fd) };
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            fuse_fd.as_raw_fd()
        );
        mount(
            Some("pbio-faults"),
            &mount_point,
            Some("fuse.pbio-faults"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount FUSE on {mount_point:?}: {e}"));

        let control = Arc::new(FaultControl {
            stats: Mutex::new(FaultStats {
                limit: fail_after_bytes,
                ..FaultStats::default()
            }),
            errno,
            initialized: AtomicBool::new(false),
            async_dio: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            exited: Arc::new(AtomicBool::new(false)),
            error: Mutex::new(None),
        });
        let server = {
            let control = control.clone();
            let mut fs = EioFs::new(bytes, backing);
            std::thread::Builder::new()
                .name("pbio-faults-fuse".into())
                .spawn(move || {
                    if let Err(e) = fs.serve(&fuse_fd, &control) {
                        *control.error.lock().unwrap() = Some(e);
                    }
                    drop(fuse_fd); // closing it aborts the connection
                    control.exited.store(true, Ordering::SeqCst);
                })
                .expect("spawn FUSE server thread")
        };
        // From here on Drop cleans up, whatever panics below.
        let mut device = FailingDevice {
            path: PathBuf::new(),
            mount: mount_point,
            backing: backing_path,
            bytes,
            direct_io: false,
            control,
            server: Some(server),
        };
        device.wait_ready();
        device.path = attach_loop(&device.mount.join("disk.img"));
        device.direct_io = loop_direct_io(&device.path);
        device
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while !self.control.initialized.load(Ordering::SeqCst) {
            if self.control.exited.load(Ordering::SeqCst) {
                panic!(
                    "FailingDevice: FUSE server ended before INIT: {}",
                    self.server_error()
                );
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                panic!(
                    "FailingDevice: FUSE mount {} not initialized after {MOUNT_TIMEOUT:?}",
                    self.mount.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Without it a write failing partway would "succeed" short.
        assert!(
            self.control.async_dio.load(Ordering::SeqCst),
            "FailingDevice: the kernel did not offer FUSE_ASYNC_DIO"
        );
        let image = self.mount.join("disk.img");
        match std::fs::metadata(&image) {
            Ok(m) if m.len() == self.bytes => {}
            Ok(m) => panic!(
                "FailingDevice: {image:?} has {} bytes, not {}",
                m.len(),
                self.bytes
            ),
            Err(e) => panic!(
                "FailingDevice: stat {image:?}: {e}; {}",
                self.server_error()
            ),
        }
    }

    fn server_error(&self) -> String {
        self.control
            .error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "no server error".to_string())
    }

    fn with_stats<T>(&self, f: impl FnOnce(&mut FaultStats) -> T) -> T {
        f(&mut self.control.stats.lock().unwrap())
    }

    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// From now on every write (and fsync) fails. Takes effect at once.
    pub fn fail_now(&self) {
        self.with_stats(|s| s.failing = true);
    }

    /// End the failure and drop any write limit: writes work again.
    pub fn heal(&self) {
        self.with_stats(|s| {
            s.failing = false;
            s.limit = None;
            s.fail_from_offset = None;
        });
    }

    /// Writes start failing (sticky, as with a limit) with the first write
    /// that reaches at or past device offset `offset`.
    pub fn fail_from_offset(&self, offset: u64) {
        self.with_stats(|s| s.fail_from_offset = Some(offset));
    }

    /// The `n`-th fsync from now on (1: the next) fails, and everything
    /// after it (sticky).
    pub fn fail_at_fsync(&self, n: u64) {
        self.with_stats(|s| s.fail_at_fsync = Some(s.fsyncs + n));
    }

    /// Once `n` more fsyncs have been served, the next write fails, and
    /// everything after it (sticky).
    pub fn fail_after_fsyncs(&self, n: u64) {
        self.with_stats(|s| s.fail_after_fsyncs = Some(s.fsyncs + n));
    }

    /// While failing, reads fail with EIO too (`true`) or keep working.
    pub fn fail_reads(&self, on: bool) {
        self.with_stats(|s| s.fail_reads = on);
    }

    /// Writes start failing once `more_bytes` more have been written.
    pub fn fail_after(&self, more_bytes: u64) {
        self.with_stats(|s| s.limit = Some(s.written + more_bytes));
    }

    /// The server's counters and state.
    pub fn stats(&self) -> FaultStats {
        self.with_stats(|s| s.clone())
    }

    /// Bytes the device has accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.with_stats(|s| s.written)
    }

    /// Becomes true when the FUSE server thread has ended (for tests of
    /// the cleanup).
    pub fn server_exited_flag(&self) -> Arc<AtomicBool> {
        self.control.exited.clone()
    }
}

impl Drop for FailingDevice {
    fn drop(&mut self) {
        detach_loop(&self.path);
        // Unmounting ends the connection: the server's read gets ENODEV.
        unmount(&self.mount);
        // After a lazy unmount the connection may live on; the stop flag
        // ends the server, and closing /dev/fuse aborts the connection, so
        // no I/O can hang on it.
        self.control.stop.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while !self.control.exited.load(Ordering::SeqCst) {
            if start.elapsed() > EXIT_TIMEOUT {
                eprintln!(
                    "faults: FUSE server for {} did not stop",
                    self.mount.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        if let Some(e) = self.control.error.lock().unwrap().as_ref() {
            eprintln!("faults: FUSE server for {}: {e}", self.mount.display());
        }
    }
}

// --- A minimal FUSE server (include/uapi/linux/fuse.h, protocol 7.31) ---
//
// One directory (node 1) holding one file, disk.img (node 2). Requests are
// served one at a time by one thread.

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_SETATTR: u32 = 4;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_WRITE: u32 = 16;
const FUSE_STATFS: u32 = 17;
const FUSE_RELEASE: u32 = 18;
const FUSE_FSYNC: u32 = 20;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_FSYNCDIR: u32 = 30;
const FUSE_ACCESS: u32 = 34;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;

const FUSE_ASYNC_READ: u32 = 1 << 0;
const FUSE_BIG_WRITES: u32 = 1 << 5;
const FUSE_ASYNC_DIO: u32 = 1 << 15;
const FUSE_MAX_PAGES: u32 = 1 << 22;
const FOPEN_DIRECT_IO: u32 = 1 << 0;
const FATTR_SIZE: u32 = 1 << 3;

const FUSE_MINOR: u32 = 31;
const MAX_WRITE: usize = 1 << 20;
const IN_HEADER: usize = 40;
const ROOT_NODE: u64 = 1;
const DISK_NODE: u64 = 2;
const DISK_NAME: &[u8] = b"disk.img";
/// attr and entry validity: the attributes never change.
const VALID_SECS: u64 = 3600;

struct EioFs {
    bytes: u64,
    backing: File,
    time: u64,
}

fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn ne_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// A reply body under construction (native-endian fields).
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn u16(mut self, v: u16) -> Body {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Body {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Body {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Body {
        self.0.extend_from_slice(v);
        self
    }
    fn zeros(mut self, n: usize) -> Body {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// What to send back for one request.
enum Reply {
    None,
    Ok(Vec<u8>),
    Err(i32),
}

impl EioFs {
    fn new(bytes: u64, backing: File) -> EioFs {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        EioFs {
            bytes,
            backing,
            time,
        }
    }

    /// struct fuse_attr (88 bytes).
    fn attr(&self, node: u64) -> Option<Body> {
        let (size, mode, nlink) = match node {
            ROOT_NODE => (0, libc::S_IFDIR | 0o755, 2),
            DISK_NODE => (self.bytes, libc::S_IFREG | 0o644, 1),
            _ => return None,
        };
        Some(
            Body::default()
                .u64(node)
                .u64(size)
                .u64(size.div_ceil(512))
                .u64(self.time)
                .u64(self.time)
                .u64(self.time)
                .zeros(12) // atime/mtime/ctime nsec
                .u32(mode)
                .u32(nlink)
                .u32(0) // uid
                .u32(0) // gid
                .u32(0) // rdev
                .u32(4096) // blksize
                .u32(0), // flags
        )
    }

    /// struct fuse_attr_out.
    fn attr_out(&self, node: u64) -> Reply {
        match self.attr(node) {
            Some(attr) => Reply::Ok(
                Body::default()
                    .u64(VALID_SECS)
                    .u32(0)
                    .u32(0)
                    .bytes(&attr.0)
                    .0,
            ),
            None => Reply::Err(libc::ENOENT),
        }
    }

    fn serve(&mut self, fd: &OwnedFd, control: &FaultControl) -> Result<(), String> {
        use nix::errno::Errno;
        let mut buf = vec![0u8; MAX_WRITE + 64 * 1024];
        loop {
            if control.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, count 1.
            match unsafe { libc::poll(&mut pfd, 1, 100) } {
                0 => continue,
                n if n < 0 => match Errno::last() {
                    Errno::EINTR => continue,
                    e => return Err(format!("poll /dev/fuse: {e}")),
                },
                _ => {}
            }
            let n = match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(n) => n,
                // Interrupted, or a request that was aborted meanwhile.
                Err(Errno::EINTR | Errno::EAGAIN | Errno::ENOENT) => continue,
                // Unmounted (or aborted): the normal end.
                Err(Errno::ENODEV) => return Ok(()),
                Err(e) => return Err(format!("read /dev/fuse: {e}")),
            };
            let request = &buf[..n];
            if n < IN_HEADER {
                return Err(format!("short FUSE request: {n} bytes"));
            }
            let opcode = ne_u32(request, 4);
            let unique = ne_u64(request, 8);
            let node = ne_u64(request, 16);
            let reply = self.handle(opcode, node, &request[IN_HEADER..], control);
            let (error, body) = match reply {
                Reply::None => continue,
                Reply::Ok(body) => (0i32, body),
                Reply::Err(errno) => (-errno, Vec::new()),
            };
            let mut out = Vec::with_capacity(16 + body.len());
            out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
            out.extend_from_slice(&error.to_ne_bytes());
            out.extend_from_slice(&unique.to_ne_bytes());
            out.extend_from_slice(&body);
            match nix::unistd::write(fd, &out) {
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(Errno::ENODEV) => return Ok(()),
                Err(e) => return Err(format!("reply to FUSE opcode {opcode}: {e}")),
            }
            if opcode == FUSE_DESTROY {
                return Ok(());
            }
        }
    }

    fn handle(&mut self, opcode: u32, node: u64, arg: &[u8], control: &FaultControl) -> Reply {
        match opcode {
            FUSE_INIT => {
                let (major, minor) = (ne_u32(arg, 0), ne_u32(arg, 4));
                if major != 7 {
                    return Reply::Err(libc::EPROTO);
                }
                let max_readahead = ne_u32(arg, 8);
                let offered = ne_u32(arg, 12);
                let wanted = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_MAX_PAGES;
                control
                    .async_dio
                    .store(offered & FUSE_ASYNC_DIO != 0, Ordering::SeqCst);
                control.initialized.store(true, Ordering::SeqCst);
                Reply::Ok(
                    Body::default()
                        .u32(7)
                        .u32(minor.min(FUSE_MINOR))
                        .u32(max_readahead)
                        .u32(offered & wanted)
                        .u16(16) // max_background
                        .u16(12) // congestion_threshold
                        .u32(MAX_WRITE as u32)
                        .u32(1) // time_gran
                        .u16((MAX_WRITE / 4096) as u16) // max_pages
                        .u16(0) // map_alignment
                        .zeros(32) // flags2, max_stack_depth, timeout, unused
                        .0,
                )
            }
            FUSE_DESTROY => Reply::Ok(Vec::new()),
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => Reply::None,
            FUSE_LOOKUP => {
                let name = arg.split(|&b| b == 0).next().unwrap_or_default();
                if node != ROOT_NODE || name != DISK_NAME {
                    return Reply::Err(libc::ENOENT);
                }
                let attr = self.attr(DISK_NODE).unwrap();
                Reply::Ok(
                    Body::default()
                        .u64(DISK_NODE)
                        .u64(0) // generation
                        .u64(VALID_SECS)
                        .u64(VALID_SECS)
                        .u32(0)
                        .u32(0)
                        .bytes(&attr.0)
                        .0,
                )
            }
            FUSE_GETATTR => self.attr_out(node),
            FUSE_SETATTR => {
                let valid = ne_u32(arg, 0);
                if valid & FATTR_SIZE != 0 && ne_u64(arg, 16) != self.bytes {
                    return Reply::Err(libc::EPERM);
                }
                self.attr_out(node)
            }
            FUSE_OPEN => match node {
                DISK_NODE => Reply::Ok(Body::default().u64(0).u32(FOPEN_DIRECT_IO).u32(0).0),
                ROOT_NODE => Reply::Err(libc::EISDIR),
                _ => Reply::Err(libc::ENOENT),
            },
            FUSE_OPENDIR => match node {
                ROOT_NODE => Reply::Ok(Body::default().u64(0).u32(0).u32(0).0),
                _ => Reply::Err(libc::ENOTDIR),
            },
            FUSE_READDIR => {
                let (offset, size) = (ne_u64(arg, 8), ne_u32(arg, 16) as usize);
                let entries: [(u64, &[u8], u32); 3] = [
                    (ROOT_NODE, b".", libc::DT_DIR as u32),
                    (ROOT_NODE, b"..", libc::DT_DIR as u32),
                    (DISK_NODE, DISK_NAME, libc::DT_REG as u32),
                ];
                let mut out = Body::default();
                for (i, (ino, name, kind)) in entries.iter().enumerate().skip(offset as usize) {
                    let padded = (24 + name.len()).next_multiple_of(8);
                    if out.0.len() + padded > size {
                        break;
                    }
                    out = out
                        .u64(*ino)
                        .u64(i as u64 + 1)
                        .u32(name.len() as u32)
                        .u32(*kind)
                        .bytes(name)
                        .zeros(padded - 24 - name.len());
                }
                Reply::Ok(out.0)
            }
            FUSE_READ => {
                let (offset, size) = (ne_u64(arg, 8), ne_u32(arg, 16) as u64);
                {
                    let mut s = control.stats.lock().unwrap();
                    if s.failing && s.fail_reads {
                        s.failed_reads += 1;
                        return Reply::Err(libc::EIO);
                    }
                }
                let len = size.min(self.bytes.saturating_sub(offset)) as usize;
                let mut data = vec![0u8; len];
                match self.backing.read_exact_at(&mut data, offset) {
                    Ok(()) => Reply::Ok(data),
                    Err(e) => Reply::Err(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
            FUSE_WRITE => {
                let (offset, size) = (ne_u64(arg, 8), ne_u32(arg, 16) as u64);
                let Some(data) = arg.get(40..40 + size as usize) else {
                    return Reply::Err(libc::EINVAL);
                };
                if offset + size > self.bytes {
                    return Reply::Err(libc::ENOSPC);
                }
                {
                    let mut s = control.stats.lock().unwrap();
                    s.write_requests += 1;
                    s.max_write_request = s.max_write_request.max(size);
                    if s.limit.is_some_and(|limit| s.written + size > limit)
                        || s.fail_from_offset.is_some_and(|at| offset + size > at)
                        || s.fail_after_fsyncs.is_some_and(|n| s.fsyncs >= n)
                    {
                        s.failing = true;
                    }
                    if s.failing {
                        s.failed_writes += 1;
                        return Reply::Err(control.errno);
                    }
                    s.written += size;
                }
                match self.backing.write_all_at(data, offset) {
                    Ok(()) => Reply::Ok(Body::default().u32(size as u32).u32(0).0),
                    Err(e) => Reply::Err(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
            FUSE_FSYNC => {
                // A full device still flushes; a failing one does not.
                let mut s = control.stats.lock().unwrap();
                s.fsyncs += 1;
                if s.fail_at_fsync.is_some_and(|n| s.fsyncs >= n) {
                    s.failing = true;
                }
                if control.errno != libc::ENOSPC && s.failing {
                    Reply::Err(control.errno)
                } else {
                    Reply::Ok(Vec::new())
                }
            }
            FUSE_STATFS => Reply::Ok(
                Body::default()
                    .u64(self.bytes / 4096) // blocks
                    .u64(0) // bfree
                    .u64(0) // bavail
                    .u64(2) // files
                    .u64(0) // ffree
                    .u32(4096) // bsize
                    .u32(255) // namelen
                    .u32(4096) // frsize
                    .zeros(28) // padding, spare[6]
                    .0,
            ),
            FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_FLUSH | FUSE_FSYNCDIR | FUSE_ACCESS => {
                Reply::Ok(Vec::new())
            }
            _ => Reply::Err(libc::ENOSYS),
        }
    }
}

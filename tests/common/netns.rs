#![allow(dead_code)]
//! Real NBD servers for integration tests and benchmarks: qemu-nbd or
//! nbdkit, each in its own network namespace behind a veth pair whose two
//! ends can be shaped with `tc` tbf (a LAN or a slow WAN site), or on a
//! unix socket (no namespace, no root).
//!
//! Include with `#[path = "common/netns.rs"] mod netns;`. Under CI
//! (`CI=true`) a missing capability (not root, no iproute2, no qemu-nbd or
//! nbdkit, network namespaces refused) fails the test; elsewhere the test
//! is skipped with a printed reason (see [`nbd_available`]).
//!
//! Layout of a TCP site (index N, unique machine-wide):
//!
//! ```text
//! host: pbnbdN-h 10.77.A.B+1/30 --veth-- pbnbdN-n 10.77.A.B+2/30 :10809, netns pbio-nbd-PID-K
//! ```
//!
//! with A = 1 + N / 64, B = 4 * (N % 64), K a per-process counter (the
//! site's directory is `/var/tmp/pbio-nbd-PID-K-*`); 10.77.0.0/24 is left to
//! `scripts/testbed.sh nbd-up`. Indexes are taken under a lock file
//! (`/var/tmp/pbio-nbd.lock`, also held while a site is torn down),
//! skipping any /30 already routed on the host, so concurrent test
//! binaries (and the script's sites) coexist.
//!
//! Cleanup: `Drop` SIGKILLs the server, deletes the veth (which takes its
//! peer with it) and the namespace, and removes the site's directory; it
//! runs on panic unwinding too. Servers are started with
//! `PR_SET_PDEATHSIG = SIGKILL`, so they die when the thread that started
//! them exits (keep a site on the thread that made it); and when the test
//! process itself is SIGKILLed, the next site created on the machine sweeps
//! `pbio-nbd-PID-*` namespaces and directories whose PID is dead.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Prefix of every namespace and directory this module creates.
pub const PREFIX: &str = "pbio-nbd-";
/// Port every TCP site's server listens on (each site has its own address).
pub const PORT: u16 = 10809;
/// Where backing files and sockets live: a disk filesystem on most systems
/// (O_DIRECT works there; /tmp and /dev/shm may be tmpfs).
pub const BASE_DIR: &str = "/var/tmp";
const LOCK_FILE: &str = "/var/tmp/pbio-nbd.lock";
/// How long a server may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which NBD server serves the export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// `qemu-nbd --persistent --shared=8 -f raw` over a backing file;
    /// `--cache=none --aio=native` when the file supports O_DIRECT.
    QemuNbd,
    /// `nbdkit file` over a backing file.
    NbdkitFile,
    /// `nbdkit memory SIZE`: no backing file; content is lost on restart.
    NbdkitMemory,
}

impl Server {
    fn program(self) -> &'static str {
        match self {
            Server::QemuNbd => "qemu-nbd",
            Server::NbdkitFile | Server::NbdkitMemory => "nbdkit",
        }
    }
}

/// A tbf shape applied to both ends of a site's veth (both directions):
/// `tc qdisc add dev DEV root tbf rate R burst B latency L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub rate: &'static str,
    pub burst: &'static str,
    pub latency: &'static str,
}

impl Shape {
    /// A LAN: 1 Gbit/s. The burst covers a 64 KiB GSO packet and a tick of
    /// HZ=250 at that rate (500 KB).
    pub const LAN: Shape = Shape {
        rate: "1gbit",
        burst: "512kb",
        latency: "10ms",
    };
    /// A slow WAN site: 40 Mbit/s with a deep queue (tbf has no delay of its
    /// own; under load the queue adds up to `latency` of RTT).
    pub const WAN: Shape = Shape {
        rate: "40mbit",
        burst: "32kb",
        latency: "200ms",
    };
}

/// How a site is built. `SiteOptions::default()`: qemu-nbd, 64 MiB, export
/// "pbio", TCP in a namespace, unshaped, a fresh sparse backing file.
#[derive(Clone, Debug)]
pub struct SiteOptions {
    pub server: Server,
    /// Export size: the backing file's size (created or resized to it), or
    /// the memory plugin's size.
    pub size_bytes: u64,
    pub export: String,
    /// None: unshaped veth.
    pub shape: Option<Shape>,
    /// True: a unix socket, no namespace (and no root) needed.
    pub unix: bool,
    /// None: `backing.img` in the site's own directory (removed on drop).
    /// Some: the test's file, kept on drop (created if missing, sized to
    /// `size_bytes` if its size differs).
    pub backing: Option<PathBuf>,
    /// Export read-only (`qemu-nbd --read-only`, `nbdkit -r`).
    pub read_only: bool,
}

impl Default for SiteOptions {
    fn default() -> SiteOptions {
        SiteOptions {
            server: Server::QemuNbd,
            size_bytes: 64 << 20,
            export: "pbio".to_string(),
            shape: None,
            unix: false,
            backing: None,
            read_only: false,
        }
    }
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Can this machine make network namespaces with veth links and tbf?
/// Probed once per process (a throwaway namespace and veth pair).
fn netns_probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if !nix::unistd::Uid::effective().is_root() {
                return Err("not running as root (network namespaces)".to_string());
            }
            if !runs("ip", "-V") {
                return Err("ip is not installed (iproute2)".to_string());
            }
            if !runs("tc", "-V") {
                return Err("tc is not installed (iproute2)".to_string());
            }
            // Names unique per process: test binaries may probe concurrently.
            let pid = std::process::id();
            let ns = format!("{PREFIX}{pid}-probe");
            let (host_if, ns_if) = (format!("pbnbdp{pid}"), format!("pbnbdq{pid}"));
            let veth = [
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ];
            let tbf = [
                "root", "tbf", "rate", "1gbit", "burst", "512kb", "latency", "10ms",
            ];
            let result = ip(&["netns", "add", &ns])
                .and_then(|_| ip(&[&veth[..], &["netns", &ns]].concat()))
                .and_then(|_| {
                    run(
                        "tc",
                        &[&["qdisc", "add", "dev", &host_if][..], &tbf].concat(),
                    )
                });
            let _ = ip(&["link", "del", &host_if]);
            let _ = ip(&["netns", "del", &ns]);
            result
                .map(drop)
                .map_err(|e| format!("cannot make a network namespace with a shaped veth: {e}"))
        })
        .clone()
}

/// True when the test may start `server` (`netns`: in a network namespace;
/// false: on a unix socket). Also needs qemu-img and qemu-io when
/// `qemu_client` (tests checking the export with qemu's own client).
/// Panics under CI when it cannot; elsewhere prints why it skips.
pub fn nbd_available(test: &str, server: Server, netns: bool, qemu_client: bool) -> bool {
    let program = server.program();
    let why = if !runs(program, "--version") {
        Some(format!(
            "{program} is not installed (apt-get install {})",
            if program == "nbdkit" {
                "nbdkit"
            } else {
                "qemu-utils"
            }
        ))
    } else if qemu_client && !(runs("qemu-img", "--version") && runs("qemu-io", "--version")) {
        Some("qemu-img/qemu-io are not installed (apt-get install qemu-utils)".to_string())
    } else if netns {
        netns_probe().err()
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if ci() => panic!("{test}: needs NBD servers under CI, but {why}"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            out.status,
            match String::from_utf8_lossy(&out.stderr).trim() {
                "" => String::new(),
                e => format!(": {e}"),
            }
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

fn pid_alive(pid: i32) -> bool {
    // ESRCH: no such process; EPERM would mean alive (we are root anyway).
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(pid, 0) == 0 };
    alive || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// PID of the process that made `name` (`pbio-nbd-PID-...`), if it has one.
fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Remove namespaces and directories left by test processes that died
/// without dropping their sites (killed, aborted). Never touches a live
/// process's sites.
fn sweep_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(pid) = owner_pid(ns) else { continue };
            if pid_alive(pid) {
                continue;
            }
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for p in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: plain kill(2) of a process in a dead run's namespace.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            let _ = ip(&["netns", "del", ns]);
            eprintln!("netns: removed stale namespace {ns}");
        }
    }
    if let Ok(entries) = std::fs::read_dir(BASE_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name) {
                if !pid_alive(pid) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// Held while choosing a site index and claiming its addresses.
struct MachineLock(std::fs::File);

impl MachineLock {
    fn take() -> MachineLock {
        MachineLock::try_take().unwrap_or_else(|e| panic!("lock {LOCK_FILE}: {e}"))
    }

    fn try_take() -> std::io::Result<MachineLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)?;
        // SAFETY: flock(2) on a descriptor we own; released when it closes
        // (each open file description locks apart, so threads exclude too).
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(MachineLock(file))
    }
}

/// First site index whose /30 nothing on the host uses (no address, no
/// route, no link of that name).
fn free_index() -> u32 {
    let addrs = ip(&["-o", "-4", "addr", "show"]).unwrap_or_default();
    let routes = ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    (0..64 * 254)
        .find(|&n| {
            let (net, _, _) = addresses(n);
            let used = |text: &str| {
                text.split(|c: char| c.is_whitespace() || c == '/')
                    .filter_map(|w| w.parse::<std::net::Ipv4Addr>().ok())
                    .any(|a| {
                        a.octets()[..3] == net.octets()[..3]
                            && a.octets()[3] & !3 == net.octets()[3]
                    })
            };
            let (host_if, _) = link_names(n);
            !used(&addrs)
                && !used(&routes)
                && !links.contains(&format!(" {host_if}@"))
                && !links.contains(&format!(" {host_if}:"))
        })
        .expect("no free 10.77.x.y/30 left for an NBD site")
}

/// (network, host end, namespace end) of site `n`.
fn addresses(n: u32) -> (std::net::Ipv4Addr, std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let (a, b) = ((1 + n / 64) as u8, (4 * (n % 64)) as u8);
    (
        [10, 77, a, b].into(),
        [10, 77, a, b + 1].into(),
        [10, 77, a, b + 2].into(),
    )
}

fn link_names(n: u32) -> (String, String) {
    (format!("pbnbd{n}-h"), format!("pbnbd{n}-n"))
}

fn supports_o_direct(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

/// The namespace side of a TCP site.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_addr: std::net::Ipv4Addr,
    ns_addr: std::net::Ipv4Addr,
}

/// An NBD server with one export, in its own network namespace (TCP) or on
/// a unix socket. Everything is torn down on drop.
pub struct NbdSite {
    options: SiteOptions,
    dir: tempfile::TempDir,
    backing: Option<PathBuf>,
    netns: Option<Netns>,
    socket: Option<PathBuf>,
    /// qemu-nbd's cache flags in use ("" for nbdkit).
    cache_flags: Vec<&'static str>,
    child: Option<Child>,
    starts: u32,
}

impl NbdSite {
    /// Build the site and start its server; panics (with the server's
    /// stderr) when it cannot. Check [`nbd_available`] first.
    pub fn start(options: SiteOptions) -> NbdSite {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{pid}-{k}-"))
            .tempdir_in(BASE_DIR)
            .unwrap_or_else(|e| panic!("temp dir in {BASE_DIR}: {e}"));
        let backing = match options.server {
            Server::NbdkitMemory => None,
            _ => {
                let path = options
                    .backing
                    .clone()
                    .unwrap_or_else(|| dir.path().join("backing.img"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("create {path:?}: {e}"));
                if file.metadata().map(|m| m.len()).ok() != Some(options.size_bytes) {
                    file.set_len(options.size_bytes)
                        .unwrap_or_else(|e| panic!("size {path:?}: {e}"));
                }
                Some(path)
            }
        };
        let cache_flags = match &backing {
            Some(path) if options.server == Server::QemuNbd && supports_o_direct(path) => {
                vec!["--cache=none", "--aio=native"]
            }
            _ => Vec::new(),
        };
        let mut site = NbdSite {
            socket: options.unix.then(|| dir.path().join("nbd.sock")),
            options,
            dir,
            backing,
            netns: None,
            cache_flags,
            child: None,
            starts: 0,
        };
        if !site.options.unix {
            // From here on a panic drops `site`, which removes what exists.
            let _lock = MachineLock::take();
            sweep_leftovers();
            let n = free_index();
            let (host_if, ns_if) = link_names(n);
            let (_, host_addr, ns_addr) = addresses(n);
            let name = format!("{PREFIX}{pid}-{k}");
            ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
            site.netns = Some(Netns {
                name: name.clone(),
                host_if: host_if.clone(),
                ns_if: ns_if.clone(),
                host_addr,
                ns_addr,
            });
            let host_cidr = format!("{host_addr}/30");
            let ns_cidr = format!("{ns_addr}/30");
            for args in [
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name,
                ][..],
                &["addr", "add", &host_cidr, "dev", &host_if],
                &["link", "set", &host_if, "up"],
                &["-n", &name, "addr", "add", &ns_cidr, "dev", &ns_if],
                &["-n", &name, "link", "set", &ns_if, "up"],
                &["-n", &name, "link", "set", "lo", "up"],
            ] {
                ip(args).unwrap_or_else(|e| panic!("{e}"));
            }
            if let Some(shape) = site.options.shape {
                site.apply_shape(shape, "add");
            }
        }
        site.start_server();
        site
    }

    /// Shorthand: a TCP site with `server`, `size_bytes` and `shape`.
    pub fn tcp(server: Server, size_bytes: u64, shape: Option<Shape>) -> NbdSite {
        NbdSite::start(SiteOptions {
            server,
            size_bytes,
            shape,
            ..SiteOptions::default()
        })
    }

    /// Shorthand: a unix-socket site with `server` and `size_bytes`.
    pub fn unix(server: Server, size_bytes: u64) -> NbdSite {
        NbdSite::start(SiteOptions {
            server,
            size_bytes,
            unix: true,
            ..SiteOptions::default()
        })
    }

    fn apply_shape(&self, shape: Shape, verb: &str) {
        let ns = self
            .netns
            .as_ref()
            .expect("a unix site has no link to shape");
        let tbf = [
            "root",
            "tbf",
            "rate",
            shape.rate,
            "burst",
            shape.burst,
            "latency",
            shape.latency,
        ];
        let host: Vec<&str> = ["qdisc", verb, "dev", &ns.host_if]
            .into_iter()
            .chain(tbf)
            .collect();
        let inner: Vec<&str> = ["-n", &ns.name, "qdisc", verb, "dev", &ns.ns_if]
            .into_iter()
            .chain(tbf)
            .collect();
        run("tc", &host).unwrap_or_else(|e| panic!("{e}"));
        run("tc", &inner).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Change (or remove, with None) the shape of both directions while the
    /// site runs (connections stay up).
    pub fn reshape(&mut self, shape: Option<Shape>) {
        let ns = self
            .netns
            .as_ref()
            .expect("a unix site has no link to shape");
        let _ = run("tc", &["qdisc", "del", "dev", &ns.host_if, "root"]);
        let _ = run(
            "tc",
            &["-n", &ns.name, "qdisc", "del", "dev", &ns.ns_if, "root"],
        );
        if let Some(shape) = shape {
            self.apply_shape(shape, "add");
        }
        self.options.shape = shape;
    }

    fn server_command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, self.options.server.program()]);
                c
            }
            None => Command::new(self.options.server.program()),
        };
        let export = &self.options.export;
        let port = PORT.to_string();
        match self.options.server {
            Server::QemuNbd => {
                cmd.args(["--persistent", "--shared=8", "-f", "raw"]);
                cmd.arg(format!("--export-name={export}"));
                cmd.args(&self.cache_flags);
                if self.options.read_only {
                    cmd.arg("--read-only");
                }
                match (&self.netns, &self.socket) {
                    (Some(ns), _) => cmd.args(["--bind", &ns.ns_addr.to_string(), "--port", &port]),
                    (None, Some(socket)) => cmd.arg("--socket").arg(socket),
                    (None, None) => unreachable!(),
                };
                cmd.arg(self.backing.as_ref().unwrap());
            }
            Server::NbdkitFile | Server::NbdkitMemory => {
                // nbdkit's --exportname only names the default export; the
                // exportname filter makes other names fail as with qemu-nbd.
                cmd.args(["-f", "--exportname", export, "--filter=exportname"]);
                if self.options.read_only {
                    cmd.arg("-r");
                }
                match (&self.netns, &self.socket) {
                    (Some(ns), _) => cmd.args(["-i", &ns.ns_addr.to_string(), "-p", &port]),
                    (None, Some(socket)) => cmd.arg("-U").arg(socket),
                    (None, None) => unreachable!(),
                };
                if self.options.server == Server::NbdkitFile {
                    cmd.arg("file").arg(self.backing.as_ref().unwrap());
                } else {
                    cmd.args(["memory", &self.options.size_bytes.to_string()]);
                }
                cmd.args([&format!("exportname={export}"), "exportname-strict=true"]);
            }
        }
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.starts))
    }

    fn start_server(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
        let log = std::fs::File::create(self.log_path()).expect("create server log");
        let mut cmd = self.server_command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = format!("{cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let probe = self.greeting();
            if probe.is_ok() {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let status = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("not accepting after {READY_TIMEOUT:?}"),
                };
                let log = self.server_log();
                let _ = self.kill_child();
                panic!(
                    "NBD server {status}: {shown}\nlast probe: {}\nserver stderr:\n{log}",
                    probe.unwrap_err()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connect and read the server's first 8 bytes (must be "NBDMAGIC").
    fn greeting(&self) -> std::io::Result<()> {
        let timeout = Duration::from_millis(500);
        let mut magic = [0u8; 8];
        match (&self.netns, &self.socket) {
            (Some(_), _) => {
                let mut s = TcpStream::connect_timeout(&self.socket_addr().unwrap(), timeout)?;
                s.set_read_timeout(Some(timeout))?;
                s.read_exact(&mut magic)?;
            }
            (None, Some(path)) => {
                let mut s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(timeout))?;
                s.read_exact(&mut magic)?;
            }
            (None, None) => unreachable!(),
        }
        if &magic != b"NBDMAGIC" {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("greeting {magic:02x?} is not NBDMAGIC"),
            ));
        }
        Ok(())
    }

    /// Does the export's address accept connections now (an NBD greeting)?
    pub fn accepts(&self) -> bool {
        self.greeting().is_ok()
    }

    fn kill_child(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// The export's URL for `pbio --dev`: `nbd://10.77.A.B:10809/EXPORT` or
    /// `nbd+unix:///EXPORT?socket=PATH`.
    pub fn url(&self) -> String {
        let export = &self.options.export;
        match (&self.netns, &self.socket) {
            (Some(ns), _) => format!("nbd://{}:{PORT}/{export}", ns.ns_addr),
            (None, Some(socket)) => format!("nbd+unix:///{export}?socket={}", socket.display()),
            (None, None) => unreachable!(),
        }
    }

    /// The server's TCP address (None for a unix site).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.netns
            .as_ref()
            .map(|ns| SocketAddr::from((ns.ns_addr, PORT)))
    }

    /// The host end's address, the client side (None for a unix site).
    pub fn host_addr(&self) -> Option<std::net::Ipv4Addr> {
        self.netns.as_ref().map(|ns| ns.host_addr)
    }

    /// The unix socket's path (None for a TCP site).
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The namespace's name (None for a unix site).
    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_ref().map(|ns| ns.name.as_str())
    }

    /// The host-side veth's name (None for a unix site).
    pub fn host_if(&self) -> Option<&str> {
        self.netns.as_ref().map(|ns| ns.host_if.as_str())
    }

    /// The backing file (None for nbdkit's memory plugin): read it to check
    /// what a client wrote, after the client flushed.
    pub fn backing(&self) -> Option<&Path> {
        self.backing.as_deref()
    }

    pub fn export(&self) -> &str {
        &self.options.export
    }

    pub fn size_bytes(&self) -> u64 {
        self.options.size_bytes
    }

    pub fn shape(&self) -> Option<Shape> {
        self.options.shape
    }

    /// qemu-nbd's cache flags in use (`--cache=none --aio=native` where the
    /// backing file takes O_DIRECT, none otherwise and for nbdkit).
    pub fn cache_flags(&self) -> &[&'static str] {
        &self.cache_flags
    }

    /// The running server's pid (None after `kill_server`).
    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the current (or last) server wrote to stdout and stderr.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL the server and reap it: established connections are reset
    /// and new ones refused. The namespace, link and backing file stay.
    /// Returns the server's exit status (None if it was not running).
    pub fn kill_server(&mut self) -> Option<std::process::ExitStatus> {
        self.kill_child()
    }

    /// Kill the server if it runs, start it again on the same address and
    /// backing file, and wait until it accepts.
    pub fn restart_server(&mut self) {
        self.kill_child();
        self.start_server();
    }
}

impl Drop for NbdSite {
    fn drop(&mut self) {
        // Never panic here: this runs while unwinding from a failed test.
        self.kill_child();
        if let Some(ns) = self.netns.take() {
            // Under the lock: once the link is gone its index looks free.
            let _lock = MachineLock::try_take();
            // Deleting the host end takes the peer with it, synchronously
            // (a deleted namespace's links go away later, from a workqueue).
            let _ = ip(&["link", "del", &ns.host_if]);
            let _ = ip(&["netns", "del", &ns.name]);
        }
        // self.dir (socket, logs, default backing file) is removed by TempDir.
    }
}

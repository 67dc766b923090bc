//! `nbd` devices: an export of a remote NBD server (qemu-nbd, nbdkit,
//! nbd-server), `nbd://HOST[:PORT][/EXPORT]` or
//! `nbd+unix:///EXPORT?socket=PATH` (the URI forms of the NBD project).
//!
//! pbio is the NBD client itself (no kernel nbd module, no nbd-client):
//! the fixed newstyle handshake with NBD_OPT_GO and structured replies
//! where the server offers them happens here, synchronously, when the
//! device is opened; the data path then runs over the device's io_uring
//! ring as send/recv operations on the socket (`pipe.rs`), many requests
//! in flight. The label and catalog go through the synchronous requests
//! of this file (`read_at`/`write_at`), when no pipe is running.
//!
//! A lost connection (reset, EOF, a server that stops answering for
//! `timeout` seconds) is first retried: the device reconnects (bounded
//! attempts with backoff) and resends every request that had no reply
//! (NBD reads and writes are idempotent). When reconnecting fails the
//! device has failed, and the engine redirects its work. A reply that
//! breaks the protocol (wrong magic, unknown handle, a length that does
//! not fit) is a device failure at once: a hostile or broken server.
//!
//! TLS (NBD_OPT_STARTTLS) is not spoken: a server that requires it is
//! refused with a message saying so.

pub mod pipe;
pub mod proto;
mod wire;

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Device, DeviceError, DeviceSpec, ErrorClass, Kind, Mode, Probe};
use proto::ProtoError;
use wire::{capacity_of, connect, disconnect, identity_of, recv_exact, send_all};

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;
/// Seconds without progress after which a connection counts as lost.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Connection attempts of one reconnect, and the waits between them.
const RECONNECT_BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix { socket: PathBuf },
}

/// A parsed `nbd://` or `nbd+unix://` device name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub address: Address,
    pub export: String,
}

/// Whether `path` names an NBD device (the scheme decides).
pub(in crate::device) fn is_nbd(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s.starts_with("nbd://") || s.starts_with("nbd+unix://")
}

/// An NBD device name that does not parse: the name as given and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{text}': {why}")]
pub struct TargetError {
    pub text: String,
    pub why: BadTarget,
}

/// What is wrong with an NBD device name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("nbd+unix:// needs ?socket=PATH")]
    NoSocket,
    #[error("nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)")]
    UnixHost,
    #[error("not an nbd:// or nbd+unix:// name")]
    Scheme,
    #[error("nbd:// takes no query (TLS and other options are not supported)")]
    Query,
    #[error("no host")]
    NoHost,
    #[error("unclosed '[' in host")]
    Unclosed,
    #[error("junk after ']'")]
    AfterBracket,
    #[error("port '{0}' is not a number 1-65535")]
    Port(String),
}

/// Parse `nbd://HOST[:PORT][/EXPORT]` or `nbd+unix:///EXPORT?socket=PATH`.
pub fn parse_target(text: &str) -> Result<Target, TargetError> {
    let bad = |why| TargetError {
        text: text.to_string(),
        why,
    };
    if let Some(rest) = text.strip_prefix("nbd+unix://") {
        let (path, query) = rest
            .split_once('?')
            .ok_or_else(|| bad(BadTarget::NoSocket))?;
        if !path.is_empty() && !path.starts_with('/') {
            return Err(bad(BadTarget::UnixHost));
        }
        let export = path.strip_prefix('/').unwrap_or(path).to_string();
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(BadTarget::NoSocket))?;
        return Ok(Target {
            address: Address::Unix {
                socket: PathBuf::from(socket),
            },
            export,
        });
    }
    let rest = text
        .strip_prefix("nbd://")
        .ok_or_else(|| bad(BadTarget::Scheme))?;
    if rest.contains('?') {
        return Err(bad(BadTarget::Query));
    }
    let (authority, export) = match rest.split_once('/') {
        Some((a, e)) => (a, e.to_string()),
        None => (rest, String::new()),
    };
    if authority.is_empty() {
        return Err(bad(BadTarget::NoHost));
    }
    // [v6]:port, host:port, host
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad(BadTarget::Unclosed))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad(BadTarget::AfterBracket)),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad(BadTarget::Port(p.to_string())))?,
    };
    if host.is_empty() {
        return Err(bad(BadTarget::NoHost));
    }
    Ok(Target {
        address: Address::Tcp { host, port },
        export,
    })
}

/// The link bandwidth assumed where `rate=` does not say: 10 Gbit/s.
const ASSUMED_RATE: u64 = 1_250_000_000;

/// Records of `record_bytes` that keep a link of `rate` bytes/s with
/// round trip `rtt` busy: twice its bandwidth-delay product (replies
/// arrive a round trip after their requests left; the second half covers
/// the server's own latency), within [floor, ceiling].
pub fn records_to_fill(
    rate: u64,
    rtt: Duration,
    record_bytes: u64,
    floor: usize,
    ceiling: usize,
) -> usize {
    let bdp = 2.0 * rate as f64 * rtt.as_secs_f64();
    let records = (bdp / record_bytes.max(1) as f64).ceil() as usize;
    records.clamp(floor, ceiling.max(floor))
}

/// The state of the connection: the socket and what the handshake said.
struct Conn {
    sock: OwnedFd,
    structured: bool,
}

/// An NBD export as a backup device.
pub struct NbdDevice {
    path: PathBuf,
    target: Target,
    writable: bool,
    timeout: Duration,
    capacity_bytes: u64,
    info: proto::ExportInfo,
    structured: bool,
    conn: Mutex<Conn>,
    /// The socket the ring submits to (changes when reconnecting).
    fd: AtomicI32,
    /// Round-trip time of a small read, measured at open (microseconds).
    rtt_us: AtomicU32,
    /// Successful reconnects so far.
    reconnects: AtomicU32,
    /// Declared bandwidth (`rate=`), for sizing the pipeline.
    declared_rate: Option<u64>,
}

/// The block the export's I/O is aligned to, learned at the handshake:
/// the server's preferred block size (NBD_INFO_BLOCK_SIZE) where it is a
/// power of two from its minimum (at least 512) up to pbio's 4096 bytes;
/// otherwise 4096, the protocol's default preferred size for a server
/// that sends no constraints. (A minimum above 4096 is refused at open.)
fn block_bytes_of(info: &proto::ExportInfo) -> u32 {
    let format = crate::format::BLOCK_BYTES as u32;
    match info.block_sizes {
        Some((min, preferred, _))
            if preferred.is_power_of_two() && preferred >= min.max(512) && preferred <= format =>
        {
            preferred
        }
        _ => format,
    }
}

fn proto_err(e: ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn timeout_of(spec: &DeviceSpec) -> Duration {
    Duration::from_secs(spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))
}

/// What `probe` needs: connect, handshake, disconnect.
pub fn probe(spec: &DeviceSpec) -> Result<Probe, DeviceError> {
    let path = &spec.path;
    let text = path.to_string_lossy();
    let target = parse_target(&text).map_err(|e| DeviceError::unusable(path, e.to_string()))?;
    let (sock, _, info) = connect(&target, timeout_of(spec))
        .map_err(|e| DeviceError::io(path, "connect to the NBD server", e))?;
    let identity = identity_of(&sock, &target);
    disconnect(&sock);
    Ok(Probe {
        kind: Kind::Nbd,
        capacity_bytes: capacity_of(spec, &info)?,
        identity,
    })
}

impl NbdDevice {
    pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<NbdDevice, DeviceError> {
        let path = &spec.path;
        let text = path.to_string_lossy();
        let target = parse_target(&text).map_err(|e| DeviceError::unusable(path, e.to_string()))?;
        let timeout = timeout_of(spec);
        let (sock, structured, info) = connect(&target, timeout)
            .map_err(|e| DeviceError::io(path, "connect to the NBD server", e))?;
        let writable = mode == Mode::Write;
        if writable && info.transmission_flags & proto::TFLAG_READ_ONLY != 0 {
            return Err(DeviceError::unusable(
                path,
                "the server exports it read-only",
            ));
        }
        if let Some((min, _, _)) = info.block_sizes {
            if min > crate::format::BLOCK_BYTES as u32 {
                return Err(DeviceError::unusable(
                    path,
                    format!("the server's minimum block size {min} is larger than pbio's 4096"),
                ));
            }
        }
        let capacity_bytes = capacity_of(spec, &info)?;
        let fd = sock.as_raw_fd();
        let dev = NbdDevice {
            path: path.clone(),
            target,
            writable,
            timeout,
            capacity_bytes,
            info,
            structured,
            conn: Mutex::new(Conn { sock, structured }),
            fd: AtomicI32::new(fd),
            rtt_us: AtomicU32::new(0),
            reconnects: AtomicU32::new(0),
            declared_rate: spec.rate_bytes_per_sec,
        };
        dev.measure_rtt()
            .map_err(|e| DeviceError::io(path, "first read", e))?;
        Ok(dev)
    }

    /// The best of three 4 KiB reads at offset 0: the round trip the
    /// pipeline must cover.
    fn measure_rtt(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 4096.min(self.capacity_bytes as usize)];
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            self.read_at(&mut buf, 0)?;
            best = best.min(t.elapsed());
        }
        self.rtt_us.store(
            best.as_micros().min(u32::MAX as u128) as u32,
            Ordering::Relaxed,
        );
        Ok(())
    }

    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us.load(Ordering::Relaxed) as u64)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    /// What the handshake said about the export: size, transmission
    /// flags (read-only, flush, FUA) and the server's block sizes.
    pub fn export_info(&self) -> &proto::ExportInfo {
        &self.info
    }

    /// The URL's parts: where the server is and the export's name.
    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The largest payload the server takes in one request.
    pub fn request_bytes_max(&self) -> u32 {
        match self.info.block_sizes {
            Some((_, _, max)) => max.min(32 << 20),
            // The protocol's advice without NBD_INFO_BLOCK_SIZE: 32 MiB is safe.
            None => 32 << 20,
        }
    }

    /// Records in flight that fill the link: twice bandwidth x RTT (the
    /// bandwidth declared with rate=, else 10 Gbit/s), in records of
    /// `record_bytes`, never fewer than `floor`, never more than `ceiling`.
    pub fn records_in_flight(&self, record_bytes: u64, floor: usize, ceiling: usize) -> usize {
        let rate = self.declared_rate.unwrap_or(ASSUMED_RATE);
        records_to_fill(rate, self.rtt(), record_bytes, floor, ceiling)
    }

    /// Replace a lost connection: a few attempts with backoff. The new
    /// socket must show the same export.
    pub fn reconnect(&self) -> io::Result<()> {
        let mut last = io::Error::other("no attempt");
        for wait in RECONNECT_BACKOFF {
            std::thread::sleep(wait);
            match connect(&self.target, self.timeout) {
                Ok((sock, structured, info)) => {
                    if info.size_bytes != self.info.size_bytes || structured != self.structured {
                        return Err(io::Error::other(format!(
                            "after reconnecting the export differs (size {} bytes, structured replies {structured})",
                            info.size_bytes
                        )));
                    }
                    let mut conn = self.conn.lock().expect("nbd connection lock");
                    self.fd.store(sock.as_raw_fd(), Ordering::Release);
                    *conn = Conn { sock, structured };
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(io::Error::new(
            last.kind(),
            format!(
                "reconnect failed after {} attempts: {last}",
                RECONNECT_BACKOFF.len()
            ),
        ))
    }

    /// Shut the current socket down (in-flight ring operations on it end).
    pub fn shutdown(&self) {
        let fd = self.fd.load(Ordering::Acquire);
        // SAFETY: shutdown on a socket we own; a stale fd at worst fails.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }

    /// One synchronous request; `data` is the payload of a write or the
    /// destination of a read.
    fn request_once(&self, command: u16, offset: u64, data: Data<'_>) -> io::Result<()> {
        let conn = self.conn.lock().expect("nbd connection lock");
        let fd = conn.sock.as_raw_fd();
        let len = match &data {
            Data::Out(b) => b.len(),
            Data::In(b) => b.len(),
            Data::None => 0,
        };
        let mut req = [0u8; proto::REQUEST_BYTES];
        const HANDLE: u64 = 0x7062_696f_7379_6e63; // "pbiosync"
        proto::encode_request(&mut req, 0, command, HANDLE, offset, len as u32);
        send_all(fd, &req)?;
        if let Data::Out(b) = &data {
            send_all(fd, b)?;
        }
        let mut dest = match data {
            Data::In(b) => Some(b),
            _ => None,
        };
        let mut covered = 0u64;
        let mut error: Option<(u32, String)> = None;
        loop {
            let mut head = [0u8; proto::STRUCTURED_REPLY_BYTES];
            recv_exact(fd, &mut head[..4])?;
            let n = proto::reply_head_bytes(u32::from_be_bytes(head[..4].try_into().unwrap()))
                .map_err(proto_err)?;
            recv_exact(fd, &mut head[4..n])?;
            let head = proto::decode_reply_head(&head[..n], conn.structured).map_err(proto_err)?;
            let handle = match head {
                proto::ReplyHead::Simple { handle, .. } => handle,
                proto::ReplyHead::Structured { handle, .. } => handle,
            };
            if handle != HANDLE {
                return Err(proto_err(ProtoError::Invalid(format!(
                    "reply for handle {handle:#x}, which was never sent"
                ))));
            }
            match head {
                proto::ReplyHead::Simple { error: e, .. } => {
                    if e != 0 {
                        return Err(io::Error::from_raw_os_error(proto::errno_of(e)));
                    }
                    if let Some(b) = dest.as_deref_mut() {
                        recv_exact(fd, b)?;
                    }
                    return Ok(());
                }
                proto::ReplyHead::Structured {
                    flags,
                    kind,
                    length,
                    ..
                } => {
                    match kind {
                        proto::REPLY_TYPE_NONE if length == 0 => {}
                        proto::REPLY_TYPE_OFFSET_DATA if length >= 8 => {
                            let b = dest.as_deref_mut().ok_or_else(|| {
                                proto_err(ProtoError::Invalid("data for a non-read".into()))
                            })?;
                            let mut o = [0u8; 8];
                            recv_exact(fd, &mut o)?;
                            let n = length as u64 - 8;
                            let at =
                                proto::chunk_within(u64::from_be_bytes(o), n, offset, len as u32)
                                    .map_err(proto_err)?;
                            recv_exact(fd, &mut b[at..at + n as usize])?;
                            covered += n;
                        }
                        proto::REPLY_TYPE_OFFSET_HOLE => {
                            let b = dest.as_deref_mut().ok_or_else(|| {
                                proto_err(ProtoError::Invalid("a hole for a non-read".into()))
                            })?;
                            let mut p = vec![0u8; length as usize];
                            recv_exact(fd, &mut p)?;
                            let (o, n) = proto::decode_hole_chunk(&p).map_err(proto_err)?;
                            let at = proto::chunk_within(o, n as u64, offset, len as u32)
                                .map_err(proto_err)?;
                            b[at..at + n as usize].fill(0);
                            covered += n as u64;
                        }
                        k if proto::is_error_chunk(k) => {
                            let mut p = vec![0u8; length as usize];
                            recv_exact(fd, &mut p)?;
                            error = Some(proto::decode_error_chunk(&p).map_err(proto_err)?);
                        }
                        k => {
                            return Err(proto_err(ProtoError::Invalid(format!(
                                "unexpected structured reply chunk type {k} ({length} bytes)"
                            ))))
                        }
                    }
                    if flags & proto::REPLY_FLAG_DONE != 0 {
                        if let Some((e, msg)) = error {
                            let errno = proto::errno_of(e);
                            return Err(io::Error::new(
                                io::Error::from_raw_os_error(errno).kind(),
                                format!("{} ({msg})", io::Error::from_raw_os_error(errno)),
                            ));
                        }
                        if command == proto::CMD_READ && covered != len as u64 {
                            return Err(proto_err(ProtoError::Invalid(format!(
                                "read reply covered {covered} of {len} bytes"
                            ))));
                        }
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A synchronous request, reconnecting once if the connection was lost.
    fn request(&self, command: u16, offset: u64, mut data: Data<'_>) -> io::Result<()> {
        let first = self.request_once(command, offset, data.reborrow());
        match first {
            Err(e) if connection_lost(&e) => {
                self.reconnect()
                    .map_err(|r| io::Error::new(r.kind(), format!("{e}; {r}")))?;
                self.request_once(command, offset, data)
            }
            other => other,
        }
    }
}

/// Whether an error of a request means the connection is gone (worth a
/// reconnect), rather than an answer from the server or a protocol breach.
pub fn connection_lost(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted | TimedOut | NotConnected
    ) || matches!(e.raw_os_error(), Some(libc::ESHUTDOWN) | Some(libc::EPIPE))
}

enum Data<'a> {
    Out(&'a [u8]),
    In(&'a mut [u8]),
    None,
}

impl Data<'_> {
    fn reborrow(&mut self) -> Data<'_> {
        match self {
            Data::Out(b) => Data::Out(b),
            Data::In(b) => Data::In(b),
            Data::None => Data::None,
        }
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        if let Ok(conn) = self.conn.lock() {
            disconnect(&conn.sock);
        }
    }
}

impl Device for NbdDevice {
    super::path_and_kind!(Kind::Nbd);
    fn fd(&self) -> RawFd {
        self.fd.load(Ordering::Acquire)
    }
    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    fn block_bytes(&self) -> u32 {
        block_bytes_of(&self.info)
    }
    fn direct_io(&self) -> bool {
        true
    }
    fn sync(&self) -> io::Result<()> {
        if self.info.transmission_flags & proto::TFLAG_SEND_FLUSH == 0 {
            // The server says its writes need no flush.
            return Ok(());
        }
        self.request(proto::CMD_FLUSH, 0, Data::None)
    }
    fn classify(&self, errno: i32) -> ErrorClass {
        match errno {
            libc::ENOSPC | libc::EFBIG | libc::EDQUOT => ErrorClass::Full,
            _ => ErrorClass::Failed,
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.info.size_bytes.saturating_sub(offset)) as usize;
        let max = self.request_bytes_max() as usize;
        for (i, piece) in buf[..n].chunks_mut(max).enumerate() {
            self.request(proto::CMD_READ, offset + (i * max) as u64, Data::In(piece))?;
        }
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if offset + buf.len() as u64 > self.capacity_bytes {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let max = self.request_bytes_max() as usize;
        for (i, piece) in buf.chunks(max).enumerate() {
            self.request(
                proto::CMD_WRITE,
                offset + (i * max) as u64,
                Data::Out(piece),
            )?;
        }
        Ok(buf.len())
    }
    fn data_path(&self) -> crate::device::DataPath<'_> {
        crate::device::DataPath::Pipelined(Box::new(pipe::Pipe::new(self)))
    }
    fn records_in_flight(&self, record_bytes: u64, floor: usize, max: usize) -> usize {
        NbdDevice::records_in_flight(self, record_bytes, floor, max)
    }
    fn reconnects(&self) -> u32 {
        NbdDevice::reconnects(self)
    }
    fn export_identity(&self) -> Option<super::ExportIdentity> {
        Some(super::ExportIdentity {
            address: self.target().address.clone(),
            export: self.target().export.clone(),
            info: *self.export_info(),
            structured_replies: self.structured_replies(),
            request_bytes_max: self.request_bytes_max(),
            rtt: self.rtt(),
            timeout: self.timeout(),
        })
    }
}

#[cfg(test)]
mod tests;

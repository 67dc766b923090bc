//! The synchronous side of the socket: connect, the fixed newstyle
//! handshake, whole sends and receives, which export this is, disconnect.

use super::*;

/// Connect and handshake: the socket, whether structured replies are on,
/// and the export's information.
pub(super) fn connect(
    target: &Target,
    timeout: Duration,
) -> io::Result<(OwnedFd, bool, proto::ExportInfo)> {
    let sock: OwnedFd = match &target.address {
        Address::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs()?.collect();
            let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
            let mut stream = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout.min(Duration::from_secs(10))) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let s = stream.ok_or(last)?;
            s.set_nodelay(true)?;
            s.into()
        }
        Address::Unix { socket } => UnixStream::connect(socket)?.into(),
    };
    set_timeouts(&sock, timeout)?;
    let (structured, info) = handshake(&sock, &target.export)?;
    Ok((sock, structured, info))
}

pub(super) fn set_timeouts(sock: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: tv is a valid timeval for the duration of the call.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Send all of `buf` (MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE).
pub(super) fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a live slice.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out"));
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Receive exactly `buf.len()` bytes.
pub(super) fn recv_exact(fd: RawFd, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the range is within buf.
        let n = unsafe {
            libc::recv(
                fd,
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the server (timeout)",
                ));
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// The fixed newstyle handshake: structured replies if offered, then
/// NBD_OPT_GO with the block size information.
pub(super) fn handshake(sock: &OwnedFd, export: &str) -> io::Result<(bool, proto::ExportInfo)> {
    let fd = sock.as_raw_fd();
    let mut greeting = [0u8; 18];
    recv_exact(fd, &mut greeting)?;
    let flags = proto::decode_greeting(&greeting).map_err(proto_err)?;
    let client_flags = (proto::FLAG_FIXED_NEWSTYLE | (flags & proto::FLAG_NO_ZEROES)) as u32;
    send_all(fd, &client_flags.to_be_bytes())?;

    // Structured replies.
    send_all(fd, &proto::encode_option(proto::OPT_STRUCTURED_REPLY, &[]))?;
    let mut structured = false;
    loop {
        let (reply, _data) = read_option_reply(fd, proto::OPT_STRUCTURED_REPLY)?;
        if reply.reply == proto::REP_ACK {
            structured = true;
            break;
        }
        if reply.is_error() {
            // Not offered: simple replies it is.
            break;
        }
    }

    // NBD_OPT_GO.
    let data = proto::go_data(export, &[proto::INFO_BLOCK_SIZE]);
    send_all(fd, &proto::encode_option(proto::OPT_GO, &data))?;
    let mut info = proto::ExportInfo::default();
    let mut have_export = false;
    loop {
        let (reply, data) = read_option_reply(fd, proto::OPT_GO)?;
        match reply.reply {
            proto::REP_INFO => {
                have_export |= proto::apply_info(&mut info, &data).map_err(proto_err)?
            }
            proto::REP_ACK => break,
            r if reply.is_error() => {
                return Err(io::Error::other(format!(
                    "export '{export}': {}",
                    proto::option_error_text(r, &data)
                )))
            }
            other => {
                return Err(proto_err(ProtoError::Invalid(format!(
                    "unexpected reply {other} to NBD_OPT_GO"
                ))))
            }
        }
    }
    if !have_export {
        return Err(proto_err(ProtoError::Invalid(
            "NBD_OPT_GO ended without NBD_INFO_EXPORT".into(),
        )));
    }
    Ok((structured, info))
}

pub(super) fn read_option_reply(
    fd: RawFd,
    option: u32,
) -> io::Result<(proto::OptionReply, Vec<u8>)> {
    let mut head = [0u8; 20];
    recv_exact(fd, &mut head)?;
    let reply = proto::decode_option_reply(&head, option).map_err(proto_err)?;
    let mut data = vec![0u8; reply.length as usize];
    recv_exact(fd, &mut data)?;
    Ok((reply, data))
}
/// Which export this is, whatever the spelling of its URL: the server's
/// address as connected (`localhost` and `127.0.0.1` are one server), or
/// the socket's canonical path, with the export name.
pub(super) fn identity_of(sock: &OwnedFd, target: &Target) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match &target.address {
        Address::Tcp { host, port } => {
            // A duplicate of the descriptor, to ask it where it leads.
            let peer = sock
                .try_clone()
                .and_then(|fd| TcpStream::from(fd).peer_addr());
            match peer {
                Ok(addr) => addr.hash(&mut h),
                Err(_) => (host, port).hash(&mut h),
            }
        }
        Address::Unix { socket } => std::fs::canonicalize(socket)
            .unwrap_or_else(|_| socket.clone())
            .hash(&mut h),
    }
    target.export.hash(&mut h);
    (u64::MAX - 1, h.finish())
}

pub(super) fn capacity_of(spec: &DeviceSpec, info: &proto::ExportInfo) -> Result<u64, DeviceError> {
    let size = info.size_bytes;
    match spec.size_bytes {
        Some(want) if want > size => Err(DeviceError::unusable(
            &spec.path,
            format!("size={want} is larger than the export ({size} bytes)"),
        )),
        Some(want) => Ok(want),
        None if size == 0 => Err(DeviceError::unusable(&spec.path, "the export has size 0")),
        None => Ok(size),
    }
}

pub(super) fn disconnect(sock: &OwnedFd) {
    let mut req = [0u8; proto::REQUEST_BYTES];
    proto::encode_request(&mut req, 0, proto::CMD_DISC, 0, 0, 0);
    let _ = send_all(sock.as_raw_fd(), &req);
}

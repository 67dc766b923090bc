//! The NBD test bed itself (tests/common/netns.rs), checked without pbio:
//! qemu-img and qemu-io are the independent NBD client, and a few bytes of
//! handshake are spoken here directly.

#[path = "common/netns.rs"]
mod netns;

use netns::{nbd_available, NbdSite, Server, Shape, SiteOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run qemu-io on `url` with `commands`; panics unless every command
/// succeeded (including `read -P` pattern checks). Returns the wall time.
fn qemu_io(url: &str, commands: &[&str]) -> Duration {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.arg(url);
    let t0 = Instant::now();
    let out = cmd.output().expect("run qemu-io");
    let elapsed = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stdout.contains("fail") && !stderr.contains("fail"),
        "qemu-io {commands:?} {url}: {}\n{stdout}{stderr}",
        out.status
    );
    elapsed
}

/// `qemu-img info` on `url`: Ok(virtual size) or Err(stderr).
fn qemu_img_size(url: &str) -> Result<u64, String> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", url])
        .output()
        .expect("run qemu-img");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    Ok(info["virtual-size"].as_u64().expect("virtual-size"))
}

/// Size, write/read-back through NBD, the bytes in the backing file, and
/// a wrong export name refused.
fn check_export(site: &NbdSite) {
    let url = site.url();
    assert_eq!(qemu_img_size(&url), Ok(site.size_bytes()), "{url}");
    let last_mib = site.size_bytes() - (1 << 20);
    qemu_io(
        &url,
        &[
            "write -P 0xab 0 1M",
            &format!("write -P 0xcd {last_mib} 1M"),
            "flush",
            "read -P 0xab 0 1M",
            &format!("read -P 0xcd {last_mib} 1M"),
        ],
    );
    if let Some(path) = site.backing() {
        let file = std::fs::File::open(path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0xab), "{path:?}: 0xab not at 0");
        file.read_exact_at(&mut buf, last_mib).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0xcd),
            "{path:?}: 0xcd not at the end"
        );
    }
    let wrong = url.replace(&format!("/{}", site.export()), "/no-such-export");
    let refused = qemu_img_size(&wrong).expect_err("a wrong export name must be refused");
    assert!(refused.contains("export"), "{wrong}: {refused}");
}

const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
const NBD_OPT_ABORT: u32 = 2;
const NBD_REP_ACK: u32 = 1;

/// Speak the fixed newstyle handshake up to NBD_OPT_STRUCTURED_REPLY and
/// return the server's reply type (NBD_REP_ACK when it offers them).
fn structured_reply_answer(site: &NbdSite) -> u32 {
    let mut s = std::net::TcpStream::connect(site.socket_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    assert_eq!(&greeting[8..16], b"IHAVEOPT");
    let flags = u16::from_be_bytes([greeting[16], greeting[17]]);
    assert_eq!(flags & 1, 1, "NBD_FLAG_FIXED_NEWSTYLE");
    // Client flags: fixed newstyle, no zeroes.
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let option = |s: &mut std::net::TcpStream, opt: u32| {
        let mut msg = b"IHAVEOPT".to_vec();
        msg.extend_from_slice(&opt.to_be_bytes());
        msg.extend_from_slice(&0u32.to_be_bytes());
        s.write_all(&msg).unwrap();
    };
    option(&mut s, NBD_OPT_STRUCTURED_REPLY);
    let mut reply = [0u8; 20];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(
        u64::from_be_bytes(reply[..8].try_into().unwrap()),
        0x3e889045565a9
    );
    assert_eq!(
        u32::from_be_bytes(reply[8..12].try_into().unwrap()),
        NBD_OPT_STRUCTURED_REPLY
    );
    let rep_type = u32::from_be_bytes(reply[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(reply[16..20].try_into().unwrap());
    let mut rest = vec![0u8; len as usize];
    s.read_exact(&mut rest).unwrap();
    option(&mut s, NBD_OPT_ABORT);
    rep_type
}

#[test]
fn qemu_nbd_on_a_lan_site_serves_its_export() {
    let test = "qemu_nbd_on_a_lan_site_serves_its_export";
    if !nbd_available(test, Server::QemuNbd, true, true) {
        return;
    }
    let site = NbdSite::tcp(Server::QemuNbd, 64 << 20, Some(Shape::LAN));
    let url = site.url();
    assert!(
        url.starts_with("nbd://10.77.") && url.ends_with(":10809/pbio"),
        "{url}"
    );
    eprintln!(
        "{test}: {url}, qemu-nbd cache flags {:?}",
        site.cache_flags()
    );
    check_export(&site);
    assert_eq!(structured_reply_answer(&site), NBD_REP_ACK);
}

#[test]
fn nbdkit_file_and_memory_sites_serve_their_exports() {
    let test = "nbdkit_file_and_memory_sites_serve_their_exports";
    if !nbd_available(test, Server::NbdkitFile, true, true) {
        return;
    }
    let file = NbdSite::start(SiteOptions {
        server: Server::NbdkitFile,
        size_bytes: 48 << 20,
        export: "disk-a".to_string(),
        shape: Some(Shape::LAN),
        ..SiteOptions::default()
    });
    let memory = NbdSite::tcp(Server::NbdkitMemory, 32 << 20, None);
    assert_ne!(file.socket_addr(), memory.socket_addr());
    for site in [&file, &memory] {
        eprintln!("{test}: {}", site.url());
        check_export(site);
        assert_eq!(structured_reply_answer(site), NBD_REP_ACK, "{}", site.url());
    }
}

#[test]
fn unix_socket_sites_serve_their_exports() {
    let test = "unix_socket_sites_serve_their_exports";
    for server in [Server::QemuNbd, Server::NbdkitFile, Server::NbdkitMemory] {
        if !nbd_available(test, server, false, true) {
            continue;
        }
        let site = NbdSite::unix(server, 16 << 20);
        let url = site.url();
        assert!(url.starts_with("nbd+unix:///pbio?socket=/"), "{url}");
        assert!(site.netns_name().is_none());
        check_export(&site);
    }
}

/// tbf on the WAN site must slow both directions (writes leave through the
/// host's veth end, reads through the namespace's): a property of the
/// test bed, not a performance target.
#[test]
fn shaping_slows_both_directions() {
    let test = "shaping_slows_both_directions";
    if !nbd_available(test, Server::QemuNbd, true, true) {
        return;
    }
    let wan = NbdSite::tcp(Server::QemuNbd, 32 << 20, Some(Shape::WAN));
    let fast = NbdSite::tcp(Server::QemuNbd, 32 << 20, None);
    const MIB: u64 = 4;
    let write = format!("write -P 0x5a 0 {MIB}M");
    let read = format!("read -P 0x5a 0 {MIB}M");
    let mut times = Vec::new();
    for site in [&fast, &wan] {
        let url = site.url();
        times.push((qemu_io(&url, &[&write]), qemu_io(&url, &[&read])));
    }
    let [(fast_w, fast_r), (wan_w, wan_r)] = times[..] else {
        unreachable!()
    };
    let rate = |d: Duration| MIB as f64 * 8.388_608 / d.as_secs_f64();
    eprintln!(
        "{test}: {MIB} MiB write / read, unshaped {fast_w:.2?} / {fast_r:.2?}, \
         WAN ({}) {wan_w:.2?} / {wan_r:.2?} = {:.1} / {:.1} Mbit/s",
        Shape::WAN.rate,
        rate(wan_w),
        rate(wan_r)
    );
    assert!(
        wan_w >= 2 * fast_w,
        "write: WAN {wan_w:?} vs unshaped {fast_w:?}"
    );
    assert!(
        wan_r >= 2 * fast_r,
        "read: WAN {wan_r:?} vs unshaped {fast_r:?}"
    );
}

#[test]
fn killed_server_refuses_connections_and_restarts() {
    let test = "killed_server_refuses_connections_and_restarts";
    for server in [Server::QemuNbd, Server::NbdkitFile] {
        if !nbd_available(test, server, true, true) {
            continue;
        }
        let mut site = NbdSite::tcp(server, 16 << 20, None);
        let url = site.url();
        qemu_io(&url, &["write -P 0x77 0 2M", "flush"]);
        // A client connected while the server dies sees its connection end.
        let mut held = std::net::TcpStream::connect(site.socket_addr().unwrap()).unwrap();
        let pid = site.server_pid().unwrap();
        site.kill_server().expect("server was running");
        assert!(site.server_pid().is_none());
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "server {pid} survived"
        );
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = held.read_to_end(&mut rest); // EOF or reset, not a timeout
        let err = std::net::TcpStream::connect_timeout(
            &site.socket_addr().unwrap(),
            Duration::from_secs(2),
        )
        .expect_err("a killed server's port must refuse");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        assert!(!site.accepts());
        assert!(qemu_img_size(&url).is_err());
        site.restart_server();
        assert!(site.accepts());
        qemu_io(&url, &["read -P 0x77 0 2M"]);
        eprintln!("{test}: {server:?} killed and restarted on {url}");
    }
}

#[test]
fn drop_removes_the_site_even_when_the_test_panics() {
    let test = "drop_removes_the_site_even_when_the_test_panics";
    if !nbd_available(test, Server::NbdkitFile, true, false) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let site = NbdSite::tcp(Server::NbdkitFile, 8 << 20, Some(Shape::WAN));
        let dir = site.backing().unwrap().parent().unwrap().to_path_buf();
        tx.send((
            site.netns_name().unwrap().to_string(),
            site.host_if().unwrap().to_string(),
            site.server_pid().unwrap(),
            dir,
        ))
        .unwrap();
        panic!("deliberate panic with a live site");
    })
    .join();
    assert!(result.is_err());
    let (ns, host_if, pid, dir) = rx.recv().unwrap();
    let list = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&ns)),
        "{ns} left: {list}"
    );
    let link = Command::new("ip")
        .args(["link", "show", &host_if])
        .output()
        .unwrap();
    assert!(!link.status.success(), "{host_if} left");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server {pid} left"
    );
    assert!(!dir.exists(), "{dir:?} left");
}

/// A namespace and directory left by a test process that died (its pid
/// is gone) are removed when the next site is made.
#[test]
fn leftovers_of_a_dead_run_are_swept() {
    let test = "leftovers_of_a_dead_run_are_swept";
    if !nbd_available(test, Server::QemuNbd, true, false) {
        return;
    }
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let ns = format!("{}{dead}-9999", netns::PREFIX);
    let dir = std::path::Path::new(netns::BASE_DIR).join(format!("{}{dead}-0-x", netns::PREFIX));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(&dir).unwrap();
    let site = NbdSite::tcp(Server::QemuNbd, 8 << 20, None);
    let list = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&ns)),
        "{ns} left: {list}"
    );
    assert!(!dir.exists(), "{dir:?} left");
    assert!(site.accepts());
}

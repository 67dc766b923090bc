use super::*;

#[test]
fn spec_parse() {
    let s = DeviceSpec::parse("/dev/loop0").unwrap();
    assert_eq!(s.path, PathBuf::from("/dev/loop0"));
    assert_eq!(s.size_bytes, None);
    let s = DeviceSpec::parse("x.img,size=1G,rate=400M").unwrap();
    assert_eq!(s.size_bytes, Some(1 << 30));
    assert_eq!(s.rate_bytes_per_sec, Some(400 << 20));
    assert!(DeviceSpec::parse("").is_err());
    assert!(DeviceSpec::parse("x,size").is_err());
    assert!(DeviceSpec::parse("x,speed=1").is_err());
    assert!(DeviceSpec::parse("x,size=1Q").is_err());
    assert!(DeviceSpec::parse("x,rate=0").is_err());
}

/// The typed refusals read as the texts they replaced, word for word.
#[test]
fn spec_errors_keep_their_messages() {
    let text = |spec: &str| DeviceSpec::parse(spec).unwrap_err().to_string();
    assert_eq!(text(""), "--dev '': empty device path");
    assert_eq!(
        text("x,size"),
        "--dev 'x,size': option 'size' is not key=value"
    );
    assert_eq!(
        text("x,speed=1"),
        "--dev 'x,speed=1': unknown option 'speed' (known: size, rate, ew, timeout)"
    );
    assert!(text("x,size=1Q").starts_with("--dev 'x,size=1Q': size: "));
    assert_eq!(text("x,rate=0"), "--dev 'x,rate=0': rate must be positive");
    assert_eq!(
        text("x,ew=1M"),
        "--dev 'x,ew=1M': ew= is an option of emulated tapes (vtape:DIR) only"
    );
    assert_eq!(
        text("nbd://h/e,timeout=0"),
        "--dev 'nbd://h/e,timeout=0': timeout= is a number of seconds (1 or more)"
    );
    assert_eq!(
        text("x,timeout=5"),
        "--dev 'x,timeout=5': timeout= is an option of nbd:// devices only"
    );
}

#[test]
fn backing_follows_the_name() {
    assert_eq!(backing(Path::new("nbd://h/e")), Backing::Remote);
    assert_eq!(
        backing(Path::new("nbd+unix:///e?socket=/s")),
        Backing::Remote
    );
    assert_eq!(
        backing(Path::new("vtape:/x/y")),
        Backing::TapeDirectory(PathBuf::from("/x/y"))
    );
    assert_eq!(
        backing(Path::new("pmem:/dev/shm/p")),
        Backing::Mapped(PathBuf::from("/dev/shm/p"))
    );
    assert_eq!(
        backing(Path::new("/dev/pmem0")).mapped_file(),
        Some(PathBuf::from("/dev/pmem0"))
    );
    assert_eq!(backing(Path::new("/dev/loop0")), Backing::Node);
    assert_eq!(backing(Path::new("/dev/loop0")).mapped_file(), None);
}

#[test]
fn errno_classes() {
    assert_eq!(classify_errno(libc::ENOSPC), ErrorClass::Full);
    assert_eq!(classify_errno(libc::EIO), ErrorClass::Failed);
    assert_eq!(classify_errno(libc::EINTR), ErrorClass::Retry);
}

#[test]
fn probe_errors_name_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let e = probe(&DeviceSpec::parse(dir.path().to_str().unwrap()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("is a directory"), "{e}");
    let missing = dir.path().join("nope.img");
    let e = probe(&DeviceSpec::parse(missing.to_str().unwrap()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("nope.img"), "{e}");
    let p = probe(&DeviceSpec::parse(&format!("{},size=1M", missing.display())).unwrap()).unwrap();
    assert_eq!(p.capacity_bytes, 1 << 20);
}

#[test]
fn transport_errors_keep_their_messages() {
    let lost = TransportError::LostAgain {
        why: "receive: the server closed the connection".into(),
        episodes: 4,
    };
    assert_eq!(
        lost.to_string(),
        "connection lost (receive: the server closed the connection) for the 4th time"
    );
    let refused = TransportError::Reconnect {
        why: "send: Broken pipe (os error 32)".into(),
        error: "connect: Connection refused (os error 111)".into(),
    };
    assert_eq!(
        refused.to_string(),
        "connection lost (send: Broken pipe (os error 32)); connect: Connection refused (os error 111)"
    );
    assert_eq!(
        TransportError::Protocol("reply for unknown handle 7".into()).to_string(),
        "protocol error: reply for unknown handle 7"
    );
    assert_eq!(TransportError::Stopped("EIO".into()).to_string(), "EIO");
}

#[test]
fn device_notes_read_as_before() {
    let note = DeviceNote::NoBlockLimits {
        device: PathBuf::from("/dev/nst0"),
        error: "ILLEGAL REQUEST".into(),
    };
    assert_eq!(
        note.to_string(),
        "device /dev/nst0: READ BLOCK LIMITS not available (ILLEGAL REQUEST); using --tape-block as the block limit"
    );
    let note = DeviceNote::PmemMapped {
        device: PathBuf::from("/dev/pmem0"),
        bytes: 4096,
        durability: "MAP_SYNC, clwb".into(),
    };
    assert_eq!(
        note.to_string(),
        "pmem /dev/pmem0: 4096 bytes mapped (MAP_SYNC, clwb)"
    );
    let note = DeviceNote::MapSyncRefused {
        error: "EOPNOTSUPP".into(),
    };
    assert_eq!(
        note.to_string(),
        "MAP_SYNC refused (EOPNOTSUPP): not a DAX mapping, falling back to MAP_SHARED + msync"
    );
}

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

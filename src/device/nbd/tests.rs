use super::*;

#[test]
fn pipeline_covers_the_bandwidth_delay_product() {
    let mib = 1 << 20;
    let r = |rate: u64, rtt_ms: u64| {
        records_to_fill(rate, Duration::from_millis(rtt_ms), mib + 4096, 32, 256)
    };
    // A LAN: the floor (--qd) rules.
    assert_eq!(r(125_000_000, 0), 32);
    // 10 Gbit/s across a continent (40 ms): 2 x 50 MB in records of
    // 1 MiB + 4 KiB = 95.
    assert_eq!(r(1_250_000_000, 40), 95);
    // A long fat pipe beyond the bound: capped.
    assert_eq!(r(1_250_000_000, 200), 256);
    // A slow WAN (40 Mbit/s, 100 ms): 1 MB in flight is enough; floor.
    assert_eq!(r(5_000_000, 100), 32);
    // Never below the floor, even with a ceiling below it.
    assert_eq!(records_to_fill(1, Duration::ZERO, 1, 8, 4), 8);
}

#[test]
fn targets() {
    // (host, port, export) of a TCP target.
    let tcp = |text: &str| match parse_target(text).unwrap() {
        Target {
            address: Address::Tcp { host, port },
            export,
        } => (host, port, export),
        other => panic!("{text}: not a TCP target: {other:?}"),
    };
    let want = |host: &str, port, export: &str| (host.to_string(), port, export.to_string());
    assert_eq!(
        tcp("nbd://10.0.0.2:10810/disk1"),
        want("10.0.0.2", 10810, "disk1")
    );
    assert_eq!(tcp("nbd://host"), want("host", DEFAULT_PORT, ""));
    assert_eq!(tcp("nbd://[::1]:99/x"), want("::1", 99, "x"));
    let t = parse_target("nbd+unix:///e?socket=/run/s.sock").unwrap();
    assert_eq!(
        t.address,
        Address::Unix {
            socket: "/run/s.sock".into()
        }
    );
    assert_eq!(t.export, "e");
    for bad in [
        "nbd://",
        "nbd://h:0/x",
        "nbd://h:port/x",
        "nbd://h/x?tls=1",
        "nbd+unix:///e",
        "nbd+unix://host/e?socket=/s",
        "http://h/x",
        "nbd://[::1/x",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
    // The typed refusals read as the texts they replaced.
    let text = |t: &str| parse_target(t).unwrap_err().to_string();
    assert_eq!(
        text("nbd://h:0/x"),
        "'nbd://h:0/x': port '0' is not a number 1-65535"
    );
    assert_eq!(
        text("nbd+unix:///e"),
        "'nbd+unix:///e': nbd+unix:// needs ?socket=PATH"
    );
    assert_eq!(text("nbd://[::1/x"), "'nbd://[::1/x': unclosed '[' in host");
    assert_eq!(text("nbd://[::1]x/e"), "'nbd://[::1]x/e': junk after ']'");
    assert_eq!(text("nbd:///e"), "'nbd:///e': no host");
}

#[test]
fn block_bytes_follow_the_servers_preferred_size() {
    let with = |sizes| proto::ExportInfo {
        block_sizes: sizes,
        ..Default::default()
    };
    // No NBD_INFO_BLOCK_SIZE: the protocol's default preferred 4096.
    assert_eq!(block_bytes_of(&with(None)), 4096);
    // qemu-nbd and nbdkit: minimum 1 or 512, preferred 4096.
    assert_eq!(block_bytes_of(&with(Some((1, 4096, 32 << 20)))), 4096);
    assert_eq!(block_bytes_of(&with(Some((512, 512, 32 << 20)))), 512);
    // Preferred sizes pbio's 4096-byte format cannot follow.
    assert_eq!(block_bytes_of(&with(Some((1, 65536, 32 << 20)))), 4096);
    assert_eq!(block_bytes_of(&with(Some((1, 256, 32 << 20)))), 4096);
    assert_eq!(block_bytes_of(&with(Some((1, 3000, 32 << 20)))), 4096);
}

use super::*;
use crate::device::{read_block, write_block};

fn spec(dir: &Path, opts: &str) -> DeviceSpec {
    DeviceSpec::parse(&format!("vtape:{}{opts}", dir.display())).unwrap()
}

fn tape(dir: &Path, opts: &str) -> VirtualTape {
    VirtualTape::open(&spec(dir, opts), Mode::Write).unwrap()
}

fn block(n: usize, fill: u8) -> Vec<u8> {
    vec![fill; n]
}

fn enospc(r: std::io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::ENOSPC))
}

#[test]
fn names_and_geometry() {
    assert_eq!(dir_of(Path::new("vtape:/x/y")), Some(PathBuf::from("/x/y")));
    assert_eq!(dir_of(Path::new("vtape:")), None);
    assert_eq!(dir_of(Path::new("/dev/nst0")), None);
    assert_eq!(default_early_warning_bytes(64 << 20), 4 << 20);
    assert_eq!(default_early_warning_bytes(1 << 30), 32 << 20);
    let g = Geometry {
        size_bytes: 100,
        early_warning_bytes: 10,
    };
    assert_eq!(Geometry::parse(&g.text()), Some(g));
    assert_eq!(Geometry::parse("size=10\new=10\n"), None);
    assert!(DeviceSpec::parse("x.img,ew=1M").is_err());
}

#[test]
fn blocks_filemarks_and_positioning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let t = tape(&d, ",size=1M,ew=64K");
    assert_eq!(t.access(), Access::Sequential);
    for (n, fill) in [(4096, 1u8), (10_000, 2), (1, 3)] {
        assert_eq!(write_block(&t, &block(n, fill)).unwrap(), n);
    }
    t.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
    assert_eq!(write_block(&t, &block(5000, 4)).unwrap(), 5000);
    t.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
    let s = t.tape_status().unwrap();
    assert_eq!((s.file_number, s.block_number, s.at_eod), (2, 0, true));

    // Read back: one block per read, 0 at a filemark.
    t.tape_op(TapeOp::Rewind).unwrap();
    let mut buf = vec![0u8; 16 << 10];
    assert_eq!(read_block(&t, &mut buf).unwrap(), 4096);
    assert!(buf[..4096].iter().all(|&b| b == 1));
    assert_eq!(read_block(&t, &mut buf).unwrap(), 10_000);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 1);
    assert_eq!(buf[0], 3);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 0);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 5000);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 0);
    // End of data: 0 once, then EIO.
    assert_eq!(read_block(&t, &mut buf).unwrap(), 0);
    assert!(read_block(&t, &mut buf).is_err());

    // A block larger than the buffer: ENOMEM, and the head is past it.
    t.tape_op(TapeOp::Rewind).unwrap();
    let e = read_block(&t, &mut buf[..100]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOMEM));
    assert_eq!(read_block(&t, &mut buf).unwrap(), 10_000);

    // Space over the first file; back over the filemark.
    t.tape_op(TapeOp::Rewind).unwrap();
    t.tape_op(TapeOp::ForwardFiles(1)).unwrap();
    assert_eq!(read_block(&t, &mut buf).unwrap(), 5000);
    t.tape_op(TapeOp::BackFiles(1)).unwrap();
    assert_eq!(t.tape_status().unwrap().file_number, 0);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 0);
    t.tape_op(TapeOp::Rewind).unwrap();
    t.tape_op(TapeOp::ForwardBlocks(2)).unwrap();
    assert_eq!(read_block(&t, &mut buf).unwrap(), 1);
    assert!(
        t.tape_op(TapeOp::ForwardBlocks(1)).is_err(),
        "a filemark stops MTFSR"
    );
    assert!(
        t.tape_op(TapeOp::ForwardFiles(5)).is_err(),
        "past the end of data"
    );
    // MTEOM: where the next file would be appended; MTBSF back from there.
    t.tape_op(TapeOp::EndOfData).unwrap();
    let s = t.tape_status().unwrap();
    assert!(s.at_eod && !s.at_bot);
    assert_eq!(s.file_number, 2);
    t.tape_op(TapeOp::BackFiles(2)).unwrap();
    assert_eq!(t.tape_status().unwrap().file_number, 0);
    assert_eq!(
        read_block(&t, &mut buf).unwrap(),
        0,
        "in front of the first filemark"
    );
    assert!(
        t.tape_op(TapeOp::BackFiles(2)).is_err(),
        "no filemark before the first"
    );
    assert!(t.tape_status().unwrap().at_bot);

    // Writing in the middle discards the rest; the index survives a reopen.
    t.tape_op(TapeOp::Rewind).unwrap();
    t.tape_op(TapeOp::ForwardBlocks(1)).unwrap();
    assert_eq!(write_block(&t, &block(300, 9)).unwrap(), 300);
    t.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
    drop(t);
    let t = VirtualTape::open(&spec(&d, ""), Mode::Read).unwrap();
    assert_eq!(t.capacity_bytes(), 1 << 20);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 4096);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 300);
    assert!(buf[..300].iter().all(|&b| b == 9));
    assert_eq!(read_block(&t, &mut buf).unwrap(), 0);
    assert_eq!(read_block(&t, &mut buf).unwrap(), 0);
    assert_eq!(
        write_block(&t, &block(10, 0)).unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
}

/// st's end-of-medium protocol (IO-NOTES.md): the write that enters the
/// early-warning zone succeeds, the next fails with ENOSPC writing
/// nothing, then successes and ENOSPC alternate; a filemark write
/// succeeds in the zone; past the physical end, ENOSPC only.
#[test]
fn early_warning_and_physical_end() {
    let dir = tempfile::tempdir().unwrap();
    let t = tape(&dir.path().join("t"), ",size=100K,ew=40K");
    let b = block(20 << 10, 7);
    assert_eq!(write_block(&t, &b).unwrap(), b.len()); // 0..20K
    assert_eq!(write_block(&t, &b).unwrap(), b.len()); // ..40K
    assert_eq!(write_block(&t, &b).unwrap(), b.len()); // ..60K: ends at the EW point
    assert!(!t.tape_status().unwrap().at_eot);
    assert_eq!(write_block(&t, &b).unwrap(), b.len()); // ..80K: crosses EW, succeeds
    assert!(t.tape_status().unwrap().at_eot);
    assert!(
        enospc(write_block(&t, &b)),
        "the write after the crossing fails"
    );
    assert_eq!(
        t.tape_status().unwrap().block_number,
        4,
        "and writes nothing"
    );
    t.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
    let small = block(8 << 10, 8);
    assert_eq!(write_block(&t, &small).unwrap(), small.len()); // ..88K
    assert!(enospc(write_block(&t, &small)));
    assert_eq!(write_block(&t, &small).unwrap(), small.len()); // ..96K
    assert!(enospc(write_block(&t, &small)));
    // Past the physical end: ENOSPC, again and again, nothing written.
    assert!(enospc(write_block(&t, &small)));
    assert!(enospc(write_block(&t, &small)));
    assert!(enospc(write_block(&t, &small)));
    t.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
    t.tape_op(TapeOp::Rewind).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut sizes = Vec::new();
    while let Ok(n) = read_block(&t, &mut buf) {
        sizes.push(n);
        if sizes.ends_with(&[0, 0]) {
            break;
        }
    }
    assert_eq!(sizes, [20480, 20480, 20480, 20480, 0, 8192, 8192, 0, 0]);
}

#[test]
fn a_read_larger_than_the_block_limit_is_refused_before_moving() {
    // As st does (rw_checks): EINVAL whatever the block, and the block is
    // still there for a read within the limit.
    let dir = tempfile::tempdir().unwrap();
    let t = tape(&dir.path().join("t"), ",size=1M");
    write_block(&t, &block(4096, 5)).unwrap();
    t.tape_op(TapeOp::Rewind).unwrap();
    let mut big = block(BLOCK_BYTES_MAX as usize + 4096, 0);
    let e = read_block(&t, &mut big).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let within = &mut big[..BLOCK_BYTES_MAX as usize];
    assert_eq!(read_block(&t, within).unwrap(), 4096);
    assert_eq!(within[..4096], block(4096, 5)[..]);
}

#[test]
fn block_limit_and_speed() {
    let dir = tempfile::tempdir().unwrap();
    let t = tape(&dir.path().join("t"), ",size=64M,rate=100M");
    let e = write_block(&t, &block(BLOCK_BYTES_MAX as usize + 1, 0)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let started = Instant::now();
    for _ in 0..40 {
        write_block(&t, &block(1 << 20, 1)).unwrap();
    }
    // 40 MiB at 100 MiB/s: 400 ms on tape; the last write completes
    // when it is in the drive's 8 MiB buffer, 80 ms before that.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(310), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

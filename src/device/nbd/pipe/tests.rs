use super::*;
use proptest::prelude::*;

/// A connection with no socket: the tests drive the pipe with `feed`.
struct NoLink {
    structured: bool,
}

impl Link for NoLink {
    fn fd(&self) -> std::os::fd::RawFd {
        -1
    }
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
    fn structured_replies(&self) -> bool {
        self.structured
    }
    fn shutdown(&self) {}
    fn reconnect(&self) -> std::io::Result<()> {
        Err(std::io::Error::other("no link"))
    }
}

fn simple(handle: u64, error: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&handle.to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn chunk(handle: u64, flags: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&handle.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Reads of `lens` bytes at `offset` of an export whose bytes are
/// `byte(offset)`; the replies as a server sends them.
fn byte(offset: u64) -> u8 {
    if (offset / 1000).is_multiple_of(3) {
        0 // zero runs a server may send as holes
    } else {
        (offset.wrapping_mul(31) >> 3) as u8 | 1
    }
}

fn expected(offset: u64, len: u32) -> Vec<u8> {
    (0..len as u64).map(|i| byte(offset + i)).collect()
}

/// Every request is answered; structured replies cut each read into
/// chunks (data, or a hole where the bytes are zero) sent in a
/// shuffled order, interleaved across requests; the byte stream then
/// arrives in arbitrary fragments. Every buffer must end up exactly
/// the export's bytes, every request complete once with its length.
fn run(structured: bool, lens: &[u32], cuts: &[usize], seed: u64) -> Result<(), TestCaseError> {
    let link = NoLink { structured };
    let mut pipe = Pipe::new(&link);
    let offsets: Vec<u64> = lens
        .iter()
        .scan(4096u64, |at, &l| {
            let o = *at;
            *at += l as u64 + 777;
            Some(o)
        })
        .collect();
    let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0xeeu8; l as usize]).collect();
    for (h, buf) in bufs.iter_mut().enumerate() {
        pipe.submit(
            h as u64,
            proto::CMD_READ,
            buf.as_mut_ptr(),
            buf.len() as u32,
            offsets[h],
        );
    }
    // Per request, its reply messages in order (the last one DONE).
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut messages: Vec<Vec<Vec<u8>>> = Vec::new();
    for (h, &len) in lens.iter().enumerate() {
        let (h, off) = (h as u64, offsets[h]);
        let data = expected(off, len);
        if !structured {
            messages.push(vec![simple(h, 0, &data)]);
            continue;
        }
        let mut pieces = Vec::new();
        let mut at = 0u32;
        while at < len {
            let n = ((next() % 5000) as u32 + 1).min(len - at);
            pieces.push((at, n));
            at += n;
        }
        // Shuffle the chunks of the request.
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let mut msgs = Vec::new();
        for &(at, n) in &pieces {
            let slice = &data[at as usize..(at + n) as usize];
            let o = off + at as u64;
            if slice.iter().all(|&b| b == 0) && next() % 2 == 0 {
                let mut p = o.to_be_bytes().to_vec();
                p.extend_from_slice(&n.to_be_bytes());
                msgs.push(chunk(h, 0, proto::REPLY_TYPE_OFFSET_HOLE, &p));
            } else {
                let mut p = o.to_be_bytes().to_vec();
                p.extend_from_slice(slice);
                msgs.push(chunk(h, 0, proto::REPLY_TYPE_OFFSET_DATA, &p));
            }
        }
        // DONE on the last chunk, or a NONE chunk after them.
        match msgs.last_mut() {
            Some(last) if next() % 2 == 0 => last[5] |= proto::REPLY_FLAG_DONE as u8,
            _ => msgs.push(chunk(
                h,
                proto::REPLY_FLAG_DONE,
                proto::REPLY_TYPE_NONE,
                &[],
            )),
        }
        messages.push(msgs);
    }
    // Interleave the requests' messages, each request's in order.
    let mut stream = Vec::new();
    let mut cursors = vec![0usize; messages.len()];
    loop {
        let open: Vec<usize> = (0..messages.len())
            .filter(|&r| cursors[r] < messages[r].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let r = open[(next() % open.len() as u64) as usize];
        stream.extend_from_slice(&messages[r][cursors[r]]);
        cursors[r] += 1;
    }
    // Fragments.
    let mut done = Vec::new();
    let mut rest = &stream[..];
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        pipe.feed(&rest[..n], &mut done)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rest = &rest[n..];
        i += 1;
    }
    done.sort_unstable();
    let want: Vec<(u64, i32)> = lens
        .iter()
        .enumerate()
        .map(|(h, &l)| (h as u64, l as i32))
        .collect();
    prop_assert_eq!(done, want);
    prop_assert_eq!(pipe.outstanding(), 0);
    for (h, buf) in bufs.iter().enumerate() {
        prop_assert!(
            *buf == expected(offsets[h], lens[h]),
            "request {} read wrong bytes",
            h
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn replies_in_any_fragments_fill_exactly_the_buffers(
        structured in any::<bool>(),
        lens in proptest::collection::vec(0u32..20_000, 1..6),
        cuts in proptest::collection::vec(1usize..3000, 0..40),
        seed in any::<u64>(),
    ) {
        run(structured, &lens, &cuts, seed)?;
    }

    /// Whatever a server sends, the pipe answers with a result or an
    /// error, never a panic.
    #[test]
    fn garbage_never_panics(
        structured in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        magic in 0usize..3,
    ) {
        let link = NoLink { structured };
        let mut pipe = Pipe::new(&link);
        let mut buf = vec![0u8; 64];
        pipe.submit(0, proto::CMD_READ, buf.as_mut_ptr(), 64, 0);
        pipe.submit(1, proto::CMD_WRITE, buf.as_mut_ptr(), 64, 0);
        // Often start with a valid magic and handle, so that the
        // fuzzing reaches past the first check.
        let mut stream = match magic {
            0 => proto::SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec(),
            1 => proto::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec(),
            _ => Vec::new(),
        };
        stream.extend_from_slice(&bytes);
        let mut done = Vec::new();
        let _ = pipe.feed(&stream, &mut done);
    }
}

#[test]
fn errors_complete_requests_with_errno() {
    let link = NoLink { structured: true };
    let mut pipe = Pipe::new(&link);
    let mut buf = vec![0u8; 4096];
    pipe.submit(3, proto::CMD_WRITE, buf.as_mut_ptr(), 4096, 0);
    pipe.submit(4, proto::CMD_READ, buf.as_mut_ptr(), 4096, 0);
    let mut done = Vec::new();
    pipe.feed(&simple(3, 28, &[]), &mut done).unwrap();
    let mut e = 5u32.to_be_bytes().to_vec();
    e.extend_from_slice(&3u16.to_be_bytes());
    e.extend_from_slice(b"bad");
    pipe.feed(
        &chunk(4, proto::REPLY_FLAG_DONE, 1 << 15 | 1, &e),
        &mut done,
    )
    .unwrap();
    assert_eq!(done, [(3, -libc::ENOSPC), (4, -libc::EIO)]);
}

#[test]
fn breaches_are_named() {
    let cases: [(Vec<u8>, &str); 5] = [
        (simple(9, 0, &[]), "not awaiting"),
        (vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0], "bad reply magic"),
        (
            chunk(0, proto::REPLY_FLAG_DONE, proto::REPLY_TYPE_OFFSET_DATA, &{
                let mut p = 0u64.to_be_bytes().to_vec();
                p.extend_from_slice(&[1u8; 8192]);
                p
            }),
            "outside the request",
        ),
        (
            chunk(0, proto::REPLY_FLAG_DONE, proto::REPLY_TYPE_NONE, &[]),
            "covered 0 of 4096",
        ),
        (
            chunk(0, 0, 77, &[]),
            "unexpected structured reply chunk type 77",
        ),
    ];
    for (stream, want) in cases {
        let link = NoLink { structured: true };
        let mut pipe = Pipe::new(&link);
        let mut buf = vec![0u8; 4096];
        pipe.submit(0, proto::CMD_READ, buf.as_mut_ptr(), 4096, 0);
        let mut done = Vec::new();
        let err = pipe.feed(&stream, &mut done).unwrap_err().to_string();
        assert!(err.contains(want), "{err} (want {want})");
        assert!(!pipe.alive());
    }
}

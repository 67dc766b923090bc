//! Any bytes an NBD server could send while reads and writes await their
//! replies, in any fragments: the pipe completes requests or names a
//! protocol breach; it never panics, and never writes outside a buffer
//! (libFuzzer's ASan build would catch that).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::device::nbd::pipe::{Link, Pipe};
use pbio::device::nbd::proto;

struct NoLink(bool);

impl Link for NoLink {
    fn fd(&self) -> std::os::fd::RawFd {
        -1
    }
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
    fn structured_replies(&self) -> bool {
        self.0
    }
    fn shutdown(&self) {}
    fn reconnect(&self) -> std::io::Result<()> {
        Err(std::io::Error::other("no link"))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let link = NoLink(control & 1 != 0);
    let mut pipe = Pipe::new(&link);
    // Three requests (handles 0-2) of lengths the control byte picks.
    let lens = [
        4096u32 << (control >> 1 & 3),
        (control as u32) * 17,
        512,
    ];
    let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0u8; l as usize]).collect();
    for (h, buf) in bufs.iter_mut().enumerate() {
        let command = if h == 2 { proto::CMD_WRITE } else { proto::CMD_READ };
        pipe.submit(h as u64, command, buf.as_mut_ptr(), buf.len() as u32, (h as u64) << 20);
    }
    // Fragments of the stream: a fragment size from the control byte.
    let step = 1 + (control >> 3) as usize * 7;
    let mut done = Vec::new();
    for piece in stream.chunks(step) {
        if pipe.feed(piece, &mut done).is_err() {
            break;
        }
    }
    for &(h, result) in &done {
        assert!(h < 3);
        assert!(result < 0 || result as u32 == lens[h as usize]);
    }
});

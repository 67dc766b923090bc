//! The CLI's output: one line at a time to stdout and stderr, and what
//! became of stdout (a reader that went away stops the output, a failed
//! write makes a success incomplete).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// What became of stdout: 0 fine, 1 the reader went away (EPIPE), 2 a
/// write failed otherwise (its error is in `STDOUT_ERROR`).
static STDOUT_STATE: AtomicU8 = AtomicU8::new(STDOUT_OPEN);
const STDOUT_OPEN: u8 = 0;
const STDOUT_GONE: u8 = 1;
const STDOUT_FAILED: u8 = 2;
static STDOUT_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// One line to stdout. A closed pipe or a failed write stops all later
/// output (the work goes on; `main` says why on stderr unless the reader
/// simply went away).
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    stdout_write(args, b"\n");
}

/// Part of a line to stdout (a long JSON object written a piece at a
/// time), as `stdout_line` writes, without its newline.
pub fn stdout_part(args: std::fmt::Arguments<'_>) {
    stdout_write(args, b"");
}

fn stdout_write(args: std::fmt::Arguments<'_>, end: &[u8]) {
    use std::io::Write;
    if STDOUT_STATE.load(Ordering::Relaxed) != STDOUT_OPEN {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(end))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_STATE.store(STDOUT_GONE, Ordering::Relaxed);
        }
        Err(e) => {
            STDOUT_STATE.store(STDOUT_FAILED, Ordering::Relaxed);
            if let Ok(mut slot) = STDOUT_ERROR.lock() {
                slot.get_or_insert(e.to_string());
            }
        }
    }
}

/// Whether stdout still takes output (a long listing may stop early).
pub fn stdout_open() -> bool {
    STDOUT_STATE.load(Ordering::Relaxed) == STDOUT_OPEN
}

/// One line to stderr; a failure to write it is ignored (there is nowhere
/// left to say so).
pub fn stderr_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Whether the output was all written: a write to stdout that failed for
/// another reason than a reader going away (a full disk behind `>`) is
/// said, and makes a success incomplete (`Outcome::with_output`).
pub(super) fn output_complete() -> bool {
    if STDOUT_STATE.load(Ordering::Relaxed) != STDOUT_FAILED {
        return true;
    }
    let why = STDOUT_ERROR
        .lock()
        .ok()
        .and_then(|e| e.clone())
        .unwrap_or_default();
    errln!("pbio: writing to stdout failed: {why}; the output is incomplete");
    false
}

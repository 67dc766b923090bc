//! Qualification of a remote NBD export (`nbd://HOST:PORT/EXPORT`,
//! `nbd+unix:///EXPORT?socket=PATH`), as pbio uses it: the data path
//! through the NBD pipe on the device's io_uring ring (`measure::bench`,
//! as a backup), the label and catalog by synchronous requests
//! (`Device::read_at`/`write_at`), durability by NBD_CMD_FLUSH
//! (`Device::sync`). The descriptor is a socket: no O_DIRECT probing and
//! no ioctls here.
//!
//! The run, in order:
//! 1. `identity`: the URL, the export's size, the transmission flags of
//!    the handshake (read-only, flush, FUA), structured replies, the
//!    server's block sizes (minimum, preferred, maximum), the largest
//!    request pbio sends and the RTT measured at connect;
//! 2. the throughput matrix: sequential writes, then reads, from offset 0
//!    through the NBD pipe, over a small set of block sizes and queue
//!    depths, bounded per cell; HDR latency percentiles;
//! 3. `flush_latency_p99`: NBD_CMD_FLUSH after a 4 KiB write, timed (SKIP
//!    when the server does not advertise flush: there is nothing to send);
//! 4. `pattern_verify`: the offset-stamped pattern (as for disks) over the
//!    configured fraction, written by synchronous NBD writes, flushed, read
//!    back and compared; a FAIL names the first bad offset;
//! 5. `durability`: the export opened again (a new connection and
//!    handshake) and the pattern read back through it.

use std::time::Instant;

use serde_json::{json, Value};

use super::identity::{flag, Identity};
use super::io::AlignedBuf;
use super::pattern::{self, PatternSpec};
use super::{
    histogram, Better, CellPlan, Check, Event, Latency, Options, Report, Verdict, LATENCY_NS_MAX,
};
use crate::device::nbd::{proto, Address};
use crate::device::Device;
use crate::device::ExportIdentity;
use crate::format::BLOCK_BYTES;
use crate::measure::bench::Rw;
use crate::units::human_bytes;

/// Bytes of one pattern request (a write or a read).
const IO_BYTES: usize = 1 << 20;
/// The flush series writes to this many 4 KiB blocks at the start of the
/// export, in turn (overwritten later by the pattern).
const FLUSH_SLOTS: u64 = 256;
/// Bytes written before each timed flush.
const FLUSH_WRITE_BYTES: usize = 4096;

/// The matrix: block sizes and queue depths, each cell bounded in
/// operations and bytes (`--quick`: 256 operations and 16 MiB a cell; full:
/// 1024 operations and 64 MiB), and no block above what the server takes
/// in one request.
pub fn matrix_plan(quick: bool, capacity_bytes: u64, request_bytes_max: u64) -> Vec<CellPlan> {
    let (sizes, depths, ios_max, cell_max): (&[usize], &[usize], u64, u64) = if quick {
        (&[4 << 10, 1 << 20], &[1, 16], 256, 16 << 20)
    } else {
        (&[4 << 10, 64 << 10, 1 << 20], &[1, 8, 32], 1024, 64 << 20)
    };
    let usable = capacity_bytes / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
    let mut out = Vec::with_capacity(2 * sizes.len() * depths.len());
    for rw in [Rw::Write, Rw::Read] {
        for &bs in sizes {
            let bs64 = bs as u64;
            if bs64 > usable || bs64 > request_bytes_max {
                continue;
            }
            for &qd in depths {
                out.push(CellPlan {
                    rw,
                    block_bytes: bs,
                    queue_depth: qd,
                    size_bytes: (bs64 * ios_max).min(cell_max).min(usable) / bs64 * bs64,
                });
            }
        }
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn identity_check(id: &Identity, n: &ExportIdentity) -> Check {
    let info = n.info;
    let flags = info.transmission_flags;
    let at = match &n.address {
        Address::Tcp { host, port } => format!("{host}:{port}"),
        Address::Unix { socket } => format!("unix socket {}", socket.display()),
    };
    let mut parts = vec![
        format!(
            "NBD export '{}' at {at}, {}",
            n.export,
            human_bytes(id.capacity_bytes)
        ),
        format!(
            "flags: read-only {}, flush {}, FUA {}",
            yes_no(flag(flags, proto::TFLAG_READ_ONLY)),
            yes_no(flag(flags, proto::TFLAG_SEND_FLUSH)),
            yes_no(flag(flags, proto::TFLAG_SEND_FUA))
        ),
        format!("structured replies {}", yes_no(n.structured_replies)),
    ];
    let mut problems = Vec::new();
    match info.block_sizes {
        Some((min, pref, max)) => {
            parts.push(format!(
                "block sizes: minimum {min} B, preferred {pref} B, maximum {}",
                human_bytes(u64::from(max))
            ));
            if min as usize > BLOCK_BYTES {
                problems.push(format!(
                    "the server's minimum block {min} B is above pbio's {BLOCK_BYTES}"
                ));
            }
            if (max as usize) < BLOCK_BYTES {
                problems.push(format!(
                    "the server's maximum payload {max} B is below pbio's block of {BLOCK_BYTES}"
                ));
            }
        }
        None => parts.push("the server sent no block sizes (NBD_INFO_BLOCK_SIZE)".into()),
    }
    parts.push(format!(
        "requests of at most {}",
        human_bytes(u64::from(n.request_bytes_max))
    ));
    parts.push(format!("RTT at connect {} us", n.rtt.as_micros().max(1)));
    if flag(flags, proto::TFLAG_READ_ONLY) {
        problems.push("the export is read-only: pbio cannot write to it".into());
    }
    super::identity_verdict(id.capacity_bytes, problems, &parts)
}

/// Run the NBD checks; `report` holds the identity and gets the rest.
pub fn run(device: &dyn Device, options: &Options, report: &mut Report, on: &mut dyn FnMut(Event)) {
    let push = Report::add;
    let n = device
        .export_identity()
        .expect("the NBD family is only chosen for NBD devices");
    let id_check = identity_check(&report.identity, &n);
    let usable = id_check.verdict == Verdict::Pass;
    push(report, id_check, on);
    if !usable {
        let later = [
            "write_throughput",
            "read_throughput",
            "write_latency_p99",
            "read_latency_p99",
            "flush_latency_p99",
            "pattern_verify",
            "durability",
        ];
        report.not_run(&later, on);
        return;
    }
    let capacity = report.identity.capacity_bytes;
    let plan = super::plan(options, capacity);
    let flushes = flag(n.info.transmission_flags, proto::TFLAG_SEND_FLUSH);

    on(Event::Step("throughput matrix through the NBD pipe"));
    let mut flushed_writes = false;
    for cell_plan in matrix_plan(options.quick, capacity, u64::from(n.request_bytes_max)) {
        if cell_plan.rw == Rw::Read && !flushed_writes {
            // The writes are made durable before reading; a failure here
            // is judged by the flush check below.
            flushed_writes = true;
            let _ = device.sync();
        }
        let cell = super::run_cell(device, cell_plan);
        on(Event::Cell(&cell));
        report.matrix.push(cell);
    }
    let note = format!(
        " (over NBD, RTT at connect {} us)",
        n.rtt.as_micros().max(1)
    );
    for check in super::matrix_checks(&report.matrix, &note) {
        push(report, check, on);
    }

    on(Event::Step("flush latency (NBD_CMD_FLUSH)"));
    push(report, flush_check(device, flushes, plan.sync_rounds), on);

    on(Event::Step("pattern write, flush, read-back and verify"));
    let spec = PatternSpec {
        nonce: super::new_nonce(),
        extents: pattern::plan_extents(capacity, plan.verify_bytes, BLOCK_BYTES as u64),
    };
    let check = pattern_check("pattern_verify", device, &spec, true, flushes);
    let written = check.verdict == Verdict::Pass;
    push(report, check, on);
    report.pattern = Some(spec.clone());

    on(Event::Step(
        "durability: a new connection reads the pattern",
    ));
    let check = if written {
        durability_check(device, &spec, flushes)
    } else {
        Check::new("durability", Verdict::Fail, json!(0), "bytes")
            .detail("not run: the pattern did not read back on the first connection")
    };
    push(report, check, on);
}

fn record_ns(h: &mut hdrhistogram::Histogram<u64>, started: Instant) {
    let ns = started.elapsed().as_nanos() as u64;
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// `rounds` times: a 4 KiB write (not timed), then NBD_CMD_FLUSH (timed).
fn flush_check(device: &dyn Device, flushes: bool, rounds: u32) -> Check {
    let name = "flush_latency_p99";
    if !flushes {
        return Check::skip(
            name,
            "us",
            "the server does not advertise flush (NBD_FLAG_SEND_FLUSH): pbio sends no NBD_CMD_FLUSH, so \
             nothing makes its writes durable beyond the server's own policy (writes may be durable on \
             reply, or only in the server's cache); nothing to measure",
        );
    }
    let fua = device
        .export_identity()
        .is_some_and(|n| flag(n.info.transmission_flags, proto::TFLAG_SEND_FUA));
    let slots = (device.capacity_bytes() / FLUSH_WRITE_BYTES as u64).clamp(1, FLUSH_SLOTS);
    let mut buf = vec![0u8; FLUSH_WRITE_BYTES];
    let mut h = histogram();
    for i in 0..u64::from(rounds) {
        let offset = (i % slots) * FLUSH_WRITE_BYTES as u64;
        buf.fill(i as u8);
        if let Err(e) = device.write_at(&buf, offset) {
            return Check::new(name, Verdict::Fail, Value::Null, "us")
                .better(Better::Lower)
                .detail(format!(
                    "write of {FLUSH_WRITE_BYTES} B at offset {offset} before a flush: {e} (after {i} flushes)"
                ));
        }
        let t = Instant::now();
        if let Err(e) = device.sync() {
            return Check::new(name, Verdict::Fail, Value::Null, "us")
                .better(Better::Lower)
                .detail(format!(
                    "NBD_CMD_FLUSH after a write at offset {offset}: {e} (after {i} good)"
                ));
        }
        record_ns(&mut h, t);
    }
    let lat = Latency::of(&h);
    Check::new(name, Verdict::Pass, json!(lat.p99_us()), "us")
        .better(Better::Lower)
        .detail(format!(
            "the server advertises flush{}; {} NBD_CMD_FLUSH after a {FLUSH_WRITE_BYTES} B write each: {}",
            if fua { " and FUA" } else { " (not FUA)" },
            lat.count,
            lat.text()
        ))
        .data(json!({"write_bytes": FLUSH_WRITE_BYTES, "fua": fua, "lat_us": lat.to_json()}))
}

/// Read the pattern's extents through `device` and compare.
fn read_back(name: &'static str, device: &dyn Device, spec: &PatternSpec, how: &str) -> Check {
    let mut buf = AlignedBuf::new(IO_BYTES, 4096);
    let out = pattern::verify_with(spec, &mut buf, |at, chunk| {
        let n = device.read_at(chunk, at)?;
        if n != chunk.len() {
            return Err(std::io::Error::other(format!(
                "short read: {n} of {} bytes",
                chunk.len()
            )));
        }
        Ok(())
    });
    super::outcome_check(name, spec, out, how)
}

/// Write (when `write`) and flush the pattern by synchronous NBD requests,
/// then read it back and compare; FAIL with the first bad offset.
fn pattern_check(
    name: &'static str,
    device: &dyn Device,
    spec: &PatternSpec,
    write: bool,
    flushes: bool,
) -> Check {
    let fail = |detail: String| Check::new(name, Verdict::Fail, json!(0), "bytes").detail(detail);
    if spec.extents.is_empty() {
        return fail("no extents to check".into());
    }
    let end = spec.extents.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
    if end > device.capacity_bytes() {
        return fail(format!(
            "the pattern reaches offset {end}, beyond this export's {} bytes: not the export it was written on",
            device.capacity_bytes()
        ));
    }
    if write {
        // One request per piece of the pattern (1 MiB, as IO_BYTES).
        if let Err((at, e)) =
            pattern::write_with(spec, |chunk, at| device.write_at(chunk, at).map(drop))
        {
            return fail(format!("pattern write at offset {at}: {e}"));
        }
        if let Err(e) = device.sync() {
            return fail(format!("NBD_CMD_FLUSH after the pattern write: {e}"));
        }
    }
    let how = match (write, flushes) {
        (true, true) => "written, flushed (NBD_CMD_FLUSH) and read back intact",
        (true, false) => {
            "written and read back intact (no flush: the server does not advertise NBD_FLAG_SEND_FLUSH)"
        }
        (false, _) => "read back intact",
    };
    read_back(name, device, spec, how)
}

/// The pattern, flushed, read through a second connection to the export.
fn durability_check(device: &dyn Device, spec: &PatternSpec, flushes: bool) -> Check {
    let name = "durability";
    let failed = |detail: String| Check::new(name, Verdict::Fail, json!(0), "bytes").detail(detail);
    let again = match super::reopen(device) {
        Ok(d) => d,
        Err(e) => return failed(format!("connecting to the export again: {e}")),
    };
    if again.capacity_bytes() < device.capacity_bytes() {
        return failed(format!(
            "the export seen through a new connection has {} bytes, the first {}",
            again.capacity_bytes(),
            device.capacity_bytes()
        ));
    }
    let c = read_back(name, again.as_ref(), spec, "read back intact");
    let after = if flushes {
        "after NBD_CMD_FLUSH"
    } else {
        "without a flush (the server does not advertise NBD_FLAG_SEND_FLUSH)"
    };
    if c.verdict != Verdict::Pass {
        let mut c = c;
        c.detail = format!("through a new connection {after}: {}", c.detail);
        return c;
    }
    let mut c = c;
    c.detail = format!(
        "{} written {after}, then the export opened again (a new connection and handshake): intact; \
         this shows the server kept what it acknowledged, not that it reached its medium \
         (`--recheck` after restarting the server or a power cut tells that)",
        human_bytes(spec.bytes())
    );
    c
}

/// Read the pattern an earlier run left (writes nothing).
pub fn recheck(device: &dyn Device, spec: &PatternSpec) -> Check {
    pattern_check("pattern_recheck", device, spec, false, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_is_small_and_bounded() {
        let m = matrix_plan(true, 64 << 20, 32 << 20);
        assert_eq!(m.len(), 8);
        assert!(m[..4].iter().all(|c| c.rw == Rw::Write));
        assert!(m.iter().all(|c| c.size_bytes <= 16 << 20
            && c.size_bytes.is_multiple_of(c.block_bytes as u64)
            && c.size_bytes > 0));
        assert_eq!(m[0].size_bytes, 1 << 20, "256 x 4K");
        let m = matrix_plan(false, 1 << 40, 32 << 20);
        assert_eq!(m.len(), 18);
        let total: u64 = m.iter().map(|c| c.size_bytes).sum();
        assert!(total <= 1 << 30, "{total}");
        // A server taking at most 64K per request: no 1M cells.
        let m = matrix_plan(false, 1 << 30, 64 << 10);
        assert!(m.iter().all(|c| c.block_bytes <= 64 << 10));
        assert_eq!(m.len(), 12);
        // A small export bounds every cell.
        let m = matrix_plan(false, (5 << 20) + 100, 32 << 20);
        assert!(m.iter().all(|c| c.size_bytes <= 5 << 20));
    }

    #[test]
    fn no_flush_advertised_is_a_skip_with_the_reason() {
        // Nothing is sent when the server does not flush: the device is
        // not touched (a file stands in for it).
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::measure::test_file_device(dir.path(), "4M");
        let c = flush_check(dev.as_ref(), false, 4);
        assert_eq!(c.verdict, Verdict::Skip);
        assert_eq!(c.value, Value::Null);
        assert!(
            c.detail.contains("does not advertise flush"),
            "{}",
            c.detail
        );
    }
}

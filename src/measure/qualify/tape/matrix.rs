//! The tape throughput matrix: cells written from BOT, one tape file
//! each, one block per write, then read back in the same order.

use std::time::Instant;

use super::layout::{op, read_expect, read_expect_with, write_expect};
use crate::device::{Device, TapeOp};
use crate::measure::bench::Rw;
use crate::measure::qualify::io::AlignedBuf;
use crate::measure::qualify::pattern;
use crate::measure::qualify::{histogram, Cell, CellPlan, CellResult, Latency, LATENCY_NS_MAX};

pub(super) fn record_ns(h: &mut hdrhistogram::Histogram<u64>, started: Instant) {
    let ns = started.elapsed().as_nanos() as u64;
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// The matrix: write cells from BOT, one tape file each, then read them
/// back in the same order.
pub(super) fn run_matrix(device: &dyn Device, plans: &[CellPlan], cap: u32) -> Vec<Cell> {
    let mut buf = AlignedBuf::new(cap as usize, 4096);
    // Pattern bytes (not checked on read: that is pattern_verify's job).
    pattern::fill(buf.as_mut_slice(), 0, crate::measure::qualify::new_nonce());
    let mut out = Vec::with_capacity(plans.len());
    let mut start_error = device
        .tape_op(TapeOp::Rewind)
        .err()
        .map(|e| format!("MTREW before the matrix: {e}"));
    let mut wrote_all = true;
    for (i, plan) in plans.iter().enumerate() {
        if plan.rw == Rw::Read && i > 0 && plans[i - 1].rw == Rw::Write {
            if !wrote_all {
                start_error = Some("a write cell failed: nothing to read back".into());
            } else if let Err(e) = device.tape_op(TapeOp::Rewind) {
                start_error = Some(format!("MTREW before reading: {e}"));
            }
        }
        let outcome = match &start_error {
            Some(e) => Err(e.clone()),
            None => match plan.rw {
                Rw::Write => write_cell(device, plan, buf.as_slice()),
                Rw::Read => read_cell(device, plan, buf.as_mut_slice()),
            },
        };
        if plan.rw == Rw::Write && outcome.is_err() {
            wrote_all = false;
        }
        out.push(Cell {
            plan: *plan,
            outcome,
        });
    }
    out
}

pub(super) fn cell_blocks(plan: &CellPlan) -> u64 {
    plan.size_bytes / plan.block_bytes as u64
}

pub(super) fn write_cell(
    device: &dyn Device,
    plan: &CellPlan,
    data: &[u8],
) -> Result<CellResult, String> {
    let block = &data[..plan.block_bytes];
    let mut h = histogram();
    let started = Instant::now();
    for i in 0..cell_blocks(plan) {
        let t = Instant::now();
        write_expect(device, block, false, || format!("block {i}"))?;
        record_ns(&mut h, t);
    }
    // The filemark ends the file and writes out the drive's buffer: the
    // data is on tape when it returns, so it counts in the time.
    op(device, TapeOp::WriteFilemarks(1), "MTWEOF after the cell")?;
    Ok(CellResult {
        bytes: plan.size_bytes,
        ios: cell_blocks(plan),
        seconds: started.elapsed().as_secs_f64(),
        latency: Latency::of(&h),
        short_ios: 0,
        retries: 0,
        ring_setup: "sync, one block in flight",
    })
}

pub(super) fn read_cell(
    device: &dyn Device,
    plan: &CellPlan,
    buf: &mut [u8],
) -> Result<CellResult, String> {
    let mut h = histogram();
    let started = Instant::now();
    for i in 0..cell_blocks(plan) {
        let t = Instant::now();
        read_expect_with(device, buf, plan.block_bytes, || format!("block {i}"))?;
        record_ns(&mut h, t);
    }
    let seconds = started.elapsed().as_secs_f64();
    read_expect(device, buf, 0, "after the cell's blocks")?;
    Ok(CellResult {
        bytes: plan.size_bytes,
        ios: cell_blocks(plan),
        seconds,
        latency: Latency::of(&h),
        short_ios: 0,
        retries: 0,
        ring_setup: "sync, one block in flight",
    })
}

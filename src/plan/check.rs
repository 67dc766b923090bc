//! Test oracle: checks a plan against its inputs independently of how the
//! planner built it. Used by the worked examples and the property tests.

use super::{
    media_bytes, Balance, DeviceLoad, DeviceSlot, FileItem, Options, Order, Plan, Segment,
    Strategy, BLOCK_BYTES, HEADER_BYTES,
};

/// Properties every successful plan has, whatever the inputs.
pub fn check_plan(files: &[FileItem], devices: &[DeviceSlot], opts: &Options, plan: &Plan) {
    let n = devices.len();
    let chunk = opts.chunk_bytes;
    // Stored bytes: a sparse file's holes are not (FileItem::stored, by its
    // own sum over the data ranges here).
    let total: u128 = files
        .iter()
        .map(|f| u128::from(stored(f, 0, f.size_bytes)))
        .sum();
    let threshold = total / n as u128;
    assert_eq!(u128::from(plan.threshold_bytes), threshold, "T = total / N");
    assert_eq!(plan.devices.len(), n);

    // Every byte of every file exactly once; no segment crosses the file's
    // end; offsets on chunk boundaries; lengths chunk multiples except at
    // the file's end.
    let mut by_file: Vec<Segment> = plan.segments.clone();
    by_file.sort_unstable_by_key(|s| (s.file, s.offset));
    let mut next_offset: Vec<u64> = vec![0; files.len()];
    for seg in &by_file {
        let size = files[seg.file as usize].size_bytes;
        assert!(seg.length > 0, "empty segment {seg:?}");
        assert!((seg.device as usize) < n, "bad device in {seg:?}");
        assert_eq!(
            seg.offset, next_offset[seg.file as usize],
            "gap or overlap at {seg:?}"
        );
        assert!(
            seg.offset + seg.length <= size,
            "segment crosses the file's end: {seg:?}"
        );
        assert_eq!(
            seg.offset % chunk,
            0,
            "offset not on a chunk boundary: {seg:?}"
        );
        assert!(
            seg.length % chunk == 0 || seg.offset + seg.length == size,
            "short segment not at the file's end: {seg:?}"
        );
        next_offset[seg.file as usize] += seg.length;
    }
    for (id, file) in files.iter().enumerate() {
        assert_eq!(
            next_offset[id], file.size_bytes,
            "file {id} not fully covered"
        );
    }

    // Write order: the whole list, hence each device's list, is sorted by
    // length in the chosen order (ties: file, offset).
    for pair in plan.segments.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let length_ok = match opts.order {
            Order::Desc => a.length >= b.length,
            Order::Asc => a.length <= b.length,
        };
        assert!(
            length_ok,
            "segments out of {:?} order: {a:?} then {b:?}",
            opts.order
        );
        if a.length == b.length {
            assert!(
                (a.file, a.offset) < (b.file, b.offset),
                "tie order: {a:?} then {b:?}"
            );
        }
    }

    // Device loads match the segments; capacity is never exceeded.
    let expected = recompute_loads(files, devices, chunk, &plan.segments);
    for (i, (got, want)) in plan.devices.iter().zip(&expected).enumerate() {
        assert_eq!(
            got.assigned_bytes, want.assigned_bytes,
            "device {i} assigned"
        );
        assert_eq!(got.media_bytes, want.media_bytes, "device {i} media");
        assert_eq!(got.segments, want.segments, "device {i} segments");
        assert_eq!(got.files, want.files, "device {i} distinct files");
        assert_eq!(got.finish_secs.is_some(), want.finish_secs.is_some());
        if let (Some(g), Some(w)) = (got.finish_secs, want.finish_secs) {
            assert!((g - w).abs() <= w.abs() * 1e-12, "device {i} finish");
        }
        assert!(
            got.media_bytes <= devices[i].capacity_bytes,
            "device {i} over capacity: {} > {}",
            got.media_bytes,
            devices[i].capacity_bytes
        );
    }

    if opts.strategy == Strategy::Split {
        // No segment exceeds T, except that when T < chunk a segment may be
        // up to one chunk (it cannot be cut on a chunk boundary). Files of
        // at most T are never cut.
        // In stored bytes.
        let limit = u128::from(chunk).max(threshold);
        for seg in &plan.segments {
            let file = &files[seg.file as usize];
            assert!(
                u128::from(stored(file, seg.offset, seg.offset + seg.length)) <= limit,
                "segment over max(T, chunk): {seg:?}"
            );
            let size = file.size_bytes;
            if u128::from(stored(file, 0, size)) <= threshold {
                assert_eq!(seg.length, size, "file <= T was cut: {seg:?}");
            }
        }
    }
}

/// Data bytes of `file` in `[start, end)`, from its data ranges (not
/// `FileItem::stored`, which the planner uses).
pub fn stored(file: &FileItem, start: u64, end: u64) -> u64 {
    match file.data {
        None => end - start,
        Some(data) => data
            .iter()
            .map(|&(o, l)| (o + l).min(end).saturating_sub(o.max(start)))
            .sum(),
    }
}

/// Media bytes of the records the engine writes for `[start, end)` of
/// `file`: a dense range is `media_bytes`; a sparse one has one record per
/// piece of a data range within a chunk cell (by walking offsets, not
/// `FileItem::media`).
pub fn media(file: &FileItem, start: u64, end: u64, chunk: u64) -> u64 {
    let Some(data) = file.data else {
        return media_bytes(end - start, chunk);
    };
    let mut total = 0;
    for &(o, l) in data {
        let (from, to) = (o.max(start), (o + l).min(end));
        if from < to {
            // One record per chunk cell the range touches; `from` is on a
            // block, so only the range's end needs rounding.
            let cells = (to - 1) / chunk - from / chunk + 1;
            total += cells * HEADER_BYTES + to.div_ceil(BLOCK_BYTES) * BLOCK_BYTES - from;
        }
    }
    total
}

/// Loads computed from the segments alone.
pub fn recompute_loads(
    files: &[FileItem],
    devices: &[DeviceSlot],
    chunk: u64,
    segments: &[Segment],
) -> Vec<DeviceLoad> {
    let mut loads = vec![DeviceLoad::default(); devices.len()];
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(segments.len());
    for seg in segments {
        let load = &mut loads[seg.device as usize];
        let file = &files[seg.file as usize];
        let end = seg.offset + seg.length;
        load.assigned_bytes += stored(file, seg.offset, end);
        load.media_bytes += media(file, seg.offset, end, chunk);
        load.segments += 1;
        pairs.push((seg.device, seg.file));
    }
    pairs.sort_unstable();
    pairs.dedup();
    for (device, _) in pairs {
        loads[device as usize].files += 1;
    }
    for (load, slot) in loads.iter_mut().zip(devices) {
        load.finish_secs = slot
            .rate_bytes_per_sec
            .filter(|&r| r > 0)
            .map(|r| load.media_bytes as f64 / r as f64);
    }
    loads
}

/// Each device's share, computed independently of the planner: T each
/// (bytes), or `floor(total * R_(i+1) / R) - floor(total * R_i / R)` (time).
/// Rates in tests are small enough for plain u128 arithmetic.
pub fn shares(total: u128, devices: &[DeviceSlot], balance: Balance) -> Vec<u128> {
    let n = devices.len() as u128;
    match balance {
        Balance::Bytes => vec![total / n; devices.len()],
        Balance::Time => {
            let rates: Vec<u128> = devices
                .iter()
                .map(|d| u128::from(d.rate_bytes_per_sec.expect("rate")))
                .collect();
            let rate_total: u128 = rates.iter().sum();
            let mut out = Vec::with_capacity(rates.len());
            let mut cumulative = 0;
            let mut given = 0;
            for r in rates {
                cumulative += r;
                let upto = total * cumulative / rate_total;
                out.push(upto - given);
                given = upto;
            }
            out
        }
    }
}

//! What a resumed run still has to write, and over which devices: every
//! file range with data in the set that no kept record holds, given to the
//! devices least filled, in pieces of at most an even share. Pure: no I/O.

use crate::engine::dispatch::WorkItem;
use crate::engine::ring::Placed;

use super::durable::Kept;

/// The ranges of each file (`sizes[file]`: Some(size) for a file whose
/// data this set stores, None otherwise) that no kept record holds, in
/// file order. `kept` is every kept record of every device.
pub fn missing(sizes: &[Option<u64>], kept: &[&Kept]) -> Vec<WorkItem> {
    let mut held: Vec<(u32, u64, u64)> = kept
        .iter()
        .map(|k| &k.record)
        .map(|r| {
            (
                r.file_id,
                r.file_offset,
                r.file_offset + r.payload_bytes as u64,
            )
        })
        .collect();
    held.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (file, size) in sizes.iter().enumerate() {
        let Some(size) = *size else { continue };
        let file = file as u32;
        let mut from = 0u64;
        while at < held.len() && held[at].0 < file {
            at += 1;
        }
        while at < held.len() && held[at].0 == file {
            let (_, start, end) = held[at];
            if start > from {
                out.push(WorkItem {
                    file,
                    offset: from,
                    length: start.min(size) - from,
                });
            }
            from = from.max(end);
            at += 1;
        }
        if from < size {
            out.push(WorkItem {
                file,
                offset: from,
                length: size - from,
            });
        }
    }
    out.retain(|w| w.length > 0);
    out
}

/// Give `items` to the devices: each piece to the device least filled so
/// far (`filled`: payload bytes it already holds; ties to the lower
/// index), the largest pieces first, after cutting every item longer than
/// an even share of what is left into pieces on `chunk_bytes` boundaries
/// (so records fall where an uninterrupted run's would). `usable`: which
/// devices may take work. Returns (device, item) in file order per device.
pub fn assign(
    items: &[WorkItem],
    filled: &[u64],
    usable: &[bool],
    chunk_bytes: u64,
) -> Vec<(u32, WorkItem)> {
    assert_eq!(filled.len(), usable.len());
    assert!(chunk_bytes > 0);
    let takers = usable.iter().filter(|u| **u).count() as u64;
    if takers == 0 || items.is_empty() {
        return Vec::new();
    }
    let total: u64 = items.iter().map(|w| w.length).sum();
    let share = total.div_ceil(takers).div_ceil(chunk_bytes).max(1) * chunk_bytes;
    let mut pieces: Vec<WorkItem> = Vec::new();
    for w in items {
        let mut offset = w.offset;
        let end = w.offset + w.length;
        while offset < end {
            // Cut on a chunk boundary of the file.
            let cut = ((offset + share) / chunk_bytes * chunk_bytes).max(offset + 1);
            let piece_end = if end - offset > share { cut } else { end };
            pieces.push(WorkItem {
                file: w.file,
                offset,
                length: piece_end - offset,
            });
            offset = piece_end;
        }
    }
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(pieces[i].length), i));
    let mut fill = filled.to_vec();
    let mut out: Vec<(u32, WorkItem)> = Vec::with_capacity(pieces.len());
    for i in order {
        let device = (0..fill.len())
            .filter(|&d| usable[d])
            .min_by_key(|&d| (fill[d], d))
            .expect("at least one device takes work");
        fill[device] += pieces[i].length;
        out.push((device as u32, pieces[i]));
    }
    out.sort_by_key(|(d, w)| (*d, w.file, w.offset));
    out
}

/// Give `items` (in file order) to volumes in volume order, each up to
/// its room (`rooms[v]`: payload bytes; None: a volume that takes no
/// work), cutting an item where a volume's room ends on a chunk boundary
/// of its file (a volume with less room than the next cut is passed).
/// Returns (volume, item) in volume then file order, and the bytes no
/// volume had room for.
pub fn fill(
    items: &[WorkItem],
    rooms: &[Option<u64>],
    chunk_bytes: u64,
) -> (Vec<(u32, WorkItem)>, u64) {
    assert!(chunk_bytes > 0);
    let mut out = Vec::new();
    let mut left: Vec<u64> = rooms.iter().map(|r| r.unwrap_or(0)).collect();
    let mut volume = 0usize;
    let mut unplaced = 0u64;
    for w in items {
        let (mut offset, end) = (w.offset, w.end());
        while offset < end {
            while volume < left.len() && left[volume] == 0 {
                volume += 1;
            }
            if volume == left.len() {
                unplaced += end - offset;
                break;
            }
            let piece_end = if end - offset <= left[volume] {
                end
            } else {
                (offset + left[volume]) / chunk_bytes * chunk_bytes
            };
            if piece_end <= offset {
                // Less room than up to the next chunk boundary: the next.
                left[volume] = 0;
                continue;
            }
            out.push((
                volume as u32,
                WorkItem {
                    file: w.file,
                    offset,
                    length: piece_end - offset,
                },
            ));
            left[volume] -= piece_end - offset;
            offset = piece_end;
        }
    }
    (out, unplaced)
}

/// The catalog segments of one device's kept records: records of one file
/// one after the other on media with contiguous ranges make one segment.
/// `object` says where a record is in catalog terms (its media offset, or
/// on a tape its object number: the same as `Kept::position`).
pub fn placed(records: &[Kept]) -> Vec<Placed> {
    let mut out: Vec<Placed> = Vec::new();
    for r in records.iter().map(|k| &k.record) {
        match out.last_mut() {
            Some(p) if p.file == r.file_id && p.offset + p.length == r.file_offset => {
                p.length += r.payload_bytes as u64;
                p.records += 1;
            }
            _ => out.push(Placed {
                file: r.file_id,
                offset: r.file_offset,
                length: r.payload_bytes as u64,
                position: r.position,
                records: 1,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kept(file_id: u32, file_offset: u64, payload_bytes: u32, position: u64) -> Kept {
        Kept {
            record: crate::engine::ring::RecordDone {
                file_id,
                file_offset,
                payload_bytes,
                payload_crc: 0,
                payload_hash: [0; 32],
                position,
                sequence: 0,
                stored_bytes: payload_bytes,
            },
            media_bytes: 4096 + payload_bytes as u64,
        }
    }

    #[test]
    fn missing_is_what_no_record_holds() {
        let a = kept(0, 0, 100, 4096);
        let b = kept(0, 200, 50, 8192);
        let c = kept(2, 0, 10, 4096);
        let got = missing(&[Some(300), None, Some(10), Some(5)], &[&b, &a, &c]);
        let w = |file, offset, length| WorkItem {
            file,
            offset,
            length,
        };
        assert_eq!(got, vec![w(0, 100, 100), w(0, 250, 50), w(3, 0, 5)]);
    }

    #[test]
    fn placed_joins_contiguous_records_of_a_file() {
        let r = [
            kept(1, 0, 10, 1),
            kept(1, 10, 10, 2),
            kept(2, 0, 5, 3),
            kept(1, 40, 5, 4),
        ];
        let p = placed(&r);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].file, p[0].offset, p[0].length, p[0].records),
            (1, 0, 20, 2)
        );
        assert_eq!((p[1].position, p[2].position), (3, 4));
    }

    #[test]
    fn fill_goes_in_volume_order_cutting_on_chunk_boundaries() {
        let w = |file, offset, length| WorkItem {
            file,
            offset,
            length,
        };
        let items = [w(0, 100, 900), w(1, 0, 3000)];
        let (given, unplaced) = fill(&items, &[None, Some(1500), Some(0), Some(1000)], 1000);
        assert_eq!(given, vec![(1, w(0, 100, 900)), (3, w(1, 0, 1000))]);
        // 600 bytes of room on volume 1 after file 0: less than up to the
        // first chunk boundary of file 1 (1000), passed; volume 3 takes
        // 1000, the rest has no room.
        assert_eq!(unplaced, 2000);
        let (given, unplaced) = fill(&items, &[Some(u64::MAX)], 1000);
        assert_eq!(given, vec![(0, items[0]), (0, items[1])]);
        assert_eq!(unplaced, 0);
    }

    proptest! {
        /// Every byte of every file is either held by a kept record or in
        /// exactly one assigned piece, pieces go only to usable devices, and
        /// every cut inside a range lies on a chunk boundary.
        #[test]
        fn every_byte_once(
            sizes in proptest::collection::vec(proptest::option::of(0u64..5_000_000), 1..12),
            holes in proptest::collection::vec((0usize..12, 0u64..40, 1u32..4), 0..20),
            filled in proptest::collection::vec(0u64..10_000_000, 1..5),
            usable_mask in 1u32..32,
        ) {
            let chunk = 1u64 << 17;
            // Kept records: whole chunks of files with data, no two alike.
            let mut records = Vec::new();
            for (file, at, n) in holes {
                let Some(Some(size)) = sizes.get(file) else { continue };
                for k in 0..n as u64 {
                    let off = (at + k) * chunk;
                    if off + chunk <= *size {
                        records.push(kept(file as u32, off, chunk as u32, 0));
                    }
                }
            }
            records.sort_by_key(|k| (k.record.file_id, k.record.file_offset));
            records.dedup_by_key(|k| (k.record.file_id, k.record.file_offset));
            let refs: Vec<&Kept> = records.iter().collect();
            let items = missing(&sizes, &refs);
            let mut usable: Vec<bool> = (0..filled.len()).map(|d| usable_mask & (1 << d) != 0).collect();
            if !usable.iter().any(|u| *u) { usable[0] = true; }
            let given = assign(&items, &filled, &usable, chunk);
            for (d, _) in &given { prop_assert!(usable[*d as usize]); }
            for (file, size) in sizes.iter().enumerate() {
                let mut spans: Vec<(u64, u64)> = records.iter().map(|k| &k.record).filter(|r| r.file_id == file as u32)
                    .map(|r| (r.file_offset, r.file_offset + r.payload_bytes as u64)).collect();
                spans.extend(given.iter().filter(|(_, w)| w.file == file as u32)
                    .map(|(_, w)| (w.offset, w.offset + w.length)));
                spans.sort_unstable();
                let mut at = 0;
                for (s, e) in spans {
                    prop_assert_eq!(s, at, "file {} gap or overlap", file);
                    prop_assert!(e > s);
                    at = e;
                }
                prop_assert_eq!(at, size.unwrap_or(0));
            }
            for (_, w) in &given {
                let inside_item = items.iter().any(|i| i.file == w.file && i.offset == w.offset);
                prop_assert!(inside_item || w.offset % chunk == 0, "cut off a chunk boundary: {:?}", w);
            }
        }
    }
}

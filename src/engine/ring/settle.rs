//! The ring's per-record and per-item lists kept bounded (issue 23: ten
//! million files in bounded memory, PERF.md "#23 memory").
//!
//! A ring lists every record it generates (`Gen`, in media order) and
//! every work item it takes (`Taken`); `Ring::finish` works out from them
//! what is durable and what goes back. Most of a run's records are far
//! behind the durable prefix's end and can no longer be given back,
//! whatever ends the run: `settle` turns those into what the outcome
//! holds of them (`RecordDone`, and a `Placed` per item whose records are
//! all settled) as the prefix advances, and drops them from the lists,
//! which hold only the window between the settled records and the newest.
//!
//! What can still be given back from the prefix: on a medium that ran out
//! of space, `verified_prefix` reads back the records of the last
//! `queue_depth` record sizes and `finish` gives back the tail that the
//! catalog reserve needs. A record is settled only when it lies further
//! than both (and one record) before the durable end.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut};

use super::{Gen, Placed, RecordDone, Ring, HEADER_BYTES};

/// Records completed between two attempts to settle.
const SETTLE_EVERY: u64 = 1024;

/// A list indexed from 0 whose first `base` elements are gone (settled).
pub(super) struct Window<T> {
    base: usize,
    items: VecDeque<T>,
}

impl<T> Default for Window<T> {
    fn default() -> Self {
        Window {
            base: 0,
            items: VecDeque::new(),
        }
    }
}

impl<T> Window<T> {
    /// The index the next element pushed gets (settled ones included).
    pub(super) fn len(&self) -> usize {
        self.base + self.items.len()
    }

    /// The first index still held.
    pub(super) fn base(&self) -> usize {
        self.base
    }

    pub(super) fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// Element `k`, if still held.
    pub(super) fn get(&self, k: usize) -> Option<&T> {
        k.checked_sub(self.base).and_then(|i| self.items.get(i))
    }

    /// The elements held, from `base`.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut()
    }

    /// Elements `from..to` (all held).
    pub(super) fn range(&self, from: usize, to: usize) -> impl Iterator<Item = &T> {
        self.items.range(from - self.base..to - self.base)
    }

    /// The first index from `base` whose element is not `pred` (the
    /// elements held are partitioned by it).
    pub(super) fn partition_point(&self, pred: impl FnMut(&T) -> bool) -> usize {
        self.base + self.items.partition_point(pred)
    }

    /// Drop the elements before `to`.
    fn settle_to(&mut self, to: usize) {
        self.items.drain(..to - self.base);
        self.base = to;
        // A run's window stays small; its buffer need not stay at its peak.
        if self.items.capacity() > 4 * self.items.len().max(1024) {
            self.items.shrink_to(2 * self.items.len().max(1024));
        }
    }
}

impl<T> Index<usize> for Window<T> {
    type Output = T;
    fn index(&self, k: usize) -> &T {
        &self.items[k - self.base]
    }
}

impl<T> IndexMut<usize> for Window<T> {
    fn index_mut(&mut self, k: usize) -> &mut T {
        &mut self.items[k - self.base]
    }
}

/// What the ring has settled: the outcome's records and placed ranges of
/// the records and items no longer listed. `records[k]` is record `k`.
#[derive(Default)]
pub(super) struct Settled {
    pub(super) records: Vec<RecordDone>,
    pub(super) placed: Vec<Placed>,
}

impl<'a> Ring<'a> {
    /// After a record completed: settle what lies far enough behind the
    /// durable end, every `SETTLE_EVERY` records.
    pub(super) fn maybe_settle(&mut self) {
        if self.stats.records.is_multiple_of(SETTLE_EVERY) {
            self.settle();
        }
    }

    /// Media bytes before the durable end within which `finish` may still
    /// give records back: the read-back window of a full medium, the
    /// catalog reserve, and one record.
    fn settle_margin(&self) -> u64 {
        let record = HEADER_BYTES as u64 + self.config.chunk_bytes as u64;
        // Parity records may lie between two data records.
        let records = (self.config.queue_depth + 1 + super::stripe::PARITY_SLOTS) as u64;
        records * record + self.config.reserve_bytes
    }

    /// Settle the records (and the items all of whose records are) that
    /// lie more than `settle_margin` before the durable end.
    pub(super) fn settle(&mut self) {
        let margin = self.settle_margin();
        let cut = self.durable_end();
        let from = self.gens.base();
        let to = from
            + self
                .gens
                .iter()
                .take_while(|g| g.done && g.position.saturating_add(margin) <= cut)
                .count();
        if to == from {
            return;
        }
        debug_assert_eq!(self.settled.records.len(), from);
        for g in self.gens.range(from, to) {
            let record = self.record_done(g);
            self.settled.records.push(record);
        }
        // Where the first record not settled lies (a range of holes
        // taken before it lies before the durable end too).
        let next_position = self.gens.get(to).map_or(self.position, |g| g.position);
        let taken_from = self.taken.base();
        let settled_items = self
            .taken
            .iter()
            .take_while(|t| {
                t.complete
                    && t.first_gen + t.gens as usize <= to
                    && (t.gens > 0 || t.position <= next_position)
            })
            .count();
        for k in taken_from..taken_from + settled_items {
            let t = &self.taken[k];
            let position = if self.sequential {
                t.first_gen as u64 + 1 + self.first_sequence
            } else if t.gens > 0 {
                self.gen_position(t.first_gen)
            } else {
                t.position
            };
            let placed = Placed {
                file: t.item.file,
                offset: t.item.offset,
                length: t.item.length,
                position,
                records: t.gens,
            };
            self.settled.placed.push(placed);
        }
        self.gens.settle_to(to);
        self.taken.settle_to(taken_from + settled_items);
    }

    /// What the outcome says of record `g` (its item still listed).
    pub(super) fn record_done(&self, g: &Gen) -> RecordDone {
        RecordDone {
            file_id: self.taken[g.taken as usize].item.file,
            file_offset: g.file_offset,
            payload_bytes: g.payload_bytes,
            payload_crc: g.payload_crc,
            payload_hash: g.payload_hash,
            position: g.position,
            sequence: g.sequence,
            stored_bytes: g.stored_len(),
        }
    }

    /// Media offset of record `k`, settled or not.
    pub(super) fn gen_position(&self, k: usize) -> u64 {
        match self.settled.records.get(k) {
            Some(r) => r.position,
            None => self.gens[k].position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_indexes_past_what_it_dropped() {
        let mut w: Window<u32> = Window::default();
        for i in 0..5000 {
            w.push(i);
        }
        assert_eq!(w.len(), 5000);
        w.settle_to(4000);
        assert_eq!((w.base(), w.len()), (4000, 5000));
        assert_eq!(w[4000], 4000);
        assert_eq!(w.get(3999), None);
        assert_eq!(w.get(4999), Some(&4999));
        assert_eq!(w.get(5000), None);
        assert_eq!(w.partition_point(|&x| x < 4500), 4500);
        assert_eq!(
            w.range(4998, 5000).copied().collect::<Vec<_>>(),
            [4998, 4999]
        );
        w[4001] = 7;
        assert_eq!(w.iter().nth(1), Some(&7));
        w.push(5000);
        assert_eq!(w[5000], 5000);
        assert!(w.items.capacity() < 5000, "the dropped part is given back");
    }
}

//! The ring's per-record and per-item lists kept compact (issue 23: ten
//! million files in bounded memory, PERF.md "#23 memory").
//!
//! A ring lists every record it generates (`Gen`, 96 bytes, in media
//! order) and every work item it takes (`Taken`, 64 bytes); `Ring::finish`
//! works out from them what is durable and what goes back. As the durable
//! prefix advances, `settle` turns the records in it into what the
//! outcome holds of them (`RecordDone`), and each item all of whose
//! records are settled into its `Placed` and first record
//! (`SettledItem`), and drops them from the lists, which then hold only
//! the records in flight and the items still open. `finish` reads a
//! record or an item the same way settled or not (`Ring::record_at`,
//! `Ring::item_at`): a medium that ran out of space may still give back
//! records of the prefix (read back and found torn, or needed for the
//! catalog's room), settled ones too.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut};

use super::{Gen, Placed, RecordDone, Ring, WorkItem};

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

/// A settled item: its range as placed (`position`: its first record's,
/// or for a range of holes the ring's position when it was taken) and
/// its first record.
pub(super) struct SettledItem {
    pub(super) placed: Placed,
    pub(super) first_gen: usize,
}

/// What the ring has settled: `records[k]` is record `k`, `items[k]` item
/// `k`.
#[derive(Default)]
pub(super) struct Settled {
    pub(super) records: Chunked<RecordDone>,
    pub(super) items: Chunked<SettledItem>,
}

/// Elements in a chunk of `Chunked`.
const CHUNK: usize = 4096;

/// A list that grows by chunks of `CHUNK` elements: none is moved as it
/// grows, and at most one chunk is unused (a `Vec` that doubles holds up
/// to twice its elements, three times while it moves them).
pub(super) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, item: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk").push(item);
        self.len += 1;
    }

    pub(super) fn get(&self, k: usize) -> Option<&T> {
        self.chunks.get(k / CHUNK)?.get(k % CHUNK)
    }

    /// The first index whose element is not `pred` (the elements are
    /// partitioned by it).
    pub(super) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let whole = self
            .chunks
            .partition_point(|c| c.last().is_some_and(&mut pred));
        match self.chunks.get(whole) {
            Some(c) => whole * CHUNK + c.partition_point(pred),
            None => self.len,
        }
    }

    /// The first `len` elements in one `Vec` with room for `capacity`,
    /// each chunk freed once moved.
    pub(super) fn into_vec(self, len: usize, capacity: usize) -> Vec<T> {
        let len = len.min(self.len);
        let mut all = Vec::with_capacity(capacity.max(len));
        for chunk in self.chunks {
            let room = len - all.len();
            all.extend(chunk.into_iter().take(room));
        }
        all
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;
    fn index(&self, k: usize) -> &T {
        &self.chunks[k / CHUNK][k % CHUNK]
    }
}

/// What `finish` needs of an item, settled or not.
pub(super) struct ItemView {
    pub(super) item: WorkItem,
    pub(super) first_gen: usize,
    pub(super) gens: u32,
    pub(super) complete: bool,
    pub(super) generated_until: u64,
    /// Its first record's media offset, or where it was taken (no records).
    pub(super) position: u64,
}

/// What `finish` needs of a record, settled or not.
pub(super) struct RecordView {
    pub(super) position: u64,
    pub(super) file_offset: u64,
    pub(super) payload_bytes: u32,
    pub(super) stored_bytes: u32,
    pub(super) payload_crc: u32,
}

impl<'a> Ring<'a> {
    /// After a record completed: settle the durable prefix, every
    /// `SETTLE_EVERY` records.
    pub(super) fn maybe_settle(&mut self) {
        if self.stats.records.is_multiple_of(SETTLE_EVERY) {
            self.settle();
        }
    }

    /// Settle the records of the durable prefix, and the items all of
    /// whose records are settled.
    pub(super) fn settle(&mut self) {
        let cut = self.durable_end();
        let from = self.gens.base();
        let to = from
            + self
                .gens
                .iter()
                .take_while(|g| g.done && g.position < cut)
                .count();
        debug_assert_eq!(self.settled.records.len(), from);
        for g in self.gens.range(from, to) {
            let record = self.record_done(g);
            self.settled.records.push(record);
        }
        // Where the first record not settled lies (a range of holes
        // taken before it is settled with the records before it).
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
            let position = if t.gens > 0 {
                self.settled.records[t.first_gen].position
            } else {
                t.position
            };
            let item = SettledItem {
                placed: Placed {
                    file: t.item.file,
                    offset: t.item.offset,
                    length: t.item.length,
                    position,
                    records: t.gens,
                },
                first_gen: t.first_gen,
            };
            self.settled.items.push(item);
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

    /// Record `k` (`k < gens.len()`), settled or not.
    pub(super) fn record_at(&self, k: usize) -> RecordView {
        match self.settled.records.get(k) {
            Some(r) => RecordView {
                position: r.position,
                file_offset: r.file_offset,
                payload_bytes: r.payload_bytes,
                stored_bytes: r.stored_bytes,
                payload_crc: r.payload_crc,
            },
            None => {
                let g = &self.gens[k];
                RecordView {
                    position: g.position,
                    file_offset: g.file_offset,
                    payload_bytes: g.payload_bytes,
                    stored_bytes: g.stored_len(),
                    payload_crc: g.payload_crc,
                }
            }
        }
    }

    /// Media offset of record `k`, or where the next record would go.
    pub(super) fn position_of(&self, k: usize) -> u64 {
        if k < self.gens.len() {
            self.record_at(k).position
        } else {
            self.position
        }
    }

    /// The first record whose media offset is not `below` (records lie
    /// in media order), settled or not.
    pub(super) fn first_record_not(&self, below: impl Fn(u64) -> bool) -> usize {
        let settled = self.settled.records.partition_point(|r| below(r.position));
        if settled < self.settled.records.len() {
            settled
        } else {
            self.gens.partition_point(|g| below(g.position))
        }
    }

    /// Item `k` (`k < taken.len()`), settled or not.
    pub(super) fn item_at(&self, k: usize) -> ItemView {
        match self.settled.items.get(k) {
            Some(s) => ItemView {
                item: WorkItem {
                    file: s.placed.file,
                    offset: s.placed.offset,
                    length: s.placed.length,
                },
                first_gen: s.first_gen,
                gens: s.placed.records,
                complete: true,
                generated_until: s.placed.offset + s.placed.length,
                position: s.placed.position,
            },
            None => {
                let t = &self.taken[k];
                ItemView {
                    item: t.item,
                    first_gen: t.first_gen,
                    gens: t.gens,
                    complete: t.complete,
                    generated_until: t.generated_until,
                    position: if t.gens > 0 {
                        self.position_of(t.first_gen)
                    } else {
                        t.position
                    },
                }
            }
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

    #[test]
    fn chunked_lists_index_search_and_cut() {
        let mut c: Chunked<u64> = Chunked::default();
        assert_eq!(c.partition_point(|&x| x < 5), 0);
        let n = 3 * CHUNK + 17;
        for i in 0..n as u64 {
            c.push(i * 2);
        }
        assert_eq!(c.len(), n);
        assert_eq!(c[CHUNK], CHUNK as u64 * 2);
        assert_eq!(c.get(n - 1), Some(&((n as u64 - 1) * 2)));
        assert_eq!(c.get(n), None);
        for at in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, n - 1, n] {
            assert_eq!(c.partition_point(|&x| x < at as u64 * 2), at, "{at}");
        }
        assert_eq!(c.partition_point(|_| true), n);
        let v = c.into_vec(CHUNK + 3, 0);
        assert_eq!(v.len(), CHUNK + 3);
        assert_eq!(v.capacity(), CHUNK + 3);
        assert_eq!(v[CHUNK + 2], (CHUNK as u64 + 2) * 2);
    }
}

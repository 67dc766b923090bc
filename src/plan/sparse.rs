//! What a file stores, range by range: the data bytes and media bytes of a
//! byte range of a file, dense or sparse, and where to cut it so that a
//! piece stores at most so many bytes or fits so many media bytes.
//!
//! A sparse file stores only its data ranges (`FileItem::data`): the engine
//! writes one record per piece of a data range within a chunk cell (the
//! file's bytes `[k * chunk, (k + 1) * chunk)`), and a hole has no record.
//! A dense file is one data range, so every function here reduces to the
//! plain arithmetic on lengths (`media_bytes`, chunk rounding), in O(1).
//! For a sparse file each call scans the data ranges once: O(ranges).
//!
//! Why a chunk cell never takes more media than a full record
//! (`HEADER_BYTES + chunk`): the pieces of a cell are block aligned, and
//! between two of them lies a hole of at least one block, which pays for
//! the second piece's header; the first header is the record's.

use super::{media_bytes_wide, FileItem, BLOCK_BYTES, HEADER_BYTES};

impl<'a> FileItem<'a> {
    /// A file whose every byte is data.
    pub const fn dense(size_bytes: u64) -> FileItem<'static> {
        FileItem {
            size_bytes,
            data: None,
        }
    }

    /// A file that stores only `data` (see `FileItem::data`).
    pub const fn sparse(size_bytes: u64, data: &'a [(u64, u64)]) -> FileItem<'a> {
        FileItem {
            size_bytes,
            data: Some(data),
        }
    }

    /// Bytes the whole file stores: its size, less its holes.
    pub fn stored_bytes(&self) -> u64 {
        self.stored(0, self.size_bytes)
    }

    /// Data bytes in `[start, end)`.
    pub fn stored(&self, start: u64, end: u64) -> u64 {
        debug_assert!(start <= end && end <= self.size_bytes);
        match self.data {
            None => end - start,
            Some(data) => data
                .iter()
                .map(|&(offset, length)| {
                    (offset + length).min(end).saturating_sub(offset.max(start))
                })
                .sum(),
        }
    }

    /// Media bytes of the records that store `[start, end)` (`start` on a
    /// chunk boundary): `media_bytes` for a dense range; for a sparse one,
    /// one header per piece of a data range within a chunk cell, payload
    /// rounded up to a block. O(1) per data range.
    pub fn media(&self, start: u64, end: u64, chunk_bytes: u64) -> u128 {
        debug_assert!(start.is_multiple_of(chunk_bytes) && start <= end);
        let Some(data) = self.data else {
            return media_bytes_wide(end - start, chunk_bytes);
        };
        data.iter()
            .map(|&(offset, length)| {
                let (from, to) = (offset.max(start), (offset + length).min(end));
                range_records(from, to, chunk_bytes).media()
            })
            .sum()
    }

    /// The end of the largest piece from `start` (a chunk boundary) that
    /// stores at most `budget` bytes: the file's end if the rest fits,
    /// else the last chunk boundary before the first data byte over the
    /// budget. At least `start + chunk` when `budget >= chunk` and the rest
    /// does not fit (a chunk of the file stores at most a chunk).
    pub fn end_by_stored(&self, start: u64, budget: u64, chunk_bytes: u64) -> u64 {
        debug_assert!(start.is_multiple_of(chunk_bytes) && start <= self.size_bytes);
        let size = self.size_bytes;
        let Some(data) = self.data else {
            return if size - start <= budget {
                size
            } else {
                start + floor_to(budget, chunk_bytes)
            };
        };
        let mut left = budget;
        for &(offset, length) in data {
            let (from, to) = (offset.max(start), (offset + length).min(size));
            if from >= to {
                continue;
            }
            if to - from > left {
                // The first byte over the budget.
                return floor_to(from + left, chunk_bytes).max(start);
            }
            left -= to - from;
        }
        size
    }

    /// The end of the largest piece from `start` (a chunk boundary) whose
    /// records fit in `budget` media bytes: the file's end, or a chunk
    /// boundary (possibly `start`: nothing fits). O(1) per data range.
    pub fn end_by_media(&self, start: u64, budget: u128, chunk_bytes: u64) -> u64 {
        debug_assert!(start.is_multiple_of(chunk_bytes) && start <= self.size_bytes);
        let size = self.size_bytes;
        let full_record = u128::from(HEADER_BYTES + chunk_bytes);
        let Some(data) = self.data else {
            if media_bytes_wide(size - start, chunk_bytes) <= budget {
                return size;
            }
            let records = budget / full_record;
            // Fewer records than the rest has, so the product is below size.
            return start + records as u64 * chunk_bytes;
        };
        // Cells are taken whole: a cut falls on a chunk boundary.
        let mut left = budget;
        for &(offset, length) in data {
            let (from, to) = (offset.max(start), (offset + length).min(size));
            let records = range_records(from, to, chunk_bytes);
            let media = records.media();
            if media <= left {
                left -= media;
                continue;
            }
            // The first record (in the cell of `from`) does not fit: cut
            // before that cell. Else whole cells after it, each at most a
            // full record; the last may be partial, and fits if all fit.
            let first = records.first_media();
            if first > left {
                return floor_to(from, chunk_bytes);
            }
            let whole_cells = ((left - first) / full_record) as u64;
            let cell_after_first = floor_to(from, chunk_bytes) + chunk_bytes;
            return cell_after_first + whole_cells.min(records.count - 2) * chunk_bytes;
        }
        size
    }

    /// The end of the smallest piece worth placing from `start` (a chunk
    /// boundary): one chunk (or the rest, if shorter) for a dense file; for
    /// a sparse one, through the chunk cell holding the next data byte
    /// (the rest, if it is all hole). It stores at most one chunk, and its
    /// media is at most one full record.
    pub fn end_of_least_piece(&self, start: u64, chunk_bytes: u64) -> u64 {
        debug_assert!(start.is_multiple_of(chunk_bytes) && start < self.size_bytes);
        let size = self.size_bytes;
        let Some(data) = self.data else {
            return size.min(start.saturating_add(chunk_bytes));
        };
        for &(offset, length) in data {
            let (from, to) = (offset.max(start), (offset + length).min(size));
            if from < to {
                return size.min(floor_to(from, chunk_bytes).saturating_add(chunk_bytes));
            }
        }
        size
    }
}

/// The records of one data range `[from, to)` cut at chunk boundaries
/// (`from` on a block boundary): how many, and the payload of the first.
struct RangeRecords {
    count: u64,
    first_bytes: u64,
    payload_bytes: u64,
}

impl RangeRecords {
    fn media(&self) -> u128 {
        u128::from(self.count) * u128::from(HEADER_BYTES)
            + u128::from(self.payload_bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES)
    }

    fn first_media(&self) -> u128 {
        piece_media(self.first_bytes)
    }
}

fn range_records(from: u64, to: u64, chunk_bytes: u64) -> RangeRecords {
    if from >= to {
        return RangeRecords {
            count: 0,
            first_bytes: 0,
            payload_bytes: 0,
        };
    }
    debug_assert!(
        from.is_multiple_of(BLOCK_BYTES),
        "data ranges start on a block"
    );
    let first_cell = from / chunk_bytes;
    let last_cell = (to - 1) / chunk_bytes;
    RangeRecords {
        count: last_cell - first_cell + 1,
        first_bytes: to.min((first_cell + 1) * chunk_bytes) - from,
        // Every record but the last is whole blocks: round the sum once.
        payload_bytes: to - from,
    }
}

/// One record of `length` payload bytes on media.
fn piece_media(length: u64) -> u128 {
    u128::from(HEADER_BYTES) + u128::from(length.div_ceil(BLOCK_BYTES) * BLOCK_BYTES)
}

/// Largest multiple of `align` (a power of two) not above `bytes`.
fn floor_to(bytes: u64, align: u64) -> u64 {
    bytes & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::super::{media_bytes, CHUNK_BYTES_DEFAULT};
    use super::*;

    const MIB: u64 = 1 << 20;
    const CHUNK: u64 = CHUNK_BYTES_DEFAULT;

    #[test]
    fn dense_is_plain_arithmetic() {
        let f = FileItem::dense(10 * MIB + 5);
        assert_eq!(f.stored_bytes(), 10 * MIB + 5);
        assert_eq!(f.stored(MIB, 3 * MIB), 2 * MIB);
        assert_eq!(
            f.media(0, f.size_bytes, CHUNK),
            u128::from(media_bytes(10 * MIB + 5, CHUNK))
        );
        assert_eq!(f.end_by_stored(0, 3 * MIB + 7, CHUNK), 3 * MIB);
        assert_eq!(f.end_by_stored(2 * MIB, 9 * MIB, CHUNK), f.size_bytes);
        let record = u128::from(HEADER_BYTES + CHUNK);
        assert_eq!(f.end_by_media(MIB, 2 * record + 1, CHUNK), 3 * MIB);
        assert_eq!(f.end_by_media(0, 100 * record, CHUNK), f.size_bytes);
        assert_eq!(f.end_of_least_piece(4 * MIB, CHUNK), 5 * MIB);
        assert_eq!(f.end_of_least_piece(10 * MIB, CHUNK), 10 * MIB + 5);
    }

    #[test]
    fn sparse_counts_data_only() {
        // 1 GiB: 1 MiB of data at 0, 64K at 100M + 4K, the last 8K.
        let size = 1 << 30;
        let data = [
            (0, MIB),
            ((100 * MIB) + 4096, 64 << 10),
            (size - 8192, 8192),
        ];
        let f = FileItem::sparse(size, &data);
        assert_eq!(f.stored_bytes(), MIB + (64 << 10) + 8192);
        assert_eq!(f.stored(0, 100 * MIB), MIB);
        assert_eq!(f.stored(MIB, size - 8192), 64 << 10);
        // One full record, one piece, one piece.
        let records = 3 * u128::from(HEADER_BYTES);
        assert_eq!(
            f.media(0, size, CHUNK),
            records + u128::from(MIB + (64 << 10) + 8192)
        );
        assert_eq!(f.media(MIB, 100 * MIB, CHUNK), 0);
        // The budget runs out inside the second range: cut at its chunk.
        assert_eq!(f.end_by_stored(0, MIB + 10, CHUNK), 100 * MIB);
        assert_eq!(f.end_by_stored(0, MIB + (64 << 10), CHUNK), size - MIB);
        assert_eq!(f.end_by_stored(0, u64::MAX, CHUNK), size);
        // Media: the first record alone fits, not the second.
        let first = u128::from(HEADER_BYTES + MIB);
        assert_eq!(f.end_by_media(0, first, CHUNK), 100 * MIB);
        assert_eq!(f.end_by_media(0, first - 1, CHUNK), 0);
        assert_eq!(f.end_of_least_piece(MIB, CHUNK), 101 * MIB);
        assert_eq!(f.end_of_least_piece(101 * MIB, CHUNK), size);
        // All hole.
        let hole = FileItem::sparse(size, &[]);
        assert_eq!(hole.stored_bytes(), 0);
        assert_eq!(hole.media(0, size, CHUNK), 0);
        assert_eq!(hole.end_of_least_piece(0, CHUNK), size);
        assert_eq!(hole.end_by_stored(0, 0, CHUNK), size);
    }

    #[test]
    fn a_fragmented_cell_takes_at_most_one_record() {
        // 4K data, 4K hole, ... over one 64K chunk: 8 pieces.
        let chunk = 64 << 10;
        let data: Vec<(u64, u64)> = (0..8).map(|i| (i * 8192, 4096)).collect();
        let f = FileItem::sparse(chunk, &data);
        let media = f.media(0, chunk, chunk);
        assert_eq!(media, 8 * 8192);
        assert!(media <= u128::from(HEADER_BYTES + chunk));
    }
}

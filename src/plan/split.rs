//! `Strategy::Split` (claims 10, 30; order: claims 11, 12; placement:
//! claims 16, 37).
//!
//! 1. Every file larger than T is cut into pieces of `piece_bytes`, the last
//!    piece taking the rest. `piece_bytes` is T rounded down to a multiple
//!    of the chunk, but at least one chunk, so cuts fall on chunk
//!    boundaries. Hence every segment is at most `max(T, chunk_bytes)`:
//!    at most T when T >= chunk, and at most one chunk when T < chunk
//!    (a file of size in (T, chunk] is then one segment larger than T; it
//!    cannot be cut on a chunk boundary). Files of at most T stay whole.
//!    Sizes here are stored bytes: a sparse file is cut where its pieces
//!    store at most `piece_bytes` each, however long their holes.
//! 2. Files and pieces are sorted by length (`Order`), ties by file id then
//!    offset: the write order.
//! 3. Each item in turn goes to the least filled device among those with
//!    room for its media bytes (ties: lowest index). Least filled means
//!    fewest assigned payload bytes (`Balance::Bytes`), or earliest
//!    predicted finish `(assigned + item) / rate` (`Balance::Time`).
//!    An item no device has room for is left unplaced and counted.
//!
//! With room everywhere, the device that ends fullest received its last
//! item while it was least filled, so in bytes mode
//! `max(assigned) - min(assigned) <= largest item`.

use super::state::{Context, DeviceState};
use super::{shortfall_bytes, Balance, FileItem, Segment, DEVICE_NONE};

/// Length of the pieces files larger than T are cut into.
pub(super) fn piece_bytes(ctx: &Context) -> u64 {
    ctx.chunk_floor(ctx.threshold_bytes).max(ctx.chunk_bytes)
}

/// Place every segment (cut by `cut_large_files`, in write order).
/// Returns None if all fit, else the largest shortfall of an item that
/// did not (see `shortfall_bytes`).
pub(super) fn assign(
    ctx: &Context,
    files: &[FileItem],
    states: &mut [DeviceState],
    segments: &mut [Segment],
) -> Option<u128> {
    let mut shortfall: Option<u128> = None;
    for seg in segments.iter_mut() {
        let file = &files[seg.file as usize];
        let end = seg.offset + seg.length;
        let stored = file.stored(seg.offset, end);
        let media = file.media(seg.offset, end, ctx.chunk_bytes);
        match least_filled(ctx.balance, states, stored, media) {
            Some(device) => {
                states[device].take(stored, media);
                seg.device = device as u32;
            }
            None => {
                let short = shortfall_bytes(states, media);
                shortfall = Some(shortfall.unwrap_or(0).max(short));
            }
        }
    }
    shortfall
}

/// Replace each whole-file segment storing more than T by its pieces,
/// each storing at most `piece_bytes` (a dense file: pieces of exactly
/// that length, the last taking the rest).
pub(super) fn cut_large_files(ctx: &Context, files: &[FileItem], segments: &mut Vec<Segment>) {
    let threshold = ctx.threshold_bytes;
    let piece = piece_bytes(ctx);
    let chunk = ctx.chunk_bytes;
    // Files storing more than T number fewer than N. A piece ends on the
    // chunk boundary before its first byte over `piece`, and the next piece
    // holds that byte, so two pieces in a row store more than `piece`:
    // fewer than 2 * total / piece + N <= 5N pieces, O(N).
    let whole_count = segments.len();
    for i in 0..whole_count {
        let seg = segments[i];
        let file = &files[seg.file as usize];
        debug_assert!(seg.offset == 0 && seg.length == file.size_bytes);
        if file.stored_bytes() <= threshold {
            continue;
        }
        let mut offset = 0;
        while offset < seg.length {
            let end = file.end_by_stored(offset, piece, chunk);
            assert!(
                end > offset,
                "a piece of at least one chunk stores at most a chunk"
            );
            let cut = Segment {
                file: seg.file,
                offset,
                length: end - offset,
                device: DEVICE_NONE,
            };
            if offset == 0 {
                segments[i] = cut;
            } else {
                segments.push(cut);
            }
            offset = end;
        }
    }
}

/// The least filled device with room for `media` bytes, for an item
/// storing `length` bytes; ties to the lowest index. None if no device has
/// room.
fn least_filled(
    balance: Balance,
    states: &[DeviceState],
    length: u64,
    media: u128,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, state) in states.iter().enumerate() {
        if !state.fits(media) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => match balance {
                Balance::Bytes => state.assigned_bytes < states[b].assigned_bytes,
                Balance::Time => finishes_earlier(state, &states[b], length),
            },
        };
        if better {
            best = Some(i);
        }
    }
    best
}

/// `(a.assigned + length) / a.rate < (b.assigned + length) / b.rate`, exact.
/// Both devices have room for the item, so `assigned + length` is at most
/// the capacity and fits in u64; the products fit in u128.
fn finishes_earlier(a: &DeviceState, b: &DeviceState, length: u64) -> bool {
    let a_bytes = u128::from(a.assigned_bytes + length);
    let b_bytes = u128::from(b.assigned_bytes + length);
    a_bytes * u128::from(b.weight) < b_bytes * u128::from(a.weight)
}

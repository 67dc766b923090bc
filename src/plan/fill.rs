//! `Strategy::Fill` (claims 19, 38; order: claims 20, 21; placement:
//! claim 24).
//!
//! Each device has a share (T in bytes mode, rate-proportional in time
//! mode) and a room: share minus assigned bytes. Files are taken one at a
//! time in the sorted order (`Order`; ties by file id), and each file is
//! poured, piece by piece, into the device with the largest room among the
//! devices with capacity for the next piece (ties: lowest index). In bytes
//! mode the largest room is the least filled device. For a file (or the
//! rest of one) of `rest` bytes and the chosen device's room:
//!
//! - `rest <= room`: the rest goes there whole. A file no larger than the
//!   room of the least filled device, in particular a small file early in
//!   the list, is never split.
//! - `room >= chunk`: a piece of `room` rounded down to a chunk multiple
//!   goes there (the device is now less than one chunk below its share),
//!   and the rest is poured on: a large file is split according to the
//!   space remaining on each device.
//! - `room < chunk` (then every room is below one chunk: the tail): one
//!   chunk, or the rest if smaller, goes there.
//!
//! Bytes here are stored bytes (see the crate docs of `plan`): for a
//! sparse file, "a piece of `room`" ends on the chunk boundary before its
//! first data byte over the room, and a tail piece runs through the chunk
//! holding its next data byte (so it stores at most one chunk, and a long
//! hole is never cut into chunk-sized pieces).
//!
//! A piece is also cut down to what the device's capacity holds (a chunk
//! multiple, or the whole rest if its media bytes fit).
//!
//! Why every device ends within one chunk of its share (ample capacity):
//! before the tail no piece exceeds its device's room, so no device is
//! over its share. Time mode: the shares add up to the total, so in the
//! tail the largest room is at least the average room, which is positive
//! while bytes remain; each tail piece (at most one chunk) lands on a
//! device with positive room, and rooms were already below one chunk. Bytes
//! mode: the fullest device either never went over T, and then all devices
//! hold exactly T, or received its last tail piece (<= chunk) while it was
//! the least filled; either way `max - min <= chunk`.
//!
//! Capacity: a device is open while it can take one more full record
//! (header + chunk). When a device closes one chunk or more short of its
//! share, the shares are recomputed at once: what is left to place is
//! split over the open devices in proportion to their weights (the closed
//! ones keep share = assigned). As a safety net, the same happens if the
//! tail is reached while the bytes left exceed the open devices' rooms by
//! one chunk per open device (devices that closed just under one chunk
//! short, many times over). Either follows a device closing, so at most
//! N + 1 times, and the tail stays short. Closed devices still take file
//! rests smaller than a chunk when their room is the largest.
//!
//! Segments: at most one rounded-down piece per device per share
//! recomputation, plus tail pieces (less than two chunks per device) and
//! one capacity-cut piece per device; all other files are one segment.

use super::state::{distribute, Context, DeviceState};
use super::{shortfall_bytes, sort_write_order, FileItem, Segment, DEVICE_NONE};

/// Place every file (its whole-file segments in write order). Returns
/// None if all fit, else the largest shortfall of a file rest that did
/// not (see `shortfall_bytes`).
pub(super) fn assign(
    ctx: &Context,
    files: &[FileItem],
    states: &mut [DeviceState],
    segments: &mut Vec<Segment>,
) -> Option<u128> {
    let chunk = ctx.chunk_bytes;
    let mut remaining_bytes: u128 = ctx.total_bytes;
    let mut shortfall: Option<u128> = None;
    // Pieces after the first of each split file; O(N) of them.
    let mut pieces: Vec<Segment> = Vec::new();
    // Devices too small for even one full record never reach their share.
    if states.iter().any(|s| closed_short(ctx, s)) {
        distribute(states, remaining_bytes, |s| is_open(ctx, s));
    }

    for slot in segments.iter_mut() {
        let whole = *slot;
        let file = &files[whole.file as usize];
        debug_assert!(whole.offset == 0 && whole.device == DEVICE_NONE);
        let mut offset: u64 = 0;
        while offset < whole.length {
            let rest = file.stored(offset, whole.length);
            let Some(device) = largest_room(ctx, states, file, offset) else {
                let short = shortfall_bytes(states, file.media(offset, whole.length, chunk));
                shortfall = Some(shortfall.unwrap_or(0).max(short));
                remaining_bytes -= u128::from(rest);
                break;
            };
            let room = states[device].room_bytes();
            if room < i128::from(chunk)
                && i128::from(rest) > room
                && reshare_if_short(ctx, states, remaining_bytes)
            {
                continue; // choose again with the new shares
            }
            let end = piece_end(ctx, &states[device], file, offset, rest);
            assert!(end > offset && end <= whole.length);
            assert!(end == whole.length || end.is_multiple_of(chunk));
            let stored = file.stored(offset, end);
            let media = file.media(offset, end, chunk);
            states[device].take(stored, media);
            let seg = Segment {
                file: whole.file,
                offset,
                length: end - offset,
                device: device as u32,
            };
            if offset == 0 {
                *slot = seg;
            } else {
                pieces.push(seg);
            }
            offset = end;
            remaining_bytes -= u128::from(stored);
            if closed_short(ctx, &states[device]) {
                distribute(states, remaining_bytes, |s| is_open(ctx, s));
            }
        }
    }
    assert_eq!(remaining_bytes, 0);

    if shortfall.is_some() {
        return shortfall; // the caller reports DoesNotFit; order is moot
    }
    // A file's first piece is shorter than the file only if the file has
    // more pieces; with no pieces, `segments` is still in write order.
    if !pieces.is_empty() {
        segments.append(&mut pieces);
        sort_write_order(segments, ctx.order);
    }
    None
}

/// The device with the largest room among those with capacity for the next
/// piece of `file` from `offset` (its least piece: at least one chunk, or
/// the whole rest if smaller; see `FileItem::end_of_least_piece`); ties to
/// the lowest index.
fn largest_room(
    ctx: &Context,
    states: &[DeviceState],
    file: &FileItem,
    offset: u64,
) -> Option<usize> {
    let least_end = file.end_of_least_piece(offset, ctx.chunk_bytes);
    let media_min = file.media(offset, least_end, ctx.chunk_bytes);
    let mut best: Option<(usize, i128)> = None;
    for (i, state) in states.iter().enumerate() {
        if !state.fits(media_min) {
            continue;
        }
        let room = state.room_bytes();
        if best.is_none_or(|(_, best_room)| room > best_room) {
            best = Some((i, room));
        }
    }
    best.map(|(i, _)| i)
}

/// End of the next piece of `file` from `offset` (whose rest stores
/// `rest` bytes) on `state`: the nearer of what its room allows (see the
/// module doc; in stored bytes) and what its capacity holds. Always the
/// file's end or a chunk boundary, and past `offset` for a device
/// `largest_room` chose.
fn piece_end(ctx: &Context, state: &DeviceState, file: &FileItem, offset: u64, rest: u64) -> u64 {
    let chunk = ctx.chunk_bytes;
    let room = state.room_bytes();
    let by_room = if i128::from(rest) <= room {
        file.size_bytes
    } else if room >= i128::from(chunk) {
        // room < rest <= u64::MAX here.
        file.end_by_stored(offset, room as u64, chunk)
    } else {
        // The tail: at most one chunk stored, and for a sparse file as much
        // as that (a piece through the next data byte's chunk may store
        // only a block).
        let least = file.end_of_least_piece(offset, chunk);
        least.max(file.end_by_stored(offset, chunk, chunk))
    };
    let by_capacity = file.end_by_media(offset, u128::from(state.capacity_room_bytes()), chunk);
    by_room.min(by_capacity)
}

/// A device that can take no further full record is closed.
fn is_open(ctx: &Context, state: &DeviceState) -> bool {
    state.fits(u128::from(ctx.record_media_bytes()))
}

/// Whether this device just closed at least one chunk short of its share,
/// so what it cannot take must be re-shared over the open devices.
fn closed_short(ctx: &Context, state: &DeviceState) -> bool {
    !is_open(ctx, state) && state.room_bytes() >= i128::from(ctx.chunk_bytes)
}

/// In the tail (every eligible room below one chunk): if the bytes still
/// to place exceed the open devices' positive rooms by at least one chunk
/// per open device, a device filled up before its share. Split what is
/// left over the open devices (capacity for a full record) by weight and
/// return true. Each call that returns true follows a device filling up,
/// so this happens at most N + 1 times.
fn reshare_if_short(ctx: &Context, states: &mut [DeviceState], remaining_bytes: u128) -> bool {
    let mut open_count: u128 = 0;
    let mut open_room: u128 = 0;
    for state in states.iter().filter(|s| is_open(ctx, s)) {
        open_count += 1;
        open_room += state.room_bytes().max(0) as u128;
    }
    if open_count == 0 || remaining_bytes < open_room + open_count * u128::from(ctx.chunk_bytes) {
        return false;
    }
    distribute(states, remaining_bytes, |s| is_open(ctx, s));
    true
}

//! The dispatcher: hands work to device workers from lock-free queues.
//!
//! Each device has a queue holding its planned segments in plan order (the
//! planner already applied the least-filled rule to the sorted list, with
//! capacities taken into account, so the plan is honoured as made). A
//! shared queue holds work that no device owns any more: what a device that
//! filled up could not write, and everything a failed device was given
//! (claims 13-15). A device whose own queue is empty takes shared work in
//! portions that keep the live devices balanced (`plan::redistribute`):
//! what brings it to its part of the live devices' fill (rounded to a
//! chunk), the rest put back, re-split on a chunk boundary; a device that
//! has its part waits while a live device owed more, or less filled, may
//! still take it (`--balance bytes`), so the work of a failed device is
//! spread over all the survivors, not given to the first one idle (claim
//! 15).
//!
//! A device with nothing to do waits while any other device is still
//! working, because a working device may still fail and hand work back.
//! A device counts as working while it has writes in flight: it asks for
//! more without blocking (`try_next`), and after its last item it says so
//! (`writing`) until it finishes or retires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crossbeam_queue::SegQueue;

use crate::plan::redistribute::{self, Level, Take};

/// A unit of work: a byte range of one file. Planned segments are the
/// first items; leftovers of full or failed devices are new items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub file: u32,
    pub offset: u64,
    pub length: u64,
}

impl WorkItem {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// What `try_next` has for a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Item(WorkItem),
    /// Nothing now; another device may still hand work back: ask again.
    Wait,
    /// Nothing left for it.
    Done,
}

/// A device's state as the dispatcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DeviceState {
    /// Writing, or about to: may still hand work back.
    Working = 0,
    /// Waiting for shared work; can take more.
    Idle = 1,
    /// Filled up: takes no more work.
    Full = 2,
    /// Failed: takes no more work.
    Failed = 3,
    /// Done, all its work written.
    Finished = 4,
    /// Not started yet (a cartridge of a spanning set still in its slot):
    /// takes no shared work and hands none back until `start`. While a
    /// device is pending, the others do not wait for work handed back:
    /// it will take that work when it starts (`backup::span`).
    Pending = 5,
}

impl DeviceState {
    fn from_u8(v: u8) -> DeviceState {
        match v {
            0 => DeviceState::Working,
            1 => DeviceState::Idle,
            2 => DeviceState::Full,
            3 => DeviceState::Failed,
            5 => DeviceState::Pending,
            _ => DeviceState::Finished,
        }
    }
}

/// What the shared queue has for a device.
enum Shared {
    Took(WorkItem),
    Empty,
    /// Work is pending but owed to others (see `plan::redistribute`).
    Wait,
}

/// How long an idle device sleeps between looks at the shared queue.
const IDLE_POLL: Duration = Duration::from_millis(1);

pub struct Dispatcher {
    own: Vec<SegQueue<WorkItem>>,
    shared: SegQueue<WorkItem>,
    shared_bytes: AtomicU64,
    /// Payload bytes each device has taken or still has queued (its fill level).
    filled_bytes: Vec<AtomicU64>,
    state: Vec<AtomicU8>,
    chunk_bytes: u64,
    aborted: AtomicBool,
    /// Payload bytes still in each device's own queue.
    queued_bytes: Vec<AtomicU64>,
    /// An idle device may take planned work from the device with the most
    /// left (so devices of uneven speed finish together).
    stealing: AtomicBool,
    /// Bytes per second of each device under `--balance time` (declared,
    /// probed, then as observed during the run); 0: unknown.
    rates: Vec<AtomicU64>,
    /// Work whose source could not be opened (removed since the walk, no
    /// permission any more): not in the set, and why.
    skipped: SegQueue<(WorkItem, std::io::Error)>,
    /// Data ranges of the sparse files (see `with_data`).
    data: HashMap<u32, Box<[(u64, u64)]>>,
    /// Whether each device's rate came with the plan (see `enable_stealing`).
    planned_rate: Vec<AtomicBool>,
    /// Nanoseconds each device spent waiting in `next`.
    waited_ns: Vec<AtomicU64>,
    /// Payload bytes each device has written, as last reported.
    written: Vec<AtomicU64>,
}

/// Payload bytes `item` stores, given the sparse files' data ranges.
fn stored_bytes(data: &HashMap<u32, Box<[(u64, u64)]>>, item: &WorkItem) -> u64 {
    match data.get(&item.file) {
        None => item.length,
        Some(ranges) => ranges
            .iter()
            .map(|&(offset, length)| {
                (offset + length)
                    .min(item.end())
                    .saturating_sub(offset.max(item.offset))
            })
            .sum(),
    }
}

impl Dispatcher {
    /// `plan` yields (device, item) in plan (write) order.
    pub fn new(
        device_count: usize,
        chunk_bytes: u64,
        plan: impl IntoIterator<Item = (u32, WorkItem)>,
    ) -> Dispatcher {
        Dispatcher::with_data(device_count, chunk_bytes, plan, HashMap::new())
    }

    /// `new` for a set with sparse files: `data` holds each sparse file's
    /// data ranges `(offset, length)`, ascending (`FileItem::data`), so
    /// that fill levels count the bytes stored, as the plan does, not the
    /// holes.
    pub fn with_data(
        device_count: usize,
        chunk_bytes: u64,
        plan: impl IntoIterator<Item = (u32, WorkItem)>,
        data: HashMap<u32, Box<[(u64, u64)]>>,
    ) -> Dispatcher {
        assert!(device_count > 0);
        assert!(chunk_bytes.is_power_of_two());
        let own: Vec<SegQueue<WorkItem>> = (0..device_count).map(|_| SegQueue::new()).collect();
        let filled_bytes: Vec<AtomicU64> = (0..device_count).map(|_| AtomicU64::new(0)).collect();
        let queued_bytes: Vec<AtomicU64> = (0..device_count).map(|_| AtomicU64::new(0)).collect();
        for (device, item) in plan {
            own[device as usize].push(item);
            let stored = stored_bytes(&data, &item);
            filled_bytes[device as usize].fetch_add(stored, Ordering::Relaxed);
            queued_bytes[device as usize].fetch_add(stored, Ordering::Relaxed);
        }
        Dispatcher {
            own,
            shared: SegQueue::new(),
            shared_bytes: AtomicU64::new(0),
            filled_bytes,
            state: (0..device_count)
                .map(|_| AtomicU8::new(DeviceState::Working as u8))
                .collect(),
            chunk_bytes,
            aborted: AtomicBool::new(false),
            queued_bytes,
            stealing: AtomicBool::new(false),
            rates: (0..device_count).map(|_| AtomicU64::new(0)).collect(),
            skipped: SegQueue::new(),
            data,
            planned_rate: (0..device_count).map(|_| AtomicBool::new(false)).collect(),
            waited_ns: (0..device_count).map(|_| AtomicU64::new(0)).collect(),
            written: (0..device_count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Payload bytes `item` stores (its data, without holes).
    fn stored(&self, item: &WorkItem) -> u64 {
        stored_bytes(&self.data, item)
    }

    /// The file offset at which the part of `item` from its start stores
    /// `bytes` (its end if it stores less).
    fn end_by_stored(&self, item: &WorkItem, bytes: u64) -> u64 {
        let Some(ranges) = self.data.get(&item.file) else {
            return item.offset.saturating_add(bytes).min(item.end());
        };
        let mut left = bytes;
        for &(offset, length) in ranges.iter() {
            let (from, to) = (offset.max(item.offset), (offset + length).min(item.end()));
            if from >= to {
                continue;
            }
            if to - from >= left {
                return from + left;
            }
            left -= to - from;
        }
        item.end()
    }

    /// Let idle devices take planned work from the busiest one (`--balance
    /// time`: finishing together matters more than the planned bytes).
    /// `rates` (bytes per second, 0: unknown) weigh what a device takes:
    /// a slow device takes only the share of the work left that it can
    /// write in the time the faster one needs for the rest.
    /// The rates the plan was made with are kept for the whole run: the
    /// dispatcher follows the plan. Only a device without one takes the
    /// rate observed during the run (`update_rate`): early observations
    /// mislead (a tape drive's buffer takes its first megabytes at once,
    /// so a 5 MiB/s drive looked faster than a 15 MiB/s one and was given
    /// more bytes than the plan said).
    pub fn enable_stealing(&self, rates: &[u64]) {
        for ((r, &rate), planned) in self.rates.iter().zip(rates).zip(&self.planned_rate) {
            r.store(rate, Ordering::Relaxed);
            planned.store(rate > 0, Ordering::Relaxed);
        }
        self.stealing.store(true, Ordering::SeqCst);
    }

    /// A device's rate as observed during the run; ignored for a device
    /// whose rate the plan gave (see `enable_stealing`).
    pub fn update_rate(&self, device: usize, bytes_per_sec: u64) {
        if !self.planned_rate[device].load(Ordering::Relaxed) {
            self.rates[device].store(bytes_per_sec.max(1), Ordering::Relaxed);
        }
    }

    /// Payload bytes `device` has written so far (its writes completed),
    /// so that stealing counts what each device still has to write, not
    /// only what it has not started.
    pub fn set_written(&self, device: usize, bytes: u64) {
        self.written[device].store(bytes, Ordering::Relaxed);
    }

    /// Payload bytes `device` has taken and not yet written.
    fn backlog(&self, device: usize) -> u128 {
        let filled = self.filled_bytes[device].load(Ordering::Relaxed);
        filled.saturating_sub(self.written[device].load(Ordering::Relaxed)) as u128
    }

    /// How long `device` has waited, with nothing to write, for work that
    /// others might hand back (in `next`): not its own time.
    pub fn waited(&self, device: usize) -> Duration {
        Duration::from_nanos(self.waited_ns[device].load(Ordering::Relaxed))
    }

    pub fn rate(&self, device: usize) -> u64 {
        self.rates[device].load(Ordering::Relaxed)
    }

    /// How much of the work a device does per unit of time, relative to
    /// the others: its rate when every rate is known, else 1 (bytes).
    fn weight(&self, device: usize) -> u64 {
        let known = self.stealing.load(Ordering::Relaxed)
            && self.rates.iter().all(|r| r.load(Ordering::Relaxed) > 0);
        if known {
            self.rate(device)
        } else {
            1
        }
    }

    fn pop_own(&self, device: usize) -> Option<WorkItem> {
        let item = self.own[device].pop()?;
        self.queued_bytes[device].fetch_sub(self.stored(&item), Ordering::Relaxed);
        Some(item)
    }

    /// Take planned work from the live device that needs the longest for
    /// what it still has to write: the thief's fair part, at the two
    /// devices' rates, of what both still have to write (so that both
    /// finish together), less what the thief itself still has to write
    /// (a device that has read all its work into buffers is not done: a
    /// slow tape that stole as if it were took more than the fast one),
    /// at most the victim's queue, at least a chunk (else nothing: the
    /// thief would finish after the victim), cut from the victim's next
    /// item; the rest of that item goes back to the end of the victim's
    /// queue.
    fn steal(&self, thief: usize, room_bytes: u64) -> Option<WorkItem> {
        let queued = |d: usize| self.queued_bytes[d].load(Ordering::Relaxed) as u128;
        let victim = (0..self.own.len())
            .filter(|&d| d != thief && self.state(d) == DeviceState::Working)
            .filter(|&d| queued(d) >= 2 * self.chunk_bytes as u128)
            .max_by_key(|&d| self.backlog(d) * 1_000_000 / self.weight(d).max(1) as u128)?;
        let (wt, wv) = (self.weight(thief) as u128, self.weight(victim) as u128);
        let both = self.backlog(thief) + self.backlog(victim);
        let fair = both * wt / (wt + wv).max(1);
        let share = fair.saturating_sub(self.backlog(thief)).min(queued(victim)) as u64;
        let share = share.min(room_bytes) / self.chunk_bytes * self.chunk_bytes;
        if share < self.chunk_bytes {
            return None;
        }
        let item = self.pop_own(victim)?;
        self.filled_bytes[victim].fetch_sub(self.stored(&item), Ordering::Relaxed);
        let cut = self.end_by_stored(&item, share) / self.chunk_bytes * self.chunk_bytes;
        let taken = if cut > item.offset && cut < item.end() {
            let rest = WorkItem {
                file: item.file,
                offset: cut,
                length: item.end() - cut,
            };
            self.own[victim].push(rest);
            self.queued_bytes[victim].fetch_add(self.stored(&rest), Ordering::Relaxed);
            self.filled_bytes[victim].fetch_add(self.stored(&rest), Ordering::Relaxed);
            WorkItem {
                length: cut - item.offset,
                ..item
            }
        } else {
            item
        };
        self.filled_bytes[thief].fetch_add(self.stored(&taken), Ordering::Relaxed);
        Some(taken)
    }

    /// Stop handing out work (the set cannot complete).
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub fn state(&self, device: usize) -> DeviceState {
        DeviceState::from_u8(self.state[device].load(Ordering::SeqCst))
    }

    fn set_state(&self, device: usize, state: DeviceState) {
        self.state[device].store(state as u8, Ordering::SeqCst);
    }

    /// The next item for `device`, which has room for `room_bytes` more
    /// payload. Blocks while the own queue is empty, the shared queue is
    /// empty and another device is still working. None: nothing left for it.
    /// Only for a device with nothing in flight (it is Idle while it
    /// waits, so it must not be able to hand work back meanwhile); a
    /// device with writes in flight asks `try_next`.
    pub fn next(&self, device: usize, room_bytes: u64) -> Option<WorkItem> {
        if self.aborted.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(item) = self.pop_own(device) {
            return Some(item);
        }
        if room_bytes < self.chunk_bytes.min(4096) {
            return None;
        }
        let asked = std::time::Instant::now();
        let item = self.wait_for_next(device, room_bytes);
        let waited = asked.elapsed().as_nanos() as u64;
        self.waited_ns[device].fetch_add(waited, Ordering::Relaxed);
        item
    }

    /// `next` once the own queue is empty: shared work, stolen work, or
    /// waiting for either.
    fn wait_for_next(&self, device: usize, room_bytes: u64) -> Option<WorkItem> {
        loop {
            // Working before looking, so that no other idle device concludes
            // that all work is done while this one holds an item.
            self.set_state(device, DeviceState::Working);
            match self.take_shared(device, room_bytes) {
                Shared::Took(item) => return Some(item),
                Shared::Empty if self.stealing.load(Ordering::Relaxed) => {
                    if let Some(item) = self.steal(device, room_bytes) {
                        return Some(item);
                    }
                }
                Shared::Empty | Shared::Wait => {}
            }
            self.set_state(device, DeviceState::Idle);
            if (!self.others_may_give_back(device) && self.shared.is_empty())
                || self.aborted.load(Ordering::SeqCst)
            {
                return None;
            }
            std::thread::sleep(IDLE_POLL);
        }
    }

    /// `next` for a device that has writes to do meanwhile (a tape with
    /// records buffered and one write in flight must not stop for shared
    /// work): never blocks. The device stays Working while it asks, since
    /// it is still writing and may still hand work back.
    pub fn try_next(&self, device: usize, room_bytes: u64) -> Next {
        if self.aborted.load(Ordering::SeqCst) {
            return Next::Done;
        }
        if let Some(item) = self.pop_own(device) {
            return Next::Item(item);
        }
        if room_bytes < self.chunk_bytes.min(4096) {
            return Next::Done;
        }
        self.set_state(device, DeviceState::Working);
        match self.take_shared(device, room_bytes) {
            Shared::Took(item) => return Next::Item(item),
            Shared::Empty if self.stealing.load(Ordering::Relaxed) => {
                if let Some(item) = self.steal(device, room_bytes) {
                    return Next::Item(item);
                }
            }
            Shared::Empty | Shared::Wait => {}
        }
        if !self.others_may_give_back(device) && self.shared.is_empty() {
            Next::Done
        } else {
            Next::Wait
        }
    }

    /// Shared work for `device` (live, with room for `room_bytes`): its
    /// part by `plan::redistribute::take`, cut on a chunk boundary in file
    /// offset space (O_DIRECT alignment) from the next shared item, whose
    /// rest goes back.
    fn take_shared(&self, device: usize, room_bytes: u64) -> Shared {
        let pending = self.shared_bytes.load(Ordering::SeqCst);
        if pending == 0 {
            return Shared::Empty;
        }
        let levels: Vec<Level> = (0..self.state.len())
            .map(|d| Level {
                filled: self.filled_bytes[d].load(Ordering::Relaxed),
                weight: self.weight(d),
                live: d == device
                    || matches!(self.state(d), DeviceState::Working | DeviceState::Idle),
            })
            .collect();
        // Patient under --balance bytes: equal bytes, even if a device
        // owed its part is still busy with its own work. Under --balance
        // time an idle device is the faster one: it takes a chunk more.
        let patient = !self.stealing.load(Ordering::Relaxed);
        let allow = match redistribute::take(&levels, device, pending, self.chunk_bytes, patient) {
            Take::Wait => return Shared::Wait,
            Take::Bytes(bytes) => bytes.min(room_bytes.max(self.chunk_bytes)),
        };
        let Some(item) = self.shared.pop() else {
            return Shared::Empty;
        };
        self.shared_bytes
            .fetch_sub(self.stored(&item), Ordering::SeqCst);
        let cut = self.end_by_stored(&item, allow).div_ceil(self.chunk_bytes) * self.chunk_bytes;
        let portion = self.keep_head(item, cut);
        self.filled_bytes[device].fetch_add(self.stored(&portion), Ordering::Relaxed);
        Shared::Took(portion)
    }

    /// `item` up to file offset `cut`; the rest (if any) goes back to the
    /// shared queue.
    fn keep_head(&self, item: WorkItem, cut: u64) -> WorkItem {
        if cut >= item.end() {
            return item;
        }
        self.give_back(&[WorkItem {
            file: item.file,
            offset: cut,
            length: item.end() - cut,
        }]);
        WorkItem {
            length: cut - item.offset,
            ..item
        }
    }

    /// Put work back for the others.
    pub fn give_back(&self, items: &[WorkItem]) {
        for item in items {
            if item.length == 0 {
                continue;
            }
            self.shared_bytes
                .fetch_add(self.stored(item), Ordering::SeqCst);
            self.shared.push(*item);
        }
    }

    /// The device takes no more work (`Full` or `Failed`): its queued work
    /// goes to the others. `gave_back` bytes were already handed back.
    /// Returns the bytes moved from its own queue.
    pub fn retire(&self, device: usize, state: DeviceState, gave_back_bytes: u64) -> u64 {
        assert!(matches!(state, DeviceState::Full | DeviceState::Failed));
        let mut moved = 0;
        while let Some(item) = self.pop_own(device) {
            moved += item.length;
            self.give_back(&[item]);
        }
        self.filled_bytes[device].fetch_sub(
            (moved + gave_back_bytes).min(self.filled_bytes[device].load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        // After the work is visible in the shared queue.
        self.set_state(device, state);
        moved
    }

    /// The device takes no more work but still has writes in flight:
    /// until it finishes or retires it counts as working, because one of
    /// those writes may still find the medium full (a tape's early
    /// warning, with many records buffered) or fail, and hand work back
    /// that the others must still be there to take.
    pub fn writing(&self, device: usize) {
        self.set_state(device, DeviceState::Working);
    }

    /// A device with nothing in flight that waits a moment before it
    /// asks again (`try_next` said Wait): it cannot hand work back now.
    /// A ring with `--parity` waits so, for parity records or work.
    pub fn idle(&self, device: usize) {
        self.set_state(device, DeviceState::Idle);
    }

    /// Add to `device`'s time waiting for work (not its own time).
    pub fn waited_for(&self, device: usize, waited: Duration) {
        self.waited_ns[device].fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn finish(&self, device: usize) {
        self.set_state(device, DeviceState::Finished);
    }

    /// `device` starts later (a cartridge waiting for a drive): see
    /// `DeviceState::Pending`. Its own queue stays its own.
    pub fn hold(&self, device: usize) {
        self.set_state(device, DeviceState::Pending);
    }

    /// A held device starts taking work.
    pub fn start(&self, device: usize) {
        self.set_state(device, DeviceState::Working);
    }

    /// Payload bytes `device` has taken or still has queued (its fill
    /// level: what it holds once it has written them).
    pub fn filled_bytes(&self, device: usize) -> u64 {
        self.filled_bytes[device].load(Ordering::Relaxed)
    }

    /// Payload bytes handed back and not taken yet.
    pub fn shared_pending_bytes(&self) -> u64 {
        self.shared_bytes.load(Ordering::SeqCst)
    }

    /// Whether some device is still writing, or one of `planned` has not
    /// started yet: either may still hand work back.
    pub fn may_give_back(&self, planned: std::ops::Range<usize>) -> bool {
        (0..self.state.len()).any(|d| {
            let state = self.state(d);
            state == DeviceState::Working || (planned.contains(&d) && state == DeviceState::Pending)
        })
    }

    /// Whether a device with nothing left must wait for work the others
    /// may still hand back: only while one is working and none is
    /// pending (a pending device takes that work when it starts).
    fn others_may_give_back(&self, device: usize) -> bool {
        let any = |s: DeviceState| (0..self.state.len()).any(|d| d != device && self.state(d) == s);
        any(DeviceState::Working) && !any(DeviceState::Pending)
    }

    /// A device could not open the source of `item`: no device can; it
    /// is left out of the set and reported.
    pub fn skip(&self, item: WorkItem, why: std::io::Error) {
        self.skipped.push((item, why));
    }

    /// The work left out because its source could not be opened (after
    /// every worker has returned), by file and offset.
    pub fn skipped(&self) -> Vec<(WorkItem, std::io::Error)> {
        let mut left = Vec::new();
        while let Some(s) = self.skipped.pop() {
            left.push(s);
        }
        left.sort_by_key(|(i, _)| (i.file, i.offset));
        left
    }

    /// Work nobody could take (after every worker has returned).
    pub fn unplaced(&self) -> Vec<WorkItem> {
        let mut left = Vec::new();
        while let Some(item) = self.shared.pop() {
            left.push(item);
        }
        left.sort_by_key(|i| (i.file, i.offset));
        left
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn item(file: u32, offset: u64, length: u64) -> WorkItem {
        WorkItem {
            file,
            offset,
            length,
        }
    }

    #[test]
    fn plan_order_per_device() {
        let plan = [(0, item(0, 0, 1)), (1, item(1, 0, 1)), (0, item(2, 0, 1))];
        let d = Dispatcher::new(2, 4096, plan);
        assert_eq!(d.next(0, u64::MAX), Some(item(0, 0, 1)));
        assert_eq!(d.next(0, u64::MAX), Some(item(2, 0, 1)));
        assert_eq!(d.next(1, u64::MAX), Some(item(1, 0, 1)));
        d.finish(1);
        assert_eq!(d.next(0, u64::MAX), None);
    }

    #[test]
    fn work_of_a_failed_device_is_split_among_survivors() {
        let chunk = 1 << 20;
        let plan = [
            (0, item(0, 0, 8 * chunk)),
            (1, item(1, 0, 8 * chunk)),
            (2, item(2, 0, 8 * chunk)),
        ];
        let d = Dispatcher::new(3, chunk, plan);
        assert_eq!(d.next(0, u64::MAX).unwrap().file, 0);
        assert_eq!(d.next(1, u64::MAX).unwrap().file, 1);
        let lost = d.next(2, u64::MAX).unwrap();
        d.give_back(&[lost]);
        d.retire(2, DeviceState::Failed, lost.length);
        // Survivors are level (8 chunks each), 8 chunks pending: 4 each.
        let a = d.next(0, u64::MAX).unwrap();
        assert_eq!(a, item(2, 0, 4 * chunk));
        let b = d.next(1, u64::MAX).unwrap();
        assert_eq!(b, item(2, 4 * chunk, 4 * chunk));
        d.finish(0);
        assert_eq!(d.next(1, u64::MAX), None);
        assert!(d.unplaced().is_empty());
    }

    #[test]
    fn room_limits_the_portion_and_the_rest_stays() {
        let chunk = 4096;
        let d = Dispatcher::new(2, chunk, [(1, item(0, 0, 10 * chunk))]);
        let lost = d.next(1, u64::MAX).unwrap();
        d.give_back(&[lost]);
        d.retire(1, DeviceState::Full, lost.length);
        assert_eq!(d.next(0, 3 * chunk), Some(item(0, 0, 3 * chunk)));
        d.retire(0, DeviceState::Full, 0);
        assert_eq!(d.unplaced(), vec![item(0, 3 * chunk, 7 * chunk)]);
    }

    /// One item of two chunks planned on device 1, which has taken it;
    /// device 0 asks for work on another thread (`waiter`).
    fn device_0_waiting(
        chunk: u64,
    ) -> (
        std::sync::Arc<Dispatcher>,
        WorkItem,
        std::thread::JoinHandle<Option<WorkItem>>,
    ) {
        let d = std::sync::Arc::new(Dispatcher::new(2, chunk, [(1, item(0, 0, 2 * chunk))]));
        let taken = d.next(1, u64::MAX).unwrap();
        let waiter = {
            let d = d.clone();
            std::thread::spawn(move || d.next(0, u64::MAX))
        };
        (d, taken, waiter)
    }

    #[test]
    fn a_device_still_writing_keeps_the_others_waiting() {
        let chunk = 4096;
        let (d, taken, waiter) = device_0_waiting(chunk);
        // Device 1 has writes in flight: it asks without blocking until it
        // is told there is nothing more, and stays working meanwhile.
        loop {
            match d.try_next(1, u64::MAX) {
                Next::Done => break,
                Next::Wait => std::thread::sleep(Duration::from_millis(1)),
                Next::Item(i) => panic!("no work left, got {i:?}"),
            }
        }
        d.writing(1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "device 0 must wait while device 1 still writes"
        );
        // Its medium ends: the unwritten half goes to device 0.
        let rest = item(0, chunk, chunk);
        d.give_back(&[rest]);
        d.retire(1, DeviceState::Full, rest.length);
        assert_eq!(waiter.join().unwrap(), Some(rest));
        assert_eq!(taken.length, 2 * chunk);
    }

    #[test]
    fn try_next_never_blocks() {
        let chunk = 4096;
        let d = Dispatcher::new(2, chunk, [(0, item(0, 0, chunk)), (1, item(1, 0, chunk))]);
        assert_eq!(d.try_next(0, u64::MAX), Next::Item(item(0, 0, chunk)));
        // Device 1 still works: device 0 is told to ask again, not blocked.
        assert_eq!(d.try_next(0, u64::MAX), Next::Wait);
        let lost = d.next(1, u64::MAX).unwrap();
        d.give_back(&[lost]);
        d.retire(1, DeviceState::Failed, lost.length);
        assert_eq!(d.try_next(0, u64::MAX), Next::Item(lost));
        assert_eq!(d.try_next(0, u64::MAX), Next::Done);
        assert_eq!(d.try_next(0, 0), Next::Done);
    }

    #[test]
    fn an_idle_device_waits_for_a_working_one() {
        let (d, taken, waiter) = device_0_waiting(4096);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "device 0 must wait while device 1 works"
        );
        d.give_back(&[taken]);
        d.retire(1, DeviceState::Failed, taken.length);
        assert_eq!(waiter.join().unwrap(), Some(taken));
    }

    #[test]
    fn an_idle_device_steals_from_the_busiest_when_enabled() {
        let chunk = 4096;
        let plan = [
            (0, item(0, 0, chunk)),
            (1, item(1, 0, 4 * chunk)),
            (1, item(2, 0, 4 * chunk)),
            (1, item(3, 0, 4 * chunk)),
        ];
        let d = Dispatcher::new(2, chunk, plan);
        d.enable_stealing(&[0, 0]);
        assert_eq!(d.next(0, u64::MAX), Some(item(0, 0, chunk)));
        assert_eq!(d.next(1, u64::MAX), Some(item(1, 0, 4 * chunk)));
        // Device 0 has nothing left: rates unknown, it takes its half of
        // device 1's queue (8 chunks), cut to its room, from the next item.
        assert_eq!(d.next(0, 2 * chunk), Some(item(2, 0, 2 * chunk)));
        // The rest of that item went back to the end of device 1's queue.
        assert_eq!(d.next(1, u64::MAX), Some(item(3, 0, 4 * chunk)));
        assert_eq!(d.next(1, u64::MAX), Some(item(2, 2 * chunk, 2 * chunk)));
        d.finish(1);
        assert_eq!(d.next(0, u64::MAX), None);
    }

    /// Two items of 64 chunks planned on device 1, stealing on with these
    /// `rates`; device 1 has taken and written the first.
    fn first_of_two_written(chunk: u64, rates: &[u64]) -> Dispatcher {
        let plan = [(1, item(1, 0, 64 * chunk)), (1, item(2, 0, 64 * chunk))];
        let d = Dispatcher::new(2, chunk, plan);
        d.enable_stealing(rates);
        assert_eq!(d.next(1, u64::MAX), Some(item(1, 0, 64 * chunk)));
        d.set_written(1, 64 * chunk);
        d
    }

    #[test]
    fn a_slow_device_steals_only_what_it_finishes_in_time() {
        // Device 0 writes 100 times slower than device 1.
        let d = first_of_two_written(4096, &[1_000, 100_000]);
        // 64 chunks queued on device 1: device 0's share is 64/101 of a
        // chunk, less than one: it takes nothing and waits.
        assert_eq!(d.try_next(0, u64::MAX), Next::Wait);
        // The plan's rates hold: what the run observes does not change them.
        d.update_rate(0, 100_000);
        assert_eq!(d.try_next(0, u64::MAX), Next::Wait);
    }

    #[test]
    fn an_unknown_rate_is_taken_from_the_run() {
        let chunk = 4096;
        let d = first_of_two_written(chunk, &[0, 100_000]);
        // Observed as fast as device 1: it takes half of the queue.
        d.update_rate(0, 100_000);
        assert_eq!(d.try_next(0, u64::MAX), Next::Item(item(2, 0, 32 * chunk)));
        assert_eq!(d.next(1, u64::MAX), Some(item(2, 32 * chunk, 32 * chunk)));
    }

    #[test]
    fn a_thief_counts_what_it_still_has_to_write() {
        let chunk = 4096;
        let plan = [(0, item(0, 0, 25 * chunk)), (1, item(1, 0, 75 * chunk))];
        let d = Dispatcher::new(2, chunk, plan);
        // A 5 MiB/s tape and a 15 MiB/s one; the slow one has read its
        // whole item into buffers before the fast one started.
        d.enable_stealing(&[5, 15]);
        assert_eq!(d.try_next(0, u64::MAX), Next::Item(item(0, 0, 25 * chunk)));
        // Nothing written yet: its 25 chunks are its part of 100.
        assert_eq!(d.try_next(0, u64::MAX), Next::Wait);
        // The fast one writes 30 of its 75 while the slow one writes
        // 10 of its 25: both are on time, still nothing to take.
        d.set_written(0, 10 * chunk);
        d.set_written(1, 30 * chunk);
        assert_eq!(d.try_next(0, u64::MAX), Next::Wait);
        // Had the fast one written nothing: 15 + 75 chunks left, the slow
        // one's part is 22.5, it has 15 to write: it takes 7.
        d.set_written(1, 0);
        assert_eq!(d.try_next(0, u64::MAX), Next::Item(item(1, 0, 7 * chunk)));
    }
}

//! The dispatcher: hands segments to device workers from lock-free queues.
//!
//! Each device has a queue holding its planned segments in plan order (the
//! planner already applied the least-filled rule to the sorted list, with
//! capacities taken into account, so the plan is honoured as made). A shared
//! queue holds work that no device owns any more (redirected work); a worker
//! whose own queue is empty takes from it only when it is the least filled
//! live device, so redirected items still go to the least filled device.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::SegQueue;

/// Index into the plan's segment list.
pub type SegmentIndex = u32;

pub struct Dispatcher {
    own: Vec<SegQueue<SegmentIndex>>,
    shared: SegQueue<SegmentIndex>,
    /// Payload bytes each device has taken so far (its fill level).
    filled_bytes: Vec<AtomicU64>,
    live: Vec<AtomicBool>,
}

impl Dispatcher {
    /// `assignment[i]` is the device of segment i, in plan (write) order.
    pub fn new(device_count: usize, assignment: impl IntoIterator<Item = u32>) -> Dispatcher {
        let own: Vec<SegQueue<SegmentIndex>> = (0..device_count).map(|_| SegQueue::new()).collect();
        for (index, device) in assignment.into_iter().enumerate() {
            own[device as usize].push(index as SegmentIndex);
        }
        Dispatcher {
            own,
            shared: SegQueue::new(),
            filled_bytes: (0..device_count).map(|_| AtomicU64::new(0)).collect(),
            live: (0..device_count).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    /// The next segment for `device`, or None when there is nothing left for it.
    pub fn next(
        &self,
        device: usize,
        length_of: impl Fn(SegmentIndex) -> u64,
    ) -> Option<SegmentIndex> {
        let index = self.own[device].pop().or_else(|| {
            if self.is_least_filled_live(device) {
                self.shared.pop()
            } else {
                None
            }
        })?;
        self.filled_bytes[device].fetch_add(length_of(index), Ordering::Relaxed);
        Some(index)
    }

    fn is_least_filled_live(&self, device: usize) -> bool {
        let mine = self.filled_bytes[device].load(Ordering::Relaxed);
        self.filled_bytes
            .iter()
            .zip(&self.live)
            .enumerate()
            .all(|(i, (f, l))| {
                i == device || !l.load(Ordering::Relaxed) || f.load(Ordering::Relaxed) >= mine
            })
    }

    /// Put work back for the others (a device that filled up or failed).
    pub fn redirect(&self, index: SegmentIndex) {
        self.shared.push(index);
    }

    pub fn mark_dead(&self, device: usize) {
        self.live[device].store(false, Ordering::Relaxed);
        while let Some(index) = self.own[device].pop() {
            self.shared.push(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_order_per_device() {
        let d = Dispatcher::new(2, [0, 1, 0, 1, 0]);
        let len = |_| 1;
        assert_eq!(d.next(0, len), Some(0));
        assert_eq!(d.next(0, len), Some(2));
        assert_eq!(d.next(1, len), Some(1));
        assert_eq!(d.next(0, len), Some(4));
        assert_eq!(d.next(0, len), None);
        assert_eq!(d.next(1, len), Some(3));
        assert_eq!(d.next(1, len), None);
    }

    #[test]
    fn redirected_work_goes_to_least_filled_live() {
        let d = Dispatcher::new(3, [0, 1, 2, 2]);
        let len = |i: u32| [10, 5, 1, 1][i as usize];
        assert_eq!(d.next(0, len), Some(0)); // device 0: 10
        assert_eq!(d.next(1, len), Some(1)); // device 1: 5
        d.mark_dead(2);
        assert_eq!(d.next(0, len), None, "device 0 is fuller than device 1");
        assert_eq!(d.next(1, len), Some(2));
        assert_eq!(d.next(1, len), Some(3));
        assert_eq!(d.next(1, len), None);
    }
}

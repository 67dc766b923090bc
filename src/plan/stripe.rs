//! Stripes for `--parity M` (issue 19): which devices hold the records of
//! each stripe, and which of them hold its parity. Pure. `online` decides
//! them while the data is written (the backup's normal path);
//! `over_written` over records already written (the backup's fallback for
//! records whose online stripe lost a member); `layout` plans them ahead.
//!
//! # Rules
//!
//! - A **stripe** has `k` data records and `M` parity records, one record
//!   per member device; any `k` of its `k + M` records rebuild it.
//! - Every device with room for one more record is a member of the next
//!   stripe: each device takes one record per stripe, so devices fill at
//!   the same pace (evenly, in records), whatever their sizes. A device
//!   that is full leaves the later stripes **narrower** (smaller `k`),
//!   never less protected: every stripe keeps `M` parity records. When
//!   fewer than `M + 1` devices have room, the data left does not fit.
//! - The last stripe may hold fewer data records than there are devices
//!   with room: its members are then those with the most room left (ties:
//!   lowest index), so the fill stays even.
//! - The **parity position rotates** from stripe to stripe (RAID-5/6
//!   style): in stripe `s` of width `w`, the parity records are at member
//!   positions `(w - 1 - s mod w + j) mod w` for `j` in `0..M`, so over
//!   every `w` consecutive stripes with the same members every member
//!   holds parity exactly `M` times: no device is a parity bottleneck.
//!
//! Sizes here are in records (the caller converts capacity to records of
//! one chunk plus header, see `media_bytes`).

mod online;
pub use online::{Assigner, Ended, Joined};

/// One stripe of the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stripe {
    /// Its number, from 0 in write order.
    pub id: u64,
    /// Member devices (indexes), ascending; `members.len() = k + M`.
    pub members: Vec<u32>,
    /// The members (device indexes) holding its parity records, in
    /// parity order (the first is parity record 0); `M` of them.
    pub parity: Vec<u32>,
}

impl Stripe {
    /// Data records in this stripe (`k`).
    pub fn data_records(&self) -> usize {
        self.members.len() - self.parity.len()
    }

    /// The members holding data, in data order (record 0 first).
    pub fn data_members(&self) -> Vec<u32> {
        let width = self.members.len();
        let m = self.parity.len();
        let first = parity_start(self.id, width);
        (0..width - m)
            .map(|j| self.members[(first + m + j) % width])
            .collect()
    }
}

/// Member position of parity record 0 in stripe `id` of `width` members.
pub fn parity_start(id: u64, width: usize) -> usize {
    assert!(width > 0);
    width - 1 - (id % width as u64) as usize
}

/// Member positions of the `m` parity records of stripe `id` of `width`
/// members (see the module doc).
pub fn parity_positions(id: u64, width: usize, m: usize) -> Vec<usize> {
    assert!(m < width, "a stripe holds at least one data record");
    let first = parity_start(id, width);
    (0..m).map(|j| (first + j) % width).collect()
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    #[error("--parity {m} needs at least {} devices", m + 1)]
    TooFewDevices { m: usize },
    #[error("the set does not fit with --parity {m}: {data_records_left} data records left when fewer than {} devices had room", m + 1)]
    DoesNotFit { m: usize, data_records_left: u64 },
}

/// The stripes holding `data_records` records on devices with room for
/// `capacity_records` records each, with `m` parity records per stripe.
/// See the module doc. O(stripes x devices).
pub fn layout(
    capacity_records: &[u64],
    m: usize,
    data_records: u64,
) -> Result<Vec<Stripe>, StripeError> {
    if capacity_records.len() < m + 1 {
        return Err(StripeError::TooFewDevices { m });
    }
    let mut free: Vec<u64> = capacity_records.to_vec();
    let mut left = data_records;
    let mut stripes = Vec::new();
    while left > 0 {
        let mut open: Vec<usize> = (0..free.len()).filter(|&d| free[d] > 0).collect();
        if open.len() < m + 1 {
            return Err(StripeError::DoesNotFit {
                m,
                data_records_left: left,
            });
        }
        let k = ((open.len() - m) as u64).min(left) as usize;
        if k + m < open.len() {
            // The last stripe: the members with the most room left.
            open.sort_by_key(|&d| (std::cmp::Reverse(free[d]), d));
            open.truncate(k + m);
            open.sort_unstable();
        }
        let id = stripes.len() as u64;
        let parity = parity_positions(id, open.len(), m)
            .into_iter()
            .map(|p| open[p] as u32)
            .collect();
        for &d in &open {
            free[d] -= 1;
        }
        left -= k as u64;
        stripes.push(Stripe {
            id,
            members: open.iter().map(|&d| d as u32).collect(),
            parity,
        });
    }
    Ok(stripes)
}

/// A stripe over records already written (`over_written`): each data
/// member's next record, in data order, and the members that take its
/// parity records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenStripe {
    /// Devices whose next unstriped record is data record `j` of the stripe.
    pub data: Vec<u32>,
    /// Devices that take the stripe's parity records, in parity order.
    pub parity: Vec<u32>,
}

/// Stripes over data that is already on the devices (the backup writes
/// data first and parity after it, docs/DESIGN.md "Parity"):
/// `records[d]` is `Some(n)`: device `d` holds `n` data records and can
/// take parity; `None`: it takes no part (failed, full, not given).
/// Each stripe takes one record from each data member; its `m` parity
/// records go to the taking-part devices with the fewest records still
/// unstriped (ties: rotating with the stripe number, so equal devices
/// take parity in turn, RAID-5 style). A device with much data thus takes
/// little parity: the fill stays even. Every data record of a taking-part
/// device is in exactly one stripe; a stripe has `k >= 1` data members
/// and `m` parity members, all distinct. Errors when fewer than `m + 1`
/// devices take part (and there is data).
pub fn over_written(records: &[Option<u64>], m: usize) -> Result<Vec<WrittenStripe>, StripeError> {
    let part: Vec<usize> = (0..records.len())
        .filter(|&d| records[d].is_some())
        .collect();
    let mut left: Vec<u64> = records.iter().map(|r| r.unwrap_or(0)).collect();
    if left.iter().all(|&l| l == 0) {
        return Ok(Vec::new());
    }
    let width = part.len();
    if m == 0 || width < m + 1 {
        return Err(StripeError::TooFewDevices { m });
    }
    let mut stripes = Vec::new();
    let mut id = 0u64;
    while left.iter().any(|&l| l > 0) {
        let turn = (id % width as u64) as usize;
        let mut order: Vec<usize> = (0..width).collect();
        order.sort_by_key(|&j| (left[part[j]], (j + width - turn) % width));
        let parity: Vec<u32> = order[..m].iter().map(|&j| part[j] as u32).collect();
        let mut data: Vec<u32> = order[m..]
            .iter()
            .map(|&j| part[j])
            .filter(|&d| left[d] > 0)
            .map(|d| d as u32)
            .collect();
        data.sort_unstable();
        assert!(
            !data.is_empty(),
            "the m devices with least left hold all that is left"
        );
        for &d in &data {
            left[d as usize] -= 1;
        }
        stripes.push(WrittenStripe { data, parity });
        id += 1;
    }
    Ok(stripes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    #[test]
    fn parity_rotates_over_four_devices() {
        let stripes = layout(&[10, 10, 10, 10], 1, 12).unwrap();
        assert_eq!(stripes.len(), 4);
        let parity: Vec<u32> = stripes.iter().map(|s| s.parity[0]).collect();
        assert_eq!(parity, [3, 2, 1, 0]);
        assert_eq!(stripes[0].data_members(), [0, 1, 2]);
        assert_eq!(stripes[1].data_members(), [3, 0, 1]);
    }

    #[test]
    fn a_full_device_leaves_narrower_stripes_as_protected() {
        // Device 1 holds 2 records: from stripe 2 on, 3 members, still 2 parity.
        let stripes = layout(&[10, 2, 10, 10], 2, 6).unwrap();
        let widths: Vec<usize> = stripes.iter().map(|s| s.members.len()).collect();
        assert_eq!(widths, [4, 4, 3, 3]);
        assert!(stripes.iter().all(|s| s.parity.len() == 2));
        assert!(stripes[2..].iter().all(|s| !s.members.contains(&1)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            layout(&[5, 5], 2, 1),
            Err(StripeError::TooFewDevices { m: 2 })
        );
        assert_eq!(
            layout(&[1, 1, 5], 1, 5),
            Err(StripeError::DoesNotFit {
                m: 1,
                data_records_left: 3
            })
        );
    }

    #[test]
    fn over_written_stripes_cover_every_record_once() {
        let stripes = over_written(&[Some(3); 4], 1).unwrap();
        assert_eq!(stripes.len(), 4);
        let parity: Vec<u32> = stripes.iter().map(|s| s.parity[0]).collect();
        let mut sorted = parity.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3], "parity rotates over equal devices");
        // A device that failed takes no part, not even parity.
        let stripes = over_written(&[Some(4), None, Some(4), Some(4)], 1).unwrap();
        for s in &stripes {
            assert!(!s.data.contains(&s.parity[0]) && s.parity[0] != 1);
        }
        let per_device = |d: u32| stripes.iter().filter(|s| s.data.contains(&d)).count();
        assert_eq!([per_device(0), per_device(2), per_device(3)], [4, 4, 4]);
        assert_eq!(
            over_written(&[Some(5), Some(5)], 2),
            Err(StripeError::TooFewDevices { m: 2 })
        );
    }

    proptest! {
        #[test]
        fn over_written_is_a_partition(records in proptest::collection::vec(proptest::option::of(0u64..40), 2..8), m in 1usize..3) {
            let Ok(stripes) = over_written(&records, m) else {
                prop_assert!(records.iter().flatten().count() < m + 1);
                return Ok(());
            };
            let mut count = vec![0u64; records.len()];
            for s in &stripes {
                prop_assert_eq!(s.parity.len(), m);
                prop_assert!(!s.data.is_empty());
                let mut all: Vec<u32> = s.data.iter().chain(&s.parity).copied().collect();
                all.sort_unstable();
                all.dedup();
                prop_assert_eq!(all.len(), s.data.len() + m);
                for &d in &s.data {
                    count[d as usize] += 1;
                }
            }
            let want: Vec<u64> = records.iter().map(|r| r.unwrap_or(0)).collect();
            prop_assert_eq!(count, want);
            for s in &stripes {
                for d in s.data.iter().chain(&s.parity) {
                    prop_assert!(records[*d as usize].is_some());
                }
            }
        }
    }

    proptest! {
        /// Every stripe: M parity members among distinct members, at least
        /// one data record; the data records add up; no device over its
        /// capacity; devices not full end within one record of each other
        /// (even fill); a stripe only narrows when a device is full.
        #[test]
        fn layouts_are_sound(
            caps in proptest::collection::vec(0u64..60, 1..10),
            m in 0usize..4,
            data in 0u64..400,
        ) {
            let Ok(stripes) = layout(&caps, m, data) else {
                // It fails only when it must: too few devices, or the
                // data does not fit in stripes of M + 1 or more.
                return Ok(());
            };
            let mut used = vec![0u64; caps.len()];
            let mut total = 0u64;
            for s in &stripes {
                prop_assert_eq!(s.parity.len(), m);
                prop_assert!(s.data_records() >= 1);
                prop_assert!(s.members.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(s.parity.iter().all(|p| s.members.contains(p)));
                let data_members = s.data_members();
                prop_assert!(data_members.iter().all(|d| !s.parity.contains(d)));
                prop_assert_eq!(data_members.len() + m, s.members.len());
                for &d in &s.members {
                    used[d as usize] += 1;
                }
                total += s.data_records() as u64;
            }
            prop_assert_eq!(total, data);
            for (u, c) in used.iter().zip(&caps) {
                prop_assert!(u <= c);
            }
            let not_full: Vec<u64> = used.iter().zip(&caps).filter(|(u, c)| u < c).map(|(u, _)| *u).collect();
            if let (Some(min), Some(max)) = (not_full.iter().min(), not_full.iter().max()) {
                prop_assert!(max - min <= 1, "{:?} of {:?}", used, caps);
                // A full device took every stripe a device with room took
                // while it was open, but for the last: it holds at most one
                // record more than any device with room (it may hold that
                // one more when the last, narrower stripe chose it: caps
                // [.., 46, 46], m = 0, one record short of full).
                for (u, c) in used.iter().zip(&caps) {
                    if u == c {
                        prop_assert!(*u <= min + 1, "{:?} of {:?}", used, caps);
                    }
                }
            }
            // All but the last stripe include every device with room then.
            let mut free = caps.clone();
            for s in stripes.iter().take(stripes.len().saturating_sub(1)) {
                let open = free.iter().filter(|&&f| f > 0).count();
                prop_assert_eq!(s.members.len(), open);
                for &d in &s.members {
                    free[d as usize] -= 1;
                }
            }
        }

        /// Over stripes with the same members, every member holds parity
        /// within M times of every other, and over every `width`
        /// consecutive stripes exactly M times.
        #[test]
        fn parity_is_spread(width in 2usize..12, m in 1usize..4, count in 1u64..100) {
            prop_assume_m_lt_width(m, width)?;
            let mut parity = vec![0u64; width];
            for id in 0..count {
                for p in parity_positions(id, width, m) {
                    parity[p] += 1;
                }
            }
            let (min, max) = (parity.iter().min().unwrap(), parity.iter().max().unwrap());
            prop_assert!(max - min <= m as u64, "{:?}", parity);
            if count % width as u64 == 0 {
                prop_assert_eq!(min, max, "{:?}", parity);
            }
        }
    }

    fn prop_assume_m_lt_width(
        m: usize,
        width: usize,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        if m < width {
            Ok(())
        } else {
            Err(proptest::test_runner::TestCaseError::reject("m >= width"))
        }
    }
}

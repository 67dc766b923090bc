//! Stripes decided **online**, while the data is written (issue 19,
//! docs/DESIGN.md "Parity"): a pure state machine the backup's rings feed
//! with their records as they are finalised, one call per record.
//!
//! # Rules
//!
//! - Every record is offered with its length in bytes (its shard: the
//!   record as it goes to media), which puts it in a **size class**
//!   (`size_class`: lengths within a factor of two share one). It joins
//!   the **oldest open stripe of its class** that has no record of its
//!   device yet; when there is none, it opens a new one. A stripe's parity
//!   is as long as its longest member: a stripe mixing a full-size record
//!   with small ones would cost a full-size parity record for little data
//!   (PERF.md "ninth session, wt-19w"), so members of a stripe are never
//!   more than twice as long as one another.
//! - A record that would **complete** a stripe whose parity would then go
//!   to a device that took `SLACK` records' worth more parity bytes than
//!   the device with the least skips that stripe (it joins a later one, or
//!   opens one while the window has room): the device behind the others
//!   would otherwise take the parity of every stripe they complete without
//!   it, fall further behind and take more, and write its last records
//!   alone in narrow stripes (PERF.md "ninth session, wt-19w").
//! - A stripe **closes** when it holds `live - M` data records (`live`:
//!   the devices still taking part), or when no device still producing
//!   data could add a record to it (every such device is already in it),
//!   or when a new stripe must open while `window` stripes are open: then
//!   the open stripe of the **smallest class** closes (the oldest of
//!   them), the one whose narrow parity costs the fewest bytes (memory
//!   stays bounded: a device far ahead of the others leaves narrower
//!   stripes, never unprotected ones).
//! - A closing stripe takes its `M` parity members among the live devices
//!   that hold none of its data: those holding the fewest **bytes** so far
//!   (data offered plus parity taken, a parity record as long as the
//!   stripe's longest member), ties rotating with the stripe id, so equal
//!   devices take parity in turn and a device that took much parity, or
//!   wrote more data, takes less until the others catch up: the devices
//!   fill evenly in bytes, not in records. With fewer than `M`
//!   such devices the stripe is **dropped** (its records are then the
//!   caller's to protect otherwise): never a stripe with fewer than `M`
//!   parity records.
//! - A device that **leaves** (failed or full) takes part in no later
//!   stripe; the open stripes holding one of its records are dropped (the
//!   caller cannot trust that record), and the open stripes it could have
//!   completed close when no producing device can grow them any more.
//! - Closed stripes are numbered `0, 1, 2, ...` in closing order (the
//!   parity records' `stripe_id`); open stripes are named by a key in
//!   opening order until then.

use std::collections::VecDeque;

/// Where an offered record went: stripe `key` (open), data position `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Joined {
    pub key: u64,
    pub index: usize,
}

/// What became of an open stripe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Closed as stripe `id`: `data[i]` holds its data record `i`, `parity[j]`
    /// takes its parity record `j`; all distinct, `parity.len() = M`.
    Closed {
        key: u64,
        id: u64,
        data: Vec<u32>,
        parity: Vec<u32>,
    },
    /// Dropped: a member left, or too few devices remain for its parity.
    Dropped { key: u64 },
}

impl Ended {
    pub fn key(&self) -> u64 {
        match self {
            Ended::Closed { key, .. } | Ended::Dropped { key } => *key,
        }
    }
}

#[derive(Clone, Debug)]
struct Open {
    key: u64,
    class: u32,
    /// Its longest member's bytes (its parity records' length).
    longest: u64,
    data: Vec<u32>,
}

/// Records of its length a device may take in parity beyond the device
/// with the least parity before the stripes stop closing onto it
/// (`Assigner::completes_onto_loaded`).
const SLACK: u64 = 4;

/// Bytes of the unit lengths are counted in (a media block).
const UNIT: u64 = 4096;

/// The size class of a record of `bytes`: `ceil(log2(units))`, units of
/// 4096 bytes rounded up, so that two records of one class are within a
/// factor of two of each other (up to one unit).
pub fn size_class(bytes: u64) -> u32 {
    let units = bytes.div_ceil(UNIT).max(1);
    u64::BITS - (units - 1).leading_zeros()
}

/// The online stripe assigner (see the module doc). O(window x devices)
/// per call.
#[derive(Clone, Debug)]
pub struct Assigner {
    m: usize,
    window: usize,
    live: Vec<bool>,
    producing: Vec<bool>,
    /// Bytes per device so far: data offered and parity taken.
    load: Vec<u64>,
    /// Parity bytes per device so far.
    parity_load: Vec<u64>,
    open: VecDeque<Open>,
    next_key: u64,
    next_id: u64,
}

impl Assigner {
    /// `devices` devices, all live and producing, `m >= 1` parity records
    /// per stripe, at most `window >= 1` stripes open at once.
    pub fn new(devices: usize, m: usize, window: usize) -> Assigner {
        assert!(m >= 1 && window >= 1);
        Assigner {
            m,
            window,
            live: vec![true; devices],
            producing: vec![true; devices],
            load: vec![0; devices],
            parity_load: vec![0; devices],
            open: VecDeque::new(),
            next_key: 0,
            next_id: 0,
        }
    }

    /// Stripes open now.
    pub fn open_stripes(&self) -> usize {
        self.open.len()
    }

    fn live_count(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }

    /// Data records a stripe closes at: every live device but `M`.
    fn target(&self) -> usize {
        self.live_count().saturating_sub(self.m)
    }

    /// Whether a producing device not in `data` could still join.
    fn can_grow(&self, data: &[u32]) -> bool {
        data.len() < self.target()
            && (0..self.live.len())
                .any(|d| self.live[d] && self.producing[d] && !data.contains(&(d as u32)))
    }

    /// Device `device`'s next record, `bytes` long: the stripe it joins
    /// (None: fewer than `M + 1` devices take part, no stripe can hold
    /// it), and the stripes that ended meanwhile, in order.
    pub fn offer(&mut self, device: u32, bytes: u64) -> (Option<Joined>, Vec<Ended>) {
        let d = device as usize;
        assert!(
            self.live[d] && self.producing[d],
            "a device offers records only while it produces"
        );
        let mut ended = Vec::new();
        if self.target() == 0 {
            return (None, ended);
        }
        self.load[d] += bytes;
        let class = size_class(bytes);
        let fits = |o: &Open| o.class == class && !o.data.contains(&device);
        let first = self.open.iter().position(fits);
        let balanced = self
            .open
            .iter()
            .position(|o| fits(o) && !self.completes_onto_loaded(o, device, bytes));
        let at = match (balanced, first) {
            (Some(at), _) => at,
            // Every stripe it could join would give its parity to a device
            // far ahead in parity: a new stripe while the window has room,
            // else the oldest (never a stripe closed early for it).
            (None, Some(at)) if self.open.len() >= self.window => at,
            _ => {
                if self.open.len() >= self.window {
                    let cheapest = (0..self.open.len())
                        .min_by_key(|&i| self.open[i].class)
                        .expect("window >= 1");
                    let o = self.open.remove(cheapest).expect("index in range");
                    ended.push(self.close(o));
                }
                self.open.push_back(Open {
                    key: self.next_key,
                    class,
                    longest: 0,
                    data: Vec::new(),
                });
                self.next_key += 1;
                self.open.len() - 1
            }
        };
        let o = &mut self.open[at];
        o.data.push(device);
        o.longest = o.longest.max(bytes);
        let joined = Joined {
            key: o.key,
            index: o.data.len() - 1,
        };
        ended.extend(self.settle());
        (Some(joined), ended)
    }

    /// Whether `device`'s record of `bytes` joining `o` would complete it
    /// and give its parity to a device that took `SLACK` records of that
    /// length more parity bytes than the least such live device: the
    /// device behind the others would take the parity of every stripe
    /// they complete without it, fall further behind and take more
    /// (PERF.md "ninth session, wt-19w"); the stripe waits for it instead.
    fn completes_onto_loaded(&self, o: &Open, device: u32, bytes: u64) -> bool {
        if o.data.len() + 1 < self.target() {
            return false;
        }
        let least = (0..self.live.len())
            .filter(|&d| self.live[d])
            .map(|d| self.parity_load[d])
            .min()
            .unwrap_or(0);
        let limit = least + SLACK * bytes;
        let outside: Vec<usize> = (0..self.live.len())
            .filter(|&d| self.live[d] && d != device as usize && !o.data.contains(&(d as u32)))
            .collect();
        // The M parity devices are those outside it (exactly M when full).
        outside.len() == self.m && outside.iter().any(|&d| self.parity_load[d] > limit)
    }

    /// Device `device` has no more data records (it may still take parity).
    pub fn done(&mut self, device: u32) -> Vec<Ended> {
        self.producing[device as usize] = false;
        self.settle()
    }

    /// Device `device` takes no more part (failed, or full): the open
    /// stripes holding its records are dropped.
    pub fn leave(&mut self, device: u32) -> Vec<Ended> {
        let d = device as usize;
        self.live[d] = false;
        self.producing[d] = false;
        let mut ended = Vec::new();
        self.open.retain(|o| {
            let keep = !o.data.contains(&device);
            if !keep {
                ended.push(Ended::Dropped { key: o.key });
            }
            keep
        });
        ended.extend(self.settle());
        ended
    }

    /// Close, oldest first, every open stripe that cannot grow any more.
    fn settle(&mut self) -> Vec<Ended> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.open.len() {
            if self.can_grow(&self.open[i].data) {
                i += 1;
                continue;
            }
            let o = self.open.remove(i).expect("index in range");
            ended.push(self.close(o));
        }
        ended
    }

    /// End `o`: closed with `M` parity members, or dropped.
    fn close(&mut self, o: Open) -> Ended {
        let n = self.live.len();
        let turn = (self.next_id % n as u64) as usize;
        let mut candidates: Vec<usize> = (0..n)
            .filter(|&d| self.live[d] && !o.data.contains(&(d as u32)))
            .collect();
        if o.data.is_empty() || candidates.len() < self.m {
            return Ended::Dropped { key: o.key };
        }
        candidates.sort_by_key(|&d| (self.load[d], (d + n - turn) % n));
        let parity: Vec<u32> = candidates[..self.m].iter().map(|&d| d as u32).collect();
        for &p in &parity {
            self.load[p as usize] += o.longest;
            self.parity_load[p as usize] += o.longest;
        }
        let id = self.next_id;
        self.next_id += 1;
        Ended::Closed {
            key: o.key,
            id,
            data: o.data,
            parity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};
    use std::collections::HashMap;

    /// A full-size record: 1 MiB of payload and its header block.
    const FULL: u64 = (1 << 20) + 4096;

    #[test]
    fn size_classes_keep_members_within_twice_each_other() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(4096), 0);
        assert_eq!(size_class(4097), 1);
        assert_eq!(size_class(8192), 1);
        assert_eq!(size_class(3 * 4096), 2);
        assert_eq!(size_class(FULL), 9);
        assert_eq!(size_class(FULL - 4096), 8);
        for a in 1..600u64 {
            for b in 1..600u64 {
                if size_class(a * 4096) == size_class(b * 4096) {
                    assert!(a <= 2 * b && b <= 2 * a, "{a} {b}");
                }
            }
        }
    }

    #[test]
    fn small_records_of_one_device_stay_out_of_full_size_stripes() {
        // Device 3 writes a small record after each full-size one: the
        // full-size stripes stay three wide, the small ones one wide.
        let mut a = Assigner::new(4, 1, 64);
        let mut ended = Vec::new();
        for _round in 0..30 {
            for d in 0..4 {
                ended.extend(a.offer(d, FULL).1);
            }
            ended.extend(a.offer(3, 5 * 4096).1);
        }
        for d in 0..4 {
            ended.extend(a.done(d));
        }
        let widths: Vec<usize> = ended
            .iter()
            .map(|e| match e {
                Ended::Closed { data, .. } => data.len(),
                Ended::Dropped { .. } => panic!("dropped"),
            })
            .collect();
        assert_eq!(widths.iter().filter(|&&w| w == 3).count(), 40);
        assert_eq!(widths.iter().filter(|&&w| w == 1).count(), 30);
        assert_eq!(widths.len(), 70);
    }

    #[test]
    fn a_device_behind_the_others_takes_no_more_parity_than_its_share() {
        // Device 2 starts six records late and offers last in every round:
        // the first three devices' records would complete every stripe
        // and give device 2 all the parity. Stripes stop closing onto it
        // once it took `SLACK` records more parity than the least.
        let mut a = Assigner::new(4, 1, 64);
        let mut ended = Vec::new();
        for round in 0..40 {
            for d in [0, 1, 3] {
                ended.extend(a.offer(d, FULL).1);
            }
            if round >= 6 {
                ended.extend(a.offer(2, FULL).1);
            }
        }
        for _ in 0..6 {
            ended.extend(a.offer(2, FULL).1);
        }
        for d in 0..4 {
            ended.extend(a.done(d));
        }
        let mut parity = [0u64; 4];
        let mut full = 0;
        for e in &ended {
            let Ended::Closed {
                data, parity: p, ..
            } = e
            else {
                panic!("dropped");
            };
            full += usize::from(data.len() == 3);
            parity[p[0] as usize] += 1;
        }
        assert_eq!(parity.iter().sum::<u64>(), ended.len() as u64);
        // The old rule: device 2 took the parity of all but its own last
        // six records, left one wide at the end.
        assert!(full + 4 >= ended.len(), "{full} full of {}", ended.len());
        let (min, max) = (parity.iter().min().unwrap(), parity.iter().max().unwrap());
        assert!(max - min <= SLACK + 2, "{parity:?}");
    }

    #[test]
    fn parity_goes_to_the_device_with_the_fewest_bytes() {
        // Window 1: every record closes the stripe before it, one wide.
        // Device 0 writes many small records, device 1 two full-size ones:
        // device 0 holds the most records but the fewest bytes, so the
        // parity of device 3's small stripes goes to it.
        let mut a = Assigner::new(4, 1, 1);
        for _ in 0..8 {
            a.offer(0, 4096);
        }
        a.offer(1, FULL);
        a.offer(1, FULL);
        a.offer(3, 4096);
        let mut parity = Vec::new();
        for _ in 0..10 {
            for e in a.offer(3, 4096).1 {
                let Ended::Closed {
                    data, parity: p, ..
                } = e
                else {
                    panic!("dropped");
                };
                assert_eq!(data, [3]);
                parity.push(p[0]);
            }
        }
        assert_eq!(parity, [0; 10]);
    }

    #[test]
    fn four_equal_devices_rotate_parity() {
        let mut a = Assigner::new(4, 1, 8);
        let mut parity = [0u32; 4];
        let mut closed = 0;
        for _round in 0..12 {
            for d in 0..4 {
                let (joined, ended) = a.offer(d, FULL);
                assert!(joined.is_some());
                for e in ended {
                    let Ended::Closed {
                        data, parity: p, ..
                    } = e
                    else {
                        panic!("dropped with all devices healthy");
                    };
                    assert_eq!(data.len(), 3);
                    parity[p[0] as usize] += 1;
                    closed += 1;
                }
            }
        }
        assert_eq!(closed, 16);
        assert_eq!(parity, [4, 4, 4, 4]);
        assert_eq!(a.open_stripes(), 0);
    }

    #[test]
    fn a_device_that_leaves_drops_its_open_stripes() {
        let mut a = Assigner::new(4, 1, 8);
        a.offer(0, FULL);
        let (j, _) = a.offer(1, FULL);
        assert_eq!(j, Some(Joined { key: 0, index: 1 }));
        let ended = a.leave(1);
        assert_eq!(ended, vec![Ended::Dropped { key: 0 }]);
        // Three left: stripes of two data records and one parity.
        let (_, e) = a.offer(0, FULL);
        assert!(e.is_empty());
        let (_, e) = a.offer(2, FULL);
        let Ended::Closed { data, parity, .. } = &e[0] else {
            panic!("{e:?}");
        };
        assert_eq!(
            (data.as_slice(), parity.as_slice()),
            (&[0, 2][..], &[3][..])
        );
    }

    /// A script step: a device offers a record, is done, or leaves.
    #[derive(Clone, Debug)]
    enum Step {
        Offer(u32, u64),
        Done(u32),
        Leave(u32),
    }

    #[derive(Default)]
    struct Seen {
        keys: std::collections::HashSet<u64>,
        ids: Vec<u64>,
    }

    impl Seen {
        fn check(
            &mut self,
            ended: Vec<Ended>,
            live: &[bool],
            joined: &HashMap<u64, Vec<u32>>,
            m: usize,
            devices: usize,
        ) -> Result<(), proptest::test_runner::TestCaseError> {
            for e in ended {
                prop_assert!(self.keys.insert(e.key()), "ended twice");
                if let Ended::Closed {
                    key,
                    id,
                    data,
                    parity,
                } = e
                {
                    prop_assert_eq!(joined.get(&key), Some(&data));
                    prop_assert!(!data.is_empty());
                    prop_assert_eq!(parity.len(), m);
                    let mut all: Vec<u32> = data.iter().chain(&parity).copied().collect();
                    all.sort_unstable();
                    all.dedup();
                    prop_assert_eq!(all.len(), data.len() + m);
                    prop_assert!(parity.iter().all(|&p| live[p as usize]));
                    prop_assert!(data.len() + m <= devices);
                    self.ids.push(id);
                }
            }
            Ok(())
        }
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            20 => (0u32..8, prop_oneof![Just(FULL), 1u64..FULL]).prop_map(|(d, b)| Step::Offer(d, b)),
            1 => (0u32..8).prop_map(Step::Done),
            1 => (0u32..8).prop_map(Step::Leave),
        ]
    }

    proptest! {
        /// Every record offered is in exactly one stripe, which ends
        /// exactly once; a closed stripe has k >= 1 distinct data members
        /// and M distinct parity members outside them, all live when it
        /// closed; never more than `window` open; nothing open at the end.
        #[test]
        fn online_stripes_are_sound(
            devices in 2usize..8,
            m in 1usize..3,
            window in 1usize..6,
            steps in proptest::collection::vec(step(), 0..300),
        ) {
            let mut a = Assigner::new(devices, m, window);
            let mut live = vec![true; devices];
            let mut producing = vec![true; devices];
            // key -> the devices whose records joined it, in order.
            let mut joined: HashMap<u64, Vec<u32>> = HashMap::new();
            let mut classes: HashMap<u64, u32> = HashMap::new();
            let mut seen = Seen::default();
            for s in steps {
                match s {
                    Step::Offer(d, bytes) => {
                        let d = d % devices as u32;
                        if !(live[d as usize] && producing[d as usize]) {
                            continue;
                        }
                        let (j, ended) = a.offer(d, bytes);
                        let live_now = live.iter().filter(|&&l| l).count();
                        prop_assert_eq!(j.is_some(), live_now > m);
                        if let Some(j) = j {
                            let class = classes.entry(j.key).or_insert(size_class(bytes));
                            prop_assert_eq!(*class, size_class(bytes), "one size class per stripe");
                            let v = joined.entry(j.key).or_default();
                            prop_assert!(!v.contains(&d), "one record per device per stripe");
                            prop_assert_eq!(v.len(), j.index);
                            v.push(d);
                            prop_assert!(!seen.keys.contains(&j.key), "joined an ended stripe");
                        }
                        seen.check(ended, &live, &joined, m, devices)?;
                    }
                    Step::Done(d) => {
                        let d = d % devices as u32;
                        producing[d as usize] = false;
                        let ended = a.done(d);
                        seen.check(ended, &live, &joined, m, devices)?;
                    }
                    Step::Leave(d) => {
                        let d = d % devices as u32;
                        live[d as usize] = false;
                        producing[d as usize] = false;
                        let ended = a.leave(d);
                        for e in &ended {
                            if let Ended::Closed { data, parity, .. } = e {
                                prop_assert!(!data.contains(&d) && !parity.contains(&d));
                            }
                        }
                        seen.check(ended, &live, &joined, m, devices)?;
                    }
                }
                prop_assert!(a.open_stripes() <= window);
            }
            for d in 0..devices as u32 {
                let ended = a.done(d);
                seen.check(ended, &live, &joined, m, devices)?;
            }
            prop_assert_eq!(a.open_stripes(), 0);
            for k in joined.keys() {
                prop_assert!(seen.keys.contains(k), "stripe {} never ended", k);
            }
            prop_assert!(seen.ids.iter().enumerate().all(|(i, &id)| id == i as u64), "ids in closing order");
        }

        /// Devices writing at the same pace: every stripe full width, and
        /// over the run every device takes parity within M of the others.
        #[test]
        fn equal_paces_spread_parity_evenly(devices in 2usize..9, m in 1usize..3, rounds in 1u64..40) {
            if m >= devices {
                return Ok(());
            }
            let mut a = Assigner::new(devices, m, 2 * devices);
            let mut parity = vec![0u64; devices];
            let mut ended = Vec::new();
            for _ in 0..rounds {
                for d in 0..devices as u32 {
                    ended.extend(a.offer(d, FULL).1);
                }
            }
            for d in 0..devices as u32 {
                ended.extend(a.done(d));
            }
            let mut full = 0;
            for e in &ended {
                let Ended::Closed { data, parity: p, .. } = e else {
                    return Err(proptest::test_runner::TestCaseError::fail("dropped"));
                };
                if data.len() == devices - m {
                    full += 1;
                }
                for &q in p {
                    parity[q as usize] += 1;
                }
            }
            // All but the stripes still open at the end are full width.
            prop_assert!(ended.len() - full <= devices, "{} of {}", full, ended.len());
            let (min, max) = (parity.iter().min().unwrap(), parity.iter().max().unwrap());
            prop_assert!(max - min <= m as u64 + 1, "{:?}", parity);
        }

        /// A device far ahead of the others: the window bounds what is
        /// open, the stripes narrow, and every one still has M parity.
        #[test]
        fn a_fast_device_narrows_stripes(ahead in 2u32..6, window in 1usize..5) {
            let mut a = Assigner::new(4, 1, window);
            for _ in 0..20 {
                for _ in 0..ahead {
                    for e in a.offer(0, FULL).1 {
                        let Ended::Closed { parity, .. } = e else { panic!("dropped") };
                        prop_assert_eq!(parity.len(), 1);
                    }
                    prop_assert!(a.open_stripes() <= window);
                }
                for d in 1..4 {
                    a.offer(d, FULL);
                }
            }
        }
    }
}

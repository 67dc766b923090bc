//! Redistribution at run time (claim 15): how much of the work that no
//! device owns any more (what a full or failed device could not write) a
//! live device takes when it asks for some. Pure: the dispatcher gives the
//! fill levels, this decides; the dispatcher cuts the work.
//!
//! # The rule
//!
//! A live device's **fill** is the payload it has written, is writing, or
//! still has queued. Its **target** is its weight's part of what the live
//! devices hold plus the work pending: `(sum of live fills + pending) *
//! weight / sum of live weights` (weights: 1 each for `--balance bytes`,
//! the rates for `--balance time`). The total does not change while work
//! moves from pending to a fill, so neither does a target, until a device
//! leaves (full, failed, finished) and the targets are recomputed over the
//! devices still live.
//!
//! A device that asks takes:
//! - its **deficit** (target − fill), rounded down to a chunk multiple,
//!   when that is at least one chunk;
//! - otherwise one chunk, if it is the least filled live device (relative
//!   to its weight): what the rounding leaves at the end goes to the least
//!   filled, one chunk at a time, as the plan's least-filled rule does;
//! - otherwise, when `patient` (the dispatcher is patient under `--balance
//!   bytes`), nothing yet: [`Take::Wait`], because a device owed more, or
//!   less filled, is still live and will ask once its own queue is done.
//!   An impatient device takes one chunk.
//!
//! So the first survivor to run out of its own work no longer takes the
//! whole of a failed device's share: no device goes above its target by
//! a deficit, every one ends above its target less a chunk, and the
//! remainder goes a chunk at a time to the least filled: survivors end
//! within two chunks of each other when the work pending suffices to
//! level them, and a device already above its target takes nothing.
//!
//! The least filled live device never waits, so someone always takes
//! while work is pending.

/// One device as redistribution sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Payload bytes taken, written or queued.
    pub filled: u64,
    /// Relative speed (`--balance time`: bytes per second), or 1. 0 counts as 1.
    pub weight: u64,
    /// Can still take work (not full, failed or finished).
    pub live: bool,
}

/// What a device that asks for shared work should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Take this many payload bytes (a chunk multiple, at least one chunk;
    /// less if less is pending).
    Bytes(u64),
    /// Take nothing now: others are owed the work pending. Ask again.
    Wait,
}

/// The target of `device`, in payload bytes (see the module doc).
pub fn target_bytes(levels: &[Level], device: usize, pending: u64) -> u64 {
    let weight = |l: &Level| u128::from(l.weight.max(1));
    let live = || levels.iter().filter(|l| l.live);
    let held: u128 = live().map(|l| u128::from(l.filled)).sum::<u128>() + u128::from(pending);
    let weights: u128 = live().map(weight).sum();
    let target = held * weight(&levels[device]) / weights.max(1);
    u64::try_from(target).unwrap_or(u64::MAX)
}

/// Whether `a` is less filled than `b` relative to their weights
/// (`a.filled / a.weight < b.filled / b.weight`, exact).
fn less_filled(a: &Level, b: &Level) -> bool {
    u128::from(a.filled) * u128::from(b.weight.max(1))
        < u128::from(b.filled) * u128::from(a.weight.max(1))
}

/// The deficit of `device` rounded down to a chunk multiple (rounding
/// up, or to the nearest, would let every device overshoot and the last
/// one to ask end short by all the overshoots).
fn rounded_deficit(levels: &[Level], device: usize, pending: u64, chunk: u64) -> u64 {
    let deficit = target_bytes(levels, device, pending).saturating_sub(levels[device].filled);
    deficit / chunk * chunk
}

/// How much of `pending` shared bytes `device` (live) takes when it asks;
/// `chunk` is the set's chunk size (a power of two). See the module doc.
pub fn take(levels: &[Level], device: usize, pending: u64, chunk: u64, patient: bool) -> Take {
    assert!(chunk.is_power_of_two());
    assert!(levels[device].live, "only a live device asks for work");
    if pending == 0 {
        return Take::Wait;
    }
    let mine = rounded_deficit(levels, device, pending, chunk);
    if mine >= chunk {
        return Take::Bytes(mine.min(pending));
    }
    let me = &levels[device];
    let others = || {
        levels
            .iter()
            .enumerate()
            .filter(move |&(d, l)| d != device && l.live)
    };
    let least = others().all(|(_, l)| !less_filled(l, me));
    let owed = others().any(|(d, _)| rounded_deficit(levels, d, pending, chunk) >= chunk);
    if patient && (owed || !least) {
        Take::Wait
    } else {
        Take::Bytes(chunk.min(pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    const MIB: u64 = 1 << 20;

    fn level(filled: u64) -> Level {
        Level {
            filled,
            weight: 1,
            live: true,
        }
    }

    #[test]
    fn the_first_idle_survivor_takes_only_its_part() {
        // Three survivors at 30, 40 and 40 MiB (own work counted), 50 MiB
        // of a failed device's work pending: 160 / 3 = 53.3 MiB each.
        let levels = [level(30 * MIB), level(40 * MIB), level(40 * MIB)];
        assert_eq!(take(&levels, 0, 50 * MIB, MIB, true), Take::Bytes(23 * MIB));
        // Once it holds its part, it waits for the two still owed theirs.
        let levels = [level(53 * MIB), level(40 * MIB), level(40 * MIB)];
        assert_eq!(take(&levels, 0, 27 * MIB, MIB, true), Take::Wait);
        // Impatient (--balance time), it takes a chunk at a time instead.
        assert_eq!(take(&levels, 0, 27 * MIB, MIB, false), Take::Bytes(MIB));
    }

    #[test]
    fn the_rest_after_rounding_goes_to_the_least_filled() {
        let levels = [level(10 * MIB), level(10 * MIB + 1), level(10 * MIB)];
        // Nobody is owed a chunk: the least filled ones take one each.
        assert_eq!(take(&levels, 0, MIB, MIB, true), Take::Bytes(MIB));
        assert_eq!(take(&levels, 1, MIB, MIB, true), Take::Wait);
        assert_eq!(take(&levels, 2, MIB, MIB, true), Take::Bytes(MIB));
    }

    #[test]
    fn devices_not_live_do_not_count() {
        let mut levels = [level(0), level(100 * MIB), level(0)];
        levels[1].live = false;
        // 20 MiB pending over the two live ones.
        assert_eq!(take(&levels, 0, 20 * MIB, MIB, true), Take::Bytes(10 * MIB));
    }

    #[test]
    fn by_rate_under_balance_time() {
        let levels = [
            Level {
                filled: 0,
                weight: 5,
                live: true,
            },
            Level {
                filled: 0,
                weight: 15,
                live: true,
            },
        ];
        assert_eq!(
            take(&levels, 0, 40 * MIB, MIB, false),
            Take::Bytes(10 * MIB)
        );
        assert_eq!(
            take(&levels, 1, 40 * MIB, MIB, false),
            Take::Bytes(30 * MIB)
        );
    }

    /// Runs the dispatcher's use of `take` over pending items (chunk
    /// aligned offsets, as the engine gives work back): devices ask in the
    /// order `asks` gives (index modulo the device count), a taken item is
    /// cut where the take ends and its rest goes to the back of the queue.
    /// Returns the final fills, or None if the asks ran out first.
    fn simulate(
        fills: &[u64],
        weights: &[u64],
        items: &[u64],
        chunk: u64,
        patient: bool,
        asks: &[usize],
    ) -> Option<Vec<u64>> {
        let mut levels: Vec<Level> = fills
            .iter()
            .zip(weights)
            .map(|(&filled, &weight)| Level {
                filled,
                weight,
                live: true,
            })
            .collect();
        let mut queue: std::collections::VecDeque<u64> = items.iter().copied().collect();
        let mut pending: u64 = items.iter().sum();
        let n = levels.len();
        // Ask in the given order, then round robin (every live device
        // asks again eventually).
        let order = asks.iter().map(|a| a % n).chain((0..).map(|i| i % n));
        for (step, device) in order.enumerate() {
            if pending == 0 {
                return Some(levels.iter().map(|l| l.filled).collect());
            }
            if step > asks.len() + 64 * n * (items.len() + 8) {
                return None;
            }
            match take(&levels, device, pending, chunk, patient) {
                Take::Wait => {}
                Take::Bytes(bytes) => {
                    assert!(bytes > 0 && bytes <= pending);
                    let item = queue.pop_front().unwrap();
                    let cut = bytes.div_ceil(chunk) * chunk;
                    let taken = if cut < item {
                        queue.push_back(item - cut);
                        cut
                    } else {
                        item
                    };
                    levels[device].filled += taken;
                    pending -= taken;
                }
            }
        }
        unreachable!()
    }

    proptest! {
        /// Bytes mode, enough pending work to level the devices: every
        /// device ends within two chunks of every other, whatever order
        /// they ask in, and the work is always taken (no deadlock).
        #[test]
        fn survivors_end_level(
            fills in proptest::collection::vec(0u64..64, 2..8),
            extra in proptest::collection::vec(1u64..200, 1..20),
            tail in 0u64..4096,
            chunk_shift in 12u32..21,
            asks in proptest::collection::vec(0usize..64, 0..200),
        ) {
            let chunk = 1u64 << chunk_shift;
            let fills: Vec<u64> = fills.iter().map(|f| f * chunk).collect();
            let max = *fills.iter().max().unwrap();
            let mut items: Vec<u64> = fills.iter().map(|f| max - f).filter(|&b| b > 0).collect();
            items.extend(extra.iter().map(|e| e * chunk));
            items.push(tail + 1);
            let weights = vec![1; fills.len()];
            let end = simulate(&fills, &weights, &items, chunk, true, &asks);
            prop_assert!(end.is_some(), "work left untaken");
            let end = end.unwrap();
            let spread = end.iter().max().unwrap() - end.iter().min().unwrap();
            prop_assert!(spread <= 2 * chunk, "spread {} chunks: {:?}", spread / chunk, end);
            let before: u64 = fills.iter().sum::<u64>() + items.iter().sum::<u64>();
            prop_assert_eq!(end.iter().sum::<u64>(), before);
        }

        /// Any fills: the work is always taken, and a device already above
        /// the final average (by more than a chunk) takes none of it.
        #[test]
        fn a_device_above_its_target_takes_nothing(
            fills in proptest::collection::vec(0u64..1000, 2..8),
            items in proptest::collection::vec(1u64..100, 1..10),
            asks in proptest::collection::vec(0usize..64, 0..200),
        ) {
            let chunk = 4096u64;
            let fills: Vec<u64> = fills.iter().map(|f| f * chunk).collect();
            let items: Vec<u64> = items.iter().map(|i| i * chunk).collect();
            let weights = vec![1; fills.len()];
            let end = simulate(&fills, &weights, &items, chunk, true, &asks);
            prop_assert!(end.is_some(), "work left untaken");
            let end = end.unwrap();
            let average = end.iter().sum::<u64>() / end.len() as u64;
            for (before, after) in fills.iter().zip(&end) {
                if *before > average + chunk {
                    prop_assert_eq!(before, after);
                }
            }
        }

        /// Time mode (weights = rates): with enough pending work, every
        /// device ends within two chunks (scaled by its weight's part) of
        /// its share by weight; impatient devices never wait.
        #[test]
        fn by_weight_when_weighted(
            weights in proptest::collection::vec(1u64..50, 2..6),
            extra in 1u64..400,
            patient in proptest::bool::ANY,
            asks in proptest::collection::vec(0usize..64, 0..200),
        ) {
            let chunk = 4096u64;
            let fills = vec![0u64; weights.len()];
            let items = vec![extra * chunk * weights.len() as u64];
            let end = simulate(&fills, &weights, &items, chunk, patient, &asks);
            prop_assert!(end.is_some(), "work left untaken");
            let end = end.unwrap();
            let total: u64 = end.iter().sum();
            let w: u64 = weights.iter().sum();
            for (filled, weight) in end.iter().zip(&weights) {
                let share = total * weight / w;
                if patient {
                    prop_assert!(filled.abs_diff(share) <= 2 * chunk * w / weight.min(&w),
                        "{:?} by {:?}", end, weights);
                }
            }
        }
    }
}

//! Reed-Solomon erasure code for `--parity M` (issue 19), pure: `k` data
//! shards in, `M` parity shards out; any `k` of the `k + M` shards give back
//! the others exactly. The one place pbio names its Reed-Solomon crate
//! (reed-solomon-erasure, GF(2^8), chosen by measurement: PERF.md "#19").
//!
//! What a stripe is, which devices hold it and where its parity goes is the
//! planner's (`plan::stripe`); how a parity record looks on media is the
//! format's (`format::parity`). This module only computes bytes.
//!
//! The code corrects **erasures** (shards known to be missing), not errors:
//! a shard given as present is trusted, so callers check each record's CRC
//! first and pass a damaged one as missing.

use reed_solomon_erasure::galois_8::ReedSolomon;

/// Most shards (`k + M`) in one stripe: the field GF(2^8) has 256 elements
/// and the parity record format stores `k`, `M` and positions in one byte.
pub const SHARDS_MAX: usize = 255;

/// Which missing shards `Codec::reconstruct` rebuilds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebuild {
    /// Data and parity.
    All,
    /// Only data (cheaper: a restore needs no parity back); missing parity
    /// buffers are left as they were.
    DataOnly,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParityError {
    /// `k` or `M` is 0, or `k + M > SHARDS_MAX`.
    #[error("invalid stripe shape {k}+{m} (k >= 1, M >= 1, k + M <= {SHARDS_MAX})")]
    Shape { k: usize, m: usize },
    /// The caller gave the wrong number of shards.
    #[error("{have} shards given, the {k}+{m} stripe has {need}")]
    ShardCount {
        k: usize,
        m: usize,
        have: usize,
        need: usize,
    },
    /// Shards of different lengths, or of length 0.
    #[error("shard lengths differ or are zero")]
    ShardLength,
    /// More than `M` shards are missing: nothing can be rebuilt.
    #[error("{missing} shards missing, at most {m} can be rebuilt")]
    TooManyMissing { missing: usize, m: usize },
}

/// The code of one stripe shape, `k` data + `m` parity shards. Cheap to
/// keep per shape; `encode` and `reconstruct` take `&self` and can run on
/// several threads at once.
pub struct Codec {
    k: usize,
    m: usize,
    rs: ReedSolomon,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({}+{})", self.k, self.m)
    }
}

impl Codec {
    /// The code for `k` data and `m` parity shards.
    pub fn new(k: usize, m: usize) -> Result<Codec, ParityError> {
        if k == 0 || m == 0 || k + m > SHARDS_MAX {
            return Err(ParityError::Shape { k, m });
        }
        let rs = ReedSolomon::new(k, m).map_err(|_| ParityError::Shape { k, m })?;
        Ok(Codec { k, m, rs })
    }

    /// Data shards per stripe.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Parity shards per stripe.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Compute the `m` parity shards of the `k` data shards. All shards
    /// have the same non-zero length (a shorter data record is padded with
    /// zeros by the caller, as docs/FORMAT.md "Parity records" says).
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), ParityError> {
        self.count(data.len() + parity.len())?;
        if data.len() != self.k {
            return Err(ParityError::ShardCount {
                k: self.k,
                m: self.m,
                have: data.len(),
                need: self.k,
            });
        }
        let len = data[0].len();
        if len == 0 || data.iter().any(|s| s.len() != len) || parity.iter().any(|s| s.len() != len)
        {
            return Err(ParityError::ShardLength);
        }
        self.rs
            .encode_sep(data, parity)
            .map_err(|_| ParityError::ShardLength)
    }

    /// Rebuild the missing shards of a stripe that `rebuild` names, in
    /// place: `shards` is in stripe position order (data `0..k`, then
    /// parity `k..k + m`), all of one non-zero length; `present[i]` says
    /// whether `shards[i]` holds good bytes (a missing shard's buffer is
    /// only written). With more than `m` missing nothing is written and an
    /// error returned: never wrong data.
    pub fn reconstruct(
        &self,
        shards: &mut [&mut [u8]],
        present: &[bool],
        rebuild: Rebuild,
    ) -> Result<(), ParityError> {
        self.count(shards.len())?;
        self.count(present.len())?;
        let missing = present.iter().filter(|p| !**p).count();
        if missing > self.m {
            return Err(ParityError::TooManyMissing { missing, m: self.m });
        }
        let len = shards[0].len();
        if len == 0 || shards.iter().any(|s| s.len() != len) {
            return Err(ParityError::ShardLength);
        }
        if missing == 0 {
            return Ok(());
        }
        let mut work: Vec<(&mut [u8], bool)> = shards
            .iter_mut()
            .zip(present)
            .map(|(s, p)| (&mut **s, *p))
            .collect();
        let done = match rebuild {
            Rebuild::DataOnly => self.rs.reconstruct_data(&mut work),
            Rebuild::All => self.rs.reconstruct(&mut work),
        };
        done.map_err(|_| ParityError::ShardLength)
    }

    fn count(&self, have: usize) -> Result<(), ParityError> {
        if have == self.k + self.m {
            Ok(())
        } else {
            Err(ParityError::ShardCount {
                k: self.k,
                m: self.m,
                have,
                need: self.k + self.m,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stripe(k: usize, m: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
        let codec = Codec::new(k, m).unwrap();
        let data: Vec<Vec<u8>> = (0..k)
            .map(|i| (0..len).map(|j| (i * 31 + j * 7) as u8 ^ seed).collect())
            .collect();
        let mut parity = vec![vec![0u8; len]; m];
        let d: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut p: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&d, &mut p).unwrap();
        data.into_iter().chain(parity).collect()
    }

    #[test]
    fn shapes() {
        assert!(Codec::new(1, 1).is_ok());
        assert!(Codec::new(254, 1).is_ok());
        assert!(Codec::new(8, 2).is_ok());
        for (k, m) in [(0, 1), (1, 0), (255, 1), (200, 56), (0, 0)] {
            assert_eq!(Codec::new(k, m).unwrap_err(), ParityError::Shape { k, m });
        }
    }

    /// 1+1 is a mirror.
    #[test]
    fn one_plus_one_is_a_mirror() {
        let s = stripe(1, 1, 64, 5);
        assert_eq!(s[0], s[1]);
    }

    /// Parity bytes go on media: the code is part of the format and must
    /// never change with a crate upgrade. Known answer for 4+2 and 8+2.
    #[test]
    fn parity_bytes_are_pinned() {
        let s = stripe(4, 2, 16, 0);
        assert_eq!(s[4], GOLDEN_4_2[0]);
        assert_eq!(s[5], GOLDEN_4_2[1]);
        let s = stripe(8, 2, 4096, 7);
        let crcs: Vec<u32> = s[8..].iter().map(|p| crc32c::crc32c(p)).collect();
        assert_eq!(crcs, GOLDEN_8_2_CRC);
    }

    const GOLDEN_4_2: [[u8; 16]; 2] = [
        [
            2, 131, 202, 137, 224, 79, 166, 21, 252, 83, 165, 246, 143, 248, 51, 126,
        ],
        [
            8, 162, 241, 168, 223, 9, 202, 83, 156, 21, 158, 215, 176, 217, 226, 184,
        ],
    ];
    const GOLDEN_8_2_CRC: [u32; 2] = [0xed7c_8429, 0xd90e_68bf];

    #[test]
    fn encode_rejects_bad_shards() {
        let codec = Codec::new(2, 1).unwrap();
        let a = [1u8; 8];
        let b = [2u8; 7];
        let mut p = [0u8; 8];
        assert_eq!(
            codec.encode(&[&a, &b], &mut [&mut p]).unwrap_err(),
            ParityError::ShardLength
        );
        assert!(matches!(
            codec.encode(&[&a], &mut [&mut p]),
            Err(ParityError::ShardCount {
                have: 2,
                need: 3,
                ..
            })
        ));
        assert_eq!(
            codec.encode(&[&[], &[]], &mut [&mut []]).unwrap_err(),
            ParityError::ShardLength
        );
    }

    /// Run `reconstruct` on copies of `full` with the shards of `lost`
    /// replaced by garbage; the shards after.
    fn rebuilt(
        codec: &Codec,
        full: &[Vec<u8>],
        lost: &[usize],
        rebuild: Rebuild,
    ) -> (Result<(), ParityError>, Vec<Vec<u8>>) {
        let mut s: Vec<Vec<u8>> = full.to_vec();
        let mut present = vec![true; full.len()];
        for &i in lost {
            present[i] = false;
            s[i].iter_mut().for_each(|b| *b = 0xA5);
        }
        let mut refs: Vec<&mut [u8]> = s.iter_mut().map(Vec::as_mut_slice).collect();
        (codec.reconstruct(&mut refs, &present, rebuild), s)
    }

    #[test]
    fn too_many_missing_changes_nothing() {
        let codec = Codec::new(4, 2).unwrap();
        let full = stripe(4, 2, 33, 1);
        for rebuild in [Rebuild::All, Rebuild::DataOnly] {
            let (r, s) = rebuilt(&codec, &full, &[0, 3, 5], rebuild);
            assert_eq!(
                r.unwrap_err(),
                ParityError::TooManyMissing { missing: 3, m: 2 }
            );
            // The missing buffers still hold what the caller left there.
            assert!(s[0].iter().chain(&s[3]).chain(&s[5]).all(|b| *b == 0xA5));
            assert_eq!(&s[1], &full[1]);
        }
    }

    #[test]
    fn reconstruct_rejects_bad_arguments() {
        let codec = Codec::new(2, 1).unwrap();
        let (mut a, mut b, mut c) = (vec![1u8; 4], vec![1u8; 5], vec![0u8; 4]);
        let mut refs: Vec<&mut [u8]> = vec![&mut a, &mut b, &mut c];
        assert_eq!(
            codec
                .reconstruct(&mut refs, &[true, true, false], Rebuild::All)
                .unwrap_err(),
            ParityError::ShardLength
        );
        assert!(matches!(
            codec.reconstruct(&mut refs, &[true, false], Rebuild::All),
            Err(ParityError::ShardCount {
                have: 2,
                need: 3,
                ..
            })
        ));
        let mut refs: Vec<&mut [u8]> = vec![&mut [], &mut [], &mut []];
        assert_eq!(
            codec
                .reconstruct(&mut refs, &[true, true, false], Rebuild::All)
                .unwrap_err(),
            ParityError::ShardLength
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Random shape, shard length and up to M erasures: everything
        /// comes back exactly, rebuilding all shards or only data.
        #[test]
        fn any_k_of_k_plus_m_rebuild_exactly(
            k in 1usize..=12,
            m in 1usize..=4,
            len in 1usize..=600,
            seed in any::<u8>(),
            lost_seed in any::<u64>(),
            lost_count in 0usize..=4,
        ) {
            let codec = Codec::new(k, m).unwrap();
            let full = stripe(k, m, len, seed);
            let lost_count = lost_count.min(m);
            // A random set of `lost_count` distinct positions.
            let mut order: Vec<usize> = (0..k + m).collect();
            let mut x = lost_seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let lost = &order[..lost_count];
            let (r, s) = rebuilt(&codec, &full, lost, Rebuild::All);
            r.unwrap();
            prop_assert_eq!(&s, &full);
            let (r, s) = rebuilt(&codec, &full, lost, Rebuild::DataOnly);
            r.unwrap();
            prop_assert_eq!(&s[..k], &full[..k]);
        }

        /// More than M erasures: an error, and the shards as they were.
        #[test]
        fn more_than_m_missing_is_an_error(
            k in 1usize..=10,
            m in 1usize..=3,
            len in 1usize..=64,
            extra in 1usize..=3,
            start in 0usize..13,
        ) {
            let codec = Codec::new(k, m).unwrap();
            let full = stripe(k, m, len, 3);
            let n = k + m;
            let missing = (m + extra).min(n);
            let lost: Vec<usize> = (0..missing).map(|j| (start + j) % n).collect();
            let (r, s) = rebuilt(&codec, &full, &lost, Rebuild::All);
            prop_assert_eq!(r.unwrap_err(), ParityError::TooManyMissing { missing, m });
            for i in 0..n {
                if lost.contains(&i) {
                    prop_assert!(s[i].iter().all(|b| *b == 0xA5));
                } else {
                    prop_assert_eq!(&s[i], &full[i]);
                }
            }
        }
    }
}

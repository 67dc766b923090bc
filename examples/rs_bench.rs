//! Throughput of pbio's Reed-Solomon codec (`pbio::parity`) on one core:
//! encode, and rebuild of 1 and of M lost data shards, at the stripe shapes
//! of issue 19 with 1 MiB shards, best of several repetitions.
//!
//!     cargo run --release --example rs_bench
//!
//! GiB/s counts the stripe's data bytes (k x shard) per second. The
//! side-by-side comparison of the candidate crates that chose this one is
//! scripts/rs-compare (PERF.md "#19").

use std::hint::black_box;
use std::time::Instant;

use pbio::parity::{Codec, Rebuild};

const SHARD: usize = 1 << 20;
const REPS: usize = 15;

fn best<F: FnMut()>(mut f: F) -> f64 {
    f();
    (0..REPS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn gib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1u64 << 30) as f64
}

fn main() {
    println!("pbio::parity, 1 MiB shards, one thread, best of {REPS}; GiB/s of stripe data");
    println!("| k+M | encode | rebuild 1 lost | rebuild M lost |");
    println!("|---|---|---|---|");
    for (k, m) in [(4, 1), (4, 2), (8, 2)] {
        let codec = Codec::new(k, m).expect("shape");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<Vec<u8>> = (0..k)
            .map(|_| {
                (0..SHARD)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let mut parity = vec![vec![0u8; SHARD]; m];
        let enc = best(|| {
            let d: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let mut p: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
            codec.encode(black_box(&d), &mut p).expect("encode");
        });
        let full: Vec<Vec<u8>> = data.iter().chain(&parity).cloned().collect();
        let rebuild = |lost: usize| {
            let mut shards = full.clone();
            let mut present = vec![true; k + m];
            present[..lost].iter_mut().for_each(|p| *p = false);
            let t = best(|| {
                let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(Vec::as_mut_slice).collect();
                codec
                    .reconstruct(black_box(&mut refs), &present, Rebuild::DataOnly)
                    .expect("rebuild");
            });
            assert_eq!(&shards[..k], &full[..k], "rebuilt wrong data");
            t
        };
        let (r1, rm) = (rebuild(1), rebuild(m));
        println!(
            "| {k}+{m} | {:.2} | {:.2} | {:.2} |",
            gib_s(k * SHARD, enc),
            gib_s(k * SHARD, r1),
            gib_s(k * SHARD, rm)
        );
    }
}

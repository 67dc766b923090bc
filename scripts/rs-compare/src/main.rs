//! Reed-Solomon crates side by side, one core: encode and rebuild throughput
//! at the stripe shapes pbio uses (issue #19), 1 MiB shards, best of REPS.
//!
//! GiB/s counts the stripe's data bytes (k × shard) per second of CPU time on
//! one thread: encode = M parity shards computed from k data shards; rebuild
//! = the lost data shards (1, or M) recomputed from the k survivors.

use std::hint::black_box;
use std::time::Instant;

const SHARD: usize = 1 << 20;
const REPS: usize = 15;

fn best<F: FnMut()>(mut f: F) -> f64 {
    f(); // warm-up
    let mut best = f64::MAX;
    for _ in 0..REPS {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn gib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1u64 << 30) as f64
}

fn data(k: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..k)
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
        .collect()
}

/// (encode, rebuild 1, rebuild M) in GiB/s.
fn erasure(k: usize, m: usize) -> (f64, f64, f64) {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    let rs = ReedSolomon::new(k, m).unwrap();
    let mut shards = data(k);
    shards.extend((0..m).map(|_| vec![0u8; SHARD]));
    let enc = best(|| rs.encode(black_box(&mut shards)).unwrap());
    let reference = shards.clone();
    let rebuild = |lost: usize| {
        let mut work: Vec<(Vec<u8>, bool)> = reference.iter().map(|s| (s.clone(), true)).collect();
        let t = best(|| {
            for w in work.iter_mut().take(lost) {
                w.1 = false;
            }
            rs.reconstruct_data(black_box(&mut work)).unwrap();
        });
        for (w, r) in work.iter().zip(&reference) {
            assert_eq!(&w.0, r, "erasure rebuilt wrong data");
        }
        t
    };
    let r1 = rebuild(1);
    let rm = rebuild(m);
    (gib_s(k * SHARD, enc), gib_s(k * SHARD, r1), gib_s(k * SHARD, rm))
}

fn simd(k: usize, m: usize) -> (f64, f64, f64) {
    use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
    let shards = data(k);
    let mut enc = ReedSolomonEncoder::new(k, m, SHARD).unwrap();
    let parity: Vec<Vec<u8>>;
    let t_enc = best(|| {
        enc.reset(k, m, SHARD).unwrap();
        for s in &shards {
            enc.add_original_shard(s).unwrap();
        }
        let r = enc.encode().unwrap();
        black_box(r.recovery(0));
    });
    {
        enc.reset(k, m, SHARD).unwrap();
        for s in &shards {
            enc.add_original_shard(s).unwrap();
        }
        parity = enc.encode().unwrap().recovery_iter().map(<[u8]>::to_vec).collect::<Vec<_>>();

    }
    let mut dec = ReedSolomonDecoder::new(k, m, SHARD).unwrap();
    let mut rebuild = |lost: usize| {
        let t = best(|| {
            dec.reset(k, m, SHARD).unwrap();
            for (i, s) in shards.iter().enumerate().skip(lost) {
                dec.add_original_shard(i, s).unwrap();
            }
            for (i, p) in parity.iter().enumerate().take(lost) {
                dec.add_recovery_shard(i, p).unwrap();
            }
            let r = dec.decode().unwrap();
            black_box(r.restored_original(0));
        });
        dec.reset(k, m, SHARD).unwrap();
        for (i, s) in shards.iter().enumerate().skip(lost) {
            dec.add_original_shard(i, s).unwrap();
        }
        for (i, p) in parity.iter().enumerate().take(lost) {
            dec.add_recovery_shard(i, p).unwrap();
        }
        let r = dec.decode().unwrap();
        for (i, s) in shards.iter().enumerate().take(lost) {
            assert_eq!(r.restored_original(i).unwrap(), &s[..], "simd rebuilt wrong data");
        }
        t
    };
    let r1 = rebuild(1);
    let rm = rebuild(m);
    (gib_s(k * SHARD, t_enc), gib_s(k * SHARD, r1), gib_s(k * SHARD, rm))
}

fn main() {
    let accel = if cfg!(feature = "simd-accel") { "simd-accel" } else { "pure Rust" };
    println!("1 MiB shards, one thread, best of {REPS}; GiB/s of stripe data (k x shard)");
    println!("| crate | k+M | encode | rebuild 1 lost | rebuild M lost |");
    println!("|---|---|---|---|---|");
    for (k, m) in [(4, 1), (4, 2), (8, 2)] {
        let (e, r1, rm) = erasure(k, m);
        println!("| reed-solomon-erasure 6.0 ({accel}) | {k}+{m} | {e:.2} | {r1:.2} | {rm:.2} |");
        let (e, r1, rm) = simd(k, m);
        println!("| reed-solomon-simd 3.1 | {k}+{m} | {e:.2} | {r1:.2} | {rm:.2} |");
    }
}

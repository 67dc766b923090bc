#!/usr/bin/env bash
# Fuzz every decoder of on-media bytes (label, record header with file info,
# parity record header, catalog) and of what an NBD server sends (nbd_reply: the pipe's reply
# parser), and restore of a mutated set (restore_tree: nothing outside the
# destination may change; needs root for its chroot jail) with cargo fuzz,
# each for SECONDS (default 60). CI runs a short bounded pass; run longer by
# hand: scripts/fuzz.sh 3600.
# cargo fuzz needs nightly features; the machine's stable toolchain allows
# them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cargo run --quiet --example fuzz_seeds
status=0
for target in label record parity catalog nbd_reply restore_tree; do
    echo "fuzz: $target for ${seconds}s"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
        >"fuzz/$target.log" 2>&1; then
        echo "fuzz: $target FAILED:"; tail -40 "fuzz/$target.log"; status=1
    fi
    grep -E "^Done|stat::number_of_executed_units|cov:.*DONE" "fuzz/$target.log" | tail -2
done
[ "$status" -eq 0 ] && echo "fuzz: no crashes"
exit "$status"

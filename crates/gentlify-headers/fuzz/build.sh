#!/usr/bin/env bash
# Builds gentlify-headers' fuzz targets (one per parser), so CI notices when they stop compiling.
# Running them is a separate, manual step:
#
#   cd crates/gentlify-headers/fuzz
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> -- -max_total_time=60
#
# cargo-fuzz needs nightly flags (-Zsanitizer=address, ...); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets rustc accept them. Cost measured on 2 cores: about 1.5 min from a cold
# target directory, a few seconds after that.
set -euo pipefail

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

# `--sanitizer address` is cargo-fuzz's default and needs the sanitizer runtime of the toolchain;
# should it be missing, fall back to an uninstrumented (but still libFuzzer-driven) build.
if ! RUSTC_BOOTSTRAP=1 cargo fuzz build -O; then
    echo "fuzz build with AddressSanitizer failed; retrying with --sanitizer none" >&2
    RUSTC_BOOTSTRAP=1 cargo fuzz build -O --sanitizer none
fi

echo "built fuzz targets: $(cargo fuzz list | tr '\n' ' ')"

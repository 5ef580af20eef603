#!/usr/bin/env bash
# The test suite: unit, kernel, model and CLI tests (the GPU ones on lavapipe where there is no
# hardware GPU), then the site built for wasm32 and tested in Chromium (WebGPU on SwiftShader).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Mesa's Vulkan loader warns without a runtime dir; give it a private one.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
cargo test --release
# A bounded fuzz run of the GGUF reader (60 s; no sanitizer, so the stable toolchain builds it),
# on a copy of the committed corpus.
corpus=$(mktemp -d)
cp fuzz/corpus/gguf/* "$corpus"/
if ! (cd fuzz && cargo fuzz run -O -s none gguf "$corpus" -- -max_total_time=60 -max_len=16384 -print_final_stats=1 >"$corpus.log" 2>&1); then
  tail -n 60 "$corpus.log"
  echo "fuzz: the GGUF reader failed; the reproducer is in fuzz/artifacts/gguf/" >&2
  exit 1
fi
grep -a '^stat::' "$corpus.log"
rm -rf "$corpus" "$corpus.log"

cargo build --release   # the CLI the browser tests compare against
trunk build --release
npm run -s test:browser

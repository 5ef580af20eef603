#!/usr/bin/env bash
# The test suite: unit, kernel, model and CLI tests (the GPU ones on lavapipe where there is no
# hardware GPU), then the site built for wasm32 and tested in Chromium (WebGPU on SwiftShader).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Mesa's Vulkan loader warns without a runtime dir; give it a private one.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
cargo test --release
cargo build --release   # the CLI the browser tests compare against
trunk build --release
npm run -s test:browser

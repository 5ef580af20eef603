#!/usr/bin/env bash
# The test suite: unit, kernel, model and CLI tests (the GPU ones on lavapipe where there is no
# hardware GPU), then the wasm32 build of the site.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Mesa's Vulkan loader warns without a runtime dir; give it a private one.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
cargo test --release
trunk build --release
echo "site built in dist/"

#!/usr/bin/env bash
# Builds the site and serves it on http://127.0.0.1:${PORT:-8080}/ (open it in a WebGPU browser).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
trunk build --release
port=${PORT:-8080}
echo "kvscope: serving dist/ at http://127.0.0.1:$port/"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory dist

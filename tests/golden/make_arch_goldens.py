"""llama.cpp's logits for kvscope's synthetic model of each architecture, as committed goldens.

    cargo test --release --test archs -- --ignored write_models      # target/synthetic/*.gguf
    bench/compare.sh --build-only                                     # llama.cpp in bench/.peer
    bench/.peer/venv/bin/python tests/golden/make_arch_goldens.py

Writes tests/golden/arch_<arch>.json: the ids fed, and the logits ([positions × V]) after every
4th position and the last, computed by llama.cpp's CPU backend on the same GGUF (F32 weights, so
its matrix products are f32 like kvscope's reference) with an f32 KV cache (type 0)."""

import json
import os
import sys

import llama_cpp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYN = os.path.join(ROOT, "target", "synthetic")


def main() -> None:
    ids = json.load(open(os.path.join(SYN, "ids.json")))
    for arch in ["llama", "qwen2", "qwen3", "gemma3"]:
        path = os.path.join(SYN, f"{arch}.gguf")
        llm = llama_cpp.Llama(model_path=path, n_ctx=128, n_batch=128, n_ubatch=128, logits_all=True,
                              n_threads=2, n_gpu_layers=0, type_k=0, type_v=0, verbose=False)
        llm.reset()
        llm.eval(ids)
        scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
        positions = list(range(0, len(ids), 4))
        if positions[-1] != len(ids) - 1:
            positions.append(len(ids) - 1)
        out = {
            "source": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}), CPU backend",
            "ids": ids,
            "positions": positions,
            "logits": [round(float(v), 6) for p in positions for v in scores[p]],
        }
        dest = os.path.join(ROOT, "tests", "golden", f"arch_{arch}.json")
        json.dump(out, open(dest, "w"))
        print(f"{arch}: {len(positions)} positions × {scores.shape[1]} logits -> {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""llama.cpp's greedy continuations of a few prompts on Gemma 3 270M Q4_K_M, as committed goldens.

    scripts/fetch-model.sh gemma
    bench/compare.sh --build-only                  # llama.cpp in bench/.peer
    bench/.peer/venv/bin/python tests/golden/make_gemma_goldens.py

Writes tests/golden/gemma.json: per prompt, its text, llama.cpp's token ids (BOS added, as the
file asks) and the ids of the greedy continuation from llama.cpp's CPU backend (f32 KV cache).
The last prompt is longer than the model's 512-position sliding window: a fact stated at its
start can be recalled at its end only through the full-attention layers."""

import json
import os
import sys

import llama_cpp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "www", "models", "gemma-3-270m-q4_k_m.gguf")
GEN = 12

FILLER = ("The river runs past the old mill, where the miller keeps his accounts in a ledger bound in "
          "green leather. Each morning he counts the sacks of grain, notes the weather, and writes the "
          "names of the farmers who brought them. ")
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Ingredients for a simple bread: flour, water,",
    "Remember this: the password for the vault is BLUE HERON 42.\n\n" + FILLER * 14
    + "\nQuestion: what is the password for the vault?\nAnswer: the password for the vault is",
]


def main() -> None:
    llm = llama_cpp.Llama(model_path=MODEL, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2,
                          n_gpu_layers=0, type_k=0, type_v=0, verbose=False)
    out = []
    for text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        gen = []
        for _ in range(GEN):
            last = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            tok = int(np.argmax(last))
            gen.append(tok)
            llm.eval([tok])
        out.append({"prompt": text, "ids": ids, "greedy": gen, "text": llm.detokenize(gen).decode("utf-8", "replace")})
        print(f"{len(ids)} prompt tokens -> {out[-1]['text']!r}", file=sys.stderr)
    dest = os.path.join(ROOT, "tests", "golden", "gemma.json")
    json.dump({"source": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}), CPU backend, f32 KV cache",
               "model": "gemma-3-270m-q4_k_m.gguf", "cases": out}, open(dest, "w"), indent=1)
    print(f"written: {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()

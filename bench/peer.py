"""llama.cpp (through llama-cpp-python) on the prompt `kvscope bench` uses: prefill and greedy
decode speed, printed as one JSON object. Run by bench/compare.sh; the Vulkan device or the CPU
backend is chosen there, by environment."""

import argparse
import json
import sys
import time

import llama_cpp
import numpy as np

# The text `kvscope bench` repeats into its prompt (src/bench.rs).
TEXT = ("The KV cache stores the keys and values of every token seen so far, so that each new token "
        "attends over them without recomputing the prefix. ")


def last_argmax(llm: llama_cpp.Llama) -> int:
    """The greedy token after the last `eval`: its one row of logits, read from the context (without
    `logits_all`, `Llama.eval` no longer copies them into `llm.scores`)."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded (99: all)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    llm = llama_cpp.Llama(model_path=a.model, n_gpu_layers=a.gpu_layers, n_ctx=a.prompt_tokens + a.gen_tokens + 16,
                          n_batch=512, n_ubatch=512, n_threads=a.threads, n_threads_batch=a.threads, verbose=True)
    base = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    prompt = (base * (a.prompt_tokens // len(base) + 1))[: a.prompt_tokens]

    # Warm-up: ggml's Vulkan backend compiles its pipelines on first use, one per shape (a 256-token
    # batch takes another mat-mul tile than a 64-token one); kvscope builds its own at load, before
    # its timings start. The same prompt and one decode step, untimed, compile them here.
    llm.reset()
    llm.eval(prompt)
    llm.eval(prompt[:1])
    llm.reset()

    t0 = time.perf_counter()
    llm.eval(prompt)
    tok = last_argmax(llm)
    prefill_s = time.perf_counter() - t0

    times = []
    out = [tok]
    for _ in range(a.gen_tokens):
        t = time.perf_counter()
        llm.eval([tok])
        tok = last_argmax(llm)
        times.append(time.perf_counter() - t)
        out.append(tok)
    decode_s = sum(times)
    print(json.dumps({
        "backend": "vulkan" if a.gpu_layers > 0 else "cpu",
        "llama_cpp_python": llama_cpp.__version__,
        "prompt_tokens": len(prompt),
        "gen_tokens": a.gen_tokens,
        "prefill_tokens_per_s": len(prompt) / prefill_s,
        "ttft_ms": prefill_s * 1e3,
        "decode_context": len(prompt),
        "decode_tokens_per_s": a.gen_tokens / decode_s,
        "tokens": out,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

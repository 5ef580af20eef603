#!/usr/bin/env python3
"""Token ids from llama.cpp's own tokenizer, the oracle for tests/tokenizer.rs.

For every model file in www/models, for the SmolLM2 vocabulary under other byte-level BPE
pre-tokenizers and for the Gemma 3 vocabulary with a space prefix (metadata-only copies of their
GGUFs with `tokenizer.ggml.pre` or `tokenizer.ggml.add_space_prefix` replaced), this
tokenizes a fixed list of strings with llama.cpp (`llama_tokenize(add_special=True,
parse_special=True)`), reads back each token's piece (`llama_token_to_piece(special=True)`) and
the detokenised text (`llama_detokenize(remove_special=False, unparse_special=True)`), and writes
tests/golden/tokenizer_<name>.json together with the vocabulary facts the engine reads (bos, eos,
eot, the end-of-generation set, add_bos).

Run with a Python that has llama-cpp-python, from anywhere:
    python tests/golden/make_tokenizer_goldens.py
"""

import ctypes
import json
import os
import random
import struct
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden")
MODELS = os.path.join(ROOT, "www", "models")
SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
# Byte-level BPE pre-tokenizers checked on the SmolLM2 vocabulary.
PRE_VARIANTS = ["default", "gpt-2", "llama-bpe", "qwen2", "stablelm2", "tekken", "starcoder", "smaug-bpe", "olmo"]

FIXED = [
    "Hello world",
    "The capital of France is",
    "hello",
    " hello",
    "  hello",
    "hello ",
    "hello  ",
    "   leading and trailing   ",
    "multiple    spaces   between     words",
    "a  b   c    d     e",
    "line one\nline two\n\nline four\n",
    "\n\nstarts with newlines",
    "tabs\tand\t\ttabs",
    "carriage\r\nreturn",
    "1234567890",
    "3.14159 and 2,718 and 1e-9 and 100000",
    "Numbers 1 22 333 4444 55555 666666",
    "Punctuation! Does it work? Yes, it does... (mostly); [maybe] {surely} <tags> \"quotes\" 'single'",
    "it's they're we've I'm you'll he'd don't",
    "IT'S THEY'RE WE'VE I'M YOU'LL HE'D",
    "Hello , world . How ' s it ?",
    "a ' b",
    "naïve café résumé Zürich Ærøskøbing",
    "Привет, мир! Как дела?",
    "日本語のテキストです。東京は大きい。",
    "中文文本，包括标点符号。",
    "한국어 텍스트입니다",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "Ελληνικά κείμενα",
    "Crabs 🦀 and naïve café ✓ 日本語",
    "emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🤖",
    "math ∑ ∫ √ ∞ ≠ ≤ ≥ ∂",
    "private use \ue000\U000f0000 and rare \U0002a6d6 \U0001d54f",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\nWaves",
    "<bos>twice",
    "text<eos>after",
    "<s>llama two</s>",
    "<table><tr><td>cell</td></tr></table>",
    "<unused0> and <mask>",
    "def f(x):\n    return x * 2  # comment\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "https://example.com/path?query=1&b=2#frag",
    "user@example.com",
    "aaaaaaaaaaaaaaaaaaaa",
    "=====",
    "==========",
    "----------------",
    "................",
    "!!!!!!!!",
    "________",
    "~~~~~~~~",
    "0000000000",
    "ababababababab",
    "hahahahahahaha",
    "mississippi",
    "aaa aa a aaaa",
    "ーーーーー",
    "............................................................",
    "",
    " ",
    "\n",
    "▁ already a visible space ▁▁",
]


def random_strings(n, seed):
    """Strings of characters chosen to make ties and repeats likely."""
    rng = random.Random(seed)
    alphabet = list("aaabbcde ==..--__!!?,'\n\t00123") + ["é", "日", "本", "🦀", "▁", "  ", "ab", "ba", "aa"]
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))))
    return out


def strings():
    return FIXED + random_strings(200, 20250101)


# GGUF value types and the byte size of the fixed-size ones.
GGUF_BOOL, GGUF_STRING, GGUF_ARRAY = 7, 8, 9
GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def metadata_copy(src, dst, overrides):
    """The GGUF's metadata with the values in `overrides` (str or bool) replaced, and no tensors."""
    data = open(src, "rb").read()
    assert data[:4] == b"GGUF", src
    version = struct.unpack_from("<I", data, 4)[0]
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    pos = 24

    def string(p):
        n = struct.unpack_from("<Q", data, p)[0]
        return data[p + 8 : p + 8 + n], p + 8 + n

    def skip(ty, p):
        if ty in GGUF_FIXED:
            return p + GGUF_FIXED[ty]
        if ty == GGUF_STRING:
            return string(p)[1]
        assert ty == GGUF_ARRAY, ty
        sub, n = struct.unpack_from("<IQ", data, p)
        p += 12
        if sub in GGUF_FIXED:
            return p + n * GGUF_FIXED[sub]
        for _ in range(n):
            p = skip(sub, p)
        return p

    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, 0, n_kv))
    for _ in range(n_kv):
        key, p = string(pos)
        ty = struct.unpack_from("<I", data, p)[0]
        end = skip(ty, p + 4)
        new = overrides.get(key.decode())
        if isinstance(new, bool):
            out += data[pos:p] + struct.pack("<IB", GGUF_BOOL, new)
        elif isinstance(new, str):
            out += data[pos:p] + struct.pack("<IQ", GGUF_STRING, len(new.encode())) + new.encode()
        else:
            out += data[pos:end]
        pos = end
    out += b"\0" * (-len(out) % 32)  # the (empty) tensor data starts aligned
    open(dst, "wb").write(bytes(out))


def run(path, llama_cpp):
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    def piece(t):
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
        assert 0 <= n <= len(buf), (t, n)
        return buf.raw[:n]

    def detokenize(ids):
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, True)
        assert 0 <= n <= size, n
        return buf.raw[:n]

    cases = []
    for text in strings():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        cases.append({
            "text": text,
            "ids": ids,
            "pieces": [piece(t).hex() for t in ids],
            "detokenized": detokenize(ids).decode("utf-8", errors="replace"),
        })
    null = lambda t: None if t < 0 else t  # noqa: E731
    facts = {
        "n_vocab": n_vocab,
        "bos": null(llama_cpp.llama_vocab_bos(vocab)),
        "eos": null(llama_cpp.llama_vocab_eos(vocab)),
        "eot": null(llama_cpp.llama_vocab_eot(vocab)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)],
    }
    del llm
    return facts, cases


def main():
    import llama_cpp  # noqa: E402

    # (golden name, model file, metadata overrides)
    jobs = []
    for name in sorted(os.listdir(MODELS)):
        if name.endswith(".gguf"):
            jobs.append((name[: -len(".gguf")], name, {}))
    if os.path.exists(os.path.join(MODELS, SMOLLM)):
        jobs += [(f"smollm2-vocab-pre-{pre}", SMOLLM, {"tokenizer.ggml.pre": pre}) for pre in PRE_VARIANTS]
    if os.path.exists(os.path.join(MODELS, GEMMA)):
        # A SentencePiece vocabulary that puts a space before the text, as Llama 2's does.
        jobs.append(("gemma3-vocab-space-prefix", GEMMA, {"tokenizer.ggml.add_space_prefix": True}))

    tmp = tempfile.mkdtemp()
    for name, model, overrides in jobs:
        path = os.path.join(MODELS, model)
        if overrides:
            path = os.path.join(tmp, name + ".gguf")
            metadata_copy(os.path.join(MODELS, model), path, overrides)
        facts, cases = run(path, llama_cpp)
        out = {
            "oracle": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
            "model": model,
            "overrides": overrides,
            "vocab": facts,
        }
        dst = os.path.join(GOLDEN, f"tokenizer_{name}.json")
        # One string per line, so that a change shows as the strings it changes.
        head = json.dumps(out, ensure_ascii=False)
        lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
        with open(dst, "w", encoding="utf-8") as f:
            f.write(head[:-1] + ', "cases": [\n' + lines + "\n]}\n")
        byte_fallback = sum(1 for c in cases for p in c["pieces"] if len(p) == 2 and int(p, 16) >= 0x80)
        print(f"{dst}: {len(cases)} strings, {sum(len(c['ids']) for c in cases)} tokens, "
              f"{byte_fallback} single-byte pieces >= 0x80")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpus for the gguf fuzz target: small valid GGUF files (every metadata value
type; a complete one-layer llama model with a six-token vocabulary)."""
import pathlib
import struct

out = pathlib.Path(__file__).parent / "corpus" / "gguf"
tok_out = pathlib.Path(__file__).parent / "corpus" / "tokenizer"
out.mkdir(parents=True, exist_ok=True)


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack("<I", t) + payload


def arr(t, items):
    return struct.pack("<IQ", t, len(items)) + b"".join(items)


def gguf(kvs, tensors, align=32):
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    data = b""
    table = b""
    for name, dims, ty, blob in tensors:
        off = len(data)
        table += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ty, off)
        data += blob
        data += b"\0" * (-len(data) % align)
    head += table
    head += b"\0" * (-len(head) % align)
    return head + data


every_type = gguf(
    [
        kv("u8", 0, b"\x07"), kv("i8", 1, b"\xff"), kv("u16", 2, struct.pack("<H", 9)), kv("i16", 3, struct.pack("<h", -9)),
        kv("u32", 4, struct.pack("<I", 1)), kv("i32", 5, struct.pack("<i", -1)), kv("f32", 6, struct.pack("<f", 0.5)),
        kv("bool", 7, b"\x01"), kv("str", 8, s("x")), kv("arr", 9, arr(4, [struct.pack("<I", 1)])),
        kv("nested", 9, arr(9, [arr(8, [s("a")])])), kv("u64", 10, struct.pack("<Q", 2)), kv("i64", 11, struct.pack("<q", -2)),
        kv("f64", 12, struct.pack("<d", 0.25)),
    ],
    [("t", [4], 0, b"\0" * 16)],
)
(out / "every-type.gguf").write_bytes(every_type)

d, f, v = 32, 32, 6
tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab"]
f32 = lambda n: struct.pack(f"<{n}f", *([0.01] * n))
q8 = lambda n: (struct.pack("<e", 0.01) + bytes(range(32))) * (n // 32)
tensors = [("token_embd.weight", [d, v], 8, q8(d * v)), ("output_norm.weight", [d], 0, f32(d))]
for n, dims in [("attn_norm", [d]), ("attn_q", [d, d]), ("attn_k", [d, d]), ("attn_v", [d, d]), ("attn_output", [d, d]),
                ("ffn_norm", [d]), ("ffn_gate", [d, f]), ("ffn_up", [d, f]), ("ffn_down", [f, d])]:
    count = dims[0] * (dims[1] if len(dims) > 1 else 1)
    tensors.append((f"blk.0.{n}.weight", dims, 0 if len(dims) == 1 else 8, f32(count) if len(dims) == 1 else q8(count)))
model = gguf(
    [
        kv("general.architecture", 8, s("llama")), kv("general.name", 8, s("seed")),
        kv("llama.block_count", 4, struct.pack("<I", 1)), kv("llama.context_length", 4, struct.pack("<I", 64)),
        kv("llama.embedding_length", 4, struct.pack("<I", d)), kv("llama.feed_forward_length", 4, struct.pack("<I", f)),
        kv("llama.attention.head_count", 4, struct.pack("<I", 1)), kv("llama.attention.head_count_kv", 4, struct.pack("<I", 1)),
        kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)), kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
        kv("tokenizer.ggml.model", 8, s("gpt2")), kv("tokenizer.ggml.pre", 8, s("smollm")),
        kv("tokenizer.ggml.tokens", 9, arr(8, [s(t) for t in tokens])),
        kv("tokenizer.ggml.token_type", 9, arr(5, [struct.pack("<i", 3)] * 3 + [struct.pack("<i", 1)] * 3)),
        kv("tokenizer.ggml.merges", 9, arr(8, [s("a b")])),
        kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2)),
        kv("tokenizer.chat_template", 8, s("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}")),
    ],
    tensors,
)
(out / "llama-1-layer.gguf").write_bytes(model)
tok_out.mkdir(parents=True, exist_ok=True)
(tok_out / "llama-1-layer.gguf").write_bytes(model)
print("\n".join(f"{p.name}: {p.stat().st_size} bytes" for p in sorted(out.iterdir())))

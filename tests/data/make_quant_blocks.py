#!/usr/bin/env python3
"""Writes tests/data/quant_blocks.bin: random ggml blocks of every type kvscope decodes, with the
values that the `gguf` package's numpy dequantisers (gguf.quants, independent of kvscope) give
for them.

The bytes are uniform random, except the f16 scale fields, which are replaced by finite f16
values of moderate size (|v| in [2^-8, 4], either sign, some zero, some f16 subnormals) so that
no NaN or infinity appears; F16 and F32 data are such values throughout.

File layout, little-endian, one record per type:
    u32 ggml type id | u32 elements n | u32 bytes m | m bytes of blocks | n f32 values

Run from the repository root: python3 tests/data/make_quant_blocks.py
"""

import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# type: (elements per block, bytes per block, byte offsets of the f16 fields in a block, blocks)
FORMATS = {
    T.F32: (1, 4, [], 64),
    T.F16: (1, 2, [0], 64),
    T.Q4_0: (32, 18, [0], 8),
    T.Q4_1: (32, 20, [0, 2], 8),
    T.Q5_0: (32, 22, [0], 8),
    T.Q5_1: (32, 24, [0, 2], 8),
    T.Q8_0: (32, 34, [0], 8),
    T.Q2_K: (256, 84, [80, 82], 4),
    T.Q3_K: (256, 110, [108], 4),
    T.Q4_K: (256, 144, [0, 2], 4),
    T.Q5_K: (256, 176, [0, 2], 4),
    T.Q6_K: (256, 210, [208], 4),
}


def moderate(rng, n, dtype):
    """n finite values of magnitude 2^-8 .. 4, random sign; about one in sixteen zero and, for
    f16, one in eight subnormal (2^-24 .. 2^-14, as most Q6_K scales of real models are)."""
    mag = np.exp2(rng.uniform(-8.0, 2.0, n))
    if dtype == np.float16:
        mag = np.where(rng.random(n) < 1 / 8, np.exp2(rng.uniform(-24.0, -14.0, n)), mag)
    v = (mag * rng.choice([-1.0, 1.0], n)).astype(dtype)
    v[rng.random(n) < 1 / 16] = 0
    return v


def main():
    rng = np.random.default_rng(20240613)
    out = bytearray()
    for ty, (elems, size, halves, blocks) in FORMATS.items():
        if ty == T.F32:
            data = moderate(rng, blocks, np.float32).view(np.uint8)
        else:
            data = rng.integers(0, 256, (blocks, size), dtype=np.uint8)
            for off in halves:
                data[:, off : off + 2] = moderate(rng, blocks, np.float16).view(np.uint8).reshape(blocks, 2)
            # Every type's first block: a subnormal first scale (−3 · 2^-24 · 2^7).
            if halves:
                data[0, halves[0] : halves[0] + 2] = np.array([-3 * 2.0**-17], dtype=np.float16).view(np.uint8)
            data = data.reshape(-1)
        values = quants.dequantize(data, ty).astype(np.float32).reshape(-1)
        n = elems * blocks
        assert values.size == n and data.size == size * blocks, ty.name
        assert np.isfinite(values).all(), ty.name
        out += struct.pack("<III", int(ty), n, data.size)
        out += data.tobytes()
        out += values.astype("<f4").tobytes()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant_blocks.bin")
    with open(path, "wb") as f:
        f.write(out)
    print(f"{path}: {len(out)} bytes, {len(FORMATS)} types")


if __name__ == "__main__":
    main()

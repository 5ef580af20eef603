// What both forms of attention's first pass read and write (attention.wgsl, the workgroup form;
// attention_online.wgsl, the online form), prepended to each after common.wgsl: their params,
// bindings, cache loads and the positions a token attends. Records in `part` per (token, head,
// split): (m, l, 0, 0), then the d_h/4 vec4s of o; attention_merge.wgsl reads them.

override GROUP: u32;  // G ≤ 4 query heads per workgroup, dividing h / h_kv (Q = TILE_TOKENS per workgroup)

struct Params {
    n_heads: u32,         // h
    n_kv_heads: u32,      // h_kv
    att_stride: u32,      // T: row length of `att` (the context)
    att_offset: u32,      // elements: this layer's slice, l · h · T
    scale: f32,           // 1 / sqrt(d_h) (the model's)
    split: u32,           // S: positions per split (the workgroup form: Q·S ≤ SCORE_VEC4S)
    n_splits: u32,        // ⌈T / S⌉
    window: u32,          // W: positions attended on a sliding-window layer; 0: all
    rows: u32,            // R: cache rows
    eps: f32,             // fresh with qk_norm: the head norm's epsilon
    scales: u32,          // a block cache (kv_q8_0, kv_q4_0): the word where its blocks' scales start
}

@group(0) @binding(0) var<storage, read_write> part: array<vec4<f32>>;  // [B × h × n_splits × (1 + d_h/4)]
@group(0) @binding(1) var<storage, read_write> att: array<f32>;         // [L × h × T] scores, then statistics
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;         // [B × (h + 2·h_kv) · d_h / 4]
// Cache rows as vec4s of f32, or (kv_f16) as 4 f16 packed in two u32, or ggml's blocks of 32
// values and one f16 scale d (kv_q8_0, kv_q4_0; `kv_cache.rs` has the layout); written here only
// in the fused decode (fresh), which a block cache does not take (kv_quantize.wgsl writes it).
//#if kv_blocks
@group(0) @binding(3) var<storage, read> k_cache: array<u32>;  // [R × h_kv·d_h / 4 (Q8_0) or / 8 (Q4_0)] codes, then [R × h_kv·d_h / 64] scales
@group(0) @binding(4) var<storage, read> v_cache: array<u32>;
// Vec4 i of a row-major [R × h_kv·d_h / 4] cache from its codes' word `w` and the word `s`
// holding its block's scale (block i / 8; two f16 scales a word):
//   Q8_0: x = d · q, q the signed byte k of w;
//   Q4_0: x = d · (q − 8), q the nibble: block word (i mod 8) mod 4, low nibbles for the block's
//         values 0..15, high for 16..31 (ggml's order).
fn dequant(w: u32, s: u32, i: u32) -> vec4<f32> {
    let d = unpack2x16float(s)[(i / 8u) % 2u];
//#if kv_q8_0
    let q = vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u), bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u);
    return d * vec4<f32>(q);
//#else
    let sh = ((i % 8u) / 4u) * 4u;
    let q = (vec4<u32>(w) >> vec4<u32>(sh, sh + 8u, sh + 16u, sh + 24u)) & vec4<u32>(15u);
    return d * (vec4<f32>(q) - 8.0);
//#endif
}
// The word of vec4 i's codes.
//#if kv_q8_0
fn code_word(i: u32) -> u32 { return i; }
//#else
fn code_word(i: u32) -> u32 { return (i / 8u) * 4u + i % 4u; }
//#endif
fn load_k(i: u32) -> vec4<f32> { return dequant(k_cache[code_word(i)], k_cache[p.scales + i / 16u], i); }
fn load_v(i: u32) -> vec4<f32> { return dequant(v_cache[code_word(i)], v_cache[p.scales + i / 16u], i); }
fn kv_round(v: vec4<f32>) -> vec4<f32> { return v; }
//#else
//#if kv_f16
//#if fresh
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec2<u32>>;  // [R × h_kv · d_h / 4]
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec2<u32>>;  // [R × h_kv · d_h / 4]
fn store_k(i: u32, v: vec4<f32>) { k_cache[i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw)); }
fn store_v(i: u32, v: vec4<f32>) { v_cache[i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw)); }
//#else
@group(0) @binding(3) var<storage, read> k_cache: array<vec2<u32>>;     // [R × h_kv · d_h / 4]
@group(0) @binding(4) var<storage, read> v_cache: array<vec2<u32>>;     // [R × h_kv · d_h / 4]
//#endif
fn load_k(i: u32) -> vec4<f32> { let w = k_cache[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn load_v(i: u32) -> vec4<f32> { let w = v_cache[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
// A value as the cache keeps it: rounded to f16 (nearest even).
fn kv_round(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(pack2x16float(v.xy)), unpack2x16float(pack2x16float(v.zw)));
}
//#else
//#if fresh
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<f32>>;  // [R × h_kv · d_h / 4]
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<f32>>;  // [R × h_kv · d_h / 4]
fn store_k(i: u32, v: vec4<f32>) { k_cache[i] = v; }
fn store_v(i: u32, v: vec4<f32>) { v_cache[i] = v; }
//#else
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;     // [R × h_kv · d_h / 4]
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;     // [R × h_kv · d_h / 4]
//#endif
fn load_k(i: u32) -> vec4<f32> { return k_cache[i]; }
fn load_v(i: u32) -> vec4<f32> { return v_cache[i]; }
fn kv_round(v: vec4<f32>) -> vec4<f32> { return v; }
//#endif
//#endif
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(6) var<uniform> step: Step;

// The positions token t of the chunk attends: [lo, n).
fn attended(t: u32) -> vec2<u32> {
    let n = step.pos + t + 1u;
    return vec2<u32>(select(0u, n - min(n, p.window), p.window > 0u), n);
}

// Workgroup wg's share: the G query heads h0 = gx·G .. h0+G−1 over split sx (positions from
// s0 = sx·S), for the tile's tokens ta..=tz, and the rows j0..j1 of the split that any of them
// attends. None (j0 ≥ j1) where the split is outside every token's positions or the tile is past
// the chunk: the workgroup exits.
struct Share { gx: u32, sx: u32, ta: u32, tz: u32, s0: u32, j0: u32, j1: u32 }

fn share(wg: vec3<u32>) -> Share {
    let n_groups = p.n_heads / GROUP;
    var w: Share;
    w.gx = wg.x % n_groups;
    w.sx = wg.x / n_groups;
    w.ta = wg.z * TILE_TOKENS;
    w.tz = min(w.ta + TILE_TOKENS, step.n) - 1u;
    w.s0 = w.sx * p.split;
    w.j0 = max(w.s0, attended(w.ta).x);
    w.j1 = select(min(w.s0 + p.split, attended(w.tz).y), 0u, w.ta >= step.n);
    return w;
}

//#if fresh
// The fused decode step (instead of rope_kv.wgsl before it): q and this step's k and v arrive raw
// in the qkv row. Each q head is normed (qk_norm) and turned by RoPE here, at the step's position
// (0 under FLAW_ROPE_POS_0). The split holding that position reads its row from `key`/`value`,
// which compute it the same way (k normed and turned, both rounded as the cache keeps them), and
// the workgroup of the first query-head group of each KV head writes it to its cache row (none
// under FLAW_NO_APPEND, where the row is read from the cache as it is). No workgroup reads that
// row from the cache, so the write races nothing.
override NEOX: u32 = 0u;  // 1: RoPE turns (x[i], x[i + d_h/2]); 0: adjacent pairs
@group(0) @binding(7) var<storage, read> table: array<vec2<f32>>;       // [T × d_h/2] (cos, sin)
//#if qk_norm
@group(0) @binding(8) var<storage, read> q_norm: array<vec4<f32>>;      // [d_h / 4]
@group(0) @binding(9) var<storage, read> k_norm: array<vec4<f32>>;      // [d_h / 4]
fn norm_weight(r: u32, is_k: bool) -> vec4<f32> { return select(q_norm[r], k_norm[r], is_k); }
// 1 / sqrt(mean(x²) + eps) over the head whose vec4 0 is qkv[at].
fn head_scale(at: u32, hd4: u32) -> f32 {
    var ss = 0.0;
    for (var r = 0u; r < hd4; r++) { ss += dot(qkv[at + r], qkv[at + r]); }
    return inverseSqrt(ss / f32(4u * hd4) + p.eps);
}
//#else
fn norm_weight(r: u32, is_k: bool) -> vec4<f32> { return vec4<f32>(1.0); }
fn head_scale(at: u32, hd4: u32) -> f32 { return 1.0; }
//#endif

// The step's position as RoPE sees it.
fn angle_pos() -> u32 { return select(step.pos, 0u, step.flaw == FLAW_ROPE_POS_0); }

// Whether this split holds the step's own row, computed here: [j0, j1) ∋ pos, unless the flaw
// keeps k and v out of the cache.
fn holds_own_row(j0: u32, j1: u32) -> bool {
    return step.flaw != FLAW_NO_APPEND && step.pos >= j0 && step.pos < j1;
}

// Vec4 r of the head whose vec4 0 is qkv[at] (hd4 vec4s), times `scale` and the head norm's
// weights, turned by RoPE at table row `pos`: pairs (2i, 2i+1) of vec4 r, or (NEOX) the element
// and its partner half a head away, (x_i, x_{i+d_h/2}) → (x_i·c − x_{i+d_h/2}·s, x_i·s + x_{i+d_h/2}·c).
fn fresh(at: u32, r: u32, hd4: u32, scale: f32, is_k: bool, pos: u32) -> vec4<f32> {
    let half = 2u * hd4;
    let a = qkv[at + r] * scale * norm_weight(r, is_k);
    if (NEOX == 0u) {
        let c0 = table[pos * half + 2u * r];
        let c1 = table[pos * half + 2u * r + 1u];
        return vec4<f32>(a.x * c0.x - a.y * c0.y, a.x * c0.y + a.y * c0.x, a.z * c1.x - a.w * c1.y, a.z * c1.y + a.w * c1.x);
    }
    let q4 = hd4 / 2u;
    let first = r < q4;
    let rb = select(r - q4, r + q4, first);
    let b = qkv[at + rb] * scale * norm_weight(rb, is_k);
    let i = pos * half + 4u * (r % q4);
    let t0 = table[i];
    let t1 = table[i + 1u];
    let t2 = table[i + 2u];
    let t3 = table[i + 3u];
    let c = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
    let s = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
    return select(b * s + a * c, a * c - b * s, first);
}

// Vec4 r of the step's own k and v, made from the qkv row (k_at, v_at: the KV head's vec4 0
// there) as the cache would hold them.
fn own_k(k_at: u32, r: u32, hd4: u32, k_scale: f32) -> vec4<f32> { return kv_round(fresh(k_at, r, hd4, k_scale, true, angle_pos())); }
fn own_v(v_at: u32, r: u32) -> vec4<f32> { return kv_round(qkv[v_at + r]); }

// Vec4 r of the query head whose vec4 0 is qkv[at], normed and turned.
fn query_vec(at: u32, r: u32, hd4: u32, scale: f32) -> vec4<f32> { return fresh(at, r, hd4, scale, false, angle_pos()); }

// The first query-head group of a KV head writes the step's k and v to their cache row:
// invocation i writes vec4s i, i + n, … of the head.
fn append_own_row(i: u32, n: u32, kvh: u32, hd4: u32, k_at: u32, v_at: u32, k_scale: f32) {
    let at = (step.pos % p.rows) * p.n_kv_heads * hd4 + kvh * hd4;
    for (var r = i; r < hd4; r += n) {
        store_k(at + r, own_k(k_at, r, hd4, k_scale));
        store_v(at + r, own_v(v_at, r));
    }
}
//#else
// Without the fusion: q is turned (by rope_kv.wgsl) and every row read from the cache.
fn head_scale(at: u32, hd4: u32) -> f32 { return 1.0; }
fn holds_own_row(j0: u32, j1: u32) -> bool { return false; }
fn query_vec(at: u32, r: u32, hd4: u32, scale: f32) -> vec4<f32> { return qkv[at + r]; }
fn own_k(k_at: u32, r: u32, hd4: u32, k_scale: f32) -> vec4<f32> { return vec4<f32>(0.0); }
fn own_v(v_at: u32, r: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn append_own_row(i: u32, n: u32, kvh: u32, hd4: u32, k_at: u32, v_at: u32, k_scale: f32) {}
//#endif

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
}

@group(0) @binding(0) var<storage, read_write> part: array<vec4<f32>>;  // [B × h × n_splits × (1 + d_h/4)]
@group(0) @binding(1) var<storage, read_write> att: array<f32>;         // [L × h × T] scores, then statistics
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;         // [B × (h + 2·h_kv) · d_h / 4]
// Cache rows as vec4s of f32, or (kv_f16) as 4 f16 packed in two u32.
//#if kv_f16
@group(0) @binding(3) var<storage, read> k_cache: array<vec2<u32>>;     // [R × h_kv · d_h / 4]
@group(0) @binding(4) var<storage, read> v_cache: array<vec2<u32>>;     // [R × h_kv · d_h / 4]
fn load_k(i: u32) -> vec4<f32> { let w = k_cache[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn load_v(i: u32) -> vec4<f32> { let w = v_cache[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
//#else
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;     // [R × h_kv · d_h / 4]
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;     // [R × h_kv · d_h / 4]
fn load_k(i: u32) -> vec4<f32> { return k_cache[i]; }
fn load_v(i: u32) -> vec4<f32> { return v_cache[i]; }
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

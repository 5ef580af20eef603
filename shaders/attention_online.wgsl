// Attention pass 1 for CPU-type adapters (llvmpipe), in place of attention.wgsl: the same
// workgroups, inputs and outputs (see there) — workgroup x = split · n_groups + gx covers split
// sx (positions sx·S ..) and the G query heads h0 = gx·G .. h0+G−1 of KV head kvh; workgroup z
// the Q = TILE_TOKENS tokens Q·z .. Q·z+Q−1 of the chunk — arranged for a compiler that runs a workgroup's
// invocations as the SIMD lanes of one thread and loads each lane's value of a computed address
// on its own: what costs there is loads, so every K and V value is loaded once per workgroup
// and feeds the G·Q queries from registers.
//
// The workgroup is one subgroup of WG lanes; lane i takes the positions j ≡ j0 + i (mod WG) of
// the split and runs the softmax online over them, per query head g and token t:
//   s = q · k_j · scale,   m' = max(m, s),   c = e^(m − m'),   e = e^(s − m'),
//   l ← l·c + e,   o ← o·c + e·v_j,   m ← m'
// with m, l, s, c, e as vec4s over the G ≤ 4 heads and o as one vec4 per head and 4 head
// dimensions. Then the lanes fold into the split's record, with subgroup operations:
//   M = max_i m_i,   L = Σ_i l_i · e^(m_i − M),   O = Σ_i o_i · e^(m_i − M).
// No workgroup memory, no barriers. The queries (qN_$r_$t: head N, dimensions 4r .. 4r+3) and
// sums (oN_$r_$t) are named variables, repeated by `//#for` over the d_h/4 vec4s of a head
// (r < TILE_ROWS = d_h / 4) and the tile's tokens (t < TILE_TOKENS), so they stay in registers.

override WG: u32;     // lanes: at most the adapter's least subgroup size

// vec4 r of query head g from `at` (head h0's vec4 0 in a token's qkv row; `query_vec`: normed
// and turned in the fused decode); 0 past the group.
fn query(at: u32, g: u32, r: u32, scale: vec4<f32>) -> vec4<f32> {
    if (g >= GROUP) { return vec4<f32>(0.0); }
    return query_vec(at + g * TILE_ROWS, r, TILE_ROWS, scale[g]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let w = share(wg);
    if (w.j0 >= w.j1) { return; }
    let gx = w.gx; let sx = w.sx; let ta = w.ta; let tz = w.tz; let s0 = w.s0; let j0 = w.j0; let j1 = w.j1;
    let h0 = gx * GROUP;
    let kvh = h0 / (p.n_heads / p.n_kv_heads);
    let kv4 = p.n_kv_heads * TILE_ROWS;
    let row4 = (p.n_heads + 2u * p.n_kv_heads) * TILE_ROWS;  // vec4s per token row of qkv
    let rec = 1u + TILE_ROWS;  // vec4s per (token, head, split) record of `part`: (m, l, 0, 0), then o
    let head = p.n_splits * rec;
    let ts = p.att_stride;
    // This step's own row, where the split holds it (the fused decode: `own_k`, `own_v`),
    // written to the cache once.
    let own = holds_own_row(j0, j1);
    let k_at = (p.n_heads + kvh) * TILE_ROWS;
    let v_at = (p.n_heads + p.n_kv_heads + kvh) * TILE_ROWS;
    var k_scale = 1.0;
    if (own) { k_scale = head_scale(k_at, TILE_ROWS); }
    if (own && h0 % (p.n_heads / p.n_kv_heads) == 0u) { append_own_row(i, WG, kvh, TILE_ROWS, k_at, v_at, k_scale); }

    //#for t
    // Token $t of the tile: whether it is in the chunk and attends into this split, whether it is
    // the chunk's last (whose scores the view reads); its record in `part` for head h0 + g is
    // out$t + g · n_splits · rec.
    let tok$t = ta + $tu;
    let span$t = attended(min(tok$t, tz));
    let live$t = tok$t <= tz && s0 < span$t.y && s0 + p.split > span$t.x;
    let shown$t = live$t && tok$t + 1u == step.n;
    let out$t = ((tok$t * p.n_heads + h0) * p.n_splits + sx) * rec;
    let qa$t = min(tok$t, tz) * row4 + h0 * TILE_ROWS;
    var qsc$t = vec4<f32>(1.0);
    for (var g = 0u; g < GROUP; g++) { qsc$t[g] = head_scale(qa$t + g * TILE_ROWS, TILE_ROWS); }
    var m$t = vec4<f32>(-3.4e38);
    var l$t = vec4<f32>(0.0);
    //#end
    //#for r t
    let q0_$r_$t = query(qa$t, 0u, $ru, qsc$t);
    let q1_$r_$t = query(qa$t, 1u, $ru, qsc$t);
    let q2_$r_$t = query(qa$t, 2u, $ru, qsc$t);
    let q3_$r_$t = query(qa$t, 3u, $ru, qsc$t);
    var o0_$r_$t = vec4<f32>(0.0);
    var o1_$r_$t = vec4<f32>(0.0);
    var o2_$r_$t = vec4<f32>(0.0);
    var o3_$r_$t = vec4<f32>(0.0);
    //#end

    // jr: j's cache row, stepped with j (no division per row).
    var jr = (j0 + i) % p.rows;
    for (var j = j0 + i; j < j1; j += WG) {
        let kr = jr * kv4 + kvh * TILE_ROWS;
        // The step's own row from the qkv row, the others from the cache: one branch a row.
        let own_row = own && j == step.pos;
        //#for r
        var k$r: vec4<f32>;
        var v$r: vec4<f32>;
        //#end
        if (own_row) {
            //#for r
            k$r = own_k(k_at, $ru, TILE_ROWS, k_scale);
            v$r = own_v(v_at, $ru);
            //#end
        } else {
            //#for r
            k$r = load_k(kr + $ru);
            //#end
        }
        //#for t
        var s$t = vec4<f32>(0.0);
        //#end
        //#for r t
        s$t += vec4<f32>(dot(q0_$r_$t, k$r), dot(q1_$r_$t, k$r), dot(q2_$r_$t, k$r), dot(q3_$r_$t, k$r));
        //#end
        //#for t
        let in$t = j >= span$t.x && j < span$t.y;
        s$t = select(vec4<f32>(-3.4e38), s$t * p.scale, in$t);
        if (shown$t && in$t) {
            for (var g = 0u; g < GROUP; g++) { att[p.att_offset + (h0 + g) * ts + j] = s$t[g]; }
        }
        let mn$t = max(m$t, s$t);
        let c$t = exp(m$t - mn$t);
        let e$t = select(vec4<f32>(0.0), exp(s$t - mn$t), in$t);
        l$t = l$t * c$t + e$t;
        m$t = mn$t;
        //#end
        if (!own_row) {
            //#for r
            v$r = load_v(kr + $ru);
            //#end
        }
        //#for r t
        o0_$r_$t = o0_$r_$t * c$t.x + v$r * e$t.x;
        if (GROUP > 1u) { o1_$r_$t = o1_$r_$t * c$t.y + v$r * e$t.y; }
        if (GROUP > 2u) { o2_$r_$t = o2_$r_$t * c$t.z + v$r * e$t.z; }
        if (GROUP > 3u) { o3_$r_$t = o3_$r_$t * c$t.w + v$r * e$t.w; }
        //#end
        jr += WG;
        if (jr >= p.rows) { jr %= p.rows; }
    }

    // Fold the lanes (a lane without rows has m = −3.4e38, so weight 0; lane 0 stores).
    //#for t
    let big_m$t = subgroupMax(m$t);
    let w$t = exp(m$t - big_m$t);
    let big_l$t = subgroupAdd(l$t * w$t);
    if (live$t && i == 0u) {
        for (var g = 0u; g < GROUP; g++) { part[out$t + g * head] = vec4<f32>(big_m$t[g], big_l$t[g], 0.0, 0.0); }
    }
    //#end
    //#for r t
    let f0_$r_$t = subgroupAdd(o0_$r_$t * w$t.x);
    if (live$t && i == 0u) { part[out$t + 1u + $ru] = f0_$r_$t; }
    if (GROUP > 1u) {
        let f = subgroupAdd(o1_$r_$t * w$t.y);
        if (live$t && i == 0u) { part[out$t + head + 1u + $ru] = f; }
    }
    if (GROUP > 2u) {
        let f = subgroupAdd(o2_$r_$t * w$t.z);
        if (live$t && i == 0u) { part[out$t + 2u * head + 1u + $ru] = f; }
    }
    if (GROUP > 3u) {
        let f = subgroupAdd(o3_$r_$t * w$t.w);
        if (live$t && i == 0u) { part[out$t + 3u * head + 1u + $ru] = f; }
    }
    //#end
}

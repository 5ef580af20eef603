// Causal grouped-query attention, split over the cache (pass 1 of 2; attention_merge.wgsl is
// pass 2). Token t of the chunk (workgroup z) sits at position p = pos + t and attends over
// positions lo..=p (its own K and V were written just before): lo = 0, or p + 1 − W on a
// sliding-window layer (window W > 0). Position j lives in cache row j mod R (R = the context, or
// the ring of a sliding-window layer). Positions are cut into splits of S; workgroup
// x = split · n_groups + gx covers split sx and the G query heads h0 = gx·G .. h0+G−1 that share
// KV head kvh = h0 / (h / h_kv), so each K and V row is loaded once for the G of them. For its
// positions j ∈ [max(sx·S, lo), min((sx+1)·S, p+1)) it computes
//   s_g[j] = q_g · k[j, kvh] · scale
//   m_g    = max_j s_g[j]
//   e_g[j] = exp(s_g[j] − m_g)            (stored in `att`, rescaled by pass 2)
//   l_g    = Σ_j e_g[j]
//   o_g    = Σ_j e_g[j] · v[j, kvh]
// and stores (m_g, l_g, o_g) in `part`. Splits outside lo..=p exit at once, so the cost follows
// the positions attended, and long contexts spread over many workgroups.
// `att` rows: the chunk's last token writes its layer's [h × T] slice (read by the attention
// view); earlier tokens of a chunk use the scratch rows after the L layer slices.
// One workgroup of 64: rows are spread over the invocations for the scores (kept in workgroup
// memory as one vec4 of G heads per row, two rows per invocation at a time so that each load of
// q feeds both); for the weighted sum, 16 invocations each own 4 head dimensions (a vec4) and
// PHASES such groups split the rows.

// Specialised per model: loops over the head dimension and the G heads have constant bounds.
override HEAD_DIM: u32;  // d_h, a multiple of 4, at most 256
override GROUP: u32;     // G ≤ 4 query heads per workgroup, dividing h / h_kv
override PHASES: u32;    // 1, 2 or 4 groups of 16 lanes splitting the rows of the weighted sum

struct Params {
    n_heads: u32,         // h
    n_kv_heads: u32,      // h_kv
    att_stride: u32,      // T: row length of `att`
    att_offset: u32,      // elements: this layer's slice, l · h · T
    scratch_offset: u32,  // elements: L · h · T, where the scratch rows [B × h × T] start
    scale: f32,           // 1 / sqrt(d_h) (the model's)
    split: u32,           // S: positions per split, at most 256
    n_splits: u32,        // ⌈T / S⌉
    window: u32,          // W: positions attended on a sliding-window layer; 0: all
    rows: u32,            // R: cache rows
}

@group(0) @binding(0) var<storage, read_write> part: array<vec4<f32>>;  // [B × h × n_splits × (1 + d_h/4)]
@group(0) @binding(1) var<storage, read_write> att: array<f32>;         // [L × h × T] + [B × h × T]
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

var<workgroup> qs: array<vec4<f32>, 256>;    // [G × d_h / 4]
var<workgroup> acc: array<vec4<f32>, 256>;   // [PHASES ≤ 4 × 4 heads × 16 vec4]
var<workgroup> pr: array<vec4<f32>, 256>;    // [S ≤ 256 rows] scores, then e, of the G heads

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, lanes: Lanes) {
    enter(lanes);
    let i = lanes.i;
    let t = wg.z;
    let n_groups = p.n_heads / GROUP;
    let gx = wg.x % n_groups;
    let sx = wg.x / n_groups;
    let n = step.pos + t + 1u;
    let lo = select(0u, n - min(n, p.window), p.window > 0u);
    if (t >= step.n || sx * p.split >= n || (sx + 1u) * p.split <= lo) { return; }
    let j0 = max(sx * p.split, lo);
    let j1 = min((sx + 1u) * p.split, n);
    let hd4 = HEAD_DIM / 4u;
    let g_n = GROUP;
    let h0 = gx * g_n;
    let kvh = h0 / (p.n_heads / p.n_kv_heads);
    let kv4 = p.n_kv_heads * hd4;
    let ts = p.att_stride;
    // Row of `att` for head h0 + g is a0 + g · T.
    let a0 = select(p.scratch_offset + (t * p.n_heads + h0) * ts, p.att_offset + h0 * ts, t + 1u == step.n);

    let q0 = (t * (p.n_heads + 2u * p.n_kv_heads) + h0) * hd4;
    for (var k = i; k < g_n * hd4; k += 64u) { qs[k] = qkv[q0 + k]; }
    workgroupBarrier();

    // Scores of the G heads for rows j and j + 64 as vec4s (lanes past G unused), kept in `pr`:
    // each load of q (workgroup memory) feeds two rows.
    var m = vec4<f32>(-3.4e38);
    for (var j = j0 + i; j < j1; j += 128u) {
        let two = j + 64u < j1;
        let jb = select(j, j + 64u, two);
        let ka = (j % p.rows) * kv4 + kvh * hd4;
        let kb = (jb % p.rows) * kv4 + kvh * hd4;
        var s = vec4<f32>(0.0);
        var sb = vec4<f32>(0.0);
        for (var k = 0u; k < hd4; k++) {
            let ka4 = load_k(ka + k);
            let kb4 = load_k(kb + k);
            let q0 = qs[k];
            s.x += dot(q0, ka4);
            sb.x += dot(q0, kb4);
            if (g_n > 1u) { let q1 = qs[hd4 + k]; s.y += dot(q1, ka4); sb.y += dot(q1, kb4); }
            if (g_n > 2u) { let q2 = qs[2u * hd4 + k]; s.z += dot(q2, ka4); sb.z += dot(q2, kb4); }
            if (g_n > 3u) { let q3 = qs[3u * hd4 + k]; s.w += dot(q3, ka4); sb.w += dot(q3, kb4); }
        }
        s *= p.scale;
        sb *= p.scale;
        pr[j - j0] = s;
        m = max(m, s);
        if (two) {
            pr[jb - j0] = sb;
            m = max(m, sb);
        }
    }
    m = reduce_max(m, i);

    var l = vec4<f32>(0.0);
    for (var j = j0 + i; j < j1; j += 64u) {
        let e = exp(pr[j - j0] - m);
        pr[j - j0] = e;
        l += e;
        for (var g = 0u; g < g_n; g++) { att[a0 + g * ts + j] = e[g]; }
    }
    l = reduce_sum(l, i);

    // Weighted sum: lane i % 16 owns head dimensions 4·(c + lane) .. +3 for c = 0, 16, …; PHASES
    // groups of 16 lanes split the rows (row j to phase j mod PHASES) and add up through `acc`.
    // With one phase (CPU-type adapters) the row is the same in every active lane, so e[j] is
    // one load for all of them.
    let lane = i % 16u;
    let phase = select(i / 16u, 0u, PHASES == 1u);
    let in_phase = i < 16u * PHASES;
    let rec = 1u + hd4;  // vec4s per (token, head, split) record: (m, l, 0, 0), then o
    for (var c = 0u; c < hd4; c += 16u) {
        let d4 = c + lane;
        var o0 = vec4<f32>(0.0);
        var o1 = vec4<f32>(0.0);
        var o2 = vec4<f32>(0.0);
        var o3 = vec4<f32>(0.0);
        if (in_phase && d4 < hd4) {
            for (var j = j0 + phase; j < j1; j += PHASES) {
                let v = load_v((j % p.rows) * kv4 + kvh * hd4 + d4);
                let e = pr[j - j0];
                o0 += e.x * v;
                if (g_n > 1u) { o1 += e.y * v; }
                if (g_n > 2u) { o2 += e.z * v; }
                if (g_n > 3u) { o3 += e.w * v; }
            }
        }
        let out = ((t * p.n_heads + h0) * p.n_splits + sx) * rec + 1u + d4;  // head h0's o, vec4 d4
        let head = p.n_splits * rec;                                          // + g: head h0 + g
        if (PHASES == 1u) {
            // One phase holds whole sums: no exchange, no barrier.
            if (in_phase && d4 < hd4) {
                let o = array<vec4<f32>, 4>(o0, o1, o2, o3);
                for (var g = 0u; g < g_n; g++) { part[out + g * head] = o[g]; }
            }
        } else {
            if (in_phase) {
                acc[(phase * 4u) * 16u + lane] = o0;
                acc[(phase * 4u + 1u) * 16u + lane] = o1;
                acc[(phase * 4u + 2u) * 16u + lane] = o2;
                acc[(phase * 4u + 3u) * 16u + lane] = o3;
            }
            workgroupBarrier();
            if (i < 16u && d4 < hd4) {
                for (var g = 0u; g < g_n; g++) {
                    var o = acc[g * 16u + lane];
                    for (var f = 1u; f < PHASES; f++) { o += acc[(f * 4u + g) * 16u + lane]; }
                    part[out + g * head] = o;
                }
            }
            workgroupBarrier();
        }
    }
    if (i < g_n) {
        part[((t * p.n_heads + h0 + i) * p.n_splits + sx) * rec] = vec4<f32>(m[i], l[i], 0.0, 0.0);
    }
}

// Causal grouped-query attention, split over the cache (pass 1 of 2; attention_merge.wgsl is
// pass 2). Token t of the chunk sits at position p = pos + t and attends over positions lo..=p
// (its own K and V were written just before): lo = 0, or p + 1 − W on a sliding-window layer
// (window W > 0). Position j lives in cache row j mod R (R = the context T, or the ring of a
// sliding-window layer). Positions are cut into splits of S; workgroup x = split · n_groups + gx
// covers split sx and the G query heads h0 = gx·G .. h0+G−1 that share KV head
// kvh = h0 / (h / h_kv), for the Q tokens t = Q·z .. Q·z + Q − 1 of workgroup z (Q = `TILE_TOKENS`, the
// tile: 1, or 2 for prefill on CPU-type adapters without subgroups), so each K and V row is
// loaded once for the G·Q queries. (CPU-type adapters with subgroups run attention_online.wgsl.) For each token and its positions j ∈ [max(sx·S, lo), min((sx+1)·S, p+1)) it
// computes
//   s_g[j] = q_g · k[j, kvh] · scale
//   m_g    = max_j s_g[j]
//   e_g[j] = exp(s_g[j] − m_g)
//   l_g    = Σ_j e_g[j]
//   o_g    = Σ_j e_g[j] · v[j, kvh]
// and stores (m_g, l_g, o_g) in `part`. Splits outside every token's lo..=p exit at once, so the
// cost follows the positions attended, and long contexts spread over many workgroups.
// The chunk's last token also writes its scores s_g[j] to its layer's [h × T] slice of `att`,
// for the attention view (pass 2 adds the softmax statistics that normalise them).
// One workgroup of 64: rows are spread over the invocations for the scores (kept in workgroup
// memory as one vec4 of G heads per row and token, two rows per invocation at a time so that
// each load of q feeds both); for the weighted sum, 16 invocations each own 4 head dimensions
// (a vec4) and PHASES such groups split the rows. The per-token blocks repeat for each token of
// the tile (`kernels::expand_tiles`).

// Specialised per model: loops over the head dimension and the G heads have constant bounds.
override HEAD_DIM: u32;  // d_h, a multiple of 4, at most 256
override PHASES: u32;    // 1, 2 or 4 groups of 16 lanes splitting the rows of the weighted sum

var<workgroup> qs: array<vec4<f32>, QUERY_VEC4S>;  // [Q × G × d_h / 4] queries; then the weighted sum's exchange
var<workgroup> pr: array<vec4<f32>, SCORE_VEC4S>;  // [Q × S rows] scores, then e, of the G heads
//#if fresh
var<workgroup> kp: array<vec4<f32>, 64>;  // [d_h / 4] the step's own k, made here (fused decode)
var<workgroup> vp: array<vec4<f32>, 64>;  // [d_h / 4] and v
fn own_key(k: u32) -> vec4<f32> { return kp[k]; }
fn own_value(d4: u32) -> vec4<f32> { return vp[d4]; }
//#else
fn own_key(k: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn own_value(d4: u32) -> vec4<f32> { return vec4<f32>(0.0); }
//#endif

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, lanes: Lanes) {
    enter(lanes);
    let i = lanes.i;
    let w = share(wg);
    if (w.j0 >= w.j1) { return; }
    let gx = w.gx; let sx = w.sx; let ta = w.ta; let tz = w.tz; let s0 = w.s0; let j0 = w.j0; let j1 = w.j1;
    let hd4 = HEAD_DIM / 4u;
    let g_n = GROUP;
    let h0 = gx * g_n;
    let kvh = h0 / (p.n_heads / p.n_kv_heads);
    let kv4 = p.n_kv_heads * hd4;
    let ts = p.att_stride;
    let row4 = (p.n_heads + 2u * p.n_kv_heads) * hd4;  // vec4s per token row of qkv
    let rec = 1u + hd4;  // vec4s per (token, head, split) record of `part`: (m, l, 0, 0), then o
    //#for t
    // Token $t of the tile: whether it is in the chunk and attends into this split, whether it is
    // the chunk's last; its rows.
    let tok$t = ta + $tu;
    let span$t = attended(min(tok$t, tz));
    let live$t = tok$t <= tz && s0 < span$t.y && s0 + p.split > span$t.x;
    let shown$t = live$t && tok$t + 1u == step.n;
    // Its record in `part` for head h0 + g is out$t + g · n_splits · rec.
    let out$t = ((tok$t * p.n_heads + h0) * p.n_splits + sx) * rec;
    //#end

    // The group's queries (normed and turned here in the fused decode: `query_vec`), and this
    // step's own row where the split holds it (`own_k`, `own_v`, into kp and vp; written to the
    // cache once).
    var qsc = vec4<f32>(1.0);
    for (var g = 0u; g < g_n; g++) { qsc[g] = head_scale(ta * row4 + (h0 + g) * hd4, hd4); }
    for (var k = i; k < TILE_TOKENS * g_n * hd4; k += 64u) {
        let e = k % (g_n * hd4);
        qs[k] = query_vec(min(ta + k / (g_n * hd4), tz) * row4 + (h0 + e / hd4) * hd4, e % hd4, hd4, qsc[e / hd4]);
    }
    let own = holds_own_row(j0, j1);
    let k_at = (p.n_heads + kvh) * hd4;
    let v_at = (p.n_heads + p.n_kv_heads + kvh) * hd4;
    var k_scale = 1.0;
    if (own) { k_scale = head_scale(k_at, hd4); }
    if (own && h0 % (p.n_heads / p.n_kv_heads) == 0u) { append_own_row(i, 64u, kvh, hd4, k_at, v_at, k_scale); }
    //#if fresh
    if (own && i < hd4) {
        kp[i] = own_k(k_at, i, hd4, k_scale);
        vp[i] = own_v(v_at, i);
    }
    //#endif
    workgroupBarrier();

    // Scores of the G heads for rows j and j + 64 as vec4s (lanes past G unused), kept in `pr`
    // (−3.4e38 where the token does not attend the row): each load of K feeds every token of the
    // tile, each load of q both rows.
    //#for t
    var m$t = vec4<f32>(-3.4e38);
    //#end
    for (var j = j0 + i; j < j1; j += 128u) {
        let two = j + 64u < j1;
        let jb = select(j, j + 64u, two);
        let ka = (j % p.rows) * kv4 + kvh * hd4;
        let kb = (jb % p.rows) * kv4 + kvh * hd4;
        //#for t
        var sa$t = vec4<f32>(0.0);
        var sb$t = vec4<f32>(0.0);
        //#end
        for (var k = 0u; k < hd4; k++) {
            // The step's own row from kp (the cache's row is loaded and not used: no branch).
            let ka4 = select(load_k(ka + k), own_key(k), own && j == step.pos);
            let kb4 = select(load_k(kb + k), own_key(k), own && jb == step.pos);
            //#for t
            let q0_$t = qs[($tu * g_n) * hd4 + k];
            sa$t.x += dot(q0_$t, ka4);
            sb$t.x += dot(q0_$t, kb4);
            if (g_n > 1u) { let q = qs[($tu * g_n + 1u) * hd4 + k]; sa$t.y += dot(q, ka4); sb$t.y += dot(q, kb4); }
            if (g_n > 2u) { let q = qs[($tu * g_n + 2u) * hd4 + k]; sa$t.z += dot(q, ka4); sb$t.z += dot(q, kb4); }
            if (g_n > 3u) { let q = qs[($tu * g_n + 3u) * hd4 + k]; sa$t.w += dot(q, ka4); sb$t.w += dot(q, kb4); }
            //#end
        }
        //#for t
        let ina$t = j >= span$t.x && j < span$t.y;
        let inb$t = two && jb >= span$t.x && jb < span$t.y;
        sa$t = select(vec4<f32>(-3.4e38), sa$t * p.scale, ina$t);
        sb$t = select(vec4<f32>(-3.4e38), sb$t * p.scale, inb$t);
        pr[$tu * p.split + j - j0] = sa$t;
        m$t = max(m$t, sa$t);
        if (two) {
            pr[$tu * p.split + jb - j0] = sb$t;
            m$t = max(m$t, sb$t);
        }
        if (shown$t) {
            for (var g = 0u; g < g_n; g++) {
                if (ina$t) { att[p.att_offset + (h0 + g) * ts + j] = sa$t[g]; }
                if (inb$t) { att[p.att_offset + (h0 + g) * ts + jb] = sb$t[g]; }
            }
        }
        //#end
    }
    //#for t
    m$t = reduce_max(m$t, i);
    //#end

    //#for t
    var l$t = vec4<f32>(0.0);
    //#end
    for (var j = j0 + i; j < j1; j += 64u) {
        //#for t
        let in$t = j >= span$t.x && j < span$t.y;
        let e$t = select(vec4<f32>(0.0), exp(pr[$tu * p.split + j - j0] - m$t), in$t);
        pr[$tu * p.split + j - j0] = e$t;
        l$t += e$t;
        //#end
    }
    //#for t
    l$t = reduce_sum(l$t, i);
    //#end

    // Weighted sum: lane i % 16 owns head dimensions 4·(c + lane) .. +3 for c = 0, 16, …; PHASES
    // groups of 16 lanes split the rows (row j to phase j mod PHASES) and add up through `qs`.
    // With one phase (CPU-type adapters) the row is the same in every active lane, so e[j] is
    // one load for all of them.
    let lane = i % 16u;
    let phase = select(i / 16u, 0u, PHASES == 1u);
    let in_phase = i < 16u * PHASES;
    let head = p.n_splits * rec;
    for (var c = 0u; c < hd4; c += 16u) {
        let d4 = c + lane;
        //#for t
        var o$t = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
        //#end
        if (in_phase && d4 < hd4) {
            // jr: j's cache row, stepped with j instead of divided out per row (a division per
            // row was a fifth of the pass on llvmpipe).
            var jr = (j0 + phase) % p.rows;
            for (var j = j0 + phase; j < j1; j += PHASES) {
                let v = select(load_v(jr * kv4 + kvh * hd4 + d4), own_value(d4), own && j == step.pos);
                jr += PHASES;
                if (jr >= p.rows) { jr %= p.rows; }
                //#for t
                let e$t = pr[$tu * p.split + j - j0];
                o$t[0] += e$t.x * v;
                if (g_n > 1u) { o$t[1] += e$t.y * v; }
                if (g_n > 2u) { o$t[2] += e$t.z * v; }
                if (g_n > 3u) { o$t[3] += e$t.w * v; }
                //#end
            }
        }
        //#for t
        if (PHASES == 1u) {
            // One phase holds whole sums: no exchange, no barrier.
            if (live$t && in_phase && d4 < hd4) {
                for (var g = 0u; g < g_n; g++) { part[out$t + 1u + d4 + g * head] = o$t[g]; }
            }
        } else {
            // qs, free since the scores, takes [PHASES × 4 heads × 16 vec4].
            workgroupBarrier();
            if (in_phase) {
                for (var g = 0u; g < 4u; g++) { qs[(phase * 4u + g) * 16u + lane] = o$t[g]; }
            }
            workgroupBarrier();
            if (live$t && i < 16u && d4 < hd4) {
                for (var g = 0u; g < g_n; g++) {
                    var o = qs[g * 16u + lane];
                    for (var f = 1u; f < PHASES; f++) { o += qs[(f * 4u + g) * 16u + lane]; }
                    part[out$t + 1u + d4 + g * head] = o;
                }
            }
        }
        //#end
    }
    //#for t
    if (live$t && i < g_n) { part[out$t + i * head] = vec4<f32>(m$t[i], l$t[i], 0.0, 0.0); }
    //#end
}

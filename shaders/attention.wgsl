// Attention of the newest query over every cached position, causal by construction (the cache
// holds positions 0..=pos only), grouped-query: query head h reads KV head h / (h / h_kv).
//   s[t]   = q_h · k[t, kvh] / sqrt(d_h)        t = 0..=pos
//   att[t] = softmax_t(s)                       (kept in `att`, one slice per layer, for the
//                                               attention view)
//   out_h  = Σ_t att[t] · v[t, kvh]
// One workgroup of 64 per query head.

struct Params {
    n_heads: u32,     // h
    n_kv_heads: u32,  // h_kv
    head_dim: u32,    // d_h
    att_stride: u32,  // T: row length of `att`
    att_offset: u32,  // elements: this layer's slice, l · h · T
    scale: f32,       // 1 / sqrt(d_h)
}

struct Step {
    pos: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // [h · d_h]
@group(0) @binding(1) var<storage, read_write> att: array<f32>;  // [L × h × T]
@group(0) @binding(2) var<storage, read> qkv: array<f32>;        // q = qkv[0 .. h · d_h]
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;    // [T × h_kv · d_h]
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;    // [T × h_kv · d_h]
@group(0) @binding(5) var<uniform> p: Params;
@group(0) @binding(6) var<uniform> step: Step;

var<workgroup> red: array<f32, 64>;

fn reduce_max(v: f32, t: u32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) { red[t] = max(red[t], red[t + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, t: u32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) { red[t] += red[t + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wg.x;
    let hd = p.head_dim;
    let kv_dim = p.n_kv_heads * hd;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let n = step.pos + 1u;
    let a = p.att_offset + h * p.att_stride;

    var m = -3.4e38;
    for (var j = t; j < n; j += 64u) {
        let k = j * kv_dim + kvh * hd;
        var s = 0.0;
        for (var i = 0u; i < hd; i++) { s += qkv[h * hd + i] * k_cache[k + i]; }
        s *= p.scale;
        att[a + j] = s;
        m = max(m, s);
    }
    m = reduce_max(m, t);

    var sum = 0.0;
    for (var j = t; j < n; j += 64u) {
        let e = exp(att[a + j] - m);
        att[a + j] = e;
        sum += e;
    }
    sum = reduce_sum(sum, t);
    for (var j = t; j < n; j += 64u) { att[a + j] /= sum; }
    storageBarrier();

    for (var i = t; i < hd; i += 64u) {
        var o = 0.0;
        for (var j = 0u; j < n; j++) { o += att[a + j] * v_cache[j * kv_dim + kvh * hd + i]; }
        out[h * hd + i] = o;
    }
}

// Declarations shared by every kernel, prepended to each module (before its own file):
// the per-pass `Step` uniform and the reductions over a 64-invocation workgroup.

// Where a pass runs: `n` tokens at positions pos..pos + n. Decoding binds one slot per cache row
// (n = 1) by dynamic offset; prefill writes one slot per chunk. Mirrors `params::Step`.
struct Step {
    pos: u32,   // position of the chunk's first token
    n: u32,     // tokens in the chunk
    flaw: u32,  // FLAW_NONE, or a teaching flaw's code (`core::flaw`), read by rope_kv
}

// Workgroup-wide max and sum of a vec4 over 64 invocations (i = local_invocation_index; every
// invocation calls, every invocation gets the result). A kernel that calls them sets `sg_lane`
// and `sg_size` from its `Lanes` input first (`enter`).
var<workgroup> red: array<vec4<f32>, 64>;

fn reduce_max(v: vec4<f32>, i: u32) -> vec4<f32> { return reduce(v, i, true); }
fn reduce_sum(v: vec4<f32>, i: u32) -> vec4<f32> { return reduce(v, i, false); }

fn combine(a: vec4<f32>, b: vec4<f32>, op_max: bool) -> vec4<f32> {
    return select(a + b, max(a, b), op_max);
}

// The invocation's place in its workgroup (and subgroup), as an entry point input.
struct Lanes {
    @builtin(local_invocation_index) i: u32,
//#if subgroups
    @builtin(subgroup_invocation_id) sg_id: u32,
    @builtin(subgroup_size) sg_n: u32,
//#endif
}

//#if subgroups
var<private> sg_lane: u32;
var<private> sg_size: u32;

fn enter(l: Lanes) {
    sg_lane = l.sg_id;
    sg_size = l.sg_n;
}

// Reduce within each subgroup; its first invocation keeps the result in its slot (the others
// the identity); then each subgroup folds the 64 slots, lane k taking slots k, k + size, …, and
// reduces once more: two barriers instead of seven, with no assumption about which invocations
// share a subgroup.
fn reduce(v: vec4<f32>, i: u32, op_max: bool) -> vec4<f32> {
    let s = select(subgroupAdd(v), subgroupMax(v), op_max);
    let identity = select(vec4<f32>(0.0), vec4<f32>(-3.4e38), op_max);
    red[i] = select(identity, s, sg_lane == 0u);
    workgroupBarrier();
    var r = red[sg_lane];
    for (var k = sg_lane + sg_size; k < 64u; k += sg_size) { r = combine(r, red[k], op_max); }
    r = select(subgroupAdd(r), subgroupMax(r), op_max);
    workgroupBarrier();
    return r;
}
//#else
fn enter(l: Lanes) {}

// A tree in workgroup memory: 32, 16, …, 1.
fn reduce(v: vec4<f32>, i: u32, op_max: bool) -> vec4<f32> {
    red[i] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (i < s) { red[i] = combine(red[i], red[i + s], op_max); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
//#endif

// 1 / sqrt(mean(x²) + eps) over n elements, from each invocation's partial sum of squares `ss`
// (RMSNorm's scale: rmsnorm.wgsl per token row, head_norm.wgsl per head).
fn rms_scale(ss: f32, i: u32, n: u32, eps: f32) -> f32 {
    return inverseSqrt(reduce_sum(vec4<f32>(ss, 0.0, 0.0, 0.0), i).x / f32(n) + eps);
}

// The gate's activation in a gated FFN (`Act::code`):
//   0: silu(g) = g / (1 + e^−g)                                  (SwiGLU)
//   1: gelu(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³)))    (GeGLU, tanh form)
fn activate(g: f32, act: u32) -> f32 {
    if (act == 1u) {
        return 0.5 * g * (1.0 + tanh_f32(0.7978846 * (g + 0.044715 * g * g * g)));
    }
    return g / (1.0 + exp(-g));
}

// tanh through exp, saturated so that e^(2|x|) stays finite (tanh(±9) = ±1 in f32).
fn tanh_f32(x: f32) -> f32 {
    let e = exp(2.0 * clamp(x, -9.0, 9.0));
    return (e - 1.0) / (e + 1.0);
}

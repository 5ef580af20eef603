//! Attention against the CPU, with `rope_kv` before it as the model records them: decode and
//! prefill chunks of 1, 2 and 4 tokens per workgroup, with and without a sliding window kept in
//! a ring, in both forms.

use super::*;
use crate::backend::cpu;
use crate::backend::gpu::ops::rope_kv::{self, RopeKvBuffers};
use crate::backend::gpu::ops::{project, Rows, Write};
use crate::backend::gpu::program::StepTable;
use crate::backend::gpu::shader::{slots, Slot};
use crate::backend::gpu::GpuOptions;
use crate::core::config::RopeSpec;
use crate::core::quant::GgmlType;
use crate::testing::*;

fn tuning(lanes: u32) -> Tuning {
    Tuning {
        matvec_rows: 1,
        matmul_rows: 1,
        matmul_tokens: 1,
        prefill_chunk: 32,
        attention_split: 256,
        attention_phases: 1,
        attention_tokens: 2,
        attention_lanes: lanes,
        attention_lane_tokens: 4,
    }
}

/// The online form takes as many prefill tokens per workgroup as its lane's registers allow
/// (`ONLINE_VEC4S`), and heads too wide for one token take the workgroup form.
#[test]
fn online_attention_fits_its_registers() {
    let plan = |h, hkv, hd| {
        let heads = Heads { n_heads: h, n_kv_heads: hkv, head_dim: hd };
        Plan::choose(&tuning(8), 8, heads, KvType::F32, 1024, 30, 0.125)
    };
    let smol = plan(9, 3, 64);
    assert_eq!((smol.decode.form, smol.decode.group, smol.chunk.tokens), (Form::Online { lanes: 8 }, 3, 2));
    let gemma = plan(4, 1, 256);
    assert_eq!(
        (gemma.decode.form, gemma.chunk.tokens),
        (Form::Workgroup { phases: 1 }, 1),
        "the workgroup form, where memory allows one token"
    );
    let qwen = plan(14, 2, 64);
    assert_eq!((qwen.decode.form, qwen.decode.group, qwen.chunk.tokens), (Form::Online { lanes: 8 }, 1, 4));
    for p in [smol, gemma, qwen] {
        let a = p.chunk;
        match a.form {
            Form::Online { .. } => assert!(2 * a.heads.head_dim / 4 * a.group * a.tokens <= ONLINE_VEC4S),
            Form::Workgroup { .. } => {
                assert!(a.tokens * a.group * a.heads.head_dim / 4 <= QUERY_VEC4S && a.tokens * a.split <= SCORE_VEC4S)
            }
        }
    }
}

/// One source per form, several variants: the plain variant names no subgroup built-in and no
/// packed-f16 cache; the tile is expanded; the bindings are the same in both forms.
#[test]
fn specialisation_of_both_forms() {
    let heads = Heads { n_heads: 9, n_kv_heads: 3, head_dim: 64 };
    let wg = Plan::choose(&tuning(0), 0, heads, KvType::F32, 1024, 30, 0.125);
    for a in [wg.decode, wg.chunk] {
        let plain = a.spec().source(false);
        let code: String = plain.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
        assert!(!code.contains("subgroup") && !code.contains("2x16float") && !plain.contains("//#"), "{}", a.spec().label);
        assert!(plain.contains("const QUERY_VEC4S: u32 = 256u;"));
    }
    let f16 = Plan::choose(&tuning(0), 0, heads, KvType::F16, 1024, 30, 0.125).decode.spec().source(true);
    assert!(f16.contains("unpack2x16float") && f16.contains("subgroupAdd"));
    let online = Plan::choose(&tuning(8), 8, heads, KvType::F16, 1024, 30, 0.125).chunk;
    let src = online.spec().source(true);
    assert!(src.contains("unpack2x16float") && src.contains("o2_15_1") && !src.contains("o2$r"), "{}", online.spec().label);
    use Slot::*;
    for s in [wg.chunk.spec().source(false), src] {
        assert_eq!(slots(&s), [Out, Out, In, In, In, Params, Step]);
    }
}

/// The attention tests' contexts: `gpus()` (the adapter's own shapes, on lavapipe the online
/// kernel; the plain GPU shapes) and the adapter's shapes without subgroups (the workgroup kernel
/// in its CPU shape, as a browser without subgroups runs it).
fn attention_gpus() -> Vec<GpuContext> {
    let mut all = gpus();
    if !all.is_empty() {
        let opts = GpuOptions { subgroups: false, ..Default::default() };
        all.push(pollster::block_on(GpuContext::with_options(opts)).expect("context without subgroups"));
    }
    all
}

/// A test's attention: the adapter's plan for T = `t` and `layers` layers, over splits of 32
/// rows with G = `group`.
fn plan(ctx: &GpuContext, heads: Heads, group: u32, t: usize, layers: usize) -> Plan {
    let p = Plan::new(ctx, heads, KvType::F32, t, layers, 1.0 / (heads.head_dim as f32).sqrt());
    Plan { decode: p.decode.with_split(32).with_group(group), chunk: p.chunk.with_split(32).with_group(group) }
}

fn rope_spec(base: f32, neox: bool) -> RopeSpec {
    RopeSpec { base, scale: 1.0, neox }
}

/// Both passes, recorded as the model records them, with a per-split buffer sized for `tokens`.
fn record_attention(ctx: &GpuContext, rec: &mut Recorder, tokens: Tokens, bufs: [&wgpu::Buffer; 5], shape: &Shape) {
    let [out, att, qkv, k, v] = bufs;
    let part = ctx.storage("part", shape.part_bytes(tokens.rows())).unwrap();
    let b = AttentionBuffers { out, att, part: &part, qkv, k_cache: k, v_cache: v, fresh: None, merge_later: false };
    record(rec, tokens, "attn", &b, shape).unwrap();
}

/// One decode position: RoPE (adjacent pairs and NeoX halves) turns q in place and k into cache
/// row pos, v lands in row pos, and no other row changes; then attention over rows 0..=pos
/// matches the CPU, weights included.
#[test]
fn rope_kv_and_attention_match_cpu() {
    for ctx in attention_gpus() {
        for neox in [false, true] {
            eprintln!("subgroups: {}, tuning: {:?}, neox: {neox}", ctx.subgroups, ctx.tuning);
            let rs = |base| rope_spec(base, neox);
            let (h, hkv, hd, t, base) = (4usize, 2usize, 16usize, 80usize, 10000.0f32);
            let (d, kv) = (h * hd, hkv * hd);
            let mut qkv = random(d + 2 * kv, 6, 1.0);
            let mut k_cache = random(t * kv, 7, 1.0);
            let mut v_cache = random(t * kv, 8, 1.0);
            let (kb, vb, qb) = (buf(&ctx, "k", &k_cache), buf(&ctx, "v", &v_cache), buf(&ctx, "qkv", &qkv));
            let table = buf(&ctx, "table", &cpu::rope_table(t, hd, rs(base), &[]));
            let out = ctx.storage("out", d as u64 * 4).unwrap();
            let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
            // Two layers' slices; this dispatch writes the second's.
            let ap = plan(&ctx, heads, 1, t, 2).decode.layer(1);
            let att = ctx.storage("att", ap.att_bytes(2)).unwrap();
            let mut rec = Recorder::new(&ctx);
            let rb = RopeKvBuffers { qkv: &qb, k_cache: &kb, v_cache: &vb, table: &table, rows: t as u32 };
            rope_kv::record(&mut rec, Tokens::One, "rope_kv".into(), &rb, heads, KvType::F32, neox).unwrap();
            let steps = StepTable::new(&ctx, t).unwrap().with_grids(&ctx, ap.split_grid()).unwrap();
            record_attention(&ctx, &mut rec, Tokens::One, [&out, &att, &qb, &kb, &vb], &ap);
            // 70 positions: three splits of 32 rows, the first two more than half a 64-wide pass.
            let pos = 69;
            rec.finish("attn", Some(&steps)).unwrap().run(&ctx, &steps, pos);

            let mut rotated = qkv.clone();
            cpu::rope(&mut rotated[..(h + hkv) * hd], hd, pos, rs(base), &[]);
            k_cache[pos * kv..(pos + 1) * kv].copy_from_slice(&rotated[d..d + kv]);
            v_cache[pos * kv..(pos + 1) * kv].copy_from_slice(&qkv[d + kv..]);
            qkv[..d].copy_from_slice(&rotated[..d]);
            assert_close("q after rope (k and v left as they were)", &read(&ctx, &qb), &qkv, 1e-5);
            assert_close("k cache after rope_kv", &read(&ctx, &kb), &k_cache, 1e-5);
            assert_eq!(read(&ctx, &vb), v_cache, "v cache after rope_kv");
            let k_cache = read(&ctx, &kb);

            let n = pos + 1;
            let mut want = vec![0.0; d];
            let mut want_att = vec![0.0; h * n];
            cpu::attention(&mut want, &mut want_att, &qkv[..d], &k_cache, &v_cache, 0..n, hkv, hd, ap.scale);
            assert_close("attention", &read(&ctx, &out), &want, 1e-5);
            let all_att = read(&ctx, &att);
            let (scores, stats) = all_att.split_at(2 * h * t);
            assert!(scores[..h * t].iter().chain(&stats[..2 * h]).all(|&v| v == 0.0), "the first layer's slices are untouched");
            let got_att = softmax_weights(&scores[h * t..], &stats[2 * h..], t, 0, n);
            assert_close("attention weights", &got_att, &want_att, 1e-6);
            for row in got_att.chunks(n) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
}

/// A prefill chunk: RoPE at each token's own position, K and V of every token into its cache
/// row (rows outside the chunk untouched), then causal grouped-query attention (3 query heads
/// per KV head, one workgroup for the three) — each token against the CPU over rows 0..=its
/// position, and the last token's weights in the layer's slice. Then the same over a sliding
/// window of 20 positions kept in a ring of 36 rows (NeoX RoPE): the CPU keeps every position and
/// masks, the GPU wraps.
#[test]
fn chunk_rope_kv_and_attention_match_cpu() {
    for ctx in attention_gpus() {
        // One token per workgroup, two and four (9 tokens: the last tile holds one).
        for (window, rows, q) in [(0usize, 96usize, 1u32), (20, 36, 1), (0, 96, 2), (20, 36, 2), (0, 96, 4), (20, 36, 4)] {
            eprintln!("subgroups: {}, window {window}, rows {rows}, tokens per workgroup {q}", ctx.subgroups);
            chunk_attention(&ctx, window, rows, q);
        }
    }
}

fn chunk_attention(ctx: &GpuContext, window: usize, rows: usize, q: u32) {
    let (h, hkv, hd, t) = (6usize, 2usize, 16usize, 96usize);
    let rs = rope_spec(10000.0, window > 0);
    let (d, kv) = (h * hd, hkv * hd);
    let row = d + 2 * kv;
    let (start, n, b) = (60usize, 9usize, 16usize);
    let mut qkv = random(b * row, 16, 1.0);
    let mut k_cache = random(t * kv, 17, 1.0);
    let mut v_cache = random(t * kv, 18, 1.0);
    // The ring as the GPU holds it: position j in row j mod R, the latest position winning.
    let ring = |c: &[f32]| {
        let mut r = vec![0.0; rows * kv];
        for j in 0..start {
            r[(j % rows) * kv..][..kv].copy_from_slice(&c[j * kv..][..kv]);
        }
        r
    };
    let (kb, vb, qb) = (buf(ctx, "k", &ring(&k_cache)), buf(ctx, "v", &ring(&v_cache)), buf(ctx, "qkv", &qkv));
    let table = buf(ctx, "table", &cpu::rope_table(t, hd, rs, &[]));
    let out = ctx.storage("out", (b * d) as u64 * 4).unwrap();
    let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
    let ap = plan(ctx, heads, 3, t, 1).chunk.with_tokens(q).windowed(window as u32, rows as u32);
    let att = ctx.storage("att", ap.att_bytes(1)).unwrap();
    let mut rec = Recorder::new(ctx);
    let tokens = Tokens::Chunk(b as u32);
    let rb = RopeKvBuffers { qkv: &qb, k_cache: &kb, v_cache: &vb, table: &table, rows: rows as u32 };
    rope_kv::record(&mut rec, tokens, "rope_kv".into(), &rb, heads, KvType::F32, rs.neox).unwrap();
    let steps = StepTable::chunk(ctx).unwrap().with_grids(ctx, ap.split_grid()).unwrap();
    steps.set_chunk(&ctx.queue, start, n);
    record_attention(ctx, &mut rec, tokens, [&out, &att, &qb, &kb, &vb], &ap);
    rec.finish("chunk", Some(&steps)).unwrap().run(ctx, &steps, 0);

    for i in 0..n {
        let r = &mut qkv[i * row..][..row];
        let mut rotated = r.to_vec();
        cpu::rope(&mut rotated[..(h + hkv) * hd], hd, start + i, rs, &[]);
        k_cache[(start + i) * kv..][..kv].copy_from_slice(&rotated[d..d + kv]);
        v_cache[(start + i) * kv..][..kv].copy_from_slice(&r[d + kv..]);
        r[..d].copy_from_slice(&rotated[..d]);
    }
    let wrap = |c: &[f32]| {
        let mut r = ring(c);
        for j in start..start + n {
            r[(j % rows) * kv..][..kv].copy_from_slice(&c[j * kv..][..kv]);
        }
        r
    };
    assert_close("rope on q", &read(ctx, &qb), &qkv, 1e-5);
    assert_close("k cache after rope_kv", &read(ctx, &kb), &wrap(&k_cache), 1e-5);
    assert_eq!(read(ctx, &vb), wrap(&v_cache), "v cache after rope_kv");
    let got = read(ctx, &out);
    let all_att = read(ctx, &att);
    for i in 0..n {
        let len = start + i + 1;
        let seen = if window > 0 { len - window..len } else { 0..len };
        let lo = seen.start;
        let mut want = vec![0.0; d];
        let mut want_att = vec![0.0; h * len];
        cpu::attention(&mut want, &mut want_att, &qkv[i * row..][..d], &k_cache, &v_cache, seen, hkv, hd, ap.scale);
        assert_close(&format!("attention of token {i}"), &got[i * d..][..d], &want, 1e-5);
        if i + 1 == n {
            let got_att = softmax_weights(&all_att[..h * t], &all_att[h * t..], t, lo, len);
            assert_close("last token's attention weights", &got_att, &want_att, 1e-6);
        }
    }
    assert!(got[n * d..].iter().all(|&v| v == 0.0), "rows past the chunk are untouched");
    ctx.check_errors().unwrap();
}

/// The fused decode step's attention (`Fresh`): pass 1 norms q and k (where the model has head
/// norms), turns them, appends k and v to the cache row of the position, and attends — at the
/// head shapes of every architecture the engine runs (d_h 64, 128 and 256; GQA 3, 4 and 7;
/// adjacent and NeoX RoPE; a sliding window in a ring), against the CPU doing the same steps
/// one by one. Then pass 1 again with the merge left to the output projection
/// (`project::Input::Merge`): y = W_o · attention, against the CPU's.
#[test]
fn fused_decode_attention_matches_cpu() {
    // (h, h_kv, d_h, NeoX, head norms, window, ring rows)
    let cases = [
        (9usize, 3usize, 64usize, false, false, 0usize, 80usize),
        (14, 2, 64, true, false, 0, 80),
        (8, 2, 128, true, true, 0, 80),
        (4, 1, 256, true, true, 20, 36),
    ];
    for ctx in attention_gpus() {
        for (h, hkv, hd, neox, norms, window, rows) in cases {
            eprintln!("subgroups: {}, h {h}, h_kv {hkv}, d_h {hd}, neox {neox}, norms {norms}, window {window}", ctx.subgroups);
            fused_attention(&ctx, Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 }, neox, norms, (window, rows));
        }
    }
}

fn fused_attention(ctx: &GpuContext, heads: Heads, neox: bool, norms: bool, (window, rows): (usize, usize)) {
    let (h, hkv, hd) = (heads.n_heads as usize, heads.n_kv_heads as usize, heads.head_dim as usize);
    let (t, pos, eps) = (80usize, 69usize, 1e-6f32);
    let rs = rope_spec(10000.0, neox);
    let (d, kv) = (h * hd, hkv * hd);
    let qkv = random(d + 2 * kv, 26, 1.0);
    // Positions 0..pos as a linear cache (the CPU's), and as the GPU's ring keeps them.
    let (mut k_lin, mut v_lin) = (random(t * kv, 27, 1.0), random(t * kv, 28, 1.0));
    let ring = |c: &[f32], upto: usize| {
        let mut r = vec![0.0; rows * kv];
        for j in 0..upto {
            r[(j % rows) * kv..][..kv].copy_from_slice(&c[j * kv..][..kv]);
        }
        r
    };
    let (kb, vb, qb) = (buf(ctx, "k", &ring(&k_lin, pos)), buf(ctx, "v", &ring(&v_lin, pos)), buf(ctx, "qkv", &qkv));
    let table = buf(ctx, "table", &cpu::rope_table(t, hd, rs, &[]));
    let (qn, kn) = (random(hd, 29, 0.3), random(hd, 30, 0.3));
    let (qn, kn): (Vec<f32>, Vec<f32>) = (qn.iter().map(|v| v + 1.0).collect(), kn.iter().map(|v| v + 1.0).collect());
    let (qnt, knt) = (vector(ctx, "q_norm", &qn), vector(ctx, "k_norm", &kn));
    let fresh = Fresh { table: &table, neox, norms: norms.then_some(([&qnt, &knt], eps)) };
    let ap = Plan::new(ctx, heads, KvType::F32, t, 1, 1.0 / (hd as f32).sqrt())
        .decode
        .with_split(32)
        .layer(0)
        .windowed(window as u32, rows as u32);
    let (out, att) = (ctx.storage("out", d as u64 * 4).unwrap(), ctx.storage("att", ap.att_bytes(1)).unwrap());
    let part = ctx.storage("part", ap.part_bytes(1)).unwrap();
    let steps = StepTable::new(ctx, t).unwrap().with_grids(ctx, ap.split_grid()).unwrap();
    let b = AttentionBuffers {
        out: &out,
        att: &att,
        part: &part,
        qkv: &qb,
        k_cache: &kb,
        v_cache: &vb,
        fresh: Some(fresh),
        merge_later: false,
    };
    let mut rec = Recorder::new(ctx);
    record(&mut rec, Tokens::One, "fused", &b, &ap).unwrap();
    rec.finish("fused", Some(&steps)).unwrap().run(ctx, &steps, pos);

    // The CPU: head norms, RoPE, the append, attention over what the position sees.
    let x = cpu_fresh(&qkv, heads, norms.then_some((&qn, &kn, eps)), pos, rs);
    k_lin[pos * kv..][..kv].copy_from_slice(&x[d..d + kv]);
    v_lin[pos * kv..][..kv].copy_from_slice(&x[d + kv..]);
    assert_close("k cache after the fused append", &read(ctx, &kb), &ring(&k_lin, pos + 1), 1e-5);
    assert_eq!(read(ctx, &vb), ring(&v_lin, pos + 1), "v cache after the fused append");
    assert_eq!(read(ctx, &qb), qkv, "q, k and v are read, not written");
    let n = pos + 1;
    let seen = if window > 0 { n - window..n } else { 0..n };
    let lo = seen.start;
    let (mut want, mut want_att) = (vec![0.0; d], vec![0.0; h * n]);
    cpu::attention(&mut want, &mut want_att, &x[..d], &k_lin, &v_lin, seen, hkv, hd, ap.scale);
    assert_close("fused attention", &read(ctx, &out), &want, 1e-5);
    let all_att = read(ctx, &att);
    let (scores, stats) = all_att.split_at(h * t);
    assert_close("fused attention weights", &softmax_weights(scores, stats, t, lo, n), &want_att, 1e-6);

    // Pass 1 again (appending the same row), the merge in the output projection's prologue.
    let m = 37usize;
    let wo = random(m * d, 31, 0.2);
    let wt = tensor(ctx, GgmlType::F32, bytemuck::cast_slice(&wo), m, d);
    let y = buf(ctx, "y", &vec![0.0; m]);
    let b = AttentionBuffers { merge_later: true, ..b };
    let mut rec = Recorder::new(ctx);
    record(&mut rec, Tokens::One, "fused", &b, &ap).unwrap();
    let input = project::Input::Merge { part: &part, att: &att, shape: &ap };
    project::record_fused(&mut rec, Tokens::One, "attn_output".into(), &wt, Rows::new(&y, 0), input, project::Output::Store(Write::Set))
        .unwrap();
    rec.finish("fused+merge", Some(&steps)).unwrap().run(ctx, &steps, pos);
    let mut want_y = vec![0.0; m];
    cpu::matvec(&mut want_y, &wo, &want);
    assert_close("W_o · merge(splits)", &read(ctx, &y), &want_y, 1e-4);
    let all_att = read(ctx, &att);
    let (scores, stats) = all_att.split_at(h * t);
    assert_close("attention weights, merged in the projection", &softmax_weights(scores, stats, t, lo, n), &want_att, 1e-6);
    ctx.check_errors().unwrap();
}

/// q, k and v of one position as the fused pass makes them: each head of q and k normed
/// (`norms`: q's and k's weights, epsilon), then turned by RoPE at `pos`.
fn cpu_fresh(qkv: &[f32], heads: Heads, norms: Option<(&Vec<f32>, &Vec<f32>, f32)>, pos: usize, rs: RopeSpec) -> Vec<f32> {
    let (h, hkv, hd) = (heads.n_heads as usize, heads.n_kv_heads as usize, heads.head_dim as usize);
    let mut x = qkv.to_vec();
    if let Some((qn, kn, eps)) = norms {
        for (head, w) in (0..h).map(|i| (i, qn)).chain((h..h + hkv).map(|i| (i, kn))) {
            let src = x[head * hd..][..hd].to_vec();
            cpu::rmsnorm(&mut x[head * hd..][..hd], &src, w, eps);
        }
    }
    cpu::rope(&mut x[..(h + hkv) * hd], hd, pos, rs, &[]);
    x
}

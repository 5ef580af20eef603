//! Every kernel against its `cpu` function on seeded random data.

mod common;

use common::{assert_close, gpu, gpus, random, random_blocks};
use kvscope::config::Act;
use kvscope::cpu;
use kvscope::gpu::ops::{self, AttentionBuffers, Heads, NormRows, RopeKvBuffers, Rows, Tokens, Write};
use kvscope::gpu::{params, GpuContext, Grid, Kernel, Recorder, StepTable};
use kvscope::model::weights::{Part, Tensor};
use kvscope::quant::{dequantize_vec, GgmlType};
use kvscope::KvType;

/// Every weight type.
const TYPES: [GgmlType; 12] = GgmlType::ALL;

/// Row length for a weight type's tests: 3 blocks of 32, or 2 super-blocks of 256 for the
/// K-quants (so blocks of the second super-block are addressed too).
fn cols_for(ty: GgmlType) -> usize {
    if ty.block_elems() > 32 {
        512
    } else {
        96
    }
}

fn read(ctx: &GpuContext, b: &wgpu::Buffer) -> Vec<f32> {
    pollster::block_on(ctx.read_f32(b)).expect("readback")
}

fn buf(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    ctx.storage_with(label, bytemuck::cast_slice(data)).expect("buffer")
}

/// A [rows × cols] weight tensor of type `ty` holding `bytes`.
fn tensor(ctx: &GpuContext, ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Tensor {
    Tensor { buffer: ctx.storage_with("w", bytes).expect("buffer"), ty, dims: vec![cols as u64, rows as u64] }
}

/// y = W·x (and y += W·x at an offset) for every weight type, against CPU dequantise-then-multiply
/// of the same random blocks, with the adapter's rows per invocation and with one.
#[test]
fn matvec_matches_cpu_for_every_type() {
    for ctx in gpus() {
        eprintln!("rows per invocation: {:?}", ctx.tuning);
        // 101 rows: not a multiple of the 64-invocation workgroup nor of the rows per invocation.
        let rows = 101usize;
        for (i, ty) in TYPES.into_iter().enumerate() {
            let cols = cols_for(ty);
            let x = random(cols, 1, 1.0);
            let w_bytes = random_blocks(ty, rows * cols, 10 + i as u64, 0.5);
            let w_deq = dequantize_vec(ty, &w_bytes, rows * cols);
            let mut want = vec![0.0; rows];
            cpu::matvec(&mut want, &w_deq, &x);

            let w = tensor(&ctx, ty, &w_bytes, rows, cols);
            let xb = buf(&ctx, "x", &x);
            // y = [3 old values | W·x written at offset 3]; then the accumulate form adds W·x again.
            let y = buf(&ctx, "y", &vec![7.0; rows + 3]);
            let (out, x_rows) = (Rows::new(&y, 0).at(3), Rows::new(&xb, 0));
            let steps = StepTable::new(&ctx, 1).unwrap();
            let mut rec = Recorder::new(&ctx);
            ops::project(&mut rec, Tokens::One, "mv".into(), &w, out, x_rows, Write::Set).unwrap();
            let prog = rec.finish("mv", Some(&steps)).unwrap();
            prog.run(&ctx, &steps, 0);
            let got = read(&ctx, &y);
            assert_eq!(&got[..3], &[7.0, 7.0, 7.0], "{ty:?}: wrote before out_offset");
            assert_close(&format!("matvec {ty:?}"), &got[3..], &want, 1e-4);

            let mut rec = Recorder::new(&ctx);
            ops::project(&mut rec, Tokens::One, "mv+".into(), &w, out, x_rows, Write::Add).unwrap();
            rec.finish("mv+", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_close(&format!("matvec+ {ty:?}"), &read(&ctx, &y)[3..], &twice, 2e-4);
        }
        ctx.check_errors().unwrap();
    }
}

/// x = E[tokens[pos]] for every type: decoding is exact (the same f32 operations in the same
/// order as the CPU), so the rows must be bit-identical.
#[test]
fn embed_matches_dequantised_row() {
    let Some(ctx) = gpu() else { return };
    let vocab = 40usize;
    let tokens: Vec<u32> = vec![5, 39, 0, 17];
    for (i, ty) in TYPES.into_iter().enumerate() {
        let dim = cols_for(ty);
        let e_bytes = random_blocks(ty, vocab * dim, 20 + i as u64, 1.0);
        let e = dequantize_vec(ty, &e_bytes, vocab * dim);
        let table = tensor(&ctx, ty, &e_bytes, vocab, dim);
        let tok = ctx.storage_with("tokens", bytemuck::cast_slice(&tokens)).unwrap();
        let x = ctx.storage("x", dim as u64 * 4).unwrap();
        let steps = StepTable::new(&ctx, tokens.len()).unwrap();
        let mut rec = Recorder::new(&ctx);
        let table = [Part { first_row: 0, tensor: table }];
        ops::embed(&mut rec, Tokens::One, &x, &table, &tok, 1.0).unwrap();
        let prog = rec.finish("embed", Some(&steps)).unwrap();
        for (pos, &t) in tokens.iter().enumerate() {
            prog.run(&ctx, &steps, pos);
            let want = &e[t as usize * dim..][..dim];
            assert_eq!(read(&ctx, &x), want, "{ty:?} row {t} at pos {pos}");
        }
    }
}

/// out = rmsnorm(x) ⊙ w, and the post-norm form out += rmsnorm(x) ⊙ w.
#[test]
fn rmsnorm_matches_cpu() {
    for ctx in gpus() {
        eprintln!("subgroups: {}", ctx.subgroups);
        let n = 100;
        let (x, w, y) = (random(n, 3, 2.0), random(n, 4, 1.0), random(n, 5, 1.0));
        let mut want = vec![0.0; n];
        cpu::rmsnorm(&mut want, &x, &w, 1e-5);
        let xb = buf(&ctx, "x", &x);
        let wt = Tensor { buffer: buf(&ctx, "w", &w), ty: GgmlType::F32, dims: vec![n as u64] };
        for write in [Write::Set, Write::Add] {
            let out = buf(&ctx, "out", &y);
            let mut rec = Recorder::new(&ctx);
            ops::rms_norm(&mut rec, Tokens::One, "rmsnorm".into(), &out, &xb, (&wt, 1e-5), NormRows::Each, write).unwrap();
            let steps = StepTable::new(&ctx, 1).unwrap();
            rec.finish("rmsnorm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            let want: Vec<f32> = match write {
                Write::Set => want.clone(),
                Write::Add => want.iter().zip(&y).map(|(a, b)| a + b).collect(),
            };
            assert_close(&format!("rmsnorm {write:?}"), &read(&ctx, &out), &want, 1e-5);
        }
    }
}

/// Each q and k head of two token rows normed in place with its own weights; v untouched.
#[test]
fn head_norm_matches_cpu() {
    for ctx in gpus() {
        let (h, hkv, hd, b) = (4usize, 2usize, 48usize, 2usize);
        let row = (h + 2 * hkv) * hd;
        let qkv = random(b * row, 11, 3.0);
        let (qn, kn) = (random(hd, 12, 1.0), random(hd, 13, 1.0));
        let mut want = qkv.clone();
        for r in want.chunks_mut(row) {
            for (e, head) in r[..(h + hkv) * hd].chunks_mut(hd).enumerate() {
                let x = head.to_vec();
                cpu::rmsnorm(head, &x, if e < h { &qn } else { &kn }, 1e-6);
            }
        }
        let qb = buf(&ctx, "qkv", &qkv);
        let t = |v: &[f32]| Tensor { buffer: buf(&ctx, "norm", v), ty: GgmlType::F32, dims: vec![hd as u64] };
        let (qt, kt) = (t(&qn), t(&kn));
        let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
        let steps = StepTable::chunk(&ctx).unwrap();
        steps.set_chunk(&ctx.queue, 0, b);
        let mut rec = Recorder::new(&ctx);
        ops::head_norm(&mut rec, Tokens::Chunk(4), "qk_norm".into(), &qb, [&qt, &kt], heads, 1e-6).unwrap();
        rec.finish("qk_norm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
        assert_close("head norm", &read(&ctx, &qb), &want, 1e-5);
    }
}

/// y[t] += bias on every live row of a chunk, and not past them.
#[test]
fn add_bias_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let (n, b) = (70usize, 3usize);
    let (y, bias) = (random(4 * n, 14, 1.0), random(n, 15, 1.0));
    let mut want = y.clone();
    for r in want.chunks_mut(n).take(b) {
        cpu::add(r, &bias);
    }
    let yb = buf(&ctx, "y", &y);
    let bt = Tensor { buffer: buf(&ctx, "bias", &bias), ty: GgmlType::F32, dims: vec![n as u64] };
    let steps = StepTable::chunk(&ctx).unwrap();
    steps.set_chunk(&ctx.queue, 0, b);
    let mut rec = Recorder::new(&ctx);
    ops::add_bias(&mut rec, Tokens::Chunk(4), "bias".into(), &yb, &bt).unwrap();
    rec.finish("bias", Some(&steps)).unwrap().run(&ctx, &steps, 0);
    assert_eq!(read(&ctx, &yb), want);
}

/// Both attention passes, recorded as the model records them, with a per-split buffer sized for
/// `tokens`.
#[allow(clippy::too_many_arguments)]
fn attention(
    ctx: &GpuContext,
    rec: &mut Recorder,
    tokens: Tokens,
    (out, att, qkv, k, v): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    shape: &ops::Attention,
) {
    let part = ctx.storage("part", shape.part_bytes(tokens.rows())).unwrap();
    let bufs = AttentionBuffers { out, att, part: &part, qkv, k_cache: k, v_cache: v };
    ops::attention(rec, tokens, "attn", &bufs, shape).unwrap();
}

/// The online form takes as many prefill tokens per workgroup as its lane's registers allow
/// (`ONLINE_VEC4S`), and heads too wide for one token take the workgroup form.
#[test]
fn online_attention_fits_its_registers() {
    let shape = |h, hkv, hd| {
        let heads = Heads { n_heads: h, n_kv_heads: hkv, head_dim: hd };
        ops::Attention::new(heads, KvType::F32, 1024, 30, 256, 8, 0.125)
    };
    let smol = shape(9, 3, 64);
    assert_eq!((smol.lanes, smol.group, smol.for_chunk(4).tokens), (8, 3, 2));
    let gemma = shape(4, 1, 256);
    assert_eq!((gemma.lanes, gemma.for_chunk(4).tokens), (0, 1), "the workgroup form, where memory allows one token");
    let qwen = shape(14, 2, 64);
    assert_eq!((qwen.lanes, qwen.group, qwen.for_chunk(4).tokens), (8, 1, 4));
    for a in [smol, gemma, qwen] {
        let q = a.for_chunk(4).tokens;
        assert!(a.lanes == 0 || 2 * a.heads.head_dim / 4 * a.group * q <= ops::ONLINE_VEC4S);
    }
}

/// The attention tests' contexts: `gpus()` (the adapter's own shapes, on lavapipe the online
/// kernel; the plain GPU shapes) and the adapter's shapes without subgroups (the workgroup kernel
/// in its CPU shape, as a browser without subgroups runs it).
fn attention_gpus() -> Vec<GpuContext> {
    let mut all = gpus();
    if !all.is_empty() {
        let opts = kvscope::GpuOptions { subgroups: false, ..Default::default() };
        all.push(pollster::block_on(GpuContext::with_options(opts)).expect("context without subgroups"));
    }
    all
}

/// A test's attention shape: T = `t`, splits of 32 rows, for layer 0 of `layers` (scores and
/// statistics in an `att` of `att_bytes(layers)`), in the form `ctx` takes.
fn shape(ctx: &GpuContext, heads: Heads, group: u32, t: usize, layers: usize) -> ops::Attention {
    ops::Attention {
        heads,
        group,
        kv: KvType::F32,
        context: t as u32,
        split: 32,
        n_splits: t.div_ceil(32) as u32,
        tokens: 1,
        lanes: ctx.tuning.attention_lanes,
        att_offset: 0,
        stats_offset: (layers * heads.n_heads as usize * t) as u32,
        scale: 1.0 / (heads.head_dim as f32).sqrt(),
        window: 0,
        rows: t as u32,
    }
}

fn rope_spec(base: f32, neox: bool) -> kvscope::config::RopeSpec {
    kvscope::config::RopeSpec { base, scale: 1.0, neox }
}

/// One decode position: RoPE (adjacent pairs and NeoX halves) turns q in place and k into cache
/// row pos, v lands in row pos, and no other row changes; then attention over rows 0..=pos
/// matches the CPU, weights included.
#[test]
fn rope_kv_and_attention_match_cpu() {
    for ctx in attention_gpus() {
        for neox in [false, true] {
            eprintln!("subgroups: {}, online lanes: {}, neox: {neox}", ctx.subgroups, ctx.tuning.attention_lanes);
            let rs = |base| rope_spec(base, neox);
            let (h, hkv, hd, t, base) = (4usize, 2usize, 16usize, 80usize, 10000.0f32);
            let (d, kv) = (h * hd, hkv * hd);
            let mut qkv = random(d + 2 * kv, 6, 1.0);
            let mut k_cache = random(t * kv, 7, 1.0);
            let mut v_cache = random(t * kv, 8, 1.0);
            let (kb, vb, qb) = (buf(&ctx, "k", &k_cache), buf(&ctx, "v", &v_cache), buf(&ctx, "qkv", &qkv));
            let table = buf(&ctx, "table", &cpu::rope_table(t, hd, rs(base), &[]));
            let out = ctx.storage("out", d as u64 * 4).unwrap();
            // Two layers' slices; this dispatch writes the second's.
            let ap = shape(&ctx, Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 }, 1, t, 2).layer(1);
            let att = ctx.storage("att", ap.att_bytes(2)).unwrap();
            let mut rec = Recorder::new(&ctx);
            let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
            let rb = RopeKvBuffers { qkv: &qb, k_cache: &kb, v_cache: &vb, table: &table, rows: t as u32 };
            ops::rope_kv(&mut rec, Tokens::One, "rope_kv".into(), &rb, heads, KvType::F32, neox).unwrap();
            let steps = StepTable::new(&ctx, t).unwrap().with_grids(&ctx, ap.split_grid()).unwrap();
            attention(&ctx, &mut rec, Tokens::One, (&out, &att, &qb, &kb, &vb), &ap);
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
            let got_att = ops::softmax_weights(&scores[h * t..], &stats[2 * h..], t, 0, n);
            assert_close("attention weights", &got_att, &want_att, 1e-6);
            for row in got_att.chunks(n) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
}

/// Y = W·X over the rows of a chunk for every weight type: 11 tokens (not a multiple of the
/// 8-token tile) into rows with a stride and offset, an odd number of weight rows, then the
/// accumulate form; rows past the chunk are left alone.
#[test]
fn matmul_matches_cpu_for_every_type() {
    for ctx in gpus() {
        eprintln!("rows per invocation: {:?}", ctx.tuning);
        // 71 rows: the last invocation's second row lies past the end.
        let (rows, n, b) = (71usize, 11usize, 16usize);
        for (i, ty) in TYPES.into_iter().enumerate() {
            let cols = cols_for(ty);
            let (y_stride, x_stride, off) = (rows + 5, cols + 4, 2usize);
            let x = random(b * x_stride, 31, 1.0);
            let w_bytes = random_blocks(ty, rows * cols, 40 + i as u64, 0.5);
            let w_deq = dequantize_vec(ty, &w_bytes, rows * cols);
            let mut want = vec![7.0; b * y_stride];
            for t in 0..n {
                let mut y = vec![0.0; rows];
                cpu::matvec(&mut y, &w_deq, &x[t * x_stride..][..cols]);
                want[t * y_stride + off..][..rows].copy_from_slice(&y);
            }
            let w = tensor(&ctx, ty, &w_bytes, rows, cols);
            let (xb, y) = (buf(&ctx, "x", &x), buf(&ctx, "y", &vec![7.0; b * y_stride]));
            let steps = StepTable::chunk(&ctx).unwrap();
            steps.set_chunk(&ctx.queue, 5, n);
            let (out, x_rows) = (Rows::new(&y, y_stride as u32).at(off as u32), Rows::new(&xb, x_stride as u32));
            let mut rec = Recorder::new(&ctx);
            ops::project(&mut rec, Tokens::Chunk(b as u32), "mm".into(), &w, out, x_rows, Write::Set).unwrap();
            rec.finish("mm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            assert_close(&format!("matmul {ty:?}"), &read(&ctx, &y), &want, 1e-4);

            let mut rec = Recorder::new(&ctx);
            ops::project(&mut rec, Tokens::Chunk(b as u32), "mm+".into(), &w, out, x_rows, Write::Add).unwrap();
            rec.finish("mm+", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            for t in 0..n {
                for v in &mut want[t * y_stride + off..][..rows] {
                    *v *= 2.0;
                }
            }
            assert_close(&format!("matmul+ {ty:?}"), &read(&ctx, &y), &want, 2e-4);
        }
        ctx.check_errors().unwrap();
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
            eprintln!(
                "subgroups: {}, online lanes: {}, window {window}, rows {rows}, tokens per workgroup {q}",
                ctx.subgroups, ctx.tuning.attention_lanes
            );
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
    let ap = shape(ctx, heads, 3, t, 1).windowed(window as u32, rows as u32).for_chunk(q);
    let att = ctx.storage("att", ap.att_bytes(1)).unwrap();
    let mut rec = Recorder::new(ctx);
    let tokens = Tokens::Chunk(b as u32);
    let rb = RopeKvBuffers { qkv: &qb, k_cache: &kb, v_cache: &vb, table: &table, rows: rows as u32 };
    ops::rope_kv(&mut rec, tokens, "rope_kv".into(), &rb, heads, KvType::F32, rs.neox).unwrap();
    assert_eq!(ap.tokens, q);
    let steps = StepTable::chunk(ctx).unwrap().with_grids(ctx, ap.split_grid()).unwrap();
    steps.set_chunk(&ctx.queue, start, n);
    attention(ctx, &mut rec, tokens, (&out, &att, &qb, &kb, &vb), &ap);
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
            let got_att = ops::softmax_weights(&all_att[..h * t], &all_att[h * t..], t, lo, len);
            assert_close("last token's attention weights", &got_att, &want_att, 1e-6);
        }
    }
    assert!(got[n * d..].iter().all(|&v| v == 0.0), "rows past the chunk are untouched");
    ctx.check_errors().unwrap();
}

/// act(gate) ⊙ up for both activations.
#[test]
fn glu_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let f = 130;
    let gu = random(2 * f, 9, 4.0);
    for act in [Act::Silu, Act::GeluTanh] {
        let mut want = vec![0.0; f];
        cpu::glu(&mut want, &gu[..f], &gu[f..], act);
        let out = ctx.storage("out", f as u64 * 4).unwrap();
        let b = buf(&ctx, "gate_up", &gu);
        let mut rec = Recorder::new(&ctx);
        ops::glu(&mut rec, Tokens::One, "glu".into(), &out, &b, f as u32, act).unwrap();
        let steps = StepTable::new(&ctx, 1).unwrap();
        rec.finish("glu", Some(&steps)).unwrap().run(&ctx, &steps, 0);
        assert_close(&format!("glu {act:?}"), &read(&ctx, &out), &want, 1e-5);
    }
}

#[test]
fn recorder_checks_buffer_count() {
    let Some(ctx) = gpu() else { return };
    let b = ctx.storage("b", 16).unwrap();
    let mut rec = Recorder::new(&ctx);
    let err = rec.push("bad", Kernel::Glu, &[&b], &params::Glu { n: 4, act: 0 }, Grid::invocations(4)).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("takes 2 buffers"), "{err}");
}

/// The GPU argmax: the index of the largest logit, ties to the lowest index, as `sampler::argmax`.
#[test]
fn argmax_matches_cpu_with_ties() {
    let Some(ctx) = gpu() else { return };
    for (seed, n) in [(1u64, 49152usize), (2, 1000), (3, 7)] {
        let mut logits = random(n, seed, 10.0);
        // A tie for the maximum at two places: the lower index must win.
        let hi = logits.iter().copied().fold(f32::MIN, f32::max) + 1.0;
        logits[n / 3] = hi;
        logits[n - 1] = hi;
        let out = ctx.storage("out", 8).unwrap();
        let l = buf(&ctx, "logits", &logits);
        let mut rec = Recorder::new(&ctx);
        ops::argmax(&mut rec, &out, &l, n as u32).unwrap();
        rec.finish("argmax", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
        let got = read(&ctx, &out);
        assert_eq!(got[0].to_bits(), kvscope::sampler::argmax(&logits), "n = {n}");
        assert_eq!(got[1], hi);
    }
}

/// Logits that are all -inf: the GPU reports index 0, as the CPU argmax does.
#[test]
fn argmax_of_all_negative_infinity_is_zero() {
    let Some(ctx) = gpu() else { return };
    let logits = vec![f32::NEG_INFINITY; 300];
    let out = ctx.storage("out", 8).unwrap();
    let l = buf(&ctx, "logits", &logits);
    let mut rec = Recorder::new(&ctx);
    ops::argmax(&mut rec, &out, &l, 300).unwrap();
    rec.finish("argmax", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
    assert_eq!(read(&ctx, &out)[0].to_bits(), kvscope::sampler::argmax(&logits));
}

/// One invocation's work at its least, the workgroup form of attention: for building sources.
fn small_tuning() -> kvscope::gpu::kernels::Tuning {
    kvscope::gpu::kernels::Tuning {
        matvec_rows: 1,
        matmul_rows: 1,
        matmul_tokens: 1,
        prefill_chunk: 32,
        attention_split: 64,
        attention_phases: 4,
        attention_tokens: 1,
        attention_lanes: 0,
        attention_lane_tokens: 1,
    }
}

/// One shader source, several variants: `//#if FLAG … //#else … //#endif` blocks keep one side;
/// the plain variant of every kernel names no subgroup built-in and no packed-f16 cache.
#[test]
fn specialisation_keeps_one_side() {
    use kvscope::gpu::kernels::specialise;
    let src = "a\n//#if subgroups\nb\n//#else\nc\n//#endif\n//#if kv_f16\nd\n//#endif\ne\n";
    assert_eq!(specialise(src, &[]), "a\nc\ne\n");
    assert_eq!(specialise(src, &["subgroups"]), "a\nb\ne\n");
    assert_eq!(specialise(src, &["subgroups", "kv_f16"]), "a\nb\nd\ne\n");
    let tuning = small_tuning();
    for k in [
        Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F32, tokens: 1, lanes: 0 },
        Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F32, tokens: 2, lanes: 0 },
        Kernel::RmsNorm,
        Kernel::RopeKv { kv: KvType::F32, neox: false },
        Kernel::RopeKv { kv: KvType::F32, neox: true },
        Kernel::HeadNorm,
        Kernel::Glu,
    ] {
        let spec = k.spec(tuning);
        let plain = spec.source(false);
        let code: String = plain.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
        assert!(!code.contains("subgroup") && !code.contains("2x16float") && !plain.contains("//#"), "{}", spec.label);
    }
    let f16 = Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F16, tokens: 1, lanes: 0 }.spec(tuning).source(true);
    assert!(f16.contains("unpack2x16float") && f16.contains("subgroupAdd"));
    let online = Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F16, tokens: 2, lanes: 8 }.spec(tuning);
    let src = online.source(true);
    assert!(src.contains("unpack2x16float") && src.contains("o2_15_1") && !src.contains("o2$r"), "{}", online.label);
}

/// The bindings each pipeline is built with are the ones its WGSL declares, in order: outputs
/// (read_write), inputs (read), params, step.
#[test]
fn bindings_are_read_from_the_shader() {
    use kvscope::gpu::kernels::{bindings, Slot::*};
    let tuning = small_tuning();
    let k = |k: Kernel| k.spec(tuning);
    let src = |kernel: Kernel| k(kernel).source(false);
    assert_eq!(bindings(&src(Kernel::MatVec(GgmlType::Q4_1))), [Out, In, In, Params, Step]);
    assert_eq!(bindings(&src(Kernel::MatMul(GgmlType::Q8_0))), [Out, In, In, Params, Step]);
    assert_eq!(bindings(&src(Kernel::RopeKv { kv: KvType::F16, neox: true })), [Out, Out, Out, In, Params, Step]);
    assert_eq!(
        bindings(&src(Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F16, tokens: 2, lanes: 0 })),
        [Out, Out, In, In, In, Params, Step]
    );
    assert_eq!(
        bindings(&k(Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F32, tokens: 2, lanes: 8 }).source(true)),
        [Out, Out, In, In, In, Params, Step]
    );
    assert_eq!(bindings(&src(Kernel::Argmax)), [Out, In, Params]);
}

/// The GPU's next-token table: the 16 largest logits in order (ties to the lower index, one tie
/// straddling two slices) with their softmax probabilities, against `sampler::top_k`; vocabularies
/// larger than, equal to and smaller than the 16 × 64 entries the passes hold.
#[test]
fn top_k_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    for (seed, n) in [(4u64, 262_144usize), (5, 49152), (6, 1000), (7, 9)] {
        let mut logits = random(n, seed, 10.0);
        let hi = logits.iter().copied().fold(f32::MIN, f32::max);
        for i in [n / 3, n - 1, 1] {
            logits[i] = hi + 0.5;
        }
        let want = kvscope::sampler::top_k(&logits, ops::TOP_K, 1.0);
        let out = ctx.storage("out", ops::top_k_words() as u64 * 4).unwrap();
        let part = ctx.storage("part", (ops::TOP_K_SLICES as usize * ops::top_k_words()) as u64 * 4).unwrap();
        let l = buf(&ctx, "logits", &logits);
        let mut rec = Recorder::new(&ctx);
        ops::top_k(&mut rec, &out, &part, &l, n as u32).unwrap();
        rec.finish("top_k", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
        let raw: Vec<u32> = read(&ctx, &out).iter().map(|v| v.to_bits()).collect();
        let (max, sum) = (f32::from_bits(raw[0]), f32::from_bits(raw[1]));
        assert_eq!(max, hi + 0.5, "n = {n}: max");
        let got: Vec<(u32, f32)> =
            raw[2..].chunks(2).filter(|e| e[0] != u32::MAX).map(|e| (e[0], (f32::from_bits(e[1]) - max).exp() / sum)).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), want.iter().map(|w| w.id).collect::<Vec<_>>(), "n = {n}: ids");
        for (g, w) in got.iter().zip(&want) {
            assert!((g.1 - w.p).abs() <= 1e-5 * w.p.max(1e-3), "n = {n}: p({}) = {} vs {}", w.id, g.1, w.p);
        }
    }
}

//! Every kernel against its `cpu` function on seeded random data.

mod common;

use common::{assert_close, gpu, gpus, random, random_blocks};
use kvscope::cpu;
use kvscope::gpu::ops::{self, AttentionBuffers, Heads, NormRows, RopeKvBuffers, Rows, Tokens, Write};
use kvscope::gpu::{params, GpuContext, Grid, Kernel, Recorder, StepTable};
use kvscope::model::weights::Tensor;
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
            let mut rec = Recorder::new(&ctx);
            ops::project(&mut rec, Tokens::One, "mv".into(), &w, out, x_rows, Write::Set).unwrap();
            let prog = rec.finish("mv", None).unwrap();
            let steps = StepTable::new(&ctx, 1).unwrap();
            prog.run(&ctx, &steps, 0);
            let got = read(&ctx, &y);
            assert_eq!(&got[..3], &[7.0, 7.0, 7.0], "{ty:?}: wrote before out_offset");
            assert_close(&format!("matvec {ty:?}"), &got[3..], &want, 1e-4);

            let mut rec = Recorder::new(&ctx);
            ops::project(&mut rec, Tokens::One, "mv+".into(), &w, out, x_rows, Write::Add).unwrap();
            rec.finish("mv+", None).unwrap().run(&ctx, &steps, 0);
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
        ops::embed(&mut rec, Tokens::One, &x, &table, &tok).unwrap();
        let prog = rec.finish("embed", Some(&steps)).unwrap();
        for (pos, &t) in tokens.iter().enumerate() {
            prog.run(&ctx, &steps, pos);
            let want = &e[t as usize * dim..][..dim];
            assert_eq!(read(&ctx, &x), want, "{ty:?} row {t} at pos {pos}");
        }
    }
}

#[test]
fn rmsnorm_matches_cpu() {
    for ctx in gpus() {
        eprintln!("subgroups: {}", ctx.subgroups);
        let n = 100;
        let (x, w) = (random(n, 3, 2.0), random(n, 4, 1.0));
        let mut want = vec![0.0; n];
        cpu::rmsnorm(&mut want, &x, &w, 1e-5);
        let out = ctx.storage("out", n as u64 * 4).unwrap();
        let xb = buf(&ctx, "x", &x);
        let wt = Tensor { buffer: buf(&ctx, "w", &w), ty: GgmlType::F32, dims: vec![n as u64] };
        let mut rec = Recorder::new(&ctx);
        ops::rms_norm(&mut rec, Tokens::One, "rmsnorm".into(), &out, &xb, (&wt, 1e-5), NormRows::Each).unwrap();
        let steps = StepTable::new(&ctx, 1).unwrap();
        rec.finish("rmsnorm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
        assert_close("rmsnorm", &read(&ctx, &out), &want, 1e-5);
    }
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

/// A test's attention shape: T = `t`, splits of 32 rows, writing the weights slice at
/// `att_offset` with scratch rows at `scratch_offset`.
fn shape(heads: Heads, group: u32, t: usize, att_offset: usize, scratch_offset: usize) -> ops::Attention {
    ops::Attention {
        heads,
        group,
        kv: KvType::F32,
        context: t as u32,
        split: 32,
        n_splits: t.div_ceil(32) as u32,
        att_offset: att_offset as u32,
        scratch_offset: scratch_offset as u32,
    }
}

/// One decode position: RoPE turns q in place and k into cache row pos, v lands in row pos, and
/// no other row changes; then attention over rows 0..=pos matches the CPU, weights included.
#[test]
fn rope_kv_and_attention_match_cpu() {
    for ctx in gpus() {
        eprintln!("subgroups: {}", ctx.subgroups);
        let (h, hkv, hd, t, base) = (4usize, 2usize, 16usize, 80usize, 10000.0f32);
        let (d, kv) = (h * hd, hkv * hd);
        let mut qkv = random(d + 2 * kv, 6, 1.0);
        let mut k_cache = random(t * kv, 7, 1.0);
        let mut v_cache = random(t * kv, 8, 1.0);
        let (kb, vb, qb) = (buf(&ctx, "k", &k_cache), buf(&ctx, "v", &v_cache), buf(&ctx, "qkv", &qkv));
        let table = buf(&ctx, "table", &cpu::rope_table(t, hd, base));
        let out = ctx.storage("out", d as u64 * 4).unwrap();
        // Two layers' slices; this dispatch writes the second.
        let att = ctx.storage("att", (2 * h * t) as u64 * 4).unwrap();
        let steps = StepTable::new(&ctx, t).unwrap();
        let mut rec = Recorder::new(&ctx);
        let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
        let rb = RopeKvBuffers { qkv: &qb, k_cache: &kb, v_cache: &vb, table: &table };
        ops::rope_kv(&mut rec, Tokens::One, "rope_kv".into(), &rb, heads, KvType::F32).unwrap();
        let ap = shape(heads, 1, t, h * t, 2 * h * t);
        attention(&ctx, &mut rec, Tokens::One, (&out, &att, &qb, &kb, &vb), &ap);
        // 70 positions: three splits of 32 rows, the first two more than half a 64-wide pass.
        let pos = 69;
        rec.finish("attn", Some(&steps)).unwrap().run(&ctx, &steps, pos);

        let mut rotated = qkv.clone();
        cpu::rope(&mut rotated[..(h + hkv) * hd], hd, pos, base);
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
        cpu::attention(&mut want, &mut want_att, &qkv[..d], &k_cache, &v_cache, n, hkv, hd);
        assert_close("attention", &read(&ctx, &out), &want, 1e-5);
        let all_att = read(&ctx, &att);
        assert!(all_att[..h * t].iter().all(|&v| v == 0.0), "the first layer's slice is untouched");
        let got_att: Vec<f32> = all_att[h * t..].chunks(t).flat_map(|r| r[..n].to_vec()).collect();
        assert_close("attention weights", &got_att, &want_att, 1e-6);
        for row in got_att.chunks(n) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
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
/// position, and the last token's weights in the layer's slice.
#[test]
fn chunk_rope_kv_and_attention_match_cpu() {
    for ctx in gpus() {
        eprintln!("subgroups: {}", ctx.subgroups);
        let (h, hkv, hd, t, base) = (6usize, 2usize, 16usize, 96usize, 10000.0f32);
        let (d, kv) = (h * hd, hkv * hd);
        let row = d + 2 * kv;
        let (start, n, b) = (60usize, 9usize, 16usize);
        let mut qkv = random(b * row, 16, 1.0);
        let mut k_cache = random(t * kv, 17, 1.0);
        let mut v_cache = random(t * kv, 18, 1.0);
        let (kb, vb, qb) = (buf(&ctx, "k", &k_cache), buf(&ctx, "v", &v_cache), buf(&ctx, "qkv", &qkv));
        let table = buf(&ctx, "table", &cpu::rope_table(t, hd, base));
        let out = ctx.storage("out", (b * d) as u64 * 4).unwrap();
        let att = ctx.storage("att", ((1 + b) * h * t) as u64 * 4).unwrap();
        let steps = StepTable::chunk(&ctx).unwrap();
        steps.set_chunk(&ctx.queue, start, n);
        let mut rec = Recorder::new(&ctx);
        let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
        let tokens = Tokens::Chunk(b as u32);
        let rb = RopeKvBuffers { qkv: &qb, k_cache: &kb, v_cache: &vb, table: &table };
        ops::rope_kv(&mut rec, tokens, "rope_kv".into(), &rb, heads, KvType::F32).unwrap();
        let ap = shape(heads, 3, t, 0, h * t);
        attention(&ctx, &mut rec, tokens, (&out, &att, &qb, &kb, &vb), &ap);
        rec.finish("chunk", Some(&steps)).unwrap().run(&ctx, &steps, 0);

        for i in 0..n {
            let r = &mut qkv[i * row..][..row];
            let mut rotated = r.to_vec();
            cpu::rope(&mut rotated[..(h + hkv) * hd], hd, start + i, base);
            k_cache[(start + i) * kv..][..kv].copy_from_slice(&rotated[d..d + kv]);
            v_cache[(start + i) * kv..][..kv].copy_from_slice(&r[d + kv..]);
            r[..d].copy_from_slice(&rotated[..d]);
        }
        assert_close("rope on q", &read(&ctx, &qb), &qkv, 1e-5);
        assert_close("k cache after rope_kv", &read(&ctx, &kb), &k_cache, 1e-5);
        assert_eq!(read(&ctx, &vb), v_cache, "v cache after rope_kv");
        let k_cache = read(&ctx, &kb);
        let got = read(&ctx, &out);
        let all_att = read(&ctx, &att);
        for i in 0..n {
            let len = start + i + 1;
            let mut want = vec![0.0; d];
            let mut want_att = vec![0.0; h * len];
            cpu::attention(&mut want, &mut want_att, &qkv[i * row..][..d], &k_cache, &v_cache, len, hkv, hd);
            assert_close(&format!("attention of token {i}"), &got[i * d..][..d], &want, 1e-5);
            if i + 1 == n {
                let got_att: Vec<f32> = all_att[..h * t].chunks(t).flat_map(|r| r[..len].to_vec()).collect();
                assert_close("last token's attention weights", &got_att, &want_att, 1e-6);
            }
        }
        assert!(got[n * d..].iter().all(|&v| v == 0.0), "rows past the chunk are untouched");
        ctx.check_errors().unwrap();
    }
}

#[test]
fn swiglu_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let f = 130;
    let gu = random(2 * f, 9, 4.0);
    let mut want = vec![0.0; f];
    cpu::swiglu(&mut want, &gu[..f], &gu[f..]);
    let out = ctx.storage("out", f as u64 * 4).unwrap();
    let b = buf(&ctx, "gate_up", &gu);
    let mut rec = Recorder::new(&ctx);
    ops::swiglu(&mut rec, Tokens::One, "swiglu".into(), &out, &b, f as u32).unwrap();
    let steps = StepTable::new(&ctx, 1).unwrap();
    rec.finish("swiglu", Some(&steps)).unwrap().run(&ctx, &steps, 0);
    assert_close("swiglu", &read(&ctx, &out), &want, 1e-5);
}

#[test]
fn recorder_checks_buffer_count() {
    let Some(ctx) = gpu() else { return };
    let b = ctx.storage("b", 16).unwrap();
    let mut rec = Recorder::new(&ctx);
    let err = rec.push("bad", Kernel::SwiGlu, &[&b], &params::SwiGlu { n: 4 }, Grid::invocations(4)).map(|_| ()).unwrap_err().to_string();
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

/// One shader source, several variants: `//#if FLAG … //#else … //#endif` blocks keep one side;
/// the plain variant of every kernel names no subgroup built-in and no packed-f16 cache.
#[test]
fn specialisation_keeps_one_side() {
    use kvscope::gpu::kernels::specialise;
    let src = "a\n//#if subgroups\nb\n//#else\nc\n//#endif\n//#if kv_f16\nd\n//#endif\ne\n";
    assert_eq!(specialise(src, &[]), "a\nc\ne\n");
    assert_eq!(specialise(src, &["subgroups"]), "a\nb\ne\n");
    assert_eq!(specialise(src, &["subgroups", "kv_f16"]), "a\nb\nd\ne\n");
    let tuning = kvscope::gpu::kernels::Tuning { matvec_rows: 1, matmul_rows: 1, matmul_tokens: 1, prefill_chunk: 32 };
    for k in [Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F32 }, Kernel::RmsNorm, Kernel::RopeKv { kv: KvType::F32 }] {
        let spec = k.spec(tuning);
        let plain = spec.source(false);
        let code: String = plain.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
        assert!(!code.contains("subgroup") && !code.contains("2x16float") && !plain.contains("//#"), "{}", spec.label);
    }
    let f16 = Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F16 }.spec(tuning).source(true);
    assert!(f16.contains("unpack2x16float") && f16.contains("subgroupAdd"));
}

/// The bindings each pipeline is built with are the ones its WGSL declares, in order: outputs
/// (read_write), inputs (read), params, step.
#[test]
fn bindings_are_read_from_the_shader() {
    use kvscope::gpu::kernels::{bindings, Slot::*, Tuning};
    let tuning = Tuning { matvec_rows: 1, matmul_rows: 1, matmul_tokens: 1, prefill_chunk: 32 };
    let src = |k: Kernel| k.spec(tuning).source(false);
    assert_eq!(bindings(&src(Kernel::MatVec(GgmlType::Q4_1))), [Out, In, In, Params]);
    assert_eq!(bindings(&src(Kernel::MatMul(GgmlType::Q8_0))), [Out, In, In, Params, Step]);
    assert_eq!(bindings(&src(Kernel::RopeKv { kv: KvType::F16 })), [Out, Out, Out, In, Params, Step]);
    assert_eq!(bindings(&src(Kernel::Attention { head_dim: 64, group: 3, kv: KvType::F16 })), [Out, Out, In, In, In, Params, Step]);
    assert_eq!(bindings(&src(Kernel::Argmax)), [Out, In, Params]);
}

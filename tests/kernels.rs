//! Every kernel against its `cpu` function on seeded random data.

mod common;

use common::{assert_close, gpu, random};
use kvscope::cpu;
use kvscope::gpu::{params, GpuContext, Kernel, Recorder, StepTable};
use kvscope::quant::{dequantize_vec, quantize, GgmlType};

const TYPES: [GgmlType; 5] = [GgmlType::F32, GgmlType::F16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0];

fn read(ctx: &GpuContext, b: &wgpu::Buffer) -> Vec<f32> {
    pollster::block_on(ctx.read_f32(b)).expect("readback")
}

fn buf(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    ctx.storage_with(label, bytemuck::cast_slice(data)).expect("buffer")
}

/// y = W·x (and y += W·x at an offset) for every weight type, against CPU dequantise-then-multiply
/// of the same blocks. 100 rows: not a multiple of the 64-row workgroup.
#[test]
fn matvec_matches_cpu_for_every_type() {
    let Some(ctx) = gpu() else { return };
    let (rows, cols) = (100usize, 96usize);
    let x = random(cols, 1, 1.0);
    for (i, ty) in TYPES.into_iter().enumerate() {
        let w_f32 = random(rows * cols, 10 + i as u64, 0.5);
        let w_bytes = quantize(ty, &w_f32);
        let w_deq = dequantize_vec(ty, &w_bytes, rows * cols);
        let mut want = vec![0.0; rows];
        cpu::matvec(&mut want, &w_deq, &x);

        let w = ctx.storage_with("w", &w_bytes).unwrap();
        let xb = buf(&ctx, "x", &x);
        // y = [3 old values | W·x written at offset 3]; then the accumulate form adds W·x again.
        let y = buf(&ctx, "y", &vec![7.0; rows + 3]);
        let row_bytes = ty.bytes_for(cols) as u32;
        let mut rec = Recorder::new(&ctx);
        let p = params::MatVec { rows: rows as u32, cols: cols as u32, row_bytes, out_offset: 3, accumulate: 0 };
        rec.push("mv", Kernel::MatVec(ty), &[&y, &w, &xb], &p, rows as u32, true).unwrap();
        let prog = rec.finish("mv", None).unwrap();
        let steps = StepTable::new(&ctx, 1).unwrap();
        prog.run(&ctx, &steps, 0);
        let got = read(&ctx, &y);
        assert_eq!(&got[..3], &[7.0, 7.0, 7.0], "{ty:?}: wrote before out_offset");
        assert_close(&format!("matvec {ty:?}"), &got[3..], &want, 1e-4);

        let mut rec = Recorder::new(&ctx);
        rec.push("mv+", Kernel::MatVec(ty), &[&y, &w, &xb], &params::MatVec { accumulate: 1, ..p }, rows as u32, true).unwrap();
        rec.finish("mv+", None).unwrap().run(&ctx, &steps, 0);
        let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
        assert_close(&format!("matvec+ {ty:?}"), &read(&ctx, &y)[3..], &twice, 2e-4);
    }
    ctx.check_errors().unwrap();
}

/// x = E[tokens[pos]] for every type: decoding is exact, so the rows must be bit-identical.
#[test]
fn embed_matches_dequantised_row() {
    let Some(ctx) = gpu() else { return };
    let (vocab, dim) = (40usize, 96usize);
    let tokens: Vec<u32> = vec![5, 39, 0, 17];
    for (i, ty) in TYPES.into_iter().enumerate() {
        let e_bytes = quantize(ty, &random(vocab * dim, 20 + i as u64, 1.0));
        let e = dequantize_vec(ty, &e_bytes, vocab * dim);
        let w = ctx.storage_with("E", &e_bytes).unwrap();
        let tok = ctx.storage_with("tokens", bytemuck::cast_slice(&tokens)).unwrap();
        let x = ctx.storage("x", dim as u64 * 4).unwrap();
        let steps = StepTable::new(&ctx, tokens.len()).unwrap();
        let mut rec = Recorder::new(&ctx);
        rec.push(
            "embed",
            Kernel::Embed(ty),
            &[&x, &w, &tok],
            &params::Embed { dim: dim as u32, row_bytes: ty.bytes_for(dim) as u32 },
            dim as u32 / 32,
            true,
        )
        .unwrap();
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
    let Some(ctx) = gpu() else { return };
    let n = 100;
    let (x, w) = (random(n, 3, 2.0), random(n, 4, 1.0));
    let mut want = vec![0.0; n];
    cpu::rmsnorm(&mut want, &x, &w, 1e-5);
    let out = ctx.storage("out", n as u64 * 4).unwrap();
    let (xb, wb) = (buf(&ctx, "x", &x), buf(&ctx, "w", &w));
    let mut rec = Recorder::new(&ctx);
    rec.push("rmsnorm", Kernel::RmsNorm, &[&out, &xb, &wb], &params::RmsNorm { n: n as u32, eps: 1e-5 }, 1, false).unwrap();
    rec.finish("rmsnorm", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
    assert_close("rmsnorm", &read(&ctx, &out), &want, 1e-5);
}

/// RoPE on the q and k heads of a qkv buffer; v must be left alone.
#[test]
fn rope_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let (h, hkv, hd, base, ctx_len) = (4usize, 2usize, 16usize, 10000.0f32, 64usize);
    let qkv = random((h + 2 * hkv) * hd, 5, 1.0);
    let b = buf(&ctx, "qkv", &qkv);
    let table = buf(&ctx, "table", &cpu::rope_table(ctx_len, hd, base));
    let steps = StepTable::new(&ctx, ctx_len).unwrap();
    let mut rec = Recorder::new(&ctx);
    rec.push(
        "rope",
        Kernel::Rope,
        &[&b, &table],
        &params::Rope { n_rot_heads: (h + hkv) as u32, head_dim: hd as u32 },
        ((h + hkv) * hd / 2) as u32,
        true,
    )
    .unwrap();
    let pos = 37;
    rec.finish("rope", Some(&steps)).unwrap().run(&ctx, &steps, pos);
    let mut want = qkv.clone();
    cpu::rope(&mut want[..(h + hkv) * hd], hd, pos, base);
    assert_close("rope", &read(&ctx, &b), &want, 1e-5);
}

/// K and V land in cache row pos and nowhere else; then attention over rows 0..=pos matches the
/// CPU, weights included.
#[test]
fn kv_write_and_attention_match_cpu() {
    let Some(ctx) = gpu() else { return };
    let (h, hkv, hd, t) = (4usize, 2usize, 16usize, 80usize);
    let (d, kv) = (h * hd, hkv * hd);
    let qkv = random(d + 2 * kv, 6, 1.0);
    let mut k_cache = random(t * kv, 7, 1.0);
    let mut v_cache = random(t * kv, 8, 1.0);
    let (kb, vb, qb) = (buf(&ctx, "k", &k_cache), buf(&ctx, "v", &v_cache), buf(&ctx, "qkv", &qkv));
    let out = ctx.storage("out", d as u64 * 4).unwrap();
    // Two layers' slices; this dispatch writes the second.
    let att = ctx.storage("att", (2 * h * t) as u64 * 4).unwrap();
    let steps = StepTable::new(&ctx, t).unwrap();
    let mut rec = Recorder::new(&ctx);
    rec.push("kv", Kernel::KvWrite, &[&kb, &vb, &qb], &params::KvWrite { q_dim: d as u32, kv_dim: kv as u32 }, kv as u32, true).unwrap();
    let ap = params::Attention {
        n_heads: h as u32,
        n_kv_heads: hkv as u32,
        head_dim: hd as u32,
        att_stride: t as u32,
        att_offset: (h * t) as u32,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    rec.push("attn", Kernel::Attention, &[&out, &att, &qb, &kb, &vb], &ap, h as u32, false).unwrap();
    // 70 positions: more than one pass of the 64-wide workgroup over the cache.
    let pos = 69;
    rec.finish("attn", Some(&steps)).unwrap().run(&ctx, &steps, pos);

    k_cache[pos * kv..(pos + 1) * kv].copy_from_slice(&qkv[d..d + kv]);
    v_cache[pos * kv..(pos + 1) * kv].copy_from_slice(&qkv[d + kv..]);
    assert_eq!(read(&ctx, &kb), k_cache, "k cache after kv_write");
    assert_eq!(read(&ctx, &vb), v_cache, "v cache after kv_write");

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
    rec.push("swiglu", Kernel::SwiGlu, &[&out, &b], &params::SwiGlu { n: f as u32 }, f as u32, true).unwrap();
    rec.finish("swiglu", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
    assert_close("swiglu", &read(&ctx, &out), &want, 1e-5);
}

#[test]
fn recorder_checks_buffer_count() {
    let Some(ctx) = gpu() else { return };
    let b = ctx.storage("b", 16).unwrap();
    let mut rec = Recorder::new(&ctx);
    let err = rec.push("bad", Kernel::SwiGlu, &[&b], &params::SwiGlu { n: 4 }, 4, true).map(|_| ()).unwrap_err().to_string();
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
        rec.push("argmax", Kernel::Argmax, &[&out, &l], &params::Argmax { n: n as u32 }, 1, false).unwrap();
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
    rec.push("argmax", Kernel::Argmax, &[&out, &l], &params::Argmax { n: 300 }, 1, false).unwrap();
    rec.finish("argmax", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
    assert_eq!(read(&ctx, &out)[0].to_bits(), kvscope::sampler::argmax(&logits));
}

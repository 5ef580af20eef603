//! Writes a large synthetic GGUF for the memory benchmark (`npm run bench:memory`): a llama-shaped
//! model of random Q4_0 weights on a real vocabulary (the default model's: its `tokenizer.*`
//! keys), streamed to the file as it is written. An 8B-class shape by default (32 layers, d 4096,
//! 32 query and 8 KV heads, ffn 14336: 3.9 GiB); the layers cycle through two sets of weights.
//!
//! With `--zeros` every weight is zero and the file is sparse (its header on disk, the rest
//! holes): a model of any size for the checks made from a header (the browser test of a model
//! refused before download).
//!
//! cargo run --release --example big_model -- OUT [--layers N] [--dim D] [--ffn F] [--heads H]
//!     [--kv-heads K] [--vocab-from GGUF] [--zeros]

use std::sync::Arc;

use kvscope::core::gguf::{Gguf, Value, Writer};
use kvscope::core::quant::GgmlType;

struct Shape {
    layers: u64,
    dim: u64,
    ffn: u64,
    heads: u64,
    kv_heads: u64,
}

/// `rows` rows of `cols` random Q4_0 values: each 32-value block a f16 scale then 16 bytes of
/// 4-bit codes; values `d·(q − 8)` with a spread of about 1/√cols (the matrices' fan-in).
fn q4_0(cols: u64, rows: u64, rng: &mut fastrand::Rng) -> Arc<[u8]> {
    assert_eq!(cols % 32, 0, "Q4_0 rows are whole blocks of 32");
    let blocks = (cols / 32 * rows) as usize;
    let d = half::f16::from_f32(0.5 / (4.6 * (cols as f32).sqrt())).to_le_bytes();
    let mut out = vec![0u8; blocks * 18];
    for b in out.chunks_exact_mut(18) {
        b[..2].copy_from_slice(&d);
        rng.fill(&mut b[2..]);
    }
    out.into()
}

fn f32s(n: u64, v: f32) -> Arc<[u8]> {
    (0..n).flat_map(|_| v.to_le_bytes()).collect::<Vec<u8>>().into()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: big_model OUT [--layers N] [--dim D] [--ffn F] [--heads H] [--kv-heads K] [--vocab-from GGUF] [--zeros]")?;
    let mut s = Shape { layers: 32, dim: 4096, ffn: 14336, heads: 32, kv_heads: 8 };
    let mut vocab_from = kvscope::DEFAULT_MODEL.to_string();
    let mut zeros = false;
    while let Some(flag) = args.next() {
        if flag == "--zeros" {
            zeros = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--layers" => s.layers = value.parse()?,
            "--dim" => s.dim = value.parse()?,
            "--ffn" => s.ffn = value.parse()?,
            "--heads" => s.heads = value.parse()?,
            "--kv-heads" => s.kv_heads = value.parse()?,
            "--vocab-from" => vocab_from = value,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    let source = std::fs::read(&vocab_from).map_err(|e| format!("{vocab_from}: {e}"))?;
    let g = Gguf::parse(&source)?;
    let mut w = Writer::new();
    let arch = "llama";
    w.kv("general.architecture", Value::String(arch.into()))
        .kv("general.name", Value::String(format!("synthetic {}-layer d{} Q4_0", s.layers, s.dim)))
        .kv(&format!("{arch}.block_count"), Value::U32(s.layers as u32))
        .kv(&format!("{arch}.context_length"), Value::U32(8192))
        .kv(&format!("{arch}.embedding_length"), Value::U32(s.dim as u32))
        .kv(&format!("{arch}.feed_forward_length"), Value::U32(s.ffn as u32))
        .kv(&format!("{arch}.attention.head_count"), Value::U32(s.heads as u32))
        .kv(&format!("{arch}.attention.head_count_kv"), Value::U32(s.kv_heads as u32))
        .kv(&format!("{arch}.rope.freq_base"), Value::F32(500000.0))
        .kv(&format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    for (k, v) in g.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        w.kv(k, v.clone());
    }
    let vocab = g.str_array("tokenizer.ggml.tokens")?.len() as u64;
    let (d, kv) = (s.dim, s.dim / s.heads * s.kv_heads);
    let q4 = GgmlType::Q4_0.id();
    if zeros {
        return write_zeros(&mut w, &s, vocab, &out);
    }
    let mut rng = fastrand::Rng::with_seed(8);
    w.tensor_shared("token_embd.weight", &[d, vocab], q4, q4_0(d, vocab, &mut rng));
    w.tensor_shared("output_norm.weight", &[d], GgmlType::F32.id(), f32s(d, 1.0));
    w.tensor_shared("output.weight", &[d, vocab], q4, q4_0(d, vocab, &mut rng));
    let norm = f32s(d, 1.0);
    // Two sets of layer weights, used in turn.
    let sets: Vec<[Arc<[u8]>; 7]> = (0..2)
        .map(|_| {
            [
                q4_0(d, d, &mut rng),
                q4_0(d, kv, &mut rng),
                q4_0(d, kv, &mut rng),
                q4_0(d, d, &mut rng),
                q4_0(d, s.ffn, &mut rng),
                q4_0(d, s.ffn, &mut rng),
                q4_0(s.ffn, d, &mut rng),
            ]
        })
        .collect();
    for l in 0..s.layers {
        let [q, k, v, o, gate, up, down] = &sets[l as usize % sets.len()];
        let n = |t: &str| format!("blk.{l}.{t}.weight");
        w.tensor_shared(&n("attn_norm"), &[d], GgmlType::F32.id(), norm.clone())
            .tensor_shared(&n("attn_q"), &[d, d], q4, q.clone())
            .tensor_shared(&n("attn_k"), &[d, kv], q4, k.clone())
            .tensor_shared(&n("attn_v"), &[d, kv], q4, v.clone())
            .tensor_shared(&n("attn_output"), &[d, d], q4, o.clone())
            .tensor_shared(&n("ffn_norm"), &[d], GgmlType::F32.id(), norm.clone())
            .tensor_shared(&n("ffn_gate"), &[d, s.ffn], q4, gate.clone())
            .tensor_shared(&n("ffn_up"), &[d, s.ffn], q4, up.clone())
            .tensor_shared(&n("ffn_down"), &[s.ffn, d], q4, down.clone());
    }
    let tmp = format!("{out}.part");
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&tmp)?);
    w.write_to(&mut f)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &out)?;
    println!("{out}: {} bytes", std::fs::metadata(&out)?.len());
    Ok(())
}

/// The model of `s` with every weight zero (norms one), written sparse.
fn write_zeros(w: &mut Writer, s: &Shape, vocab: u64, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (d, kv) = (s.dim, s.dim / s.heads * s.kv_heads);
    let q4 = GgmlType::Q4_0.id();
    let mut z = |name: &str, cols: u64, rows: u64| {
        w.tensor_zeros(name, &[cols, rows], q4, cols / 32 * 18 * rows);
    };
    z("token_embd.weight", d, vocab);
    z("output.weight", d, vocab);
    let mut shapes = vec![("attn_q", d, d), ("attn_k", d, kv), ("attn_v", d, kv), ("attn_output", d, d)];
    shapes.extend([("ffn_gate", d, s.ffn), ("ffn_up", d, s.ffn), ("ffn_down", s.ffn, d)]);
    for l in 0..s.layers {
        for (t, cols, rows) in &shapes {
            z(&format!("blk.{l}.{t}.weight"), *cols, *rows);
        }
    }
    let norm = f32s(d, 1.0);
    w.tensor_shared("output_norm.weight", &[d], GgmlType::F32.id(), norm.clone());
    for l in 0..s.layers {
        for t in ["attn_norm", "ffn_norm"] {
            w.tensor_shared(&format!("blk.{l}.{t}.weight"), &[d], GgmlType::F32.id(), norm.clone());
        }
    }
    let mut f = std::fs::File::create(out)?;
    w.write_sparse(&mut f)?;
    println!("{out}: {} bytes (sparse)", f.metadata()?.len());
    Ok(())
}

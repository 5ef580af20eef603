//! The GGUF reader on files built by hand: every value type round-trips, and each kind of
//! malformed file gets an error that names the problem (never a panic).

mod common;

use common::{synthetic_model, synthetic_writer, SynTypes};
use kvscope::core::config::Config;
use kvscope::core::gguf::{Gguf, Value, Writer};
use kvscope::core::quant::GgmlType::*;

fn err(bytes: &[u8]) -> String {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("parsed a malformed file"),
        Err(e) => e.to_string(),
    }
}

fn config_err(bytes: &[u8]) -> String {
    let g = Gguf::parse(bytes).expect("parses");
    Config::from_gguf(&g).expect_err("config should be refused").to_string()
}

fn small_model() -> Vec<u8> {
    synthetic_model(&SynTypes::q4_1(), 1, 3)
}

#[test]
fn every_value_type_round_trips() {
    let mut w = Writer::new();
    let vals = vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-5)),
        ("u16", Value::U16(60000)),
        ("i16", Value::I16(-300)),
        ("u32", Value::U32(1 << 31)),
        ("i32", Value::I32(-70000)),
        ("f32", Value::F32(1.5)),
        ("bool", Value::Bool(true)),
        ("str", Value::String("héllo".into())),
        ("arr", Value::Array(4, vec![Value::U32(1), Value::U32(2)])),
        ("nested", Value::Array(9, vec![Value::Array(8, vec![Value::String("a".into())]), Value::Array(8, vec![])])),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-2.25)),
    ];
    for (k, v) in &vals {
        w.kv(k, v.clone());
    }
    w.kv("general.alignment", Value::U32(64));
    w.alignment = 64;
    w.tensor("t", &[32, 2], Q8_0.id(), vec![1; 68]);
    w.tensor("u", &[3], F32.id(), vec![2; 12]);
    let bytes = w.to_bytes();
    let g = Gguf::parse(&bytes).unwrap();
    for (k, v) in &vals {
        assert_eq!(g.get(k), Some(v), "{k}");
    }
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_offset % 64, 0);
    let t = g.tensor("t").unwrap();
    assert_eq!((t.dims.clone(), t.size), (vec![32, 2], 68));
    assert_eq!(g.tensor_data(g.tensor("u").unwrap()).unwrap(), &[2; 12]);

    w.version = 2;
    assert_eq!(Gguf::parse(&w.to_bytes()).unwrap().version, 2);
}

#[test]
fn not_gguf_at_all() {
    assert!(err(b"").contains("truncated"), "{}", err(b""));
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    assert!(err(png).contains("not a GGUF file"), "{}", err(png));
    assert!(err(b"hello, world").contains("not a GGUF file"));
}

#[test]
fn unsupported_version() {
    let mut b = small_model();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err(&b).contains("unsupported GGUF version 1"), "{}", err(&b));
    b[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(err(&b).contains("version 4"));
}

/// Every prefix of a valid file is refused with a message, and none panics.
#[test]
fn truncated_anywhere() {
    let b = small_model();
    let g = Gguf::parse(&b).unwrap();
    // Cutting inside the tensor data is caught by the bounds check too.
    let step = 1.max(b.len() / 4000);
    for n in (0..g.data_offset as usize + 64).chain((g.data_offset as usize..b.len()).step_by(step)) {
        if n >= b.len() {
            continue;
        }
        let e = err(&b[..n]);
        assert!(e.contains("truncated") || e.contains("outside") || e.contains("cannot fit"), "cut at {n}: {e}");
    }
}

#[test]
fn absurd_counts_and_lengths() {
    let b = small_model();
    let mut huge_kv = b.clone();
    huge_kv[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&huge_kv).contains("metadata count"), "{}", err(&huge_kv));
    let mut huge_t = b.clone();
    huge_t[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err(&huge_t).contains("tensor count"), "{}", err(&huge_t));
    // The first key's string length.
    let mut long_key = b.clone();
    long_key[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&long_key).contains("metadata key #0"), "{}", err(&long_key));

    let mut w = Writer::new();
    w.kv("a", Value::Array(4, vec![Value::U32(1); 4]));
    let mut bytes = w.to_bytes();
    // Array count field sits after: header 24 | key len 8 + "a" | type 4 | elem type 4.
    let at = 24 + 9 + 4 + 4;
    bytes[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = err(&bytes);
    assert!(e.contains("array of") && e.contains("truncated"), "{e}");

    let mut w = Writer::new();
    w.kv("deep", Value::Array(9, vec![Value::Array(9, vec![Value::Array(9, vec![Value::Array(9, vec![Value::Array(4, vec![])])])])]));
    assert!(err(&w.to_bytes()).contains("nested deeper"), "{}", err(&w.to_bytes()));

    let mut w = Writer::new();
    w.kv("s", Value::String("x".into()));
    let mut bytes = w.to_bytes();
    let x = bytes.iter().rposition(|&b| b == b'x').unwrap();
    bytes[x] = 0xff;
    assert!(err(&bytes).contains("UTF-8"), "{}", err(&bytes));
}

fn one_tensor(dims: &[u64], ty: u32, data: Vec<u8>) -> Writer {
    let mut w = Writer::new();
    w.tensor("blk.0.attn_q.weight", dims, ty, data);
    w
}

#[test]
fn tensor_table_errors() {
    // Type Q8_K (15) is named in the error with the tensor, and the supported types listed.
    let e = err(&one_tensor(&[256, 1], 15, vec![0; 292]).to_bytes());
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("Q8_K"), "{e}");
    assert!(e.contains(&format!("(supported: {})", kvscope::core::quant::supported_names())) && e.contains("Q4_K, Q5_K, Q6_K"), "{e}");
    let e = err(&one_tensor(&[32], 99, vec![0; 4]).to_bytes());
    assert!(e.contains("unknown type 99"), "{e}");

    // Data past the end: the shape says 64 rows of Q8_0, the file holds one.
    let e = err(&one_tensor(&[32, 64], 8, vec![0; 34]).to_bytes());
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("outside"), "{e}");

    // Row length not a multiple of the block.
    let e = err(&one_tensor(&[48, 1], 3, vec![0; 40]).to_bytes());
    assert!(e.contains("not a multiple"), "{e}");
    // A K-quant row of 288 elements: nine blocks of 32, but not whole super-blocks of 256.
    let e = err(&one_tensor(&[288, 1], 12, vec![0; 288]).to_bytes());
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("row length 288 is not a multiple of the Q4_K block of 256"), "{e}");

    let e = err(&one_tensor(&[0, 4], 0, vec![]).to_bytes());
    assert!(e.contains("no elements"), "{e}");
    let e = err(&one_tensor(&[1 << 40, 1 << 40], 0, vec![0; 4]).to_bytes());
    assert!(e.contains("overflows"), "{e}");
    let e = err(&one_tensor(&[1, 1, 1, 1, 1], 0, vec![0; 4]).to_bytes());
    assert!(e.contains("5 dimensions"), "{e}");

    // Misaligned and overlapping offsets: patch the offset field of the second tensor.
    let mut w = Writer::new();
    w.tensor("a", &[8], 0, vec![0; 32]).tensor("b", &[8], 0, vec![0; 32]);
    let bytes = w.to_bytes();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.tensor("b").unwrap().offset, 32);
    // The offset of "b" (32) is the last u64 of the tensor table.
    let at = bytes[..g.data_offset as usize].windows(8).rposition(|w| w == 32u64.to_le_bytes()).unwrap();
    let mut mis = bytes.clone();
    mis[at..at + 8].copy_from_slice(&4u64.to_le_bytes());
    assert!(err(&mis).contains("not a multiple of the alignment"), "{}", err(&mis));
    let mut overlap = bytes.clone();
    overlap[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(err(&overlap).contains("overlaps"), "{}", err(&overlap));

    let mut w = Writer::new();
    w.tensor("same", &[8], 0, vec![0; 32]).tensor("same", &[8], 0, vec![0; 32]);
    assert!(err(&w.to_bytes()).contains("appears twice"));

    let mut w = Writer::new();
    w.kv("general.alignment", Value::U32(3));
    assert!(err(&w.to_bytes()).contains("general.alignment"));
}

#[test]
fn model_config_errors_name_the_key_or_tensor() {
    // Metadata without tensors.
    let (w, _) = synthetic_writer(1);
    let e = config_err(&w.to_bytes());
    assert!(e.contains("token_embd.weight"), "no tensors at all: {e}");

    let (mut w2, vocab) = synthetic_writer(1);
    w2.tensor("token_embd.weight", &[64, vocab as u64 - 1], 0, vec![0; 64 * 4 * (vocab - 1)]);
    let e = config_err(&w2.to_bytes());
    assert!(e.contains("vocabulary has") && e.contains("rows"), "{e}");

    let mut w3 = Writer::new();
    w3.kv("general.architecture", Value::String("mamba".into()));
    assert!(config_err(&w3.to_bytes()).contains("unsupported model architecture `mamba`"));

    let mut w4 = Writer::new();
    w4.kv("general.architecture", Value::String("llama".into()));
    let e = config_err(&w4.to_bytes());
    assert!(e.contains("llama.embedding_length") && e.contains("missing"), "{e}");

    let mut w5 = Writer::new();
    w5.kv("general.architecture", Value::String("llama".into())).kv("llama.embedding_length", Value::String("big".into()));
    let e = config_err(&w5.to_bytes());
    assert!(e.contains("llama.embedding_length") && e.contains("string"), "{e}");

    // A complete model parses; with one tensor of the wrong shape it is refused by name.
    let good = small_model();
    assert!(Config::from_gguf(&Gguf::parse(&good).unwrap()).is_ok());
    let (mut w6, vocab) = synthetic_writer(1);
    w6.tensor("token_embd.weight", &[64, vocab as u64], 0, vec![0; 64 * 4 * vocab]);
    w6.tensor("output_norm.weight", &[64], 0, vec![0; 256]);
    w6.tensor("blk.0.attn_norm.weight", &[32], 0, vec![0; 128]);
    let e = config_err(&w6.to_bytes());
    assert!(e.contains("blk.0.attn_norm.weight") && e.contains("shape [32]"), "{e}");
    let (mut w7, vocab) = synthetic_writer(1);
    w7.tensor("token_embd.weight", &[64, vocab as u64], 0, vec![0; 64 * 4 * vocab]);
    w7.tensor("output_norm.weight", &[64], 0, vec![0; 256]);
    let e = config_err(&w7.to_bytes());
    assert!(e.contains("tensor `blk.0.attn_norm.weight` is missing"), "{e}");
}

/// The header parses from a prefix; a short prefix is "truncated", never a wrong answer.
#[test]
fn header_from_a_prefix() {
    let b = small_model();
    let full = Gguf::parse(&b).unwrap();
    let mut src: &[u8] = &b;
    let header = kvscope::core::gguf::read_header(&mut src).unwrap();
    assert_eq!(header.len() as u64, full.data_offset);
    let g = Gguf::parse_prefix(&header, b.len() as u64).unwrap();
    assert_eq!(g.metadata, full.metadata);
    assert_eq!(g.tensors.len(), full.tensors.len());
    assert!(g.tensor_data(&g.tensors[0]).is_err(), "tensor data is not in a header-only parse");
    let e = Gguf::parse_prefix(&b[..100], b.len() as u64).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

/// Loading reads each tensor once through a source: the largest single read is the largest
/// tensor, not the file.
#[test]
fn loading_reads_tensor_by_tensor() {
    /// Records the largest read of tensor data (reads at or after `data_start`).
    struct Counting<'a> {
        bytes: &'a [u8],
        data_start: u64,
        largest: u64,
    }
    impl kvscope::core::gguf::ByteSource for Counting<'_> {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read(&mut self, r: std::ops::Range<u64>, out: &mut Vec<u8>) -> kvscope::Result<()> {
            if r.start >= self.data_start {
                self.largest = self.largest.max(r.end - r.start);
            }
            let mut s = self.bytes;
            s.read(r, out)
        }
    }
    let b = small_model();
    let g = Gguf::parse(&b).unwrap();
    let mut src = Counting { bytes: &b, data_start: g.data_offset, largest: 0 };
    let e = pollster::block_on(kvscope::Engine::load_from(
        &mut src,
        kvscope::LoadOptions { backend: kvscope::BackendKind::Reference, context: 8, ..Default::default() },
    ))
    .unwrap();
    let biggest = g.tensors.iter().map(|t| t.size).max().unwrap();
    assert_eq!(src.largest, biggest, "each tensor is read on its own");
    assert_eq!(e.cfg.n_layers, 1);
}

//! Context past the window (StreamingLLM): under a cache policy that evicts, the text runs on past
//! the context T the engine was loaded with, in fixed memory, and the summary names the policy
//! that made it possible; a cache that holds every position stops at T as before.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{assert_close, synthetic_arch_model, synthetic_model, SynTypes};
use kvscope::core::config::Arch;
use kvscope::core::quant::GgmlType::F32;
use kvscope::{BackendKind, Engine, Error, GenerateOptions, LoadOptions, PastContext, StopReason};

/// Counts this thread's allocations (tests run on threads of their own).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.realloc(p, l, size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(|n| n.get())
}

/// T of every test here.
const T: usize = 24;

fn load(bytes: &[u8], policy: &str) -> Engine {
    let o = LoadOptions { backend: BackendKind::Reference, context: T, ..Default::default() }.with_policy(policy.parse().unwrap());
    pollster::block_on(Engine::load(bytes, o)).unwrap()
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 5) % 261).collect()
}

/// `sink-4-window-12` in a context of 24 generates 60 tokens (to position 64) and stops for
/// `max_tokens`, naming itself in the summary; its cache's bytes are the same at position 30 and
/// 60, and feeding past the context allocates nothing once the buffers have their size.
#[test]
fn sinks_and_window_generate_past_the_context_in_fixed_memory() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    let mut e = load(&bytes, "sink-4-window-12");
    // Ban the synthetic vocabulary's end-of-text tokens, so that the run goes the whole way.
    let ban = (0..3).map(|id| (id.to_string(), -100.0)).collect();
    let go = GenerateOptions { max_tokens: 60, logit_bias: ban, ..Default::default() };
    let mut positions = Vec::new();
    let s = pollster::block_on(e.generate(&ids(4), &go, &mut |ev| {
        positions.push(ev.pos);
        true
    }))
    .expect("generates past the context");
    assert_eq!((s.generated_tokens, s.stop), (60, StopReason::MaxTokens));
    assert_eq!(positions, (4..64).collect::<Vec<_>>());
    let past = PastContext { policy: "sink-4-window-12".into(), context: T, held: 16 };
    assert_eq!(s.past_context.as_ref(), Some(&past));
    assert_eq!(past.to_string(), "context 24 passed at position 24: cache policy sink-4-window-12 keeps 16 positions");

    e.reset();
    let text = ids(100);
    let bytes_at = |e: &mut Engine, to: usize| {
        let from = e.position();
        for &id in &text[from..to] {
            pollster::block_on(e.feed(&[id])).unwrap();
        }
        e.memory().1
    };
    let (at30, at60) = (bytes_at(&mut e, 30), bytes_at(&mut e, 60));
    // 2 layers × K and V × 17 slots (16 held + the incoming one) × 32 values × 4 bytes.
    assert_eq!((at30, at60), (2 * 2 * 17 * 32 * 4, 2 * 2 * 17 * 32 * 4));
    bytes_at(&mut e, 90);
    // Fed again after a reset, every buffer (the engine's token list too) is already as large as
    // the text needs: 90 positions, 66 past the context, allocate nothing. One `block_on` (which
    // allocates its waker) around the whole loop.
    e.reset();
    let allocated = pollster::block_on(async {
        let before = allocations();
        for &id in &text[..90] {
            e.feed(&[id]).await.unwrap();
        }
        allocations() - before
    });
    assert_eq!(allocated, 0, "feeding positions 0..90 again allocated");
    assert_eq!(e.position(), 90);
}

/// The independent oracle. In a one-layer model K and V depend on the token alone, so at a
/// position past the context, `sink-4-window-12` (the sinks and the window turned at their places
/// in the cache) is the exact cache of the 16 tokens it holds, and `window-16` (keys turned at
/// their text positions, scores depending on the distance alone) the exact cache of its 16 to
/// rounding.
#[test]
fn past_the_context_evicting_caches_are_exact_caches_of_what_they_hold() {
    let t = SynTypes { embd: F32, q: F32, k: F32, v: F32, o: F32, gate: F32, up: F32, down: F32, output: None };
    let bytes = synthetic_model(&t, 1, 100);
    let text = ids(80);
    let logits = |policy: &str, ids: &[u32]| {
        let mut e = load(&bytes, policy);
        for &id in ids {
            pollster::block_on(e.feed(&[id])).unwrap();
        }
        e.logits().to_vec()
    };
    for n in [25, 50, 80] {
        let kept: Vec<u32> = text[..4].iter().chain(&text[n - 12..n]).copied().collect();
        assert_close(&format!("sink-4-window-12 at {n}"), &logits("sink-4-window-12", &text[..n]), &logits("f32", &kept), 1e-5);
        assert_close(&format!("window-16 at {n}"), &logits("window-16", &text[..n]), &logits("f32", &text[n - 16..n]), 1e-4);
    }
    // H2O passes the context too (what it holds depends on its scores: no shorter text to match).
    let h2o = logits("h2o-16", &text);
    assert!(h2o.iter().all(|x| x.is_finite()));
}

/// Past the context the views get the last T positions' weights: [h × T], index i ↔ position
/// p + 1 − T + i; the window's 12 positions are in view, the sinks (older) are not, so a row
/// sums to 1 less the sinks' share.
#[test]
fn past_the_context_attention_covers_the_last_t_positions() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    let mut e = load(&bytes, "sink-4-window-12");
    for &id in &ids(50) {
        pollster::block_on(e.feed(&[id])).unwrap();
    }
    let w = pollster::block_on(e.attention_weights(1)).unwrap();
    assert_eq!(w.len(), e.cfg.n_heads * T);
    for row in w.chunks(T) {
        // Positions 26..50 in view; the window 38..50 at 12..24.
        let nonzero: Vec<usize> = (0..T).filter(|&i| row[i] != 0.0).collect();
        assert_eq!(nonzero, (12..24).collect::<Vec<_>>());
        let sum = row.iter().sum::<f32>();
        assert!(0.0 < sum && sum < 1.0, "the sinks' share is out of view: {sum}");
    }
}

/// A cache that holds every position still stops at T: `feed` fails with ContextFull (or
/// PromptTooLong for a prompt longer than T), `generate` stops with `ContextFull`, and nothing
/// claims to have passed the context.
#[test]
fn caches_of_every_position_stop_at_the_context() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    for policy in ["f32", "q8_0"] {
        let mut e = load(&bytes, policy);
        let err = pollster::block_on(e.feed(&ids(T + 1))).expect_err("too long");
        assert!(matches!(err, Error::PromptTooLong { tokens: 25, capacity: T }), "{policy}: {err}");
        pollster::block_on(e.feed(&ids(T))).unwrap();
        let err = pollster::block_on(e.feed(&[5])).expect_err("full");
        assert!(matches!(err, Error::ContextFull { used: T, capacity: T }), "{policy}: {err}");
        assert!(err.to_string().contains("24 of 24"), "{err}");
        assert_eq!(e.past_context(), None);

        e.reset();
        let ban = (0..3).map(|id| (id.to_string(), -100.0)).collect();
        let go = GenerateOptions { max_tokens: 60, logit_bias: ban, ..Default::default() };
        let s = pollster::block_on(e.generate(&ids(4), &go, &mut |_| true)).unwrap();
        assert_eq!((s.stop, s.generated_tokens, s.past_context), (StopReason::ContextFull, T - 4 + 1, None), "{policy}");
    }
}

/// Every eviction rule passes the context, on global layers (Llama) and on sliding-window layers
/// with head norms (Gemma 3), its logits finite and its cache's bytes fixed; and a text fed again
/// after a reset gives the same logits (the slots of the first run do not leak into the second).
#[test]
fn every_eviction_rule_passes_the_context_on_every_layer_kind() {
    for arch in [Arch::Llama, Arch::Gemma3] {
        let bytes = synthetic_arch_model(arch, 300);
        for policy in ["window-16", "sink-4-window-12", "h2o-16"] {
            let mut e = load(&bytes, policy);
            let what = format!("{}: {policy}", arch.name());
            let run = |e: &mut Engine, n: usize| {
                for &id in &ids(n)[e.position()..] {
                    pollster::block_on(e.feed(&[id])).unwrap_or_else(|err| panic!("{what}: {err}"));
                }
                assert!(e.logits().iter().all(|x| x.is_finite()), "{what}");
                (e.logits().to_vec(), e.memory().1)
            };
            let (_, at40) = run(&mut e, 40);
            let (first, at70) = run(&mut e, 70);
            assert_eq!(at40, at70, "{}: {policy}", arch.name());
            e.reset();
            let (again, _) = run(&mut e, 70);
            assert_eq!(first, again, "{}: {policy} fed again", arch.name());
            assert_eq!(e.past_context().map(|p| p.held), Some(16));
        }
    }
}

/// The block caches code each row as it is written (`core::quant::quantize_into` into a buffer
/// kept for it): feeding the whole context again after a reset allocates nothing, as with the
/// exact cache.
#[test]
fn block_caches_code_rows_without_allocating() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    let text = ids(T);
    for policy in ["f32", "q8_0", "q4_0"] {
        let mut e = load(&bytes, policy);
        pollster::block_on(e.feed(&text)).unwrap();
        e.reset();
        let allocated = pollster::block_on(async {
            let before = allocations();
            for &id in &text {
                e.feed(&[id]).await.unwrap();
            }
            allocations() - before
        });
        assert_eq!(allocated, 0, "{policy}: feeding the context again allocated");
    }
}

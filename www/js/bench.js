// ?bench=1: after the model loads, runs the engine's benchmark (the same as `kvscope bench`) and
// shows it; #bench[data-state] goes idle → running → done | error, and the report is in
// #bench-json and window.kvscopeBench. As in the CLI, the GPU argmax is off unless asked for
// (&gpu_argmax=1). &profile=1 adds where the GPU time of a decode step and a prefill chunk goes
// (each dispatch alone, by kind; the GPU backend only).
import { $, el, mb } from './dom.js';
import { params } from './settings.js';
import { state, inside, exclusive } from './state.js';
import { showFailure, messageOf } from './feedback.js';

/** The report as [label, value] rows. */
function rows(r) {
  return [
    ['adapter', r.adapter],
    ['model', r.model],
    [`prefill (${r.prompt_tokens} tokens, ${r.prefill_chunk} per chunk)`, `${r.prefill_tokens_per_s.toFixed(2)} tok/s`],
    ['prefill token by token', `${r.prefill_token_by_token_per_s.toFixed(2)} tok/s (batched is ${r.batched_over_token_by_token.toFixed(2)}×)`],
    ['time to first token', `${r.ttft_ms.toFixed(0)} ms`],
    ...r.decode.map((d) => [`decode at context ${d.context}`, `${d.tokens_per_s.toFixed(2)} tok/s`]),
    [`decode at context ${r.decode.at(-1).context} / at ${r.decode[0].context} (median steps)`, r.decode_longest_over_shortest.toFixed(2)],
    ...(r.decode_interleaved ? [[`the same, GPU steps alternating (${r.decode_interleaved.long_median_ms.toFixed(1)} / ` +
      `${r.decode_interleaved.short_median_ms.toFixed(1)} ms)`, r.decode_interleaved.long_over_short.toFixed(2)]] : []),
    ['per decode token', `${r.dispatches_per_token} dispatches, ${r.submits_per_token} submits, ${r.maps_per_token} maps, ` +
      `${r.readback_bytes_per_token} bytes read back, ${r.encode_ms_per_token.toFixed(3)} ms CPU encode${r.gpu_argmax ? ' (GPU argmax)' : ''}`],
    ['GPU buffers / (weights + KV cache)', `${mb(r.gpu_buffer_bytes)} MiB / (${mb(r.weight_bytes)} + ${mb(r.kv_cache_bytes)} MiB) = ` +
      r.gpu_bytes_over_weights_plus_kv.toFixed(3)],
    ...(r.profile || []).flatMap((p) => [
      [`profile: ${p.what}`, `${p.total_ms.toFixed(1)} ms, each dispatch alone (less ${p.submit_ms.toFixed(2)} ms per submit)`],
      ...p.rows.map((row) => [`  ${row.kind} (${row.dispatches})`, `${row.ms.toFixed(2)} ms, ${(100 * row.ms / p.total_ms).toFixed(1)}%`]),
    ]),
  ];
}

export function runBench() {
  const { engine } = state;
  if (!engine) return Promise.resolve();
  const num = (name, dflt) => (params.has(name) ? Number(params.get(name)) : dflt);
  const promptTokens = num('prompt_tokens', 256);
  const genTokens = num('gen_tokens', 128);
  // The GPU argmax needs the GPU: on the CPU the engine picks on the CPU as always.
  const gpuArgmax = params.get('gpu_argmax') === '1' && state.backend === 'gpu';
  const contexts = (params.get('contexts') || '0,256,1024').split(',').map(Number);
  const profile = params.get('profile') === '1' && state.backend === 'gpu';
  const section = $('bench');
  return exclusive('bench', async () => {
    section.hidden = false;
    section.dataset.state = 'running';
    const argmaxNote = params.get('gpu_argmax') === '1' && !gpuArgmax ? ' (gpu_argmax=1 is ignored: the CPU backend picks every token on the CPU)' : '';
    $('bench-status').textContent = `Running: ${promptTokens}-token prompt, ${genTokens} decode steps at each of contexts ${contexts.join(', ')}${argmaxNote}…`;
    try {
      const r = await engine.bench({ promptTokens, genTokens, gpuArgmax, contexts, profile });
      window.kvscopeBench = r;
      $('bench-table').replaceChildren(...rows(r).map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', { text: v }))));
      $('bench-json').textContent = JSON.stringify(r, null, 2);
      $('bench-status').textContent = 'Done.';
      section.dataset.state = 'done';
    } catch (e) {
      section.dataset.state = 'error';
      $('bench-status').textContent = 'Failed.';
      showFailure(e, `Benchmark: ${messageOf(e)}`);
    } finally {
      inside.reset();
    }
  });
}

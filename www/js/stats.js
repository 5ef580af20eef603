// The run's figures (#stats and its data attributes) and the chat transcript.
import { $, el } from './dom.js';
import { subscribe } from './state.js';

/** Merges what is given (a generation's summary, the cache fill, the context size) into #stats'
 * data attributes and rewrites its text from them. */
export function updateStats({ summary, cached, context }) {
  const s = $('stats');
  if (summary) {
    s.dataset.promptTokens = String(summary.prompt_tokens);
    s.dataset.generatedTokens = String(summary.generated_tokens);
    s.dataset.ttftMs = summary.ttft_ms.toFixed(1);
    s.dataset.prefillTps = summary.prefill_tps.toFixed(2);
    s.dataset.decodeTps = summary.decode_tps.toFixed(2);
  }
  if (cached !== undefined) s.dataset.cachedTokens = String(cached);
  if (context !== undefined) s.dataset.contextTokens = String(context);
  const d = s.dataset;
  const parts = [];
  if (d.promptTokens) parts.push(`${d.promptTokens} prompt tokens prefilled`, `${d.generatedTokens} generated`);
  if (d.ttftMs) parts.push(`first token ${d.ttftMs} ms`, `prefill ${d.prefillTps} tok/s`, `decode ${d.decodeTps} tok/s`);
  if (d.contextTokens) parts.push(`KV cache ${d.cachedTokens || 0} / ${d.contextTokens} tokens`);
  s.textContent = parts.join(' · ');
}

/** The chat transcript follows the state's messages. */
let shown = null;
subscribe(({ messages }) => {
  if (messages === shown) return;
  shown = messages;
  const t = $('transcript');
  t.replaceChildren(...messages.map((m) => el('div', { class: 'turn' }, el('span', { class: 'role', text: m.role }), m.content)));
  t.hidden = messages.length === 0;
});

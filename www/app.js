// kvscope page: loads a GGUF model into the wasm engine (WebGPU), streams tokens into the page,
// and keeps the element ids and data attributes documented in the README stable for automation.
// Everything the model or the user supplies is inserted as text, never as HTML.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const CONTEXT = 2048;
// Published hashes of models the site ships, checked after every download.
const KNOWN_SHA256 = { 'SmolLM2-135M-Instruct.Q4_1.gguf': 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53' };
const store = window.KvStore;

let wasm = null;
let engine = null;
let source = null;      // what the loaded engine came from: {url} or {file}, for "Reload engine"
let messages = [];      // chat turns so far
let busy = false;       // a load or a generation is running
let stopRequested = false;
let loadAbort = null;
const inside = new window.KvViz.Inside();

const mb = (b) => (b / 1048576).toFixed(1);

function status(text) {
  $('status').textContent = text;
}

function showError(message, { reload = false } = {}) {
  $('error-text').textContent = message;
  $('reload').hidden = !(reload && source);
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

const messageOf = (e) => String((e && e.message) || e);

function updateButtons() {
  $('generate').disabled = busy || !engine;
  $('step').disabled = busy || !engine;
  $('stop').disabled = !busy || !engine || !!loadAbort;
  $('reset').disabled = busy || !engine;
  $('load-url').disabled = busy;
  $('model-file').disabled = busy;
}

function bindings() {
  if (window.wasmBindings) return Promise.resolve(window.wasmBindings);
  return new Promise((resolve) => addEventListener('TrunkApplicationStarted', () => resolve(window.wasmBindings), { once: true }));
}

// ---- model loading ----------------------------------------------------------------------------

/** Reads a byte stream of `total` bytes (0 if unknown) into one Uint8Array, reporting progress. */
async function readStream(stream, total, signal, onProgress) {
  const reader = stream.getReader();
  const buf = total ? new Uint8Array(total) : null;
  const chunks = [];
  let got = 0;
  for (;;) {
    if (signal.aborted) {
      reader.cancel();
      throw new DOMException('cancelled', 'AbortError');
    }
    const { done, value } = await reader.read();
    if (done) break;
    if (buf && got + value.length <= total) buf.set(value, got);
    else chunks.push(value);
    got += value.length;
    onProgress(got, total);
  }
  if (buf && got === total && chunks.length === 0) return buf;
  // Unknown or wrong length: gather what arrived.
  const out = new Uint8Array(got);
  let at = 0;
  if (buf) { out.set(buf.subarray(0, Math.min(got, total)), 0); at = Math.min(got, total); }
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

function progress(started) {
  return (got, total) => {
    const secs = (performance.now() - started) / 1000;
    const rate = secs > 0 ? got / 1048576 / secs : 0;
    $('progress').value = total ? got / total : 0;
    $('progress-text').textContent = total
      ? `${mb(got)} / ${mb(total)} MB · ${Math.floor((100 * got) / total)}% · ${rate.toFixed(1)} MB/s`
      : `${mb(got)} MB · ${rate.toFixed(1)} MB/s`;
  };
}

async function fetchBytes(src, signal) {
  const started = performance.now();
  if (src.file) return readStream(src.file.stream(), src.file.size, signal, progress(started));
  const res = await fetch(src.url, { signal });
  if (!res.ok) throw new Error(`${src.url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length')) || 0;
  return readStream(res.body, total, signal, progress(started));
}

/** The model's bytes: from browser storage when a verified copy is there, else downloaded (and
 * then stored). A damaged stored copy is downloaded again when online, and reported offline. */
async function modelBytes(src, name, signal) {
  if (src.file) return { bytes: await fetchBytes(src, signal), from: 'disk' };
  const key = new URL(src.url, location.href).href;
  try {
    status(`Loading ${name} from browser storage…`);
    const hit = await store.get(key, progress(performance.now()));
    if (hit) return { bytes: hit.bytes, from: 'storage' };
  } catch (e) {
    if (!(e instanceof store.CorruptModelError)) throw e;
    if (!navigator.onLine) throw new Error(`${e.message}, and the browser is offline, so it cannot be downloaded again. Reconnect and reload.`);
    status(`The stored copy of ${name} was damaged (${e.message}); downloading it again…`);
  }
  if (!navigator.onLine) status(`The browser reports no network; trying to download ${name} anyway…`);
  else status(`Downloading ${name}…`);
  let bytes;
  try {
    bytes = await fetchBytes(src, signal);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new Error(`${messageOf(e)}${navigator.onLine ? '' : ' (the browser is offline and this model is not stored)'}`);
  }
  const sha = await store.sha256Hex(bytes);
  const want = KNOWN_SHA256[name.split('/').pop()];
  if (want && sha !== want) throw new Error(`the download is damaged: sha256 ${sha.slice(0, 12)}… instead of ${want.slice(0, 12)}…`);
  try {
    await store.put(key, bytes, name.split('/').pop(), sha);
    $('storage-info').textContent = `${name.split('/').pop()} is stored for offline use.`;
  } catch (e) {
    $('storage-info').textContent = `Not stored for offline use: ${messageOf(e)}`;
  }
  return { bytes, from: 'network' };
}

/** Loads a model; on failure the engine that was loaded before stays usable. Reloading the same
 * model (after a GPU failure) keeps the conversation on screen. */
async function loadModel(src, { keepConversation = false } = {}) {
  if (busy) return;
  const name = src.file ? src.file.name : src.url;
  clearError();
  busy = true;
  loadAbort = new AbortController();
  $('loader').hidden = false;
  $('keep').hidden = true;
  $('progress').value = 0;
  $('progress-text').textContent = '';
  updateButtons();
  status(`Loading ${name}…`);
  const started = performance.now();
  try {
    let { bytes, from } = await modelBytes(src, name, loadAbort.signal);
    const info = wasm.inspectModel(bytes, CONTEXT);
    const need = info.weights_bytes + info.kv_cache_bytes;
    const infoEl = $('model-info');
    infoEl.textContent = `${info.name} · file ${mb(info.file_bytes)} MB (from ${from}) · needs ${mb(need)} MB of GPU memory ` +
      `(weights ${mb(info.weights_bytes)} MB + KV cache ${mb(info.kv_cache_bytes)} MB for ${CONTEXT} tokens)`;
    infoEl.dataset.fileBytes = String(info.file_bytes);
    infoEl.dataset.loadSource = from;
    status(`Uploading ${info.name} to the GPU…`);
    $('cancel').disabled = true;
    const next = await wasm.WebEngine.load(bytes, CONTEXT, loadOptions());
    bytes = null;
    if (engine) engine.free();
    engine = next;
    source = src;
    if (!keepConversation) {
      messages = [];
      renderTranscript();
    }
    const peak = wasm.wasmMemoryBytes();
    infoEl.dataset.wasmPeakBytes = String(peak);
    infoEl.dataset.loadMs = (performance.now() - started).toFixed(0);
    infoEl.append(` · wasm memory ${mb(peak)} MB (the file stays outside it) · ready in ${(infoEl.dataset.loadMs / 1000).toFixed(1)} s`);
    $('keep').hidden = !src.file;
    const st = engine.state();
    inside.setModel(st);
    status(`Ready: ${st.name} on ${st.backend}`);
    updateStats({ cached: 0, context: st.context });
  } catch (e) {
    if (e && e.name === 'AbortError') status(engine ? 'Loading cancelled; the previous model is still loaded.' : 'Loading cancelled.');
    else {
      showError(`Could not load ${name}: ${messageOf(e)}`);
      status(engine ? 'The previous model is still loaded.' : 'No model loaded.');
    }
  } finally {
    $('loader').hidden = true;
    $('cancel').disabled = false;
    loadAbort = null;
    busy = false;
    updateButtons();
    refreshModels();
  }
}

/** Stores the model opened from disk, so it can be loaded offline later. */
async function keepLocal() {
  if (!source || !source.file) return;
  const f = source.file;
  try {
    const bytes = new Uint8Array(await f.arrayBuffer());
    await store.put(store.localKey(f.name), bytes, f.name, await store.sha256Hex(bytes));
    $('storage-info').textContent = `${f.name} is stored for offline use.`;
    $('keep').hidden = true;
  } catch (e) {
    showError(messageOf(e));
  }
  refreshModels();
}

/** The Models panel: every stored model with its size and a Delete button. */
async function refreshModels() {
  const list = $('models-list');
  let models = [];
  try {
    models = await store.list();
  } catch (e) {
    $('storage-info').textContent = `Browser storage is unavailable: ${messageOf(e)}`;
    return;
  }
  list.replaceChildren();
  for (const m of models) {
    const tr = document.createElement('tr');
    tr.dataset.key = m.key;
    tr.dataset.bytes = String(m.bytes);
    const name = document.createElement('td');
    name.textContent = m.name;
    const size = document.createElement('td');
    size.textContent = `${mb(m.bytes)} MB`;
    const when = document.createElement('td');
    when.textContent = m.stored ? new Date(m.stored).toLocaleString() : '';
    const td = document.createElement('td');
    const local = m.key.includes('/local-models/');
    if (local) {
      const load = document.createElement('button');
      load.type = 'button';
      load.textContent = 'Load';
      load.addEventListener('click', () => loadStored(m));
      td.append(load);
    }
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.textContent = 'Delete';
    del.addEventListener('click', async () => { await store.remove(m.key); refreshModels(); });
    td.append(del);
    tr.append(name, size, when, td);
    list.append(tr);
  }
  if (models.length === 0) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.textContent = 'No models stored yet.';
    tr.append(td);
    list.append(tr);
  }
  if (navigator.storage && navigator.storage.estimate) {
    const est = await navigator.storage.estimate();
    const persisted = navigator.storage.persisted ? await navigator.storage.persisted() : false;
    $('models-panel').dataset.count = String(models.length);
    $('storage-info').textContent = `Browser storage: ${mb(est.usage || 0)} MB used of ${mb(est.quota || 0)} MB${persisted ? ' (persistent)' : ''}.`;
  }
}

/** Loads a model that was opened from disk earlier and stored. */
async function loadStored(m) {
  try {
    const hit = await store.get(m.key);
    if (!hit) throw new Error('it is no longer stored');
    await loadModel({ file: new File([hit.bytes], m.name) });
  } catch (e) {
    showError(`Could not load ${m.name} from storage: ${messageOf(e)}`);
    refreshModels();
  }
}

// ---- generation --------------------------------------------------------------------------------

function options() {
  const num = (id, d) => (Number.isFinite(Number($(id).value)) && $(id).value !== '' ? Number($(id).value) : d);
  const o = { max_tokens: Math.max(1, Math.floor(num('max-tokens', 64))), report_top: 5, no_cache: $('no-cache').checked };
  const layer = inside.attentionLayer();
  if (layer !== null) o.attention_layer = layer;
  if ($('greedy').checked) o.temperature = 0;
  else Object.assign(o, { temperature: num('temperature', 0.8), top_k: Math.floor(num('top-k', 0)), top_p: num('top-p', 1), seed: Math.floor(num('seed', 0)) });
  return o;
}

function updateStats({ summary, cached, context }) {
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

function renderTranscript() {
  const t = $('transcript');
  t.replaceChildren();
  for (const m of messages) {
    const div = document.createElement('div');
    div.className = 'turn';
    const role = document.createElement('span');
    role.className = 'role';
    role.textContent = m.role;
    div.append(role, m.content);
    t.append(div);
  }
  t.hidden = messages.length === 0;
}

async function generate() {
  if (!engine || busy) return;
  clearError();
  busy = true;
  stopRequested = false;
  updateButtons();
  const out = $('output');
  delete out.dataset.done;
  const prompt = $('prompt').value;
  const chat = $('chat').checked;
  const context = Number($('stats').dataset.contextTokens) || CONTEXT;
  const started = performance.now();
  let generated = 0;
  status('Prefilling the prompt…');
  const sampled = !$('greedy').checked;
  const noCache = $('no-cache').checked;
  const onToken = (ev) => {
    // The previous output stays on screen until the first new token replaces it.
    if (generated === 0) out.textContent = '';
    generated += 1;
    out.append(ev.text);
    inside.token(ev, sampled);
    // The first token's time includes the prefill; the others are one decode step each.
    if (generated > 1) inside.timing(ev.pos - 1, ev.ms, noCache);
    updateStats({ cached: ev.pos + 1, context });
    status(`Generating… ${generated} tokens, ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return !stopRequested;
  };
  try {
    let summary;
    if (chat) {
      const turn = { role: 'user', content: prompt };
      summary = await engine.chat([...messages, turn], options(), onToken);
      messages.push(turn, { role: 'assistant', content: summary.text });
      renderTranscript();
      $('prompt').value = '';
    } else {
      summary = await engine.complete(prompt, options(), onToken);
    }
    if (generated === 0) out.textContent = '';
    const cached = engine.state().cached_tokens;
    inside.finish(cached);
    updateStats({ summary, cached, context });
    const why = { eos: 'end of text', max_tokens: 'max tokens reached', context_full: 'the context is full', stopped: 'stopped' }[summary.stop];
    status(`Done (${why}).`);
    if (summary.stop === 'context_full') showError(`The context is full (${context} tokens): press Reset to start over.`);
  } catch (e) {
    const msg = messageOf(e);
    showError(msg, { reload: /device|GPU/i.test(msg) });
    status('Failed.');
  } finally {
    out.dataset.done = 'true';
    busy = false;
    updateButtons();
  }
}

function reset() {
  if (!engine || busy) return;
  engine.reset();
  messages = [];
  renderTranscript();
  $('output').textContent = '';
  delete $('output').dataset.done;
  inside.reset();
  updateStats({ cached: 0 });
  status('The KV cache is empty.');
}

/** Exactly one decode step (with an empty cache, the prompt is prefilled and the first token
 * picked instead). */
async function stepOnce() {
  if (!engine || busy) return;
  clearError();
  busy = true;
  updateButtons();
  const out = $('output');
  delete out.dataset.done;
  const before = engine.state().cached_tokens;
  const sampled = !$('greedy').checked;
  let last = null;
  const onToken = (ev) => {
    last = ev;
    out.append(ev.text);
    inside.token(ev, sampled);
    return true;
  };
  try {
    const opts = { ...options(), max_tokens: 1, no_cache: false };
    const summary = before === 0 ? await engine.complete($('prompt').value, opts, onToken) : await engine.step(opts, onToken);
    const after = engine.state().cached_tokens;
    inside.finish(after);
    if (last) inside.renderStep(last, before, after, engine.peek(1)[0]);
    updateStats({ summary, cached: after, context: Number($('stats').dataset.contextTokens) || CONTEXT });
    status(before === 0 ? `Prefilled the prompt and took the first step: ${after} rows cached.` : `One step: ${before} → ${after} cached rows.`);
  } catch (e) {
    const msg = messageOf(e);
    showError(msg, { reload: /device|GPU/i.test(msg) });
  } finally {
    out.dataset.done = 'true';
    busy = false;
    updateButtons();
  }
}

// ---- start-up ----------------------------------------------------------------------------------

function wire() {
  $('generate').addEventListener('click', generate);
  $('step').addEventListener('click', stepOnce);
  $('attention-panel').addEventListener('toggle', () => inside.renderAttention());
  $('stop').addEventListener('click', () => {
    stopRequested = true;
    if (engine) engine.stop();
    status('Stopping…');
  });
  $('reset').addEventListener('click', reset);
  $('cancel').addEventListener('click', () => loadAbort && loadAbort.abort());
  $('load-url').addEventListener('click', () => {
    const url = $('model-url').value.trim();
    if (url) loadModel({ url });
  });
  $('model-file').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) loadModel({ file: f });
    e.target.value = '';
  });
  $('reload').addEventListener('click', () => {
    if (engine) { engine.free(); engine = null; }
    loadModel(source, { keepConversation: true });
  });
  $('greedy').addEventListener('change', () => { $('sampling').disabled = $('greedy').checked; });
  $('keep').addEventListener('click', keepLocal);
  addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) loadModel({ file: f });
  });
}

// ?bench=1: after the model loads, runs the engine's benchmark (the same as `kvscope bench`) and
// shows it; #bench[data-state] goes idle → running → done | error, and the report is in
// #bench-json and window.kvscopeBench.
async function runBench() {
  const num = (name, dflt) => (params.has(name) ? Number(params.get(name)) : dflt);
  const promptTokens = num('prompt_tokens', 256);
  const genTokens = num('gen_tokens', 128);
  const gpuArgmax = params.get('gpu_argmax') !== '0';
  const contexts = (params.get('contexts') || '0,256,1024').split(',').map(Number);
  const section = $('bench');
  section.hidden = false;
  section.dataset.state = 'running';
  $('bench-status').textContent = `Running: ${promptTokens}-token prompt, ${genTokens} decode steps at each of contexts ${contexts.join(', ')}…`;
  busy = true;
  updateButtons();
  try {
    const r = await engine.bench(promptTokens, genTokens, gpuArgmax, new Uint32Array(contexts));
    window.kvscopeBench = r;
    const rows = [
      ['adapter', r.adapter],
      ['model', r.model],
      [`prefill (${r.prompt_tokens} tokens, ${r.prefill_chunk} per chunk)`, `${r.prefill_tokens_per_s.toFixed(2)} tok/s`],
      ['prefill token by token', `${r.prefill_token_by_token_per_s.toFixed(2)} tok/s (batched is ${r.batched_over_token_by_token.toFixed(2)}×)`],
      ['time to first token', `${r.ttft_ms.toFixed(0)} ms`],
      ...r.decode.map((d) => [`decode at context ${d.context}`, `${d.tokens_per_s.toFixed(2)} tok/s`]),
      [`decode at context ${r.decode.at(-1).context} / at ${r.decode[0].context}`, r.decode_longest_over_shortest.toFixed(2)],
      ['per decode token', `${r.dispatches_per_token} dispatches, ${r.submits_per_token} submits, ${r.maps_per_token} maps, ` +
        `${r.readback_bytes_per_token} bytes read back, ${r.encode_ms_per_token.toFixed(3)} ms CPU encode`],
      ['GPU buffers / (weights + KV cache)', `${mb(r.gpu_buffer_bytes)} MiB / (${mb(r.weight_bytes)} + ${mb(r.kv_cache_bytes)} MiB) = ` +
        r.gpu_bytes_over_weights_plus_kv.toFixed(3)],
    ];
    const body = $('bench-table');
    body.replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = k;
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(th, td);
      return tr;
    }));
    $('bench-json').textContent = JSON.stringify(r, null, 2);
    $('bench-status').textContent = 'Done.';
    section.dataset.state = 'done';
  } catch (e) {
    section.dataset.state = 'error';
    $('bench-status').textContent = 'Failed.';
    showError(`Benchmark: ${messageOf(e)}`);
  } finally {
    busy = false;
    updateButtons();
    inside.reset();
  }
}

// ?rows=M,N: weight rows per invocation of the mat-vec and mat-mul kernels (default: by adapter).
// ?kv=f16: an f16 KV cache (half the memory).
function loadOptions() {
  const o = {};
  if (params.has('rows')) o.rows = params.get('rows').split(',').map(Number);
  if (params.get('kv') === 'f16') o.kv_f16 = true;
  return o;
}

async function main() {
  wire();
  updateButtons();
  if (params.has('prompt')) $('prompt').value = params.get('prompt');
  if (params.has('max_tokens')) $('max-tokens').value = params.get('max_tokens');
  if (params.has('greedy')) $('greedy').checked = params.get('greedy') !== '0';
  $('sampling').disabled = $('greedy').checked;
  const url = params.get('model') || DEFAULT_MODEL;
  $('model-url').value = url;

  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('./sw.js').catch((e) => console.warn('service worker not registered:', e));
  }
  store.persist().catch(() => {});
  refreshModels();

  if (!navigator.gpu) {
    status('WebGPU is not available.');
    showError('This browser has no WebGPU (navigator.gpu is missing). Use a current Chrome or Edge, or enable WebGPU in ' +
      "your browser's settings; the page must be served from https:// or from localhost.");
    return;
  }
  status('Loading the engine…');
  wasm = await bindings();
  try {
    status(`GPU: ${await wasm.adapterInfo()}`);
  } catch (e) {
    status('No usable GPU.');
    showError(`WebGPU found no usable GPU adapter: ${messageOf(e)}. Check that hardware acceleration is on in your browser's settings.`);
    return;
  }
  await loadModel({ url });
  if (engine && params.get('bench') === '1') await runBench();
  else if (engine && params.get('autostart') === '1') await generate();
}

// For tests of GPU-failure recovery: destroys the device as a driver reset would.
window.kvscopeDebug = { loseDevice: () => engine && engine.loseDevice() };

main().catch((e) => showError(messageOf(e)));

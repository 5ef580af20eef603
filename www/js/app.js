// kvscope page: loads a GGUF model into the engine (a worker running the wasm module on WebGPU
// or the CPU), streams tokens into the page, and keeps the element ids and data attributes
// documented in the README stable for automation. This module wires the page together and starts
// it.
import { $ } from './dom.js';
import { params, DEFAULT_MODEL, initialPolicy } from './settings.js';
import { state, set, inside } from './state.js';
import { status, showError, guarded, report, showUnhandledRejections } from './feedback.js';
import { loadModel, reloadEngine, keepLocal } from './loading.js';
import { generate, stepOnce, stop, reset } from './generation.js';
import { setupFlaws } from './flaw.js';
import { showModels } from './models-panel.js';
import { setupPicker, showPlan } from './picker.js';
import { runBench } from './bench.js';
import { modelStore } from './model-store.js';
import { EngineWorker } from './remote.js';
import { showBackend } from './backend.js';
import { setupPolicyPicker } from './kv-policy.js';
import { setupLab, runComparison, comparisonRequested } from './kvlab.js';

/** What ?backend= may ask for. */
const BACKENDS = ['gpu', 'cpu', 'reference'];

function wire() {
  const on = (id, type, fn) => $(id).addEventListener(type, guarded(fn));
  on('generate', 'click', generate);
  on('step', 'click', stepOnce);
  on('stop', 'click', stop);
  on('reset', 'click', reset);
  on('attention-panel', 'toggle', () => inside.redraw());
  on('cancel', 'click', () => state.loadAbort && state.loadAbort.abort());
  on('load-url', 'click', () => {
    const url = $('model-url').value.trim();
    return url ? loadModel({ url }) : undefined;
  });
  on('model-file', 'change', (e) => {
    const files = [...(e.target.files || [])];
    e.target.value = '';
    return files.length ? loadModel(picked(files)) : undefined;
  });
  on('reload', 'click', reloadEngine);
  on('greedy', 'change', () => { $('sampling').disabled = $('greedy').checked; });
  on('keep', 'click', keepLocal);
  addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  addEventListener('drop', guarded((e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const files = [...((e.dataTransfer && e.dataTransfer.files) || [])];
    return files.length ? loadModel(picked(files)) : undefined;
  }));
}

/** What to load from files picked or dropped: one model file, or the parts of a split one. */
const picked = (files) => (files.length === 1 ? { file: files[0] } : { files });

/** Sets #context to `n` tokens: one of its sizes, or (?context=N, a whole number from 1) a size
 * of its own added to the list. */
function setContext(n) {
  const select = $('context');
  if (!Number.isInteger(n) || n < 1) throw new Error(`?context=${params.get('context')}: the context must be a whole number of tokens from 1`);
  if (![...select.options].some((o) => Number(o.value) === n)) select.add(new Option(String(n), String(n)));
  select.value = String(n);
}

async function main() {
  wire();
  setupPolicyPicker(initialPolicy(), () => report(showPlan()));
  if (params.has('prompt')) $('prompt').value = params.get('prompt');
  if (params.has('max_tokens')) $('max-tokens').value = params.get('max_tokens');
  if (params.has('greedy')) $('greedy').checked = params.get('greedy') !== '0';
  $('sampling').disabled = $('greedy').checked;
  const url = params.get('model') || DEFAULT_MODEL;
  $('model-url').value = url;

  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('./sw.js').catch((e) => console.warn('service worker not registered:', e));
  }
  modelStore.persist().catch((e) => console.warn('persistent storage not granted:', e));
  report(showModels());
  const picking = report(setupPicker(url));

  status('Starting the engine…');
  set({ worker: new EngineWorker() });
  // Models kept by an older build (Cache Storage) move to the OPFS store once; loads wait for it.
  report(modelStore.migrate(state.worker, status));
  let requested = params.get('backend');
  if (requested && !BACKENDS.includes(requested)) {
    showError(`The address asks for ?backend=${requested}, which is none of ${BACKENDS.join(', ')}: the page chooses instead.`, { name: 'InvalidInput' });
    requested = null;
  }
  let hello;
  try {
    hello = await state.worker.hello({ backend: requested });
  } catch (e) {
    status('The engine did not start.');
    throw e;
  }
  const { flaws, choice, defaults } = hello;
  set({ backend: choice.backend, flaws, defaults });
  // The engine's defaults fill what the address did not set.
  setContext(params.has('context') ? Number(params.get('context')) : defaults.context);
  if (!params.has('max_tokens')) $('max-tokens').value = String(defaults.max_tokens);
  showBackend(choice, defaults.webgpu_browsers);
  setupFlaws(flaws);
  setupLab(choice.backend);
  // ?load=0: nothing loads until the user picks a model (a large one, say).
  if (params.get('load') === '0') {
    status('No model loaded: pick one, or load it from its URL.');
    return;
  }
  await loadModel({ url });
  // The picker shows what the chosen model needs (read from its header, stored by now).
  await picking;
  await showPlan();
  if (state.engine && comparisonRequested()) {
    $('kvlab').open = true;
    await runComparison();
  } else if (state.engine && params.get('bench') === '1') await runBench();
  else if (state.engine && params.get('autostart') === '1') await generate();
}

// For tests: loseDevice() destroys the GPU device as a driver reset would (recovery);
// attentionMatrix() is the attention matrix on show, {layer, head, rows}; flaws() the engine's.
window.kvscopeDebug = {
  loseDevice: () => state.engine && state.engine.loseDevice(),
  flaws: () => state.flaws,
  attentionMatrix: () => inside.matrixView(),
};

showUnhandledRejections();
report(main());

// kvscope page: loads a GGUF model into the wasm engine (WebGPU), streams tokens into the page,
// and keeps the element ids and data attributes documented in the README stable for automation.
// This module wires the page together and starts it.
import { $ } from './dom.js';
import { params, DEFAULT_MODEL } from './settings.js';
import { session, inside, updateButtons } from './session.js';
import { status, showError, showFailure, messageOf, guarded, report, showUnhandledRejections } from './feedback.js';
import { loadModel, reloadEngine, keepLocal } from './loading.js';
import { generate, stepOnce, stop, reset } from './generation.js';
import { setupFlaws } from './flaw.js';
import { showModels } from './models-panel.js';
import { setupPicker, showPlan } from './picker.js';
import { runBench } from './bench.js';
import { store } from './store.js';

/** The wasm module's exports, once Trunk's loader has started it. */
function bindings() {
  if (window.wasmBindings) return Promise.resolve(window.wasmBindings);
  return new Promise((resolve) => addEventListener('TrunkApplicationStarted', () => resolve(window.wasmBindings), { once: true }));
}

function wire() {
  const on = (id, type, fn) => $(id).addEventListener(type, guarded(fn));
  on('generate', 'click', generate);
  on('step', 'click', stepOnce);
  on('stop', 'click', stop);
  on('reset', 'click', reset);
  on('attention-panel', 'toggle', () => inside.redraw());
  on('cancel', 'click', () => session.loadAbort && session.loadAbort.abort());
  on('load-url', 'click', () => {
    const url = $('model-url').value.trim();
    return url ? loadModel({ url }) : undefined;
  });
  on('model-file', 'change', (e) => {
    const f = e.target.files && e.target.files[0];
    e.target.value = '';
    return f ? loadModel({ file: f }) : undefined;
  });
  on('reload', 'click', reloadEngine);
  on('greedy', 'change', () => { $('sampling').disabled = $('greedy').checked; });
  on('keep', 'click', keepLocal);
  addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  addEventListener('drop', guarded((e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const f = e.dataTransfer && e.dataTransfer.files[0];
    return f ? loadModel({ file: f }) : undefined;
  }));
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
  store.persist().catch((e) => console.warn('persistent storage not granted:', e));
  report(showModels());
  const picking = report(setupPicker(url));

  if (!navigator.gpu) {
    status('WebGPU is not available.');
    showError('This browser has no WebGPU (navigator.gpu is missing). Use a current Chrome or Edge, or enable WebGPU in ' +
      "your browser's settings; the page must be served from https:// or from localhost.");
    return;
  }
  status('Loading the engine…');
  session.wasm = await bindings();
  setupFlaws(session.wasm);
  try {
    status(`GPU: ${await session.wasm.adapterInfo()}`);
  } catch (e) {
    status('No usable GPU.');
    showFailure(e, `WebGPU found no usable GPU adapter: ${messageOf(e)}. Check that hardware acceleration is on in your browser's settings.`);
    return;
  }
  await loadModel({ url });
  // The picker shows what the chosen model needs (read from its header, stored by now).
  await picking;
  await showPlan();
  if (session.engine && params.get('bench') === '1') await runBench();
  else if (session.engine && params.get('autostart') === '1') await generate();
}

// For tests: loseDevice() destroys the GPU device as a driver reset would (recovery);
// attentionMatrix() is the attention matrix on show, {layer, head, rows}.
window.kvscopeDebug = {
  loseDevice: () => session.engine && session.engine.loseDevice(),
  attentionMatrix: () => inside.matrixView(),
};

showUnhandledRejections();
report(main());

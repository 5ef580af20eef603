// Minimal page: reports the WebGPU adapter, loads the default model, and streams greedy tokens.
const $ = (id) => document.getElementById(id);
const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';

function bindings() {
  if (window.wasmBindings) return Promise.resolve(window.wasmBindings);
  return new Promise((resolve) => addEventListener('TrunkApplicationStarted', () => resolve(window.wasmBindings), { once: true }));
}

function showError(msg) {
  $('error').textContent = msg;
  $('error').hidden = false;
}

async function main() {
  const wasm = await bindings();
  if (!navigator.gpu) {
    showError('This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome or Edge, or enable WebGPU in your browser settings.');
    $('status').textContent = 'WebGPU unavailable';
    return;
  }
  let engine = null;
  try {
    $('status').textContent = 'GPU: ' + await wasm.adapterInfo();
  } catch (e) {
    showError(String(e.message || e));
    return;
  }
  $('generate').disabled = false;
  $('generate').addEventListener('click', async () => {
    $('generate').disabled = true;
    $('error').hidden = true;
    try {
      if (!engine) {
        $('status').textContent = 'Loading ' + MODEL + '…';
        const res = await fetch(MODEL);
        if (!res.ok) throw new Error(`fetching ${MODEL}: HTTP ${res.status}`);
        engine = await wasm.WebEngine.load(new Uint8Array(await res.arrayBuffer()));
      }
      $('output').textContent = '';
      $('status').textContent = 'Generating…';
      const s = await engine.generate($('prompt').value, Number($('max-tokens').value) || 32, (ev) => {
        $('output').append(document.createTextNode(ev.text));
        return true;
      });
      $('stats').textContent = `${s.prompt_tokens} prompt + ${s.generated_tokens} generated tokens · prefill ${s.prefill_tps.toFixed(1)} tok/s · decode ${s.decode_tps.toFixed(2)} tok/s · ${s.backend}`;
      $('status').textContent = 'Done';
    } catch (e) {
      showError(String(e.message || e));
      $('status').textContent = 'Failed';
    } finally {
      $('generate').disabled = false;
    }
  });
}

main().catch((e) => showError(String(e.message || e)));

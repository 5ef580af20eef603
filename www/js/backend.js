// Which backend the page runs on, and why, in #backend: the worker picks WebGPU on a hardware
// adapter and the CPU backend (WebAssembly SIMD) otherwise; ?backend=gpu|cpu overrides.
import { $ } from './dom.js';


const CPU = 'CPU (WebAssembly SIMD)';

/** The notice for the worker's choice {backend, reason, adapter, webgpu}; `browsers` says where
 * WebGPU is (the engine's `defaults().webgpu_browsers`). */
export function backendNotice(choice, browsers) {
  const { backend, reason, adapter } = choice;
  const label = backend === 'gpu' ? `WebGPU${adapter ? ` (${adapter})` : ''}` : backend === 'cpu' ? CPU : `the ${backend} backend`;
  switch (reason) {
    case 'requested':
      return `${label}: chosen by ?backend=${backend} in the address (remove it to let the page choose).`;
    case 'no-webgpu':
      return `${CPU}: this browser has no WebGPU. The page works on the CPU meanwhile, more slowly. ${browsers}`;
    case 'no-adapter':
      return `${CPU}: this browser has WebGPU but granted no adapter (is hardware acceleration on in its settings?). ` +
        `The page works on the CPU meanwhile. ${browsers}`;
    case 'software':
      return `${CPU}: the only WebGPU adapter is software (${adapter || 'a fallback adapter'}), slower than the CPU path here. ` +
        'Add ?backend=gpu to the address to use it anyway.';
    default:
      return `${label}: a hardware GPU adapter.`;
  }
}

/** Shows the choice in #backend (data-backend, data-reason) and marks the page with it
 * (body[data-backend]: the style hides GPU-only controls on the CPU). */
export function showBackend(choice, browsers) {
  const p = $('backend');
  p.textContent = backendNotice(choice, browsers);
  p.dataset.backend = choice.backend;
  p.dataset.reason = choice.reason;
  p.hidden = false;
  document.body.dataset.backend = choice.backend === 'gpu' ? 'gpu' : 'cpu';
}

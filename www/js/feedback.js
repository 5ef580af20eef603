// What the page tells the user: the status line and the error box. Every failure ends here,
// including those of promises nobody awaits, so none is silent.
import { $ } from './dom.js';
import { state } from './state.js';

/** Engine error kinds (the JS `name` the wasm engine gives its errors) after which the engine has
 * to be loaded again. */
const RELOAD_KINDS = new Set(['DeviceLost', 'Gpu']);

export const messageOf = (e) => String((e && e.message) || e);
const nameOf = (e) => (e && typeof e.name === 'string' ? e.name : '');

export function status(text) {
  $('status').textContent = text;
}

/** Shows `message` in #error; `name` (the error's kind) goes to #error[data-name]. `reload`
 * offers "Reload engine" when a model was loaded. */
export function showError(message, { name = '', reload = false } = {}) {
  $('error-text').textContent = message;
  $('error').dataset.name = name;
  $('reload').hidden = !(reload && state.source);
  $('error').hidden = false;
}

/** Shows the failure `e` as `message` (by default its own) with its kind; `reload` as for
 * showError. */
export function showFailure(e, message = messageOf(e), { reload = false } = {}) {
  showError(message, { name: nameOf(e), reload });
}

/** An engine call failed: says why, and offers "Reload engine" when the error's kind means the
 * GPU device is gone or unusable. */
export function showEngineError(e) {
  showFailure(e, messageOf(e), { reload: RELOAD_KINDS.has(nameOf(e)) });
}

export function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
  delete $('error').dataset.name;
}

/** Waits for `promise` in the background: a failure is shown instead of lost. */
export function report(promise) {
  return promise.catch((e) => showFailure(e));
}

/** `fn` as an event listener: called at once, and what it throws or rejects with is shown. */
export function guarded(fn) {
  return (...args) => {
    report(new Promise((resolve) => resolve(fn(...args))));
  };
}

/** Any rejection that no code handles is shown too, as a last resort. */
export function showUnhandledRejections() {
  addEventListener('unhandledrejection', (ev) => showFailure(ev.reason));
}

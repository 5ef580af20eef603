// The page's state, in one store: what phase the page is in, the engine worker and its choice of
// backend, the loaded engine and where it came from, the chat so far. Modules read `state` and
// change it with `set(patch)`; subscribers (the buttons, the transcript) redraw after each
// change. The phase has one writer: `exclusive`, the rule that one load, generation or benchmark
// runs at a time.
import { $ } from './dom.js';
import { Inside } from './viz.js';

/** Phases: 'idle' (ready for a command; `engine` may still be null), 'loading', 'running' (a
 * generation or Step), 'bench', 'comparing' (the KV-cache lab, kvlab.js). */
export const state = {
  phase: 'idle',
  /** The engine's worker (remote.js EngineWorker), once started. */
  worker: null,
  /** The backend the worker chose (or ?backend= asked for): 'gpu', 'cpu' or 'reference'. */
  backend: null,
  /** The engine's defaults: {context, max_tokens, report_top}. */
  defaults: {},
  /** The engine's teaching flaws, [{name, why}]. */
  flaws: [],
  /** The loaded engine (remote.js RemoteEngine), or null. */
  engine: null,
  /** What the engine was loaded from, {url} or {file}, for "Reload engine". */
  source: null,
  /** Chat turns so far: [{role, content}]. */
  messages: [],
  /** Stop was pressed during the running generation. */
  stopRequested: false,
  /** The running load's AbortController (Cancel), or null. */
  loadAbort: null,
  /** The loaded model has a chat template (until a model without one loads, Chat is offered). */
  chatTemplate: true,
};

const subscribers = new Set();

/** Merges `patch` into the state and tells every subscriber. The phase is not set here. */
export function set(patch) {
  if ('phase' in patch) throw new Error('the phase changes only through exclusive()');
  Object.assign(state, patch);
  for (const fn of subscribers) fn(state);
}

/** Calls `fn(state)` now and after every change. */
export function subscribe(fn) {
  subscribers.add(fn);
  fn(state);
}

/** Runs `task` as the one thing the page is doing, in `phase`; does nothing (resolves to
 * undefined) while something else runs. A load passes its AbortController, which makes Cancel
 * (not Stop) the way out. Resolves to what `task` resolves to. */
export async function exclusive(phase, task, loadAbort = null) {
  if (state.phase !== 'idle') return undefined;
  state.phase = phase;
  set({ loadAbort });
  try {
    return await task();
  } finally {
    state.phase = 'idle';
    set({ loadAbort: null });
  }
}

/** The "Inside the model" views. */
export const inside = new Inside();

/** The buttons follow the state. Without a chat template, Chat is off and says why; the choice
 * comes back with a model that has one. */
subscribe(({ phase, engine, loadAbort, chatTemplate }) => {
  const busy = phase !== 'idle';
  $('generate').disabled = busy || !engine;
  $('step').disabled = busy || !engine;
  $('stop').disabled = !busy || !engine || !!loadAbort;
  $('reset').disabled = busy || !engine;
  $('load-url').disabled = busy;
  $('load-model').disabled = busy;
  $('model-file').disabled = busy;
  const chat = $('chat');
  if (!chatTemplate && !chat.disabled) {
    chat.dataset.wanted = chat.checked ? 'true' : '';
    chat.checked = false;
    chat.disabled = true;
  } else if (chatTemplate && chat.disabled) {
    chat.disabled = false;
    chat.checked = chat.dataset.wanted === 'true';
  }
  $('chat-reason').hidden = chatTemplate;
});

// The page's state between events, in one object, and the rule that only one load, generation or
// benchmark runs at a time.
import { $ } from './dom.js';
import { Inside } from './viz.js';

export const session = {
  /** The engine's worker (remote.js EngineWorker), once started. */
  worker: null,
  /** The backend the worker chose (or ?backend= asked for): 'gpu', 'cpu' or 'reference'. */
  backend: null,
  /** The engine's teaching flaws, [{name, why}]. */
  flaws: [],
  /** The loaded engine (remote.js RemoteEngine), or null. */
  engine: null,
  /** What the engine was loaded from, {url} or {file}, for "Reload engine". */
  source: null,
  /** Chat turns so far: [{role, content}]. */
  messages: [],
  /** A load, a generation or the benchmark is running. */
  busy: false,
  /** Stop was pressed during the running generation. */
  stopRequested: false,
  /** The running load's AbortController (Cancel), or null. */
  loadAbort: null,
  /** The loaded model has a chat template (until a model without one loads, Chat is offered). */
  chatTemplate: true,
};

/** The "Inside the model" views. */
export const inside = new Inside();

export function updateButtons() {
  const { busy, engine, loadAbort } = session;
  $('generate').disabled = busy || !engine;
  $('step').disabled = busy || !engine;
  $('stop').disabled = !busy || !engine || !!loadAbort;
  $('reset').disabled = busy || !engine;
  $('load-url').disabled = busy;
  $('load-model').disabled = busy;
  $('model-file').disabled = busy;
  // Without a chat template, Chat is off and says why; the choice comes back with a model that
  // has one.
  const chat = $('chat');
  if (!session.chatTemplate && !chat.disabled) {
    chat.dataset.wanted = chat.checked ? 'true' : '';
    chat.checked = false;
    chat.disabled = true;
  } else if (session.chatTemplate && chat.disabled) {
    chat.disabled = false;
    chat.checked = chat.dataset.wanted === 'true';
  }
  $('chat-reason').hidden = session.chatTemplate;
}

/** Runs `task` as the one thing the page is doing, with the buttons to match; does nothing while
 * something else runs. A load passes its AbortController, which makes Cancel (not Stop) the way
 * out. Resolves to what `task` resolves to. */
export async function runExclusive(task, loadAbort = null) {
  if (session.busy) return undefined;
  session.busy = true;
  session.loadAbort = loadAbort;
  updateButtons();
  try {
    return await task();
  } finally {
    session.busy = false;
    session.loadAbort = null;
    updateButtons();
  }
}

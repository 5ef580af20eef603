// The Models panel: every model kept in browser storage, with its size, a Load button (for files
// opened from disk) and a Delete button, and how much storage is used. It follows the store.
import { $, el, mb } from './dom.js';
import { modelStore } from './model-store.js';
import { guarded, messageOf, report } from './feedback.js';
import { loadStored } from './loading.js';

function row(m) {
  const local = m.key.includes('/local-models/');
  const when = m.complete
    ? (m.stored ? new Date(m.stored).toLocaleString() : '')
    : `download stopped at ${m.total ? Math.floor((100 * m.bytes) / m.total) : 0}%: loading it again resumes`;
  return el('tr', { data: { key: m.key, bytes: String(m.bytes), complete: String(m.complete) } },
    el('td', { text: m.name }),
    el('td', { text: m.complete ? `${mb(m.bytes)} MB` : `${mb(m.bytes)} of ${mb(m.total)} MB` }),
    el('td', { text: when }),
    el('td', {},
      ...(local && m.complete ? [el('button', { type: 'button', text: 'Load', onclick: guarded(() => loadStored(m)) })] : []),
      el('button', { type: 'button', class: 'delete', text: 'Delete', onclick: guarded(() => modelStore.remove(m.key)) })));
}

/** Lists the stored models and the storage used. */
async function refreshModels() {
  let models = [];
  try {
    models = await modelStore.list({ partial: true });
  } catch (e) {
    $('storage-info').textContent = `Browser storage is unavailable: ${messageOf(e)}`;
    return;
  }
  $('models-list').replaceChildren(...(models.length ? models.map(row) : [el('tr', {}, el('td', { text: 'No models stored yet.' }))]));
  if (navigator.storage && navigator.storage.estimate) {
    const est = await navigator.storage.estimate();
    const persisted = navigator.storage.persisted ? await navigator.storage.persisted() : false;
    $('models-panel').dataset.count = String(models.filter((m) => m.complete).length);
    $('models-panel').dataset.partial = String(models.filter((m) => !m.complete).length);
    $('storage-info').textContent = `Browser storage: ${mb(est.usage || 0)} MB used of ${mb(est.quota || 0)} MB${persisted ? ' (persistent)' : ''}.`;
  }
}

/** Shows the stored models now and after every change to the store. */
export function showModels() {
  modelStore.onChange(() => report(refreshModels()));
  return refreshModels();
}

// The engine worker's operations: one list, which the worker serves (worker.js) and the page's
// end calls (remote.js). Each takes one object of arguments. Kinds:
//   'worker' — the worker's own (no engine);
//   'engine' — a loaded engine's, by handle;
//   'stream' — an engine's that streams token events before its result.
// 'stop' is a message of its own: it gets no reply, so that it overtakes a running call; so is
// 'cancel', which aborts a running call's signal (a `signal` given to EngineWorker.call).
export const OPS = {
  hello: 'worker',
  inspectModel: 'worker',
  storeModel: 'worker',
  load: 'worker',
  peek: 'engine',
  reset: 'engine',
  bench: 'engine',
  loseDevice: 'engine',
  free: 'engine',
  kvCompare: 'engine',
  complete: 'stream',
  chat: 'stream',
  step: 'stream',
};

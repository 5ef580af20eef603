// kvscope service worker: keeps the app shell (HTML, JS, wasm, CSS) of one build in a versioned
// cache and serves it when the network is gone. The shell includes models/manifest.json (the list
// of shipped models, written with the build); the model files themselves are not handled here: the
// page keeps them in its own store ("kvscope-models") and verifies them before use.
const VERSION = '__VERSION__';
const SHELL = __SHELL__;
const CACHE = `kvscope-shell-${VERSION}`;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  // A new build's worker removes the caches of older builds.
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('kvscope-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  const rel = url.pathname.slice(scope.pathname.length);
  if (rel.startsWith('models/') && rel !== 'models/manifest.json') return;
  if (req.mode === 'navigate' || rel === '' || rel === 'index.html') {
    // The network first, so that a new build shows at once; this build's page when offline.
    event.respondWith(fetch(req).catch(() => caches.open(CACHE).then((c) => c.match('./', { ignoreSearch: true }))));
    return;
  }
  event.respondWith(caches.open(CACHE).then((c) => c.match(req, { ignoreSearch: true })).then((hit) => hit || fetch(req)));
});

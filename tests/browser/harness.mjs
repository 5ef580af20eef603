// Shared browser-test plumbing: a static server for dist/ on 127.0.0.1 and Debian's Chromium with
// WebGPU on SwiftShader. No browser is ever downloaded.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { before, after, afterEach } from 'node:test';
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const DIST = path.join(ROOT, 'dist');
export const ARTIFACTS = path.join(ROOT, 'artifacts');

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.gguf': 'application/octet-stream' };

/** Serves `dir` on a free loopback port under `prefix` (a sub-path such as '/some/path/'); every
 * request is logged. Resolves to { url, requests, close }; close() also cuts open connections. */
export function serve(dir = DIST, prefix = '/', { cut = null, files = {} } = {}) {
  const requests = [];
  const ranges = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url);
    const pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (!pathname.startsWith(prefix)) { res.writeHead(404).end('outside the site'); return; }
    const rel = pathname.slice(prefix.length);
    // `files`: paths under the site answered from files elsewhere (a benchmark's model).
    let file = files[rel] || path.join(dir, rel);
    if (!files[rel] && !file.startsWith(dir)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!fs.existsSync(file)) { res.writeHead(404).end('not found'); return; }
    const size = fs.statSync(file).size;
    const type = TYPES[path.extname(file)] || 'application/octet-stream';
    // HTTP Range (`bytes=A-B`, `bytes=A-`), as static hosts answer it.
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
    let start = 0;
    let end = size - 1;
    if (m) {
      ranges.push({ url: req.url, range: req.headers.range, at: requests.length - 1 });
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      if (start >= size) { res.writeHead(416, { 'content-range': `bytes */${size}` }).end(); return; }
      res.writeHead(206, { 'content-type': type, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}`, 'accept-ranges': 'bytes' });
    } else {
      res.writeHead(200, { 'content-type': type, 'content-length': size, 'accept-ranges': 'bytes' });
    }
    // `cut(path)`: {at, stall} — the byte of the file where the connection drops (an interrupted
    // download) or, with `stall`, stops sending and stays open — or null.
    const c = cut && cut(rel);
    if (c && c.at > start && c.at <= end) {
      const stream = fs.createReadStream(file, { start, end: c.at - 1 });
      stream.pipe(res, { end: false });
      // The socket ends once what was written has gone out: the body is short of its length.
      stream.on('end', () => { if (!c.stall) res.socket.end(); });
      return;
    }
    fs.createReadStream(file, { start, end }).pipe(res);
  });
  const close = () => { server.close(); server.closeAllConnections(); };
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}${prefix}`, requests, ranges, close, set cut(f) { cut = f; } })));
}

// Every page any test opens is watched: an uncaught error or an unhandled rejection in it fails
// the test that was running (after it ends, with the test's name and every error), unless the
// test said it expects it (`expectPageErrors`).
const pageErrors = [];
let expectedErrors = [];
const watched = new WeakSet();

function watchPage(page) {
  if (watched.has(page)) return;
  watched.add(page);
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e && e.stack ? e.stack : e}`));
}

function watchContext(context) {
  if (watched.has(context)) return;
  watched.add(context);
  context.on('page', watchPage);
  context.pages().forEach(watchPage);
}

/** The current test expects page errors matching each of `patterns` (RegExps): they do not fail it. */
export function expectPageErrors(...patterns) {
  expectedErrors.push(...patterns);
}

afterEach((t) => {
  const errors = pageErrors.splice(0);
  const unexpected = errors.filter((e) => !expectedErrors.some((p) => p.test(e)));
  expectedErrors = [];
  if (unexpected.length) throw new Error(`"${t.name}": ${unexpected.length} uncaught page error(s):\n${unexpected.join('\n')}`);
});

/** Actions and navigations wait up to 2 minutes (Playwright's 30 s default is too short for a
 * page loading a model on SwiftShader while the machine is busy); the tests' own waits say more. */
function patient(context) {
  context.setDefaultTimeout(120_000);
  context.setDefaultNavigationTimeout(120_000);
}

/** Debian's Chromium (or $CHROMIUM) and its flags: WebGPU on SwiftShader unless `webgpu` is false. */
export function browserOptions({ webgpu = true } = {}) {
  const args = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'];
  if (webgpu) args.push('--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader');
  return { executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args, headless: true };
}

export async function launch({ webgpu = true } = {}) {
  const browser = await chromium.launch(browserOptions({ webgpu }));
  const newContext = browser.newContext.bind(browser);
  browser.newContext = async (...a) => {
    const c = await newContext(...a);
    patient(c);
    watchContext(c);
    return c;
  };
  const newPage = browser.newPage.bind(browser);
  browser.newPage = async (...a) => {
    const p = await newPage(...a);
    patient(p.context());
    watchContext(p.context());
    watchPage(p);
    return p;
  };
  return browser;
}

/** The native CLI's greedy text for `prompt` (the reference the page must reproduce), on the
 * CLI's default backend or `backend` ('reference': the exact f32 pass, no GPU needed). */
export function cliGreedy(prompt, maxTokens, { chat = false, model = null, backend = null } = {}) {
  const args = ['generate', '--prompt', prompt, '--max-tokens', String(maxTokens), '--json'];
  if (chat) args.push('--chat');
  if (model) args.push('--model', model);
  if (backend) args.push('--backend', backend);
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return JSON.parse(out.trim().split('\n').at(-1)).summary;
}

/** Opens the site and (unless `wait` is false) waits until the default model is loaded or an
 * error shows. `browser` may be a Browser or a BrowserContext. */
export async function openSite(browser, url, query = '', { wait = true } = {}) {
  const page = await browser.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(url + query);
  if (wait) await ready(page);
  return page;
}

/** Opens the site in a new browser context that records dialogs (`page.dialogs`) and
 * Content-Security-Policy violations (`window.__csp` in the page). Close the context after. */
export async function openGuarded(browser, url, query = '') {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await openSite(context, url, query);
  page.dialogs = [];
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss(); });
  return { context, page };
}

/** Waits until a model is loaded or an error shows. */
export async function ready(page) {
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent) || !document.getElementById('error').hidden, null, { timeout: 180_000 });
}

/** Waits for the current generation to finish and returns the page's #output and #stats. */
export async function finished(page) {
  await page.waitForSelector('#output[data-done="true"]', { timeout: 540_000 });
  return page.evaluate(() => ({
    text: document.getElementById('output').textContent,
    stats: { ...document.getElementById('stats').dataset },
    error: document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent,
    status: document.getElementById('status').textContent,
  }));
}

/** Fills in the prompt and max tokens, presses Generate and waits as `finished` does. */
export async function generate(page, prompt, maxTokens) {
  await page.fill('#prompt', prompt);
  await page.fill('#max-tokens', String(maxTokens));
  await page.click('#generate');
  return finished(page);
}

/** Saves a screenshot in artifacts/: the whole page, or only the viewport (`fullPage: false`), or
 * one element (`selector`). */
export async function screenshot(page, name, { fullPage = true, selector = null } = {}) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  if (selector) await page.locator(selector).screenshot({ path: file });
  else await page.screenshot({ path: file, fullPage });
}

/** The model's geometry from the GGUF bytes, through the CLI. */
export function modelConfig() {
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), ['inspect', '--json'], { cwd: ROOT, encoding: 'utf8' });
  return JSON.parse(out).model;
}

/** The CLI's greedy token ids for `prompt`, with a teaching flaw (`--flaw`) if one is named. */
export function cliIds(prompt, maxTokens, { flaw = null } = {}) {
  const args = ['generate', '--prompt', prompt, '--max-tokens', String(maxTokens), '--json'];
  if (flaw) args.push('--flaw', flaw);
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l));
  return { ids: lines.filter((l) => 'id' in l).map((l) => l.id), summary: lines.at(-1).summary };
}

/** Makes every page of `context` record the engine's token events as the engine worker sends
 * them, before the page sees them: `window.__tokenEvents` gets a copy of each, with `flaw` (the
 * run's flaw option, or "none"). An independent read of what the page shows. */
export async function recordTokenEvents(context) {
  await context.addInitScript(() => {
    window.__tokenEvents = [];
    const PageWorker = window.Worker;
    window.Worker = class extends PageWorker {
      constructor(...args) {
        super(...args);
        // Call id → the flaw its options ask for, for each run that streams tokens.
        const runs = new Map();
        const post = this.postMessage.bind(this);
        this.postMessage = (msg, transfer) => {
          if (msg && ['complete', 'chat', 'step'].includes(msg.op)) runs.set(msg.id, (msg.args.options && msg.args.options.flaw) || 'none');
          return post(msg, transfer);
        };
        // Registered before the page's own onmessage, so it sees each event first.
        this.addEventListener('message', ({ data }) => {
          if (data && data.event && runs.has(data.id)) window.__tokenEvents.push({ ...data.event, flaw: runs.get(data.id) });
        });
      }
    };
  });
}

/** One server for dist/ and one browser for a whole test file: `site.server`, `site.browser`. */
export function useSite() {
  const site = {};
  before(async () => {
    site.server = await serve();
    site.browser = await launch();
  });
  after(async () => {
    await site.browser?.close();
    site.server?.close();
  });
  return site;
}

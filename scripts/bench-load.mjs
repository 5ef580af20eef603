// Time to ready for a model loaded from the network (the first visit) and from the page's store
// (later visits), in headless Chromium with a profile on disk: the page's own figure
// (#model-info's data-load-ms: from pressing Load to Ready, download, check and upload included).
// Runs each built site given, in turns, so that sites compared are measured in the same run.
//   npm run bench:load -- [--dist dist,/tmp/other-dist] [--reps 5] [--backend cpu|gpu]
//                         [--model models/FILE.gguf]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { serve, browserOptions, DIST } from '../tests/browser/harness.mjs';

const { values } = parseArgs({
  options: {
    dist: { type: 'string', default: DIST },
    reps: { type: 'string', default: '5' },
    backend: { type: 'string', default: 'cpu' },
    model: { type: 'string', default: 'models/SmolLM2-135M-Instruct.Q4_1.gguf' },
  },
});
const dists = values.dist.split(',').map((d) => path.resolve(d));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One visit: opens the site, waits for Ready, returns {from, ms}. */
async function visit(context, url) {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent) || !document.getElementById('error').hidden, null, { timeout: 600_000 });
  const r = await page.$eval('#model-info', (e) => ({ from: e.dataset.loadSource, ms: Number(e.dataset.loadMs) }));
  const err = await page.evaluate(() => (document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent));
  await page.close();
  if (err) throw new Error(err);
  return r;
}

const times = new Map(dists.map((d) => [d, { network: [], storage: [] }]));
for (let rep = 0; rep < Number(values.reps); rep++) {
  for (const dist of dists) {
    const site = await serve(dist);
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kvscope-load-'));
    const context = await chromium.launchPersistentContext(profile, browserOptions());
    try {
      const url = `${site.url}?backend=${values.backend}&model=${encodeURIComponent(values.model)}`;
      for (const want of ['network', 'storage']) {
        const r = await visit(context, url);
        if (r.from !== want) throw new Error(`${dist}: visit ${want} loaded from ${r.from}`);
        times.get(dist)[want].push(r.ms);
      }
    } finally {
      await context.close();
      site.close();
      fs.rmSync(profile, { recursive: true, force: true });
    }
  }
}
for (const [dist, t] of times) {
  console.log(`${dist}: from the network ${median(t.network)} ms, from the store ${median(t.storage)} ms (medians of ${t.network.length}; store: ${t.storage.join(', ')})`);
}

// The CPU backend's wasm memory against the model file: after loading, after a short completion,
// and after each number of cached positions (the KV cache grows with the text). Runs the built
// site's wasm (dist/, `trunk build --release`) in Node, whose V8 is Chromium's.
//   node scripts/bench-wasm-memory.mjs [--model www/models/FILE.gguf] [--context 2048] [--positions 128,256,512,1024]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

const ROOT = path.resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'www/models/SmolLM2-135M-Instruct.Q4_1.gguf' },
    context: { type: 'string', default: '2048' },
    positions: { type: 'string', default: '128,256,512,1024' },
  },
});
const dist = path.join(ROOT, 'dist');
const glue = fs.existsSync(dist) && fs.readdirSync(dist).find((f) => /^kvscope-[0-9a-f]+\.js$/.test(f));
if (!glue) {
  console.error('bench-wasm-memory: dist/ has no build; run `trunk build --release` first');
  process.exit(1);
}
const wasm = await import(pathToFileURL(path.join(dist, glue)).href);
wasm.initSync({ module: fs.readFileSync(path.join(dist, glue.replace(/\.js$/, '_bg.wasm'))) });

let bytes = new Uint8Array(fs.readFileSync(path.resolve(ROOT, values.model)));
const file = bytes.length;
const mib = (b) => (b / 2 ** 20).toFixed(1);
const show = (what) => console.log(`${what}: wasm memory ${mib(wasm.wasmMemoryBytes())} MiB = ${(wasm.wasmMemoryBytes() / file).toFixed(2)} × the file (${mib(file)} MiB)`);
const engine = await wasm.WebEngine.load(bytes, Number(values.context), { backend: 'cpu' });
bytes = null;
show('after loading');
await engine.complete('The capital of France is', { max_tokens: 16 }, () => true);
show(`after a ${engine.state().cached_tokens}-token completion`);
for (const n of values.positions.split(',').map(Number)) {
  const r = await engine.bench(16, 2, false, new Uint32Array([n]), false);
  show(`after ${n} cached positions (KV cache ${mib(r.kv_cache_bytes)} MiB)`);
}
process.exit(0);

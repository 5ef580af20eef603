// The OpenAI-style API in a page of its own: one import, one engine, streamed chat answers.
import { createEngine } from '../js/kvscope.js';

const $ = (id) => document.getElementById(id);

let engine;
try {
  engine = await createEngine({ model: '../models/SmolLM2-135M-Instruct.Q4_1.gguf', context: 1024 });
  $('status').textContent = `Ready: ${engine.state().name} on ${engine.state().backend}.`;
  $('ask').disabled = false;
} catch (e) {
  $('status').textContent = `The model did not load: ${e.message}`;
}

let abort = null;
$('stop').addEventListener('click', () => abort && abort.abort());
$('ask').addEventListener('click', async () => {
  abort = new AbortController();
  $('ask').disabled = true;
  $('stop').disabled = false;
  $('answer').textContent = '';
  try {
    const stream = await engine.chat.completions.create({
      messages: [{ role: 'user', content: $('question').value }],
      stream: true,
      max_tokens: 128,
      temperature: 0,
      signal: abort.signal,
    });
    for await (const chunk of stream) {
      $('answer').append(chunk.choices[0].delta.content || '');
      if (chunk.choices[0].finish_reason) $('status').textContent = `Done (${chunk.choices[0].finish_reason}).`;
    }
  } catch (e) {
    $('status').textContent = e.name === 'AbortError' ? 'Stopped.' : `Failed: ${e.message}`;
  } finally {
    $('ask').disabled = false;
    $('stop').disabled = true;
  }
});

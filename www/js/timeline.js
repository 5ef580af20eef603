// The timeline: what the "Inside the model" views showed after each step of the current
// conversation (cache rows, next-token table, attention), kept in page memory within a bound, and
// the #timeline slider that shows any kept step again. The slider's end is live.
import { $ } from './dom.js';

/** Steps kept at most, and the bytes of their arrays (attention weights above all). */
export const MAX_STEPS = 1000;
export const MAX_BYTES = 64 * 1048576;

export class Timeline {
  /** `show(frame)` draws a frame: a kept step, or (null) the live state. */
  constructor(show) {
    this.show = show;
    this.reset();
    const slider = $('timeline');
    slider.addEventListener('input', () => this.moved());
    $('timeline-hint').textContent =
      `Drag the slider or use the arrow keys to see the views as they were after each step; its right end is live. ` +
      `This page keeps the last ${MAX_STEPS} steps (at most ${MAX_BYTES / 1048576} MiB of them) in memory.`;
  }

  reset() {
    /** Kept frames, oldest first; frame.step numbers the steps of the conversation from 1. */
    this.frames = [];
    this.bytes = 0;
    this.steps = 0;
    this.dropped = 0;
    this.live = true;
    this.sync();
  }

  /** A step happened: keeps its frame (`bytes` of it counted against the bound), dropping the
   * oldest beyond it; a slider at its end stays live. */
  record(frame, bytes) {
    this.steps += 1;
    frame.step = this.steps;
    frame.bytes = bytes;
    this.frames.push(frame);
    this.bytes += bytes;
    while (this.frames.length > 1 && (this.frames.length > MAX_STEPS || this.bytes > MAX_BYTES)) {
      this.bytes -= this.frames.shift().bytes;
      this.dropped += 1;
    }
    this.sync();
  }

  /** The frame on show, or null when live. */
  current() {
    if (this.live) return null;
    const step = Number($('timeline').value);
    return this.frames.find((f) => f.step === step) || null;
  }

  moved() {
    const slider = $('timeline');
    this.live = Number(slider.value) >= Number(slider.max);
    this.label();
    this.show(this.current());
  }

  /** The slider's range and value from the kept frames. */
  sync() {
    const slider = $('timeline');
    const first = this.frames.length ? this.frames[0].step : 0;
    slider.min = String(first);
    slider.max = String(this.steps);
    slider.disabled = this.frames.length === 0;
    if (this.live) slider.value = String(this.steps);
    slider.dataset.steps = String(this.steps);
    slider.dataset.kept = String(this.frames.length);
    this.label();
  }

  label() {
    const out = $('timeline-label');
    const f = this.current();
    out.dataset.live = f ? 'false' : 'true';
    if (!f) {
      out.textContent = this.steps ? `live · step ${this.steps}` : 'live';
    } else {
      out.textContent = `step ${f.step} of ${this.steps} · ${JSON.stringify(f.ev.token)} at position ${f.ev.pos} · move right to return to live`;
    }
    const slider = $('timeline');
    slider.setAttribute('aria-valuetext', out.textContent);
    if (this.dropped) out.textContent += ` (steps 1–${this.dropped} dropped to stay within the bound)`;
  }
}

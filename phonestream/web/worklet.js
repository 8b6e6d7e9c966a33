// AudioWorklet: microphone blocks (128 frames at the context's rate) -> mono float32 frames at the
// server's rate, about 20 ms each, posted to the page, which sends them over the WebSocket.
//
// The page first asks for an AudioContext at the server's rate, so the browser's own resampler does the
// conversion and this processor only regroups samples. Where the browser keeps its own rate (ratio != 1),
// it converts here: a box filter over each output period (anti-aliasing) then linear interpolation.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = options.processorOptions.targetRate;
    this.ratio = sampleRate / this.target; // input samples per output sample
    this.frame = new Float32Array(Math.round(this.target * 0.02));
    this.filled = 0;
    this.pos = 0; // position of the next output sample, in input samples, relative to this.prev
    this.prev = new Float32Array(0); // unconsumed input tail from the previous block
  }

  emit(sample) {
    this.frame[this.filled++] = sample;
    if (this.filled === this.frame.length) {
      const size = this.frame.length; // read before the transfer empties the array
      this.port.postMessage(this.frame, [this.frame.buffer]);
      this.frame = new Float32Array(size);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (const channel of input) for (let i = 0; i < n; i++) mono[i] += channel[i] / input.length;
    if (this.ratio === 1) {
      for (let i = 0; i < n; i++) this.emit(mono[i]);
      return true;
    }
    const buf = new Float32Array(this.prev.length + n);
    buf.set(this.prev);
    buf.set(mono, this.prev.length);
    const half = Math.max(0, Math.floor(this.ratio / 2));
    while (this.pos + half + 1 < buf.length) {
      let sum = 0, count = 0;
      const centre = Math.floor(this.pos);
      for (let k = Math.max(0, centre - half); k <= centre + half; k++) { sum += buf[k]; count++; }
      const frac = this.pos - centre;
      const next = buf[centre + 1];
      this.emit((1 - frac) * (sum / count) + frac * next);
      this.pos += this.ratio;
    }
    const keep = Math.max(0, Math.floor(this.pos) - half);
    this.prev = buf.slice(keep);
    this.pos -= keep;
    return true;
  }
}

registerProcessor("capture-processor", CaptureProcessor);

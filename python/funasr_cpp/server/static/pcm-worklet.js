// The page's AudioWorklet (loaded by app.js): on the audio thread it takes the microphone at the
// AudioContext's rate (44.1 or 48 kHz, whatever the device runs at), mixes it to mono, resamples it
// to 24 kHz (the Realtime API's audio/pcm rate) and posts 16-bit PCM in 100 ms blocks.
"use strict";

const OUT_RATE = 24000;
const BLOCK = OUT_RATE / 10;  // samples per message: 100 ms
const ZEROS = 16;             // zero crossings of the sinc each side: the filter's length

function gcd(a, b) { while (b) { [a, b] = [b, a % b]; } return a; }

// Band-limited resampling: output sample n is the input convolved with a Blackman-windowed sinc
// centred on its input position n * inRate / outRate. The cutoff sits below the lower Nyquist rate
// of the two, so downsampling does not alias. The position is kept as an integer index plus a
// phase p / L (L = outRate / gcd), so there are only L kernels, each built once, each summing to 1.
class Resampler {
  constructor(inRate, outRate) {
    const g = gcd(inRate, outRate);
    this.L = outRate / g;                  // phases per input sample
    this.M = inRate / g;                   // phase advance per output sample
    this.cut = 0.46 * Math.min(1, outRate / inRate);  // cycles per input sample
    this.half = Math.ceil(ZEROS / (2 * this.cut));    // kernel half-width, in input samples
    this.kernels = new Map();
    this.buf = new Float32Array(8192);
    this.len = this.half;     // leading zeros: the first output is centred on the first input
    this.index = this.half;   // integer part of the next output's input position
    this.phase = 0;           // its fraction, in 1/L
    this.inputs = 0;          // input samples pushed (not counting the padding)
    this.outputs = 0;
  }

  kernel(phase) {
    let k = this.kernels.get(phase);
    if (k === undefined) {
      const { half, cut } = this, frac = phase / this.L;
      k = new Float32Array(2 * half);
      let sum = 0;
      for (let j = 0; j < 2 * half; j++) {
        const d = j - half + 1 - frac;        // input tap index - output position, in (-half, half]
        const x = 2 * cut * d, u = d / half;  // u in (-1, 1]: the window's argument
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const w = 0.42 + 0.5 * Math.cos(Math.PI * u) + 0.08 * Math.cos(2 * Math.PI * u);
        k[j] = sinc * w;
        sum += k[j];
      }
      for (let j = 0; j < k.length; j++) k[j] /= sum;  // unity gain at DC
      this.kernels.set(phase, k);
    }
    return k;
  }

  // Append input samples; call emit(sample) for each output sample they complete.
  push(x, emit, limit = Infinity) {
    if (this.len + x.length > this.buf.length) {
      const bigger = new Float32Array(2 * (this.len + x.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(x, this.len);
    this.len += x.length;
    const { buf, half, L, M } = this;
    while (this.index + half < this.len && this.outputs < limit) {
      const k = this.kernel(this.phase), base = this.index - half + 1;
      let acc = 0;
      for (let j = 0; j < k.length; j++) acc += k[j] * buf[base + j];
      emit(acc);
      this.outputs++;
      this.phase += M;
      this.index += Math.floor(this.phase / L);
      this.phase %= L;
    }
    const drop = this.index - half + 1;  // the first sample any later output reads
    if (drop > 0) {
      buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.index -= drop;
    }
  }
}

class Pcm16Worklet extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(Math.round(sampleRate), OUT_RATE);
    this.block = new Int16Array(BLOCK);
    this.filled = 0;
    this.done = false;
    this.mono = new Float32Array(128);
    this.emit = (v) => {
      const s = v > 1 ? 1 : v < -1 ? -1 : v;
      this.block[this.filled++] = Math.round(s * 32767);
      if (this.filled === BLOCK) this.post(false);
    };
    // "flush": the microphone stops; the resampler's last samples and the partial block go out
    this.port.onmessage = (e) => {
      if (e.data !== "flush" || this.done) return;
      const r = this.resampler;
      const total = Math.ceil(r.inputs * OUT_RATE / Math.round(sampleRate));
      r.push(new Float32Array(2 * r.half), this.emit, total);
      this.post(true);
      this.done = true;
    };
  }

  post(last) {
    const pcm = this.block.slice(0, this.filled);
    this.port.postMessage({ pcm: pcm.buffer, last }, [pcm.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    if (this.done) return false;
    const channels = inputs[0];
    if (channels.length === 0) return true;  // no input connected yet
    const n = channels[0].length;
    if (this.mono.length !== n) this.mono = new Float32Array(n);
    const mono = this.mono;
    mono.fill(0);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    this.resampler.inputs += n;
    this.resampler.push(mono, this.emit);
    return true;
  }
}

registerProcessor("pcm16-24k", Pcm16Worklet);

// The dashboard's throughput history: which traffic query each window makes, and how the
// API's samples (one per rule and bucket) become the chart's series (one point per time
// slot, summed over rules, zero where nothing was forwarded).

/** The chart's windows: their span and the bucket the API is asked for. */
export const WINDOWS = {
  '1h': { label: '1 h', secs: 3600, bucket: '1m', width: 60 },
  '24h': { label: '24 h', secs: 86400, bucket: '1m', width: 60 },
  '7d': { label: '7 d', secs: 7 * 86400, bucket: '1h', width: 3600 },
};

/** The most points a chart draws; finer data is summed into wider slots. */
export const MAX_POINTS = 240;

/**
 * The query of `window` ending at `nowSecs`: `{from, to, bucket, width}`, with `from` on a
 * bucket boundary so every slot of the chart is a whole bucket. The window stays inside the
 * bucket's retention (the API refuses a `from` older than it keeps).
 */
export function trafficQuery(windowKey, nowSecs) {
  const w = WINDOWS[windowKey] || WINDOWS['1h'];
  const to = Math.floor(nowSecs);
  const from = Math.ceil((to - w.secs) / w.width) * w.width;
  return { from, to, bucket: w.bucket, width: w.width };
}

/**
 * The series of `answer` (the API's `{samples}`) over `[from, to)`: points
 * `{start, bytesIn, bytesOut, rate, rateIn}` (bytes per second over the slot, both directions
 * and inbound only), oldest first,
 * at most `maxPoints` of them.
 */
export function seriesFrom(answer, { from, to, width }, maxPoints = MAX_POINTS) {
  const n = Math.max(1, Math.ceil((to - from) / width));
  const per = Math.max(1, Math.ceil(n / maxPoints));
  const slotWidth = width * per;
  const slots = Math.ceil(n / per);
  const points = Array.from({ length: slots }, (_, i) => ({ start: from + i * slotWidth, bytesIn: 0, bytesOut: 0, rate: 0, rateIn: 0 }));
  for (const sample of (answer && answer.samples) || []) {
    const idx = Math.floor((sample.start - from) / slotWidth);
    if (idx < 0 || idx >= slots) continue;
    points[idx].bytesIn += Number(sample.bytes_in) || 0;
    points[idx].bytesOut += Number(sample.bytes_out) || 0;
  }
  for (const p of points) {
    // The last slot may end after `to` (the part of it that has not happened yet).
    const secs = Math.max(1, Math.min(slotWidth, to - p.start));
    p.rate = (p.bytesIn + p.bytesOut) / secs;
    p.rateIn = p.bytesIn / secs;
  }
  return points;
}

/** A round top for the y axis: 1, 2 or 5 times a power of ten at or above `value`. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((m) => m * power >= value);
  return step * power;
}

/**
 * The SVG polyline points of `values` in a `width` × `height` box, the first value at the
 * left edge and the last at the right, `max` at the top.
 */
export function polylinePoints(values, width, height, max) {
  if (values.length === 0) return '';
  const dx = values.length > 1 ? width / (values.length - 1) : 0;
  const top = max > 0 ? max : 1;
  return values
    .map((v, i) => {
      const x = values.length > 1 ? i * dx : width / 2;
      const y = height - (Math.min(v, top) / top) * height;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

/** The busiest point of `series` (the first of equals), or null when nothing moved. */
export function peakOf(series) {
  let best = null;
  for (const p of series) if (p.rate > 0 && (!best || p.rate > best.rate)) best = p;
  return best;
}

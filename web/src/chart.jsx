// The dashboard's throughput chart: a hand-written SVG of bytes per second over a window
// (in and out together, with "in" as its own line), labelled for screen readers with a
// title and a one-sentence summary, and the same summary as text under it.
import { formatBytes, formatRate } from './lib/format.js';
import { niceMax, peakOf, polylinePoints } from './lib/traffic.js';

/**
 * The drawing box, in SVG units. The SVG stretches to its container's width at a fixed height
 * (strokes keep their width: `vector-effect` in the stylesheet).
 */
const WIDTH = 600;
const HEIGHT = 160;

const clock = (secs, withDay) =>
  new Date(secs * 1000).toLocaleString(undefined, withDay ? { weekday: 'short', hour: '2-digit', minute: '2-digit' } : { hour: '2-digit', minute: '2-digit' });

/** What the chart shows, in one sentence (its accessible description and visible caption). */
export function chartSummary(series, label, totals) {
  const peak = peakOf(series);
  const moved = `${formatBytes(totals.in)} in, ${formatBytes(totals.out)} out`;
  if (!peak) return `No traffic in the last ${label}.`;
  return `${moved} in the last ${label}; peak ${formatRate(peak.rate)} at ${clock(peak.start, series.length > 200)}.`;
}

/**
 * The chart of `series` (see `seriesFrom`) for the window named `label` (`1 h`), with
 * `totals` `{in, out}` bytes over the window.
 */
export function ThroughputChart({ series, label, totals, idBase = 'throughput' }) {
  const top = niceMax(Math.max(0, ...series.map((p) => p.rate)));
  const all = polylinePoints(series.map((p) => p.rate), WIDTH, HEIGHT, top);
  const inbound = polylinePoints(series.map((p) => p.rateIn), WIDTH, HEIGHT, top);
  const summary = chartSummary(series, label, totals);
  const titleId = `${idBase}-title`;
  const descId = `${idBase}-desc`;
  const first = series[0];
  const last = series[series.length - 1];
  const longWindow = first && last && last.start - first.start > 86400;
  return (
    <figure class="chart" data-testid="throughput-chart">
      <div class="chart-axis">
        <span>{formatRate(top)}</span>
        <span class="chart-legend">
          <span class="swatch swatch-total" aria-hidden="true" /> in + out <span class="swatch swatch-in" aria-hidden="true" /> in
        </span>
      </div>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} preserveAspectRatio="none" role="img" aria-labelledby={`${titleId} ${descId}`} class="chart-svg">
        <title id={titleId}>Throughput over the last {label}</title>
        <desc id={descId}>{summary}</desc>
        <line x1="0" y1={HEIGHT / 2} x2={WIDTH} y2={HEIGHT / 2} class="chart-grid" />
        <line x1="0" y1={HEIGHT - 0.5} x2={WIDTH} y2={HEIGHT - 0.5} class="chart-base" />
        {all && <polyline points={all} class="chart-line chart-total" />}
        {inbound && <polyline points={inbound} class="chart-line chart-in" />}
      </svg>
      <div class="chart-axis">
        <span>{first ? clock(first.start, longWindow) : ''}</span>
        <span>now</span>
      </div>
      <figcaption class="muted" data-testid="throughput-summary">{summary}</figcaption>
    </figure>
  );
}

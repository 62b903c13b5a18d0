import { afterEach, describe, expect, it } from 'vitest';
import { render } from 'preact';
import { ThroughputChart, chartSummary } from '../../src/chart.jsx';
import { QuotaBar } from '../../src/pages/quotas.jsx';
import { seriesFrom } from '../../src/lib/traffic.js';

let root;

function mount(vnode) {
  root = document.createElement('div');
  document.body.appendChild(root);
  render(vnode, root);
  return root;
}

afterEach(() => {
  render(null, root);
  root.remove();
});

describe('ThroughputChart', () => {
  const query = { from: 0, to: 3600, width: 60 };

  it('is an image named by its title and described by its summary', () => {
    const series = seriesFrom({ samples: [{ start: 120, bytes_in: 6144, bytes_out: 6144 }] }, query);
    const el = mount(<ThroughputChart series={series} label="1 h" totals={{ in: 6144, out: 6144 }} />);
    const svg = el.querySelector('svg');
    expect(svg.getAttribute('role')).toBe('img');
    const [titleId, descId] = svg.getAttribute('aria-labelledby').split(' ');
    expect(el.querySelector(`#${titleId}`).textContent).toBe('Throughput over the last 1 h');
    expect(el.querySelector(`#${descId}`).textContent).toMatch(/^6\.00 KiB in, 6\.00 KiB out in the last 1 h; peak 205 B\/s at /);
    expect(el.querySelectorAll('polyline').length).toBe(2);
    expect(el.querySelector('[data-testid="throughput-summary"]').textContent).toBe(el.querySelector(`#${descId}`).textContent);
  });

  it('says so when nothing moved', () => {
    expect(chartSummary(seriesFrom({ samples: [] }, query), '24 h', { in: 0, out: 0 })).toBe('No traffic in the last 24 h.');
  });
});

describe('QuotaBar', () => {
  it('shows the numbers as text and as a meter value', () => {
    const quota = { user: 'alice', client: 'c1', current_period_bytes_used: 170 * 1024, monthly_bytes: 200 * 1024, exhausted: false };
    const el = mount(<QuotaBar quota={quota} clientName="edge-01" />);
    const meter = el.querySelector('[role="meter"]');
    expect(meter.getAttribute('aria-label')).toBe('Usage of alice on edge-01');
    expect(meter.getAttribute('aria-valuenow')).toBe('85');
    expect(meter.className).toBe('meter meter-warn');
    expect(el.querySelector('[data-testid="quota-used"]').textContent).toBe('170.0 KiB of 200.0 KiB (85 %)');
    expect(el.querySelector('.meter-fill').style.width).toBe('85.0%');
  });
});

import { describe, expect, it } from 'vitest';
import { MAX_POINTS, niceMax, peakOf, polylinePoints, seriesFrom, trafficQuery } from '../../src/lib/traffic.js';

describe('traffic history', () => {
  it('asks each window with its bucket, from a bucket boundary', () => {
    const now = 1_800_000_030;
    expect(trafficQuery('1h', now)).toEqual({ from: 1_799_996_460, to: now, bucket: '1m', width: 60 });
    const day = trafficQuery('24h', now);
    expect([day.bucket, day.from % 60, now - day.from <= 86400]).toEqual(['1m', 0, true]);
    const week = trafficQuery('7d', now);
    expect([week.bucket, week.from % 3600, now - week.from <= 7 * 86400]).toEqual(['1h', 0, true]);
  });

  it('sums samples of every rule per slot and fills quiet slots with zero', () => {
    const query = { from: 600, to: 840, width: 60 };
    const answer = {
      samples: [
        { start: 600, rule: 1, bytes_in: 60, bytes_out: 60 },
        { start: 600, rule: 2, bytes_in: 0, bytes_out: 120 },
        { start: 720, rule: 1, bytes_in: 6, bytes_out: 0 },
        { start: 540, rule: 1, bytes_in: 999, bytes_out: 999 },
      ],
    };
    const series = seriesFrom(answer, query);
    expect(series.map((p) => p.start)).toEqual([600, 660, 720, 780]);
    expect(series.map((p) => p.rate)).toEqual([4, 0, 0.1, 0]);
    expect(series[0].rateIn).toBe(1);
    expect(peakOf(series).start).toBe(600);
    expect(peakOf(seriesFrom({ samples: [] }, query))).toBeNull();
  });

  it('draws a day of minutes in at most MAX_POINTS points', () => {
    const query = { from: 0, to: 86400, width: 60 };
    const series = seriesFrom({ samples: [{ start: 86340, bytes_in: 360, bytes_out: 0 }] }, query);
    expect(series.length).toBeLessThanOrEqual(MAX_POINTS);
    expect(series[series.length - 1].bytesIn).toBe(360);
  });

  it('scales to a round top and into the box', () => {
    expect([niceMax(0), niceMax(3), niceMax(1200), niceMax(7)]).toEqual([1, 5, 2000, 10]);
    expect(polylinePoints([0, 5, 10], 100, 50, 10)).toBe('0.0,50.0 50.0,25.0 100.0,0.0');
    expect(polylinePoints([], 100, 50, 10)).toBe('');
  });
});

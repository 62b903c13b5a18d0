import { describe, expect, it } from 'vitest';
import { MAX_SILENT_ERRORS, openStatsStream } from '../../src/lib/live.js';

/** An EventSource the test drives by hand. */
class FakeSource {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    this.closed = false;
    FakeSource.last = this;
  }
  addEventListener(name, fn) {
    this.listeners[name] = fn;
  }
  emit(name, data) {
    this.readyState = 1;
    this.listeners[name]({ data: JSON.stringify(data) });
  }
  fail(readyState) {
    this.readyState = readyState;
    this.onerror();
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
}

function open() {
  const seen = { stats: [], end: [], fallback: 0 };
  const close = openStatsStream('/v1/rules/7/stats/stream', {
    onStats: (s) => seen.stats.push(s),
    onEnd: (s) => seen.end.push(s),
    onFallback: () => (seen.fallback += 1),
    EventSourceImpl: FakeSource,
  });
  return { seen, close, source: FakeSource.last };
}

describe('live stats stream', () => {
  it('delivers stats events and closes on end', () => {
    const { seen, source } = open();
    expect(source.url).toBe('/v1/rules/7/stats/stream');
    source.emit('stats', { rule_id: 7, totals: { bytes_in: 1 } });
    source.emit('end', { error: { code: 'rule_not_found', message: 'no rule 7' } });
    expect(seen.stats).toEqual([{ rule_id: 7, totals: { bytes_in: 1 } }]);
    expect(seen.end).toEqual([{ error: { code: 'rule_not_found', message: 'no rule 7' } }]);
    expect([source.closed, seen.fallback]).toEqual([true, 0]);
  });

  it('falls back to polling when the server refuses the stream', () => {
    const { seen, source } = open();
    source.fail(2);
    expect([seen.fallback, source.closed]).toEqual([1, true]);
  });

  it('keeps reconnecting after events, and gives up after silent failures', () => {
    const first = open();
    first.source.emit('stats', { rule_id: 7 });
    for (let i = 0; i < MAX_SILENT_ERRORS + 2; i += 1) first.source.fail(0);
    expect(first.seen.fallback).toBe(0);
    const second = open();
    for (let i = 0; i < MAX_SILENT_ERRORS; i += 1) second.source.fail(0);
    expect(second.seen.fallback).toBe(1);
  });

  it('polls at once without EventSource, and closing twice is harmless', () => {
    let fallback = 0;
    const close = openStatsStream('/x', { onStats() {}, onEnd() {}, onFallback: () => (fallback += 1), EventSourceImpl: undefined });
    close();
    expect(fallback).toBe(1);
    const { close: closeIt, source } = open();
    closeIt();
    closeIt();
    expect(source.closed).toBe(true);
  });
});

import { describe, expect, it } from 'vitest';
import { rank, score } from '../../src/lib/palette.js';
import { back, currentCursor, firstPage, forward, pageNumber, received } from '../../src/lib/pager.js';
import { match } from '../../src/lib/router.jsx';

describe('palette ranking', () => {
  const items = [{ label: 'Go to Rules' }, { label: 'Client edge-01' }, { label: 'Rule #3 web edge-01:8080' }, { label: 'User alice' }];
  it('prefers prefixes, then substrings, then subsequences', () => {
    expect(rank(items, 'client')[0].label).toBe('Client edge-01');
    expect(rank(items, 'edge').map((i) => i.label)).toEqual(['Client edge-01', 'Rule #3 web edge-01:8080']);
    expect(rank(items, 'ualc').map((i) => i.label)).toEqual(['User alice']);
    expect(rank(items, 'zzz')).toEqual([]);
    expect(rank(items, '').length).toBe(4);
    expect(score('abc', 'abcd')).toBe(-1);
  });
});

describe('audit pager', () => {
  it('walks forward on next cursors and back through the remembered ones', () => {
    let state = firstPage();
    expect(currentCursor(state)).toBeNull();
    expect(forward(state)).toBe(state);
    state = received(state, 'c1');
    state = forward(state);
    expect([currentCursor(state), pageNumber(state)]).toEqual(['c1', 2]);
    state = forward(received(state, 'c2'));
    expect(currentCursor(state)).toBe('c2');
    state = received(state, null);
    expect(forward(state)).toBe(state);
    state = back(state);
    expect([currentCursor(state), pageNumber(state)]).toEqual(['c1', 2]);
    state = back(back(state));
    expect(pageNumber(state)).toBe(1);
  });
});

describe('route matching', () => {
  it('matches params, ignores the query and refuses bad encodings', () => {
    expect(match('/rules/:id', '/rules/12?x=1')).toEqual({ id: '12' });
    expect(match('/users/:id/tokens', '/users/a%40b/tokens')).toEqual({ id: 'a@b' });
    expect(match('/rules', '/rules/12')).toBeNull();
    expect(match('/', '/')).toEqual({});
    expect(match('/users/:id/tokens', '/users/%E0%A4%A/tokens')).toBeNull();
  });
});

import { describe, expect, it, vi } from 'vitest';
import { ApiError, createApi, withQuery } from '../../src/lib/api.js';

function fakeFetch(status, body) {
  return vi.fn(async () => new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } }));
}

describe('createApi', () => {
  it('sends the CSRF token on writes only, once set', async () => {
    const fetch = fakeFetch(200, { ok: true });
    const api = createApi(fetch);
    await api.post('/v1/rules', { a: 1 });
    expect(fetch.mock.calls[0][1].headers['X-CSRF-Token']).toBeUndefined();
    api.setCsrf('tok');
    await api.get('/v1/rules');
    await api.del('/v1/rules/1');
    await api.put('/v1/auth/password', {});
    expect(fetch.mock.calls[1][1].headers['X-CSRF-Token']).toBeUndefined();
    expect(fetch.mock.calls[2][1].headers['X-CSRF-Token']).toBe('tok');
    expect(fetch.mock.calls[3][1].headers['X-CSRF-Token']).toBe('tok');
    expect(fetch.mock.calls[3][1].credentials).toBe('same-origin');
    expect(fetch.mock.calls[0][1].body).toBe('{"a":1}');
  });

  it("turns an error body into an ApiError with the API's code, message and rule id", async () => {
    const api = createApi(fakeFetch(409, { error: { code: 'port_in_use', message: 'port 80 is taken', rule_id: 7 } }));
    const err = await api.post('/v1/rules', {}).catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect([err.status, err.code, err.message, err.ruleId]).toEqual([409, 'port_in_use', 'port 80 is taken', 7]);
  });

  it('keeps a non-JSON failure readable', async () => {
    const api = createApi(vi.fn(async () => new Response('bad gateway', { status: 502 })));
    const err = await api.get('/v1/rules').catch((e) => e);
    expect([err.code, err.message]).toEqual(['http_502', 'bad gateway']);
  });

  it('reports a lost session on 401 and forgets the token, but not for a failed login', async () => {
    const lost = vi.fn();
    const api = createApi(fakeFetch(401, { error: { code: 'unauthenticated', message: 'no' } }), { onSessionLost: lost });
    api.setCsrf('tok');
    await api.post('/v1/auth/login', {}).catch(() => {});
    expect(lost).not.toHaveBeenCalled();
    expect(api.hasCsrf()).toBe(true);
    await api.get('/v1/clients').catch(() => {});
    expect(lost).toHaveBeenCalledTimes(1);
    expect(api.hasCsrf()).toBe(false);
  });

  it('answers null for 204 and a network failure as network_error', async () => {
    expect(await createApi(vi.fn(async () => new Response(null, { status: 204 }))).del('/v1/rules/1')).toBeNull();
    const err = await createApi(vi.fn(async () => { throw new TypeError('refused'); })).get('/v1/rules').catch((e) => e);
    expect(err.code).toBe('network_error');
  });
});

describe('withQuery', () => {
  it('drops empty values and encodes the rest', () => {
    expect(withQuery('/v1/rules', { state: 'active', client: '', owner: null, x: 'a b' })).toBe('/v1/rules?state=active&x=a+b');
    expect(withQuery('/v1/rules', {})).toBe('/v1/rules');
  });
});

import { describe, expect, it } from 'vitest';
import { formatBytes, localToRfc3339, parseTarget, rateBetween, relativeTime, ruleSpecFromForm, targetText } from '../../src/lib/format.js';

describe('format', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(50 * 1024 * 1024)).toBe('50.0 MiB');
  });

  it('computes rates that are never negative or infinite', () => {
    expect(rateBetween({ at: 0, bytes: 0 }, { at: 2000, bytes: 4096 })).toBe(2048);
    expect(rateBetween({ at: 0, bytes: 500 }, { at: 1000, bytes: 100 })).toBe(0);
    expect(rateBetween({ at: 1000, bytes: 0 }, { at: 1000, bytes: 100 })).toBe(0);
    expect(rateBetween(null, { at: 1, bytes: 1 })).toBe(0);
  });

  it('says when, relative to now', () => {
    const now = Date.parse('2026-01-01T00:10:00Z');
    expect(relativeTime(null, now)).toBe('never');
    expect(relativeTime('2026-01-01T00:09:50Z', now)).toBe('10 s ago');
    expect(relativeTime('2026-01-01T00:00:00Z', now)).toBe('10 min ago');
    expect(relativeTime('2025-12-30T00:10:00Z', now)).toBe('2 d ago');
  });

  it('writes and reads the target grammar', () => {
    expect(targetText({ address: ' 10.0.0.1:80 ', priority: '', proxy: '' })).toBe('10.0.0.1:80');
    expect(targetText({ address: '[::1]:80', priority: '2', proxy: 'v2' })).toBe('[::1]:80@2,proxy=v2');
    expect(parseTarget('[::1]:80@2,proxy=v2')).toEqual({ address: '[::1]:80', priority: '2', proxy: 'v2' });
    expect(parseTarget('db:5432')).toEqual({ address: 'db:5432', priority: '', proxy: '' });
  });

  it('builds the push body with only what the operator filled', () => {
    const one = { listen_port: '8080', protocol: 'tcp', targets: [{ address: 'a:1', priority: '', proxy: '' }, { address: '', priority: '', proxy: '' }], name: '', health_check_interval_secs: '' };
    expect(ruleSpecFromForm(one)).toEqual({ listen_port: 8080, protocol: 'tcp', target: 'a:1' });
    const many = { listen_port: '20000-20009', protocol: 'udp', targets: [{ address: 'a:1', priority: '1', proxy: '' }, { address: 'b:1', priority: '2', proxy: '' }], name: ' dns ', health_check_interval_secs: '5' };
    expect(ruleSpecFromForm(many)).toEqual({ listen_port: '20000-20009', protocol: 'udp', targets: ['a:1@1', 'b:1@2'], name: 'dns', health_check_interval_secs: 5 });
  });

  it('adds an SNI pattern or the fallback flag to TCP rules only', () => {
    const base = { listen_port: '443', protocol: 'tcp', targets: [{ address: 'a:8443', priority: '', proxy: '' }], name: '', health_check_interval_secs: '' };
    expect(ruleSpecFromForm({ ...base, sni_pattern: ' api.example.com ' })).toEqual({ listen_port: 443, protocol: 'tcp', target: 'a:8443', sni_pattern: 'api.example.com' });
    expect(ruleSpecFromForm({ ...base, sni_pattern: 'x.example.com', sni_fallback: true })).toEqual({ listen_port: 443, protocol: 'tcp', target: 'a:8443', sni_fallback: true });
    expect(ruleSpecFromForm({ ...base, protocol: 'udp', sni_pattern: 'api.example.com' })).toEqual({ listen_port: 443, protocol: 'udp', target: 'a:8443' });
  });

  it('turns a local datetime into RFC 3339 UTC to the second', () => {
    expect(localToRfc3339('')).toBe('');
    expect(localToRfc3339('nonsense')).toBe('');
    expect(localToRfc3339('2026-11-25T21:07:59')).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });
});

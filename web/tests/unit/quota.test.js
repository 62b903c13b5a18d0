import { describe, expect, it } from 'vitest';
import { amountFromBytes, bytesFromAmount, percentText, quotaLevel, quotaWarnings, usedRatio } from '../../src/lib/quota.js';

const quota = (used, cap, exhausted = false) => ({ user: 'u', client: 'c', current_period_bytes_used: used, monthly_bytes: cap, exhausted });

describe('quota', () => {
  it('turns an amount and unit into bytes, and leaves non-numbers to the API', () => {
    expect(bytesFromAmount('1', 'GiB')).toBe(1024 ** 3);
    expect(bytesFromAmount(' 1.5 ', 'KiB')).toBe(1536);
    expect(bytesFromAmount('0', 'MiB')).toBe(0);
    expect(bytesFromAmount('', 'MiB')).toBeNull();
    expect(bytesFromAmount('ten', 'MiB')).toBeNull();
    expect(bytesFromAmount('1e3', 'MiB')).toBeNull();
  });

  it('shows a cap in the largest unit it fills', () => {
    expect(amountFromBytes(1024 ** 4)).toEqual({ amount: '1', unit: 'TiB' });
    expect(amountFromBytes(1536 * 1024 ** 2)).toEqual({ amount: '1.5', unit: 'GiB' });
    expect(amountFromBytes(200 * 1024)).toEqual({ amount: '200', unit: 'KiB' });
    expect(amountFromBytes(100)).toEqual({ amount: '0.098', unit: 'KiB' });
  });

  it('measures usage, capped at the whole cap', () => {
    expect(usedRatio(quota(50, 200))).toBe(0.25);
    expect(usedRatio(quota(300, 200))).toBe(1);
    expect(percentText(quota(199, 1000))).toBe('19 %');
    expect(percentText(quota(300, 200))).toBe('100 %');
  });

  it('warns from 80 % on, and always when exhausted', () => {
    expect(quotaLevel(quota(79, 100))).toBe('ok');
    expect(quotaLevel(quota(80, 100))).toBe('warn');
    expect(quotaLevel(quota(10, 100, true))).toBe('exhausted');
    const list = [quota(10, 100), { ...quota(90, 100), user: 'b' }, { ...quota(85, 100), user: 'a' }, { ...quota(1, 100, true), user: 'x' }];
    expect(quotaWarnings(list).map((q) => q.user)).toEqual(['x', 'b', 'a']);
    expect(quotaWarnings(undefined)).toEqual([]);
  });
});

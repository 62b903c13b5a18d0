// Quota arithmetic of the pages: the cap's unit picker (binary units, the same ones
// `formatBytes` shows), how full a quota is, and which quotas deserve a warning.

/** The units of the cap picker, smallest first. */
export const QUOTA_UNITS = [
  { unit: 'KiB', bytes: 1024 },
  { unit: 'MiB', bytes: 1024 ** 2 },
  { unit: 'GiB', bytes: 1024 ** 3 },
  { unit: 'TiB', bytes: 1024 ** 4 },
];

/** From this share of the cap on, a quota is a warning on the dashboard. */
export const WARN_RATIO = 0.8;

/**
 * Bytes of `amount` `unit` (`'1.5'`, `'GiB'`), rounded to a whole byte; `null` when the
 * amount is not a number at all. Zero and negative amounts are passed on as they are, so
 * the API answers them with its own code and message.
 */
export function bytesFromAmount(amount, unit) {
  const text = String(amount ?? '').trim();
  if (!/^-?\d+(\.\d+)?$/.test(text)) return null;
  const scale = QUOTA_UNITS.find((u) => u.unit === unit)?.bytes ?? 1;
  return Math.round(Number(text) * scale);
}

/** The largest unit in which `bytes` is at least 1, and the amount in it (for the picker). */
export function amountFromBytes(bytes) {
  const n = Number(bytes) || 0;
  const pick = [...QUOTA_UNITS].reverse().find((u) => n >= u.bytes) ?? QUOTA_UNITS[0];
  const amount = n / pick.bytes;
  return { amount: String(Number.isInteger(amount) ? amount : Number(amount.toFixed(3))), unit: pick.unit };
}

/** Used share of the cap, 0 to 1 (a period may pass the cap by what was in flight: capped at 1). */
export function usedRatio(quota) {
  const cap = Number(quota.monthly_bytes) || 0;
  if (cap <= 0) return 1;
  return Math.min(1, Math.max(0, (Number(quota.current_period_bytes_used) || 0) / cap));
}

/** `exhausted`, `warn` (≥ 80 % used) or `ok`. */
export function quotaLevel(quota) {
  if (quota.exhausted) return 'exhausted';
  return usedRatio(quota) >= WARN_RATIO ? 'warn' : 'ok';
}

/** The quotas the dashboard warns about, exhausted first, then the fullest. */
export function quotaWarnings(quotas) {
  return (quotas || [])
    .filter((q) => quotaLevel(q) !== 'ok')
    .sort((a, b) => Number(b.exhausted) - Number(a.exhausted) || usedRatio(b) - usedRatio(a));
}

/** The whole percent of the cap used, e.g. `64 %` (`100 %` once exhausted or past the cap). */
export const percentText = (quota) => `${Math.floor(usedRatio(quota) * 100)} %`;

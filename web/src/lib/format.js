// Display helpers and the small arithmetic the pages share: byte counts, rates from two
// counter readings, relative times, and the target grammar of the API
// (`host:port[-port][@priority][,proxy=v1|v2]`).
import { rateLimitFromForm } from './ratelimit.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `n` bytes in binary units, e.g. `1.5 KiB`. */
export function formatBytes(n) {
  let value = Number(n) || 0;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

/** A rate in bytes per second, e.g. `2.0 KiB/s`. */
export const formatRate = (bytesPerSec) => `${formatBytes(Math.round(bytesPerSec))}/s`;

/**
 * Bytes per second between two readings `{at, bytes}` (ms, cumulative bytes). A counter that
 * went down (the client restarted and reported afresh) or no time passed gives 0, never a
 * negative or infinite rate.
 */
export function rateBetween(previous, current) {
  if (!previous || !current) return 0;
  const dt = (current.at - previous.at) / 1000;
  const delta = current.bytes - previous.bytes;
  if (dt <= 0 || delta < 0) return 0;
  return delta / dt;
}

/** `then` (RFC 3339) relative to `now` (ms), e.g. `3 min ago`; `never` when absent. */
export function relativeTime(then, now = Date.now()) {
  if (!then) return 'never';
  const at = Date.parse(then);
  if (Number.isNaN(at)) return String(then);
  const secs = Math.round((now - at) / 1000);
  const future = secs < 0;
  const s = Math.abs(secs);
  let text;
  if (s < 45) text = `${s} s`;
  else if (s < 3600) text = `${Math.round(s / 60)} min`;
  else if (s < 86400) text = `${Math.round(s / 3600)} h`;
  else text = `${Math.round(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** The API's target text for a form row `{address, priority, proxy}`. */
export function targetText({ address, priority, proxy }) {
  let text = String(address || '').trim();
  if (priority !== undefined && priority !== null && String(priority).trim() !== '') {
    text += `@${String(priority).trim()}`;
  }
  if (proxy) text += `,proxy=${proxy}`;
  return text;
}

/** A form row from the API's target text (the inverse of `targetText`). */
export function parseTarget(text) {
  let rest = String(text);
  let proxy = '';
  const comma = rest.indexOf(',proxy=');
  if (comma >= 0) {
    proxy = rest.slice(comma + ',proxy='.length);
    rest = rest.slice(0, comma);
  }
  let priority = '';
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    priority = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  return { address: rest, priority, proxy };
}

/**
 * The rule body of a push form: only the fields the operator filled, in the API's shape;
 * `form.caps` (see `lib/ratelimit.js`) becomes `rate_limit` when any cap is filled in.
 */
export function ruleSpecFromForm(form) {
  const rows = form.targets.filter((row) => String(row.address || '').trim() !== '');
  const listen = String(form.listen_port).trim();
  const spec = {
    listen_port: /^\d+$/.test(listen) ? Number(listen) : listen,
    protocol: form.protocol || 'tcp',
  };
  const targets = rows.map(targetText);
  if (targets.length === 1) spec.target = targets[0];
  else spec.targets = targets;
  if (String(form.name || '').trim()) spec.name = form.name.trim();
  const interval = String(form.health_check_interval_secs || '').trim();
  if (interval) spec.health_check_interval_secs = Number(interval);
  if ((form.protocol || 'tcp') === 'tcp') {
    if (form.sni_fallback) spec.sni_fallback = true;
    else if (String(form.sni_pattern || '').trim()) spec.sni_pattern = form.sni_pattern.trim();
  }
  // Caps go only when one is filled in: an empty `rate_limit` would say nothing anyway.
  const limits = form.caps ? rateLimitFromForm(form.caps) : {};
  if (Object.keys(limits).length > 0) spec.rate_limit = limits;
  return spec;
}

/** A `datetime-local` value (local time) as the RFC 3339 UTC text the API takes; '' stays ''. */
export function localToRfc3339(value) {
  if (!value) return '';
  const at = new Date(value);
  if (Number.isNaN(at.getTime())) return '';
  return at.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** An RFC 3339 time for tables: local, to the second. */
export function formatTime(value) {
  if (!value) return '';
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? String(value) : at.toLocaleString();
}

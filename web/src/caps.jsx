// Rate-limit pieces shared by the push dialog, the rule detail and the rate limits page: the
// caps fieldset (each cap a field whose API error shows under it), the caps as short text,
// and the counters of what the caps refused, delayed or dropped.
import { Field } from './components.jsx';
import { fieldForError } from './lib/fields.js';
import { formatBytes } from './lib/format.js';
import { BYTE_UNITS, CAPS_FIELD, CAP_FIELDS, hasCaps } from './lib/ratelimit.js';

/** One cap's input: an amount, and for byte caps a unit picker (per second for rates). */
function CapInput({ field, value, onChange, formError, fields, idPrefix }) {
  const entry = value[field.key];
  const set = (patch) => onChange({ ...value, [field.key]: { ...entry, ...patch } });
  return (
    <Field label={field.label} name={field.key} idPrefix={idPrefix} formError={formError} fields={fields}>
      {(attrs) =>
        field.bytes ? (
          <div class="amount">
            <input {...attrs} name={field.key} inputMode="decimal" autocomplete="off" value={entry.amount} onInput={(e) => set({ amount: e.currentTarget.value })} />
            <select aria-label={`${field.label}: unit`} value={entry.unit} onChange={(e) => set({ unit: e.currentTarget.value })}>
              {BYTE_UNITS.map((u) => (
                <option key={u.unit} value={u.unit}>{field.perSec ? `${u.unit}/s` : u.unit}</option>
              ))}
            </select>
          </div>
        ) : (
          <input {...attrs} name={field.key} inputMode="numeric" autocomplete="off" value={entry.amount} onInput={(e) => set({ amount: e.currentTarget.value })} />
        )
      }
    </Field>
  );
}

/**
 * The seven optional caps as one fieldset. `value` is a form of `lib/ratelimit.js`; an API
 * error about one cap shows under it, one about the caps as a whole (an empty envelope, a
 * client without rate-limit support) under the fieldset. Input ids are `f-<idPrefix>-<key>`.
 */
export function RateLimitFields({ value, onChange, formError, fields, idPrefix, legend = 'Rate limits' }) {
  const base = idPrefix ? `f-${idPrefix}-` : 'f-';
  const whole = formError && fieldForError(formError, fields) === CAPS_FIELD;
  const hintId = `${base}rate_limit-hint`;
  const errorId = `${base}rate_limit-error`;
  const rows = [CAP_FIELDS.slice(0, 2), CAP_FIELDS.slice(2, 4), CAP_FIELDS.slice(4, 6), CAP_FIELDS.slice(6)];
  return (
    <fieldset class={`caps${whole ? ' field-invalid' : ''}`} id={`${base}rate_limit`} aria-describedby={whole ? `${hintId} ${errorId}` : hintId}>
      <legend>{legend}</legend>
      <p class="hint" id={hintId}>
        Bandwidth is in <strong>bytes</strong> per second, not bits (1 MiB/s is about 8.4 Mbit/s). Inbound runs from the
        connecting peer to the target, outbound back. A burst is how much may pass at once after a quiet spell: leave it
        empty for one second's worth (at least 64 KiB). An empty field sets no cap.
      </p>
      {rows.map((row) => (
        <div class="row" key={row[0].key}>
          {row.map((field) => (
            <CapInput key={field.key} field={field} value={value} onChange={onChange} formError={formError} fields={fields} idPrefix={idPrefix} />
          ))}
        </div>
      ))}
      {whole && (
        <small class="field-error" id={errorId}>
          <code>{formError.code}</code> {formError.message}
        </small>
      )}
    </fieldset>
  );
}

const given = (v) => v !== undefined && v !== null;
const plural = (n, one, many) => `${n} ${Number(n) === 1 ? one : many}`;

/** The caps of `limits` as short lines, e.g. `Inbound 1.00 MiB/s (burst 2.00 MiB)`; none: []. */
export function describeCaps(limits) {
  if (!hasCaps(limits)) return [];
  const lines = [];
  const bandwidth = (label, rate, burst) => {
    if (!given(rate)) return;
    lines.push(`${label} ${formatBytes(rate)}/s${given(burst) ? ` (burst ${formatBytes(burst)})` : ''}`);
  };
  bandwidth('Inbound', limits.bandwidth_in_bps, limits.bandwidth_in_burst_bytes);
  bandwidth('Outbound', limits.bandwidth_out_bps, limits.bandwidth_out_burst_bytes);
  if (given(limits.new_connections_per_sec)) {
    const burst = limits.new_connections_burst;
    lines.push(`${plural(limits.new_connections_per_sec, 'new connection', 'new connections')} a second${given(burst) ? ` (burst ${burst})` : ''}`);
  }
  if (given(limits.concurrent_connections)) {
    lines.push(`${plural(limits.concurrent_connections, 'open connection', 'open connections')} at most`);
  }
  return lines;
}

/** The caps as a list, or `none` in the muted colour. */
export function CapsList({ limits, testId }) {
  const lines = describeCaps(limits);
  if (lines.length === 0) return <span class="muted" data-testid={testId}>none</span>;
  return (
    <ul class="caps-list" data-testid={testId}>
      {lines.map((line) => <li key={line}>{line}</li>)}
    </ul>
  );
}

/** What the caps did to a rule's traffic: the three `rate_limit_*` counters of its totals. */
export function RateLimitCard({ totals }) {
  const rejected = totals.rate_limit_rejected ?? 0;
  const throttled = totals.rate_limit_throttled ?? 0;
  const dropped = totals.rate_limit_dropped ?? 0;
  return (
    <div class="card" data-testid="rate-limit-card">
      <span class="card-title">Refused by a connection cap</span>
      <span class="card-value" data-testid="rate-limit-rejected">{rejected}</span>
      <span class="card-detail">
        <span data-testid="rate-limit-throttled">{plural(throttled, 'wait', 'waits')}</span> for bandwidth,{' '}
        <span data-testid="rate-limit-dropped">{plural(dropped, 'datagram', 'datagrams')}</span> dropped
      </span>
    </div>
  );
}

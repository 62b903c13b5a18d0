// Rate limits as the forms edit them: the seven optional caps of the API's `rate_limit`
// object (a rule's own caps, or an owner envelope), the unit picker of the byte fields and
// the body sent (only the fields filled in).
//
// Bandwidth is in BYTES per second, never bits: `bandwidth_in_bps` is bytes per second.

/** The units of the byte fields, smallest first (binary, like `formatBytes`). */
export const BYTE_UNITS = [
  { unit: 'B', bytes: 1 },
  { unit: 'KiB', bytes: 1024 },
  { unit: 'MiB', bytes: 1024 ** 2 },
  { unit: 'GiB', bytes: 1024 ** 3 },
];

/** A bandwidth burst is never below this many bytes (the server's floor and default). */
export const MIN_BANDWIDTH_BURST = 65536;

/**
 * The caps, in the API's field order. `bytes` fields take an amount and a unit; `rate` names
 * the rate a burst belongs to.
 */
export const CAP_FIELDS = [
  { key: 'bandwidth_in_bps', label: 'Inbound bandwidth (bytes/s)', bytes: true, perSec: true },
  { key: 'bandwidth_in_burst_bytes', label: 'Inbound burst (bytes)', bytes: true, rate: 'bandwidth_in_bps' },
  { key: 'bandwidth_out_bps', label: 'Outbound bandwidth (bytes/s)', bytes: true, perSec: true },
  { key: 'bandwidth_out_burst_bytes', label: 'Outbound burst (bytes)', bytes: true, rate: 'bandwidth_out_bps' },
  { key: 'new_connections_per_sec', label: 'New connections per second' },
  { key: 'new_connections_burst', label: 'New connections burst', rate: 'new_connections_per_sec' },
  { key: 'concurrent_connections', label: 'Open connections at once' },
];

/** The API's field names of the caps. */
export const CAP_KEYS = CAP_FIELDS.map((f) => f.key);

/** The name errors about the caps as a whole (an empty envelope, an old client) are shown under. */
export const CAPS_FIELD = 'rate_limit';

/** Every field name a caps form shows, for `fieldForError`. */
export const CAPS_FORM_FIELDS = [...CAP_KEYS, CAPS_FIELD];

const fieldOf = (key) => CAP_FIELDS.find((f) => f.key === key);

/** A form with no cap filled in. */
export function emptyCapsForm() {
  return Object.fromEntries(CAP_FIELDS.map((f) => [f.key, { amount: '', unit: f.bytes ? 'MiB' : '' }]));
}

/** The burst the server fills in when a rate's burst is left out. */
export function defaultBurst(burstKey, rate) {
  const field = fieldOf(burstKey);
  return field && field.bytes ? Math.max(Number(rate), MIN_BANDWIDTH_BURST) : Number(rate);
}

/** `bytes` in the largest unit that holds it exactly (so editing never changes a value). */
export function exactAmount(bytes) {
  const n = Number(bytes);
  const unit = [...BYTE_UNITS].reverse().find((u) => n >= u.bytes && n % u.bytes === 0) ?? BYTE_UNITS[0];
  return { amount: String(n / unit.bytes), unit: unit.unit };
}

/**
 * The form for `limits` (the API's object, every burst written out). A burst equal to its
 * rate's default is left empty, so changing the rate alone keeps the default burst with it.
 */
export function capsFormFrom(limits) {
  const form = emptyCapsForm();
  if (!limits) return form;
  for (const field of CAP_FIELDS) {
    const value = limits[field.key];
    if (value === undefined || value === null) continue;
    const rate = field.rate ? limits[field.rate] : undefined;
    if (field.rate && rate !== undefined && rate !== null && Number(value) === defaultBurst(field.key, rate)) continue;
    form[field.key] = field.bytes ? exactAmount(value) : { amount: String(value), unit: '' };
  }
  return form;
}

/**
 * The API's `rate_limit` object of a form: only the fields filled in, byte amounts scaled by
 * their unit and rounded to a whole byte. Text that is not a number is sent as it is, so the
 * API refuses it with its own code and message like every other error. `{}` when nothing is
 * filled in (which lifts a rule's caps, and which the push dialog leaves out).
 */
export function rateLimitFromForm(form) {
  const body = {};
  for (const field of CAP_FIELDS) {
    const entry = form && form[field.key];
    const text = String((entry && entry.amount) ?? '').trim();
    if (text === '') continue;
    if (!/^-?\d+(\.\d+)?$/.test(text)) {
      body[field.key] = text;
      continue;
    }
    const scale = field.bytes ? (BYTE_UNITS.find((u) => u.unit === entry.unit)?.bytes ?? 1) : 1;
    body[field.key] = field.bytes ? Math.round(Number(text) * scale) : Number(text);
  }
  return body;
}

/** True when `limits` sets any cap. */
export const hasCaps = (limits) => !!limits && CAP_KEYS.some((k) => limits[k] !== undefined && limits[k] !== null);

// Which form field an API error belongs to. The API answers with a stable code and a message,
// never a field name, so this table is the one place that ties codes to the fields of the
// UI's forms; a code no field of the form claims is shown above the form instead.

const FIELDS_BY_CODE = {
  invalid_target: ['targets'],
  range_mismatch: ['targets', 'listen_port'],
  'validation.duplicate_target': ['targets'],
  'validation.target_count': ['targets'],
  multi_target_unsupported_by_client: ['targets'],
  dns_target_unsupported_by_client: ['targets'],
  proxy_protocol_unsupported_by_client: ['targets'],
  'validation.invalid_port': ['listen_port', 'ports'],
  'validation.inverted_range': ['listen_port', 'ports'],
  port_in_use: ['listen_port'],
  port_outside_grant: ['listen_port'],
  port_range_unsupported_by_client: ['listen_port'],
  exceeds_cap: ['listen_port', 'ports'],
  client_not_found: ['client'],
  client_not_connected: ['client'],
  client_not_granted: ['client'],
  'conflict.client_revoked': ['client'],
  'conflict.client_name_taken': ['name'],
  protocol_not_granted: ['protocol', 'protocols'],
  unsupported_protocol: ['protocol', 'protocols'],
  'validation.protocol_mismatch': ['protocol', 'targets'],
  'validation.invalid_name': ['name', 'id', 'user_id'],
  'validation.invalid_sni_pattern': ['sni_pattern'],
  'conflict.user_exists': ['id', 'user_id'],
  user_not_found: ['user'],
  'validation.weak_password': ['new_password', 'password'],
  endpoint_invalid: ['endpoint'],
  endpoint_not_in_cert_san: ['endpoint'],
  'validation.invalid_time_range': ['to', 'from'],
  'validation.quota_bytes_invalid': ['monthly_bytes'],
  'validation.empty_quota_patch': ['monthly_bytes'],
  'validation.quota_anchor_invalid': ['billing_anchor'],
  'validation.invalid_cursor': [],
  // Rate limits: a cap's own problems (zero, out of range, a burst without its rate or out of
  // its range) name the field in their message; these two concern the caps as a whole.
  'validation.empty_envelope': ['rate_limit'],
  rate_limit_unsupported_by_client: ['rate_limit'],
};

/**
 * Codes whose message names the field (a range check, a request serde refused, a rate-limit
 * cap: `new_connections_burst must be 1-600 for new_connections_per_sec = 10, got 0`).
 */
const NAMED_IN_MESSAGE = new Set([
  'invalid_request',
  'validation.out_of_range',
  'validation.zero_cap',
  'validation.burst_without_rate',
  'validation.burst_out_of_range',
]);

/**
 * The field of `fields` (the names a form shows) that the error `{code, message}` is about,
 * or null when it belongs to the form as a whole. Range errors and malformed requests name
 * the field in their message (`health_check_interval_secs must be …`, "unknown field `x`",
 * `rule.rate_limit.bandwidth_in_bps: invalid type …`), so those are matched by name: whole
 * words only, a name followed by `.` is a parent in a path (not the field), and the name
 * that comes first wins (`new_connections_burst is set but new_connections_per_sec is
 * not`). Other messages may mention a field without being about it ("wrong user id or
 * password").
 */
export function fieldForError(error, fields) {
  if (!error || !fields || fields.length === 0) return null;
  const candidates = FIELDS_BY_CODE[error.code];
  if (candidates) {
    const hit = candidates.find((f) => fields.includes(f));
    if (hit) return hit;
  }
  if (!NAMED_IN_MESSAGE.has(error.code)) return null;
  const message = String(error.message || '');
  let best = null;
  for (const field of fields) {
    const found = new RegExp(`(^|[^a-z_])${field}(?![a-z_]|\\.[a-z_])`).exec(message);
    if (!found) continue;
    const at = found.index + found[1].length;
    if (!best || at < best.at || (at === best.at && field.length > best.field.length)) best = { field, at };
  }
  return best ? best.field : null;
}

// Rules: the list with state, owner, client and protocol filters; the push dialog (with
// optional rate limits), whose API errors land on the field they are about; and a rule's
// detail with its caps (edited in place), live stats and per-target health, pushed by
// server-sent events (polled when the stream is not available).
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../session.js';
import { ApiError, seg, withQuery } from '../lib/api.js';
import { Badge, Dialog, ErrorBanner, Field, FormError, Loading, Notice, PageHead, Table, stateKind, useLoad, useSubmit } from '../components.jsx';
import { Link, navigate } from '../lib/router.jsx';
import { openStatsStream } from '../lib/live.js';
import { fieldForError } from '../lib/fields.js';
import { formatBytes, formatRate, formatTime, rateBetween, ruleSpecFromForm } from '../lib/format.js';
import { CAPS_FORM_FIELDS, capsFormFrom, emptyCapsForm, hasCaps, rateLimitFromForm } from '../lib/ratelimit.js';
import { CapsList, RateLimitCard, RateLimitFields } from '../caps.jsx';

const PUSH_FIELDS = ['client', 'listen_port', 'protocol', 'targets', 'name', 'health_check_interval_secs', 'sni_pattern', ...CAPS_FORM_FIELDS];

const emptyRow = () => ({ address: '', priority: '', proxy: '' });

function targetsOf(spec) {
  if (spec.targets && spec.targets.length) return spec.targets;
  return spec.target ? [spec.target] : [];
}

export function PushDialog({ open, clients, onClose, onPushed }) {
  const first = clients && clients.find((c) => c.status !== 'revoked');
  const blank = () => ({ client: first ? first.name : '', listen_port: '', protocol: 'tcp', targets: [emptyRow()], name: '', health_check_interval_secs: '', sni_pattern: '', sni_fallback: false, caps: emptyCapsForm() });
  const [capsOpen, setCapsOpen] = useState(false);
  const [form, setForm] = useState(blank);
  const { error, busy, run } = useSubmit();
  useEffect(() => {
    if (open) {
      setForm(blank());
      setCapsOpen(false);
    }
  }, [open]);
  const capsSet = Object.keys(rateLimitFromForm(form.caps)).length;
  // An error about a cap opens the section, so it is never hidden.
  const showCaps = capsOpen || (error && CAPS_FORM_FIELDS.includes(fieldForError(error, PUSH_FIELDS)));
  const set = (key) => (e) => setForm({ ...form, [key]: e.currentTarget.value });
  const setRow = (idx, key) => (e) => {
    const targets = form.targets.map((row, i) => (i === idx ? { ...row, [key]: e.currentTarget.value } : row));
    setForm({ ...form, targets });
  };
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const rule = await api.post('/v1/rules', { client: form.client, rule: ruleSpecFromForm(form) });
      onPushed(rule);
    });
  };
  return (
    <Dialog open={open} title="Push a rule" onClose={onClose}>
      <form onSubmit={submit} class="push-form">
        <FormError error={error} fields={PUSH_FIELDS} />
        {error && error.ruleId && (
          <p>The rule was stored as <Link href={`/rules/${error.ruleId}`}>#{error.ruleId}</Link> before it failed.</p>
        )}
        <Field label="Client" name="client" formError={error} fields={PUSH_FIELDS}>
          {(attrs) => (
            <select {...attrs} name="client" value={form.client} onChange={set('client')} required>
              {(clients || []).filter((c) => c.status !== 'revoked').map((c) => (
                <option key={c.id} value={c.name}>{c.name}{c.connected ? '' : ' (offline)'}</option>
              ))}
            </select>
          )}
        </Field>
        <div class="row">
          <Field label="Listen port or range" name="listen_port" formError={error} fields={PUSH_FIELDS} value={form.listen_port} onInput={set('listen_port')} placeholder="8080 or 20000-20099" required inputMode="numeric" />
          <Field label="Protocol" name="protocol" formError={error} fields={PUSH_FIELDS}>
            {(attrs) => (
              <select {...attrs} name="protocol" value={form.protocol} onChange={set('protocol')}>
                <option value="tcp">TCP</option>
                <option value="udp">UDP</option>
              </select>
            )}
          </Field>
        </div>
        <fieldset class={`targets${error && fieldForTargets(error) ? ' field-invalid' : ''}`} aria-describedby={error && fieldForTargets(error) ? 'f-targets-error' : undefined}>
          <legend>Targets (lower priority is preferred)</legend>
          {form.targets.map((row, idx) => (
            <div class="target-row" key={idx}>
              <label>
                <span class="visually-hidden">Target {idx + 1} address</span>
                <input name={`target-${idx}`} value={row.address} onInput={setRow(idx, 'address')} placeholder="host:port" aria-label={`Target ${idx + 1} host:port`} required={idx === 0} />
              </label>
              <label>
                <span class="visually-hidden">Target {idx + 1} priority</span>
                <input name={`priority-${idx}`} value={row.priority} onInput={setRow(idx, 'priority')} placeholder="priority" inputMode="numeric" aria-label={`Target ${idx + 1} priority`} class="narrow" />
              </label>
              <label>
                <span class="visually-hidden">Target {idx + 1} PROXY protocol</span>
                <select name={`proxy-${idx}`} value={row.proxy} onChange={setRow(idx, 'proxy')} aria-label={`Target ${idx + 1} PROXY protocol`}>
                  <option value="">no PROXY</option>
                  <option value="v1">PROXY v1</option>
                  <option value="v2">PROXY v2</option>
                </select>
              </label>
              {form.targets.length > 1 && (
                <button type="button" class="ghost" aria-label={`Remove target ${idx + 1}`} onClick={() => setForm({ ...form, targets: form.targets.filter((_, i) => i !== idx) })}>✕</button>
              )}
            </div>
          ))}
          {form.targets.length < 8 && (
            <button type="button" onClick={() => setForm({ ...form, targets: [...form.targets, emptyRow()] })}>Add target</button>
          )}
          {error && fieldForTargets(error) && (
            <small class="field-error" id="f-targets-error"><code>{error.code}</code> {error.message}</small>
          )}
        </fieldset>
        <div class="row">
          <Field label="Name (optional)" name="name" formError={error} fields={PUSH_FIELDS} value={form.name} onInput={set('name')} />
          <Field label="Health check every (s, optional)" name="health_check_interval_secs" type="number" min="1" max="3600" formError={error} fields={PUSH_FIELDS} value={form.health_check_interval_secs} onInput={set('health_check_interval_secs')} />
        </div>
        {form.protocol === 'tcp' && (
          <div class="row">
            <Field label="TLS server name (SNI, optional)" name="sni_pattern" formError={error} fields={PUSH_FIELDS} value={form.sni_pattern} onInput={set('sni_pattern')} placeholder="api.example.com or *.example.com" disabled={form.sni_fallback} />
            <label class="checks">
              <input type="checkbox" name="sni_fallback" checked={form.sni_fallback} onChange={(e) => setForm({ ...form, sni_fallback: e.currentTarget.checked, sni_pattern: '' })} />
              {' '}Fallback for TLS names no other rule on the port takes
            </label>
          </div>
        )}
        <button type="button" class="disclosure" aria-expanded={showCaps ? 'true' : 'false'} aria-controls={showCaps ? 'f-rate_limit' : undefined} onClick={() => setCapsOpen(!showCaps)}>
          <span aria-hidden="true">{showCaps ? '▾' : '▸'}</span> Rate limits (optional){capsSet > 0 ? `: ${capsSet} set` : ''}
        </button>
        {showCaps && <RateLimitFields value={form.caps} onChange={(caps) => setForm({ ...form, caps })} formError={error} fields={PUSH_FIELDS} />}
        <button type="submit" class="primary" disabled={busy}>{busy ? 'Pushing…' : 'Push rule'}</button>
      </form>
    </Dialog>
  );
}

const fieldForTargets = (error) => fieldForError(error, PUSH_FIELDS) === 'targets';

function filtersFrom(path) {
  const query = new URLSearchParams(path.split('?')[1] || '');
  return { state: query.get('state') || '', client: query.get('client') || '', owner: query.get('owner') || '', protocol: query.get('protocol') || '' };
}

/** The rules page. */
export function Rules({ path }) {
  const filters = filtersFrom(path);
  const key = JSON.stringify(filters);
  const rules = useLoad(() => api.get(withQuery('/v1/rules', filters)), [key], 5000);
  const clients = useLoad(() => api.get('/v1/clients'), []);
  const [pushing, setPushing] = useState(false);
  const action = useSubmit();
  const setFilter = (name) => (e) => navigate(withQuery('/rules', { ...filters, [name]: e.currentTarget.value }), { replace: true });
  return (
    <>
      <PageHead title="Rules">
        <button class="primary" onClick={() => setPushing(true)} disabled={!clients.data}>Push a rule</button>
      </PageHead>
      <form class="filters" aria-label="Filter rules" onSubmit={(e) => e.preventDefault()}>
        <label>State
          <select value={filters.state} onChange={setFilter('state')}>
            <option value="">any</option>
            {['pending', 'active', 'failed', 'suspended', 'removed'].map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        <label>Protocol
          <select value={filters.protocol} onChange={setFilter('protocol')}>
            <option value="">any</option><option>tcp</option><option>udp</option>
          </select>
        </label>
        <label>Client
          <select value={filters.client} onChange={setFilter('client')}>
            <option value="">any</option>
            {(clients.data || []).map((c) => <option key={c.id} value={c.name}>{c.name}</option>)}
          </select>
        </label>
        <label>Owner
          <input value={filters.owner} onChange={setFilter('owner')} placeholder="user id" />
        </label>
      </form>
      <ErrorBanner error={action.error} />
      <Loading loading={rules.loading && !rules.data} error={rules.error} />
      {rules.data && rules.data.length === 0 && <p class="muted">No rules match.</p>}
      {rules.data && rules.data.length > 0 && (
        <Table caption="Rules">
          <thead>
            <tr><th scope="col">Rule</th><th scope="col">Client</th><th scope="col">Listen</th><th scope="col">Targets</th><th scope="col">State</th><th scope="col">Owner</th><th scope="col">Actions</th></tr>
          </thead>
          <tbody>
            {rules.data.map((r) => (
              <tr key={r.id} data-rule={r.id}>
                <td><Link href={`/rules/${r.id}`}>{r.spec.name || `#${r.id}`}</Link></td>
                <td>{r.client_name}</td>
                <td>{r.spec.listen_port}/{r.spec.protocol || 'tcp'}</td>
                <td>{targetsOf(r.spec).join(', ')}</td>
                <td>
                  <Badge kind={stateKind(r.state)}>{r.state}</Badge>
                  {r.failure && <small class="failure"><code>{r.failure.code}</code> {r.failure.message}</small>}
                </td>
                <td>{r.owner}</td>
                <td class="actions">
                  {r.state !== 'removed' && (
                    <button type="button" class="danger" onClick={() => window.confirm(`Remove rule #${r.id}?`) && action.run(async () => { await api.del(`/v1/rules/${r.id}`); await rules.reload(); })}>Remove</button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <PushDialog open={pushing} clients={clients.data} onClose={() => setPushing(false)} onPushed={(rule) => { setPushing(false); navigate(`/rules/${rule.id}`); }} />
    </>
  );
}

/** How often the detail page polls the stats when it cannot stream them, in ms. */
const STATS_POLL_MS = 1000;

/**
 * A rule's stats, live: from the event stream while it works, else polled every second.
 * Returns `{data, error, mode}` with `mode` `stream` or `poll`; `onGone` runs once when the
 * stream says the rule is gone.
 */
function useLiveStats(id, onGone) {
  const query = 'per_target=true&per_port=true';
  const [mode, setMode] = useState('stream');
  const [live, setLive] = useState({ data: null, error: null });
  useEffect(() => {
    if (mode !== 'stream') return undefined;
    setLive({ data: null, error: null });
    return openStatsStream(`/v1/rules/${seg(id)}/stats/stream?${query}`, {
      onStats: (data) => setLive({ data, error: null }),
      onEnd: (last) => {
        if (last && last.error) setLive((s) => ({ ...s, error: new ApiError(404, last.error.code, last.error.message) }));
        else if (last) setLive({ data: last, error: null });
        onGone();
      },
      onFallback: () => setMode('poll'),
    });
  }, [id, mode]);
  const polled = useLoad(
    () => (mode === 'poll' ? api.get(`/v1/rules/${seg(id)}/stats?${query}`) : Promise.resolve(null)),
    [id, mode],
    mode === 'poll' ? STATS_POLL_MS : 0,
  );
  return mode === 'poll' ? { data: polled.data, error: polled.error, mode } : { ...live, mode };
}

/**
 * The rule's own caps, replaced as a whole by `PATCH /v1/rules/{id}`: the client applies them
 * in place (the listener and open connections stay). Every field empty lifts them.
 */
export function CapsDialog({ rule, open, onClose, onSaved }) {
  const [caps, setCaps] = useState(() => capsFormFrom(rule.spec.rate_limit));
  const submit = useSubmit();
  const send = (e) => {
    e.preventDefault();
    submit.run(async () => {
      const updated = await api.patch(`/v1/rules/${seg(rule.id)}`, { rate_limit: rateLimitFromForm(caps) });
      await onSaved(updated);
    });
  };
  return (
    <Dialog open={open} title="Edit caps" onClose={onClose}>
      <form onSubmit={send}>
        <p>
          The caps of rule {rule.spec.name || `#${rule.id}`} change in place on {rule.client_name}: the listener and open
          connections stay. Leave every field empty to lift them. An owner envelope on the client, if any, still applies.
        </p>
        <FormError error={submit.error} fields={CAPS_FORM_FIELDS} />
        <RateLimitFields idPrefix="caps" value={caps} onChange={setCaps} formError={submit.error} fields={CAPS_FORM_FIELDS} legend="Caps of this rule" />
        <button type="submit" class="primary" disabled={submit.busy}>{submit.busy ? 'Saving…' : 'Save caps'}</button>
      </form>
    </Dialog>
  );
}

/** A rule's detail with its live counters. */
export function RuleDetail({ id }) {
  const rule = useLoad(() => api.get(`/v1/rules/${seg(id)}`), [id], 5000);
  const stats = useLiveStats(id, () => rule.reload());
  const previous = useRef(null);
  const [rate, setRate] = useState({ in: 0, out: 0 });
  const [editingCaps, setEditingCaps] = useState(false);
  const [capsNotice, setCapsNotice] = useState(null);
  const action = useSubmit();
  useEffect(() => {
    if (!stats.data) return;
    const now = { at: Date.now(), in: stats.data.totals.bytes_in, out: stats.data.totals.bytes_out };
    if (previous.current) {
      setRate({
        in: rateBetween({ at: previous.current.at, bytes: previous.current.in }, { at: now.at, bytes: now.in }),
        out: rateBetween({ at: previous.current.at, bytes: previous.current.out }, { at: now.at, bytes: now.out }),
      });
    }
    previous.current = now;
  }, [stats.data]);
  const r = rule.data;
  const t = stats.data && stats.data.totals;
  return (
    <>
      <PageHead title={r ? `Rule ${r.spec.name || `#${r.id}`}` : `Rule #${id}`}>
        {r && r.state !== 'removed' && (
          <button type="button" onClick={() => setEditingCaps(true)}>Edit caps</button>
        )}
        {r && r.state !== 'removed' && (
          <button type="button" class="danger" onClick={() => window.confirm(`Remove rule #${r.id}?`) && action.run(async () => { await api.del(`/v1/rules/${r.id}`); navigate('/rules'); })}>Remove</button>
        )}
      </PageHead>
      <ErrorBanner error={action.error} />
      <Notice kind="good">{capsNotice}</Notice>
      <Loading loading={rule.loading && !r} error={rule.error} />
      {r && (
        <dl class="facts">
          <dt>State</dt><dd><Badge kind={stateKind(r.state)}>{r.state}</Badge>{r.failure && <> <code>{r.failure.code}</code> {r.failure.message}</>}</dd>
          <dt>Client</dt><dd>{r.client_name}</dd>
          <dt>Listen</dt><dd>{r.spec.listen_port}/{r.spec.protocol || 'tcp'}{r.spec.listen_addr ? ` on ${r.spec.listen_addr}` : ''}</dd>
          <dt>Targets</dt><dd>{targetsOf(r.spec).join(', ')}</dd>
          {(r.spec.sni_pattern || r.spec.sni_fallback) && (
            <><dt>TLS name</dt><dd>{r.spec.sni_fallback ? 'fallback (any other name)' : <code>{r.spec.sni_pattern}</code>}</dd></>
          )}
          <dt>Rate limits</dt><dd><CapsList limits={r.spec.rate_limit} testId="rule-caps" /></dd>
          <dt>Owner</dt><dd>{r.owner}</dd>
          <dt>Updated</dt><dd>{formatTime(r.updated_at)}</dd>
        </dl>
      )}
      <div class="section-head">
        <h2>Live traffic</h2>
        <span class="muted" data-testid="live-mode" data-mode={stats.mode}>
          {stats.mode === 'stream' ? 'live, pushed by the server' : 'polled every second'}
        </span>
      </div>
      {stats.error && <ErrorBanner error={stats.error} />}
      {t && (
        <section class="cards" aria-label="Counters" aria-live="polite">
          <div class="card"><span class="card-title">Bytes in</span><span class="card-value" data-testid="bytes-in">{formatBytes(t.bytes_in)}</span><span class="card-detail">{formatRate(rate.in)}</span></div>
          <div class="card"><span class="card-title">Bytes out</span><span class="card-value" data-testid="bytes-out">{formatBytes(t.bytes_out)}</span><span class="card-detail">{formatRate(rate.out)}</span></div>
          <div class="card"><span class="card-title">Connections</span><span class="card-value">{t.connections_active}</span><span class="card-detail">{t.connections_total} total</span></div>
          <div class="card"><span class="card-title">Failures</span><span class="card-value">{t.connect_failures + t.dns_failures}</span><span class="card-detail">{t.target_failovers} failovers</span></div>
          <RateLimitCard totals={t} />
        </section>
      )}
      {stats.data && stats.data.per_target && stats.data.per_target.length > 0 && (
        <>
          <h2>Targets</h2>
          <Table caption="Per-target health">
            <thead><tr><th scope="col">Target</th><th scope="col">Health</th><th scope="col">Bytes in</th><th scope="col">Bytes out</th><th scope="col">Connections</th></tr></thead>
            <tbody>
              {stats.data.per_target.map((pt) => (
                <tr key={pt.target}>
                  <td>{pt.target}</td>
                  <td><Badge kind={stateKind(pt.health)}>{pt.health}</Badge></td>
                  <td>{formatBytes(pt.counters.bytes_in)}</td>
                  <td>{formatBytes(pt.counters.bytes_out)}</td>
                  <td>{pt.counters.connections_total}</td>
                </tr>
              ))}
            </tbody>
          </Table>
        </>
      )}
      {stats.data && stats.data.per_port && stats.data.per_port.length > 1 && (
        <>
          <h2>Ports</h2>
          <Table caption="Per-port counters">
            <thead><tr><th scope="col">Port</th><th scope="col">Bytes in</th><th scope="col">Bytes out</th><th scope="col">Connections</th></tr></thead>
            <tbody>
              {stats.data.per_port.map((pp) => (
                <tr key={pp.port}><td>{pp.port}</td><td>{formatBytes(pp.counters.bytes_in)}</td><td>{formatBytes(pp.counters.bytes_out)}</td><td>{pp.counters.connections_total}</td></tr>
              ))}
            </tbody>
          </Table>
        </>
      )}
      {r && (
        <CapsDialog
          key={editingCaps ? 'editing' : 'closed'}
          rule={r}
          open={editingCaps}
          onClose={() => setEditingCaps(false)}
          onSaved={async (updated) => {
            setEditingCaps(false);
            setCapsNotice(hasCaps(updated.spec.rate_limit) ? 'Caps saved; the client applies them in place.' : 'Caps lifted.');
            await rule.reload();
          }}
        />
      )}
    </>
  );
}

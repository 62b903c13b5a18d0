// Quotas: monthly traffic caps per (user, client) pair with how much of the current period
// is used. A superadmin sets or replaces one (a grant for the pair must exist), changes its
// cap, credits the period (clears its usage) and removes it; a user reads their own.
import { useState } from 'preact/hooks';
import { api } from '../session.js';
import { seg } from '../lib/api.js';
import { Badge, Dialog, ErrorBanner, Field, FormError, Loading, Notice, PageHead, Table, useLoad, useSubmit } from '../components.jsx';
import { formatBytes, formatTime, relativeTime } from '../lib/format.js';
import { QUOTA_UNITS, amountFromBytes, bytesFromAmount, percentText, quotaLevel, usedRatio } from '../lib/quota.js';

const SET_FIELDS = ['user', 'client', 'monthly_bytes'];
const CAP_FIELDS = ['monthly_bytes'];

/** How often the page reloads usage (clients report every few seconds), in ms. */
const POLL_MS = 5000;

/** A quota's usage as a bar with its numbers, readable without the colours. */
export function QuotaBar({ quota, clientName }) {
  const level = quotaLevel(quota);
  const used = formatBytes(quota.current_period_bytes_used);
  const cap = formatBytes(quota.monthly_bytes);
  const text = `${used} of ${cap} (${percentText(quota)})`;
  return (
    <div class="quota-usage">
      <div
        class={`meter meter-${level}`}
        role="meter"
        aria-label={`Usage of ${quota.user} on ${clientName}`}
        aria-valuemin="0"
        aria-valuemax="100"
        aria-valuenow={Math.floor(usedRatio(quota) * 100)}
        aria-valuetext={text}
      >
        <div class="meter-fill" style={{ width: `${(usedRatio(quota) * 100).toFixed(1)}%` }} />
      </div>
      <span class="quota-numbers" data-testid="quota-used">{text}</span>
    </div>
  );
}

/** The badge of a quota's level. */
export function QuotaBadge({ quota }) {
  const level = quotaLevel(quota);
  if (level === 'exhausted') return <Badge kind="bad">exhausted</Badge>;
  if (level === 'warn') return <Badge kind="warn">over 80 %</Badge>;
  return <Badge kind="good">ok</Badge>;
}

/** The amount and unit inputs of a cap, as one field named `monthly_bytes`. */
function CapField({ label, value, onChange, formError, fields, idPrefix }) {
  return (
    <Field label={label} name="monthly_bytes" idPrefix={idPrefix} formError={formError} fields={fields}>
      {(attrs) => (
        <div class="amount">
          <input {...attrs} name="monthly_bytes" type="number" min="0" step="any" value={value.amount} onInput={(e) => onChange({ ...value, amount: e.currentTarget.value })} required />
          <select aria-label={`${label}: unit`} value={value.unit} onChange={(e) => onChange({ ...value, unit: e.currentTarget.value })}>
            {QUOTA_UNITS.map((u) => <option key={u.unit} value={u.unit}>{u.unit}</option>)}
          </select>
        </div>
      )}
    </Field>
  );
}

/**
 * The cap of the body in bytes. Text that is not a number goes to the API as it is, so the
 * refusal shows the API's own code and message like every other error.
 */
function capBytes(value) {
  const bytes = bytesFromAmount(value.amount, value.unit);
  return bytes === null ? String(value.amount) : bytes;
}

function SetQuota({ users, clients, onDone }) {
  const firstUser = (users || []).find((u) => u.role !== 'superadmin');
  const firstClient = (clients || []).find((c) => c.status !== 'revoked');
  const [form, setForm] = useState({ user: '', client: '', cap: { amount: '', unit: 'GiB' } });
  const submit = useSubmit();
  const user = form.user || (firstUser ? firstUser.id : '');
  const client = form.client || (firstClient ? firstClient.name : '');
  const send = (e) => {
    e.preventDefault();
    submit.run(async () => {
      const monthly_bytes = capBytes(form.cap);
      const quota = await api.put(`/v1/users/${seg(user)}/quotas/${seg(client)}`, { monthly_bytes });
      await onDone(`Quota of ${quota.user} on ${client} set to ${formatBytes(quota.monthly_bytes)} a month.`);
    });
  };
  return (
    <section class="panel">
      <h2>Set a quota</h2>
      <p class="muted">A cap on the bytes (in and out together) one user's rules may forward through one client per monthly period. The user needs a grant on the client; setting it again replaces the cap and keeps the period's usage.</p>
      <form onSubmit={send} class="inline-form">
        <FormError error={submit.error} fields={SET_FIELDS} />
        <Field label="User" name="user" formError={submit.error} fields={SET_FIELDS}>
          {(attrs) => (
            <select {...attrs} name="user" value={user} onChange={(e) => setForm({ ...form, user: e.currentTarget.value })} required>
              {(users || []).map((u) => <option key={u.id} value={u.id}>{u.id}{u.role === 'superadmin' ? ' (superadmin)' : ''}</option>)}
            </select>
          )}
        </Field>
        <Field label="Client" name="client" formError={submit.error} fields={SET_FIELDS}>
          {(attrs) => (
            <select {...attrs} name="client" value={client} onChange={(e) => setForm({ ...form, client: e.currentTarget.value })} required>
              {(clients || []).filter((c) => c.status !== 'revoked').map((c) => <option key={c.id} value={c.name}>{c.name}</option>)}
            </select>
          )}
        </Field>
        <CapField label="Monthly cap" value={form.cap} onChange={(cap) => setForm({ ...form, cap })} formError={submit.error} fields={SET_FIELDS} />
        <button type="submit" class="primary" disabled={submit.busy || !user || !client}>Set quota</button>
      </form>
    </section>
  );
}

function CapDialog({ quota, clientName, onClose, onDone }) {
  const [cap, setCap] = useState(() => (quota ? amountFromBytes(quota.monthly_bytes) : { amount: '', unit: 'GiB' }));
  const submit = useSubmit();
  const send = (e) => {
    e.preventDefault();
    submit.run(async () => {
      await api.patch(`/v1/users/${seg(quota.user)}/quotas/${seg(quota.client)}`, { monthly_bytes: capBytes(cap) });
      await onDone();
    });
  };
  return (
    <Dialog open={!!quota} title="Change the cap" onClose={onClose}>
      {quota && (
        <form onSubmit={send}>
          <p>{quota.user} on {clientName}: the period and its usage ({formatBytes(quota.current_period_bytes_used)}) stay.</p>
          <FormError error={submit.error} fields={CAP_FIELDS} />
          <CapField label="New monthly cap" idPrefix="cap" value={cap} onChange={setCap} formError={submit.error} fields={CAP_FIELDS} />
          <button type="submit" class="primary" disabled={submit.busy}>Change cap</button>
        </form>
      )}
    </Dialog>
  );
}

/** The quotas page. */
export function Quotas({ user }) {
  const admin = user.role === 'superadmin';
  const quotas = useLoad(() => api.get('/v1/quotas'), [], POLL_MS);
  const clients = useLoad(() => api.get('/v1/clients'), []);
  const users = useLoad(() => (admin ? api.get('/v1/users') : Promise.resolve([])), [admin]);
  const [changing, setChanging] = useState(null);
  const action = useSubmit();
  const [notice, setNotice] = useState(null);
  const names = new Map((clients.data || []).map((c) => [c.id, c.name]));
  const nameOf = (id) => names.get(id) || id;
  const path = (q) => `/v1/users/${seg(q.user)}/quotas/${seg(q.client)}`;
  const credit = (q) =>
    window.confirm(`Credit ${q.user} on ${nameOf(q.client)}? The period's usage (${formatBytes(q.current_period_bytes_used)}) is forgotten; the period stays.`) &&
    action.run(async () => {
      await api.patch(path(q), { clear_period_usage: true });
      setNotice(`Credited ${q.user} on ${nameOf(q.client)}.`);
      await quotas.reload();
    });
  const remove = (q) =>
    window.confirm(`Remove the quota of ${q.user} on ${nameOf(q.client)}? Their traffic there is no longer capped.`) &&
    action.run(async () => {
      await api.del(path(q));
      setNotice(`Removed the quota of ${q.user} on ${nameOf(q.client)}.`);
      await quotas.reload();
    });
  return (
    <>
      <PageHead title="Quotas" />
      {admin ? (
        <SetQuota
          users={users.data}
          clients={clients.data}
          onDone={async (message) => {
            setNotice(message);
            await quotas.reload();
          }}
        />
      ) : (
        <p class="muted">Your monthly traffic caps, per client. A superadmin sets them.</p>
      )}
      <ErrorBanner error={action.error} />
      <Notice kind="good">{notice}</Notice>
      <Loading loading={quotas.loading && !quotas.data} error={quotas.error} />
      {quotas.data && quotas.data.length === 0 && <p class="muted">No quotas.</p>}
      {quotas.data && quotas.data.length > 0 && (
        <Table caption="Quotas">
          <thead>
            <tr><th scope="col">User</th><th scope="col">Client</th><th scope="col">Used this period</th><th scope="col">Status</th><th scope="col">Period ends</th><th scope="col">Last report</th>{admin && <th scope="col">Actions</th>}</tr>
          </thead>
          <tbody>
            {quotas.data.map((q) => (
              <tr key={`${q.user}/${q.client}`} data-quota={`${q.user}/${nameOf(q.client)}`}>
                <td>{q.user}</td>
                <td>{nameOf(q.client)}</td>
                <td><QuotaBar quota={q} clientName={nameOf(q.client)} /></td>
                <td>
                  <QuotaBadge quota={q} />
                  {q.exhausted_at && <small class="failure">since {formatTime(q.exhausted_at)}</small>}
                </td>
                <td><span title={formatTime(q.period_end)}>{relativeTime(q.period_end)}</span></td>
                <td>{relativeTime(q.last_report_at)}</td>
                {admin && (
                  <td class="actions">
                    <button type="button" onClick={() => setChanging(q)}>Change cap</button>
                    <button type="button" onClick={() => credit(q)}>Credit</button>
                    <button type="button" class="danger" onClick={() => remove(q)}>Remove</button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <CapDialog
        key={changing ? `${changing.user}/${changing.client}` : 'none'}
        quota={changing}
        clientName={changing ? nameOf(changing.client) : ''}
        onClose={() => setChanging(null)}
        onDone={async () => {
          setNotice(`Changed the cap of ${changing.user} on ${nameOf(changing.client)}.`);
          setChanging(null);
          await quotas.reload();
        }}
      />
    </>
  );
}

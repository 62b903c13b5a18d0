// Clients: status and last seen, the one-line enroll command with a copy button, rename,
// revoke, re-enroll and delete (revoked clients only).
import { useState } from 'preact/hooks';
import { api } from '../session.js';
import { seg } from '../lib/api.js';
import { Badge, CopyButton, Dialog, ErrorBanner, Field, FormError, Loading, PageHead, Table, stateKind, useLoad, useSubmit } from '../components.jsx';
import { formatTime, relativeTime } from '../lib/format.js';

const ENROLL_FIELDS = ['name', 'expires_in_secs'];

function EnrollResult({ result }) {
  return (
    <div class="enroll-result">
      <p>
        Run this on the edge host before {formatTime(result.expires_at)}; it works once.
      </p>
      <pre class="command" id="enroll-command">{result.command}</pre>
      <CopyButton text={result.command} label="Copy command" />
    </div>
  );
}

function EnrollDialog({ open, onClose, onEnrolled }) {
  const [form, setForm] = useState({ name: '', expires_in_secs: '' });
  const [result, setResult] = useState(null);
  const { error, busy, run } = useSubmit();
  const close = () => {
    setResult(null);
    setForm({ name: '', expires_in_secs: '' });
    onClose();
  };
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const body = { name: form.name.trim() };
      if (String(form.expires_in_secs).trim()) body.expires_in_secs = Number(form.expires_in_secs);
      setResult(await api.post('/v1/clients', body));
      onEnrolled();
    });
  };
  return (
    <Dialog open={open} title="Connect a client" onClose={close}>
      {result ? (
        <EnrollResult result={result} />
      ) : (
        <form onSubmit={submit}>
          <FormError error={error} fields={ENROLL_FIELDS} />
          <Field label="Client name" name="name" formError={error} fields={ENROLL_FIELDS} value={form.name} onInput={(e) => setForm({ ...form, name: e.currentTarget.value })} required hint="Letters, digits, dot, dash, underscore." />
          <Field label="Enrollment valid for (seconds)" name="expires_in_secs" type="number" min="1" max="86400" formError={error} fields={ENROLL_FIELDS} value={form.expires_in_secs} onInput={(e) => setForm({ ...form, expires_in_secs: e.currentTarget.value })} placeholder="server default" />
          <button type="submit" class="primary" disabled={busy}>Create enroll command</button>
        </form>
      )}
    </Dialog>
  );
}

function RenameDialog({ client, onClose, onDone }) {
  const [name, setName] = useState(client ? client.name : '');
  const { error, busy, run } = useSubmit();
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      await api.patch(`/v1/clients/${seg(client.id)}`, { name: name.trim() });
      onDone();
    });
  };
  return (
    <Dialog open={!!client} title="Rename client" onClose={onClose}>
      <form onSubmit={submit}>
        <FormError error={error} fields={['name']} />
        <Field label="New name" name="name" formError={error} fields={['name']} value={name} onInput={(e) => setName(e.currentTarget.value)} required />
        <button type="submit" class="primary" disabled={busy}>Rename</button>
      </form>
    </Dialog>
  );
}

/** The clients page. */
export function Clients({ user }) {
  const { data, error, loading, reload } = useLoad(() => api.get('/v1/clients'), [], 5000);
  const [enrolling, setEnrolling] = useState(false);
  const [renaming, setRenaming] = useState(null);
  const [reenrolled, setReenrolled] = useState(null);
  const action = useSubmit();
  const admin = user.role === 'superadmin';
  const act = (fn, confirmText) => {
    if (confirmText && !window.confirm(confirmText)) return;
    action.run(async () => {
      await fn();
      await reload();
    });
  };
  return (
    <>
      <PageHead title="Clients">
        {admin && <button class="primary" onClick={() => setEnrolling(true)}>Connect a client</button>}
      </PageHead>
      <ErrorBanner error={action.error} />
      {reenrolled && (
        <div class="panel">
          <h2>Re-enroll {reenrolled.client.name}</h2>
          <EnrollResult result={reenrolled} />
          <button type="button" onClick={() => setReenrolled(null)}>Done</button>
        </div>
      )}
      <Loading loading={loading && !data} error={error} />
      {data && data.length === 0 && <p class="muted">No clients yet.</p>}
      {data && data.length > 0 && (
        <Table caption="Clients">
          <thead>
            <tr><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Link</th><th scope="col">Last seen</th><th scope="col">Version</th><th scope="col">Rules</th>{admin && <th scope="col">Actions</th>}</tr>
          </thead>
          <tbody>
            {data.map((c) => (
              <tr key={c.id} data-client={c.name}>
                <td><strong>{c.name}</strong><br /><small class="muted">{c.id}</small></td>
                <td><Badge kind={stateKind(c.status)}>{c.status}</Badge></td>
                <td><Badge kind={c.connected ? 'good' : 'muted'}>{c.connected ? 'online' : 'offline'}</Badge></td>
                <td title={formatTime(c.last_seen_at)}>{c.connected ? 'now' : relativeTime(c.last_seen_at)}</td>
                <td>{c.version || '—'}</td>
                <td>{c.n_rules}</td>
                {admin && (
                  <td class="actions">
                    <button type="button" onClick={() => setRenaming(c)}>Rename</button>
                    {c.status !== 'revoked' && <button type="button" onClick={() => action.run(async () => setReenrolled(await api.post(`/v1/clients/${seg(c.id)}/enrollment`, {})))}>Re-enroll</button>}
                    {c.status !== 'revoked' && <button type="button" class="danger" onClick={() => act(() => api.post(`/v1/clients/${seg(c.id)}/revoke`), `Revoke ${c.name}? Its rules stop and it can no longer connect.`)}>Revoke</button>}
                    {c.status === 'revoked' && <button type="button" class="danger" onClick={() => act(() => api.del(`/v1/clients/${seg(c.id)}`), `Delete ${c.name} for good?`)}>Delete</button>}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <EnrollDialog open={enrolling} onClose={() => setEnrolling(false)} onEnrolled={reload} />
      {renaming && <RenameDialog client={renaming} onClose={() => setRenaming(null)} onDone={() => { setRenaming(null); reload(); }} />}
    </>
  );
}

// Users, their API tokens, and grants: who may push what where. Creating users and grants is
// a superadmin's job; everyone manages their own tokens.
import { useState } from 'preact/hooks';
import { api } from '../session.js';
import { seg, withQuery } from '../lib/api.js';
import { Badge, CopyButton, ErrorBanner, Field, FormError, Loading, Notice, PageHead, Table, useLoad, useSubmit } from '../components.jsx';
import { Link } from '../lib/router.jsx';
import { formatTime } from '../lib/format.js';

const USER_FIELDS = ['id', 'role', 'password'];

/** The users page (superadmin). */
export function Users({ user }) {
  const users = useLoad(() => api.get('/v1/users'), []);
  const [form, setForm] = useState({ id: '', role: 'user', password: '' });
  const create = useSubmit();
  const action = useSubmit();
  const [created, setCreated] = useState(null);
  const submit = (e) => {
    e.preventDefault();
    create.run(async () => {
      const body = { id: form.id.trim(), role: form.role };
      if (form.password) body.password = form.password;
      const made = await api.post('/v1/users', body);
      setCreated(made.id);
      setForm({ id: '', role: 'user', password: '' });
      await users.reload();
    });
  };
  return (
    <>
      <PageHead title="Users" />
      <section class="panel">
        <h2>Add a user</h2>
        <form onSubmit={submit} class="inline-form">
          <FormError error={create.error} fields={USER_FIELDS} />
          <Notice kind="good">{created && `User ${created} created.`}</Notice>
          <Field label="User id" name="id" formError={create.error} fields={USER_FIELDS} value={form.id} onInput={(e) => setForm({ ...form, id: e.currentTarget.value })} required />
          <Field label="Role" name="role" formError={create.error} fields={USER_FIELDS}>
            {(attrs) => (
              <select {...attrs} value={form.role} onChange={(e) => setForm({ ...form, role: e.currentTarget.value })}>
                <option value="user">user</option>
                <option value="superadmin">superadmin</option>
              </select>
            )}
          </Field>
          <Field label="Password (optional)" hint="Without one the account uses API tokens only." name="password" type="password" autocomplete="new-password" formError={create.error} fields={USER_FIELDS} value={form.password} onInput={(e) => setForm({ ...form, password: e.currentTarget.value })} />
          <button type="submit" class="primary" disabled={create.busy}>Add user</button>
        </form>
      </section>
      <ErrorBanner error={action.error} />
      <Loading loading={users.loading && !users.data} error={users.error} />
      {users.data && (
        <Table caption="Users">
          <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">Password</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
          <tbody>
            {users.data.map((u) => (
              <tr key={u.id} data-user={u.id}>
                <td>{u.id}</td>
                <td><Badge kind={u.role === 'superadmin' ? 'warn' : 'muted'}>{u.role}</Badge></td>
                <td>{u.has_password ? (u.must_change_password ? 'temporary' : 'set') : 'none (tokens only)'}</td>
                <td>{formatTime(u.created_at)}</td>
                <td class="actions">
                  <Link href={`/users/${seg(u.id)}/tokens`}>Tokens</Link>
                  <Link href={withQuery('/grants', { user: u.id })}>Grants</Link>
                  {u.id !== user.id && (
                    <button type="button" class="danger" onClick={() => window.confirm(`Remove user ${u.id}? Rules no remaining grant covers are removed too.`) && action.run(async () => { await api.del(`/v1/users/${seg(u.id)}`); await users.reload(); })}>Remove</button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </>
  );
}

/** API tokens of `owner` (the signed-in user's own when it is them). */
export function Tokens({ owner }) {
  const tokens = useLoad(() => api.get(`/v1/users/${seg(owner)}/tokens`), [owner]);
  const [name, setName] = useState('');
  const [minted, setMinted] = useState(null);
  const mint = useSubmit();
  const action = useSubmit();
  const submit = (e) => {
    e.preventDefault();
    mint.run(async () => {
      setMinted(await api.post(`/v1/users/${seg(owner)}/tokens`, name.trim() ? { name: name.trim() } : {}));
      setName('');
      await tokens.reload();
    });
  };
  return (
    <>
      <PageHead title={`API tokens of ${owner}`} />
      <section class="panel">
        <h2>Mint a token</h2>
        <form onSubmit={submit} class="inline-form">
          <FormError error={mint.error} fields={['name']} />
          <Field label="Label (optional)" name="name" formError={mint.error} fields={['name']} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          <button type="submit" class="primary" disabled={mint.busy}>Mint token</button>
        </form>
        {minted && (
          <div class="enroll-result">
            <p>Copy the token now: it is shown this once and never again.</p>
            <pre class="command">{minted.token}</pre>
            <CopyButton text={minted.token} label="Copy token" />
            <button type="button" onClick={() => setMinted(null)}>Done</button>
          </div>
        )}
      </section>
      <ErrorBanner error={action.error} />
      <Loading loading={tokens.loading && !tokens.data} error={tokens.error} />
      {tokens.data && tokens.data.length === 0 && <p class="muted">No API tokens.</p>}
      {tokens.data && tokens.data.length > 0 && (
        <Table caption="API tokens">
          <thead><tr><th scope="col">Token id</th><th scope="col">Label</th><th scope="col">Minted</th><th scope="col">Actions</th></tr></thead>
          <tbody>
            {tokens.data.map((t) => (
              <tr key={t.id}>
                <td><code>{t.id}</code></td>
                <td>{t.name || '—'}</td>
                <td>{formatTime(t.created_at)}</td>
                <td class="actions">
                  <button type="button" class="danger" onClick={() => window.confirm(`Revoke token ${t.id}?`) && action.run(async () => { await api.del(`/v1/users/${seg(owner)}/tokens/${seg(t.id)}`); await tokens.reload(); })}>Revoke</button>
                </td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </>
  );
}

const GRANT_FIELDS = ['user', 'client', 'ports', 'protocols'];

/** Grants: a superadmin hands them out; a user reads their own. */
export function Grants({ user, path }) {
  const filterUser = new URLSearchParams(path.split('?')[1] || '').get('user') || '';
  const grants = useLoad(() => api.get(withQuery('/v1/grants', { user: filterUser })), [filterUser]);
  const admin = user.role === 'superadmin';
  const [form, setForm] = useState({ user: filterUser, client: '*', ports: '', tcp: true, udp: false });
  const create = useSubmit();
  const action = useSubmit();
  const submit = (e) => {
    e.preventDefault();
    create.run(async () => {
      const ports = String(form.ports).trim();
      const protocols = [form.tcp && 'tcp', form.udp && 'udp'].filter(Boolean);
      await api.post('/v1/grants', { user: form.user.trim(), client: form.client.trim(), ports: /^\d+$/.test(ports) ? Number(ports) : ports, protocols });
      await grants.reload();
    });
  };
  return (
    <>
      <PageHead title={filterUser ? `Grants of ${filterUser}` : 'Grants'} />
      {admin && (
        <section class="panel">
          <h2>Grant edge capacity</h2>
          <form onSubmit={submit} class="inline-form">
            <FormError error={create.error} fields={GRANT_FIELDS} />
            <Field label="User" name="user" formError={create.error} fields={GRANT_FIELDS} value={form.user} onInput={(e) => setForm({ ...form, user: e.currentTarget.value })} required />
            <Field label="Client (id, name or *)" name="client" formError={create.error} fields={GRANT_FIELDS} value={form.client} onInput={(e) => setForm({ ...form, client: e.currentTarget.value })} required />
            <Field label="Ports (PORT or START-END)" name="ports" formError={create.error} fields={GRANT_FIELDS} value={form.ports} onInput={(e) => setForm({ ...form, ports: e.currentTarget.value })} required />
            <fieldset class="checks">
              <legend>Protocols</legend>
              <label><input type="checkbox" checked={form.tcp} onChange={(e) => setForm({ ...form, tcp: e.currentTarget.checked })} /> TCP</label>
              <label><input type="checkbox" checked={form.udp} onChange={(e) => setForm({ ...form, udp: e.currentTarget.checked })} /> UDP</label>
            </fieldset>
            <button type="submit" class="primary" disabled={create.busy}>Grant</button>
          </form>
        </section>
      )}
      <ErrorBanner error={action.error} />
      <Loading loading={grants.loading && !grants.data} error={grants.error} />
      {grants.data && grants.data.length === 0 && <p class="muted">No grants.</p>}
      {grants.data && grants.data.length > 0 && (
        <Table caption="Grants">
          <thead><tr><th scope="col">Grant</th><th scope="col">User</th><th scope="col">Client</th><th scope="col">Ports</th><th scope="col">Protocols</th><th scope="col">Created</th>{admin && <th scope="col">Actions</th>}</tr></thead>
          <tbody>
            {grants.data.map((g) => (
              <tr key={g.id}>
                <td><code>{g.id}</code></td>
                <td>{g.user}</td>
                <td>{g.client}</td>
                <td>{g.ports}</td>
                <td>{g.protocols.join(', ')}</td>
                <td>{formatTime(g.created_at)}</td>
                {admin && (
                  <td class="actions">
                    <button type="button" class="danger" onClick={() => window.confirm(`Revoke grant ${g.id}? Rules no other grant covers are removed.`) && action.run(async () => { await api.del(`/v1/grants/${seg(g.id)}`); await grants.reload(); })}>Revoke</button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </>
  );
}

// Rate limits: owner envelopes (caps over all of one user's rules on one client together,
// binding before each rule's own caps) and the rules that carry caps of their own. A
// superadmin sets, replaces and removes envelopes; a user reads their own.
import { useState } from 'preact/hooks';
import { api } from '../session.js';
import { seg } from '../lib/api.js';
import { Dialog, ErrorBanner, Field, FormError, Loading, Notice, PageHead, Table, useLoad, useSubmit } from '../components.jsx';
import { Link } from '../lib/router.jsx';
import { formatTime } from '../lib/format.js';
import { CAPS_FORM_FIELDS, capsFormFrom, emptyCapsForm, hasCaps, rateLimitFromForm } from '../lib/ratelimit.js';
import { CapsList, RateLimitFields } from '../caps.jsx';

const SET_FIELDS = ['user', 'client', ...CAPS_FORM_FIELDS];

const envelopePath = (user, client) => `/v1/users/${seg(user)}/owner-caps/${seg(client)}`;

function SetEnvelope({ users, clients, onDone }) {
  const firstUser = (users || []).find((u) => u.role !== 'superadmin');
  const firstClient = (clients || []).find((c) => c.status !== 'revoked');
  const [form, setForm] = useState({ user: '', client: '', caps: emptyCapsForm() });
  const submit = useSubmit();
  const user = form.user || (firstUser ? firstUser.id : '');
  const client = form.client || (firstClient ? firstClient.name : '');
  const send = (e) => {
    e.preventDefault();
    submit.run(async () => {
      const envelope = await api.put(envelopePath(user, client), rateLimitFromForm(form.caps));
      setForm({ ...form, caps: emptyCapsForm() });
      await onDone(`Envelope of ${envelope.user} on ${client} set.`);
    });
  };
  return (
    <section class="panel">
      <h2>Set an owner envelope</h2>
      <p class="muted">
        Caps on all of one user's rules on one client together, checked before each rule's own caps. The user needs a
        grant on the client. Setting it again replaces every cap; remove it to lift them.
      </p>
      <form onSubmit={send}>
        <FormError error={submit.error} fields={SET_FIELDS} />
        <div class="row">
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
        </div>
        <RateLimitFields idPrefix="env" value={form.caps} onChange={(caps) => setForm({ ...form, caps })} formError={submit.error} fields={SET_FIELDS} legend="Caps of the envelope" />
        <button type="submit" class="primary" disabled={submit.busy || !user || !client}>Set envelope</button>
      </form>
    </section>
  );
}

function ReplaceDialog({ envelope, clientName, onClose, onDone }) {
  const [caps, setCaps] = useState(() => capsFormFrom(envelope && envelope.caps));
  const submit = useSubmit();
  const send = (e) => {
    e.preventDefault();
    submit.run(async () => {
      await api.put(envelopePath(envelope.user, envelope.client), rateLimitFromForm(caps));
      await onDone();
    });
  };
  return (
    <Dialog open={!!envelope} title="Replace the envelope" onClose={onClose}>
      {envelope && (
        <form onSubmit={send}>
          <p>{envelope.user} on {clientName}: the new caps replace every old one; the client keeps the live buckets' levels.</p>
          <FormError error={submit.error} fields={CAPS_FORM_FIELDS} />
          <RateLimitFields idPrefix="replace" value={caps} onChange={setCaps} formError={submit.error} fields={CAPS_FORM_FIELDS} legend="New caps" />
          <button type="submit" class="primary" disabled={submit.busy}>Replace envelope</button>
        </form>
      )}
    </Dialog>
  );
}

/** The rate limits page. */
export function Limits({ user }) {
  const admin = user.role === 'superadmin';
  const envelopes = useLoad(() => api.get('/v1/owner-caps'), []);
  const rules = useLoad(() => api.get('/v1/rules'), []);
  const clients = useLoad(() => api.get('/v1/clients'), []);
  const users = useLoad(() => (admin ? api.get('/v1/users') : Promise.resolve([])), [admin]);
  const [replacing, setReplacing] = useState(null);
  const [notice, setNotice] = useState(null);
  const action = useSubmit();
  const names = new Map((clients.data || []).map((c) => [c.id, c.name]));
  const nameOf = (id) => names.get(id) || id;
  const capped = (rules.data || []).filter((r) => r.state !== 'removed' && hasCaps(r.spec.rate_limit));
  const remove = (env) =>
    window.confirm(`Remove the envelope of ${env.user} on ${nameOf(env.client)}? Their rules keep only their own caps.`) &&
    action.run(async () => {
      await api.del(envelopePath(env.user, env.client));
      setNotice(`Removed the envelope of ${env.user} on ${nameOf(env.client)}.`);
      await envelopes.reload();
    });
  return (
    <>
      <PageHead title="Rate limits" />
      {admin ? (
        <SetEnvelope
          users={users.data}
          clients={clients.data}
          onDone={async (message) => {
            setNotice(message);
            await envelopes.reload();
          }}
        />
      ) : (
        <p class="muted">The caps over all your rules on a client together. A superadmin sets them; each rule's own caps are on its page.</p>
      )}
      <ErrorBanner error={action.error} />
      <Notice kind="good">{notice}</Notice>
      <h2>Owner envelopes</h2>
      <Loading loading={envelopes.loading && !envelopes.data} error={envelopes.error} />
      {envelopes.data && envelopes.data.length === 0 && <p class="muted">No owner envelopes.</p>}
      {envelopes.data && envelopes.data.length > 0 && (
        <Table caption="Owner envelopes">
          <thead>
            <tr><th scope="col">User</th><th scope="col">Client</th><th scope="col">Caps</th><th scope="col">Updated</th>{admin && <th scope="col">Actions</th>}</tr>
          </thead>
          <tbody>
            {envelopes.data.map((env) => (
              <tr key={`${env.user}/${env.client}`} data-envelope={`${env.user}/${nameOf(env.client)}`}>
                <td>{env.user}</td>
                <td>{nameOf(env.client)}</td>
                <td><CapsList limits={env.caps} testId="envelope-caps" /></td>
                <td>{formatTime(env.updated_at)}</td>
                {admin && (
                  <td class="actions">
                    <button type="button" onClick={() => setReplacing(env)}>Replace</button>
                    <button type="button" class="danger" onClick={() => remove(env)}>Remove</button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <h2>Rules with their own caps</h2>
      <Loading loading={rules.loading && !rules.data} error={rules.error} />
      {rules.data && capped.length === 0 && <p class="muted">No rule has caps of its own. Set them when pushing a rule, or with "Edit caps" on its page.</p>}
      {capped.length > 0 && (
        <Table caption="Rules with their own caps">
          <thead>
            <tr><th scope="col">Rule</th><th scope="col">Client</th><th scope="col">Owner</th><th scope="col">Caps</th></tr>
          </thead>
          <tbody>
            {capped.map((r) => (
              <tr key={r.id} data-capped-rule={r.id}>
                <td><Link href={`/rules/${r.id}`}>{r.spec.name || `#${r.id}`}</Link></td>
                <td>{r.client_name}</td>
                <td>{r.owner}</td>
                <td><CapsList limits={r.spec.rate_limit} /></td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <ReplaceDialog
        key={replacing ? `${replacing.user}/${replacing.client}` : 'none'}
        envelope={replacing}
        clientName={replacing ? nameOf(replacing.client) : ''}
        onClose={() => setReplacing(null)}
        onDone={async () => {
          setNotice(`Replaced the envelope of ${replacing.user} on ${nameOf(replacing.client)}.`);
          setReplacing(null);
          await envelopes.reload();
        }}
      />
    </>
  );
}

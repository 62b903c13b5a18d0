// The audit log (filters, cursor paging) and settings (the advertised endpoint with the
// server's validation message inline, the caller's password, the theme).
import { useState } from 'preact/hooks';
import { api } from '../session.js';
import { withQuery } from '../lib/api.js';
import { Badge, ErrorBanner, Field, FormError, Loading, Notice, PageHead, Table, stateKind, useLoad, useSubmit } from '../components.jsx';
import { formatTime, localToRfc3339 } from '../lib/format.js';
import { back, currentCursor, firstPage, forward, pageNumber, received } from '../lib/pager.js';
import { PasswordForm } from './auth.jsx';
import { THEMES, useTheme } from '../theme.js';

const AUDIT_FIELDS = ['from', 'to', 'outcome', 'limit'];

/** The audit log page (superadmin). */
export function Audit() {
  const [draft, setDraft] = useState({ from: '', to: '', outcome: '', limit: '50' });
  const [filters, setFilters] = useState(draft);
  const [pager, setPager] = useState(firstPage());
  const cursor = currentCursor(pager);
  const page = useLoad(async () => {
    const query = { from: localToRfc3339(filters.from), to: localToRfc3339(filters.to), outcome: filters.outcome, limit: filters.limit, cursor };
    const result = await api.get(withQuery('/v1/audit', query));
    setPager((p) => received(p, result.next_cursor));
    return result;
  }, [JSON.stringify(filters), cursor]);
  const set = (key) => (e) => setDraft({ ...draft, [key]: e.currentTarget.value });
  const apply = (e) => {
    e.preventDefault();
    setFilters(draft);
    setPager(firstPage());
  };
  return (
    <>
      <PageHead title="Audit log" />
      <form class="filters" onSubmit={apply} aria-label="Filter the audit log">
        <Field label="From" name="from" type="datetime-local" step="1" formError={page.error} fields={AUDIT_FIELDS} value={draft.from} onInput={set('from')} />
        <Field label="To (exclusive)" name="to" type="datetime-local" step="1" formError={page.error} fields={AUDIT_FIELDS} value={draft.to} onInput={set('to')} />
        <Field label="Outcome" name="outcome" formError={page.error} fields={AUDIT_FIELDS}>
          {(attrs) => (
            <select {...attrs} value={draft.outcome} onChange={set('outcome')}>
              <option value="">any</option><option>success</option><option>denied</option><option>failed</option>
            </select>
          )}
        </Field>
        <Field label="Per page" name="limit" type="number" min="1" max="500" formError={page.error} fields={AUDIT_FIELDS} value={draft.limit} onInput={set('limit')} />
        <button type="submit" class="primary">Apply</button>
      </form>
      <FormError error={page.error} fields={AUDIT_FIELDS} />
      <Loading loading={page.loading && !page.data} />
      {page.data && (
        <>
          <Table caption="Audit records">
            <thead><tr><th scope="col">#</th><th scope="col">At</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Outcome</th><th scope="col">Remote</th></tr></thead>
            <tbody>
              {page.data.records.map((r) => (
                <tr key={r.seq}>
                  <td>{r.seq}</td>
                  <td>{formatTime(r.at)}</td>
                  <td>{r.actor}</td>
                  <td><code>{r.action}</code></td>
                  <td>{r.target || '—'}</td>
                  <td><Badge kind={stateKind(r.outcome)}>{r.outcome}</Badge>{r.code && <> <code>{r.code}</code></>}</td>
                  <td>{r.remote || '—'}</td>
                </tr>
              ))}
            </tbody>
          </Table>
          <nav class="pager" aria-label="Audit pages">
            <button type="button" onClick={() => setPager(firstPage())} disabled={pageNumber(pager) === 1}>First</button>
            <button type="button" onClick={() => setPager(back(pager))} disabled={pageNumber(pager) === 1}>Previous</button>
            <span>Page {pageNumber(pager)}</span>
            <button type="button" onClick={() => setPager(forward(pager))} disabled={!pager.next}>Next</button>
          </nav>
        </>
      )}
    </>
  );
}

function EndpointSettings() {
  const current = useLoad(() => api.get('/v1/settings/advertised-endpoint'), []);
  const [value, setValue] = useState(null);
  const save = useSubmit();
  const [saved, setSaved] = useState(false);
  const shown = value ?? (current.data && current.data.override) ?? '';
  const submit = (e) => {
    e.preventDefault();
    setSaved(false);
    save.run(async () => {
      const text = shown.trim();
      await api.put('/v1/settings/advertised-endpoint', { endpoint: text === '' ? null : text });
      setSaved(true);
      setValue(null);
      await current.reload();
    });
  };
  const d = current.data;
  return (
    <section class="panel">
      <h2>Advertised endpoint</h2>
      <p class="muted">Where enrolled clients reach the control plane. Leave empty to go back to the configured or derived one.</p>
      <Loading loading={current.loading && !d} error={current.error} />
      {d && (
        <dl class="facts">
          <dt>Effective</dt><dd>{d.effective || '—'} <Badge kind="muted">{d.source}</Badge></dd>
          <dt>From the config</dt><dd>{d.seed || '—'}</dd>
          {d.diagnostic && (<><dt>Note</dt><dd>{d.diagnostic}</dd></>)}
        </dl>
      )}
      <form onSubmit={submit} class="inline-form">
        <FormError error={save.error} fields={['endpoint']} />
        {saved && <Notice kind="good">Saved.</Notice>}
        <Field label="Override (host:port)" name="endpoint" formError={save.error} fields={['endpoint']} value={shown} onInput={(e) => setValue(e.currentTarget.value)} placeholder="edge.example.net:7443" />
        <button type="submit" class="primary" disabled={save.busy}>Save</button>
      </form>
    </section>
  );
}

/** The settings page. */
export function Settings({ user }) {
  const [theme, setTheme] = useTheme();
  return (
    <>
      <PageHead title="Settings" />
      {user.role === 'superadmin' && <EndpointSettings />}
      <section class="panel">
        <h2>Your password</h2>
        <PasswordForm />
      </section>
      <section class="panel">
        <h2>Appearance</h2>
        <Field label="Theme" name="theme">
          {(attrs) => (
            <select {...attrs} value={theme} onChange={(e) => setTheme(e.currentTarget.value)}>
              {THEMES.map((t) => <option key={t} value={t}>{t}</option>)}
            </select>
          )}
        </Field>
      </section>
    </>
  );
}

// The dashboard: what is connected, what is forwarding and how much. Everything comes from
// the caller's own listings (the API scopes them to a tenant's grants): throughput now is the
// change of the rules' counters between two polls, throughput over 1 h / 24 h / 7 d comes
// from the traffic history, and quota warnings from the caller's quotas.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../session.js';
import { withQuery } from '../lib/api.js';
import { Badge, ErrorBanner, Loading, PageHead, Table, stateKind, useLoad } from '../components.jsx';
import { Link } from '../lib/router.jsx';
import { formatBytes, formatRate, rateBetween, relativeTime } from '../lib/format.js';
import { percentText, quotaWarnings } from '../lib/quota.js';
import { WINDOWS, seriesFrom, trafficQuery } from '../lib/traffic.js';
import { ThroughputChart } from '../chart.jsx';
import { QuotaBadge } from './quotas.jsx';

/** How often the dashboard polls, in ms. */
const POLL_MS = 3000;

/** At most this many rules' stats are polled (the busiest first would need history). */
const MAX_STATS = 50;

async function loadOverview() {
  const [clients, rules, quotas] = await Promise.all([
    api.get('/v1/clients'),
    api.get('/v1/rules'),
    // A failure here is shown in the warnings' place; the rest of the dashboard stays.
    api.get('/v1/quotas').then((data) => ({ data }), (error) => ({ error })),
  ]);
  const live = rules.filter((r) => r.state !== 'removed').slice(0, MAX_STATS);
  const stats = await Promise.all(live.map((r) => api.get(`/v1/rules/${r.id}/stats?per_target=true`).catch(() => null)));
  return { clients, rules, quotas, stats: stats.filter(Boolean), at: Date.now() };
}

/** How often the history chart reloads, in ms: a minute's sample lands about 15 s after it ends. */
const HISTORY_POLL_MS = 20_000;

async function loadHistory(windowKey) {
  const query = trafficQuery(windowKey, Date.now() / 1000);
  const answer = await api.get(withQuery('/v1/traffic', { from: query.from, to: query.to, bucket: query.bucket }));
  return { series: seriesFrom(answer, query), totals: { in: answer.total_bytes_in, out: answer.total_bytes_out } };
}

/** Throughput over a window the operator picks, from the traffic history. */
function History() {
  const [windowKey, setWindowKey] = useState('1h');
  const history = useLoad(() => loadHistory(windowKey), [windowKey], HISTORY_POLL_MS);
  return (
    <section aria-labelledby="history-head">
      <div class="section-head">
        <h2 id="history-head">Throughput history</h2>
        <div class="segmented" role="group" aria-label="Window">
          {Object.entries(WINDOWS).map(([key, w]) => (
            <button key={key} type="button" aria-pressed={key === windowKey} onClick={() => setWindowKey(key)}>{w.label}</button>
          ))}
        </div>
      </div>
      {history.error && <ErrorBanner error={history.error} />}
      {history.data ? (
        <ThroughputChart series={history.data.series} totals={history.data.totals} label={WINDOWS[windowKey].label} />
      ) : (
        <Loading loading={history.loading} />
      )}
    </section>
  );
}

/** Quotas at or past 80 % of their cap, or exhausted. */
function QuotaWarnings({ quotas, names }) {
  if (quotas.error) return <ErrorBanner error={quotas.error} />;
  const warnings = quotaWarnings(quotas.data);
  if (warnings.length === 0) return null;
  return (
    <section aria-labelledby="quota-warnings-head">
      <h2 id="quota-warnings-head">Quota warnings</h2>
      <ul class="warnings">
        {warnings.map((q) => (
          <li key={`${q.user}/${q.client}`} data-quota-warning={`${q.user}/${names.get(q.client) || q.client}`}>
            <QuotaBadge quota={q} /> <strong>{q.user}</strong> on {names.get(q.client) || q.client}: {percentText(q)} used ({formatBytes(q.current_period_bytes_used)} of {formatBytes(q.monthly_bytes)}), period ends {relativeTime(q.period_end)}. <Link href="/quotas">Quotas</Link>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Card({ title, value, detail, href }) {
  const body = (
    <>
      <span class="card-title">{title}</span>
      <span class="card-value">{value}</span>
      <span class="card-detail">{detail}</span>
    </>
  );
  return href ? (
    <Link class="card" href={href}>
      {body}
    </Link>
  ) : (
    <div class="card">{body}</div>
  );
}

/** The dashboard page. */
export function Dashboard() {
  const { data, error, loading } = useLoad(loadOverview, [], POLL_MS);
  const previous = useRef(null);
  const [rate, setRate] = useState({ in: 0, out: 0 });
  useEffect(() => {
    if (!data) return;
    const sum = (key) => data.stats.reduce((acc, s) => acc + (s.totals[key] || 0), 0);
    const now = { at: data.at, in: sum('bytes_in'), out: sum('bytes_out') };
    if (previous.current) {
      setRate({
        in: rateBetween({ at: previous.current.at, bytes: previous.current.in }, { at: now.at, bytes: now.in }),
        out: rateBetween({ at: previous.current.at, bytes: previous.current.out }, { at: now.at, bytes: now.out }),
      });
    }
    previous.current = now;
  }, [data]);
  if (!data) return (<><PageHead title="Dashboard" /><Loading loading={loading} error={error} /></>);
  const { clients, rules, stats, quotas } = data;
  const names = new Map(clients.map((c) => [c.id, c.name]));
  const nWarnings = quotaWarnings(quotas.data).length;
  const connected = clients.filter((c) => c.connected).length;
  const live = clients.filter((c) => c.status !== 'revoked');
  const count = (state) => rules.filter((r) => r.state === state).length;
  const unhealthy = stats.flatMap((s) => (s.per_target || []).filter((t) => t.health === 'failed').map((t) => ({ rule: s.rule_id, target: t.target })));
  const byId = new Map(rules.map((r) => [r.id, r]));
  const top = [...stats]
    .map((s) => ({ s, total: (s.totals.bytes_in || 0) + (s.totals.bytes_out || 0) }))
    .sort((a, b) => b.total - a.total)
    .slice(0, 5);
  return (
    <>
      <PageHead title="Dashboard" />
      <ErrorBanner error={error} />
      <section class="cards" aria-label="Summary">
        <Card title="Clients connected" value={connected} detail={`${live.length - connected} offline`} href="/clients" />
        <Card title="Rules active" value={count('active')} detail={`${count('failed')} failed · ${count('pending')} pending`} href="/rules" />
        <Card title="Unhealthy targets" value={unhealthy.length} detail={unhealthy.length ? unhealthy.map((u) => u.target).join(', ') : 'all targets healthy'} />
        <Card title="Throughput now" value={formatRate(rate.in + rate.out)} detail={`in ${formatRate(rate.in)} · out ${formatRate(rate.out)}`} />
        <Card title="Quota warnings" value={nWarnings} detail={nWarnings ? 'at 80 % or more of the cap' : 'no quota near its cap'} href="/quotas" />
      </section>
      <QuotaWarnings quotas={quotas} names={names} />
      <History />
      <h2>Top rules</h2>
      {top.length === 0 ? (
        <p class="muted">No rules yet. <Link href="/rules">Push one</Link>.</p>
      ) : (
        <Table caption="Top rules by bytes">
          <thead>
            <tr><th scope="col">Rule</th><th scope="col">Client</th><th scope="col">State</th><th scope="col">Bytes in</th><th scope="col">Bytes out</th><th scope="col">Active conns</th></tr>
          </thead>
          <tbody>
            {top.map(({ s }) => {
              const rule = byId.get(s.rule_id);
              return (
                <tr key={s.rule_id}>
                  <td><Link href={`/rules/${s.rule_id}`}>{rule?.spec?.name || `#${s.rule_id}`}</Link></td>
                  <td>{rule?.client_name}</td>
                  <td><Badge kind={stateKind(s.state)}>{s.state}</Badge></td>
                  <td>{formatBytes(s.totals.bytes_in)}</td>
                  <td>{formatBytes(s.totals.bytes_out)}</td>
                  <td>{s.totals.connections_active}</td>
                </tr>
              );
            })}
          </tbody>
        </Table>
      )}
    </>
  );
}

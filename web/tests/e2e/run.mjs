// The browser walk-through of the console, in headless Debian Chromium through playwright-core,
// against a real server the Rust end-to-end test started (`e2e/tests/it/ui.rs`):
// onboarding → login → enroll a client → push a rule (an inline field error first) → bytes on
// the rule's live stats, pushed by server-sent events → a rule pushed with a connection cap
// (a zero cap refused inline first), its refusal counted live, its caps edited in place (a
// burst without its rate refused inline first) → the dashboard's throughput chart → a quota
// set for a metered user (an inline error first) and an owner envelope (an empty one refused
// inline first, then replaced), the quota bar moving after their traffic, their read-only
// views, the cap changed, the dashboard's warning, a credit, the envelope removed → every
// page checked by axe-core and photographed → a second user, whose password was reset,
// must choose a new one before anything else, sees nothing of the first's and changes their
// password again in Settings → the session-expired notice → revoke.
//
// The Rust test owns every process but the browser. When this script needs one it prints a
// line and waits for the answer on stdin:
//   ENROLL <command>  →  OK <target host:port> <free listen port>   (client enrolled, running)
//   TRAFFIC <port>    →  OK                                         (bytes went through)
//   PORT              →  OK <free listen port>
//   CROWD <port>      →  OK        (a first connection served, a second closed at accept)
//   RESET <user>      →  OK <temporary password>   (server stopped, `reset-password`, restarted)
// It exits 0 only when every step passed; the last line is `ui: N passed, 0 failed`.
import { readFileSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const BASE = process.env.PORTUNUS_UI_URL;
const SETUP_TOKEN = process.env.PORTUNUS_SETUP_TOKEN;
const SHOTS = process.env.PORTUNUS_SCREENSHOTS;
const CHROMIUM = process.env.PORTUNUS_CHROMIUM || '/usr/bin/chromium';
const ADMIN = { id: 'admin', password: 'correct-horse-battery-staple' };
const TENANT = { id: 'tenant', first: 'first-password-123456', password: 'tenant-own-password-456', later: 'tenant-later-password-789' };
const METERED = { id: 'metered', password: 'metered-password-789012' };
/** What one TRAFFIC request forwards: 64 KiB each way. */
const TRAFFIC_BYTES = 2 * 64 * 1024;
/** A minute's traffic sample lands up to 15 s after the minute ends; the chart reloads every 20 s. */
const HISTORY_WAIT = 120_000;
const WAIT = 20_000;

if (!BASE || !SETUP_TOKEN || !SHOTS) {
  console.error('PORTUNUS_UI_URL, PORTUNUS_SETUP_TOKEN and PORTUNUS_SCREENSHOTS must be set');
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Asks the Rust side for something and returns its answer's words after `OK`. */
async function ask(request) {
  console.log(request);
  const { value, done } = await lines.next();
  if (done || !value.startsWith('OK')) throw new Error(`the test harness answered ${JSON.stringify(value)} to ${request}`);
  return value.split(' ').slice(1);
}

const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const problems = [];
let passed = 0;

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  passed += 1;
}

/** axe-core on the page as it is: no serious or critical violation. */
async function axe(page, name) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) {
    // Evaluated through the DevTools protocol, which the page's CSP does not govern; the
    // page itself still runs no inline script.
    await page.evaluate(axeSource);
  }
  const result = await page.evaluate(async () => {
    const run = await window.axe.run(document, { resultTypes: ['violations'] });
    return run.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe on ${name}: ${JSON.stringify(bad)}`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

/** Checks and photographs the page under `name`. */
async function visit(page, name) {
  await page.waitForLoadState('networkidle').catch(() => {});
  await axe(page, name);
  await shot(page, name);
}

async function nav(page, label) {
  const menu = page.locator('.menu-button');
  if (await menu.isVisible()) await menu.click();
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: label, exact: true }).click();
  await page.getByRole('heading', { level: 1 }).first().waitFor();
}

async function login(page, user, password) {
  await page.getByLabel('User id').fill(user);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** Polls the text of `locator` until `ok(text)` holds; fails with `what` and the last text. */
async function waitForText(locator, ok, what, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let text = '';
  while (Date.now() < deadline) {
    text = (await locator.textContent({ timeout: 1_000 }).catch(() => '')) || '';
    if (ok(text)) return text;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`timed out waiting for ${what}: still ${JSON.stringify(text)}`);
}

/** The usage text of the quota row of `pair` (`user/client`). */
const quotaCell = (page, pair) => page.locator(`tr[data-quota="${pair}"] [data-testid="quota-used"]`);

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You signed out.').waitFor();
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    context.setDefaultTimeout(WAIT);
    const page = await context.newPage();
    page.on('dialog', (dialog) => dialog.accept());
    page.on('console', (msg) => {
      const text = msg.text();
      if (msg.type() === 'error' && /Content Security Policy|Refused to/.test(text)) problems.push(`CSP: ${text}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));

    // Onboarding, then login.
    await page.goto(BASE);
    await page.getByRole('heading', { name: 'Set up Portunus' }).waitFor();
    await visit(page, '01-onboarding');
    await page.getByLabel('Setup token').fill(SETUP_TOKEN);
    await page.getByLabel('Superadmin user id').fill(ADMIN.id);
    await page.getByLabel('Password').fill(ADMIN.password);
    await page.getByRole('button', { name: 'Create superadmin' }).click();
    await page.getByText('Superadmin created').waitFor();
    await visit(page, '02-login');
    await page.getByLabel('Password', { exact: true }).fill('wrong-password-000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const refusal = await page.locator('.error-banner .error-code').textContent();
    check(refusal === 'unauthenticated', `a wrong password shows the API's code, got ${refusal}`);
    await login(page, ADMIN.id, ADMIN.password);
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await visit(page, '03-dashboard-empty');

    // Enroll a client from the Clients page; the harness runs the command.
    await nav(page, 'Clients');
    await page.getByRole('button', { name: 'Connect a client' }).click();
    await page.getByLabel('Client name').fill('edge-ui');
    await page.getByRole('button', { name: 'Create enroll command' }).click();
    const command = (await page.locator('#enroll-command').textContent()).trim();
    check(command.startsWith('portunus-client enroll '), `the enroll command is shown: ${command}`);
    await visit(page, '04-enroll-command');
    const [target, listenPort] = await ask(`ENROLL ${command}`);
    await page.getByRole('button', { name: 'Close' }).click();
    await page.locator('tr[data-client="edge-ui"] .badge', { hasText: 'online' }).waitFor();
    await visit(page, '05-clients');

    // Push: first with an inverted range (the error lands on the listen port field), then
    // for real; the page goes to the rule's detail.
    await nav(page, 'Rules');
    await page.getByRole('button', { name: 'Push a rule' }).click();
    await page.getByLabel('Listen port or range').fill('9000-8000');
    await page.getByLabel('Target 1 host:port').fill(target);
    await page.getByRole('button', { name: 'Push rule' }).click();
    const fieldError = page.locator('#f-listen_port-error');
    await fieldError.waitFor();
    check((await fieldError.textContent()).includes('validation.inverted_range'), 'the range error shows under the listen port');
    await visit(page, '06-push-inline-error');
    await page.getByLabel('Listen port or range').fill(listenPort);
    await page.getByLabel('Name (optional)').fill('echo');
    await page.getByRole('button', { name: 'Push rule' }).click();
    await page.getByRole('heading', { name: 'Rule echo' }).waitFor();
    await page.locator('.facts .badge', { hasText: 'active' }).waitFor();

    // Bytes through the rule show up on its live stats.
    await ask(`TRAFFIC ${listenPort}`);
    await page.waitForFunction(() => {
      const cell = document.querySelector('[data-testid="bytes-in"]');
      return cell && cell.textContent !== '0 B';
    }, null, { timeout: 30_000 });
    const liveMode = await page.locator('[data-testid="live-mode"]').getAttribute('data-mode');
    check(liveMode === 'stream', `the live stats come from the event stream, not polling (mode ${liveMode})`);
    await visit(page, '07-rule-detail');

    // A rule with a connection cap from the push dialog: a zero cap is refused under its field
    // first. With one open connection at most, a second is closed at accept and counted.
    const [cappedPort] = await ask('PORT');
    await nav(page, 'Rules');
    await page.getByRole('button', { name: 'Push a rule' }).click();
    await page.getByLabel('Listen port or range').fill(cappedPort);
    await page.getByLabel('Target 1 host:port').fill(target);
    await page.getByLabel('Name (optional)').fill('capped');
    await page.getByRole('button', { name: /^Rate limits \(optional\)/ }).click();
    await page.getByLabel('Open connections at once').fill('0');
    await page.getByRole('button', { name: 'Push rule' }).click();
    const zeroCap = page.locator('#f-concurrent_connections-error');
    await zeroCap.waitFor();
    check((await zeroCap.textContent()).includes('validation.zero_cap'), 'a zero cap is refused under its field');
    await visit(page, '07a-push-caps-error');
    await page.getByLabel('Open connections at once').fill('1');
    await page.getByRole('button', { name: 'Push rule' }).click();
    await page.getByRole('heading', { name: 'Rule capped' }).waitFor();
    await page.locator('.facts .badge', { hasText: 'active' }).waitFor();
    const ruleCaps = page.locator('[data-testid="rule-caps"]');
    check((await ruleCaps.textContent()) === '1 open connection at most', `the detail shows the cap: ${await ruleCaps.textContent()}`);
    await ask(`CROWD ${cappedPort}`);
    const rejected = await waitForText(page.locator('[data-testid="rate-limit-rejected"]'), (t) => Number(t) >= 1, 'the refused connection on the live stats');
    check(rejected === '1', `one connection was refused by the cap: ${rejected}`);
    await visit(page, '07b-rule-caps');

    // Edit the caps in place: a burst without its rate is refused under the burst first.
    await page.getByRole('button', { name: 'Edit caps' }).click();
    const capsDialog = page.locator('dialog[open]');
    check((await capsDialog.getByLabel('Open connections at once').inputValue()) === '1', 'the edit form starts from the rule');
    await capsDialog.getByLabel('Inbound burst (bytes)', { exact: true }).fill('2');
    await capsDialog.getByRole('button', { name: 'Save caps' }).click();
    const burstError = page.locator('#f-caps-bandwidth_in_burst_bytes-error');
    await burstError.waitFor();
    check((await burstError.textContent()).includes('validation.burst_without_rate'), 'a burst without its rate is refused under the burst');
    await visit(page, '07c-edit-caps-error');
    await capsDialog.getByLabel('Inbound bandwidth (bytes/s)', { exact: true }).fill('1');
    await capsDialog.getByLabel('New connections per second').fill('50');
    await capsDialog.getByLabel('Open connections at once').fill('2');
    await capsDialog.getByRole('button', { name: 'Save caps' }).click();
    await page.getByText('Caps saved').waitFor();
    await waitForText(ruleCaps, (t) => t.includes('2 open connections'), 'the edited caps on the detail page');
    const capLines = await ruleCaps.locator('li').allTextContents();
    check(
      JSON.stringify(capLines) === JSON.stringify(['Inbound 1.00 MiB/s (burst 2.00 MiB)', '50 new connections a second (burst 50)', '2 open connections at most']),
      `the caps were replaced as a whole: ${capLines}`,
    );
    await visit(page, '07d-rule-caps-edited');
    await nav(page, 'Rules');
    await page.locator('tr[data-rule]').first().waitFor();
    await visit(page, '08-rules');
    await nav(page, 'Dashboard');
    await page.locator('.card-value').first().waitFor();
    const chartTitle = page.locator('[data-testid="throughput-chart"] svg title');
    await chartTitle.waitFor({ state: 'attached' });
    check((await chartTitle.textContent()) === 'Throughput over the last 1 h', 'the chart shows the last hour first');
    for (const label of ['24 h', '7 d', '1 h']) {
      await page.getByRole('group', { name: 'Window' }).getByRole('button', { name: label, exact: true }).click();
      await waitForText(chartTitle, (t) => t === `Throughput over the last ${label}`, `the ${label} chart`);
      const pressed = await page.getByRole('button', { name: label, exact: true }).getAttribute('aria-pressed');
      check(pressed === 'true', `the ${label} button is pressed`);
    }
    await visit(page, '09-dashboard');

    // The palette jumps to the client.
    await page.keyboard.press('Control+k');
    await page.getByRole('combobox').fill('edge-ui');
    await page.getByRole('option', { name: /Client edge-ui/ }).waitFor();
    await shot(page, '10-palette');
    await axe(page, 'palette');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Clients' }).waitFor();

    // Accounts and administration pages.
    await nav(page, 'Users');
    await page.getByLabel('User id').fill(TENANT.id);
    await page.getByLabel('Password (optional)').fill(TENANT.first);
    await page.getByRole('button', { name: 'Add user' }).click();
    await page.locator(`tr[data-user="${TENANT.id}"]`).waitFor();
    await page.getByLabel('User id').fill(METERED.id);
    await page.getByLabel('Password (optional)').fill(METERED.password);
    await page.getByRole('button', { name: 'Add user' }).click();
    await page.locator(`tr[data-user="${METERED.id}"]`).waitFor();
    await visit(page, '11-users');

    // The metered user gets a port on the client, then a quota there.
    const [meteredPort] = await ask('PORT');
    await nav(page, 'Grants');
    await page.getByLabel('User', { exact: true }).fill(METERED.id);
    await page.getByLabel('Client (id, name or *)').fill('edge-ui');
    await page.getByLabel('Ports (PORT or START-END)').fill(meteredPort);
    await page.getByRole('button', { name: 'Grant', exact: true }).click();
    await page.locator('table tbody tr', { hasText: METERED.id }).waitFor();
    await visit(page, '12-grants');

    await nav(page, 'Quotas');
    const setForm = page.locator('form', { has: page.getByRole('button', { name: 'Set quota' }) });
    await setForm.getByLabel('User').selectOption(TENANT.id);
    await setForm.getByLabel('Client').selectOption('edge-ui');
    await setForm.getByLabel('Monthly cap', { exact: true }).fill('200');
    await setForm.getByLabel('Monthly cap: unit').selectOption('KiB');
    await page.getByRole('button', { name: 'Set quota' }).click();
    const clientError = page.locator('#f-client-error');
    await clientError.waitFor();
    check((await clientError.textContent()).includes('client_not_granted'), 'a pair without a grant is refused under the client field');
    await visit(page, '12a-quota-inline-error');
    await setForm.getByLabel('User').selectOption(METERED.id);
    await page.getByRole('button', { name: 'Set quota' }).click();
    const pair = `${METERED.id}/edge-ui`;
    const fresh = await waitForText(quotaCell(page, pair), (t) => t.length > 0, 'the new quota row');
    check(fresh === '0 B of 200.0 KiB (0 %)', `a new quota starts empty: ${fresh}`);

    // An owner envelope for the metered user on the client: an empty one is refused under the
    // caps first; then it is set and replaced as a whole.
    await nav(page, 'Rate limits');
    const envForm = page.locator('form', { has: page.getByRole('button', { name: 'Set envelope' }) });
    await envForm.getByLabel('User', { exact: true }).selectOption(METERED.id);
    await envForm.getByLabel('Client', { exact: true }).selectOption('edge-ui');
    await page.getByRole('button', { name: 'Set envelope' }).click();
    const emptyEnvelope = page.locator('#f-env-rate_limit-error');
    await emptyEnvelope.waitFor();
    check((await emptyEnvelope.textContent()).includes('validation.empty_envelope'), 'an empty envelope is refused under the caps');
    await visit(page, '12a1-envelope-empty-error');
    await envForm.getByLabel('Outbound bandwidth (bytes/s)', { exact: true }).fill('10');
    await envForm.getByLabel('Open connections at once').fill('20');
    await page.getByRole('button', { name: 'Set envelope' }).click();
    const envelopeCaps = page.locator(`tr[data-envelope="${pair}"] [data-testid="envelope-caps"]`);
    await envelopeCaps.waitFor();
    const envLines = await envelopeCaps.locator('li').allTextContents();
    check(JSON.stringify(envLines) === JSON.stringify(['Outbound 10.0 MiB/s (burst 10.0 MiB)', '20 open connections at most']), `the envelope is listed: ${envLines}`);
    await page.locator(`tr[data-envelope="${pair}"]`).getByRole('button', { name: 'Replace' }).click();
    const replaceDialog = page.locator('dialog[open]');
    check((await replaceDialog.getByLabel('Open connections at once').inputValue()) === '20', 'the replace form starts from the envelope');
    await replaceDialog.getByLabel('Outbound bandwidth (bytes/s)', { exact: true }).fill('');
    await replaceDialog.getByLabel('Open connections at once').fill('30');
    await replaceDialog.getByRole('button', { name: 'Replace envelope' }).click();
    const replaced = await waitForText(envelopeCaps, (t) => t.includes('30 open'), 'the replaced envelope');
    check(replaced === '30 open connections at most', `replacing drops the caps left out: ${replaced}`);
    await page.locator('tr[data-capped-rule]', { hasText: 'capped' }).waitFor();
    await visit(page, '12a2-rate-limits');
    await nav(page, 'Quotas');

    // The metered user, in a browser of their own, pushes a rule and reads their quota.
    const tenantContext = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    tenantContext.setDefaultTimeout(WAIT);
    const metered = await tenantContext.newPage();
    metered.on('pageerror', (err) => problems.push(`page error (metered): ${err.message}`));
    metered.on('console', (msg) => {
      if (msg.type() === 'error' && /Content Security Policy|Refused to/.test(msg.text())) problems.push(`CSP (metered): ${msg.text()}`);
    });
    await metered.goto(BASE);
    await login(metered, METERED.id, METERED.password);
    await metered.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await nav(metered, 'Rules');
    await metered.getByRole('button', { name: 'Push a rule' }).click();
    await metered.getByLabel('Listen port or range').fill(meteredPort);
    await metered.getByLabel('Target 1 host:port').fill(target);
    await metered.getByLabel('Name (optional)').fill('metered');
    await metered.getByRole('button', { name: 'Push rule' }).click();
    await metered.locator('.facts .badge', { hasText: 'active' }).waitFor();
    await ask(`TRAFFIC ${meteredPort}`);

    // The bar moves once the client's report is metered: 128 KiB of 200 KiB.
    const moved = await waitForText(quotaCell(page, pair), (t) => t === '128.0 KiB of 200.0 KiB (64 %)', 'the quota bar to count both directions of the traffic');
    await nav(metered, 'Quotas');
    await waitForText(quotaCell(metered, pair), (t) => t === moved, "the user's own quota to show the same usage");
    check((await metered.getByRole('button', { name: 'Credit' }).count()) === 0 && (await metered.getByRole('heading', { name: 'Set a quota' }).count()) === 0, 'a user reads their quota without controls');
    await visit(metered, '12b-quotas-user');
    await nav(metered, 'Rate limits');
    await waitForText(metered.locator(`tr[data-envelope="${pair}"] [data-testid="envelope-caps"]`), (t) => t === replaced, 'the user to read their envelope');
    check((await metered.getByRole('button', { name: 'Replace' }).count()) === 0 && (await metered.getByRole('heading', { name: 'Set an owner envelope' }).count()) === 0, 'a user reads their envelope without controls');
    await visit(metered, '12b1-rate-limits-user');
    await tenantContext.close();

    // Change the cap: an inline error first, then 150 KiB puts the pair over 80 %.
    await page.locator(`tr[data-quota="${pair}"]`).getByRole('button', { name: 'Change cap' }).click();
    await page.getByLabel('New monthly cap', { exact: true }).fill('0');
    await page.locator('dialog').getByRole('button', { name: 'Change cap' }).click();
    const capError = page.locator('#f-cap-monthly_bytes-error');
    await capError.waitFor();
    check((await capError.textContent()).includes('validation.quota_bytes_invalid'), 'a zero cap is refused under the cap field');
    await visit(page, '12c-quota-cap-error');
    await page.getByLabel('New monthly cap', { exact: true }).fill('150');
    await page.locator('dialog').getByRole('button', { name: 'Change cap' }).click();
    const over = await waitForText(quotaCell(page, pair), (t) => t.endsWith('(85 %)'), 'the new cap');
    check(over === '128.0 KiB of 150.0 KiB (85 %)', `the cap changed and the usage stayed: ${over}`);
    await page.locator(`tr[data-quota="${pair}"] .badge`, { hasText: 'over 80 %' }).waitFor();
    await visit(page, '12d-quotas');
    await nav(page, 'Dashboard');
    const warning = page.locator(`[data-quota-warning="${pair}"]`);
    await warning.waitFor();
    check((await warning.textContent()).includes('85 % used'), 'the dashboard warns about the quota');
    await visit(page, '12e-dashboard-quota-warning');

    // A one-shot credit clears the period's usage.
    await nav(page, 'Quotas');
    await page.locator(`tr[data-quota="${pair}"]`).getByRole('button', { name: 'Credit' }).click();
    const credited = await waitForText(quotaCell(page, pair), (t) => t.startsWith('0 B'), 'the credit');
    check(credited === '0 B of 150.0 KiB (0 %)', `the credit cleared the usage: ${credited}`);
    await visit(page, '12f-quota-credited');

    // Removing the envelope leaves the user's rules with their own caps only.
    await nav(page, 'Rate limits');
    await page.locator(`tr[data-envelope="${pair}"]`).getByRole('button', { name: 'Remove' }).click();
    await page.getByText('No owner envelopes.').waitFor();
    await page.getByText(`Removed the envelope of ${METERED.id} on edge-ui.`).waitFor();
    await visit(page, '12f1-envelope-removed');

    // The history has the traffic once its minutes are written.
    await nav(page, 'Dashboard');
    const summary = page.locator('[data-testid="throughput-summary"]');
    const history = await waitForText(summary, (t) => t.length > 0 && !t.startsWith('No traffic'), 'traffic in the history chart', HISTORY_WAIT);
    check(/KiB in, .* out in the last 1 h; peak /.test(history), `the chart summarises the hour: ${history}`);
    check((await page.locator('[data-testid="throughput-chart"] polyline').count()) === 2, 'the chart draws its lines');
    await visit(page, '12g-dashboard-history');
    await nav(page, 'API tokens');
    await page.getByRole('button', { name: 'Mint token' }).click();
    await page.getByText('shown this once').waitFor();
    await visit(page, '13-tokens');
    await nav(page, 'Audit log');
    await page.locator('table tbody tr').first().waitFor();
    await visit(page, '14-audit');
    await nav(page, 'Settings');
    await page.getByLabel('Override (host:port)').fill('not an endpoint');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('#f-endpoint-error').waitFor();
    check((await page.locator('#f-endpoint-error').textContent()).includes('endpoint_invalid'), 'the endpoint error shows inline');
    await visit(page, '15-settings');

    // Narrow screen and dark theme.
    await page.setViewportSize({ width: 360, height: 740 });
    await nav(page, 'Dashboard');
    await page.getByRole('button', { name: /Switch to (dark|light) theme/ }).click();
    const theme = await page.evaluate(() => document.documentElement.dataset.theme);
    if (theme !== 'dark') await page.getByRole('button', { name: /Switch to dark theme/ }).click();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `no sideways scrolling at 360 px (overflow ${overflow})`);
    await visit(page, '16-dashboard-360-dark');
    await nav(page, 'Rules');
    await visit(page, '17-rules-360-dark');
    await nav(page, 'Quotas');
    await page.locator('tr[data-quota]').first().waitFor();
    const quotaOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(quotaOverflow <= 0, `no sideways scrolling on quotas at 360 px (overflow ${quotaOverflow})`);
    await visit(page, '17b-quotas-360-dark');
    await page.setViewportSize({ width: 1280, height: 860 });

    // The tenant's password is reset offline (`reset-password`, which restarts the server):
    // they sign in with the temporary one and must choose their own (a weak one refused
    // inline) before anything else; then they reach the dashboard.
    await signOut(page);
    const [temporary] = await ask(`RESET ${TENANT.id}`);
    await login(page, TENANT.id, TENANT.first);
    const stale = await page.locator('.error-banner .error-code').textContent();
    check(stale === 'unauthenticated', `the password before the reset no longer works: ${stale}`);
    await login(page, TENANT.id, temporary);
    await page.getByRole('heading', { name: 'Choose a new password' }).waitFor();
    check((await page.getByRole('navigation', { name: 'Main' }).count()) === 0, 'nothing but the password change is offered');
    await visit(page, '18a-forced-password-change');
    await page.getByLabel('Current password').fill(temporary);
    await page.getByLabel('New password', { exact: true }).fill('short');
    await page.getByLabel('New password, again').fill('short');
    await page.getByRole('button', { name: 'Change password' }).click();
    const weak = page.locator('#f-new_password-error');
    await weak.waitFor();
    check((await weak.textContent()).includes('validation.weak_password'), 'a weak new password is refused under its field');
    await visit(page, '18b-forced-password-weak');
    await page.getByLabel('New password', { exact: true }).fill(TENANT.password);
    await page.getByLabel('New password, again').fill(TENANT.password);
    await page.getByRole('button', { name: 'Change password' }).click();

    // The tenant: an empty console.
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await page.locator('.card-value').first().waitFor();
    const cards = await page.locator('.card-value').allTextContents();
    check(cards[0] === '0' && cards[1] === '0', `the tenant's dashboard counts nothing: ${cards}`);
    await nav(page, 'Rules');
    await page.getByText('No rules match.').waitFor();
    await nav(page, 'Clients');
    await page.getByText('No clients yet.').waitFor();
    check(!(await page.content()).includes('edge-ui'), "the tenant sees nothing of the admin's client");
    await visit(page, '18-tenant-clients');
    await nav(page, 'Settings');
    await page.getByLabel('Current password').fill(TENANT.password);
    await page.getByLabel('New password', { exact: true }).fill(TENANT.later);
    await page.getByLabel('New password, again').fill(TENANT.later);
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByText('Password changed.').waitFor();
    await visit(page, '19-tenant-settings');

    // A lost session: the next call shows the notice.
    await context.clearCookies();
    await nav(page, 'Rules');
    await page.getByText('Your session expired').waitFor();
    await visit(page, '20-session-expired');

    // Back as the admin, on the page the session ended on: revoke the client.
    await login(page, ADMIN.id, ADMIN.password);
    await page.getByRole('heading', { name: 'Rules' }).waitFor();
    await nav(page, 'Clients');
    await page.locator('tr[data-client="edge-ui"]').getByRole('button', { name: 'Revoke' }).click();
    await page.locator('tr[data-client="edge-ui"] .badge', { hasText: 'revoked' }).waitFor();
    await visit(page, '21-client-revoked');
    await signOut(page);
  } finally {
    await browser.close();
  }
  check(problems.length === 0, `no CSP violation or page error: ${problems.join('; ')}`);
}

main().then(
  () => {
    console.log(`ui: ${passed} passed, 0 failed`);
    process.exit(0);
  },
  (err) => {
    const text = err && err.stack ? err.stack : String(err);
    console.error(text);
    console.log(`ERROR ${text.split('\n').slice(0, 6).join(' | ')}`);
    console.log(`ui: ${passed} passed, 1 failed`);
    process.exit(1);
  },
);

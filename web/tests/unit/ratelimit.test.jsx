import { afterEach, describe, expect, it, vi } from 'vitest';
import { render } from 'preact';
import { CAPS_FORM_FIELDS, capsFormFrom, emptyCapsForm, exactAmount, hasCaps, rateLimitFromForm } from '../../src/lib/ratelimit.js';
import { fieldForError } from '../../src/lib/fields.js';
import { ruleSpecFromForm } from '../../src/lib/format.js';
import { CapsList, RateLimitCard, RateLimitFields, describeCaps } from '../../src/caps.jsx';
import { CapsDialog, PushDialog } from '../../src/pages/rules.jsx';

const PUSH_BASE = { listen_port: '8080', protocol: 'tcp', targets: [{ address: 'a:1', priority: '', proxy: '' }], name: '', health_check_interval_secs: '' };

/** A caps form with `values` (`{key: [amount, unit]}`) filled in. */
function capsWith(values) {
  const form = emptyCapsForm();
  for (const [key, [amount, unit]] of Object.entries(values)) form[key] = { amount, unit: unit ?? form[key].unit };
  return form;
}

describe('the rate_limit body of a caps form', () => {
  it('sends only the caps filled in, byte amounts scaled by their unit', () => {
    const form = capsWith({
      bandwidth_in_bps: ['1.5', 'MiB'],
      bandwidth_out_burst_bytes: ['64', 'KiB'],
      new_connections_per_sec: [' 10 '],
      concurrent_connections: ['2'],
    });
    expect(rateLimitFromForm(form)).toEqual({
      bandwidth_in_bps: 1572864,
      bandwidth_out_burst_bytes: 65536,
      new_connections_per_sec: 10,
      concurrent_connections: 2,
    });
  });

  it('is empty when nothing is filled in, whatever the units say', () => {
    const form = emptyCapsForm();
    form.bandwidth_in_bps.unit = 'GiB';
    expect(rateLimitFromForm(form)).toEqual({});
    expect(hasCaps(rateLimitFromForm(form))).toBe(false);
  });

  it('passes zero and text on as they are, for the API to refuse with its own code', () => {
    const form = capsWith({ concurrent_connections: ['0'], bandwidth_in_bps: ['fast', 'MiB'] });
    expect(rateLimitFromForm(form)).toEqual({ concurrent_connections: 0, bandwidth_in_bps: 'fast' });
  });

  it('reads the API object back exactly, leaving default bursts empty', () => {
    expect(exactAmount(10_000_000)).toEqual({ amount: '10000000', unit: 'B' });
    expect(exactAmount(3 * 1024 ** 2)).toEqual({ amount: '3', unit: 'MiB' });
    const stored = {
      bandwidth_in_bps: 1024 ** 2, bandwidth_in_burst_bytes: 1024 ** 2,
      bandwidth_out_bps: 1000, bandwidth_out_burst_bytes: 65536,
      new_connections_per_sec: 10, new_connections_burst: 30,
      concurrent_connections: 5,
    };
    const form = capsFormFrom(stored);
    expect(form.bandwidth_in_bps).toEqual({ amount: '1', unit: 'MiB' });
    expect(form.bandwidth_in_burst_bytes.amount).toBe('');
    expect(form.bandwidth_out_burst_bytes.amount).toBe('');
    expect(form.new_connections_burst.amount).toBe('30');
    // Saving unchanged keeps every cap (the server fills the same default bursts back in).
    const { bandwidth_in_burst_bytes, bandwidth_out_burst_bytes, ...sent } = stored;
    expect(rateLimitFromForm(form)).toEqual(sent);
    expect(capsFormFrom(undefined)).toEqual(emptyCapsForm());
  });
});

describe('the push body', () => {
  it('leaves rate_limit out when no cap is filled in', () => {
    expect(ruleSpecFromForm({ ...PUSH_BASE, caps: emptyCapsForm() })).toEqual({ listen_port: 8080, protocol: 'tcp', target: 'a:1' });
    expect('rate_limit' in ruleSpecFromForm(PUSH_BASE)).toBe(false);
  });

  it('sends the caps filled in as rule.rate_limit', () => {
    const spec = ruleSpecFromForm({ ...PUSH_BASE, caps: capsWith({ concurrent_connections: ['1'] }) });
    expect(spec.rate_limit).toEqual({ concurrent_connections: 1 });
  });
});

describe('rate-limit errors and their fields', () => {
  const PUSH = ['client', 'listen_port', 'protocol', 'targets', 'name', 'health_check_interval_secs', 'sni_pattern', ...CAPS_FORM_FIELDS];
  const field = (code, message, fields = PUSH) => fieldForError({ code, message }, fields);

  it('puts a cap error under the cap its message names first', () => {
    expect(field('validation.zero_cap', 'concurrent_connections must be at least 1; omit it for no cap')).toBe('concurrent_connections');
    expect(field('validation.out_of_range', 'bandwidth_out_bps must be at most 1000000000000, got 2000000000000')).toBe('bandwidth_out_bps');
    expect(field('validation.burst_without_rate', 'new_connections_burst is set but new_connections_per_sec is not')).toBe('new_connections_burst');
    expect(field('validation.burst_out_of_range', 'bandwidth_in_burst_bytes must be 65536-60000 for bandwidth_in_bps = 1000, got 1')).toBe('bandwidth_in_burst_bytes');
  });

  it('reads the field at the end of a request path, not its parents', () => {
    const message = 'Failed to deserialize the JSON body into the target type: rule.rate_limit.bandwidth_in_bps: invalid type: string "fast", expected u64 at line 1 column 60';
    expect(field('invalid_request', message)).toBe('bandwidth_in_bps');
    expect(field('invalid_request', 'rule.rate_limit: unknown field `bandwidth_bps`')).toBe('rate_limit');
  });

  it('puts errors about the caps as a whole under the fieldset, or above a form without caps', () => {
    expect(field('validation.empty_envelope', 'an owner envelope needs at least one cap', ['user', 'client', ...CAPS_FORM_FIELDS])).toBe('rate_limit');
    expect(field('rate_limit_unsupported_by_client', 'client edge-01 did not announce rate-limit support')).toBe('rate_limit');
    expect(field('rate_limit_unsupported_by_client', 'old client', ['listen_port'])).toBeNull();
  });
});

describe('describeCaps', () => {
  it('says each cap in words, with bytes per second', () => {
    expect(describeCaps({})).toEqual([]);
    expect(describeCaps(null)).toEqual([]);
    expect(describeCaps({ bandwidth_in_bps: 1048576, bandwidth_in_burst_bytes: 2097152, new_connections_per_sec: 1, new_connections_burst: 1, concurrent_connections: 5 })).toEqual([
      'Inbound 1.00 MiB/s (burst 2.00 MiB)',
      '1 new connection a second (burst 1)',
      '5 open connections at most',
    ]);
  });
});

let root;
function mount(vnode) {
  root = document.createElement('div');
  document.body.appendChild(root);
  render(vnode, root);
  return root;
}
afterEach(() => {
  if (root) {
    render(null, root);
    root.remove();
    root = null;
  }
  vi.unstubAllGlobals();
});

/** Types `value` into `input` the way the browser reports it to Preact, then lets it render. */
async function type(input, value) {
  input.value = value;
  input.dispatchEvent(new Event('input', { bubbles: true }));
  await new Promise((resolve) => setTimeout(resolve, 0));
}

/** Lets Preact render and run its effects (which wait for the next frame, or at most 100 ms). */
const settle = () => new Promise((resolve) => setTimeout(resolve, 120));

describe('RateLimitFields', () => {
  it('labels every cap, says bandwidth is bytes, and shows a cap error under its input', () => {
    const error = { code: 'validation.zero_cap', message: 'concurrent_connections must be at least 1; omit it for no cap' };
    const el = mount(<RateLimitFields idPrefix="caps" value={emptyCapsForm()} onChange={() => {}} formError={error} fields={CAPS_FORM_FIELDS} />);
    expect(el.querySelector('label[for="f-caps-bandwidth_in_bps"]').textContent).toBe('Inbound bandwidth (bytes/s)');
    expect(el.querySelector('.hint').textContent).toContain('bytes per second, not bits');
    expect([...el.querySelectorAll('select[aria-label="Inbound bandwidth (bytes/s): unit"] option')].map((o) => o.textContent)).toEqual(['B/s', 'KiB/s', 'MiB/s', 'GiB/s']);
    const input = el.querySelector('#f-caps-concurrent_connections');
    expect(input.getAttribute('aria-invalid')).toBe('true');
    expect(el.querySelector('#f-caps-concurrent_connections-error').textContent).toBe('validation.zero_cap concurrent_connections must be at least 1; omit it for no cap');
    expect(el.querySelector('#f-caps-bandwidth_in_bps').getAttribute('aria-invalid')).toBeNull();
    expect(el.querySelector('#f-caps-rate_limit-error')).toBeNull();
  });

  it('shows an error about the caps as a whole under the fieldset', () => {
    const error = { code: 'validation.empty_envelope', message: 'an owner envelope needs at least one cap' };
    const el = mount(<RateLimitFields idPrefix="env" value={emptyCapsForm()} onChange={() => {}} formError={error} fields={CAPS_FORM_FIELDS} />);
    const fieldset = el.querySelector('fieldset');
    expect(fieldset.classList.contains('field-invalid')).toBe(true);
    expect(fieldset.getAttribute('aria-describedby')).toBe('f-env-rate_limit-hint f-env-rate_limit-error');
    expect(el.querySelector('#f-env-rate_limit-error').textContent).toContain('validation.empty_envelope');
  });

  it('reports typed amounts and picked units', async () => {
    let value = emptyCapsForm();
    const el = mount(<RateLimitFields value={value} onChange={(v) => { value = v; }} fields={CAPS_FORM_FIELDS} />);
    await type(el.querySelector('#f-bandwidth_out_bps'), '2');
    expect(value.bandwidth_out_bps).toEqual({ amount: '2', unit: 'MiB' });
    const unit = el.querySelector('select[aria-label="Outbound bandwidth (bytes/s): unit"]');
    unit.value = 'KiB';
    unit.dispatchEvent(new Event('change', { bubbles: true }));
    expect(value.bandwidth_out_bps.unit).toBe('KiB');
  });
});

describe('CapsList and RateLimitCard', () => {
  it('lists caps, or says none', () => {
    expect(mount(<CapsList limits={{}} />).textContent).toBe('none');
    render(null, root);
    root.remove();
    expect(mount(<CapsList limits={{ concurrent_connections: 1 }} />).querySelectorAll('li').length).toBe(1);
  });

  it('shows the three rate-limit counters, zero when a server leaves them out', () => {
    const el = mount(<RateLimitCard totals={{ rate_limit_rejected: 3, rate_limit_throttled: 1, rate_limit_dropped: 12 }} />);
    expect(el.querySelector('[data-testid="rate-limit-rejected"]').textContent).toBe('3');
    expect(el.querySelector('[data-testid="rate-limit-throttled"]').textContent).toBe('1 wait');
    expect(el.querySelector('[data-testid="rate-limit-dropped"]').textContent).toBe('12 datagrams');
    render(null, root);
    root.remove();
    expect(mount(<RateLimitCard totals={{}} />).querySelector('[data-testid="rate-limit-rejected"]').textContent).toBe('0');
  });
});

/** Stubs fetch with `answer(method, url, body)`; returns the calls made. */
function stubFetch(answer) {
  const calls = [];
  vi.stubGlobal('fetch', async (url, init) => {
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    calls.push({ url, method: init.method, body, headers: init.headers });
    const [status, json] = answer(init.method, url, body);
    return new Response(JSON.stringify(json), { status, headers: { 'Content-Type': 'application/json' } });
  });
  return calls;
}

const CLIENTS = [{ id: 'cl_1', name: 'edge-01', status: 'enrolled', connected: true }];

describe('PushDialog', () => {
  async function fillBasics(el) {
    await type(el.querySelector('#f-listen_port'), '8080');
    await type(el.querySelector('input[name="target-0"]'), '127.0.0.1:9000');
  }

  it('leaves the caps out of the body when none is filled in', async () => {
    const calls = stubFetch(() => [201, { id: 7 }]);
    const pushed = [];
    const el = mount(<PushDialog open clients={CLIENTS} onClose={() => {}} onPushed={(r) => pushed.push(r)} />);
    await settle();
    await fillBasics(el);
    el.querySelector('button.disclosure').click();
    await settle();
    expect(el.querySelector('#f-concurrent_connections')).not.toBeNull();
    expect(el.querySelector('button.disclosure').getAttribute('aria-controls')).toBe('f-rate_limit');
    el.querySelector('form').dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    await vi.waitFor(() => expect(pushed.length).toBe(1));
    expect(calls[0].body).toEqual({ client: 'edge-01', rule: { listen_port: 8080, protocol: 'tcp', target: '127.0.0.1:9000' } });
  });

  it("sends the caps filled in and shows the API's refusal under the cap", async () => {
    const calls = stubFetch((method, url, body) =>
      body.rule.rate_limit.concurrent_connections === 0
        ? [400, { error: { code: 'validation.zero_cap', message: 'concurrent_connections must be at least 1; omit it for no cap' } }]
        : [201, { id: 8 }]);
    const el = mount(<PushDialog open clients={CLIENTS} onClose={() => {}} onPushed={() => {}} />);
    await settle();
    await fillBasics(el);
    expect(el.querySelector('button.disclosure').getAttribute('aria-expanded')).toBe('false');
    el.querySelector('button.disclosure').click();
    await settle();
    await type(el.querySelector('#f-concurrent_connections'), '0');
    await type(el.querySelector('#f-bandwidth_in_bps'), '1');
    await settle();
    expect(el.querySelector('button.disclosure').textContent).toContain('2 set');
    el.querySelector('form').dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    await vi.waitFor(() => expect(el.querySelector('#f-concurrent_connections-error')).not.toBeNull());
    expect(calls[0].body.rule.rate_limit).toEqual({ concurrent_connections: 0, bandwidth_in_bps: 1048576 });
    expect(el.querySelector('#f-concurrent_connections-error').textContent).toContain('validation.zero_cap');
    expect(el.querySelector('[role="alert"]')).toBeNull();
  });
});

describe('CapsDialog', () => {
  const RULE = { id: 5, client_name: 'edge-01', spec: { name: 'web', rate_limit: { concurrent_connections: 2 } } };

  it('PATCHes the caps as a whole, starting from the rule', async () => {
    const calls = stubFetch(() => [200, { ...RULE, spec: { ...RULE.spec, rate_limit: { concurrent_connections: 4 } } }]);
    const saved = [];
    const el = mount(<CapsDialog rule={RULE} open onClose={() => {}} onSaved={(r) => saved.push(r)} />);
    await settle();
    const input = el.querySelector('#f-caps-concurrent_connections');
    expect(input.value).toBe('2');
    await type(input, '4');
    await settle();
    el.querySelector('form').dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    await vi.waitFor(() => expect(saved.length).toBe(1));
    expect(calls[0]).toMatchObject({ url: '/v1/rules/5', method: 'PATCH', body: { rate_limit: { concurrent_connections: 4 } } });
  });

  it('lifts every cap with an empty object when the fields are cleared', async () => {
    const calls = stubFetch(() => [200, { ...RULE, spec: { name: 'web' } }]);
    const el = mount(<CapsDialog rule={RULE} open onClose={() => {}} onSaved={() => {}} />);
    await settle();
    await type(el.querySelector('#f-caps-concurrent_connections'), '');
    await settle();
    el.querySelector('form').dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    await vi.waitFor(() => expect(calls.length).toBe(1));
    expect(calls[0].body).toEqual({ rate_limit: {} });
  });
});

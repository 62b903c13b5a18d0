import { afterEach, describe, expect, it } from 'vitest';
import { render } from 'preact';
import { ErrorBanner, Field, FormError } from '../../src/components.jsx';

const FIELDS = ['listen_port', 'targets'];
let root;

function mount(vnode) {
  root = document.createElement('div');
  document.body.appendChild(root);
  render(vnode, root);
  return root;
}

afterEach(() => {
  render(null, root);
  root.remove();
});

describe('Field and FormError', () => {
  it("shows an error on the field it belongs to, with the API's code, and marks the input invalid", () => {
    const error = { code: 'port_in_use', message: 'port 8080 is taken' };
    const el = mount(
      <form>
        <FormError error={error} fields={FIELDS} />
        <Field label="Listen port" name="listen_port" formError={error} fields={FIELDS} value="" />
        <Field label="Name" name="name" formError={error} fields={FIELDS} value="" />
      </form>,
    );
    const input = el.querySelector('#f-listen_port');
    expect(input.getAttribute('aria-invalid')).toBe('true');
    expect(input.getAttribute('aria-describedby')).toBe('f-listen_port-error');
    expect(el.querySelector('#f-listen_port-error').textContent).toBe('port_in_use port 8080 is taken');
    expect(el.querySelector('#f-name').getAttribute('aria-invalid')).toBeNull();
    expect(el.querySelector('[role="alert"]')).toBeNull();
  });

  it('shows an error no field claims above the form', () => {
    const error = { code: 'rate_limited', message: 'too many attempts' };
    const el = mount(
      <form>
        <FormError error={error} fields={FIELDS} />
        <Field label="Listen port" name="listen_port" formError={error} fields={FIELDS} value="" />
      </form>,
    );
    expect(el.querySelector('[role="alert"]').textContent).toBe('rate_limited too many attempts');
    expect(el.querySelector('#f-listen_port').getAttribute('aria-invalid')).toBeNull();
  });

  it('renders nothing without an error', () => {
    const el = mount(<ErrorBanner error={null} />);
    expect(el.innerHTML).toBe('');
  });
});

// The pages before the console: onboarding (only while no superadmin exists), login (with the
// session-expired and signed-out notices) and the forced password change.
import { useState } from 'preact/hooks';
import { api } from '../session.js';
import { Field, FormError, Notice, useSubmit } from '../components.jsx';

function AuthCard({ title, children }) {
  document.title = `${title} · Portunus`;
  return (
    <main class="auth" id="main">
      <div class="auth-card">
        <p class="brand-big" aria-hidden="true">
          Portunus
        </p>
        <h1>{title}</h1>
        {children}
      </div>
    </main>
  );
}

const ONBOARD_FIELDS = ['setup_token', 'user_id', 'password'];

/** Creates the first superadmin with the setup token `serve` printed. */
export function Onboarding({ expiresAt, onDone }) {
  const [form, setForm] = useState({ setup_token: '', user_id: 'admin', password: '' });
  const { error, busy, run } = useSubmit();
  const set = (key) => (e) => setForm({ ...form, [key]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      await api.post('/v1/auth/onboarding', form);
      onDone(form.user_id);
    });
  };
  return (
    <AuthCard title="Set up Portunus">
      <p>
        No superadmin exists yet. Paste the setup token that <code>portunus-server serve</code> printed on its
        standard error{expiresAt ? ` (valid until ${new Date(expiresAt).toLocaleString()})` : ''}, and choose the
        first superadmin's name and password.
      </p>
      <form onSubmit={submit}>
        <FormError error={error} fields={ONBOARD_FIELDS} />
        <Field label="Setup token" name="setup_token" formError={error} fields={ONBOARD_FIELDS} value={form.setup_token} onInput={set('setup_token')} autocomplete="off" required />
        <Field label="Superadmin user id" name="user_id" formError={error} fields={ONBOARD_FIELDS} value={form.user_id} onInput={set('user_id')} autocomplete="username" required />
        <Field label="Password" name="password" type="password" formError={error} fields={ONBOARD_FIELDS} value={form.password} onInput={set('password')} autocomplete="new-password" required hint="At least 12 characters." />
        <button type="submit" class="primary" disabled={busy}>
          Create superadmin
        </button>
      </form>
    </AuthCard>
  );
}

const LOGIN_FIELDS = ['user_id', 'password'];

/** Signs in; `notice` says why the operator is here (session expired, signed out, …). */
export function Login({ notice, initialUser = '', onLogin }) {
  const [form, setForm] = useState({ user_id: initialUser, password: '' });
  const { error, busy, run } = useSubmit();
  const set = (key) => (e) => setForm({ ...form, [key]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const session = await api.post('/v1/auth/login', form);
      api.setCsrf(session.csrf_token);
      onLogin(session);
    });
  };
  return (
    <AuthCard title="Sign in">
      <Notice kind="warn">{notice}</Notice>
      <form onSubmit={submit}>
        <FormError error={error} fields={LOGIN_FIELDS} />
        <Field label="User id" name="user_id" formError={error} fields={LOGIN_FIELDS} value={form.user_id} onInput={set('user_id')} autocomplete="username" required />
        <Field label="Password" name="password" type="password" formError={error} fields={LOGIN_FIELDS} value={form.password} onInput={set('password')} autocomplete="current-password" required />
        <button type="submit" class="primary" disabled={busy}>
          Sign in
        </button>
      </form>
    </AuthCard>
  );
}

const PASSWORD_FIELDS = ['current_password', 'new_password'];

/** The password change form, used forced (after login) and from Settings. */
export function PasswordForm({ onDone }) {
  const [form, setForm] = useState({ current_password: '', new_password: '', confirm: '' });
  const { error, busy, run, setError } = useSubmit();
  const [done, setDone] = useState(false);
  const set = (key) => (e) => setForm({ ...form, [key]: e.currentTarget.value });
  const submit = (e) => {
    e.preventDefault();
    if (form.new_password !== form.confirm) {
      setError({ code: 'mismatch', message: 'the two new passwords differ' });
      return;
    }
    run(async () => {
      await api.put('/v1/auth/password', { current_password: form.current_password, new_password: form.new_password });
      setDone(true);
      setForm({ current_password: '', new_password: '', confirm: '' });
      if (onDone) onDone();
    });
  };
  return (
    <form onSubmit={submit}>
      <FormError error={error} fields={PASSWORD_FIELDS} />
      {done && <Notice kind="good">Password changed.</Notice>}
      <Field label="Current password" name="current_password" type="password" formError={error} fields={PASSWORD_FIELDS} value={form.current_password} onInput={set('current_password')} autocomplete="current-password" required />
      <Field label="New password" name="new_password" type="password" formError={error} fields={PASSWORD_FIELDS} value={form.new_password} onInput={set('new_password')} autocomplete="new-password" required />
      <Field label="New password, again" name="confirm" type="password" value={form.confirm} onInput={set('confirm')} autocomplete="new-password" required />
      <button type="submit" class="primary" disabled={busy}>
        Change password
      </button>
    </form>
  );
}

/** The forced password change after signing in with a temporary password. */
export function ForcedPasswordChange({ user, onDone }) {
  return (
    <AuthCard title="Choose a new password">
      <p>
        The password of <strong>{user.id}</strong> was set by an administrator and must be changed before anything
        else.
      </p>
      <PasswordForm onDone={onDone} />
    </AuthCard>
  );
}

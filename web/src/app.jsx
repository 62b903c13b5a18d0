// The shell: decides which screen the visitor sees (onboarding, login, forced password
// change, or the console), keeps the signed-in user in memory, and lays out the navigation,
// theme toggle and command palette around the page of the current route.
import { useEffect, useState } from 'preact/hooks';
import { api, onSessionLost } from './session.js';
import { Link, match, navigate, useLocation } from './lib/router.jsx';
import { ForcedPasswordChange, Login, Onboarding } from './pages/auth.jsx';
import { Dashboard } from './pages/dashboard.jsx';
import { Clients } from './pages/clients.jsx';
import { RuleDetail, Rules } from './pages/rules.jsx';
import { Grants, Tokens, Users } from './pages/accounts.jsx';
import { Quotas } from './pages/quotas.jsx';
import { Limits } from './pages/limits.jsx';
import { Audit, Settings } from './pages/admin.jsx';
import { Palette } from './palette.jsx';
import { ErrorBanner } from './components.jsx';
import { applyTheme, effectiveTheme } from './theme.js';

/** The navigation, by role. */
function pagesFor(user) {
  const admin = user.role === 'superadmin';
  return [
    { href: '/', label: 'Dashboard' },
    { href: '/clients', label: 'Clients' },
    { href: '/rules', label: 'Rules' },
    { href: '/grants', label: 'Grants' },
    { href: '/quotas', label: 'Quotas' },
    { href: '/limits', label: 'Rate limits' },
    admin && { href: '/users', label: 'Users' },
    { href: '/tokens', label: 'API tokens' },
    admin && { href: '/audit', label: 'Audit log' },
    { href: '/settings', label: 'Settings' },
  ].filter(Boolean);
}

function route(path, user) {
  const admin = user.role === 'superadmin';
  let params;
  if (match('/', path)) return <Dashboard user={user} />;
  if (match('/clients', path)) return <Clients user={user} path={path} />;
  if (match('/rules', path)) return <Rules user={user} path={path} />;
  if ((params = match('/rules/:id', path))) return <RuleDetail id={params.id} />;
  if (match('/grants', path)) return <Grants user={user} path={path} />;
  if (match('/quotas', path)) return <Quotas user={user} />;
  if (match('/limits', path)) return <Limits user={user} />;
  if (match('/tokens', path)) return <Tokens owner={user.id} />;
  if (admin && match('/users', path)) return <Users user={user} />;
  if ((params = match('/users/:id/tokens', path))) return <Tokens owner={params.id} />;
  if (admin && match('/audit', path)) return <Audit />;
  if (match('/settings', path)) return <Settings user={user} />;
  return (
    <>
      <h1>Not found</h1>
      <p>No page at <code>{path}</code>. <Link href="/">Back to the dashboard</Link>.</p>
    </>
  );
}

function Console({ user, onLogout, path }) {
  const [paletteOpen, setPaletteOpen] = useState(false);
  const [menuOpen, setMenuOpen] = useState(false);
  const [theme, setTheme] = useState(effectiveTheme());
  const [logoutError, setLogoutError] = useState(null);
  const pages = pagesFor(user);
  useEffect(() => {
    const onKey = (e) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
      if ((e.key === 'k' && (e.ctrlKey || e.metaKey)) || (e.key === '/' && !typing)) {
        e.preventDefault();
        setPaletteOpen(true);
      }
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);
  const toggleTheme = () => {
    const next = theme === 'dark' ? 'light' : 'dark';
    applyTheme(next);
    try {
      localStorage.setItem('portunus.theme', next);
    } catch {
      /* a display preference only */
    }
    setTheme(next);
  };
  const logout = async () => {
    try {
      await api.post('/v1/auth/logout');
    } catch (err) {
      if (err.status !== 401) {
        setLogoutError(err);
        return;
      }
    }
    onLogout();
  };
  const current = path.split('?')[0];
  return (
    <div class="shell">
      <a class="skip" href="#main">Skip to content</a>
      <header class="topbar">
        <button type="button" class="ghost menu-button" aria-expanded={menuOpen} aria-controls="nav" onClick={() => setMenuOpen(!menuOpen)}>
          Menu
        </button>
        <Link href="/" class="brand">Portunus</Link>
        <div class="topbar-actions">
          <button type="button" class="ghost" onClick={() => setPaletteOpen(true)} aria-keyshortcuts="Control+K" title="Jump to… (Ctrl+K)">
            Jump to… <kbd>Ctrl K</kbd>
          </button>
          <button type="button" class="ghost" onClick={toggleTheme} aria-label={`Switch to ${theme === 'dark' ? 'light' : 'dark'} theme`}>
            {theme === 'dark' ? '☀' : '☾'}
          </button>
          <span class="whoami" title={user.role}>{user.id}</span>
          <button type="button" onClick={logout}>Sign out</button>
        </div>
      </header>
      <nav id="nav" class={`sidenav${menuOpen ? ' open' : ''}`} aria-label="Main">
        <ul>
          {pages.map((p) => {
            const here = p.href === '/' ? current === '/' : current === p.href || current.startsWith(`${p.href}/`);
            return (
              <li key={p.href}>
                <Link href={p.href} aria-current={here ? 'page' : undefined} onNavigate={() => setMenuOpen(false)}>{p.label}</Link>
              </li>
            );
          })}
        </ul>
      </nav>
      <main id="main" class="content" tabIndex={-1}>
        <ErrorBanner error={logoutError} />
        {route(path, user)}
      </main>
      <Palette open={paletteOpen} setOpen={setPaletteOpen} pages={pages} admin={user.role === 'superadmin'} />
    </div>
  );
}

/** The whole application. */
export function App() {
  const path = useLocation();
  const [state, setState] = useState({ screen: 'loading' });
  useEffect(() => {
    onSessionLost(() => setState((s) => (s.screen === 'console' || s.screen === 'password' ? { screen: 'login', notice: 'Your session expired. Sign in again to continue.', user: s.user?.id } : s)));
    (async () => {
      try {
        const onboarding = await api.get('/v1/auth/onboarding');
        if (onboarding.required) {
          setState({ screen: 'onboarding', expiresAt: onboarding.setup_token_expires_at });
          return;
        }
        setState({ screen: 'login' });
      } catch (error) {
        setState({ screen: 'login', error });
      }
    })();
  }, []);
  const signedIn = (session) => {
    const user = session.user;
    setState({ screen: user.must_change_password ? 'password' : 'console', user });
  };
  switch (state.screen) {
    case 'loading':
      return <main id="main" class="auth"><p>Loading…</p></main>;
    case 'onboarding':
      return <Onboarding expiresAt={state.expiresAt} onDone={(id) => setState({ screen: 'login', notice: 'Superadmin created. Sign in with the new password.', user: id })} />;
    case 'login':
      return (
        <>
          {state.error && <ErrorBanner error={state.error} />}
          <Login notice={state.notice} initialUser={state.user || ''} onLogin={signedIn} />
        </>
      );
    case 'password':
      return <ForcedPasswordChange user={state.user} onDone={() => setState({ screen: 'console', user: { ...state.user, must_change_password: false } })} />;
    default:
      return (
        <Console
          user={state.user}
          path={path}
          onLogout={() => {
            api.setCsrf(null);
            navigate('/', { replace: true });
            setState({ screen: 'login', notice: 'You signed out.' });
          }}
        />
      );
  }
}

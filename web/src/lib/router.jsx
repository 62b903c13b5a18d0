// A tiny client-side router over the History API: the server answers every non-API path
// with index.html, so any URL the UI shows can be reloaded or shared.
import { useEffect, useState } from 'preact/hooks';

const listeners = new Set();

/** Goes to `path` (and notifies every `useLocation`). */
export function navigate(path, { replace = false } = {}) {
  if (path === currentPath()) return;
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  listeners.forEach((fn) => fn(currentPath()));
}

const currentPath = () => location.pathname + location.search;

/** The current path and query, re-rendering on every change. */
export function useLocation() {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const update = () => setPath(currentPath());
    listeners.add(setPath);
    addEventListener('popstate', update);
    return () => {
      listeners.delete(setPath);
      removeEventListener('popstate', update);
    };
  }, []);
  return path;
}

/**
 * The params of `pattern` (`/rules/:id`) in `path`, or null when it does not match. The
 * query string is ignored; params are percent-decoded.
 */
export function match(pattern, path) {
  const parts = path.split('?')[0].split('/').filter(Boolean);
  const want = pattern.split('/').filter(Boolean);
  if (parts.length !== want.length) return null;
  const params = {};
  for (let i = 0; i < want.length; i += 1) {
    if (want[i].startsWith(':')) {
      try {
        params[want[i].slice(1)] = decodeURIComponent(parts[i]);
      } catch {
        return null;
      }
    } else if (want[i] !== parts[i]) return null;
  }
  return params;
}

/** A link that navigates without reloading the page. */
export function Link({ href, children, ...rest }) {
  const onClick = (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    navigate(href);
    if (rest.onNavigate) rest.onNavigate();
  };
  const { onNavigate, ...attrs } = rest;
  return (
    <a href={href} onClick={onClick} {...attrs}>
      {children}
    </a>
  );
}

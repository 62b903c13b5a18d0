// Light and dark themes. The choice is a display preference, not a credential, so it is the
// one thing the UI keeps in localStorage; `system` follows the operating system.
import { useState } from 'preact/hooks';

/** The theme choices. */
export const THEMES = ['system', 'light', 'dark'];

const KEY = 'portunus.theme';

function stored() {
  try {
    const value = localStorage.getItem(KEY);
    return THEMES.includes(value) ? value : 'system';
  } catch {
    return 'system';
  }
}

/** Applies `theme` to the document. */
export function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === 'system') delete root.dataset.theme;
  else root.dataset.theme = theme;
}

/** Applies the stored theme; call once at start. */
export const initTheme = () => applyTheme(stored());

/** The theme and a setter that applies and remembers it. */
export function useTheme() {
  const [theme, setTheme] = useState(stored());
  const set = (value) => {
    setTheme(value);
    applyTheme(value);
    try {
      localStorage.setItem(KEY, value);
    } catch {
      /* storage may be disabled; the theme still applies to this page */
    }
  };
  return [theme, set];
}

/** The theme shown now ('light' or 'dark'), for the toggle. */
export function effectiveTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen;
  return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

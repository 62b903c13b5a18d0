// Shared building blocks: error display (always the API's code and message), form fields with
// their inline error, dialogs on the native <dialog> element, badges, tables and the hooks
// that load data or poll it.
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { fieldForError } from './lib/fields.js';

/** An API error, shown as its code and message. */
export function ErrorBanner({ error, id }) {
  if (!error) return null;
  return (
    <div class="error-banner" role="alert" id={id}>
      <code class="error-code">{error.code || 'error'}</code> <span>{error.message}</span>
    </div>
  );
}

/** A success or information line. */
export function Notice({ children, kind = 'info' }) {
  if (!children) return null;
  return (
    <div class={`notice notice-${kind}`} role="status">
      {children}
    </div>
  );
}

/**
 * A labelled input with its inline error: when `formError` belongs to `name` (see
 * `fieldForError`), it shows under the input and the input is marked invalid. The input's id
 * is `f-<name>`, or `f-<idPrefix>-<name>` for a second form with the same field on a page.
 */
export function Field({ label, name, formError, fields, hint, idPrefix, children, ...input }) {
  const id = idPrefix ? `f-${idPrefix}-${name}` : `f-${name}`;
  const mine = formError && fieldForError(formError, fields) === name;
  const describedBy = [hint ? `${id}-hint` : null, mine ? `${id}-error` : null].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field${mine ? ' field-invalid' : ''}`}>
      <label for={id}>{label}</label>
      {children ? (
        children({ id, 'aria-invalid': mine ? 'true' : undefined, 'aria-describedby': describedBy })
      ) : (
        <input id={id} name={name} aria-invalid={mine ? 'true' : undefined} aria-describedby={describedBy} {...input} />
      )}
      {hint && (
        <small class="hint" id={`${id}-hint`}>
          {hint}
        </small>
      )}
      {mine && (
        <small class="field-error" id={`${id}-error`}>
          <code>{formError.code}</code> {formError.message}
        </small>
      )}
    </div>
  );
}

/** The form-level part of an error: shown only when no field of the form claims it. */
export function FormError({ error, fields }) {
  if (!error || fieldForError(error, fields)) return null;
  return <ErrorBanner error={error} />;
}

/** A modal dialog (native <dialog>: focus trap and Escape come with it). */
export function Dialog({ open, title, onClose, children }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog ref={ref} onClose={onClose} aria-labelledby={`${title}-title`.replace(/\s+/g, '-')}>
      {open && (
        <div class="dialog-body">
          <header class="dialog-head">
            <h2 id={`${title}-title`.replace(/\s+/g, '-')}>{title}</h2>
            <button type="button" class="ghost" onClick={onClose} aria-label="Close">
              ✕
            </button>
          </header>
          {children}
        </div>
      )}
    </dialog>
  );
}

/** A coloured label for a state. */
export function Badge({ kind, children }) {
  return <span class={`badge badge-${kind}`}>{children}</span>;
}

/** Colour of a rule, client or target state. */
export function stateKind(state) {
  switch (state) {
    case 'active':
    case 'healthy':
    case 'enrolled':
    case 'online':
    case 'success':
      return 'good';
    case 'failed':
    case 'revoked':
    case 'denied':
      return 'bad';
    case 'pending':
    case 'enrolling':
    case 'suspended':
      return 'warn';
    default:
      return 'muted';
  }
}

/** A table that scrolls sideways on narrow screens instead of overflowing the page. */
export function Table({ caption, children }) {
  return (
    <div class="table-wrap" role="region" aria-label={caption} tabIndex={0}>
      <table>
        <caption class="visually-hidden">{caption}</caption>
        {children}
      </table>
    </div>
  );
}

/** A copy-to-clipboard button for `text`. */
export function CopyButton({ text, label = 'Copy' }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone(true);
      setTimeout(() => setDone(false), 2000);
    } catch {
      setDone(false);
    }
  };
  return (
    <button type="button" onClick={copy}>
      {done ? 'Copied' : label}
    </button>
  );
}

/**
 * Loads `load()` now and whenever `deps` change (and, with `every` ms, again on that period);
 * returns `{data, error, loading, reload}`.
 */
export function useLoad(load, deps = [], every = 0) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const alive = useRef(true);
  const reload = useCallback(async () => {
    try {
      const data = await load();
      if (alive.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (alive.current) setState((s) => ({ ...s, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    alive.current = true;
    reload();
    const timer = every > 0 ? setInterval(reload, every) : null;
    return () => {
      alive.current = false;
      if (timer) clearInterval(timer);
    };
  }, [reload, every]);
  return { ...state, reload };
}

/** A form's submit state: `run(fn)` records the error of a failed call. */
export function useSubmit() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const run = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (err) {
      setError(err);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { error, busy, run, setError };
}

/** Page title and the heading every page starts with. */
export function PageHead({ title, children }) {
  useEffect(() => {
    document.title = `${title} · Portunus`;
  }, [title]);
  return (
    <div class="page-head">
      <h1>{title}</h1>
      <div class="page-actions">{children}</div>
    </div>
  );
}

/** Loading and empty states. */
export function Loading({ loading, error }) {
  if (error) return <ErrorBanner error={error} />;
  if (loading) return <p class="muted">Loading…</p>;
  return null;
}

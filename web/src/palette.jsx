// The command palette: Ctrl+K (or "/") opens it; type to jump to any page, client, rule or
// user; arrows move, Enter goes, Escape closes.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './session.js';
import { navigate } from './lib/router.jsx';
import { rank } from './lib/palette.js';
import { seg } from './lib/api.js';

async function gather(pages, admin) {
  const items = pages.map((p) => ({ label: `Go to ${p.label}`, href: p.href, kind: 'page' }));
  const [clients, rules, users] = await Promise.all([
    api.get('/v1/clients').catch(() => []),
    api.get('/v1/rules').catch(() => []),
    admin ? api.get('/v1/users').catch(() => []) : Promise.resolve([]),
  ]);
  for (const c of clients) items.push({ label: `Client ${c.name}`, href: `/clients?focus=${seg(c.name)}`, kind: 'client' });
  for (const r of rules) items.push({ label: `Rule #${r.id} ${r.spec.name || ''} ${r.client_name}:${r.spec.listen_port}`.replace(/\s+/g, ' '), href: `/rules/${r.id}`, kind: 'rule' });
  for (const u of users) items.push({ label: `User ${u.id}`, href: `/users/${seg(u.id)}/tokens`, kind: 'user' });
  return items;
}

/** The palette; `open`/`setOpen` come from the shell, which owns the shortcut. */
export function Palette({ open, setOpen, pages, admin }) {
  const [query, setQuery] = useState('');
  const [items, setItems] = useState([]);
  const [active, setActive] = useState(0);
  const dialog = useRef(null);
  const input = useRef(null);
  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (open) {
      setQuery('');
      setActive(0);
      if (!el.open) el.showModal();
      gather(pages, admin).then(setItems);
      setTimeout(() => input.current && input.current.focus(), 0);
    } else if (el.open) el.close();
  }, [open]);
  const shown = rank(items, query);
  const go = (item) => {
    setOpen(false);
    if (item) navigate(item.href);
  };
  const onKey = (e) => {
    if (e.key === 'ArrowDown') {
      e.preventDefault();
      setActive((a) => Math.min(a + 1, shown.length - 1));
    } else if (e.key === 'ArrowUp') {
      e.preventDefault();
      setActive((a) => Math.max(a - 1, 0));
    } else if (e.key === 'Enter') {
      e.preventDefault();
      go(shown[active]);
    }
  };
  return (
    <dialog ref={dialog} class="palette" onClose={() => setOpen(false)} aria-label="Command palette">
      {open && (
        <div>
          <input
            ref={input}
            type="text"
            role="combobox"
            aria-expanded="true"
            aria-controls="palette-list"
            aria-activedescendant={shown[active] ? `palette-${active}` : undefined}
            aria-label="Jump to a page, client, rule or user"
            placeholder="Jump to…"
            value={query}
            onInput={(e) => { setQuery(e.currentTarget.value); setActive(0); }}
            onKeyDown={onKey}
          />
          <ul id="palette-list" role="listbox" aria-label="Matches">
            {shown.map((item, idx) => (
              <li key={item.href + item.label} id={`palette-${idx}`} role="option" aria-selected={idx === active} class={idx === active ? 'active' : ''} onMouseDown={(e) => { e.preventDefault(); go(item); }}>
                <span class="palette-kind">{item.kind}</span> {item.label}
              </li>
            ))}
            {shown.length === 0 && <li class="muted" role="option" aria-selected="false" aria-disabled="true">No match</li>}
          </ul>
        </div>
      )}
    </dialog>
  );
}

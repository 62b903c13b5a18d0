// Ranking for the command palette: every query character must appear in order in the label
// (a subsequence), and matches that are contiguous or start words rank first.

/** The score of `label` for `query` (higher is better), or -1 when it does not match. */
export function score(label, query) {
  const text = label.toLowerCase();
  const q = query.trim().toLowerCase();
  if (!q) return 0;
  if (text.startsWith(q)) return 1000 - text.length;
  const at = text.indexOf(q);
  if (at >= 0) return 800 - at;
  let pos = 0;
  let total = 0;
  let previous = -2;
  for (const ch of q) {
    const found = text.indexOf(ch, pos);
    if (found < 0) return -1;
    if (found === previous + 1) total += 5;
    if (found === 0 || /[\s/:._-]/.test(text[found - 1])) total += 3;
    total += 1;
    previous = found;
    pos = found + 1;
  }
  return total;
}

/** `items` (`{label, …}`) matching `query`, best first, at most `limit`. */
export function rank(items, query, limit = 12) {
  return items
    .map((item, idx) => ({ item, idx, s: score(item.label, query) }))
    .filter((row) => row.s >= 0)
    .sort((a, b) => b.s - a.s || a.idx - b.idx)
    .slice(0, limit)
    .map((row) => row.item);
}

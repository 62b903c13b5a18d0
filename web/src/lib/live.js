// A rule's live stats over server-sent events (`GET /v1/rules/{id}/stats/stream`), with the
// way back to polling: the page polls when the browser has no EventSource, when the server
// refuses the stream (a 401 or 404 closes an EventSource for good, and the poll then shows
// the API's code and message), or when the stream never delivered an event after a few
// attempts. The stream sends `stats` events once a second and one `end` event when the rule
// is gone; it closes itself every few minutes and the EventSource reconnects.

/** `EventSource.CLOSED`. */
const CLOSED = 2;

/** Failed attempts without a single event before the page gives up on the stream. */
export const MAX_SILENT_ERRORS = 3;

function parse(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

/**
 * Opens the stream at `url`. Calls `onStats(stats)` per event, `onEnd(last)` once when the
 * rule is gone (`last` is the final stats or an `{error}` body), and `onFallback()` once when
 * the page should poll instead. Returns the function that closes the stream.
 */
export function openStatsStream(url, { onStats, onEnd, onFallback, EventSourceImpl = globalThis.EventSource }) {
  if (typeof EventSourceImpl !== 'function') {
    onFallback();
    return () => {};
  }
  let source;
  try {
    source = new EventSourceImpl(url);
  } catch {
    onFallback();
    return () => {};
  }
  let heard = false;
  let silentErrors = 0;
  let over = false;
  const finish = () => {
    over = true;
    source.close();
  };
  source.addEventListener('stats', (event) => {
    const stats = parse(event.data);
    if (!stats || over) return;
    heard = true;
    silentErrors = 0;
    onStats(stats);
  });
  source.addEventListener('end', (event) => {
    if (over) return;
    finish();
    onEnd(parse(event.data));
  });
  source.onerror = () => {
    if (over) return;
    if (!heard) silentErrors += 1;
    if (source.readyState === CLOSED || silentErrors >= MAX_SILENT_ERRORS) {
      finish();
      onFallback();
    }
  };
  return () => {
    if (!over) finish();
  };
}

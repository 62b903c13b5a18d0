// The one API client of the page and who is signed in. The CSRF token lives in the client's
// memory only: a reload forgets it, and the operator signs in again (nothing is kept in
// browser storage).
import { createApi } from './lib/api.js';

let lost = () => {};

/** The page's API client. */
export const api = createApi((...args) => window.fetch(...args), { onSessionLost: (err) => lost(err) });

/** Sets what happens when a call made with the session is refused with 401. */
export function onSessionLost(fn) {
  lost = fn;
}

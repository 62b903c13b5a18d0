// The only way the UI talks to the server: the public /v1 API, with the session cookie the
// browser keeps (HttpOnly, never readable here) and the CSRF token held in memory only.
// Every failure becomes an ApiError carrying the API's own code and message.

/** A failed API call: the HTTP status and the API's stable code and human message. */
export class ApiError extends Error {
  constructor(status, code, message, ruleId = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.ruleId = ruleId;
  }
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Routes whose 401 means "wrong password", not "your session ended". */
const PUBLIC_PATHS = ['/v1/auth/login', '/v1/auth/onboarding'];

/**
 * A client over `fetchImpl`. `onSessionLost(error)` is called when a call made with a session
 * is refused with 401, so the app can show the session-expired notice.
 */
export function createApi(fetchImpl, { onSessionLost = () => {} } = {}) {
  let csrfToken = null;

  async function call(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (WRITE_METHODS.has(method) && csrfToken) headers['X-CSRF-Token'] = csrfToken;
    let response;
    try {
      response = await fetchImpl(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (err) {
      throw new ApiError(0, 'network_error', `the server could not be reached (${err.message})`);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (response.ok) return parsed ?? text;
    const detail = parsed && parsed.error;
    const error = detail
      ? new ApiError(response.status, detail.code, detail.message, detail.rule_id ?? null)
      : new ApiError(response.status, `http_${response.status}`, text || response.statusText || 'request failed');
    if (response.status === 401 && !PUBLIC_PATHS.some((p) => path.startsWith(p))) {
      csrfToken = null;
      onSessionLost(error);
    }
    throw error;
  }

  return {
    get: (path) => call('GET', path),
    post: (path, body = {}) => call('POST', path, body),
    put: (path, body) => call('PUT', path, body),
    patch: (path, body) => call('PATCH', path, body),
    del: (path) => call('DELETE', path),
    /** Sets (or, with null, forgets) the CSRF token of the current session. */
    setCsrf(token) {
      csrfToken = token;
    },
    hasCsrf: () => csrfToken !== null,
  };
}

/** `path` with the non-empty entries of `params` as a query string. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** A path segment, percent-encoded. */
export const seg = (value) => encodeURIComponent(String(value));

// The only caller of fetch. Every request goes to /api/v1 with the session
// cookie; writes carry the session's CSRF token in X-CSRF-Token. Errors come
// back as ApiError with the server's own message; a 401 (the session ended)
// also calls the handler the app installs, which shows the login view.

let csrf = '';
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function setCsrf(token) { csrf = token || ''; }
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

function url(path, query) {
  let u = '/api/v1' + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    }
    const s = q.toString();
    if (s) u += '?' + s;
  }
  return u;
}

// One request. Resolves {data, headers, status}; `data` is parsed JSON, or
// the body's bytes (Uint8Array) when `bytes` is set. Rejects with ApiError.
export async function request(method, path, { query, body, bytes = false, quiet401 = false } = {}) {
  const headers = { Accept: bytes ? 'text/plain' : 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch (e) {
    throw new ApiError(0, 'cannot reach the server: ' + e.message, null);
  }
  if (res.ok && bytes) return { data: new Uint8Array(await res.arrayBuffer()), headers: res.headers, status: res.status };
  const raw = await res.text();
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    let parsed = null;
    try {
      parsed = JSON.parse(raw);
      if (parsed && typeof parsed.error === 'string') message = parsed.error;
    } catch (_) { /* not JSON: keep the status line */ }
    if (res.status === 401 && !quiet401) onUnauthorized();
    throw new ApiError(res.status, message, parsed);
  }
  return { data: raw === '' ? null : JSON.parse(raw), headers: res.headers, status: res.status };
}

export const get = async (path, query) => (await request('GET', path, { query })).data;
export const post = async (path, body, query) => (await request('POST', path, { body, query })).data;
export const put = async (path, body, query) => (await request('PUT', path, { body, query })).data;
export const del = async (path, query) => (await request('DELETE', path, { query })).data;

// Session endpoints (server/API.md, "Login").
export const session = async () => (await request('GET', '/session', { quiet401: true })).data;
export const login = async (body) => (await request('POST', '/login', { body, quiet401: true })).data;
export const logout = () => request('POST', '/logout', { body: {}, quiet401: true });

// A path segment or query value for a store, group, snapshot.
export const enc = encodeURIComponent;

// The URL of an archive's download (a plain link: the cookie authenticates it).
export function downloadUrl(store, snapshot, archive) {
  return url(`/datastores/${enc(store)}/download`, { snapshot, archive });
}

// Fetching from the agent's JSON API. Errors carry the API's own message ({"error": ...}).

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** Query string from an object; null/undefined values are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") continue;
    q.set(k, typeof v === "number" ? String(+v.toFixed(3)) : String(v));
  }
  return q.toString();
}

export function url(path, params = {}) {
  const q = query(params);
  return q ? `${path}?${q}` : path;
}

const TOKEN_KEY = "infersight-token";

/** Request headers, with the bearer token when the agent asked for one (kept for this tab only). */
function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

/** fetch that, on a 401, asks once for the agent's token (web.auth_token) and retries. */
async function authFetch(target, options = {}) {
  let resp = await fetch(target, { ...options, headers: headers(options.headers) });
  if (resp.status === 401) {
    const token = window.prompt("This agent needs its access token (web.auth_token):");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token.trim());
      resp = await fetch(target, { ...options, headers: headers(options.headers) });
    }
  }
  return resp;
}

/** GET JSON; ``signal`` aborts a request a newer one made obsolete. */
export async function getJson(path, params = {}, signal = undefined) {
  let resp;
  try {
    resp = await authFetch(url(path, params), { signal, headers: { Accept: "application/json" } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("the agent is not reachable", 0);
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${resp.status}`;
    throw new ApiError(message, resp.status);
  }
  return body;
}

/** GET a file and hand it to the browser as a download named ``filename``. */
export async function download(path, params, filename) {
  const resp = await authFetch(url(path, params));
  if (!resp.ok) throw new ApiError(`export failed: HTTP ${resp.status}`, resp.status);
  saveBlob(await resp.blob(), filename);
}

export function saveBlob(blob, filename) {
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

/** Runs at most one request at a time per slot: starting one aborts the previous. */
export class Latest {
  constructor() {
    this.controller = null;
  }

  next() {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    return this.controller.signal;
  }
}

// The worker's HTTP API as the console uses it: JSON in and out, the API token from the header
// field (localStorage) as 'Authorization: Bearer …', errors as ApiError with the API's message.

const TOKEN_KEY = 'flowlogs.apiToken';

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || '',
  set(value) {
    const trimmed = value.trim();
    if (trimmed) localStorage.setItem(TOKEN_KEY, trimmed);
    else localStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0: the worker could not be reached
  }
}

/** Query string of `params`, leaving out empty values. */
export function query(params = {}) {
  const kept = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && String(v).trim() !== '');
  return kept.length ? '?' + new URLSearchParams(kept.map(([k, v]) => [k, String(v).trim()])).toString() : '';
}

function refusal(status, data) {
  const detail = data && typeof data.error === 'string' ? ` (${data.error})` : '';
  if (status === 401 || status === 403) {
    return token.get()
      ? `API token invalid: the worker refused it; check the token in the header${detail}`
      : `API token required: paste it into the token field in the header${detail}`;
  }
  if (data && typeof data.error === 'string') return data.error;
  return `the worker answered ${status}`;
}

async function request(method, path, { params, body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const bearer = token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path + query(params), {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, `cannot reach the worker: ${error.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, refusal(response.status, data));
  return data;
}

export const api = {
  get: (path, params, signal) => request('GET', path, { params, signal }),
  post: (path, body) => request('POST', path, { body }),
  patch: (path, body) => request('PATCH', path, { body }),
  del: (path) => request('DELETE', path),
};

/** A named report: `{report, table, since, until, columns, rows, records}` (records: rows as objects). */
export async function report(name, params, signal) {
  const data = await api.get(`/reports/${encodeURIComponent(name)}`, params, signal);
  data.records = data.rows.map((row) => Object.fromEntries(data.columns.map((c, i) => [c, row[i]])));
  return data;
}

/** True when `error` is only the page being left (its requests aborted). */
export const aborted = (error) => error && error.name === 'AbortError';

// The REST API as the dashboard uses it: same origin, the session cookie, JSON in and out.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const init = { method, headers: { accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the server cannot be reached (${err.message})`);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      response.status === 401
        ? "not signed in: open the URL that 'parjobs serve' printed"
        : (data && data.error) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** Query string from an object, leaving out empty values. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const api = {
  jobs: (params) => call("GET", `/api/jobs${query(params)}`),
  job: (id) => call("GET", `/api/jobs/${encodeURIComponent(id)}`),
  errors: (id, params) => call("GET", `/api/jobs/${encodeURIComponent(id)}/errors${query(params)}`),
  action: (id, verb) => call("POST", `/api/jobs/${encodeURIComponent(id)}/${verb}`),
  priority: (id, priority) => call("PATCH", `/api/jobs/${encodeURIComponent(id)}`, { priority }),
  remove: (id) => call("DELETE", `/api/jobs/${encodeURIComponent(id)}`),
  submit: (body) => call("POST", "/api/jobs", body),
  types: () => call("GET", "/api/job-types"),
};

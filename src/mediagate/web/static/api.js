// A small client of mediagate's native API: fetch with the bearer token, and
// problem+json answers turned into errors whose message is the server's `detail`.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `the server answered ${status}`);
    this.status = status;
    this.problem = problem;
  }

  // A later attempt may succeed: the network, a timeout, a busy or restarting server.
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }

  get retryAfterSeconds() {
    return Number(this.problem.retryAfter) || 0;
  }
}

export async function problemOf(response) {
  const problem = { retryAfter: response.headers.get("Retry-After") };
  try {
    Object.assign(problem, await response.json());
  } catch {
    problem.detail = `the server answered ${response.status} ${response.statusText}`.trim();
  }
  return new ApiError(response.status, problem);
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  get authorization() {
    return { Authorization: `Bearer ${this.token}` };
  }

  async call(method, path, body) {
    const init = { method, headers: { ...this.authorization } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, { detail: "the server cannot be reached; check your connection" });
    }
    if (!response.ok) throw await problemOf(response);
    return response.status === 204 ? null : { status: response.status, body: await response.json() };
  }

  async listMedia(cursor) {
    const query = new URLSearchParams({ limit: "50" });
    if (cursor) query.set("cursor", cursor);
    return (await this.call("GET", `/api/v1/media?${query}`)).body;
  }

  async info(mediaId) {
    return (await this.call("GET", `/api/v1/media/info/${encodeURIComponent(mediaId)}`)).body;
  }

  async deleteMedia(mediaId) {
    await this.call("DELETE", `/api/v1/media/delete/${encodeURIComponent(mediaId)}`);
  }

  async initiate(file) {
    const body = { filename: file.name, size: file.size };
    if (file.type) body.content_type = file.type;
    return (await this.call("POST", "/api/v1/media/upload/initiate", body)).body;
  }

  async sessionStatus(sessionId) {
    return (await this.call("GET", `/api/v1/media/upload/${encodeURIComponent(sessionId)}`)).body;
  }

  async abort(sessionId) {
    await this.call("DELETE", `/api/v1/media/upload/${encodeURIComponent(sessionId)}`);
  }

  async complete(sessionId) {
    return (await this.call("POST", `/api/v1/media/upload/${encodeURIComponent(sessionId)}/complete`))
      .body;
  }

  // XMLHttpRequest, not fetch: only it reports upload progress.
  putChunk(sessionId, number, body, headers, onProgress, signal) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      const path = `/api/v1/media/upload/${encodeURIComponent(sessionId)}/chunk/${number}`;
      request.open("POST", path);
      for (const [name, value] of Object.entries({ ...this.authorization, ...headers })) {
        request.setRequestHeader(name, value);
      }
      request.setRequestHeader("Content-Type", "application/octet-stream");
      request.upload.onprogress = (event) => onProgress(event.loaded);
      request.onload = () => {
        if (request.status === 200) {
          resolve(JSON.parse(request.responseText));
          return;
        }
        const headers = new Headers();
        for (const name of ["Content-Type", "Retry-After"]) {
          headers.set(name, request.getResponseHeader(name) || "");
        }
        problemOf(new Response(request.responseText, { status: request.status, headers })).then(
          reject,
        );
      };
      request.onerror = () => reject(new ApiError(0, { detail: "the connection was lost" }));
      request.onabort = () => reject(new DOMException("cancelled", "AbortError"));
      signal.addEventListener("abort", () => request.abort(), { once: true });
      request.send(body);
    });
  }
}

// One file's upload through the native API: initiate, chunks in parallel, complete;
// and resume: the session id is remembered per user and file (name, size, last
// modification) so that choosing the same file after a reload sends only the
// chunks the server does not have yet.

import { ApiError } from "./api.js";

// Chunks in flight across every upload on the page: a browser opens at most six
// connections to a server, and each chunk is read into memory once to be hashed.
const PARALLEL_CHUNKS = 3;
const ATTEMPTS = 5;
const REMEMBERED = "mediagate.uploads";

function remembered() {
  try {
    return JSON.parse(localStorage.getItem(REMEMBERED)) || {};
  } catch {
    return {};
  }
}

function saveRemembered(all) {
  localStorage.setItem(REMEMBERED, JSON.stringify(all));
}

function fingerprint(user, file) {
  return JSON.stringify([user, file.name, file.size, file.lastModified]);
}

// Unfinished uploads of this user, to offer their resumption after a reload.
export function unfinishedUploads(user) {
  return Object.entries(remembered())
    .filter(([, entry]) => entry.user === user)
    .map(([key, entry]) => ({ key, ...entry }));
}

export function forgetUpload(key) {
  const all = remembered();
  delete all[key];
  saveRemembered(all);
}

class Slots {
  constructor(count) {
    this.free = count;
    this.waiting = [];
  }

  async take() {
    if (this.free > 0) this.free -= 1;
    else await new Promise((resolve) => this.waiting.push(resolve));
  }

  give() {
    const next = this.waiting.shift();
    if (next) next();
    else this.free += 1;
  }
}

const chunkSlots = new Slots(PARALLEL_CHUNKS);

function sleep(seconds, signal) {
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("cancelled", "AbortError"));
    }, { once: true });
  });
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export class Upload {
  constructor(api, user, file, { onProgress, onNote }) {
    this.api = api;
    this.file = file;
    this.key = fingerprint(user, file);
    this.user = user;
    this.onProgress = onProgress;
    this.onNote = onNote;
    this.controller = new AbortController();
    this.session = null;
  }

  // The media the upload became.
  async run() {
    const { session, received } = await this.openSession();
    this.session = session;
    const sizeOf = (number) =>
      Math.min(session.chunk_size, this.file.size - number * session.chunk_size);
    let done = received.reduce((sum, number) => sum + sizeOf(number), 0);
    const inFlight = new Map();
    const report = () => {
      let sending = 0;
      for (const loaded of inFlight.values()) sending += loaded;
      this.onProgress(done + sending, this.file.size);
    };
    report();

    const have = new Set(received);
    let missing = [];
    for (let number = 0; number < session.total_chunks; number += 1) {
      if (!have.has(number)) missing.push(number);
    }
    for (let round = 0; ; round += 1) {
      const queue = [...missing];
      const worker = async () => {
        while (queue.length) {
          const number = queue.shift();
          await chunkSlots.take();
          try {
            inFlight.set(number, 0);
            await this.sendChunk(session, number, sizeOf(number), (loaded) => {
              inFlight.set(number, loaded);
              report();
            });
          } finally {
            inFlight.delete(number);
            chunkSlots.give();
          }
          done += sizeOf(number);
          report();
        }
      };
      try {
        await Promise.all(Array.from({ length: PARALLEL_CHUNKS }, worker));
      } catch (error) {
        this.cancel(); // the other chunks in flight: the upload stops here, resumable
        throw error;
      }
      try {
        const finished = await this.withRetries(() => this.api.complete(session.session_id));
        forgetUpload(this.key);
        return finished;
      } catch (error) {
        // Chunks the server lost track of (a failed re-send): send them once more.
        if (!(error instanceof ApiError) || !error.problem.missing_chunks || round > 0) throw error;
        missing = error.problem.missing_chunks;
        for (const number of missing) done -= sizeOf(number);
      }
    }
  }

  cancel() {
    this.controller.abort();
  }

  // Cancelled by the user: the server drops what it has of the file.
  async discard() {
    this.cancel();
    forgetUpload(this.key);
    if (this.session) await this.api.abort(this.session.session_id).catch(() => {});
  }

  async openSession() {
    const earlier = remembered()[this.key];
    if (earlier) {
      try {
        const status = await this.api.sessionStatus(earlier.session_id);
        if (status.state !== "expired" && status.size === this.file.size) {
          const have = status.received.length;
          this.onNote(
            have
              ? `Resumed: ${have} of ${status.total_chunks} parts were already on the server.`
              : "Resumed the earlier upload of this file.",
          );
          return { session: status, received: status.received };
        }
      } catch (error) {
        if (!(error instanceof ApiError) || error.retryable) throw error;
        // Gone, expired or not this user's: start again.
      }
      forgetUpload(this.key);
    }
    const session = await this.api.initiate(this.file);
    const all = remembered();
    all[this.key] = {
      session_id: session.session_id,
      user: this.user,
      name: this.file.name,
      size: this.file.size,
      lastModified: this.file.lastModified,
    };
    saveRemembered(all);
    return { session, received: [] };
  }

  async sendChunk(session, number, size, onProgress) {
    const start = number * session.chunk_size;
    const chunk = this.file.slice(start, start + size);
    // crypto.subtle exists only in secure contexts (https, localhost). The chunk is
    // read once to hash it and sent as the Blob, which the browser streams itself.
    const headers = crypto.subtle
      ? { "X-Chunk-SHA256": await sha256Hex(await chunk.arrayBuffer()) }
      : {};
    await this.withRetries(() =>
      this.api.putChunk(session.session_id, number, chunk, headers, onProgress, this.controller.signal),
    );
  }

  async withRetries(attempt) {
    for (let tries = 1; ; tries += 1) {
      this.controller.signal.throwIfAborted();
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof ApiError) || !error.retryable || tries >= ATTEMPTS) throw error;
        const backoff = 2 ** (tries - 1) * (0.5 + Math.random());
        await sleep(Math.max(error.retryAfterSeconds, backoff), this.controller.signal);
      }
    }
  }
}

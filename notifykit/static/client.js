// notifykit browser client: one ES module, no dependencies. Served by every notifykit app at
// /client.js (under the app's mount point). docs/clients.md documents it; the Python client
// (notifykit.client) behaves the same.
//
//   import { NotifyClient } from "/notify/client.js";
//   const client = new NotifyClient("/notify/ws", { tokenFactory: fetchToken });
//   client.addEventListener("notification", (event) => show(event.detail));
//   client.addEventListener("state", (event) => showState(event.detail.state));
//   await client.subscribe("team:7");

export const SUBPROTOCOL = "notifykit.v1";

/** The states a client goes through, in the same words as the Python client's. */
export const ConnectionState = Object.freeze({
  CONNECTING: "connecting", // getting a token, opening a websocket
  OPEN: "open", // welcomed, and every kept topic subscribed again
  CLOSED: "closed", // one connection (or attempt) ended: code and reason say why
  RECONNECTING: "reconnecting", // waiting `delay` ms before the next attempt
  STOPPED: "stopped", // will not connect again: close() or a code retrying cannot fix
});

const NO_CLOSE_FRAME = 1006;
const FORBIDDEN = 4003;
const UNAUTHORIZED = 4001;
const REFRESH_MIN_DELAY = 1000; // ms
const MAX_TIMER = 2 ** 31 - 1; // setTimeout's largest delay
const LOST = Symbol("connection lost"); // a request's connection ended before its answer

/** The server answered a request (subscribe, unsubscribe, refresh) with an `error` frame. */
export class RequestRefused extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "RequestRefused";
    /** The protocol's error code: forbidden, invalid_topic, unavailable, bad_frame... */
    this.code = code;
    this.serverMessage = message;
  }
}

/** The client stopped and will not connect again; `code` and `reason` say why. */
export class ClientClosed extends Error {
  constructor(code, reason, cause) {
    super(`notifykit client stopped: ${code} ${reason}`.trim(), cause ? { cause } : undefined);
    this.name = "ClientClosed";
    this.code = code;
    this.reason = reason;
  }
}

/**
 * Capped exponential backoff with "equal jitter", in milliseconds: before attempt n the
 * ceiling is min(maximum, initial * multiplier ** n) and the delay is uniform between half the
 * ceiling and the ceiling — never below initial / 2, so a client cannot busy-spin.
 */
export class Backoff {
  constructor({ initial = 500, maximum = 30000, multiplier = 2 } = {}) {
    if (!(initial > 0)) throw new RangeError(`backoff initial must be > 0, not ${initial}`);
    if (!(maximum >= initial)) throw new RangeError("backoff maximum must be >= initial");
    if (!(multiplier >= 1)) throw new RangeError("backoff multiplier must be >= 1");
    Object.assign(this, { initial, maximum, multiplier });
    Object.freeze(this);
  }

  ceiling(attempt) {
    let ceiling = this.initial;
    for (let n = 0; n < attempt && ceiling < this.maximum; n++) ceiling *= this.multiplier;
    return Math.min(ceiling, this.maximum);
  }

  delay(attempt, random = Math.random) {
    const ceiling = this.ceiling(attempt);
    return ceiling / 2 + (ceiling / 2) * random();
  }
}

function position(value) {
  if (value === null || typeof value !== "object") return null;
  const { epoch, offset } = value;
  if (typeof epoch !== "string" || !Number.isInteger(offset)) return null;
  return { epoch, offset };
}

/**
 * Where the client is in each stream: fed with the server's frames in order, it gives the
 * `resume` parameter and `since` values back and drops notifications already received. With a
 * server that does not number its streams it stays empty and changes nothing.
 */
export class PositionBook {
  constructor(streams = {}) {
    this.streams = new Map();
    for (const [stream, raw] of Object.entries(streams)) {
      const pos = position(raw);
      if (pos) this.streams.set(stream, pos);
    }
    this.topics = new Map();
  }

  resumeUrl(url) {
    if (this.streams.size === 0) return url;
    const target = new URL(url);
    target.searchParams.set("resume", JSON.stringify(Object.fromEntries(this.streams)));
    return target.toString();
  }

  since(topic) {
    return this.topics.get(topic) ?? null;
  }

  welcomed(welcome) {
    const recovered = typeof welcome.recovered === "boolean" ? welcome.recovered : null;
    const given = welcome.positions;
    if (given !== null && typeof given === "object") {
      const streams = new Map();
      for (const [stream, raw] of Object.entries(given)) {
        const server = position(raw);
        if (server) streams.set(stream, merge(this.streams.get(stream), server, recovered));
      }
      this.streams = streams;
    }
    return recovered;
  }

  subscribed(topic, frame) {
    const recovered = typeof frame.recovered === "boolean" ? frame.recovered : null;
    const server = position(frame.position);
    if (server) this.topics.set(topic, merge(this.topics.get(topic), server, recovered));
    return recovered;
  }

  /** Record a notification's position; false if the client already had it. */
  accept(notification) {
    const { epoch, offset, stream, topic } = notification;
    if (typeof epoch !== "string" || !Number.isInteger(offset)) return true;
    let book, key;
    if (typeof topic === "string") [book, key] = [this.topics, topic];
    else if (typeof stream === "string") [book, key] = [this.streams, stream];
    else return true;
    const mine = book.get(key);
    if (mine && mine.epoch === epoch && offset <= mine.offset) return false;
    book.set(key, { epoch, offset });
    return true;
  }

  forgetTopic(topic) {
    this.topics.delete(topic);
  }
}

function merge(mine, server, recovered) {
  // A continuous resume keeps the client's position: the missed entries follow and move it.
  if (recovered !== false && mine && mine.epoch === server.epoch && mine.offset <= server.offset) {
    return mine;
  }
  return server;
}

function websocketUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const target = new URL(url, base);
  if (target.protocol === "http:") target.protocol = "ws:";
  if (target.protocol === "https:") target.protocol = "wss:";
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new TypeError(`not a websocket URL: ${url}`);
  }
  return target.toString();
}

function handled(promise) {
  promise.catch(() => {}); // rejections nobody waits for are expected (a lost connection)
  return promise;
}

/**
 * A notifykit client that stays connected. Events: "notification" (detail: the notification
 * frame), "state" (detail: {state, attempt, code, reason, delay, recovered, error}). Also
 * async-iterable: `for await (const n of client)`.
 */
export class NotifyClient extends EventTarget {
  #url;
  #token;
  #tokenFactory;
  #topics;
  #backoff;
  #refreshAt;
  #resume;
  #maxBuffer;
  #WebSocket;
  #book;
  #change = { state: ConnectionState.CONNECTING, attempt: 0 };
  #socket = null; // the current websocket, welcomed or not
  #session = null; // the current welcomed session
  #attempt = 0;
  #retryTimer = null;
  #closing = false;
  #stopped = null; // a ClientClosed once stopped
  #waiters = new Set(); // () => void, called on every state change
  #iterators = new Set();
  #refs = 0;

  /**
   * @param {string} url the websocket endpoint, e.g. "wss://example.com/notify/ws" or "/notify/ws"
   * @param {object} [options]
   * @param {string} [options.token] a fixed JWT
   * @param {() => Promise<string>} [options.tokenFactory] returns a fresh JWT; called for every
   *   connection and to refresh before expiry
   * @param {string[]} [options.topics] topics to keep subscribed from the start
   * @param {Backoff|object} [options.backoff] {initial, maximum, multiplier} in ms
   * @param {number} [options.refreshAt] refresh at this share of the remaining lifetime (0.8)
   * @param {boolean} [options.resume] resume from stream positions when the server numbers them
   * @param {object} [options.positions] {stream: {epoch, offset}} to resume from, e.g. saved
   * @param {number} [options.maxBuffer] notifications an async iterator holds (oldest dropped)
   */
  constructor(url, options = {}) {
    super();
    const {
      token = null,
      tokenFactory = null,
      topics = [],
      backoff = new Backoff(),
      refreshAt = 0.8,
      resume = true,
      positions = {},
      maxBuffer = 1000,
      WebSocket: WebSocketClass = globalThis.WebSocket,
    } = options;
    if (token && tokenFactory) throw new TypeError("give a token or a tokenFactory, not both");
    if (!(refreshAt > 0 && refreshAt < 1)) throw new RangeError("refreshAt must be in (0, 1)");
    this.#url = websocketUrl(url);
    this.#token = token;
    this.#tokenFactory = tokenFactory;
    this.#topics = new Set(topics);
    this.#backoff = backoff instanceof Backoff ? backoff : new Backoff(backoff);
    this.#refreshAt = refreshAt;
    this.#resume = resume;
    this.#maxBuffer = maxBuffer;
    this.#WebSocket = WebSocketClass;
    this.#book = new PositionBook(positions);
    queueMicrotask(() => this.#connect()); // listeners added right after `new` see everything
  }

  // --- what the client knows ------------------------------------------------------------

  /** The current state: one of ConnectionState. */
  get state() {
    return this.#change.state;
  }
  /** The latest state change: {state, attempt, code, reason, delay, recovered, error}. */
  get lastChange() {
    return this.#change;
  }
  get user() {
    return this.#session ? this.#session.welcome.user : null;
  }
  get connectionId() {
    return this.#session ? this.#session.welcome.connection_id : null;
  }
  /** When the open connection's token expires, in Unix seconds (refreshes move it). */
  get expiresAt() {
    return this.#session ? this.#session.expiresAt : null;
  }
  /** The topics kept subscribed across reconnects. */
  get topics() {
    return [...this.#topics];
  }
  /** {stream: {epoch, offset}} of the client's own streams: save them to resume later. */
  get positions() {
    return Object.fromEntries(this.#book.streams);
  }
  get topicPositions() {
    return Object.fromEntries(this.#book.topics);
  }

  /** Call `listener(detail)` for every event of `type`; returns a function that stops it. */
  on(type, listener) {
    const handler = (event) => listener(event.detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /** Resolves once the client is open; rejects with ClientClosed if it stops first. */
  waitOpen() {
    return this.#until(() => this.#session !== null && this.state === ConnectionState.OPEN);
  }

  // --- requests ---------------------------------------------------------------------------

  /** Subscribe and keep the topic across reconnects; resolves once the server agreed. */
  async subscribe(topic) {
    this.#topics.add(topic);
    for (;;) {
      const session = await this.#until(() => this.#session !== null);
      const reply = session.subscriptions.get(topic) ?? this.#sendSubscribe(session, topic);
      let frame;
      try {
        frame = await reply;
      } catch (error) {
        if (error === LOST) continue; // the next connection subscribes again
        throw error;
      }
      if (frame.type === "error") {
        this.#forget(session, topic, reply);
        throw new RequestRefused(frame.code, frame.message);
      }
      return;
    }
  }

  /** Stop receiving a topic; resolves once the server confirmed (at once while offline). */
  async unsubscribe(topic) {
    this.#topics.delete(topic);
    this.#book.forgetTopic(topic);
    const session = this.#session;
    if (!session) return;
    session.subscriptions.delete(topic);
    let frame;
    try {
      frame = await this.#request(session, { type: "unsubscribe", topic, ref: this.#ref("u") });
    } catch (error) {
      if (error === LOST) return;
      throw error;
    }
    if (frame.type === "error") throw new RequestRefused(frame.code, frame.message);
  }

  /** Send ping and wait for pong (waits for a connection while offline). */
  async ping() {
    for (;;) {
      await this.waitOpen();
      try {
        await this.#request(this.#session, { type: "ping", ref: this.#ref("p") });
        return;
      } catch (error) {
        if (error !== LOST) throw error;
      }
    }
  }

  /** Close (1000) and stop for good. Resolves once stopped. */
  async close() {
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    if (this.#socket && this.#socket.readyState <= 1) {
      this.#socket.close(1000);
      await this.#until(() => false).catch(() => {});
    } else {
      this.#stop(1000, "closed by the client");
    }
  }

  [Symbol.asyncIterator]() {
    const it = { queue: [], wake: null, dropped: 0 };
    this.#iterators.add(it);
    const done = () => {
      this.#iterators.delete(it);
      return { value: undefined, done: true };
    };
    return {
      next: async () => {
        for (;;) {
          if (it.queue.length) return { value: it.queue.shift(), done: false };
          if (this.#stopped) {
            done();
            if (this.#stopped.code !== 1000) throw this.#stopped;
            return { value: undefined, done: true };
          }
          await new Promise((resolve) => (it.wake = resolve));
        }
      },
      return: async () => done(),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  // --- the connection ---------------------------------------------------------------------

  async #connect() {
    if (this.#stopped) return;
    if (this.#closing) return this.#stop(1000, "closed by the client");
    this.#emit({ state: ConnectionState.CONNECTING, attempt: this.#attempt });
    let token = this.#token;
    if (this.#tokenFactory) {
      try {
        token = await this.#tokenFactory();
      } catch (error) {
        console.warn("notifykit: the token factory failed:", error);
        return this.#ended(null, NO_CLOSE_FRAME, `token factory failed: ${error}`, error);
      }
      if (this.#closing) return this.#stop(1000, "closed by the client");
    }
    const protocols = token ? [SUBPROTOCOL, "bearer." + token] : [SUBPROTOCOL];
    const url = this.#resume ? this.#book.resumeUrl(this.#url) : this.#url;
    let ws;
    try {
      ws = new this.#WebSocket(url, protocols);
    } catch (error) {
      return this.#ended(null, NO_CLOSE_FRAME, `cannot connect: ${error}`, error);
    }
    const session = {
      ws,
      welcome: null,
      pending: new Map(),
      subscriptions: new Map(),
      retrying: false,
    };
    session.expiresAt = null;
    session.refreshTimer = null;
    this.#socket = ws;
    ws.onmessage = (message) => this.#receive(session, message.data);
    ws.onclose = (event) => this.#ended(session, event.code, event.reason, null);
  }

  #receive(session, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      frame = null;
    }
    if (frame === null || typeof frame !== "object" || typeof frame.type !== "string") {
      console.warn("notifykit: ignored a frame that is not a JSON object with a type");
      return;
    }
    if (!session.welcome) {
      if (frame.type === "welcome") this.#welcomed(session, frame);
      else session.ws.close(1000, "expected welcome");
      return;
    }
    switch (frame.type) {
      case "notification":
        if (this.#book.accept(frame)) this.#deliver(frame);
        return;
      case "subscribed":
        this.#book.subscribed(frame.topic, frame);
        break;
      case "refreshed":
        session.expiresAt = frame.expires_at ?? null;
        this.#scheduleRefresh(session);
        break;
      case "unsubscribed":
        if (frame.ref === undefined) {
          console.info(`notifykit: the server left topic ${frame.topic} (the token forbids it)`);
          this.#topics.delete(frame.topic);
          this.#book.forgetTopic(frame.topic);
        }
        break;
      case "error":
      case "pong":
        break;
      default:
        return; // frame types added later: ignored
    }
    const pending = frame.ref !== undefined ? session.pending.get(frame.ref) : undefined;
    if (pending) {
      session.pending.delete(frame.ref);
      pending.resolve(frame);
    } else if (frame.type === "error") {
      console.warn(`notifykit: server error ${frame.code}: ${frame.message}`);
    }
  }

  async #welcomed(session, welcome) {
    session.welcome = welcome;
    session.expiresAt = welcome.expires_at ?? null;
    const recovered = this.#book.welcomed(welcome);
    this.#session = session;
    this.#scheduleRefresh(session);
    const replies = [...this.#topics].map((topic) => [topic, this.#sendSubscribe(session, topic)]);
    this.#wake(); // subscribe() calls waiting for a connection join these replies
    for (const [topic, reply] of replies) {
      let frame;
      try {
        frame = await reply;
      } catch {
        return; // the connection ended meanwhile
      }
      if (frame.type === "error" && frame.code === "unavailable") {
        // Not now (the server could not subscribe it: retry later): keep the topic, and
        // make the connection again with backoff rather than stay open without it.
        console.warn(`notifykit: cannot subscribe to ${topic} again now: ${frame.message}`);
        session.retrying = true;
        session.ws.close(1000, "subscribing again later");
        return;
      }
      if (frame.type === "error") {
        console.warn(`notifykit: cannot subscribe to ${topic} again: ${frame.message}`);
        this.#forget(session, topic, reply);
      }
    }
    if (this.#session === session) {
      this.#attempt = 0;
      this.#emit({ state: ConnectionState.OPEN, recovered });
    }
  }

  #ended(session, code, reason, error) {
    if (session) {
      clearTimeout(session.refreshTimer);
      for (const pending of session.pending.values()) pending.reject(LOST);
      session.pending.clear();
      if (this.#socket === session.ws) this.#socket = null;
      if (this.#session === session) this.#session = null;
    }
    this.#emit({ state: ConnectionState.CLOSED, code, reason, error });
    if (this.#closing) return this.#stop(1000, "closed by the client");
    if (code === FORBIDDEN || (code === UNAUTHORIZED && !this.#tokenFactory)) {
      return this.#stop(code, reason, error);
    }
    if (session && session.welcome && !session.retrying) this.#attempt = 0;
    const delay = this.#backoff.delay(this.#attempt);
    this.#attempt += 1;
    this.#emit({ state: ConnectionState.RECONNECTING, attempt: this.#attempt, delay });
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #stop(code, reason, error = null) {
    if (this.#stopped) return;
    this.#stopped = new ClientClosed(code, reason, error);
    clearTimeout(this.#retryTimer);
    this.#emit({ state: ConnectionState.STOPPED, code, reason, error });
    for (const it of this.#iterators) if (it.wake) it.wake();
  }

  // --- requests on a session ----------------------------------------------------------------

  #sendSubscribe(session, topic) {
    const frame = { type: "subscribe", topic, ref: this.#ref("s") };
    const since = this.#resume ? this.#book.since(topic) : null;
    if (since) frame.since = since; // servers without history ignore it
    const reply = this.#request(session, frame);
    session.subscriptions.set(topic, reply);
    return reply;
  }

  #forget(session, topic, refused) {
    // A refused topic is dropped; a later subscribe() asks the server again.
    this.#topics.delete(topic);
    this.#book.forgetTopic(topic);
    if (session.subscriptions.get(topic) === refused) session.subscriptions.delete(topic);
  }

  #request(session, frame) {
    const reply = handled(
      new Promise((resolve, reject) => session.pending.set(frame.ref, { resolve, reject })),
    );
    if (session.ws.readyState === 1) session.ws.send(JSON.stringify(frame));
    return reply; // a closed socket: #ended rejects it with LOST
  }

  #scheduleRefresh(session) {
    clearTimeout(session.refreshTimer);
    const factory = this.#tokenFactory;
    if (!factory || session.expiresAt == null) return; // a fixed token cannot be refreshed
    const remaining = session.expiresAt * 1000 - Date.now();
    if (remaining <= REFRESH_MIN_DELAY) return; // too late: 4001 at expiry, then reconnect
    const delay = Math.min(Math.max(remaining * this.#refreshAt, REFRESH_MIN_DELAY), MAX_TIMER);
    session.refreshTimer = setTimeout(async () => {
      let frame;
      try {
        const token = await factory();
        frame = await this.#request(session, { type: "refresh", token, ref: this.#ref("r") });
      } catch (error) {
        if (error === LOST) return;
        console.warn("notifykit: the token factory failed; retrying:", error);
        return this.#scheduleRefresh(session);
      }
      if (frame.type === "error") {
        console.warn(`notifykit: token refresh refused: ${frame.message}`);
        this.#scheduleRefresh(session);
      } // "refreshed" schedules the next one
    }, delay);
  }

  #ref(kind) {
    this.#refs += 1;
    return kind + this.#refs;
  }

  // --- events -----------------------------------------------------------------------------

  #deliver(frame) {
    this.dispatchEvent(new CustomEvent("notification", { detail: frame }));
    for (const it of this.#iterators) {
      if (it.queue.length >= this.#maxBuffer) {
        it.queue.shift();
        if (it.dropped++ === 0) console.warn("notifykit: an iterator fell behind; dropping");
      }
      it.queue.push(frame);
      if (it.wake) it.wake();
    }
  }

  #emit(change) {
    this.#change = Object.freeze({
      state: change.state,
      attempt: change.attempt ?? 0,
      code: change.code ?? null,
      reason: change.reason ?? "",
      delay: change.delay ?? null,
      recovered: change.recovered ?? null,
      error: change.error ?? null,
    });
    this.dispatchEvent(new CustomEvent("state", { detail: this.#change }));
    this.#wake();
  }

  #wake() {
    for (const waiter of [...this.#waiters]) waiter();
  }

  /** Resolves with the current session once `ready()` holds; rejects if the client stops. */
  #until(ready) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.#stopped) {
          this.#waiters.delete(check);
          reject(this.#stopped);
        } else if (ready()) {
          this.#waiters.delete(check);
          resolve(this.#session);
        }
      };
      this.#waiters.add(check);
      check();
    });
  }
}

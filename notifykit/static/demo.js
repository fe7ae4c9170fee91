// The notifykit demo page: sign in as any name, watch notifications arrive, send some.
// Built on the browser client (../client.js) exactly as an application would use it.
import { ConnectionState, NotifyClient, RequestRefused } from "../client.js";

const EVENT = "demo.message";
const TOAST_MS = 6000;
const MAX_TOASTS = 4;
const STORAGE_KEY = "notifykit-demo-user";

const $ = (selector, root = document) => root.querySelector(selector);
const endpoint = (path) => new URL(path, import.meta.url); // demo/token, demo/send, ../ws

let client = null;
let user = null;
let received = 0;

// --- signing in and out -------------------------------------------------------------------

async function fetchToken(name) {
  const response = await fetch(endpoint("token"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: name }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `the server answered ${response.status}`);
  return body.token;
}

async function signIn(name) {
  const error = $('[data-testid="sign-in-error"]');
  error.hidden = true;
  let first;
  try {
    first = await fetchToken(name); // checks the name before the page changes
  } catch (err) {
    error.textContent = `Cannot sign in: ${err.message}`;
    error.hidden = false;
    return;
  }
  user = name;
  sessionStorage.setItem(STORAGE_KEY, name);
  const tokenFactory = () => {
    const token = first ?? fetchToken(name);
    first = null;
    return Promise.resolve(token);
  };
  client = new NotifyClient(endpoint("../ws").href, { tokenFactory });
  client.on("state", showState);
  client.on("notification", receive);

  $(".account").hidden = false;
  $(".avatar").textContent = name.slice(0, 1).toUpperCase();
  $('[data-testid="user"]').textContent = name;
  $('[data-view="signed-out"]').hidden = true;
  $('[data-view="signed-in"]').hidden = false;
  $('[name="recipient"]').focus();
}

async function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
  const closing = client;
  client = null;
  user = null;
  if (closing) await closing.close();
  for (const list of ['[data-testid="inbox"]', '[data-testid="topics"]', ".toasts"]) {
    $(list).replaceChildren();
  }
  received = 0;
  updateCounts();
  $(".account").hidden = true;
  $('[data-view="signed-in"]').hidden = true;
  $('[data-view="signed-out"]').hidden = false;
  showState({ state: ConnectionState.STOPPED, code: 1000 });
  $('[name="user"]').focus();
}

// --- connection state -----------------------------------------------------------------------

function showState(change) {
  const status = $('[data-testid="state"]');
  status.dataset.state = change.state;
  status.classList.toggle("failed", change.state === "stopped" && change.code !== 1000);
  const text = {
    connecting: "Connecting…",
    open: "Live",
    closed: "Disconnected",
    reconnecting: `Reconnecting in ${Math.max(1, Math.round((change.delay ?? 0) / 1000))}s…`,
    stopped: change.code === 1000 ? "Signed out" : `Stopped (${change.code})`,
  }[change.state];
  $(".status-text", status).textContent = text;
  status.title = change.reason ? `${change.code}: ${change.reason}` : "";
  if (change.state === "open" && change.recovered === false) {
    toast({ kind: "everyone", title: "Back online", text: "Some notifications may have been missed while offline." });
  }
}

// --- receiving ------------------------------------------------------------------------------

function describe(notification) {
  const data = notification.data;
  const demo = notification.event === EVENT && data !== null && typeof data === "object";
  let kind = "api"; // published by the application (POST /publish, notifykit publish, the hub)
  if (notification.topic) kind = "topic";
  else if (demo) kind = data.to === "everyone" ? "everyone" : "user";
  const title = demo && data.title ? data.title : notification.event;
  const text = demo ? data.text || "" : data === null ? "" : JSON.stringify(data);
  const where = {
    topic: `#${notification.topic}`,
    everyone: "to everyone",
    user: "to you",
    api: "from the application",
  }[kind];
  const from = demo && data.from ? ` · from ${data.from}` : "";
  return { kind, title, text, meta: where + from, time: new Date(notification.ts) };
}

function receive(notification) {
  const item = describe(notification);
  received += 1;
  const li = element("li", `item kind-${item.kind}`);
  li.dataset.testid = "inbox-item";
  li.dataset.id = notification.id;
  const icon = element("span", "item-icon", { topic: "#", everyone: "★", user: "@", api: "⚡" }[item.kind]);
  const body = element("div");
  body.append(element("div", "item-title", item.title));
  if (item.text) body.append(element("div", "item-text", item.text));
  body.append(element("div", "item-meta", item.meta));
  const time = element("time", "item-time", item.time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }));
  time.dateTime = item.time.toISOString();
  li.append(icon, body, time);
  $('[data-testid="inbox"]').prepend(li);
  updateCounts();
  toast(item, notification.id);
}

function toast(item, id = "") {
  const box = $(".toasts");
  while (box.children.length >= MAX_TOASTS) box.firstElementChild.remove();
  const node = element("div", `toast kind-${item.kind}`);
  node.dataset.testid = "toast";
  node.dataset.id = id;
  node.setAttribute("role", "status");
  const close = element("button", "toast-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  const progress = element("div", "toast-progress");
  progress.style.setProperty("--toast-ms", `${TOAST_MS}ms`);
  node.append(element("span", "toast-bar"), element("div", "toast-title", item.title), close);
  if (item.text) node.append(element("div", "toast-text", item.text));
  node.append(element("div", "toast-meta", item.meta), progress);
  const dismiss = () => {
    node.classList.add("leaving");
    setTimeout(() => node.remove(), 250);
  };
  close.addEventListener("click", dismiss);
  setTimeout(dismiss, TOAST_MS);
  box.append(node);
}

function updateCounts() {
  $('[data-testid="inbox-count"]').textContent = String(received);
  $('[data-empty="inbox"]').hidden = received > 0;
  $('[data-empty="topics"]').hidden = $('[data-testid="topics"]').children.length > 0;
}

// --- sending --------------------------------------------------------------------------------

function currentTarget() {
  return new FormData($('[data-form="send"]')).get("target");
}

function updateRecipientField() {
  const target = currentTarget();
  $('[data-field="recipient"]').hidden = target === "everyone";
  $('[data-label="recipient"]').textContent = target === "topic" ? "Topic" : "User name";
  $('[name="recipient"]').placeholder = target === "topic" ? "team:design" : "bob";
}

async function send(form) {
  const fields = new FormData(form);
  const target = fields.get("target");
  const recipient = String(fields.get("recipient") || "").trim();
  const note = $('[data-testid="send-result"]');
  note.className = "form-note";
  if (target !== "everyone" && !recipient) {
    note.textContent = target === "topic" ? "Which topic?" : "Who should receive it?";
    note.classList.add("bad");
    return;
  }
  const data = {
    title: String(fields.get("event") || "").trim() || "New message",
    text: String(fields.get("text") || "").trim(),
    from: user,
    to: target,
  };
  const body = { event: EVENT, data };
  if (target === "user") body.user = recipient;
  else if (target === "topic") body.topic = recipient;
  else body.broadcast = true;
  const button = $('[data-testid="send"]');
  button.disabled = true;
  try {
    const response = await fetch(endpoint("send"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.message || `the server answered ${response.status}`);
    note.textContent = `Sent ${target === "everyone" ? "to everyone" : target === "topic" ? `to #${recipient}` : `to ${recipient}`} ✓`;
    note.classList.add("ok");
    form.elements.text.value = "";
  } catch (err) {
    note.textContent = `Not sent: ${err.message}`;
    note.classList.add("bad");
  } finally {
    button.disabled = false;
  }
}

// --- topics ---------------------------------------------------------------------------------

async function subscribe(form) {
  const topic = String(new FormData(form).get("topic") || "").trim();
  const error = $('[data-testid="topic-error"]');
  error.hidden = true;
  if (!topic || !client) return;
  try {
    await client.subscribe(topic);
  } catch (err) {
    error.textContent = err instanceof RequestRefused ? `Cannot subscribe: ${err.serverMessage}` : String(err);
    error.hidden = false;
    return;
  }
  form.reset();
  renderTopics();
}

function renderTopics() {
  const list = $('[data-testid="topics"]');
  list.replaceChildren(
    ...(client ? client.topics : []).map((topic) => {
      const chip = element("li", "chip", topic);
      chip.dataset.topic = topic;
      const remove = element("button", "", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", `Unsubscribe from ${topic}`);
      remove.addEventListener("click", async () => {
        await client.unsubscribe(topic);
        renderTopics();
      });
      chip.append(remove);
      return chip;
    }),
  );
  updateCounts();
}

// --- wiring ---------------------------------------------------------------------------------

function element(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

function on(selector, type, handler) {
  $(selector).addEventListener(type, (event) => {
    if (type === "submit") event.preventDefault();
    handler(event.currentTarget, event);
  });
}

on('[data-form="sign-in"]', "submit", (form) => {
  const name = String(new FormData(form).get("user") || "").trim();
  if (name) signIn(name);
});
on('[data-action="sign-out"]', "click", () => signOut());
on('[data-form="send"]', "submit", (form) => send(form));
on('[data-form="send"]', "change", () => updateRecipientField());
on('[data-form="subscribe"]', "submit", (form) => subscribe(form));

updateRecipientField();
updateCounts();
const remembered = sessionStorage.getItem(STORAGE_KEY);
if (remembered) signIn(remembered);

// For tests and the curious: the page's client.
window.notifykitDemo = {
  get client() {
    return client;
  },
};

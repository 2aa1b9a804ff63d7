"""The web chat: one page at GET /chat that talks to the chat model through POST /v1/chat/completions.

The page is a client of the OpenAI-compatible API like any other (service/openai_api.py): it adds no
endpoint of its own, so whatever the API enforces (limits, the shutdown drain, 4xx on bad input) holds for
it too. What the page does:

- keeps the conversation in the browser (a JavaScript array): every question sends the whole conversation,
  and the server keeps nothing between requests ("New chat" simply empties the array);
- streams the answer (`stream: true`: it reads the server-sent events off the fetch body and appends each
  piece as it arrives); "Stop" aborts the request, and an answer cut short is not kept in the conversation;
- when the conversation no longer fits the model's context (400 context_length_exceeded: the demo model sees
  128 tokens, about two short exchanges), forgets the oldest exchange and asks again, as `make chat` does,
  and says so;
- sets text with textContent only (a model's answer is never HTML), and is served with a Content-Security-
  Policy that lets it talk to this server only.

The service binds 127.0.0.1 unless told otherwise, so by default only this machine can open the page.
The HTML is kept here, in a Python module, so that it ships with the package like any other code.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

CHAT_PATH = "/chat"
# The page's own script and style are inline; it may fetch from its own origin and nothing else.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def add_chat_page(app: FastAPI) -> None:
    @app.get(CHAT_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(CHAT_HTML, headers=PAGE_HEADERS)


CHAT_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LLM Journey chat</title>
<style>
  :root { --fg: #1d1d1f; --muted: #6e6e73; --line: #d2d2d7; --user: #e8f0fe; --bot: #f5f5f7; --err: #b3261e; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); display: flex; flex-direction: column;
         height: 100vh; }
  header { display: flex; gap: 12px; align-items: center; padding: 10px 16px; border-bottom: 1px solid var(--line);
           flex-wrap: wrap; }
  header h1 { font-size: 17px; margin: 0 8px 0 0; }
  header label { color: var(--muted); font-size: 13px; display: flex; gap: 4px; align-items: center; }
  header input { width: 5.5em; }
  header input#system { width: 16em; }
  #log { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: 46em; padding: 8px 12px; border-radius: 10px; white-space: pre-wrap; overflow-wrap: anywhere; }
  .msg.user { background: var(--user); align-self: flex-end; }
  .msg.assistant { background: var(--bot); align-self: flex-start; }
  .msg.assistant[data-state="streaming"]::after { content: "\2589"; color: var(--muted); }
  .note { color: var(--muted); font-size: 13px; align-self: center; }
  .note.error { color: var(--err); }
  form { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid var(--line); }
  textarea { flex: 1; resize: none; font: inherit; padding: 8px; border: 1px solid var(--line); border-radius: 8px; }
  button { font: inherit; padding: 6px 14px; border-radius: 8px; border: 1px solid var(--line); background: white;
           cursor: pointer; }
  #status { color: var(--muted); font-size: 12px; padding: 0 16px 8px; }
</style>
</head>
<body>
<header>
  <h1>LLM Journey chat</h1>
  <label>model <select id="model"></select></label>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.8"></label>
  <label>max tokens <input id="max-tokens" type="number" min="1" step="1" value="256"></label>
  <label>seed <input id="seed" type="number" step="1" placeholder="random"></label>
  <label>system <input id="system" type="text" placeholder="optional system message"></label>
  <button id="new-chat" type="button">New chat</button>
</header>
<main id="log" aria-live="polite"></main>
<form id="ask">
  <textarea id="message" rows="2" placeholder="Ask something (Enter sends, Shift+Enter for a new line)"></textarea>
  <button id="send" type="submit">Send</button>
</form>
<div id="status"></div>
<script>
"use strict";
// The conversation lives here, in the browser: [{role, content}, ...] of finished exchanges only.
let conversation = [];
let controller = null;   // the AbortController of the answer being streamed, if any
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(error) { super(error.message || "error"); this.code = error.code; this.param = error.param; }
}

function show(kind, text) {
  const div = document.createElement("div");
  div.className = kind === "user" || kind === "assistant" ? "msg " + kind : "note " + kind;
  div.textContent = text;   // never innerHTML: an answer is text, not markup
  $("log").appendChild(div);
  div.scrollIntoView({block: "end"});
  return div;
}

async function loadModels() {
  const resp = await fetch("/v1/models");
  const models = (await resp.json()).data.filter((m) => m.kind === "chat");
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.id;
    $("model").appendChild(option);
  }
  const m = models[0];
  $("status").textContent = m ? `${m.id}: step ${m.step}, ${m.parameters.toLocaleString()} parameters, ` +
    `context ${m.context_length} tokens, tokenizer ${m.tokenizer_fingerprint.slice(0, 16)}...` : "no chat model";
}

function request(messages) {
  const body = {model: $("model").value, messages, stream: true, stream_options: {include_usage: true}};
  const temperature = parseFloat($("temperature").value);
  if (!Number.isNaN(temperature)) body.temperature = temperature;
  const maxTokens = parseInt($("max-tokens").value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const seed = parseInt($("seed").value, 10);
  if (!Number.isNaN(seed)) body.seed = seed;
  return body;
}

// POST the conversation with stream: true and call onPiece for each piece of the answer as it arrives.
// Returns {finish_reason, usage}; throws ApiError for an error answer (or an error event in the stream).
async function streamAnswer(messages, onPiece, signal) {
  const resp = await fetch("/v1/chat/completions", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(request(messages)), signal,
  });
  if (!resp.ok) {
    let error = {message: `HTTP ${resp.status}`};
    try { error = (await resp.json()).error || error; } catch (e) { /* not JSON */ }
    throw new ApiError(error);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", finish = null, usage = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {   // one server-sent event per blank-line-terminated block
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return {finish_reason: finish, usage};
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(chunk.error);
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        if (choice.delta && choice.delta.content) onPiece(choice.delta.content);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
  throw new ApiError({message: "the stream ended early"});
}

function withSystem(messages) {
  const system = $("system").value.trim();
  return system ? [{role: "system", content: system}, ...messages] : messages;
}

async function ask(text) {
  const question = show("user", text);
  const bubble = show("assistant", "");
  bubble.dataset.state = "streaming";
  bubble.dataset.chunks = "0";
  controller = new AbortController();
  $("send").textContent = "Stop";
  let answer = "";
  try {
    for (;;) {
      try {
        const result = await streamAnswer(withSystem([...conversation, {role: "user", content: text}]), (piece) => {
          answer += piece;
          bubble.textContent = answer;
          bubble.dataset.chunks = String(Number(bubble.dataset.chunks) + 1);
          bubble.scrollIntoView({block: "end"});
        }, controller.signal);
        conversation.push({role: "user", content: text}, {role: "assistant", content: answer});
        bubble.dataset.state = "done";
        bubble.dataset.finish = result.finish_reason || "";
        if (result.usage) {
          bubble.title = `${result.usage.prompt_tokens} prompt + ${result.usage.completion_tokens} answer tokens`;
        }
        if (!answer) bubble.textContent = "(empty answer)";
        return;
      } catch (e) {
        // The conversation outgrew the model's context: forget the oldest exchange and ask again.
        if (e instanceof ApiError && e.code === "context_length_exceeded" && conversation.length >= 2 && !answer) {
          conversation = conversation.slice(2);
          $("log").insertBefore(show("note", "(the context was full: forgot the oldest exchange)"), question);
          continue;
        }
        throw e;
      }
    }
  } catch (e) {
    bubble.dataset.state = "error";
    if (e.name === "AbortError") {
      bubble.textContent = answer;
      show("note", "(stopped: this exchange is forgotten)");
    } else {
      if (!answer) bubble.remove();
      show("note error", e.message);
    }
  } finally {
    controller = null;
    $("send").textContent = "Send";
  }
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  if (controller) { controller.abort(); return; }
  const text = $("message").value.trim();
  if (!text) return;
  $("message").value = "";
  ask(text);
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); }
});
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  conversation = [];
  $("log").replaceChildren();
  show("note", "(new conversation)");
});
loadModels().catch((e) => show("note error", "cannot list the models: " + e.message));
</script>
</body>
</html>
"""

// The tokenizer playground: text in, coloured tokens out, for one or two tokenizers side by side.
// Every keystroke (debounced) asks POST /pages/api/tokenize once per pane; an answer that arrives after a
// newer request was sent is dropped, so the panes always show the text as it is now.
"use strict";

const text = document.getElementById("text");
const special = document.getElementById("special");
const banner = document.getElementById("error");
const panes = ["left", "right"].map((id) => {
  const root = document.getElementById(id);
  return {
    root,
    choice: root.querySelector(".tok-choice"),
    count: root.querySelector(".count"),
    cpt: root.querySelector(".cpt"),
    error: root.querySelector(".error"),
    note: root.querySelector(".note"),
    tokens: root.querySelector(".tokens"),
    controller: null,
  };
});
const NONE = "";   // the right pane's "no comparison"

function fillChoices(select, tokenizers, selected, allowNone) {
  select.textContent = "";
  if (allowNone) select.append(el("option", { value: NONE }, "(no comparison)"));
  const groups = new Map();
  for (const t of tokenizers) {
    if (!groups.has(t.group)) {
      groups.set(t.group, el("optgroup", { label: t.group }));
      select.append(groups.get(t.group));
    }
    const option = el("option", { value: t.key, disabled: t.note !== null }, t.note ? `${t.label} (${t.note})` : t.label);
    groups.get(t.group).append(option);
  }
  select.value = selected === null ? NONE : selected;
}

async function tokenize(pane) {
  if (pane.controller) pane.controller.abort();
  const key = pane.choice.value;
  if (key === NONE) {
    pane.root.dataset.state = "off";
    pane.tokens.textContent = "";
    pane.count.textContent = pane.cpt.textContent = "–";
    pane.note.textContent = "";
    clearError(pane.error);
    return;
  }
  const controller = new AbortController();
  pane.controller = controller;
  pane.root.dataset.state = "loading";
  try {
    const answer = await api("POST", "/pages/api/tokenize",
                             { tokenizer: key, text: text.value, special: special.value }, controller.signal);
    if (pane.controller !== controller) return;   // a newer request is on its way
    clearError(pane.error);
    pane.count.textContent = fmt(answer.count);
    pane.cpt.textContent = answer.chars_per_token === null ? "–" : answer.chars_per_token.toFixed(2);
    pane.note.textContent = answer.shown < answer.count
      ? `showing the first ${fmt(answer.shown)} of ${fmt(answer.count)} tokens` : answer.tokenizer.name
        + ` · ${fmt(answer.tokenizer.n_vocab)} tokens in the vocabulary · fingerprint ${answer.tokenizer.fingerprint.slice(0, 16)}`;
    renderTokens(pane.tokens, answer.ids, answer.tokens);
    pane.root.dataset.chars = String(answer.characters);
    pane.root.dataset.state = "ready";
  } catch (err) {
    if (err.name === "AbortError" || pane.controller !== controller) return;
    pane.tokens.textContent = "";
    pane.count.textContent = pane.cpt.textContent = "–";
    pane.note.textContent = "";
    showError(pane.error, err);
    pane.root.dataset.state = "error";
  }
}

let timer = null;
function refresh(delay = 120) {
  clearTimeout(timer);
  timer = setTimeout(() => panes.forEach(tokenize), delay);
}

// ---- how a word is built
const mergeSection = document.getElementById("merges");
const mergeError = mergeSection.querySelector(".error");
const stepsBox = mergeSection.querySelector(".steps");

async function showMerges() {
  mergeSection.dataset.state = "loading";
  try {
    const answer = await api("POST", "/pages/api/merges",
                             { tokenizer: panes[0].choice.value || "served", text: document.getElementById("word").value });
    clearError(mergeError);
    stepsBox.textContent = "";
    for (const piece of answer.pieces) {
      const box = el("div", { className: "piece" }, el("div", { className: "muted" }, `piece ${JSON.stringify(piece.piece)}`));
      piece.steps.forEach((step, n) => {
        const tokens = el("span", { className: "tokens" });
        renderTokens(tokens, step.ids, answer.tokens);
        if (step.merged !== null) tokens.children[step.merged].classList.add("merged");
        const label = n === 0 ? "bytes" : `rank ${step.rank}`;
        box.append(el("div", { className: "step", dataset: { step: String(n) } },
                      el("span", { className: "n" }, label), tokens));
      });
      stepsBox.append(box);
    }
    const final = el("div", { className: "step final" }, el("span", { className: "n" }, "encode()"));
    const finalTokens = el("span", { className: "tokens" });
    renderTokens(finalTokens, answer.ids, answer.tokens);
    final.append(finalTokens, el("span", { className: "muted" }, JSON.stringify(answer.ids)));
    stepsBox.append(final);
    mergeSection.dataset.state = "ready";
  } catch (err) {
    stepsBox.textContent = "";
    showError(mergeError, err);
    mergeSection.dataset.state = "error";
  }
}

// ---- ids -> tokens
const idsSection = document.getElementById("ids");
const idsError = idsSection.querySelector(".error");

/** "31373, 995 x" -> [31373, 995, "x"]: numbers where they are numbers, the rest left for the service to refuse,
 *  so the message is the API's own ("ids[2]: Input should be a valid integer"). */
function parseIds(raw) {
  return raw.split(/[\s,\[\]]+/).filter(Boolean).map((w) => (/^-?\d+$/.test(w) ? Number(w) : w));
}

async function lookUpIds() {
  idsSection.dataset.state = "loading";
  const tokensBox = idsSection.querySelector(".tokens");
  const decoded = idsSection.querySelector(".decoded");
  try {
    const answer = await api("POST", "/pages/api/ids",
                             { tokenizer: panes[0].choice.value || "served", ids: parseIds(document.getElementById("ids-input").value) });
    clearError(idsError);
    renderTokens(tokensBox, answer.ids, answer.tokens);
    decoded.textContent = `decoded: ${JSON.stringify(answer.text)}`;
    idsSection.dataset.state = "ready";
  } catch (err) {
    tokensBox.textContent = decoded.textContent = "";
    showError(idsError, err);
    idsSection.dataset.state = "error";
  }
}

async function start() {
  let choices;
  try {
    choices = await api("GET", "/pages/api/tokenizers");
  } catch (err) {
    showError(banner, err);
    return;
  }
  fillChoices(panes[0].choice, choices.tokenizers, choices.left, false);
  fillChoices(panes[1].choice, choices.tokenizers, choices.right, true);
  text.addEventListener("input", () => refresh());
  special.addEventListener("change", () => refresh(0));
  panes.forEach((pane) => pane.choice.addEventListener("change", () => tokenize(pane)));
  document.getElementById("merge-form").addEventListener("submit", (e) => { e.preventDefault(); showMerges(); });
  document.getElementById("ids-form").addEventListener("submit", (e) => { e.preventDefault(); lookUpIds(); });
  document.body.dataset.ready = "true";
  refresh(0);
  showMerges();
}

start();

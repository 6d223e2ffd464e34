// dermdiff-lora review: keyboard-first page. Everything the server knows comes from /api (token header).
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const mode = document.body.dataset.mode;
const $ = (id) => document.getElementById(id);
let state = null, position = 0, view = null, picked = [], draft = {}, step = 0, ticket = 0;

async function api(path, body) {
  const init = { headers: { "X-Review-Token": token }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text) { $("message").textContent = text || ""; }

function showProgress() {
  $("progress").textContent = `${state.answered} / ${state.n} answered`;
  if (mode === "qc") {
    $("cells").innerHTML = "";
    for (const c of state.cells) {
      const li = document.createElement("li");
      li.textContent = `${c.cell}: ${c.done} / ${c.n}`;
      $("cells").appendChild(li);
    }
  }
}

async function go(p) {
  if (p < 0 || p >= state.n) return;
  position = p;
  picked = []; draft = {}; step = 0;
  const mine = ++ticket;
  const loaded = await api(`/api/item/${p}`);
  if (mine !== ticket) return;  // a later move won the race: show that one
  view = loaded;
  $("image").src = `/image/${p}?token=${encodeURIComponent(token)}`;
  $("position").textContent = `image ${p + 1} of ${state.n}`;
  if (mode === "qc") showQc(); else showStudy();
  showAnswer();
  say("");
  document.body.dataset.position = String(p);  // set last: the page is ready for this image
}

function showAnswer() {
  const a = view.answer, box = $("answer");
  box.className = a && a.verdict ? a.verdict : "";
  if (!a) { box.textContent = "not answered yet"; return; }
  box.textContent = mode === "qc"
    ? `answered: ${a.verdict}${a.reasons.length ? " (" + a.reasons.join(", ") + ")" : ""}`
    : `answered: ${a.source}, confidence ${a.confidence}, realism ${a.realism}, ${a.diagnosis}, ${a.tone}`;
}

// ---------------------------------------------------------------------------------------- QC mode
function showQc() {
  const info = $("info");
  info.innerHTML = "";
  const rows = [["cell", view.cell], ["prompt", view.info.prompt], ["seed", view.info.seed],
                ["ITA", view.info.ita], ["file", view.info.file]];
  if (view.has_nearest) rows.push(["nearest training", `${view.info.nearest} (cosine ${view.info.cosine})`]);
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === "") continue;
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = String(v);
    info.append(dt, dd);
  }
  $("nearest-box").hidden = !view.has_nearest;
  if (view.has_nearest) {
    $("nearest").src = `/nearest/${position}?token=${encodeURIComponent(token)}`;
    $("nearest-caption").textContent = `nearest training image, cosine ${view.info.cosine}`;
  }
  $("note").value = ""; $("note").hidden = true;
  drawReasons();
}

function drawReasons() {
  const list = $("reasons");
  list.innerHTML = "";
  state.reasons.forEach((r, i) => {
    const li = document.createElement("li");
    li.textContent = `${i + 1} · ${r.label}`;
    li.dataset.code = r.code;
    if (picked.includes(r.code)) li.className = "on";
    list.appendChild(li);
  });
}

async function submit(body) {
  try {
    state = await api(`/api/answer/${position}`, body);
  } catch (err) { say(err.message); return; }
  showProgress();
  await go(position + 1 < state.n ? position + 1 : state.position < state.n ? state.position : position);
  if (state.answered === state.n) say("every image is answered: thank you");
}

function qcKey(e) {
  const k = e.key.toLowerCase();
  if (k >= "1" && k <= String(state.reasons.length)) {
    const code = state.reasons[Number(k) - 1].code;
    picked = picked.includes(code) ? picked.filter((c) => c !== code) : [...picked, code];
    drawReasons();
    if (code === "other" && picked.includes(code)) { $("note").hidden = false; $("note").focus(); e.preventDefault(); }
  } else if (k === "a") {
    submit({ verdict: "accept", reasons: [], note: "" });
  } else if (k === "r") {
    if (!picked.length) { say("pick at least one reason (1-7) before R"); return; }
    submit({ verdict: "reject", reasons: picked, note: $("note").value });
  } else return false;
  return true;
}

// ------------------------------------------------------------------------------------- study mode
function studySteps() {
  const pick = (list) => list.map((v, i) => `${i + 1} ${v}`).join(" · ");
  return [
    { key: "source", label: "Real or synthetic?", keys: "E real · S synthetic" },
    { key: "confidence", label: "How sure (1 guess … 5 certain)?", keys: "1-5" },
    { key: "realism", label: "How realistic (1 not at all … 5 fully)?", keys: "1-5" },
    { key: "diagnosis", label: "Diagnosis?", keys: pick(state.diagnoses), options: state.diagnoses },
    { key: "tone", label: "Skin tone group?", keys: pick(state.tones), options: state.tones },
  ];
}

function showStudy() {
  const list = $("steps");
  list.innerHTML = "";
  studySteps().forEach((s, i) => {
    const li = document.createElement("li");
    const value = draft[s.key] === undefined ? "" : ` → ${draft[s.key]}`;
    li.textContent = `${s.label} (${s.keys})${value}`;
    li.className = i === step ? "current" : i < step ? "done" : "";
    list.appendChild(li);
  });
}

function studyKey(e) {
  const steps = studySteps(), s = steps[step], k = e.key.toLowerCase();
  if (k === "backspace") { step = Math.max(0, step - 1); delete draft[steps[step].key]; showStudy(); return true; }
  let value;
  if (s.key === "source") value = k === "e" ? "real" : k === "s" ? "synthetic" : undefined;
  else if (s.options) value = s.options[Number(k) - 1];
  else if (k >= "1" && k <= "5") value = Number(k);
  if (value === undefined) return false;
  draft[s.key] = value; step += 1;
  if (step === steps.length) submit(draft); else showStudy();
  return true;
}

// --------------------------------------------------------------------------------------- shared
document.addEventListener("keydown", async (e) => {
  if (!state || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.target === $("note")) {
    if (e.key === "Enter" || e.key === "Escape") { $("note").blur(); e.preventDefault(); }
    return;
  }
  if (e.key === "ArrowRight") { go(position + 1); e.preventDefault(); return; }
  if (e.key === "ArrowLeft") { go(position - 1); e.preventDefault(); return; }
  if (e.key.toLowerCase() === "u") {
    try {
      const r = await api("/api/undo", {});
      state = r; showProgress();
      if (r.undone !== null) await go(r.undone); else say("nothing to undo");
    } catch (err) { say(err.message); }
    return;
  }
  if ((mode === "qc" ? qcKey(e) : studyKey(e))) e.preventDefault();
});

(async () => {
  try {
    state = await api("/api/state");
    showProgress();
    await go(Math.min(state.position, state.n - 1));
    if (state.answered === state.n) say("every image is answered: thank you");
  } catch (err) { say(err.message); }
})();

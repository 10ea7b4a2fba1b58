// The playground: plain JavaScript against the server's own API, no build step and nothing fetched
// from elsewhere. Text streams in from server-sent events as the model writes it.
"use strict";

const $ = (id) => document.getElementById(id);
const INPUT_NAMES = {
  completions: "prompt", translate: "source text", "fill-mask": "text with [MASK]",
  embeddings: "text", predict: "a record as JSON, or text",
};
let models = [];

async function loadModels() {
  const response = await fetch("/v1/models");
  models = (await response.json()).data;
  $("model").innerHTML = models.map((m) => `<option value="${m.id}">${m.id}</option>`).join("");
  pickModel();
}

function current() {
  return models.find((m) => m.id === $("model").value);
}

function pickModel() {
  const model = current();
  const chips = model.tasks.map((t) => `<span class="chip">${t}</span>`).join("");
  const task = model.task ? `; fine-tuned for ${model.task.name} (reads ${model.task.inputs.join(", ")})` : "";
  $("about").innerHTML = `${model.arch} + ${model.objective} + ${model.pattern}, ` +
    `${(model.parameters / 1e6).toFixed(2)}M parameters${task}<br>${chips}`;
  $("task").innerHTML = model.tasks.map((t) => `<option value="${t}">${t}</option>`).join("");
  pickTask();
  drawPattern($("prompt").value, "");
}

function pickTask() {
  $("input-label").textContent = INPUT_NAMES[$("task").value];
}

function drawPattern(text, target) {
  const query = new URLSearchParams({ text: text || "the quick brown fox jumps over the lazy dog", target: target || "" });
  $("pattern").src = `/v1/models/${encodeURIComponent(current().id)}/pattern.png?${query}`;
}

function setState(state, message) {
  $("output").dataset.state = state;
  $("status").textContent = message || "";
  $("run").disabled = state === "running";
}

function decodingBody() {
  const body = { model: current().id, max_tokens: Number($("max-tokens").value), stream: true };
  const temperature = Number($("temperature").value);
  body.temperature = temperature;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

async function failed(response) {
  let message = `${response.status}`;
  try { message += ": " + (await response.json()).error.message; } catch (e) { /* not JSON */ }
  throw new Error(message);
}

// POST with stream: true, and append each chunk's text as it arrives.
async function streamText(path, body, key) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) await failed(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk[key] || []) $("output").textContent += choice.text;
    }
  }
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) await failed(response);
  return response.json();
}

async function run() {
  const model = current(), task = $("task").value, text = $("prompt").value;
  $("output").textContent = "";
  setState("running", "running...");
  const started = performance.now();
  try {
    if (task === "completions") {
      await streamText("/v1/completions", { ...decodingBody(), prompt: text }, "choices");
    } else if (task === "translate") {
      await streamText("/v1/translate", { ...decodingBody(), text }, "translations");
    } else if (task === "fill-mask") {
      const result = await post("/v1/fill-mask", { model: model.id, text, top_k: Number($("top-k").value) });
      $("output").textContent = result.results[0].masks.map((mask, i) =>
        `[MASK] ${i + 1}: ` + mask.map((c) => `${c.token} ${c.probability.toFixed(3)}`).join("  ")).join("\n");
    } else if (task === "embeddings") {
      const result = await post("/v1/embeddings", { model: model.id, input: text });
      const vector = result.data[0].embedding;
      $("output").textContent = `${vector.length} dimensions\n[${vector.slice(0, 8).map((x) => x.toFixed(4)).join(", ")}, ...]`;
    } else {
      let record;
      try { record = JSON.parse(text); } catch (e) { record = { [model.task.inputs[0]]: text }; }
      const result = await post("/v1/predict", { model: model.id, instances: [record] });
      $("output").textContent = JSON.stringify(result.predictions[0], null, 2);
    }
    setState("done", `done in ${((performance.now() - started) / 1000).toFixed(2)} s`);
    drawPattern(text, task === "completions" || task === "translate" ? $("output").textContent : "");
  } catch (error) {
    $("output").textContent = String(error.message || error);
    setState("error", "failed");
  }
}

$("model").addEventListener("change", pickModel);
$("task").addEventListener("change", pickTask);
$("run").addEventListener("click", run);
loadModels();

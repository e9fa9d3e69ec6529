// The scratchnet playground: build a dataset, train a network on it and watch it learn, through
// the service's /v1 API. No framework and no build step; every request goes through `api()` or
// `picture()`, which send the API key (typed by the user, kept in session storage only) as a
// Bearer token. Pictures are fetched as blobs for the same reason: an <img src> cannot send it.
//
// State lives in the URL hash (see CONTROLS): a link reproduces the experiment.

const KEY_STORAGE = "scratchnet-api-key";
const GENERATED_KINDS = ["moons", "circles", "blobs", "xor", "spiral", "gaussian"];
const KINDS_WITH_CLASSES = ["blobs", "spiral", "gaussian"];
const SCHEDULES_WITH_DECAY = ["step", "exponential", "inverse_time", "plateau"];
const DATASET_DEBOUNCE_MS = 300;
const SWEEP_POLL_MS = 500;
const PROBE_STEP = 0.02; // arrow keys move the probe by this share of the plot
// The animation's size: each frame is a whole decision-boundary figure. The tutorial job's at
// the service's default (50 frames of 480x360) took 29 s on 2 cores at a load average of 20,
// against the 30 s request limit; 25 frames of 400x300 on a 60-point grid took 10 s.
const EVOLUTION_QUERY = "max_frames=25&width=400&height=300&resolution=60";

const $ = (id) => document.getElementById(id);

// --- the URL hash: hash key -> control -------------------------------------------------------

// [hash key, element id, kind]; "layers" is handled by the layer editor.
const CONTROLS = [
  ["kind", "kind", "text"],
  ["n", "n_samples", "number"],
  ["noise", "noise", "number"],
  ["classes", "n_classes", "number"],
  ["dseed", "data_seed", "number"],
  ["test", "test_fraction", "number"],
  ["act", "activation", "text"],
  ["opt", "optimizer", "text"],
  ["lr", "learning_rate", "number"],
  ["sched", "lr_schedule", "text"],
  ["decay", "lr_decay", "number"],
  ["decay_epochs", "lr_decay_epochs", "number"],
  ["batch", "batch_size", "number"],
  ["l1", "l1", "number"],
  ["l2", "l2", "number"],
  ["epochs", "epochs", "number"],
  ["seed", "seed", "number"],
  ["baseline", "baseline", "check"],
  ["vary", "compare-parameter", "text"],
  ["values", "compare-values", "text"],
];

const page = {
  limits: null, // max_hidden_layers, max_units_per_layer: from the OpenAPI document
  features: { jobBoundary: false, evolution: false, neurons: false },
  keysRequired: false,
  layers: [3],
  dataset: null, // the DatasetPublic the page trains on
  datasetRequest: null, // Promise of the dataset being created
  uploadedDatasetId: null,
  job: null,
  model: null, // ModelPublic of the finished job
  stream: null, // AbortController of the event stream
  history: [], // progress points of the current job
  snapshotEpoch: null,
  liveFrames: 0, // live boundaries shown while the current job trained
  liveRefresh: null, // { running, pending } while the live boundary is fetched
  plotArea: null, // where the final boundary's plot lies in its picture (its PNG says)
  probe: null, // [x, y] data coordinates of the last probed point
  sweep: null,
  sweepTimer: null,
  pictureUrls: new Map(), // img id -> blob URL (revoked when replaced)
};

// --- the API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { detail: `the service answered ${response.status} ${response.statusText}` };
  }
}

async function send(method, path, { json, body, contentType, signal, cache } = {}) {
  const init = { method, headers: authHeaders(), signal, cache };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.headers["Content-Type"] = contentType;
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response;
}

async function api(method, path, options = {}) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

// PNG text chunks (tEXt: keyword NUL text), e.g. the plot area engine.plotting writes.
function pngText(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const texts = {};
  let offset = 8; // the signature
  const decoder = new TextDecoder("latin1");
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = decoder.decode(bytes.subarray(offset + 4, offset + 8));
    if (type === "tEXt") {
      const data = bytes.subarray(offset + 8, offset + 8 + length);
      const nul = data.indexOf(0);
      texts[decoder.decode(data.subarray(0, nul))] = decoder.decode(data.subarray(nul + 1));
    }
    if (type === "IDAT" || type === "IEND") break; // text before the image data is all we need
    offset += 12 + length;
  }
  return texts;
}

// Fetch a picture with the key and show it in <img id=imageId>, unless `still()` says it is no
// longer wanted once it arrived; returns its PNG text chunks (null when not shown).
// `cache: "no-cache"` for a picture that changes under one URL (a running job's latest).
async function picture(imageId, path, { cache = "default", still = () => true } = {}) {
  const response = await send("GET", path, { cache });
  const blob = await response.blob();
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (!still()) return null;
  const image = $(imageId);
  const old = page.pictureUrls.get(imageId);
  const url = URL.createObjectURL(blob);
  page.pictureUrls.set(imageId, url);
  await new Promise((resolve) => {
    image.onload = resolve;
    image.onerror = resolve;
    image.src = url;
    image.hidden = false;
  });
  if (old) URL.revokeObjectURL(old);
  return blob.type === "image/png" ? pngText(bytes) : {};
}

// --- messages and errors -------------------------------------------------------------------------

function say(text, failed = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("failed", failed);
}

function errorBox(control) {
  return document.getElementById(`${control.id}-error`);
}

function clearErrors(form) {
  for (const box of form.querySelectorAll(".error")) {
    box.textContent = "";
    box.hidden = true;
  }
  for (const control of form.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
  }
}

function showError(box, text) {
  box.textContent = box.textContent ? `${box.textContent} ${text}` : text;
  box.hidden = false;
}

// The problem's detail next to the control it is about: a 422's `errors` name fields by `loc`
// (["body", "hyperparameters", "learning_rate"]); `fields(loc)` picks the control or null.
function showProblem(error, fallbackBox, fields) {
  if (!(error instanceof ApiError)) {
    showError(fallbackBox, String(error.message || error));
    return;
  }
  if (error.status === 401) {
    showError($("api-key-error"), error.problem.detail);
    $("api-key").setAttribute("aria-invalid", "true");
    $("api-key").focus();
    return;
  }
  const issues = error.problem.errors || [];
  let placed = false;
  for (const issue of issues) {
    const control = fields(issue.loc || []);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      const box = errorBox(control) || fallbackBox;
      showError(box, issues.length === 1 ? error.problem.detail : issue.msg);
      placed = true;
    }
  }
  if (!placed) showError(fallbackBox, error.problem.detail);
}

function dataField(loc) {
  const [where, name] = loc;
  if (where !== "body" && where !== "query") return null;
  if (name === "seed") return $("data_seed");
  return document.querySelector(`#data-form [data-field="${name}"]`);
}

function networkField(loc, section = "hyperparameters") {
  const [where, part, name] = loc;
  if (where !== "body") return null;
  if (part === "dataset_id") return $("kind");
  if (part === "baseline") return $("baseline");
  if (part !== section) return null;
  if (name === "hidden_layers") {
    const index = loc[3];
    const units = document.querySelectorAll("#layers input");
    return typeof index === "number" && units[index] ? units[index] : units[0] || $("add-layer");
  }
  return document.querySelector(`#network-form [data-field="${name}"]`);
}

// --- number formatting -------------------------------------------------------------------------

const percent = (value) => (value == null ? "–" : `${(100 * value).toFixed(1)}%`);
const loss = (value) => (value == null ? "–" : value.toPrecision(4));

function counter(id, text, value) {
  const element = $(id);
  element.textContent = text;
  if (value == null) element.removeAttribute("data-value");
  else element.dataset.value = String(value);
}

function showPoint(point, epochs) {
  counter("epoch-counter", `${point.epoch} / ${epochs}`, point.epoch);
  counter("train-loss", loss(point.train_loss), point.train_loss);
  counter("test-loss", loss(point.test_loss), point.test_loss);
  counter("train-accuracy", percent(point.train_accuracy), point.train_accuracy);
  counter("test-accuracy", percent(point.test_accuracy), point.test_accuracy);
}

// --- the layer editor ----------------------------------------------------------------------------

function renderLayers() {
  const list = $("layers");
  list.replaceChildren();
  const max = page.limits.max_units_per_layer;
  page.layers.forEach((units, index) => {
    const item = document.createElement("li");
    const id = `layer-${index}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = `Layer ${index + 1} units`;
    const minus = document.createElement("button");
    minus.type = "button";
    minus.textContent = "−";
    minus.setAttribute("aria-label", `Fewer units in layer ${index + 1}`);
    minus.disabled = units <= 1;
    minus.addEventListener("click", () => setUnits(index, units - 1));
    const input = document.createElement("input");
    input.type = "number";
    input.id = id;
    input.min = "1";
    input.max = String(max);
    input.step = "1";
    input.value = String(units);
    input.setAttribute("aria-describedby", `${id}-error`);
    input.addEventListener("change", () => setUnits(index, Number(input.value)));
    const plus = document.createElement("button");
    plus.type = "button";
    plus.textContent = "+";
    plus.setAttribute("aria-label", `More units in layer ${index + 1}`);
    plus.disabled = units >= max;
    plus.addEventListener("click", () => setUnits(index, units + 1));
    const error = document.createElement("p");
    error.className = "error";
    error.id = `${id}-error`;
    error.setAttribute("role", "alert");
    error.hidden = true;
    item.append(label, minus, input, plus, error);
    list.append(item);
  });
  $("add-layer").disabled = page.layers.length >= page.limits.max_hidden_layers;
  $("remove-layer").disabled = page.layers.length === 0;
  $("layer-limits").textContent =
    page.layers.length === 0
      ? "(none: logistic regression)"
      : `(up to ${page.limits.max_hidden_layers} layers of ${max} units)`;
}

function setUnits(index, units) {
  if (!Number.isInteger(units) || units < 1) units = 1;
  page.layers[index] = Math.min(units, page.limits.max_units_per_layer);
  renderLayers();
  document.getElementById(`layer-${index}`).focus();
  saveHash();
}

// --- the hash ------------------------------------------------------------------------------------

function saveHash() {
  const params = new URLSearchParams();
  for (const [key, id, kind] of CONTROLS) {
    const control = $(id);
    if (kind === "check") params.set(key, control.checked ? "1" : "0");
    else params.set(key, control.value);
  }
  params.set("layers", page.layers.join("-"));
  if ($("kind").value === "csv" && page.uploadedDatasetId) params.set("dataset", page.uploadedDatasetId);
  history.replaceState(null, "", `#${params}`);
}

function loadHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const [key, id, kind] of CONTROLS) {
    if (!params.has(key)) continue;
    const control = $(id);
    if (kind === "check") control.checked = params.get(key) === "1";
    else control.value = params.get(key);
  }
  if (params.has("layers")) {
    const text = params.get("layers");
    page.layers = text === "" ? [] : text.split("-").map(Number).filter((n) => Number.isInteger(n) && n > 0);
  }
  page.uploadedDatasetId = params.get("dataset");
}

// --- the dataset ---------------------------------------------------------------------------------

function numberOf(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

function showDataFields() {
  const kind = $("kind").value;
  const generated = GENERATED_KINDS.includes(kind);
  for (const field of document.querySelectorAll("#data-form .generated")) field.hidden = !generated;
  document.querySelector("#data-form .classes").hidden = !KINDS_WITH_CLASSES.includes(kind);
  document.querySelector("#data-form .upload").hidden = kind !== "csv";
}

function datasetBody() {
  const kind = $("kind").value;
  const body = {
    kind,
    n_samples: numberOf("n_samples"),
    noise: numberOf("noise"),
    seed: numberOf("data_seed"),
    test_fraction: numberOf("test_fraction"),
  };
  if (KINDS_WITH_CLASSES.includes(kind)) body.n_classes = numberOf("n_classes");
  return body;
}

let datasetTimer = null;
function datasetChanged() {
  delete document.body.dataset.dataset;
  showDataFields();
  saveHash();
  clearTimeout(datasetTimer);
  datasetTimer = setTimeout(() => {
    page.datasetRequest = makeDataset();
  }, DATASET_DEBOUNCE_MS);
}

async function makeDataset() {
  const form = $("data-form");
  clearErrors(form);
  page.dataset = null;
  delete document.body.dataset.dataset;
  try {
    const kind = $("kind").value;
    let dataset;
    if (kind === "csv") {
      const file = $("csv").files[0];
      if (file) {
        const query = new URLSearchParams({ name: file.name.slice(0, 200) });
        const fraction = numberOf("test_fraction");
        if (fraction !== undefined) query.set("test_fraction", String(fraction));
        dataset = await api("POST", `/v1/datasets?${query}`, {
          body: await file.text(),
          contentType: "text/csv",
        });
      } else if (page.uploadedDatasetId) {
        dataset = await api("GET", `/v1/datasets/${encodeURIComponent(page.uploadedDatasetId)}`);
      } else {
        say("Choose a CSV file to upload.");
        return null;
      }
      page.uploadedDatasetId = dataset.id;
      saveHash();
    } else {
      dataset = await api("POST", "/v1/datasets", { json: datasetBody() });
    }
    page.dataset = dataset;
    $("dataset-caption").textContent =
      `${dataset.name}: ${dataset.n_samples} points, ${dataset.n_classes} classes, ` +
      `${dataset.train_size} to train, ${dataset.test_size} to test (training points filled, test points hollow)`;
    if (dataset.n_features === 2) {
      await picture("dataset-image", `/v1/datasets/${dataset.id}/image.png`);
    } else {
      $("dataset-image").hidden = true;
      $("dataset-caption").textContent += `; ${dataset.n_features} features, so no pictures of the plane`;
    }
    say("Dataset ready. Set up the network and train.");
    document.body.dataset.dataset = dataset.id;
    return dataset;
  } catch (error) {
    showProblem(error, $("data-error"), dataField);
    say("The dataset could not be made: see the message next to the data controls.", true);
    return null;
  }
}

async function currentDataset() {
  if (page.dataset) return page.dataset;
  clearTimeout(datasetTimer);
  page.datasetRequest = page.datasetRequest || makeDataset();
  const dataset = await page.datasetRequest;
  page.datasetRequest = null;
  return dataset;
}

// --- the network ---------------------------------------------------------------------------------

function hyperparameters() {
  const chosen = {
    hidden_layers: [...page.layers],
    activation: $("activation").value,
    optimizer: $("optimizer").value,
    learning_rate: numberOf("learning_rate"),
    lr_schedule: $("lr_schedule").value,
    batch_size: numberOf("batch_size") ?? null,
    l1: numberOf("l1"),
    l2: numberOf("l2"),
    epochs: numberOf("epochs"),
    seed: numberOf("seed"),
  };
  if (SCHEDULES_WITH_DECAY.includes(chosen.lr_schedule)) {
    chosen.lr_decay = numberOf("lr_decay");
    chosen.lr_decay_epochs = numberOf("lr_decay_epochs");
  }
  // record about 200 points whatever the epochs, as the loss chart needs no more
  if (Number.isInteger(chosen.epochs) && chosen.epochs > 0) {
    chosen.record_every = Math.max(1, Math.round(chosen.epochs / 200));
  }
  return chosen;
}

function showScheduleFields() {
  const decays = SCHEDULES_WITH_DECAY.includes($("lr_schedule").value);
  for (const field of document.querySelectorAll("#network-form .schedule")) field.hidden = !decays;
}

function resetResults() {
  delete document.body.dataset.trained;
  page.history = [];
  page.snapshotEpoch = null;
  page.liveFrames = 0;
  delete document.body.dataset.liveFrames;
  page.model = null;
  page.plotArea = null;
  page.probe = null;
  for (const id of ["boundary", "baseline-boundary", "evolution", "neurons"]) $(id).hidden = true;
  $("boundary").classList.remove("clickable");
  $("probe-marker").hidden = true;
  $("boundary").removeAttribute("tabindex");
  $("probabilities").replaceChildren();
  for (const id of ["baseline-caption", "evolution-caption", "neurons-caption"]) $(id).textContent = "";
  $("boundary-caption").textContent = "The decision boundary appears here while it trains.";
  $("export").hidden = true;
  for (const id of ["epoch-counter", "train-loss", "test-loss", "train-accuracy", "test-accuracy"]) {
    counter(id, "–", null);
  }
  drawChart();
}

function setTraining(training) {
  $("train").disabled = training;
  $("cancel").disabled = !training;
  $("compare").disabled = training || page.sweep !== null;
}

async function train(event) {
  event.preventDefault();
  const form = $("network-form");
  clearErrors(form);
  clearErrors($("data-form"));
  const dataset = await currentDataset();
  if (!dataset) return;
  resetResults();
  let job;
  try {
    job = await api("POST", "/v1/jobs", {
      json: { dataset_id: dataset.id, hyperparameters: hyperparameters(), baseline: $("baseline").checked },
    });
  } catch (error) {
    showProblem(error, $("network-error"), (loc) => networkField(loc));
    say("The job was not accepted: see the message next to the network controls.", true);
    return;
  }
  page.job = job;
  setTraining(true);
  say(`Training ${job.id}…`);
  const finished = await follow(job);
  setTraining(false);
  await finish(finished);
}

// The job's server-sent events, read with fetch() so that the key can be sent (EventSource
// cannot send headers). Resolves with the job once finished.
async function follow(job) {
  const controller = new AbortController();
  page.stream = controller;
  let final = null;
  try {
    const response = await send("GET", `/v1/jobs/${job.id}/events`, { signal: controller.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const message = { event: "message", data: "" };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") message.data += message.data ? `\n${text}` : text;
          else message[field] = text;
        }
        if (message.event === "progress") progress(JSON.parse(message.data), job.epochs);
        else if (message.event === "status") final = JSON.parse(message.data);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") say(`The event stream broke: ${error.message}`, true);
  } finally {
    page.stream = null;
  }
  // a stream cut short (the service stopping, the network): the job as it is now
  return final || (await api("GET", `/v1/jobs/${job.id}`));
}

let chartFrame = null;
function progress(point, epochs) {
  page.history.push(point);
  showPoint(point, epochs);
  if (chartFrame === null) {
    chartFrame = requestAnimationFrame(() => {
      chartFrame = null;
      drawChart();
    });
  }
  if (point.snapshot_epoch != null && point.snapshot_epoch !== page.snapshotEpoch) {
    page.snapshotEpoch = point.snapshot_epoch;
    refreshLiveBoundary();
  }
}

// The latest snapshot's boundary; one request at a time, the newest asked for last. The latest,
// not ?epoch=: a job thins the snapshots it keeps, so an epoch named by an event may be gone.
async function refreshLiveBoundary() {
  if (!page.features.jobBoundary || !page.job) return;
  if (page.liveRefresh) {
    page.liveRefresh.pending = true;
    return;
  }
  page.liveRefresh = { pending: false };
  const job = page.job;
  try {
    do {
      page.liveRefresh.pending = false;
      const epoch = page.snapshotEpoch;
      const live = () => page.job === job && !page.model; // not once the final one is shown
      if (!live()) break;
      const shown = await picture("boundary", `/v1/jobs/${job.id}/decision-boundary.png`, {
        cache: "no-cache",
        still: live,
      });
      if (!shown) break;
      $("boundary-caption").textContent = `Epoch ${epoch} or later (live: it refreshes as training goes on).`;
      page.liveFrames += 1;
      document.body.dataset.liveFrames = String(page.liveFrames);
    } while (page.liveRefresh.pending);
  } catch (error) {
    $("boundary-caption").textContent = `The live boundary could not be drawn: ${error.message}`;
  } finally {
    page.liveRefresh = null;
  }
}

async function finish(job) {
  page.job = job;
  if (job.metrics) {
    const last = page.history[page.history.length - 1];
    showPoint({ ...job.metrics, epoch: job.epoch }, job.epochs);
    if (last && last.epoch !== job.epoch) drawChart();
  }
  if (job.status === "failed") {
    const form = $("network-form");
    if (job.error && job.error.type === "diverged") {
      $("learning_rate").setAttribute("aria-invalid", "true");
      showError(errorBox($("learning_rate")), job.error.detail);
    } else {
      showError($("network-error"), job.error ? job.error.detail : "the job failed");
    }
    form.querySelector("[aria-invalid]")?.focus();
    say(`The job failed: ${job.error ? job.error.detail : "no reason given"}`, true);
    return;
  }
  if (job.status === "cancelled") {
    say("Cancelled: no model was registered.");
    return;
  }
  const model = await api("GET", `/v1/models/${job.model_id}`);
  page.model = model;
  say(
    `Trained in ${job.elapsed_seconds?.toFixed(1)} s: test accuracy ${percent(job.metrics.test_accuracy)}, ` +
      `train accuracy ${percent(job.metrics.train_accuracy)}.`,
  );
  if (model.n_features !== 2) {
    $("boundary-caption").textContent = "Pictures of the plane need a dataset with 2 features.";
    await showExport(model);
    return;
  }
  const texts = await picture("boundary", `/v1/models/${model.id}/decision-boundary.png`);
  page.plotArea = texts["plot-area"] ? JSON.parse(texts["plot-area"]) : null;
  const boundary = $("boundary");
  boundary.dataset.epoch = String(job.epoch);
  boundary.dataset.model = model.id;
  if (page.plotArea) {
    boundary.classList.add("clickable");
    boundary.tabIndex = 0;
    $("boundary-caption").textContent =
      "Final boundary. Click a point (or focus the picture and use the arrow keys) to see the " +
      "model's class probabilities there.";
  } else {
    $("boundary-caption").textContent = "Final boundary.";
  }
  const extras = [showExport(model)];
  if (job.baseline && job.baseline.model_id) {
    extras.push(
      picture("baseline-boundary", `/v1/models/${job.baseline.model_id}/decision-boundary.png`).then(() => {
        $("baseline-caption").textContent =
          `Logistic-regression baseline: test accuracy ${percent(job.baseline.test_accuracy)}, ` +
          `train accuracy ${percent(job.baseline.train_accuracy)}.`;
      }),
    );
  }
  if (page.features.neurons && model.architecture.length > 2) {
    extras.push(
      picture("neurons", `/v1/models/${model.id}/neurons.png`).then(() => {
        $("neurons-caption").textContent = "Every hidden unit's activation over the plane, layer by layer.";
      }),
    );
  }
  if (page.features.evolution && job.snapshot_epoch != null) {
    extras.push(
      picture("evolution", `/v1/jobs/${job.id}/evolution.gif?${EVOLUTION_QUERY}`).then(() => {
        $("evolution-caption").textContent = "How the boundary evolved while it trained.";
      }),
    );
  }
  const outcomes = await Promise.allSettled(extras);
  for (const outcome of outcomes) {
    if (outcome.status === "rejected") say(`A picture could not be drawn: ${outcome.reason.message}`, true);
  }
  document.body.dataset.trained = model.id;
}

async function showExport(model) {
  const response = await send("GET", `/v1/models/${model.id}/export`);
  const link = $("export");
  const old = page.pictureUrls.get("export");
  const url = URL.createObjectURL(await response.blob());
  page.pictureUrls.set("export", url);
  if (old) URL.revokeObjectURL(old);
  link.href = url;
  link.download = `${model.id}.npz`;
  link.hidden = false;
}

async function cancel() {
  if (!page.job) return;
  $("cancel").disabled = true;
  try {
    await api("POST", `/v1/jobs/${page.job.id}/cancel`);
    if (page.stream) say("Cancelling…"); // unless its final status came first
  } catch (error) {
    showProblem(error, $("network-error"), () => null);
  }
}

// --- probabilities at a point of the plane -------------------------------------------------------

// The data coordinates at a pixel of the picture (natural pixels), as its plot area says; null
// outside the plot.
function dataAt(px, py) {
  const area = page.plotArea;
  const u = (px - area.left) / area.width;
  const v = (py - area.top) / area.height;
  if (u < 0 || u > 1 || v < 0 || v > 1) return null;
  return [area.x[0] + u * (area.x[1] - area.x[0]), area.y[1] - v * (area.y[1] - area.y[0])];
}

async function probe(point) {
  const model = page.model;
  if (!model || !point) return;
  page.probe = point;
  const output = $("probabilities");
  try {
    const answer = await api("POST", `/v1/models/${model.id}/predict`, { json: { points: [point] } });
    const rows = answer.probabilities[0].map((probability, index) => {
      const row = document.createElement("div");
      row.className = "probability";
      row.dataset.class = String(model.classes[index]);
      row.dataset.probability = String(probability);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `var(--class-${index % 10})`;
      const name = document.createElement("span");
      name.textContent = `class ${model.classes[index]}`;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${(100 * probability).toFixed(1)}%`;
      fill.style.background = `var(--class-${index % 10})`;
      bar.append(fill);
      const value = document.createElement("span");
      value.textContent = percent(probability);
      row.append(swatch, name, bar, value);
      return row;
    });
    const where = document.createElement("p");
    where.className = "probe";
    where.dataset.x = String(point[0]);
    where.dataset.y = String(point[1]);
    where.textContent = `At (${point[0].toFixed(3)}, ${point[1].toFixed(3)}): predicted class ${answer.classes[0]}`;
    output.replaceChildren(where, ...rows);
    placeMarker(point);
  } catch (error) {
    output.textContent = `No prediction: ${error.message}`;
  }
}

// The probed point's marker over the picture, where the picture's axes put it.
function placeMarker([x, y]) {
  const area = page.plotArea;
  const image = $("boundary");
  const marker = $("probe-marker");
  const px = area.left + ((x - area.x[0]) / (area.x[1] - area.x[0])) * area.width;
  const py = area.top + ((area.y[1] - y) / (area.y[1] - area.y[0])) * area.height;
  marker.style.left = `${(100 * px) / image.naturalWidth}%`;
  marker.style.top = `${(100 * py) / image.naturalHeight}%`;
  marker.hidden = false;
}

function planeClicked(event) {
  if (!page.plotArea || !page.model) return;
  const image = event.currentTarget;
  const px = (event.offsetX * image.naturalWidth) / image.clientWidth;
  const py = (event.offsetY * image.naturalHeight) / image.clientHeight;
  const point = dataAt(px, py);
  if (point) probe(point);
  else $("probabilities").textContent = "That is outside the plot: click inside its axes.";
}

function planeKey(event) {
  const area = page.plotArea;
  if (!area || !page.model) return;
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
  const centre = [(area.x[0] + area.x[1]) / 2, (area.y[0] + area.y[1]) / 2];
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    probe(page.probe || centre);
  } else if (moves[event.key]) {
    event.preventDefault();
    const [dx, dy] = moves[event.key];
    const [x, y] = page.probe || centre;
    const clamp = (value, [low, high]) => Math.min(Math.max(value, low), high);
    probe([
      clamp(x + dx * PROBE_STEP * (area.x[1] - area.x[0]), area.x),
      clamp(y + dy * PROBE_STEP * (area.y[1] - area.y[0]), area.y),
    ]);
  }
}

// --- the loss chart ------------------------------------------------------------------------------

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawChart() {
  const canvas = $("loss-chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 640;
  const height = Math.round(width * 0.5625);
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = "12px system-ui, sans-serif";
  const points = page.history;
  const margin = { left: 54, right: 24, top: 12, bottom: 32 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  context.strokeStyle = "#c9c9cf";
  context.strokeRect(margin.left, margin.top, plotWidth, plotHeight);
  if (points.length === 0) {
    context.fillStyle = "#5a5a60";
    context.fillText("The loss curves appear here while it trains.", margin.left + 10, margin.top + 24);
    return;
  }
  const losses = points.flatMap((p) => [p.train_loss, p.test_loss]).filter((v) => v != null && v > 0);
  let low = Math.floor(Math.log10(Math.min(...losses)));
  let high = Math.ceil(Math.log10(Math.max(...losses)));
  if (high === low) high = low + 1;
  const lastEpoch = Math.max(page.job ? page.job.epochs : 1, 1);
  const x = (epoch) => margin.left + (epoch / lastEpoch) * plotWidth;
  const y = (value) => margin.top + ((high - Math.log10(value)) / (high - low)) * plotHeight;
  context.fillStyle = "#5a5a60";
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (let power = low; power <= high; power += 1) {
    const at = y(10 ** power);
    context.strokeStyle = "#e0e0e0";
    context.beginPath();
    context.moveTo(margin.left, at);
    context.lineTo(margin.left + plotWidth, at);
    context.stroke();
    context.fillText(power >= -2 && power <= 2 ? String(10 ** power) : `1e${power}`, margin.left - 6, at);
  }
  context.textAlign = "center";
  context.textBaseline = "top";
  for (let tick = 0; tick <= 4; tick += 1) {
    const epoch = Math.round((tick / 4) * lastEpoch);
    context.textAlign = tick === 4 ? "right" : "center";
    context.fillText(String(epoch), x(epoch) + (tick === 4 ? 6 : 0), margin.top + plotHeight + 6);
  }
  const series = [
    ["train_loss", cssVar("--class-0"), []],
    ["test_loss", cssVar("--class-1"), [6, 4]],
  ];
  for (const [name, colour, dash] of series) {
    const values = points.filter((p) => p[name] != null && p[name] > 0);
    if (values.length === 0) continue;
    context.strokeStyle = colour;
    context.lineWidth = 2;
    context.setLineDash(dash);
    context.beginPath();
    values.forEach((p, index) => {
      if (index === 0) context.moveTo(x(p.epoch), y(p[name]));
      else context.lineTo(x(p.epoch), y(p[name]));
    });
    context.stroke();
  }
  context.setLineDash([]);
  context.lineWidth = 1;
}

// --- compare: a sweep over one hyperparameter ----------------------------------------------------

function parseValues(parameter, text) {
  const items = text.split(",").map((item) => item.trim()).filter((item) => item !== "");
  if (items.length === 0) throw new Error("give at least one value, separated by commas");
  return items.map((item) => {
    if (parameter === "hidden_layers") {
      return item === "0" || item === "[]" ? [] : item.split(/[-x ]+/).map(Number);
    }
    if (parameter === "activation" || parameter === "optimizer") return item;
    if (parameter === "batch_size" && (item === "full" || item === "null")) return null;
    const number = Number(item);
    if (!Number.isFinite(number)) throw new Error(`${item} is not a number`);
    return number;
  });
}

function describe(value) {
  return Array.isArray(value) ? `[${value.join(", ")}]` : value === null ? "full batch" : String(value);
}

async function compare(event) {
  event.preventDefault();
  const form = $("compare-form");
  clearErrors(form);
  clearErrors($("network-form"));
  const parameter = $("compare-parameter").value;
  let values;
  try {
    values = parseValues(parameter, $("compare-values").value);
  } catch (error) {
    $("compare-values").setAttribute("aria-invalid", "true");
    showError($("compare-error"), error.message);
    return;
  }
  const dataset = await currentDataset();
  if (!dataset) return;
  const base = hyperparameters();
  delete base[parameter];
  let sweep;
  try {
    sweep = await api("POST", "/v1/sweeps", {
      json: { dataset_id: dataset.id, base, grid: { [parameter]: values }, name: `varying ${parameter}` },
    });
  } catch (error) {
    showProblem(error, $("compare-error"), (loc) => {
      if (loc[1] === "grid") return $("compare-values");
      return networkField(loc, "base");
    });
    return;
  }
  page.sweep = sweep;
  delete document.body.dataset.compared;
  $("compare").disabled = true;
  $("compare-cancel").disabled = false;
  $("grid").hidden = true;
  $("compare-table").hidden = true;
  pollSweep();
}

async function pollSweep() {
  const sweep = page.sweep;
  let current;
  try {
    current = await api("GET", `/v1/sweeps/${sweep.id}`);
  } catch (error) {
    $("compare-status").textContent = `The comparison could not be followed: ${error.message}`;
    endSweep();
    return;
  }
  const done = current.results.filter((row) => ["succeeded", "failed", "cancelled"].includes(row.status)).length;
  $("compare-status").textContent = `${current.status}: ${done} of ${current.results.length} configurations finished.`;
  renderTable(current);
  if (["succeeded", "failed", "cancelled"].includes(current.status)) {
    if (current.results.some((row) => row.model_id)) {
      try {
        await picture("grid", `/v1/sweeps/${current.id}/grid.png`);
      } catch (error) {
        $("compare-status").textContent += ` No grid picture: ${error.message}`;
      }
    }
    document.body.dataset.compared = current.id;
    endSweep();
    return;
  }
  page.sweepTimer = setTimeout(pollSweep, SWEEP_POLL_MS);
}

function endSweep() {
  page.sweep = null;
  page.sweepTimer = null;
  $("compare").disabled = page.stream !== null;
  $("compare-cancel").disabled = true;
}

function renderTable(sweep) {
  const body = $("compare-table").querySelector("tbody");
  body.replaceChildren();
  sweep.results.forEach((row, index) => {
    const tr = document.createElement("tr");
    const best = row.best || index === sweep.best_index;
    if (best) tr.className = "best";
    const cells = [
      Object.values(row.varied).map(describe).join(", "),
      row.status,
      loss(row.train_loss),
      loss(row.test_loss),
      percent(row.train_accuracy),
      percent(row.test_accuracy),
      best ? "★ best" : "",
    ];
    cells.forEach((text, column) => {
      const cell = document.createElement(column === 0 ? "th" : "td");
      if (column === 0) cell.scope = "row";
      cell.textContent = text;
      tr.append(cell);
    });
    body.append(tr);
  });
  $("compare-table").hidden = false;
}

async function cancelSweep() {
  if (!page.sweep) return;
  $("compare-cancel").disabled = true;
  try {
    await api("POST", `/v1/sweeps/${page.sweep.id}/cancel`);
  } catch (error) {
    showProblem(error, $("compare-error"), () => null);
  }
}

// --- start ---------------------------------------------------------------------------------------

function addErrorBoxes() {
  // one error line under every control, which aria-describedby points at
  for (const control of document.querySelectorAll("form [data-field], #compare-values")) {
    if (document.getElementById(`${control.id}-error`)) continue;
    const box = document.createElement("p");
    box.className = "error";
    box.id = `${control.id}-error`;
    box.setAttribute("role", "alert");
    box.hidden = true;
    control.closest(".field").append(box);
    const described = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", described ? `${described} ${box.id}` : box.id);
  }
}

const CHOICE_LABELS = { sgd: "gradient descent (sgd)" };

// The choices of each <select data-choices> (activations, optimizers, schedules), as the
// service's hyperparameters schema lists them; the select's data-default picked first.
function fillChoices(properties) {
  for (const select of document.querySelectorAll("select[data-choices]")) {
    const property = properties[select.dataset.field];
    if (!property || select.options.length) continue;
    for (const value of property.enum) {
      select.append(new Option(CHOICE_LABELS[value] || value, value, false, value === select.dataset.default));
    }
    select.title = property.description || "";
  }
}

// What this deployment offers, from its OpenAPI document: whether it asks for keys, which
// picture routes exist, the choices and limits of the hyperparameters. False when it needs a
// key the page does not have yet.
async function discover() {
  let document_;
  try {
    document_ = await api("GET", "/openapi.json");
  } catch (error) {
    if (error.status !== 401) throw error; // 401: the document is behind the key too
  }
  const schemes = document_ && document_.components && document_.components.securitySchemes;
  page.keysRequired = !document_ || Boolean(schemes);
  if (!document_ || (page.keysRequired && !apiKey())) {
    showError($("api-key-error"), "This service needs an API key: type it here to start.");
    $("api-key").setAttribute("aria-invalid", "true");
    say("This service needs an API key.");
    return false;
  }
  const paths = Object.keys(document_.paths || {});
  const has = (pattern) => paths.some((path) => pattern.test(path));
  page.features = {
    jobBoundary: has(/^\/v1\/jobs\/\{[^}]+\}\/decision-boundary\.png$/),
    evolution: has(/^\/v1\/jobs\/\{[^}]+\}\/evolution\.gif$/),
    neurons: has(/^\/v1\/models\/\{[^}]+\}\/neurons\.png$/),
  };
  const properties = document_.components.schemas.HyperparametersCreate.properties;
  fillChoices(properties);
  page.limits = {
    max_hidden_layers: properties.hidden_layers.maxItems,
    max_units_per_layer: properties.hidden_layers.items.maximum,
  };
  return true;
}

async function start() {
  $("api-key").value = apiKey();
  addErrorBoxes();
  drawChart();

  $("data-form").addEventListener("input", (event) => {
    if (event.target.id !== "csv") datasetChanged();
  });
  $("kind").addEventListener("change", () => datasetChanged());
  $("csv").addEventListener("change", () => {
    page.uploadedDatasetId = null;
    datasetChanged();
  });
  $("data-form").addEventListener("submit", (event) => event.preventDefault());
  $("key-form").addEventListener("submit", (event) => event.preventDefault());
  $("network-form").addEventListener("input", () => saveHash());
  $("network-form").addEventListener("change", () => {
    showScheduleFields();
    saveHash();
  });
  $("compare-form").addEventListener("input", () => saveHash());
  $("compare-parameter").addEventListener("change", () => {
    const defaults = { hidden_layers: "1,2,3,4,5,20,50", learning_rate: "0.1,0.5,1,2,5", l2: "0,0.001,0.01,0.1" };
    $("compare-values").value = defaults[$("compare-parameter").value] || $("compare-values").value;
    saveHash();
  });
  $("add-layer").addEventListener("click", () => {
    page.layers.push(page.layers[page.layers.length - 1] || 3);
    renderLayers();
    saveHash();
  });
  $("remove-layer").addEventListener("click", () => {
    page.layers.pop();
    renderLayers();
    saveHash();
  });
  $("network-form").addEventListener("submit", train);
  $("cancel").addEventListener("click", cancel);
  $("compare-form").addEventListener("submit", compare);
  $("compare-cancel").addEventListener("click", cancelSweep);
  $("boundary").addEventListener("click", planeClicked);
  $("boundary").addEventListener("keydown", planeKey);
  window.addEventListener("resize", () => drawChart());

  let keyTimer = null;
  $("api-key").addEventListener("input", () => {
    clearTimeout(keyTimer);
    keyTimer = setTimeout(async () => {
      const key = $("api-key").value.trim();
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
      $("api-key-error").hidden = true;
      $("api-key-error").textContent = "";
      $("api-key").removeAttribute("aria-invalid");
      await ready();
    }, DATASET_DEBOUNCE_MS);
  });
  await ready();
}

let started = false;
async function ready() {
  try {
    if (!(await discover())) return;
  } catch (error) {
    showProblem(error, $("data-error"), () => null);
    say("The service could not be reached.", true);
    return;
  }
  if (!started) {
    // the hash once the selects have their choices
    started = true;
    loadHash();
    showDataFields();
    showScheduleFields();
    saveHash();
  }
  renderLayers();
  page.dataset = null;
  page.datasetRequest = makeDataset();
  await page.datasetRequest;
  page.datasetRequest = null;
  document.body.dataset.ready = "true";
}

start();

// drface try-it page: a client of the public /v1 API only (verify, region-map, model).
// No build step and no dependencies. The API key lives in sessionStorage and goes in the X-API-Key header.
"use strict";

const KEY_STORAGE = "drface.apiKey";
const ALIGNED_PX = 112; // side of the aligned face the region masks cover
const PANEL_PX = 224; // region panels are drawn at twice the aligned size

const state = {
  model: null, // GET /v1/model answer, once loaded
  images: { 1: null, 2: null }, // decoded <img> of each chosen file (null when the browser cannot show it)
  faces: { 1: null, 2: null }, // the face /v1/verify found in each photo, redrawn when the window resizes
  regions: { 1: null, 2: null }, // last region-map answers, redrawn when the overlay opacity changes
};

const $ = (id) => document.getElementById(id);

// -- API ---------------------------------------------------------------------------------------------------
function apiHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE) || "";
  return key ? { "X-API-Key": key } : {};
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status; // HTTP status; 0 when the server could not be reached
  }
}

/** The API's error message of a failed response ({"error": {"code", "message"}}), never empty. */
async function errorMessage(response) {
  let message = "";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      message = body.error.message;
    }
  } catch (_) {
    // not JSON: fall back to the status line
  }
  if (!message) {
    message = `the server answered ${response.status} ${response.statusText || ""}`.trim();
  }
  const retryAfter = response.headers.get("Retry-After");
  if (response.status === 429 && retryAfter) {
    message += ` (retry in ${retryAfter} s)`;
  }
  return message;
}

/** fetch + JSON; throws ApiError with the API's message on any failure. */
async function callApi(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...apiHeaders(), ...(options.headers || {}) } });
  } catch (exc) {
    throw new ApiError(`could not reach the server (${exc.message})`, 0);
  }
  if (!response.ok) {
    throw new ApiError(await errorMessage(response), response.status);
  }
  return response.json();
}

async function loadModel() {
  state.model = await callApi("v1/model");
  $("model-name").textContent = `Model: ${state.model.name}@${state.model.version}.`;
  return state.model;
}

function formWith(fields) {
  const form = new FormData();
  for (const [name, file] of Object.entries(fields)) {
    form.append(name, file, file.name || name);
  }
  return form;
}

// -- messages ----------------------------------------------------------------------------------------------
function showError(message) {
  const box = $("error");
  box.textContent = message || "something went wrong";
  box.hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

function setStatus(text) {
  $("status").textContent = text;
}

// -- photos: preview, then the face box and the 5 landmarks ------------------------------------------------
function chosenFile(index) {
  const input = $(`image${index}`);
  return input.files && input.files.length ? input.files[0] : null;
}

/** Decode the chosen file for display; null when the browser cannot (the API still judges the file). */
function decodeFile(file) {
  return new Promise((resolve) => {
    const image = new Image();
    const url = URL.createObjectURL(file);
    image.onload = () => resolve(image);
    image.onerror = () => {
      URL.revokeObjectURL(url);
      resolve(null);
    };
    image.src = url;
  });
}

async function onFileChosen(index) {
  const file = chosenFile(index);
  state.images[index] = file ? await decodeFile(file) : null;
  state.faces[index] = null;
  drawPhoto(index, null);
  $("result").hidden = true;
  $("regions").hidden = true;
  clearError();
}

/** Draw photo `index` on its canvas, with `face` (box + landmarks, image pixels) when given. */
function drawPhoto(index, face) {
  const canvas = $(`photo${index}`);
  const image = state.images[index];
  $(`note${index}`).hidden = Boolean(image) || !chosenFile(index);
  if (!image) {
    canvas.hidden = true;
    return;
  }
  const scale = Math.min(1, 800 / Math.max(image.naturalWidth, image.naturalHeight));
  canvas.width = Math.round(image.naturalWidth * scale);
  canvas.height = Math.round(image.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
  if (!face) {
    return;
  }
  const shown = canvas.getBoundingClientRect(); // drawn "contain" in the element: lines of ~2.5 screen px
  const screenScale = Math.min(shown.width / canvas.width, shown.height / canvas.height) || 1;
  const line = Math.max(1, 2.5 / screenScale);
  const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
  ctx.lineWidth = line;
  ctx.strokeStyle = "#00e676";
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  for (const [x, y] of face.landmarks) {
    ctx.beginPath();
    ctx.arc(x * scale, y * scale, line * 1.5, 0, 2 * Math.PI);
    ctx.fillStyle = "#ff1744";
    ctx.fill();
    ctx.lineWidth = Math.max(1, line / 2);
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }
}

// -- result --------------------------------------------------------------------------------------------------
const POINT_MEANINGS = {
  best_accuracy: "calibrated on held-out people for the best accuracy",
  custom: "a threshold given as a number",
  fallback: "the card has no calibrated threshold",
};

/** Name of the operating point the verify answer used: its `operating_point`, or for a server that does not
 * send one, the model-card threshold equal to the applied threshold. */
function operatingPointName(verify) {
  if (typeof verify.operating_point === "string") {
    return verify.operating_point;
  }
  const thresholds = (state.model && state.model.thresholds) || {};
  const match = Object.entries(thresholds).find(([, value]) => Math.abs(value - verify.threshold) < 1e-9);
  return match ? match[0] : "custom";
}

const percent = (rate) => `${(100 * rate).toPrecision(2)}%`;

/** What the operating point means: the false and true accept rates measured at it, where the card has them. */
function operatingPointDetail(name) {
  const measured = ((state.model && state.model.operating_points) || {})[name];
  if (measured && typeof measured.far === "number" && typeof measured.tar === "number") {
    return `false accepts ${percent(measured.far)}, true accepts ${percent(measured.tar)} on held-out people`;
  }
  const far = /^far_(.+)$/.exec(name);
  if (far) {
    return `calibrated on held-out people for a false accept rate of ${far[1]}`;
  }
  return POINT_MEANINGS[name] || "";
}

function row(term, value) {
  const wrapper = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value;
  wrapper.append(dt, dd);
  return wrapper;
}

function showResult(verify) {
  const result = $("result");
  result.replaceChildren();
  const verdict = document.createElement("p");
  verdict.className = `verdict ${verify.verified ? "same" : "different"}`;
  verdict.textContent = verify.verified ? "Same person" : "Different people";
  const facts = document.createElement("dl");
  facts.append(
    row("similarity", verify.similarity.toFixed(4)),
    row("threshold", verify.threshold.toFixed(4)),
    row("operating point", operatingPointName(verify)),
    row("model", verify.model),
    row("server time", `${verify.time_ms.toFixed(0)} ms`),
  );
  const rule = document.createElement("p");
  rule.className = "rule";
  const detail = operatingPointDetail(operatingPointName(verify));
  rule.textContent = `Same person when similarity \u2265 threshold${detail ? ` (${detail})` : ""}.`;
  result.append(verdict, facts, rule);
  if (state.model && state.model.trained === false) {
    const warning = document.createElement("p");
    warning.className = "warning";
    warning.textContent = "This model is untrained: its similarities mean nothing.";
    result.append(warning);
  }
  result.hidden = false;
}

// -- region maps -----------------------------------------------------------------------------------------
function regionColor(j) {
  const colors = (state.model && state.model.region_colors) || [];
  return colors.length ? colors[j % colors.length] : "#888888";
}

function hexToRgb(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

/** Least-squares similarity transform [a, b, tx, ty] mapping points `from` onto `to`:
 * x' = a x - b y + tx, y' = b x + a y + ty (the alignment the server does, model/align.py). */
function similarity(from, to) {
  const n = from.length;
  const mean = (points, k) => points.reduce((sum, p) => sum + p[k], 0) / n;
  const [fx, fy, tx, ty] = [mean(from, 0), mean(from, 1), mean(to, 0), mean(to, 1)];
  let dot = 0;
  let cross = 0;
  let norm = 0;
  for (let i = 0; i < n; i += 1) {
    const [px, py] = [from[i][0] - fx, from[i][1] - fy];
    const [qx, qy] = [to[i][0] - tx, to[i][1] - ty];
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
    norm += px * px + py * py;
  }
  const a = dot / norm;
  const b = cross / norm;
  return [a, b, tx - (a * fx - b * fy), ty - (b * fx + a * fy)];
}

/** The aligned face (PANEL_PX square canvas) of photo `index`, or a grey square without a preview. */
function alignedFace(index, face) {
  const canvas = document.createElement("canvas");
  canvas.width = PANEL_PX;
  canvas.height = PANEL_PX;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000000";
  ctx.fillRect(0, 0, PANEL_PX, PANEL_PX);
  const image = state.images[index];
  const template = (state.model && state.model.aligned_landmarks) || [];
  if (!image || template.length !== face.landmarks.length) {
    ctx.fillStyle = "#808080";
    ctx.fillRect(0, 0, PANEL_PX, PANEL_PX);
    return canvas;
  }
  const k = PANEL_PX / ALIGNED_PX;
  const [a, b, tx, ty] = similarity(face.landmarks, template);
  ctx.setTransform(k * a, k * b, -k * b, k * a, k * tx, k * ty);
  ctx.drawImage(image, 0, 0);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  return canvas;
}

/** A canvas of the layer's mask, one pixel per cell, in the region colours. */
function maskCanvas(layer) {
  const canvas = document.createElement("canvas");
  canvas.width = layer.width;
  canvas.height = layer.height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(layer.width, layer.height);
  const rgb = Array.from({ length: layer.regions }, (_, j) => hexToRgb(regionColor(j)));
  layer.mask.forEach((cells, y) => {
    cells.forEach((region, x) => {
      const offset = 4 * (y * layer.width + x);
      pixels.data.set([...rgb[Math.min(Math.max(region, 0), layer.regions - 1)], 255], offset);
    });
  });
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function panel(caption, canvas) {
  const figure = document.createElement("figure");
  figure.className = "panel";
  const label = document.createElement("figcaption");
  label.textContent = caption;
  label.title = caption;
  figure.append(canvas, label);
  return figure;
}

function drawRegions(index) {
  const regionMap = state.regions[index];
  const view = $(`regions${index}`);
  view.replaceChildren();
  if (!regionMap) {
    return;
  }
  const heading = document.createElement("h3");
  heading.textContent = `Photo ${index}`;
  const grid = document.createElement("div");
  grid.className = "panels";
  const face = alignedFace(index, regionMap.face);
  grid.append(panel("aligned face", face));
  const alpha = Number($("opacity").value);
  for (const layer of regionMap.layers) {
    const canvas = document.createElement("canvas");
    canvas.width = PANEL_PX;
    canvas.height = PANEL_PX;
    canvas.className = "layer";
    canvas.dataset.layer = layer.name;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(face, 0, 0);
    ctx.globalAlpha = alpha; // face * (1 - alpha) + colour * alpha, as in the PNG
    ctx.imageSmoothingEnabled = false; // nearest neighbour: every cell keeps one region
    ctx.drawImage(maskCanvas(layer), 0, 0, PANEL_PX, PANEL_PX);
    grid.append(panel(`${layer.name} (${layer.height}x${layer.width})`, canvas));
  }
  if (!regionMap.layers.length) {
    const none = document.createElement("p");
    none.textContent = "This model has no DRConv layer, so there is no region map.";
    grid.append(none);
  }
  view.append(heading, grid);
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const count = Math.max(0, ...[1, 2].flatMap((i) => (state.regions[i] || { layers: [] }).layers.map((l) => l.regions)));
  for (let j = 0; j < count; j += 1) {
    const item = document.createElement("span");
    item.className = "legend-item";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = regionColor(j);
    swatch.dataset.color = regionColor(j);
    item.append(swatch, document.createTextNode(`region ${j}`));
    legend.append(item);
  }
}

// -- the verify button -----------------------------------------------------------------------------------
async function verify() {
  clearError();
  const files = { 1: chosenFile(1), 2: chosenFile(2) };
  if (!files[1] || !files[2]) {
    showError("Choose two photos first (Photo 1 and Photo 2).");
    return;
  }
  const button = $("verify");
  button.disabled = true;
  setStatus("verifying\u2026");
  $("result").hidden = true;
  $("regions").hidden = true;
  for (const index of [1, 2]) {
    state.faces[index] = null; // no box from an earlier answer while this one is pending or fails
    drawPhoto(index, null);
  }
  try {
    if (!state.model) {
      await loadModel();
    }
    const answer = await callApi("v1/verify", {
      method: "POST",
      body: formWith({ image1: files[1], image2: files[2] }),
    });
    [state.faces[1], state.faces[2]] = answer.faces;
    drawPhoto(1, state.faces[1]);
    drawPhoto(2, state.faces[2]);
    showResult(answer);
    setStatus("region maps\u2026");
    for (const index of [1, 2]) {
      state.regions[index] = await callApi("v1/region-map", {
        method: "POST",
        body: formWith({ image: files[index] }),
      });
    }
    drawLegend();
    drawRegions(1);
    drawRegions(2);
    $("regions").hidden = false;
    setStatus("");
  } catch (exc) {
    setStatus("");
    showError(exc instanceof ApiError ? exc.message : `unexpected error in the page: ${exc}`);
    if (exc instanceof ApiError && exc.status === 401) {
      $("api-key").focus(); // the server has keys: the person needs to enter one
    }
  } finally {
    button.disabled = false;
  }
}

// -- wiring ------------------------------------------------------------------------------------------------
function wireDrop(index) {
  const input = $(`image${index}`);
  const zone = input.closest(".drop");
  input.addEventListener("change", () => onFileChosen(index));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      const transfer = new DataTransfer();
      transfer.items.add(event.dataTransfer.files[0]);
      input.files = transfer.files;
      onFileChosen(index);
    }
  });
}

function init() {
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => {
    const key = keyInput.value.trim();
    if (key) {
      sessionStorage.setItem(KEY_STORAGE, key);
    } else {
      sessionStorage.removeItem(KEY_STORAGE);
    }
    state.model = null; // reload with the new key
  });
  wireDrop(1);
  wireDrop(2);
  $("verify").addEventListener("click", verify);
  $("opacity").addEventListener("input", () => {
    drawRegions(1);
    drawRegions(2);
  });
  window.addEventListener("resize", () => {
    drawPhoto(1, state.faces[1]);
    drawPhoto(2, state.faces[2]);
  });
  loadModel().catch(() => {
    // shown when the person presses Verify (e.g. a key is needed): no error before they act
  });
}

document.addEventListener("DOMContentLoaded", init);

// Trajectory geometry for the AnyI2V box editor: the same maths as core/trajectory.py (one
// implementation per language; tests/js and tests/unit check both on tests/fixtures/trajectory_cases.json).
// Pure functions, no DOM. Coordinates are image pixels.

export const DEFAULT_SIZE = 512;
// The limits of core/trajectory.py (tests/fixtures/trajectory_refused.json holds cases both refuse).
export const MAX_TEXT_CHARS = 524288;
export const MAX_DEPTH = 8;
export const MAX_GROUPS = 16;
export const MAX_PATH_POINTS = 1024;
export const MAX_QUERY_POINTS = 64;
export const MAX_SIDE = 16384;
export const MAX_FRAMES = 1024;

function edgeSlope(h0, h1, m0, m1) {
  const d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);
  if (Math.sign(d) !== Math.sign(m0)) return 0;
  if (Math.sign(m0) !== Math.sign(m1) && Math.abs(d) > Math.abs(3 * m0)) return 3 * m0;
  return d;
}

// Fritsch-Carlson derivatives with scipy's end conditions.
export function pchipSlopes(t, y) {
  const n = t.length;
  const h = [], delta = [];
  for (let k = 0; k < n - 1; k++) {
    h.push(t[k + 1] - t[k]);
    delta.push((y[k + 1] - y[k]) / h[k]);
  }
  const d = new Array(n).fill(0);
  if (n === 2) return [delta[0], delta[0]];
  for (let k = 1; k < n - 1; k++) {
    const a = delta[k - 1], b = delta[k];
    if (a === 0 || b === 0 || Math.sign(a) !== Math.sign(b)) d[k] = 0;
    else {
      const w1 = 2 * h[k] + h[k - 1], w2 = h[k] + 2 * h[k - 1];
      d[k] = (w1 + w2) / (w1 / a + w2 / b);
    }
  }
  d[0] = edgeSlope(h[0], h[1], delta[0], delta[1]);
  d[n - 1] = edgeSlope(h[n - 2], h[n - 3], delta[n - 2], delta[n - 3]);
  return d;
}

export function pchip(t, y, tq) {
  const d = pchipSlopes(t, y);
  return tq.map((x) => {
    let k = 0;
    while (k < t.length - 2 && x >= t[k + 1]) k++;
    const h = t[k + 1] - t[k];
    const s = (x - t[k]) / h;
    const h00 = 2 * s ** 3 - 3 * s ** 2 + 1, h10 = s ** 3 - 2 * s ** 2 + s;
    const h01 = -2 * s ** 3 + 3 * s ** 2, h11 = s ** 3 - s ** 2;
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1];
  });
}

const linspace = (n) => (n === 1 ? [0] : Array.from({ length: n }, (_, i) => i / (n - 1)));

// A polyline of [x, y] points -> numFrames points, PCHIP per axis over the point index.
export function resamplePath(path, numFrames) {
  if (path.length === numFrames) return path.map((p) => [p[0], p[1]]);
  if (numFrames === 1) return [[path[0][0], path[0][1]]];
  const t = linspace(path.length), tq = linspace(numFrames);
  const xs = pchip(t, path.map((p) => p[0]), tq);
  const ys = pchip(t, path.map((p) => p[1]), tq);
  return xs.map((x, i) => [x, ys[i]]);
}

// Boxes of one group for every frame: the first box moved along the path, its size going linearly
// to the end size, symmetric about the centre.
export function groupBoxes(group, numFrames) {
  const path = resamplePath(group.path, numFrames);
  const [x1, y1, x2, y2] = group.box;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2, w0 = x2 - x1, h0 = y2 - y1;
  return path.map((p, j) => {
    const f = numFrames > 1 ? j / (numFrames - 1) : 0;
    const w = w0 + (group.endSize[0] - w0) * f, h = h0 + (group.endSize[1] - h0) * f;
    const x = cx + p[0] - path[0][0], y = cy + p[1] - path[0][1];
    return [x - w / 2, y - h / 2, x + w / 2, y + h / 2];
  });
}

export function trajectoryBoxes(traj, numFrames) {
  return traj.groups.map((g) => groupBoxes(g, numFrames));
}

function fail(field, message) {
  const err = new Error(`${field}: ${message}`);
  err.field = field;
  throw err;
}

function finite(values, field) {
  if (!values.every((v) => typeof v === "number" && Number.isFinite(v))) fail(field, "contains a value that is not a finite number");
}

function count(list, maximum, field, what) {
  if (list.length > maximum) fail(field, `${list.length} ${what}, at most ${maximum} are allowed`);
}

function wholeNumber(v, field, maximum) {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > maximum) {
    fail(field, `expected a whole number from 1 to ${maximum}, got ${JSON.stringify(v)?.slice(0, 40)}`);
  }
  return v;
}

// Coordinates may lie in the image and at most one image size beyond each edge.
function inArea(points, traj, field) {
  const w = traj.width, h = traj.height, tol = 1e-6 * Math.max(w, h);
  for (const [x, y] of points) {
    if (x < -w - tol || x > 2 * w + tol || y < -h - tol || y > 2 * h + tol) {
      fail(field, `(${x}, ${y}) lies outside the allowed area x ${-w}..${2 * w}, y ${-h}..${2 * h} (at most one image size beyond the ${w}x${h} image)`);
    }
  }
}

export function validate(traj) {
  if (!traj.groups.length) fail("bounding_box", "no groups (draw at least one box)");
  count(traj.groups, MAX_GROUPS, "bounding_box", "groups");
  wholeNumber(traj.width, "width", MAX_SIDE);
  wholeNumber(traj.height, "height", MAX_SIDE);
  if (traj.frames !== null && traj.frames !== undefined) wholeNumber(traj.frames, "frames", MAX_FRAMES);
  traj.groups.forEach((g, i) => {
    finite(g.box, `bounding_box[${i}]`);
    finite(g.endSize, `target_box[${i}]`);
    const [x1, y1, x2, y2] = g.box;
    if (x2 <= x1 || y2 <= y1) fail(`bounding_box[${i}]`, "zero or negative size (need x2 > x1 and y2 > y1)");
    if (g.endSize[0] <= 0 || g.endSize[1] <= 0) fail(`target_box[${i}]`, "zero or negative end size");
    inArea([[x1, y1], [x2, y2]], traj, `bounding_box[${i}]`);
    if (x2 <= 0 || y2 <= 0 || x1 >= traj.width || y1 >= traj.height) fail(`bounding_box[${i}]`, "the first box lies entirely outside the image");
    if (g.endSize[0] > 3 * traj.width || g.endSize[1] > 3 * traj.height) {
      fail(`target_box[${i}]`, `end size ${g.endSize[0]} x ${g.endSize[1]} is more than three times the ${traj.width}x${traj.height} image`);
    }
    if (g.path.length < 2) fail(`center_traj[${i}]`, "a path needs at least 2 points");
    count(g.path, MAX_PATH_POINTS, `center_traj[${i}]`, "points");
    g.path.forEach((p) => { if (p.length !== 2) fail(`center_traj[${i}]`, "expected a list of [x, y] points"); finite(p, `center_traj[${i}]`); });
    inArea(g.path, traj, `center_traj[${i}]`);
    count(g.points, MAX_QUERY_POINTS, `query_point[${i}]`, "points");
    g.points.forEach((p) => { if (p.length !== 2) fail(`query_point[${i}]`, "expected a list of [x, y] points"); finite(p, `query_point[${i}]`); });
    inArea(g.points, traj, `query_point[${i}]`);
  });
  return traj;
}

// Nesting depth of arrays/objects (a scalar is 0), walked without recursion; stops past MAX_DEPTH.
export function depth(value) {
  let deepest = 0;
  const stack = [[value, 1]];
  while (stack.length) {
    const [v, level] = stack.pop();
    if (v === null || typeof v !== "object") continue;
    deepest = Math.max(deepest, level);
    if (level > MAX_DEPTH) break;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, level + 1]);
  }
  return deepest;
}

// JSON text (or an already parsed value) -> a value, within the size and nesting limits.
function loadJSON(textOrObject, field) {
  let obj = textOrObject;
  if (typeof obj === "string") {
    if (obj.length > MAX_TEXT_CHARS) fail(field, `${obj.length.toLocaleString("en")} characters, at most ${MAX_TEXT_CHARS.toLocaleString("en")} are allowed`);
    if (!obj.trim()) fail(field, "empty JSON");
    try {
      obj = JSON.parse(obj);
    } catch (e) {
      if (e instanceof RangeError) fail(field, `nested deeper than ${MAX_DEPTH} levels`);
      fail(field, `malformed JSON (${e.message})`);
    }
  }
  if (depth(obj) > MAX_DEPTH) fail(field, `nested deeper than ${MAX_DEPTH} levels`);
  return obj;
}

function asList(value, field) {
  if (!Array.isArray(value)) fail(field, "expected a list");
  return value;
}

// The reference JSON (plus our optional width/height/frames) -> {groups, width, height, frames}.
export function parseReference(textOrObject) {
  const obj = loadJSON(textOrObject, "trajectory");
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) fail("trajectory", "expected a JSON object");
  for (const key of ["bounding_box", "center_traj"]) if (!(key in obj)) fail(key, "missing from the trajectory JSON");
  const boxes = asList(obj.bounding_box, "bounding_box");
  const n = boxes.length;
  if (n === 0) fail("bounding_box", "no groups (draw at least one box)");
  count(boxes, MAX_GROUPS, "bounding_box", "groups");
  const targets = asList(obj.target_box ?? boxes, "target_box");
  const paths = asList(obj.center_traj, "center_traj");
  const points = asList(obj.query_point ?? boxes.map(() => []), "query_point");
  for (const [key, v] of [["target_box", targets], ["center_traj", paths], ["query_point", points]]) {
    if (v.length !== n) fail(key, `${v.length} entries for ${n} groups`);
  }
  const groups = boxes.map((box, i) => {
    const b = asList(box, `bounding_box[${i}]`).flat().map(Number);
    const t = asList(targets[i], `target_box[${i}]`).flat().map(Number);
    if (b.length !== 4) fail(`bounding_box[${i}]`, "expected [x1, y1, x2, y2]");
    if (t.length !== 4) fail(`target_box[${i}]`, "expected [x1, y1, x2, y2]");
    const path = asList(paths[i], `center_traj[${i}]`).map((p) => asList(p, `center_traj[${i}]`).map(Number));
    const pts = asList(points[i], `query_point[${i}]`).map((p) => asList(p, `query_point[${i}]`).map(Number));
    return { box: b, endSize: [t[2] - t[0], t[3] - t[1]], path, points: pts };
  });
  return validate({ groups, width: obj.width ?? DEFAULT_SIZE, height: obj.height ?? DEFAULT_SIZE, frames: obj.frames ?? null });
}

const r3 = (v) => Math.round(v * 1000) / 1000;

export function toReference(traj) {
  const out = {
    bounding_box: traj.groups.map((g) => g.box.map(r3)),
    target_box: traj.groups.map((g) => [g.box[0], g.box[1], g.box[0] + g.endSize[0], g.box[1] + g.endSize[1]].map(r3)),
    center_traj: traj.groups.map((g) => g.path.map((p) => p.map(r3))),
    query_point: traj.groups.map((g) => g.points.map((p) => p.map(r3))),
    width: traj.width,
    height: traj.height,
  };
  if (traj.frames) out.frames = traj.frames;
  return out;
}

// KJNodes SplineEditor coordinates: [{x, y}, ...] or a list of such lists; a box of boxSize [w, h]
// is centred on each path's first point.
export function parseCoordinates(text, boxSize, width, height) {
  let obj = loadJSON(text, "coordinates");
  if (Array.isArray(obj) && obj.length && obj.every((p) => p && typeof p === "object" && !Array.isArray(p))) obj = [obj];
  if (!Array.isArray(obj) || !obj.length || !obj.every(Array.isArray)) fail("coordinates", 'expected [{"x": .., "y": ..}, ...] or a list of such lists');
  count(obj, MAX_GROUPS, "coordinates", "paths");
  const groups = obj.map((raw, i) => {
    const path = raw.map((p) => [Number(p.x), Number(p.y)]);
    path.forEach((p) => finite(p, `coordinates[${i}]`));
    const [w, h] = boxSize, [x, y] = path[0];
    return { box: [x - w / 2, y - h / 2, x + w / 2, y + h / 2], endSize: [w, h], path, points: [] };
  });
  return validate({ groups, width, height, frames: null });
}

// The same trajectory for an image of another size (coordinates scaled per axis).
export function resized(traj, width, height) {
  const sx = width / traj.width, sy = height / traj.height;
  return {
    ...traj,
    width,
    height,
    groups: traj.groups.map((g) => ({
      box: [g.box[0] * sx, g.box[1] * sy, g.box[2] * sx, g.box[3] * sy],
      endSize: [g.endSize[0] * sx, g.endSize[1] * sy],
      path: g.path.map((p) => [p[0] * sx, p[1] * sy]),
      points: g.points.map((p) => [p[0] * sx, p[1] * sy]),
    })),
  };
}

// Any of the accepted texts (reference JSON or KJNodes coordinates) -> a trajectory.
export function parseAny(text, width, height) {
  const trimmed = (text ?? "").trim();
  if (trimmed.startsWith("[")) return parseCoordinates(trimmed, [width / 4, height / 4], width, height);
  return parseReference(trimmed);
}

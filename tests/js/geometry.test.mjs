// node --test tests/js/ : the widget geometry on the same cases as tests/unit/test_trajectory.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { MAX_TEXT_CHARS, parseAny, parseCoordinates, parseReference, pchip, resamplePath, resized, toReference, trajectoryBoxes } from "../../web/geometry.js";

const cases = JSON.parse(readFileSync(new URL("../fixtures/trajectory_cases.json", import.meta.url)));
const refused = JSON.parse(readFileSync(new URL("../fixtures/trajectory_refused.json", import.meta.url)));
const close = (a, b, tol = 1e-9) => {
  assert.equal(a.length, b.length);
  a.forEach((v, i) => (Array.isArray(v) ? close(v, b[i], tol) : assert.ok(Math.abs(v - b[i]) <= tol, `${v} vs ${b[i]}`)));
};

for (const c of cases) {
  test(`shared case: ${c.name}`, () => {
    close(trajectoryBoxes(parseReference(c.trajectory), c.frames), c.boxes);
  });
}

test("pchip is monotone between monotone points and hits the knots", () => {
  const t = [0, 1, 2, 3], y = [0, 1, 1.1, 5];
  const out = pchip(t, y, [0, 0.5, 1, 1.5, 2, 2.5, 3]);
  close([out[0], out[2], out[4], out[6]], [0, 1, 1.1, 5]);
  for (let i = 1; i < out.length; i++) assert.ok(out[i] >= out[i - 1]);
});

test("resampling keeps the ends", () => {
  const out = resamplePath([[0, 0], [10, 5], [40, 5]], 16);
  assert.equal(out.length, 16);
  close(out[0], [0, 0]);
  close(out[15], [40, 5]);
});

test("reference JSON round trip and resize", () => {
  const t = parseReference(cases[2].trajectory);
  const again = parseReference(JSON.stringify(toReference(t)));
  close(trajectoryBoxes(again, 7), trajectoryBoxes(t, 7), 1e-3);
  const r = resized(t, t.width * 2, t.height / 2);
  close(trajectoryBoxes(r, 3)[0][0], trajectoryBoxes(t, 3)[0][0].map((v, i) => (i % 2 ? v / 2 : v * 2)));
});

test("KJNodes coordinates, one path and several", () => {
  const one = parseCoordinates('[{"x": 10, "y": 20}, {"x": 30, "y": 20}]', [8, 6], 64, 64);
  close(trajectoryBoxes(one, 2), [[[6, 17, 14, 23], [26, 17, 34, 23]]]);
  const two = parseAny('[[{"x": 10, "y": 10}, {"x": 12, "y": 10}], [{"x": 40, "y": 40}, {"x": 40, "y": 50}]]', 64, 64);
  assert.equal(two.groups.length, 2);
});

test("bad input names the field", () => {
  const base = cases[0].trajectory;
  const bad = [
    ["{oops", "trajectory"],
    ["", "trajectory"],
    [JSON.stringify({ ...base, bounding_box: [[10, 20, 10, 60]] }), "bounding_box[0]"],
    [JSON.stringify({ ...base, bounding_box: [[500, 500, 600, 600]] }), "bounding_box[0]"],
    [JSON.stringify({ ...base, center_traj: [[[1, 2]]] }), "center_traj[0]"],
    [JSON.stringify({ ...base, bounding_box: [] }), "bounding_box"],
  ];
  for (const [text, field] of bad) assert.throws(() => parseReference(text), (e) => e.field === field, text);
  assert.throws(() => parseReference({ ...base, center_traj: [[[1, 2], [NaN, 3]]] }), (e) => e.field === "center_traj[0]");
});

for (const c of refused) {
  test(`refused like core/trajectory.py: ${c.name}`, () => {
    assert.throws(() => parseReference(JSON.stringify(c.trajectory)), (e) => e.field === c.field && e.message.startsWith(`${c.field}: `), c.name);
  });
}

test("a huge or deeply nested text is refused with a message", () => {
  const huge = JSON.stringify({ ...cases[0].trajectory, note: "x".repeat(MAX_TEXT_CHARS) });
  assert.throws(() => parseAny(huge, 128, 96), /^Error: trajectory: [\d,]+ characters, at most/);
  for (const d of [9, 5000, 200000]) {
    const deep = '{"bounding_box": ' + "[".repeat(d) + "]".repeat(d) + "}";
    assert.throws(() => parseReference(deep), (e) => e.field === "trajectory" && /nested deeper than 8 levels/.test(e.message), String(d));
  }
  assert.throws(() => parseCoordinates("[".repeat(100000) + "]".repeat(100000), [4, 4], 64, 64), (e) => e.field === "coordinates");
});

// Runs the web page's script under Node with a small stand-in DOM and a scripted fetch, submits
// the comparison form once per scripted /api/verify answer, and prints what the page shows.
// Usage: node page_harness.js page.js scenario.json  (scenario: {health, verify: [{status, body}]})
"use strict";
const fs = require("fs");

const source = fs.readFileSync(process.argv[2], "utf8");
const scenario = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));

class Element {
  constructor(tag, id) {
    Object.assign(this, { tagName: tag, id, children: [], dataset: {}, listeners: {}, textContent: "",
                          hidden: false, className: "", disabled: false, src: "", alt: "" });
  }
  addEventListener(type, listener) { (this.listeners[type] = this.listeners[type] || []).push(listener); }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  async dispatch(type) {
    for (const listener of this.listeners[type] || []) await listener({ preventDefault() {}, target: this });
  }
}

const elements = {};
const byId = (id) => (elements[id] = elements[id] || new Element("div", id));
globalThis.document = {
  getElementById: byId,
  createElement: (tag) => new Element(tag),
  querySelectorAll: () => [],
};
globalThis.FormData = class { constructor() { this.entries = []; } append(key, value) { this.entries.push([key, value]); } };
URL.createObjectURL = () => "blob:preview";
URL.revokeObjectURL = () => {};

const posts = [];
const answers = [...scenario.verify];
globalThis.fetch = async (url, options = {}) => {
  if (url === "/api/health") return { ok: true, status: 200, json: async () => scenario.health };
  posts.push(url);
  const { status, body } = answers.shift();
  return { ok: status >= 200 && status < 300, status, json: async () => body };
};

(0, eval)(source); // the page's script, in the global scope as a browser runs it

(async () => {
  await new Promise((resolve) => setTimeout(resolve, 0)); // the health request settles
  const submits = [];
  for (let i = 0; i < scenario.verify.length; i++) {
    await byId("verify-form").dispatch("submit");
    submits.push({
      state: byId("result").dataset.state,
      hidden: byId("result").hidden,
      decision: byId("decision").textContent,
      score: byId("score").textContent,
      threshold: byId("threshold").textContent,
      calibration: byId("calibration").textContent,
      faces: byId("faces").children.length,
      error: byId("error").textContent,
      compare_enabled: !byId("compare").disabled,
    });
  }
  process.stdout.write(JSON.stringify({ model: byId("model").textContent, submits, posts }));
})().catch((err) => { console.error(err); process.exit(1); });

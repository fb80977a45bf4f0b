// Renders the app's OpenAPI document as a readable page (no CDN, no inline script).
const main = document.getElementById("api");

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return [schema.$ref.split("/").pop(), spec.components.schemas[schema.$ref.split("/").pop()]];
  return [null, schema];
}

function schemaBlock(spec, schema, depth = 0) {
  const [name, s] = resolve(spec, schema);
  if (!s || depth > 3) return el("code", name || "any");
  if (s.type === "object" || s.properties) {
    const dl = el("dl");
    for (const [k, v] of Object.entries(s.properties || {})) {
      dl.append(el("dt", k + ((s.required || []).includes(k) ? " (required)" : "")));
      const dd = el("dd");
      const [rn, rv] = resolve(spec, v);
      const t = rv && (rv.type || (rv.anyOf ? rv.anyOf.map((x) => x.type || resolve(spec, x)[0]).join(" | ") : ""));
      dd.append(el("code", rn || t || "object"));
      if (rv && rv.description) dd.append(" — " + rv.description);
      if (rv && rv.type === "array" && rv.items) dd.append(schemaBlock(spec, rv.items, depth + 1));
      else if (rn) dd.append(schemaBlock(spec, v, depth + 1));
      dl.append(dd);
    }
    const wrap = el("div", undefined, "schema");
    if (name) wrap.append(el("p", name));
    wrap.append(dl);
    return wrap;
  }
  return el("code", name || s.type || "any");
}

fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  main.replaceChildren();
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const card = el("section", undefined, "card");
      card.append(el("h2", `${method.toUpperCase()} ${path}`));
      if (op.summary) card.append(el("p", op.summary));
      if (op.description) card.append(el("p", op.description));
      for (const p of op.parameters || []) card.append(el("p", `parameter ${p.name} (${p.in}${p.required ? ", required" : ""})`));
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        for (const [ctype, c] of Object.entries(body)) {
          card.append(el("h3", `Request: ${ctype}`));
          card.append(schemaBlock(spec, c.schema));
        }
      }
      card.append(el("h3", "Responses"));
      const ul = el("ul");
      for (const [code, r] of Object.entries(op.responses || {})) ul.append(el("li", `${code}: ${r.description || ""}`));
      card.append(ul);
      main.append(card);
    }
  }
});

// Tiny element helpers. Text always goes into the page as text nodes or
// textContent: nothing here parses HTML, so data can never become markup.

// h('div', {class: 'x', 'data-testid': 'y', onclick: fn}, 'text', child, [more])
// Attributes: `class`, `for`, `data-*`, `aria-*` and others are set with
// setAttribute; `on*` functions become event listeners; `value`, `checked`,
// `disabled`, `hidden`, `selected` are set as properties. Children: strings
// and numbers become text nodes; null, undefined and false are skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (['value', 'checked', 'disabled', 'hidden', 'selected'].includes(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Replaces the children of `el`.
export function replace(el, ...children) {
  return append(clear(el), children);
}

export const DASH = '\u2014';

// Bytes as B, KiB, MiB, … ; DASH when absent.
export function formatBytes(n) {
  if (typeof n !== 'number' || !isFinite(n)) return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
}

export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !isFinite(seconds) || seconds < 0) return DASH;
  seconds = Math.round(seconds);
  const d = Math.floor(seconds / 86400), hh = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function utcText(t) {
  return new Date(t * 1000).toISOString().replace('.000Z', 'Z');
}

// A <time> showing Unix seconds `t` in the browser's zone, with UTC in its
// title; DASH when absent.
export function timeEl(t) {
  if (typeof t !== 'number' || !isFinite(t)) return h('span', { class: 'muted' }, DASH);
  const d = new Date(t * 1000);
  return h('time', { datetime: utcText(t), title: utcText(t) + ' (UTC)' }, d.toLocaleString());
}

// A value or DASH.
export function orDash(v) {
  return v === null || v === undefined || v === '' ? DASH : String(v);
}

// A modal dialog: `body` elements, `actions` [{label, value, class, testid}].
// Resolves with the chosen action's value (null on Escape or Cancel).
export function dialog({ title, body = [], actions = [], testid = 'dialog' }) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { 'data-testid': testid, 'aria-label': title });
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    const buttons = actions.map((a) =>
      h('button', { type: 'button', class: a.class || '', 'data-testid': a.testid || null,
                    onclick: () => done(a.value) }, a.label));
    append(dlg, [h('h2', {}, title), h('div', { class: 'dialog-body' }, body),
                 h('div', { class: 'dialog-actions' }, buttons)]);
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(null); });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}

export async function confirmDialog(title, message, confirmLabel = 'OK', danger = false) {
  const v = await dialog({
    title, testid: 'confirm-dialog', body: [h('p', {}, message)],
    actions: [{ label: 'Cancel', value: false, class: 'secondary', testid: 'confirm-cancel' },
              { label: confirmLabel, value: true, class: danger ? 'danger' : '',
                testid: 'confirm-ok' }],
  });
  return v === true;
}

let toastTimer = 0;
// A short message at the bottom of the page; errors stay until replaced.
export function toast(message, isError = false) {
  const el = document.querySelector('.toast');
  if (!el) return;
  el.textContent = message;
  el.classList.toggle('error', isError);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, isError ? 10000 : 4000);
}

// A sortable table. columns: [{key, label, sort: row => value, cell: row => node|string}]
// Clicking a header (a real button) sorts by it; again reverses.
export function sortableTable(columns, rows, { testid, rowAttrs = () => ({}), initial } = {}) {
  let sortKey = initial ?? null, asc = true;
  const tbody = h('tbody');
  const headButtons = {};
  const draw = () => {
    const col = columns.find((c) => c.key === sortKey);
    const sorted = rows.slice();
    if (col && col.sort) {
      sorted.sort((a, b) => {
        const x = col.sort(a), y = col.sort(b);
        const r = x === y ? 0 : (x === null || x === undefined) ? 1 :
          (y === null || y === undefined) ? -1 : x < y ? -1 : 1;
        return asc ? r : -r;
      });
    }
    clear(tbody);
    for (const r of sorted) {
      append(tbody, [h('tr', rowAttrs(r), columns.map((c) => h('td', { 'data-col': c.key }, c.cell(r))))]);
    }
    for (const [k, b] of Object.entries(headButtons)) {
      b.parentElement.setAttribute('aria-sort', k === sortKey ? (asc ? 'ascending' : 'descending') : 'none');
    }
  };
  const head = h('tr', {}, columns.map((c) => {
    if (!c.sort) return h('th', { scope: 'col' }, c.label);
    const b = h('button', { type: 'button', class: 'th-sort', 'data-testid': `sort-${c.key}`,
                            onclick: () => { asc = sortKey === c.key ? !asc : true; sortKey = c.key; draw(); } },
                c.label);
    headButtons[c.key] = b;
    return h('th', { scope: 'col' }, b);
  }));
  const table = h('table', { 'data-testid': testid }, h('thead', {}, head), tbody);
  draw();
  return table;
}

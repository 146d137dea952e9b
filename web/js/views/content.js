// Content: a datastore's groups (searchable, sortable) and a group's
// snapshots (paged with ?limit&offset and X-Total-Count), each expandable to
// its archives with a ready `cairn restore` command and a download link.
// Actions appear only when the caller's roles on the store allow them
// (server/authorizer.h); a server that does not send `roles` leaves the
// decision to the server, which answers 403 with its own message.
//
// Route: #/content?store=S[&group=G][&page=N][&size=PER_PAGE][&q=TEXT]

import * as api from '../api.js';
import { h, append, clear, replace, DASH, formatBytes, timeEl, orDash, dialog,
         confirmDialog, toast, sortableTable } from '../dom.js';

const PAGE = 20;

// --- permissions (server/authorizer.h) ---

function owns(session, owner) {
  if (!owner || !session) return false;
  const id = session.auth_id || session.user || '';
  return owner === id || (!id.includes('!') && owner.startsWith(id + '!'));
}

export function can(store, session, action, owner) {
  const roles = store && store.roles;
  if (!Array.isArray(roles)) return true;
  if (roles.includes('Admin')) return true;
  const own = owns(session, owner);
  switch (action) {
    case 'verify': return roles.includes('Reader') || (roles.includes('Backup') && own);
    case 'verify-store': return roles.includes('Reader');
    case 'notes': return roles.includes('Backup') && own;
    default: return false;  // delete, protect, prune, gc
  }
}

// --- helpers ---

function firstLine(s) {
  return typeof s === 'string' && s !== '' ? s.split('\n')[0] : DASH;
}

function mode(client) {
  const disks = client && client.disks && typeof client.disks === 'object' ? Object.values(client.disks) : [];
  const modes = [...new Set(disks.map((d) => d && d.mode).filter(Boolean))];
  if (client && typeof client.mode === 'string') return client.mode;
  return modes.length === 0 ? DASH : modes.length === 1 ? modes[0] : 'mixed';
}

// A lock and the key's fingerprint for an encrypted snapshot (the server
// cannot read it; restoring needs that key).
function encryptionCell(s) {
  if (!s.encrypted) return h('td', { 'data-testid': 'encryption' }, 'none');
  return h('td', { 'data-testid': 'encryption', title: `Encrypted with key ${s.fingerprint}` },
    h('span', { class: 'lock', 'aria-hidden': 'true' }), 'encrypted ',
    h('code', { 'data-testid': 'fingerprint' }, s.fingerprint || ''));
}

function verifyCell(v) {
  if (!v || !v.state) return DASH;
  return h('span', {}, h('span', { class: `state state-${v.state}`, 'data-testid': 'verify-state' }, v.state),
    ' ', timeEl(v.time));
}

function snapshotTime(snapshot) {
  return snapshot.slice(snapshot.lastIndexOf('/') + 1);
}

export function restoreCommand(store, snapshot, archive, encrypted) {
  const target = restoreTarget(archive);
  const key = encrypted ? ' --keyfile KEYFILE' : '';
  return `cairn --repo https://${location.host}/${store} restore ${snapshot} ${archive} ${target}${key}`;
}

// The file a disk archive is restored to: its name without .fidx, as .raw.
function restoreTarget(archive) {
  const base = archive.replace(/\.fidx$/, '');
  return /\.(raw|img)$/.test(base) ? base : base + '.raw';
}

async function startTask(promise, what) {
  try {
    const r = await promise;
    const link = r && r.task ? `#/tasks?task=${encodeURIComponent(r.task)}` : null;
    toast(`${what} started${r && r.task ? ' as task ' + r.task : ''}.`);
    return link;
  } catch (e) {
    toast(`${what}: ${e.message}`, true);
    return null;
  }
}

// Polls a task until it is done; its JSON.
async function waitTask(id) {
  for (;;) {
    const t = await api.get(`/tasks/${api.enc(id)}`);
    if (t.state !== 'running') return t;
    await new Promise((r) => setTimeout(r, 300));
  }
}

// --- the groups of a store ---

function groupsView(store, groups, params, app) {
  const name = store.name;
  const q = params.get('q') || '';
  const search = h('input', { type: 'search', id: 'group-search', value: q, placeholder: 'group id or notes',
                              'data-testid': 'group-search', autocomplete: 'off' });
  const holder = h('div', { class: 'scroll' });
  // The server's answer to the search (names and notes), once it is in:
  // { needle, groups: Set }. Until then the names alone filter.
  let found = null;
  let timer = 0, seq = 0;
  const columns = [
    { key: 'group', label: 'Group', sort: (g) => g.group,
      cell: (g) => h('a', { href: `#/content?store=${encodeURIComponent(name)}&group=${encodeURIComponent(g.group)}`,
                            'data-testid': 'group-link' }, g.group) },
    { key: 'snapshots', label: 'Snapshots', sort: (g) => g.snapshots, cell: (g) => orDash(g.snapshots) },
    { key: 'last', label: 'Last backup', sort: (g) => g.last, cell: (g) =>
      h('span', {}, timeEl(g.last), g.stale === true ? h('span', { class: 'state state-failed', title: 'no backup within the stale limit' }, ' stale') : null) },
    { key: 'owner', label: 'Owner', sort: (g) => g.owner, cell: (g) => orDash(g.owner) },
    { key: 'unique', label: 'Unique bytes', sort: (g) => g.unique_bytes, cell: (g) => formatBytes(g.unique_bytes) },
    { key: 'size', label: 'Size', sort: (g) => g.size, cell: (g) => formatBytes(g.size) },
  ];
  const draw = () => {
    const needle = search.value.trim().toLowerCase();
    const fromServer = found && found.needle === needle ? found.groups : null;
    const shown = groups.filter((g) => !needle || g.group.toLowerCase().includes(needle) ||
      (fromServer !== null && fromServer.has(g.group)));
    replace(holder, shown.length
      ? sortableTable(columns, shown, { testid: 'groups', initial: 'group',
          rowAttrs: (g) => ({ 'data-testid': 'group-row', 'data-group': g.group }) })
      : h('p', { class: 'muted', 'data-testid': 'no-groups' }, needle ? 'No group matches.' : 'No group yet.'));
  };
  // Notes are searched by the server (GET …/groups?q=, from the catalog),
  // never by fetching every snapshot; a late answer to an older text is dropped.
  const searchNotes = () => {
    clearTimeout(timer);
    const needle = search.value.trim().toLowerCase();
    if (!needle) return;
    timer = setTimeout(async () => {
      const mine = ++seq;
      try {
        const list = await api.get(`/datastores/${api.enc(name)}/groups`, { q: needle });
        if (mine !== seq) return;
        found = { needle, groups: new Set(list.map((g) => g.group)) };
        draw();
      } catch (_) { /* the names still filter */ }
    }, 250);
  };
  search.addEventListener('input', () => {
    draw();
    searchNotes();
    history.replaceState(null, '', `#/content?store=${encodeURIComponent(name)}` +
      (search.value ? '&q=' + encodeURIComponent(search.value) : ''));
  });
  const actions = h('div', { class: 'toolbar' },
    h('label', { for: 'group-search' }, 'Search '), search,
    can(store, app.session, 'gc') ? h('button', { type: 'button', 'data-testid': 'run-gc',
      onclick: async () => {
        if (!await confirmDialog('Run garbage collection', `Collect unused chunks in ${name}?`, 'Run GC')) return;
        const link = await startTask(api.post(`/datastores/${api.enc(name)}/gc`, {}), 'GC');
        if (link) location.hash = link;
      } }, 'Run GC') : null,
    can(store, app.session, 'verify-store') ? h('button', { type: 'button', class: 'secondary', 'data-testid': 'verify-store',
      onclick: async () => {
        const link = await startTask(api.post(`/datastores/${api.enc(name)}/verify`, { target: '' }), 'Verify');
        if (link) location.hash = link;
      } }, 'Verify store') : null);
  draw();
  if (q) searchNotes();  // a search from the URL
  return h('section', { 'data-testid': 'groups-section' }, actions, holder);
}

// --- dialogs ---

async function notesDialog(store, snap, refresh) {
  const area = h('textarea', { rows: 8, 'data-testid': 'notes-input', value: snap.notes || '' });
  const v = await dialog({ title: `Notes of ${snap.snapshot}`, testid: 'notes-dialog', body: [area],
    actions: [{ label: 'Cancel', value: null, class: 'secondary' },
              { label: 'Save', value: 'save', testid: 'notes-save' }] });
  if (v !== 'save') return;
  try {
    await api.put(`/datastores/${api.enc(store)}/snapshots/notes`, { notes: area.value }, { snapshot: snap.snapshot });
    toast('Notes saved.');
    refresh();
  } catch (e) { toast(e.message, true); }
}

const KEEPS = ['keep-last', 'keep-hourly', 'keep-daily', 'keep-weekly', 'keep-monthly', 'keep-yearly'];

async function pruneDialog(store, group, app) {
  const inputs = Object.fromEntries(KEEPS.map((k) => [k, h('input', { type: 'number', min: 0, max: 100000,
    id: `prune-${k}`, 'data-testid': `prune-${k}`, inputmode: 'numeric' })]));
  const preview = h('div', { class: 'preview', 'data-testid': 'prune-preview', 'aria-live': 'polite' });
  const body = () => {
    const b = { group };
    for (const k of KEEPS) if (inputs[k].value !== '') b[k] = Number(inputs[k].value);
    return b;
  };
  let seq = 0, timer = 0;
  const update = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++seq;
      replace(preview, h('p', { class: 'muted' }, 'Computing…'));
      try {
        const r = await api.post(`/datastores/${api.enc(store)}/prune`, { ...body(), 'dry-run': true });
        const t = await waitTask(r.task);
        if (mine !== seq) return;
        const rep = t.result;
        if (!rep || !Array.isArray(rep.snapshots)) { replace(preview, h('p', { class: 'error' }, t.summary || 'no preview')); return; }
        replace(preview, h('p', {}, `Keeps ${rep.kept}, removes ${rep.removed}.`),
          h('ul', { class: 'prune-list' }, rep.snapshots.map((s) => h('li', { 'data-testid': 'prune-item',
            'data-keep': String(s.keep), class: s.keep ? 'keep' : 'remove' },
            h('span', { class: 'mono' }, snapshotTime(s.snapshot)), ' ', s.keep ? `keep (${s.reason})` : 'remove'))));
      } catch (e) {
        if (mine === seq) replace(preview, h('p', { class: 'error' }, e.message));
      }
    }, 400);
  };
  for (const k of KEEPS) inputs[k].addEventListener('input', update);
  update();
  const v = await dialog({ title: `Prune ${group}`, testid: 'prune-dialog',
    body: [h('div', { class: 'form-grid' }, KEEPS.map((k) => [h('label', { for: `prune-${k}` }, k), inputs[k]])),
           h('h3', {}, 'Preview'), preview],
    actions: [{ label: 'Cancel', value: null, class: 'secondary' },
              { label: 'Prune', value: 'prune', class: 'danger', testid: 'prune-run' }] });
  clearTimeout(timer);
  seq++;
  if (v !== 'prune') return;
  const link = await startTask(api.post(`/datastores/${api.enc(store)}/prune`, body()), 'Prune');
  if (link) location.hash = link;
}

// --- the snapshots of a group ---

function archivesRow(store, snap, colspan) {
  const items = (snap.archives || []).map((a) => {
    const isDisk = /\.fidx$/.test(a.name);
    const cmd = isDisk ? restoreCommand(store, snap.snapshot, a.name, snap.encrypted) : null;
    // The server has no key: an encrypted image is restored by the client only.
    return h('li', { 'data-testid': 'archive', 'data-archive': a.name },
      h('strong', {}, a.name), ` ${formatBytes(a.size)} `,
      isDisk && !snap.encrypted ? h('a', { href: api.downloadUrl(store, snap.snapshot, a.name), download: restoreTarget(a.name),
                        'data-testid': 'download' }, 'Download') : null,
      cmd ? h('div', { class: 'cmd' },
        h('code', { 'data-testid': 'restore-cmd' }, cmd),
        h('button', { type: 'button', class: 'secondary small', 'data-testid': 'copy-cmd',
          onclick: async () => {
            try { await navigator.clipboard.writeText(cmd); toast('Copied.'); }
            catch (_) { toast('Copy failed: select the command and copy it.', true); }
          } }, 'Copy')) : null);
  });
  return h('tr', { class: 'detail', 'data-testid': 'archives-row' },
    h('td', { colspan }, items.length ? h('ul', { class: 'archives' }, items) : DASH));
}

function snapshotActions(store, storeName, snap, app, refresh) {
  const out = [];
  const btn = (label, testid, fn, cls = 'secondary small') =>
    h('button', { type: 'button', class: cls, 'data-testid': testid, onclick: fn }, label);
  const ss = { snapshot: snap.snapshot };
  const path = (p) => `/datastores/${api.enc(storeName)}/${p}`;
  if (can(store, app.session, 'verify', snap.owner)) {
    out.push(btn('Verify', 'verify-snapshot', async () => {
      const link = await startTask(api.post(path('verify'), { target: snap.snapshot }), 'Verify');
      if (link) location.hash = link;
    }));
  }
  if (can(store, app.session, 'protect', snap.owner)) {
    out.push(btn(snap.protected ? 'Unprotect' : 'Protect', 'protect', async () => {
      try { await api.put(path('snapshots/protected'), { protected: !snap.protected }, ss); refresh(); }
      catch (e) { toast(e.message, true); }
    }));
  }
  if (can(store, app.session, 'notes', snap.owner)) {
    out.push(btn('Notes', 'edit-notes', () => notesDialog(storeName, snap, refresh)));
  }
  if (can(store, app.session, 'delete', snap.owner)) {
    out.push(btn('Delete', 'delete-snapshot', async () => {
      const ok = await confirmDialog('Delete snapshot',
        `Delete ${snap.snapshot}?` + (snap.protected ? ' It is protected: the server will refuse.' : ' This cannot be undone.'),
        'Delete', true);
      if (!ok) return;
      try { await api.del(path('snapshots'), ss); toast(`Deleted ${snap.snapshot}.`); refresh(); }
      catch (e) { toast(`Cannot delete ${snap.snapshot}: ${e.message}`, true); }
    }, 'danger small'));
  }
  return out;
}

async function snapshotsView(store, group, params, app) {
  const name = store.name;
  const page = Math.max(0, Number(params.get('page') || 0) | 0);
  const size = Math.min(500, Math.max(1, Number(params.get('size') || PAGE) | 0));
  const r = await api.request('GET', `/datastores/${api.enc(name)}/snapshots`,
    { query: { group, limit: size, offset: page * size, order: 'desc' } });
  const snaps = r.data;
  const total = Number(r.headers.get('X-Total-Count') ?? snaps.length);
  const refresh = () => app.render();
  const head = ['', 'Backup time', 'Size', 'Owner', 'Verify', 'Protected', 'Encryption', 'Notes', 'Consistency', 'Mode', 'Actions'];
  const tbody = h('tbody');
  for (const s of snaps) {
    if (s.error) {
      append(tbody, [h('tr', { 'data-testid': 'snapshot-row', 'data-snapshot': s.snapshot },
        h('td', {}), h('td', { colspan: head.length - 1, class: 'error' }, `${s.snapshot}: ${s.error}`))]);
      continue;
    }
    let detail = null;
    const toggle = h('button', { type: 'button', class: 'secondary small', 'aria-expanded': 'false',
      'aria-label': `Archives of ${s.snapshot}`, 'data-testid': 'expand' }, '▸');
    const row = h('tr', { 'data-testid': 'snapshot-row', 'data-snapshot': s.snapshot,
                          'data-protected': String(!!s.protected) },
      h('td', {}, toggle),
      h('td', {}, timeEl(s.time)),
      h('td', { class: 'num' }, formatBytes(s.size)),
      h('td', {}, orDash(s.owner)),
      h('td', {}, verifyCell(s.verify)),
      h('td', { 'data-testid': 'protected' }, s.protected ? 'yes' : 'no'),
      encryptionCell(s),
      h('td', { class: 'notes', 'data-testid': 'notes', title: s.notes || '' }, firstLine(s.notes)),
      h('td', {}, orDash(s.client && s.client.consistency)),
      h('td', {}, mode(s.client)),
      h('td', { class: 'actions' }, snapshotActions(store, name, s, app, refresh)));
    toggle.addEventListener('click', () => {
      const open = toggle.getAttribute('aria-expanded') === 'true';
      toggle.setAttribute('aria-expanded', String(!open));
      toggle.textContent = open ? '▸' : '▾';
      if (open) { detail.remove(); detail = null; return; }
      detail = archivesRow(name, s, head.length);
      row.after(detail);
    });
    append(tbody, [row]);
  }
  const go = (p) => app.go('content', { store: name, group, page: p || null,
                                         size: size === PAGE ? null : size });
  const pager = h('div', { class: 'pager', 'data-testid': 'pager' },
    h('button', { type: 'button', class: 'secondary', disabled: page === 0, 'data-testid': 'page-prev',
                  onclick: () => go(page - 1) }, '‹ Newer'),
    h('span', { 'data-testid': 'page-info' },
      total ? ` ${page * size + 1}–${page * size + snaps.length} of ${total} ` : ' none '),
    h('button', { type: 'button', class: 'secondary', disabled: (page + 1) * size >= total,
                  'data-testid': 'page-next', onclick: () => go(page + 1) }, 'Older ›'));
  const owner = snaps.length ? snaps[0].owner : null;
  const groupActions = h('div', { class: 'toolbar' },
    h('a', { href: `#/content?store=${encodeURIComponent(name)}`, 'data-testid': 'back-to-groups' }, '← Groups'),
    h('h2', { 'data-testid': 'group-title' }, group),
    can(store, app.session, 'verify', owner) ? h('button', { type: 'button', class: 'secondary', 'data-testid': 'verify-group',
      onclick: async () => {
        const link = await startTask(api.post(`/datastores/${api.enc(name)}/verify`, { target: group }), 'Verify');
        if (link) location.hash = link;
      } }, 'Verify group') : null,
    can(store, app.session, 'prune', owner) ? h('button', { type: 'button', class: 'danger', 'data-testid': 'prune-group',
      onclick: () => pruneDialog(name, group, app) }, 'Prune…') : null);
  return h('section', { 'data-testid': 'snapshots-section', 'data-group': group }, groupActions,
    h('div', { class: 'scroll' }, h('table', { 'data-testid': 'snapshots' },
      h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))), tbody)),
    pager);
}

export async function render(main, params, app) {
  const stores = await api.get('/datastores');
  main.append(h('h1', {}, 'Content'));
  if (!stores.length) { main.append(h('p', { class: 'muted' }, 'No datastore you hold a role on.')); return; }
  const storeName = params.get('store') || stores[0].name;
  const store = stores.find((s) => s.name === storeName);
  const picker = h('select', { id: 'store-pick', 'data-testid': 'store-pick',
                               onchange: () => app.go('content', { store: picker.value }) },
    stores.map((s) => h('option', { value: s.name, selected: s.name === storeName }, s.name)));
  main.append(h('div', { class: 'toolbar' }, h('label', { for: 'store-pick' }, 'Datastore '), picker));
  if (!store) { main.append(h('p', { class: 'error' }, `No datastore ${storeName}.`)); return; }
  main.setAttribute('data-store', storeName);
  const group = params.get('group');
  if (group) {
    main.append(await snapshotsView(store, group, params, app));
  } else {
    const groups = await api.get(`/datastores/${api.enc(storeName)}/groups`);
    main.append(groupsView(store, groups, params, app));
  }
}

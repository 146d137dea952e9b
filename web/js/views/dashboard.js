// Dashboard: every datastore with usage, chunks, dedup, last GC and last
// verify; running tasks; tasks that failed in the last 24 hours; groups
// whose last backup is older than the store's stale limit. Fields a server
// does not send are shown as "—".

import * as api from '../api.js';
import { h, DASH, formatBytes, formatDuration, timeEl, orDash } from '../dom.js';
import { taskRow, taskColumns } from './tasks.js';

function usageCell(u) {
  if (!u || typeof u.total !== 'number') return DASH;
  const pct = u.total ? Math.round(100 * u.used / u.total) : 0;
  const bar = h('progress', { max: 100, value: pct, 'aria-label': `${pct}% used` });
  return h('span', { class: 'usage' }, bar, ` ${formatBytes(u.used)} / ${formatBytes(u.total)} (${pct}%)`);
}

function verifyCell(v) {
  if (!v) return DASH;
  return h('span', {}, h('span', { class: `state state-${v.state}` }, orDash(v.state)), ' ', timeEl(v.time));
}

function gcCell(gc) {
  if (!gc) return DASH;
  const t = gc['start-time'] ?? gc.time;
  const removed = typeof gc['removed-bytes'] === 'number' ? ` (freed ${formatBytes(gc['removed-bytes'])})` : '';
  return h('span', {}, timeEl(t), removed);
}

function storeTable(stores) {
  const rows = stores.map((s) => h('tr', { 'data-testid': 'store-row', 'data-store': s.name },
    h('td', {}, h('a', { href: '#/content?store=' + encodeURIComponent(s.name) }, s.name)),
    h('td', {}, usageCell(s.usage)),
    h('td', { class: 'num' }, orDash(s.chunks)),
    h('td', { class: 'num' }, formatBytes(s.chunk_bytes)),
    h('td', { class: 'num' }, typeof s.dedup === 'number' ? s.dedup.toFixed(2) + '×' : DASH),
    h('td', {}, gcCell(s.last_gc)),
    h('td', {}, verifyCell(s.last_verify)),
    h('td', {}, Array.isArray(s.roles) ? s.roles.join(', ') : DASH)));
  return h('table', { 'data-testid': 'stores' },
    h('thead', {}, h('tr', {}, ['Datastore', 'Usage', 'Chunks', 'Chunk bytes', 'Dedup', 'Last GC',
                                'Last verify', 'Your roles'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

function tasksSection(title, testid, list, empty) {
  return h('section', { class: 'card', 'data-testid': testid },
    h('h2', {}, title),
    list.length
      ? h('table', {}, h('thead', {}, h('tr', {}, taskColumns.map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, list.map(taskRow)))
      : h('p', { class: 'muted' }, empty));
}

async function staleGroups(stores) {
  const out = [];
  await Promise.all(stores.map(async (s) => {
    try {
      const groups = await api.get(`/datastores/${api.enc(s.name)}/groups`);
      for (const g of groups) if (g.stale === true) out.push({ store: s.name, ...g });
    } catch (_) { /* a store we may not list: nothing to show */ }
  }));
  return out;
}

export async function render(main) {
  const [stores, taskList] = await Promise.all([
    api.get('/datastores'),
    api.get('/tasks', { limit: 500 }).catch(() => []),
  ]);
  const now = Date.now() / 1000;
  const running = taskList.filter((t) => t.state === 'running');
  const failed = taskList.filter((t) => t.state === 'failed' && (t.end ?? t.start) >= now - 86400);
  const stale = await staleGroups(stores);
  main.append(
    h('h1', {}, 'Dashboard'),
    h('section', { class: 'card' }, h('h2', {}, 'Datastores'),
      stores.length ? h('div', { class: 'scroll' }, storeTable(stores))
                    : h('p', { class: 'muted' }, 'No datastore you hold a role on.')),
    h('div', { class: 'grid2' },
      tasksSection('Running tasks', 'running-tasks', running, 'Nothing running.'),
      tasksSection('Failed in the last 24 hours', 'failed-tasks', failed, 'No failed task.')),
    h('section', { class: 'card', 'data-testid': 'stale-groups' }, h('h2', {}, 'Stale groups'),
      stale.length
        ? h('ul', {}, stale.map((g) => h('li', { 'data-testid': 'stale-group' },
            h('a', { href: `#/content?store=${encodeURIComponent(g.store)}&group=${encodeURIComponent(g.group)}` },
              `${g.store}: ${g.group}`),
            ' — last backup ', timeEl(g.last),
            typeof g.stale_after === 'number' ? ` (limit ${formatDuration(g.stale_after)})` : '')))
        : h('p', { class: 'muted' }, 'No stale group.')));
}

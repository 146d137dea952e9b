// Tasks: the list (kind, store, who, start, duration, state) with a filter
// for running or failed ones, and `#/tasks?task=ID`: one task's log, which
// follows a running task by polling GET /tasks/ID/log with the growing
// offset and shows the whole log of a finished one.

import * as api from '../api.js';
import { h, replace, DASH, formatDuration, timeEl, orDash } from '../dom.js';

const POLL_MS = 1000;

export const taskColumns = ['Task', 'Kind', 'Store', 'Who', 'Start', 'Duration', 'State'];

function duration(t) {
  const end = typeof t.end === 'number' ? t.end : Date.now() / 1000;
  return typeof t.start === 'number' ? formatDuration(end - t.start) : DASH;
}

export function stateBadge(state) {
  return h('span', { class: `state state-${state}`, 'data-testid': 'task-state' }, orDash(state));
}

export function taskRow(t) {
  return h('tr', { 'data-testid': 'task-row', 'data-task': t.id, 'data-state': t.state },
    h('td', {}, h('a', { href: '#/tasks?task=' + encodeURIComponent(t.id), 'data-testid': 'task-link',
                         title: t.summary || '' }, t.summary || t.id)),
    h('td', {}, orDash(t.kind)),
    h('td', {}, orDash(t.store)),
    h('td', {}, orDash(t['auth-id'])),
    h('td', {}, timeEl(t.start)),
    h('td', { class: 'num' }, duration(t)),
    h('td', {}, stateBadge(t.state)));
}

async function renderList(main, params, app) {
  const filter = params.get('filter') || 'all';
  const tasks = await api.get('/tasks', { limit: 1000 });
  const shown = tasks.filter((t) => filter === 'all' || t.state === filter);
  const select = h('select', { id: 'task-filter', 'data-testid': 'task-filter',
                               onchange: () => app.go('tasks', { filter: select.value }) },
    ['all', 'running', 'failed'].map((f) => h('option', { value: f, selected: f === filter }, f)));
  main.append(
    h('h1', {}, 'Tasks'),
    h('div', { class: 'toolbar' }, h('label', { for: 'task-filter' }, 'Show '), select,
      h('button', { type: 'button', class: 'secondary', 'data-testid': 'refresh',
                    onclick: () => app.render() }, 'Refresh')),
    shown.length
      ? h('div', { class: 'scroll' }, h('table', { 'data-testid': 'tasks' },
          h('thead', {}, h('tr', {}, taskColumns.map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, shown.map(taskRow))))
      : h('p', { class: 'muted', 'data-testid': 'no-tasks' }, 'No task.'));
  if (tasks.some((t) => t.state === 'running')) {
    const timer = setTimeout(() => app.render(), 5000);
    app.onLeave(() => clearTimeout(timer));
  }
}

async function renderLog(main, id, app) {
  const task = await api.get(`/tasks/${api.enc(id)}`);
  const head = h('div', { class: 'toolbar' });
  const pre = h('pre', { class: 'log', 'data-testid': 'task-log', tabindex: 0 });
  const status = h('p', { class: 'muted', 'data-testid': 'log-status' });
  const drawHead = (t) => replace(head,
    h('a', { href: '#/tasks' }, '← All tasks'), ' ',
    h('strong', {}, t.summary || t.id), ` (${orDash(t.kind)} on ${orDash(t.store)}) `, stateBadge(t.state),
    ' started ', timeEl(t.start),
    ' by ', orDash(t['auth-id']), ', ', duration(t));
  drawHead(task);
  main.append(h('h1', {}, 'Task log'), head, pre, status);
  main.setAttribute('data-task', id);

  const decoder = new TextDecoder();
  let offset = 0, stopped = false, timer = 0;
  app.onLeave(() => { stopped = true; clearTimeout(timer); });
  const poll = async () => {
    if (stopped) return;
    try {
      // Read everything there is now (the server sends at most 1 MiB a time).
      let state = 'running';
      for (;;) {
        const r = await api.request('GET', `/tasks/${api.enc(id)}/log`, { query: { offset }, bytes: true });
        state = r.headers.get('X-Task-State') || state;
        if (r.data.length) {
          pre.append(document.createTextNode(decoder.decode(r.data, { stream: true })));
          offset += r.data.length;
          pre.scrollTop = pre.scrollHeight;
        }
        if (r.data.length < (1 << 20)) break;
      }
      if (stopped) return;
      main.setAttribute('data-log-state', state);
      if (state === 'running') {
        drawHead(task);  // the duration goes on
        status.textContent = 'Following the running task…';
        timer = setTimeout(poll, POLL_MS);
      } else {
        status.textContent = `Finished: ${state}.`;
        drawHead(await api.get(`/tasks/${api.enc(id)}`));
      }
    } catch (e) {
      status.textContent = 'Cannot read the log: ' + e.message;
    }
  };
  await poll();
}

export async function render(main, params, app) {
  const id = params.get('task');
  if (id) return renderLog(main, id, app);
  return renderList(main, params, app);
}

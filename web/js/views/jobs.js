// Jobs: scheduled prune, GC, verify, sync (pull from a remote) and push.
// List, add, edit, remove, run now;
// while a schedule is typed, its next five run times come from
// GET /calendar/next (the server's own parser, so what is shown is what runs).

import * as api from '../api.js';
import { h, replace, DASH, timeEl, orDash, dialog, confirmDialog, toast } from '../dom.js';

const KINDS = ['verify', 'prune', 'gc', 'sync', 'push'];

function scheduleWatcher(input, out) {
  let timer = 0, seq = 0;
  const update = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++seq;
      const schedule = input.value.trim();
      if (!schedule) { replace(out); return; }
      try {
        const r = await api.get('/calendar/next', { schedule, count: 5 });
        if (mine !== seq) return;
        replace(out, r.next && r.next.length
          ? h('ol', { 'data-testid': 'next-runs' }, r.next.map((t) => h('li', {}, timeEl(t))))
          : h('p', { class: 'muted' }, 'Never runs.'));
      } catch (e) {
        if (mine === seq) replace(out, h('p', { class: 'error', 'data-testid': 'schedule-error' }, e.message));
      }
    }, 300);
  };
  input.addEventListener('input', update);
  update();
}

async function jobDialog(job, stores) {
  const isNew = !job;
  job = job || { id: '', kind: 'verify', store: stores[0] || '', schedule: 'daily', options: {}, enabled: true };
  const id = h('input', { id: 'job-id', value: job.id, disabled: !isNew, 'data-testid': 'job-id', required: true });
  const kind = h('select', { id: 'job-kind', 'data-testid': 'job-kind' },
    KINDS.map((k) => h('option', { value: k, selected: k === job.kind }, k)));
  const store = h('select', { id: 'job-store', 'data-testid': 'job-store' },
    stores.map((s) => h('option', { value: s, selected: s === job.store }, s)));
  const schedule = h('input', { id: 'job-schedule', value: job.schedule, 'data-testid': 'job-schedule',
                                placeholder: 'daily, sat 02:00, mon..fri *:0/30' });
  const options = h('textarea', { id: 'job-options', rows: 3, 'data-testid': 'job-options',
    value: JSON.stringify(job.options || {}), placeholder: '{"keep-daily": 7}' });
  const enabled = h('input', { id: 'job-enabled', type: 'checkbox', checked: job.enabled !== false,
                               'data-testid': 'job-enabled' });
  // Room for five runs, so the dialog (centred) and its buttons do not move
  // while the preview is fetched.
  const next = h('div', { class: 'preview runs-preview', 'aria-live': 'polite' });
  scheduleWatcher(schedule, next);
  for (;;) {
    const v = await dialog({ title: isNew ? 'Add job' : `Edit job ${job.id}`, testid: 'job-dialog',
      body: [h('div', { class: 'form-grid' },
               h('label', { for: 'job-id' }, 'ID'), id, h('label', { for: 'job-kind' }, 'Kind'), kind,
               h('label', { for: 'job-store' }, 'Datastore'), store,
               h('label', { for: 'job-schedule' }, 'Schedule'), schedule,
               h('label', { for: 'job-options' }, 'Options (JSON)'), options,
               h('label', { for: 'job-enabled' }, 'Enabled'), enabled),
             h('h3', {}, 'Next runs'), next],
      actions: [{ label: 'Cancel', value: null, class: 'secondary' },
                { label: 'Save', value: 'save', testid: 'job-save' }] });
    if (v !== 'save') return false;
    let opts;
    try { opts = JSON.parse(options.value || '{}'); } catch (e) { toast('Options are not JSON: ' + e.message, true); continue; }
    const body = { id: id.value.trim(), kind: kind.value, store: store.value, schedule: schedule.value.trim(),
                   options: opts, enabled: enabled.checked };
    try {
      if (isNew) await api.post('/jobs', body); else await api.put(`/jobs/${api.enc(job.id)}`, body);
      toast(`Job ${body.id} saved.`);
      return true;
    } catch (e) {
      toast(e.message, true);
    }
  }
}

export async function render(main, _params, app) {
  const [jobs, stores] = await Promise.all([api.get('/jobs'), api.get('/datastores')]);
  const storeNames = stores.map((s) => s.name);
  const rows = jobs.map((j) => h('tr', { 'data-testid': 'job-row', 'data-job': j.id },
    h('td', {}, j.id), h('td', {}, orDash(j.kind)), h('td', {}, orDash(j.store)),
    h('td', { class: 'mono' }, orDash(j.schedule)),
    h('td', { class: 'mono' }, j.options && Object.keys(j.options).length ? JSON.stringify(j.options) : DASH),
    h('td', {}, j.enabled === false ? 'no' : 'yes'),
    h('td', {}, timeEl(j['last-run'])), h('td', {}, timeEl(j['next-run'])),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary small', 'data-testid': 'job-run', onclick: async () => {
        try { const r = await api.post(`/jobs/${api.enc(j.id)}/run`, {}); location.hash = '#/tasks?task=' + encodeURIComponent(r.task); }
        catch (e) { toast(e.message, true); } } }, 'Run now'),
      h('button', { type: 'button', class: 'secondary small', 'data-testid': 'job-edit', onclick: async () => {
        if (await jobDialog(j, storeNames)) app.render(); } }, 'Edit'),
      h('button', { type: 'button', class: 'danger small', 'data-testid': 'job-remove', onclick: async () => {
        if (!await confirmDialog('Remove job', `Remove job ${j.id}?`, 'Remove', true)) return;
        try { await api.del(`/jobs/${api.enc(j.id)}`); app.render(); } catch (e) { toast(e.message, true); } } },
        'Remove'))));
  main.append(h('h1', {}, 'Jobs'),
    h('div', { class: 'toolbar' }, h('button', { type: 'button', 'data-testid': 'job-add', onclick: async () => {
      if (await jobDialog(null, storeNames)) app.render(); } }, 'Add job')),
    jobs.length
      ? h('div', { class: 'scroll' }, h('table', { 'data-testid': 'jobs' },
          h('thead', {}, h('tr', {}, ['ID', 'Kind', 'Datastore', 'Schedule', 'Options', 'Enabled', 'Last run',
                                      'Next run', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows)))
      : h('p', { class: 'muted', 'data-testid': 'no-jobs' }, 'No job.'));
}

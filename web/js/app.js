// The app: session state, the router on location.hash and the page frame.
// Routes are `#/VIEW?key=value…`; each view is a module in js/views/ that
// exports `render(main, params, app)` and may register cleanups (timers)
// with `app.onLeave(fn)`, called when the route changes.

import * as api from './api.js';
import { h, toast } from './dom.js';
import * as login from './views/login.js';
import * as dashboard from './views/dashboard.js';
import * as content from './views/content.js';
import * as tasks from './views/tasks.js';
import * as jobs from './views/jobs.js';
import * as access from './views/access.js';

const views = { login, dashboard, content, tasks, jobs, access };

const app = {
  session: null,   // the login answer: {auth_id, user, csrf, idle_timeout}
  leaveFns: [],
  onLeave(fn) { this.leaveFns.push(fn); },

  // Parses location.hash: '#/content?store=a' → {name: 'content', params}.
  route() {
    const hash = location.hash.replace(/^#\/?/, '');
    const q = hash.indexOf('?');
    const name = (q < 0 ? hash : hash.slice(0, q)) || 'dashboard';
    const params = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
    return { name, params };
  },

  // Navigates to `name` with `params` (an object); re-renders even when the
  // hash does not change.
  go(name, params = {}) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    const target = '#/' + name + (s ? '?' + s : '');
    if (location.hash === target) this.render(); else location.hash = target;
  },

  async render() {
    for (const fn of this.leaveFns.splice(0)) {
      try { fn(); } catch (_) { /* a cleanup never stops navigation */ }
    }
    // A dialog of the view being left is cancelled (its promise resolves null).
    for (const d of document.querySelectorAll('dialog')) d.dispatchEvent(new Event('cancel'));
    const main = document.getElementById('main');
    let { name, params } = this.route();
    if (!this.session) name = 'login';
    else if (name === 'login' || !views[name]) name = 'dashboard';
    document.querySelector('.topbar').hidden = !this.session;
    for (const a of document.querySelectorAll('.topbar nav a')) {
      a.toggleAttribute('aria-current', a.getAttribute('href') === '#/' + name);
      if (a.getAttribute('href') === '#/access') a.hidden = !this.session?.admin_hint;
    }
    while (main.firstChild) main.removeChild(main.firstChild);
    main.setAttribute('data-view', name);
    main.setAttribute('aria-busy', 'true');
    try {
      await views[name].render(main, params, this);
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 401) return;
      main.append(h('p', { class: 'error', role: 'alert', 'data-testid': 'view-error' },
        e instanceof api.ApiError && e.status === 404
          ? `This server does not offer this view yet (${e.message}).` : e.message));
    } finally {
      main.removeAttribute('aria-busy');
    }
  },

  // After a login or a found session.
  async signedIn(sess) {
    this.session = sess;
    api.setCsrf(sess.csrf);
    document.querySelector('[data-testid=who]').textContent = sess.auth_id || sess.user || '';
    // Access is Admin-on-"*" only; the server decides, the nav only hides the
    // link from callers whose access list the server refuses.
    try {
      await api.get('/access/users');
      this.session.admin_hint = true;
    } catch (e) {
      this.session.admin_hint = !(e instanceof api.ApiError && e.status === 403);
    }
    if (this.route().name === 'login') this.go('dashboard'); else await this.render();
  },

  signedOut() {
    this.session = null;
    api.setCsrf('');
    this.render();
  },
};

api.setUnauthorizedHandler(() => {
  if (app.session) toast('Your session has ended; please log in again.', true);
  app.signedOut();
});

document.querySelector('[data-testid=logout]').addEventListener('click', async () => {
  try { await api.logout(); } catch (_) { /* the session is gone either way */ }
  app.signedOut();
});

window.addEventListener('hashchange', () => app.render());

(async () => {
  try {
    app.signedIn(await api.session());
  } catch (_) {
    app.signedOut();
  }
})();

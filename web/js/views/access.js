// Access (Admin on "*"): users, API tokens (the secret is shown once, right
// after it is made) and ACLs.

import * as api from '../api.js';
import { h, DASH, orDash, timeEl, dialog, confirmDialog, toast } from '../dom.js';

const ROLES = ['Admin', 'Backup', 'Reader', 'Audit'];

const nameOf = (x, ...keys) => typeof x === 'string' ? x : keys.map((k) => x[k]).find((v) => v) || DASH;

function table(testid, head, rows) {
  return rows.length
    ? h('div', { class: 'scroll' }, h('table', { 'data-testid': testid },
        h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, 'None.');
}

function form(testid, fields, label, onSubmit) {
  const f = h('form', { class: 'inline-form', 'data-testid': testid }, fields,
    h('button', { type: 'submit' }, label));
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await onSubmit(); } catch (err) { toast(err.message, true); }
  });
  return f;
}

function usersSection(users, app) {
  const name = h('input', { 'aria-label': 'New user name', placeholder: 'user', required: true, 'data-testid': 'user-name' });
  const pw = h('input', { type: 'password', 'aria-label': 'Password', placeholder: 'password (optional)',
                          autocomplete: 'new-password', 'data-testid': 'user-password' });
  const rows = users.map((u) => {
    const user = nameOf(u, 'user', 'name', 'id');
    return h('tr', { 'data-testid': 'user-row', 'data-user': user }, h('td', {}, user),
      h('td', {}, h('button', { type: 'button', class: 'secondary small', 'data-testid': 'set-password', onclick: async () => {
        const input = h('input', { type: 'password', autocomplete: 'new-password', 'aria-label': 'New password' });
        const v = await dialog({ title: `Password of ${user}`, body: [input],
          actions: [{ label: 'Cancel', value: null, class: 'secondary' }, { label: 'Set', value: 'set' }] });
        if (v !== 'set') return;
        try { await api.put(`/access/users/${api.enc(user)}/password`, { password: input.value }); toast('Password set.'); }
        catch (e) { toast(e.message, true); }
      } }, 'Set password')));
  });
  return h('section', { class: 'card', 'data-testid': 'users' }, h('h2', {}, 'Users'),
    table('users-table', ['User', ''], rows),
    form('add-user', [name, pw], 'Add user', async () => {
      const body = { user: name.value.trim() };
      if (pw.value) body.password = pw.value;
      await api.post('/access/users', body);
      app.render();
    }));
}

function tokensSection(tokens, app) {
  const id = h('input', { 'aria-label': 'New token id', placeholder: 'user!name', required: true, 'data-testid': 'token-id' });
  const rows = tokens.map((t) => {
    const authId = nameOf(t, 'auth_id', 'auth-id', 'id');
    return h('tr', { 'data-testid': 'token-row', 'data-token': authId }, h('td', {}, authId),
      h('td', {}, typeof t === 'object' ? timeEl(t.created) : DASH),
      h('td', {}, h('button', { type: 'button', class: 'danger small', 'data-testid': 'token-delete', onclick: async () => {
        if (!await confirmDialog('Delete token', `Delete token ${authId}? Clients using it stop working.`, 'Delete', true)) return;
        try { await api.del(`/access/tokens/${api.enc(authId)}`); app.render(); } catch (e) { toast(e.message, true); }
      } }, 'Delete')));
  });
  return h('section', { class: 'card', 'data-testid': 'tokens' }, h('h2', {}, 'API tokens'),
    table('tokens-table', ['Token', 'Created', ''], rows),
    form('add-token', [id], 'Create token', async () => {
      const r = await api.post('/access/tokens', { auth_id: id.value.trim() });
      const full = `${r.auth_id}:${r.secret}`;
      await dialog({ title: 'Token created', testid: 'token-secret-dialog',
        body: [h('p', {}, 'The secret is shown this once. Store it now:'),
               h('code', { class: 'secret', 'data-testid': 'token-secret' }, full)],
        actions: [{ label: 'Done', value: true }] });
      app.render();
    }));
}

function aclSection(acl, stores, app) {
  const store = h('select', { 'aria-label': 'Datastore', 'data-testid': 'acl-store' },
    ['*', ...stores].map((s) => h('option', { value: s }, s)));
  const auth = h('input', { 'aria-label': 'User or token', placeholder: 'user or user!token', required: true,
                            'data-testid': 'acl-auth' });
  const role = h('select', { 'aria-label': 'Role', 'data-testid': 'acl-role' }, ROLES.map((r) => h('option', { value: r }, r)));
  const rows = acl.map((a) => h('tr', { 'data-testid': 'acl-row' },
    h('td', {}, orDash(a.store)), h('td', {}, orDash(a.auth_id ?? a['auth-id'])), h('td', {}, orDash(a.role))));
  return h('section', { class: 'card', 'data-testid': 'acl' }, h('h2', {}, 'Permissions'),
    table('acl-table', ['Datastore', 'User or token', 'Role'], rows),
    form('set-acl', [store, auth, role], 'Set role', async () => {
      await api.put('/access/acl', { store: store.value, auth_id: auth.value.trim(), role: role.value });
      app.render();
    }));
}

export async function render(main, _params, app) {
  const [users, tokens, acl, stores] = await Promise.all([
    api.get('/access/users'), api.get('/access/tokens'), api.get('/access/acl'), api.get('/datastores')]);
  main.append(h('h1', {}, 'Access'),
    usersSection(users, app), tokensSection(tokens, app), aclSection(acl, stores.map((s) => s.name), app));
}

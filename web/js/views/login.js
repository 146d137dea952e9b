// Login: user and password, or an API token (USER!TOKEN:SECRET). Both make a
// server-side session (POST /login); a wrong credential shows the server's
// own message.

import * as api from '../api.js';
import { h, replace } from '../dom.js';

export async function render(main, _params, app) {
  let mode = 'password';
  const error = h('p', { class: 'error', role: 'alert', 'data-testid': 'login-error', hidden: true });
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true,
                            'data-testid': 'login-user' });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password',
                                autocomplete: 'current-password', required: true,
                                'data-testid': 'login-password' });
  const token = h('input', { id: 'login-token', name: 'token', type: 'password', autocomplete: 'off',
                             placeholder: 'user!token:secret', required: true,
                             'data-testid': 'login-token' });
  const fields = h('div', { class: 'fields' });
  const tabPw = h('button', { type: 'button', role: 'tab', 'data-testid': 'login-tab-password' }, 'Password');
  const tabTok = h('button', { type: 'button', role: 'tab', 'data-testid': 'login-tab-token' }, 'API token');
  const show = (m) => {
    mode = m;
    tabPw.setAttribute('aria-selected', String(m === 'password'));
    tabTok.setAttribute('aria-selected', String(m === 'token'));
    replace(fields, ...(m === 'password'
      ? [h('label', { for: 'login-user' }, 'User'), user,
         h('label', { for: 'login-password' }, 'Password'), password]
      : [h('label', { for: 'login-token' }, 'API token'), token]));
  };
  tabPw.addEventListener('click', () => show('password'));
  tabTok.addEventListener('click', () => show('token'));
  show('password');

  const submit = h('button', { type: 'submit', 'data-testid': 'login-submit' }, 'Log in');
  const form = h('form', { class: 'login card', 'data-testid': 'login-form' },
    h('h1', {}, 'Cairn'),
    h('div', { class: 'tabs', role: 'tablist' }, tabPw, tabTok),
    fields, error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const body = mode === 'password'
        ? { user: user.value, password: password.value }
        : { token: token.value.trim() };
      const sess = await api.login(body);
      password.value = '';
      token.value = '';
      await app.signedIn(sess);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  main.appendChild(form);
  user.focus();
}

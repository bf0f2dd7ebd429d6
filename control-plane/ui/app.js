// mcpgw admin console: one plain ES2020 file, no dependency, no build step. Served under a strict CSP
// (no inline script, style or handler): every element is built with h() and every server-provided string
// goes through textContent. The session cookie plus the X-CSRF-Token header authenticate every call.
'use strict';

(() => {
  // ---------------------------------------------------------------- small DOM helpers
  const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'open', 'hidden', 'required', 'readOnly', 'multiple']);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'test') el.setAttribute('data-test', v);
        else if (k === 'text') el.textContent = String(v);
        else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) { if (dv != null) el.dataset[dk] = String(dv); }
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (PROPS.has(k)) el[k] = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    append(el, children);
    return el;
  }

  // Replaces an element's children (arrays flattened, null and false skipped).
  function put(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ICONS = {
    overview: 'M3 13h8V3H3zm0 8h8v-6H3zm10 0h8V11h-8zm0-18v6h8V3z',
    servers: 'M4 4h16v6H4zm0 10h16v6H4zm3-7h2v1H7zm0 10h2v1H7z',
    keys: 'M7 14a4 4 0 1 1 3.9-5H21v3h-2v3h-3v-3h-5.1A4 4 0 0 1 7 14zm0-2a2 2 0 1 0 0-4 2 2 0 0 0 0 4z',
    roles: 'M12 2 4 5v6c0 5 3.4 9.7 8 11 4.6-1.3 8-6 8-11V5z',
    limits: 'M12 4a9 9 0 0 0-9 9h2a7 7 0 1 1 14 0h2a9 9 0 0 0-9-9zm4.2 4.4-5.6 4.2a1.6 1.6 0 1 0 2.2 2.2z',
    audit: 'M6 2h9l5 5v15H6zm8 1.5V8h4.5zM9 12h8v1.5H9zm0 4h8v1.5H9z',
    connect: 'M10.6 13.4a1 1 0 0 1 0-1.4l3.6-3.6a3 3 0 1 1 4.2 4.2l-2 2-1.4-1.4 2-2a1 1 0 0 0-1.4-1.4l-3.6 3.6a1 1 0 0 1-1.4 0zM5.6 18.4a3 3 0 0 1 0-4.2l2-2 1.4 1.4-2 2a1 1 0 0 0 1.4 1.4l3.6-3.6 1.4 1.4-3.6 3.6a3 3 0 0 1-4.2 0z',
    menu: 'M3 6h18v2H3zm0 5h18v2H3zm0 5h18v2H3z',
    copy: 'M8 8h11v13H8zm-4-5h11v3H6v10H4z',
    refresh: 'M12 4a8 8 0 0 1 7.7 6H17.6A6 6 0 1 0 18 14h2.1A8 8 0 1 1 12 4zm5-1h4v4z',
  };
  function icon(name) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('fill', 'currentColor');
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', ICONS[name] || '');
    svg.append(path);
    return svg;
  }

  const fmtTime = (t) => {
    if (!t) return '—';
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    return d.toLocaleString(undefined, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  };
  const fmtAgo = (t) => {
    if (!t) return '—';
    const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
    if (!Number.isFinite(s)) return String(t);
    if (s < 5) return 'just now';
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.round(s / 60)}m ago`;
    if (s < 86400) return `${Math.round(s / 3600)}h ago`;
    return `${Math.round(s / 86400)}d ago`;
  };
  const fmtPer = (ms) => {
    if (ms == null) return '';
    if (ms % 86400000 === 0) return `${ms / 86400000}d`;
    if (ms % 3600000 === 0) return `${ms / 3600000}h`;
    if (ms % 60000 === 0) return `${ms / 60000}m`;
    if (ms % 1000 === 0) return `${ms / 1000}s`;
    return `${ms}ms`;
  };
  const str = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const badge = (status, test) => h('span', { class: `badge ${['healthy', 'unhealthy', 'unknown', 'ok', 'error'].includes(status) ? status : 'neutral'}`, test, dataset: { status } }, status || 'unknown');

  // ---------------------------------------------------------------- state
  const S = {
    session: null, // the GET /ui/session body
    gen: 0, // bumped on every navigation: async work of an older page is dropped
    timer: null,
    roles: null,
  };
  const P = () => (S.session && S.session.principal) || {};
  const isAdmin = () => !!(P().admin || P().platform_admin);
  const isPlatform = () => !!P().platform_admin;
  const canServers = () => isAdmin() || !!P().server_owner;

  const PAGES = [
    { key: 'overview', label: 'Overview', allowed: () => true },
    { key: 'servers', label: 'Servers', allowed: canServers },
    { key: 'keys', label: 'API keys', allowed: isAdmin },
    { key: 'roles', label: 'Roles', allowed: isAdmin },
    { key: 'limits', label: 'Rate limits', allowed: isAdmin },
    { key: 'audit', label: 'Audit log', allowed: isAdmin },
    { key: 'connect', label: 'Connect a client', allowed: () => true },
  ];

  // ---------------------------------------------------------------- API access
  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body || null;
    }
  }

  async function request(url, { method = 'GET', body, headers = {}, contentType } = {}) {
    const init = { method, credentials: 'same-origin', headers: { ...headers } };
    if (S.session && S.session.csrf_token) init.headers['X-CSRF-Token'] = S.session.csrf_token;
    if (body !== undefined) {
      if (typeof body === 'string') {
        init.body = body;
        init.headers['Content-Type'] = contentType || 'text/plain';
      } else {
        init.body = JSON.stringify(body);
        init.headers['Content-Type'] = 'application/json';
      }
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, 'network', `The control plane could not be reached (${e.message}).`);
    }
    return res;
  }

  async function errorOf(res) {
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    const code = (body && (body.code || body.error)) || `http_${res.status}`;
    const message = (body && (body.message || body.error_description)) || `${res.status} ${res.statusText}`.trim();
    return new ApiError(res.status, code, message, body);
  }

  // One /api/v1 call: the parsed body (JSON or text), or `{data, headers}` with `full`. 401 ends the session.
  async function api(method, path, opts = {}) {
    const res = await request(`/api/v1${path}`, { method, ...opts });
    if (res.status === 401) {
      sessionEnded();
      throw new ApiError(401, 'session_ended', 'Your session ended; sign in again.');
    }
    if (!res.ok) throw await errorOf(res);
    if (opts.raw) return res;
    let data = null;
    if (res.status !== 204) {
      const ct = res.headers.get('content-type') || '';
      data = ct.includes('json') ? await res.json() : await res.text();
    }
    return opts.full ? { data, headers: res.headers } : data;
  }
  const GET = (p, o) => api('GET', p, o);

  // ---------------------------------------------------------------- toasts and notices
  function toast(message, kind = '') {
    let box = document.querySelector('.toasts');
    if (!box) { box = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' }); document.body.append(box); }
    const t = h('div', { class: `toast ${kind}`, test: 'toast' }, message);
    box.append(t);
    setTimeout(() => t.remove(), kind === 'error' ? 7000 : 3500);
  }

  function notice(kind, message, test) {
    return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', test }, message);
  }

  // The message shown for a failed call; 403 gets its own wording.
  function describe(e) {
    if (e && e.status === 403) return `You are not allowed to do this: ${e.message}`;
    return (e && e.message) || String(e);
  }

  function errorNotice(e) {
    return notice(e && e.status === 403 ? 'warn' : 'error', describe(e), e && e.status === 403 ? 'notice-forbidden' : 'notice-error');
  }

  // ---------------------------------------------------------------- dialogs
  // A modal <dialog>: focus moves in, Escape closes it (native), it is removed once closed.
  function openDialog({ title, body, foot, test, wide, onClose }) {
    const closeBtn = h('button', { type: 'button', class: 'link', test: 'dialog-close', 'aria-label': 'Close' }, 'Close');
    const dlg = h('dialog', { test, class: wide ? 'wide' : '', 'aria-label': title },
      h('div', { class: 'dlg-head' }, h('h2', {}, title), closeBtn),
      h('div', { class: 'dlg-body' }, body),
      foot ? h('div', { class: 'dlg-foot' }, foot) : null);
    closeBtn.addEventListener('click', () => dlg.close());
    dlg.addEventListener('close', () => { dlg.remove(); if (onClose) onClose(); });
    document.body.append(dlg);
    dlg.showModal();
    const first = dlg.querySelector('.dlg-body input:not([type=hidden]):not([disabled]), .dlg-body select, .dlg-body textarea, .dlg-body button, .dlg-foot button');
    if (first) first.focus();
    return dlg;
  }

  function confirmDialog(title, message, okLabel = 'Delete') {
    return new Promise((resolve) => {
      let answer = false;
      const ok = h('button', { type: 'button', class: 'primary', test: 'confirm-ok' }, okLabel);
      const cancel = h('button', { type: 'button', test: 'confirm-cancel' }, 'Cancel');
      const dlg = openDialog({ title, test: 'confirm-dialog', body: h('p', { class: 'wrap-any' }, message), foot: [cancel, ok], onClose: () => resolve(answer) });
      ok.addEventListener('click', () => { answer = true; dlg.close(); });
      cancel.addEventListener('click', () => dlg.close());
      cancel.focus();
    });
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const ta = h('textarea', { class: 'sr-only' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      try { document.execCommand('copy'); } catch (__) { /* nothing more to try */ }
      ta.remove();
    }
    if (button) {
      const old = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = old; }, 1500);
    }
  }
  const copyButton = (getText, test = 'copy') => {
    const b = h('button', { type: 'button', test }, 'Copy');
    b.addEventListener('click', () => copyText(typeof getText === 'function' ? getText() : getText, b));
    return b;
  };

  function download(filename, blob) {
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: filename, class: 'hidden' });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
  }

  // ---------------------------------------------------------------- forms
  // Field rows carry data-field; errors of the API are put at the field they name.
  function field(name, label, input, hint) {
    if (!input.id) input.id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
    if (!input.name) input.name = name;
    const isCheck = input.type === 'checkbox';
    return h('div', { class: isCheck ? 'frow check' : 'frow', dataset: { field: name } },
      isCheck ? input : null,
      h('label', { for: input.id }, label),
      isCheck ? null : input,
      hint ? h('span', { class: 'hint' }, hint) : null);
  }
  const input = (attrs = {}) => h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs });
  const select = (options, value, attrs = {}) => h('select', attrs,
    options.map((o) => { const [v, l] = Array.isArray(o) ? o : [o, o]; return h('option', { value: v, selected: v === value }, l); }));

  function clearErrors(form) {
    form.querySelectorAll('.field-error, [data-test=form-error]').forEach((e) => e.remove());
    form.querySelectorAll('.frow.invalid').forEach((e) => e.classList.remove('invalid'));
  }

  // Which form field an API error is about: an explicit `field` (or `details.field`), else its code, else the
  // field named at the start of its message.
  const CODE_FIELDS = {
    invalid_server_name: 'name', server_name_taken: 'name', invalid_endpoint_url: 'endpoint_url',
    endpoint_url_not_allowed: 'endpoint_url', invalid_transport_type: 'transport_type', invalid_description: 'description',
    invalid_tags: 'tags', invalid_tenant: 'tenant_id', invalid_version: 'version', invalid_load_balancing: 'load_balancing',
    invalid_hash_key: 'hash_key', invalid_name_prefix: 'name_prefix', invalid_priority: 'priority',
    invalid_audit_arguments: 'audit_arguments', invalid_command: 'program', stdio_not_allowed: 'program',
    invalid_api_key_name: 'name', invalid_permissions: 'permissions', invalid_expires_at: 'expires_at',
    role_taken: 'name', instance_endpoint_taken: 'endpoint_url', invalid_instances: 'weight',
  };
  function fieldOf(err, form) {
    const has = (f) => f && form.querySelector(`[data-field="${CSS.escape(f)}"]`);
    const b = err.body || {};
    const explicit = b.field || (b.details && b.details.field);
    if (has(explicit)) return explicit;
    const m = /^(?:missing field `(\w+)`|unknown field `(\w+)`|(?:match\.)?([a-z_]+)\b)/.exec(err.message || '');
    if (err.code === 'missing_field' && m && has(m[1])) return m[1];
    if (err.code === 'invalid_rate_limit' || err.code === 'invalid_role' || err.code === 'invalid_permissions') {
      const words = ['scope', 'requests', 'burst', 'per', 'fail_mode', 'global', 'idp_groups', 'rules', 'permissions', 'name', 'tenant', 'server', 'tool'];
      const lower = (err.message || '').toLowerCase();
      for (const w of words) {
        const re = new RegExp(`(^|[^a-z_])(match\\.)?${w}([^a-z_]|$)`);
        if (re.test(lower)) {
          const f = ['tenant', 'server', 'tool'].includes(w) ? `match_${w}` : w;
          if (has(f)) return f;
        }
      }
    }
    if (has(CODE_FIELDS[err.code])) return CODE_FIELDS[err.code];
    if (err.code === 'invalid_role' && has('role')) return 'role';
    if (m && has(m[3])) return m[3];
    return null;
  }

  function showError(form, err) {
    const f = err instanceof ApiError ? fieldOf(err, form) : null;
    if (f) {
      const row = form.querySelector(`[data-field="${CSS.escape(f)}"]`);
      row.classList.add('invalid');
      row.append(h('p', { class: 'field-error', test: 'field-error', dataset: { field: f }, role: 'alert' }, err.message));
      const ctl = row.querySelector('input, select, textarea');
      if (ctl) ctl.focus();
    } else {
      form.prepend(h('div', { class: 'notice error', test: 'form-error', role: 'alert' }, describe(err)));
    }
    form.dataset.state = 'error';
  }

  // Wires a dialog form: submit runs `action(form)`; an error is shown at its field and the dialog stays.
  function formDialog({ title, test, fields, submitLabel, action, wide }) {
    const submit = h('button', { type: 'submit', class: 'primary', test: 'form-submit' }, submitLabel || 'Save');
    const cancel = h('button', { type: 'button', test: 'form-cancel' }, 'Cancel');
    const form = h('form', { class: 'form', test, novalidate: true, dataset: { state: 'idle' } }, fields,
      h('div', { class: 'dlg-foot' }, cancel, submit));
    const dlg = openDialog({ title, body: form, wide, test: `${test}-dialog` });
    cancel.addEventListener('click', () => dlg.close());
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      form.dataset.state = 'submitting';
      submit.disabled = true;
      try {
        await action(form);
        form.dataset.state = 'done';
        dlg.close();
      } catch (e) {
        if (e.status === 401) return;
        showError(form, e);
      } finally {
        submit.disabled = false;
      }
    });
    return { dlg, form };
  }

  // A local (client-side) validation error attached to a field.
  const fieldError = (fieldName, message) => new ApiError(400, 'invalid', message, { field: fieldName });

  function parseJsonField(form, name, fallback) {
    const raw = form.elements[name].value.trim();
    if (!raw) return fallback;
    try { return JSON.parse(raw); } catch (e) { throw fieldError(name, `not valid JSON: ${e.message}`); }
  }
  const listOf = (raw) => raw.split(',').map((s) => s.trim()).filter(Boolean);
  // RFC 3339 from what a person types: an RFC 3339 text as is, a local date/time converted.
  function rfc3339(raw, name) {
    const v = (raw || '').trim();
    if (!v) return undefined;
    if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(v)) return v;
    const d = new Date(v);
    if (Number.isNaN(d.getTime())) throw fieldError(name, `${v} is not a date and time (e.g. 2026-01-31T12:00:00Z)`);
    return d.toISOString();
  }

  // ---------------------------------------------------------------- session
  async function loadSession() {
    let res;
    try {
      res = await fetch('/ui/session', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    } catch (e) {
      return { error: `The console cannot reach the control plane (${e.message}).` };
    }
    let body = null;
    try { body = await res.json(); } catch (_) { /* empty */ }
    if (res.ok && body && body.principal) return { session: body };
    return { signedOut: true, idp: !!(body && body.idp_sign_in), message: res.status === 401 ? null : body && body.message };
  }

  function sessionEnded() {
    if (!S.session) return;
    S.session = null;
    stopPage();
    renderSignIn({ notice: 'Your session ended. Sign in again.', idp: S.lastIdp });
  }

  async function signOut() {
    const csrf = S.session && S.session.csrf_token;
    try {
      await fetch('/ui/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf || '' } });
    } catch (_) { /* signed out locally anyway */ }
    S.session = null;
    stopPage();
    renderSignIn({ notice: 'You are signed out.', idp: S.lastIdp });
  }

  function renderSignIn({ notice: msg, error, idp } = {}) {
    S.lastIdp = idp;
    const root = document.getElementById('app');
    const tokenInput = input({ type: 'password', name: 'token', test: 'signin-token', autocomplete: 'off', placeholder: 'mcpgw_… or the admin token', required: true });
    const submit = h('button', { type: 'submit', class: 'primary', test: 'signin-submit' }, 'Sign in');
    const errBox = h('div', {});
    const form = h('form', { test: 'signin-form', novalidate: true },
      field('token', 'Admin token or API key', tokenInput, 'An API key with the admin or server_owner role, or the bootstrap admin token.'),
      submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      errBox.replaceChildren();
      const token = tokenInput.value.trim();
      if (!token) { errBox.append(notice('error', 'Enter a token.', 'signin-error')); tokenInput.focus(); return; }
      submit.disabled = true;
      try {
        const res = await fetch('/ui/session', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify({ token }) });
        let body = null;
        try { body = await res.json(); } catch (_) { /* empty */ }
        if (res.ok && body && body.principal) {
          tokenInput.value = '';
          start(body);
          return;
        }
        errBox.append(notice('error', (body && body.message) || `Sign-in failed (${res.status}).`, 'signin-error'));
        tokenInput.focus();
      } catch (e) {
        errBox.append(notice('error', `The control plane cannot be reached (${e.message}).`, 'signin-error'));
      } finally {
        submit.disabled = false;
      }
    });
    put(root, h('div', { class: 'signin', test: 'signin' },
      h('div', { class: 'card' },
        h('h1', {}, 'mcpgw console'),
        msg ? notice('info', msg, 'signin-notice') : null,
        error ? notice('error', error, 'signin-error') : null,
        errBox,
        form,
        idp ? [h('p', { class: 'or' }, 'or'), h('a', { class: 'btn', href: '/ui/login', test: 'signin-idp' }, 'Sign in with your company account')] : null)));
    document.title = 'Sign in · mcpgw console';
    tokenInput.focus();
  }

  // ---------------------------------------------------------------- shell and routing
  let shellEls = null;

  function roleText(p) {
    if (p.platform_admin) return 'platform administrator';
    if (p.admin) return `administrator${p.tenant ? ` of ${p.tenant}` : ''}`;
    if (p.server_owner) return `server owner${p.tenant ? ` in ${p.tenant}` : ''}`;
    return `user${p.tenant ? ` in ${p.tenant}` : ''}`;
  }

  function renderShell() {
    const p = P();
    const nav = h('nav', { class: 'sidenav', id: 'sidenav', test: 'nav', 'aria-label': 'Console' },
      h('ul', {}, PAGES.filter((pg) => pg.allowed()).map((pg) =>
        h('li', {}, h('a', { href: `#/${pg.key}`, test: `nav-${pg.key}`, dataset: { page: pg.key } }, icon(pg.key), pg.label)))));
    const toggle = h('button', { type: 'button', class: 'navtoggle', test: 'nav-toggle', 'aria-controls': 'sidenav', 'aria-expanded': 'false', 'aria-label': 'Menu' }, icon('menu'));
    toggle.addEventListener('click', () => {
      const open = nav.classList.toggle('open');
      toggle.setAttribute('aria-expanded', String(open));
    });
    nav.addEventListener('click', (e) => {
      if (e.target.closest('a')) { nav.classList.remove('open'); toggle.setAttribute('aria-expanded', 'false'); }
    });
    const signout = h('button', { type: 'button', test: 'signout' }, 'Sign out');
    signout.addEventListener('click', signOut);
    const main = h('main', { id: 'main', test: 'main', tabindex: '-1' });
    // A person by their e-mail, a key by its name; the stable label (user:<id>, api-key:<id>) on hover.
    const label = p.email || p.name || p.label || p.kind || 'signed in';
    const shell = h('div', { class: 'shell', test: 'app-shell' },
      h('header', { class: 'topbar' },
        toggle,
        h('a', { class: 'brand', href: '#/overview' }, 'mcpgw ', h('span', {}, 'console')),
        h('div', { class: 'spacer' }),
        h('div', { class: 'who' },
          h('span', { class: 'label', test: 'principal-label', title: p.label || label }, label),
          h('span', { class: 'role', test: 'principal-role' }, roleText(p))),
        signout),
      nav, main);
    document.getElementById('app').replaceChildren(shell);
    shellEls = { nav, main };
  }

  function start(session) {
    S.session = session;
    S.roles = null;
    renderShell();
    if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/overview');
    route();
  }

  function stopPage() {
    S.gen += 1;
    if (S.timer) clearTimeout(S.timer);
    S.timer = null;
  }

  // Runs `fn` every 3 s while the page that started it is shown (never two at once).
  function poll(fn, ms = 3000) {
    const gen = S.gen;
    const tick = async () => {
      if (gen !== S.gen || !S.session) return;
      try { await fn(); } catch (_) { /* the page shows its own errors */ }
      if (gen === S.gen && S.session) S.timer = setTimeout(tick, ms);
    };
    S.timer = setTimeout(tick, ms);
  }

  function route() {
    if (!S.session || !shellEls) return;
    stopPage();
    const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    let key = parts[0] || 'overview';
    let pg = PAGES.find((x) => x.key === key);
    if (!pg || !pg.allowed()) { pg = PAGES[0]; key = 'overview'; }
    shellEls.nav.querySelectorAll('a').forEach((a) => {
      if (a.dataset.page === key) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    const main = shellEls.main;
    main.replaceChildren();
    const ctx = { gen: S.gen, alive: () => ctx.gen === S.gen && !!S.session };
    document.title = `${pg.label} · mcpgw console`;
    const render = {
      overview: pageOverview, servers: parts[1] ? pageServer : pageServers, keys: pageKeys, roles: pageRoles,
      limits: pageLimits, audit: pageAudit, connect: pageConnect,
    }[key];
    render(main, ctx, parts.slice(1)).catch((e) => {
      if (e && e.status === 401) return;
      if (ctx.alive()) main.append(errorNotice(e));
    });
  }

  function pageRoot(main, key, title, actions, sub) {
    const root = h('section', { test: `page-${key}`, dataset: { loaded: 'false' } });
    root.append(h('div', { class: 'pagehead' }, h('h1', {}, title), sub || null,
      actions && actions.length ? h('div', { class: 'actions' }, actions) : null));
    main.append(root);
    return root;
  }
  const markLoaded = (root) => { root.dataset.loaded = 'true'; root.dataset.refreshed = String(Date.now()); };

  // Rebuilds a container while keeping the keyboard focus on the equivalent element.
  function keepFocus(container, fn) {
    const a = document.activeElement;
    let test = null; let key = null;
    if (a && container.contains(a)) {
      test = a.getAttribute('data-test');
      const k = a.closest('[data-key]');
      key = k && k.dataset.key;
    }
    fn();
    if (test) {
      const sel = key ? `[data-key="${CSS.escape(key)}"] [data-test="${CSS.escape(test)}"]` : `[data-test="${CSS.escape(test)}"]`;
      const again = container.querySelector(sel);
      if (again) again.focus();
    }
  }

  function table(test, columns, rows, emptyText) {
    const tbody = h('tbody', {}, rows);
    const t = h('div', { class: 'table-wrap' }, h('table', { test },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : '' }, c.label || c)))), tbody));
    if (!rows.length) tbody.append(h('tr', {}, h('td', { colspan: String(columns.length), class: 'empty', test: 'empty' }, emptyText || 'Nothing here yet.')));
    return t;
  }

  // ---------------------------------------------------------------- overview
  async function pageOverview(main, ctx) {
    const p = P();
    const root = pageRoot(main, 'overview', 'Overview', null, h('span', { class: 'muted small', test: 'last-refresh' }));
    if (!canServers()) {
      root.append(notice('info', 'You are signed in, but you have no administration rights on this gateway.', 'no-admin'),
        h('p', {}, 'You can still use the MCP servers your role allows: ', h('a', { href: '#/connect' }, 'connect a client'), '.'));
      markLoaded(root);
      return;
    }
    const body = h('div', {});
    const status = h('div', {});
    root.append(status, body);
    const load = async () => {
      const jobs = {
        stats: isAdmin() ? GET('/admin/stats') : null,
        servers: GET('/servers?limit=1000'),
        proxies: isPlatform() ? GET('/proxies') : null,
        audit: isAdmin() ? GET('/audit?limit=200') : null,
      };
      const out = {};
      const errs = [];
      await Promise.all(Object.entries(jobs).map(async ([k, pr]) => {
        if (!pr) return;
        try { out[k] = await pr; } catch (e) { if (e.status === 401) throw e; errs.push([k, e]); }
      }));
      if (!ctx.alive()) return;
      put(status, ...errs.map(([k, e]) => notice(e.status === 403 ? 'warn' : 'error', `${k}: ${describe(e)}`, e.status === 403 ? 'notice-forbidden' : 'notice-error')));
      keepFocus(body, () => put(body, ...overviewBody(out, p)));
      root.querySelector('[data-test=last-refresh]').textContent = `updated ${new Date().toLocaleTimeString()} · refreshes every 3 s`;
      markLoaded(root);
    };
    await load();
    poll(load);
  }

  function overviewBody({ stats, servers, proxies, audit }) {
    const list = Array.isArray(servers) ? servers : [];
    const by = { healthy: 0, unhealthy: 0, unknown: 0 };
    for (const s of list) by[s.health_status] = (by[s.health_status] || 0) + 1;
    const st = stats || {};
    const byStatus = st.servers_by_status || by;
    const inst = st.instances_by_status || {};
    const caps = st.capabilities || {};
    const card = (n, t, cls, test) => h('div', { class: `card stat ${cls || ''}`, test }, h('div', { class: 'n' }, String(n ?? 0)), h('div', { class: 't' }, t));
    const out = [];
    out.push(h('div', { class: 'cards', test: 'overview-cards' },
      card(st.total_servers ?? list.length, 'servers', '', 'stat-servers'),
      card(byStatus.healthy, 'healthy', 'ok', 'stat-healthy'),
      card(byStatus.unhealthy, 'unhealthy', 'bad', 'stat-unhealthy'),
      card(byStatus.unknown, 'unknown', 'unknown', 'stat-unknown'),
      stats ? card(st.total_instances, `instances (${inst.healthy || 0} healthy)`, '', 'stat-instances') : null,
      stats ? card(caps.tools, 'tools discovered', '', 'stat-tools') : null,
      stats && st.proxies_connected !== undefined ? card(st.proxies_connected, 'proxies connected', '', 'stat-proxies') : null,
      stats && st.routing_version !== undefined ? card(st.routing_version, 'routing version', '', 'stat-routing-version') : null));

    const attention = list.filter((s) => s.health_status !== 'healthy');
    out.push(h('h2', {}, 'Servers by health'));
    const rows = [...list].sort((a, b) => ['unhealthy', 'unknown', 'healthy'].indexOf(a.health_status) - ['unhealthy', 'unknown', 'healthy'].indexOf(b.health_status) || a.name.localeCompare(b.name))
      .slice(0, 50).map((s) => h('tr', { test: 'overview-server', dataset: { name: s.name, key: s.id } },
        h('td', {}, h('a', { href: `#/servers/${encodeURIComponent(s.id)}` }, s.name)),
        h('td', {}, badge(s.health_status)),
        h('td', { class: 'num' }, `${s.instances.filter((i) => i.health_status === 'healthy').length}/${s.instances.length}`),
        h('td', {}, s.transport_type),
        h('td', {}, h('span', { class: 'cell-clip', title: s.tenant_id || 'default' }, s.tenant_id || 'default'))));
    out.push(attention.length ? notice('warn', `${attention.length} of ${list.length} servers are not healthy.`) : list.length ? notice('ok', 'Every server is healthy.') : null);
    out.push(table('overview-servers', ['Server', 'Health', { label: 'Healthy instances', num: true }, 'Transport', 'Tenant'], rows, 'No server is registered.'));

    if (audit && Array.isArray(audit.items)) {
      const items = audit.items;
      const mcp = items.filter((r) => r.kind === 'mcp');
      const errors = mcp.filter((r) => r.outcome !== 'ok');
      const admin = items.filter((r) => r.kind === 'admin');
      const perServer = {};
      for (const r of mcp) {
        const k = r.server || '(none)';
        perServer[k] = perServer[k] || { n: 0, err: 0 };
        perServer[k].n += 1;
        if (r.outcome !== 'ok') perServer[k].err += 1;
      }
      out.push(h('h2', {}, 'Recent activity'),
        h('p', { class: 'muted small' }, `The ${items.length} most recent audit records${audit.next_cursor ? ' (older ones in the audit log)' : ''}.`),
        h('div', { class: 'cards', test: 'activity-cards' },
          card(mcp.length, 'MCP requests', '', 'stat-requests'),
          card(errors.length, 'MCP errors and refusals', errors.length ? 'bad' : 'ok', 'stat-errors'),
          card(admin.length, 'admin changes', '', 'stat-admin-changes')),
        Object.keys(perServer).length ? table('activity-servers', ['Server', { label: 'Requests', num: true }, { label: 'Errors', num: true }],
          Object.entries(perServer).sort((a, b) => b[1].n - a[1].n).slice(0, 10).map(([k, v]) =>
            h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, String(v.n)), h('td', { class: 'num' }, String(v.err))))) : null);
    }

    if (Array.isArray(proxies)) {
      // The proxies' own figures (each reports every 5 s): rates between its last two reports.
      const reported = proxies.map((x) => x.traffic).filter(Boolean);
      const sum = (f) => reported.reduce((n, t) => n + (t[f] || 0), 0);
      const rate = (v) => (v == null ? '—' : v < 10 ? v.toFixed(1) : String(Math.round(v)));
      if (reported.length) {
        const rated = reported.filter((t) => t.requests_per_second != null);
        out.push(h('h2', {}, 'Traffic'),
          h('p', { class: 'muted small' }, `As ${reported.length} prox${reported.length === 1 ? 'y' : 'ies'} last reported (every 5 s).`),
          h('div', { class: 'cards', test: 'traffic-cards' },
            card(rated.length ? rate(sum('requests_per_second')) : '—', 'requests / s', '', 'stat-requests-per-second'),
            card(rated.length ? rate(sum('errors_per_second')) : '—', 'errors / s (4xx, 5xx)', sum('errors_per_second') > 0 ? 'bad' : 'ok', 'stat-errors-per-second'),
            card(sum('open_streams'), 'open streams', '', 'stat-open-streams'),
            card(sum('open_connections'), 'client connections', '', 'stat-open-connections'),
            card(sum('requests'), 'requests since start', '', 'stat-requests-total')));
      }
      const version = st.routing_version;
      const traffic = (x, f) => (x.traffic ? (f === 'rps' ? rate(x.traffic.requests_per_second) : String(x.traffic[f])) : '—');
      out.push(h('h2', {}, 'Connected proxies'),
        table('proxies-table', ['Proxy', 'Peer', 'Connected', { label: 'Applied version', num: true }, { label: 'Req/s', num: true }, { label: 'Streams', num: true }, 'State'],
          proxies.map((x) => h('tr', { test: 'proxy-row', dataset: { proxy: x.proxy_id, key: `${x.proxy_id}-${x.connected_at}` } },
            h('td', { class: 'mono' }, x.proxy_id),
            h('td', { class: 'mono' }, x.peer || '—'),
            h('td', { title: fmtTime(x.connected_at) }, fmtAgo(x.connected_at)),
            h('td', { class: 'num', test: 'proxy-version' }, x.acked_version == null ? '—' : String(x.acked_version)),
            h('td', { class: 'num', test: 'proxy-rps' }, traffic(x, 'rps')),
            h('td', { class: 'num', test: 'proxy-streams' }, traffic(x, 'open_streams')),
            h('td', {}, x.last_nack ? h('span', { class: 'badge bad', title: x.last_nack.reason }, `refused v${x.last_nack.version}`)
              : version != null && x.acked_version === version ? badge('ok') : h('span', { class: 'badge warn' }, 'catching up')))),
          'No proxy is connected to this control-plane replica.'));
    }
    return out.filter(Boolean);
  }

  // ---------------------------------------------------------------- servers
  const TRANSPORTS = ['streamable_http', 'sse', 'websocket', 'stdio'];
  const HEALTH = ['healthy', 'unhealthy', 'unknown'];
  const LB = ['round_robin', 'weighted', 'least_connections', 'random', 'consistent_hash'];

  async function pageServers(main, ctx) {
    const register = h('button', { type: 'button', class: 'primary', test: 'server-register' }, 'Register server');
    const importBtn = h('button', { type: 'button', test: 'server-import' }, 'Import YAML');
    const exportBtn = h('button', { type: 'button', test: 'server-export' }, 'Export YAML');
    const actions = isAdmin() ? [importBtn, exportBtn, register] : [register];
    const root = pageRoot(main, 'servers', 'Servers', actions, h('span', { class: 'muted small', test: 'last-refresh' }));
    const search = input({ type: 'search', test: 'server-search', placeholder: 'name, description, tag, URL', 'aria-label': 'Search servers' });
    const health = select([['', 'any health'], ...HEALTH], '', { test: 'filter-health', 'aria-label': 'Health' });
    const transport = select([['', 'any transport'], ...TRANSPORTS], '', { test: 'filter-transport', 'aria-label': 'Transport' });
    const tenant = isPlatform() ? input({ test: 'filter-tenant', placeholder: 'every tenant', 'aria-label': 'Tenant' }) : null;
    const count = h('span', { class: 'muted small', test: 'server-count' });
    root.append(h('div', { class: 'toolbar', role: 'search' },
      h('div', { class: 'field' }, h('label', { for: 'srv-q' }, 'Search'), Object.assign(search, { id: 'srv-q' })),
      h('div', { class: 'field' }, h('label', { for: 'srv-h' }, 'Health'), Object.assign(health, { id: 'srv-h' })),
      h('div', { class: 'field' }, h('label', { for: 'srv-t' }, 'Transport'), Object.assign(transport, { id: 'srv-t' })),
      tenant ? h('div', { class: 'field' }, h('label', { for: 'srv-tn' }, 'Tenant'), Object.assign(tenant, { id: 'srv-tn' })) : null,
      count));
    const status = h('div', {});
    const list = h('div', {});
    root.append(status, list);
    let servers = [];
    const draw = () => {
      const q = search.value.trim().toLowerCase();
      const shown = servers.filter((s) => !q || [s.name, s.description, s.endpoint_url, ...(s.tags || [])].some((v) => v && v.toLowerCase().includes(q)));
      count.textContent = `${shown.length} of ${servers.length}`;
      keepFocus(list, () => put(list, table('servers-table',
        ['Name', 'Health', 'Transport', 'Endpoint', { label: 'Instances', num: true }, 'Tenant', 'Tags', ''],
        shown.map((s) => serverRow(s, reload)),
        servers.length ? 'No server matches.' : 'No server is registered yet.')));
    };
    const reload = async () => {
      const qs = new URLSearchParams({ limit: '1000' });
      if (health.value) qs.set('health_status', health.value);
      if (transport.value) qs.set('transport_type', transport.value);
      if (tenant && tenant.value.trim()) qs.set('tenant_id', tenant.value.trim());
      try {
        const data = await GET(`/servers?${qs}`);
        if (!ctx.alive()) return;
        servers = data;
        status.replaceChildren();
        draw();
        root.querySelector('[data-test=last-refresh]').textContent = `updated ${new Date().toLocaleTimeString()} · refreshes every 3 s`;
      } catch (e) {
        if (e.status === 401 || !ctx.alive()) return;
        put(status, errorNotice(e));
      }
      markLoaded(root);
    };
    search.addEventListener('input', draw);
    health.addEventListener('change', reload);
    transport.addEventListener('change', reload);
    if (tenant) tenant.addEventListener('change', reload);
    register.addEventListener('click', () => serverForm(null, (created) => { reload(); toast(`Registered ${created.name}.`); }));
    importBtn.addEventListener('click', () => importDialog(reload));
    exportBtn.addEventListener('click', async () => {
      try {
        const text = await GET('/admin/export');
        download('registry.yaml', new Blob([typeof text === 'string' ? text : JSON.stringify(text)], { type: 'application/yaml' }));
      } catch (e) { if (e.status !== 401) toast(describe(e), 'error'); }
    });
    await reload();
    poll(reload);
  }

  function serverRow(s, reload) {
    const del = h('button', { type: 'button', class: 'danger', test: 'server-delete', 'aria-label': `Delete ${s.name}` }, 'Delete');
    del.addEventListener('click', () => deleteServer(s, reload));
    const healthy = s.instances.filter((i) => i.health_status === 'healthy').length;
    return h('tr', { test: 'server-row', dataset: { name: s.name, id: s.id, key: s.id, status: s.health_status } },
      h('td', {}, h('a', { href: `#/servers/${encodeURIComponent(s.id)}`, test: 'server-link' }, s.name),
        s.description ? h('div', { class: 'muted small cell-clip', title: s.description }, s.description) : null),
      h('td', {}, badge(s.health_status, 'server-status')),
      h('td', {}, s.transport_type),
      h('td', {}, h('span', { class: 'cell-clip mono', title: s.endpoint_url || '' }, s.endpoint_url || '—')),
      h('td', { class: 'num' }, `${healthy}/${s.instances.length}`),
      h('td', {}, s.tenant_id || 'default'),
      h('td', {}, (s.tags || []).map((t) => h('span', { class: 'tag' }, t))),
      h('td', { class: 'actions' }, del));
  }

  async function deleteServer(s, after) {
    if (!(await confirmDialog(`Delete ${s.name}?`, `The server ${s.name} and its ${s.instances.length} instance(s) are removed from every proxy.`))) return;
    try {
      await api('DELETE', `/servers/${encodeURIComponent(s.id)}`);
      toast(`Deleted ${s.name}.`);
      if (after) after();
    } catch (e) { if (e.status !== 401) toast(describe(e), 'error'); }
  }

  // Register (server null) or edit a server. Editing sends a merge patch of the changed fields with If-Match.
  function serverForm(server, done) {
    const editing = !!server;
    const s = server || {};
    const single = !editing || s.instances.length <= 1;
    const isStdio = s.transport_type === 'stdio';
    const f = {
      name: input({ value: s.name || '', required: true, placeholder: 'docs', autocapitalize: 'none' }),
      endpoint_url: input({ type: 'url', value: single && !isStdio ? s.endpoint_url || '' : '', placeholder: 'http://10.0.0.5:3001/mcp', disabled: editing && (!single || isStdio) }),
      transport_type: select(TRANSPORTS, s.transport_type || 'streamable_http'),
      program: input({ placeholder: '/usr/bin/npx', disabled: editing }),
      args: h('textarea', { rows: '3', placeholder: 'one argument a line', disabled: editing }),
      description: h('textarea', { rows: '2' }),
      tags: input({ value: (s.tags || []).join(', '), placeholder: 'prod, docs' }),
      tenant_id: input({ value: s.tenant_id || '', placeholder: 'default' }),
      version: input({ value: s.version || '', placeholder: '1.0.0' }),
      load_balancing: select(LB, s.load_balancing || 'round_robin'),
      name_prefix: select([['always', 'always (<server>_<name>)'], ['on_conflict', 'on conflict'], ['never', 'never']], s.name_prefix || 'always'),
      priority: input({ type: 'number', value: String(s.priority ?? 0), min: '-1000', max: '1000' }),
      audit_arguments: select(['none', 'redacted', 'hashed'], s.audit_arguments || 'none'),
      auto_discover: h('input', { type: 'checkbox', checked: editing ? !!s.auto_discover : true }),
    };
    f.description.value = s.description || '';
    const urlRow = field('endpoint_url', 'Endpoint URL', f.endpoint_url, editing && !single ? 'This server has several instances: manage them on its page.' : 'http(s):// for streamable_http and sse, ws(s):// for websocket');
    const stdioRows = h('div', { class: 'form-cols' }, field('program', 'Program (stdio)', f.program, 'Must be in --stdio-programs'), field('args', 'Arguments', f.args));
    const sync = () => {
      const stdio = f.transport_type.value === 'stdio';
      urlRow.classList.toggle('hidden', stdio);
      stdioRows.classList.toggle('hidden', !stdio || editing);
    };
    f.transport_type.addEventListener('change', sync);
    const fields = [
      h('div', { class: 'form-cols' }, field('name', 'Name', f.name, 'a-z, 0-9 and -'), field('transport_type', 'Transport', f.transport_type)),
      urlRow, stdioRows,
      field('description', 'Description', f.description),
      h('div', { class: 'form-cols' }, field('tags', 'Tags', f.tags, 'comma-separated'),
        isPlatform() ? field('tenant_id', 'Tenant', f.tenant_id, 'default when empty') : field('version', 'Version', f.version)),
      h('details', { test: 'server-form-advanced' }, h('summary', {}, 'More settings'),
        h('div', { class: 'form', dataset: {} },
          h('div', { class: 'form-cols' },
            isPlatform() ? field('version', 'Version', f.version) : null,
            field('load_balancing', 'Load balancing', f.load_balancing),
            field('name_prefix', 'Tool names on /mcp', f.name_prefix),
            field('priority', 'Priority on /mcp', f.priority, '-1000 to 1000, lower first'),
            field('audit_arguments', 'Audit arguments', f.audit_arguments)),
          field('auto_discover', 'Discover capabilities automatically', f.auto_discover))),
    ];
    sync();
    formDialog({
      title: editing ? `Edit ${s.name}` : 'Register a server',
      test: 'server-form',
      fields,
      submitLabel: editing ? 'Save changes' : 'Register',
      action: async () => {
        const body = {};
        const val = (k) => f[k].value.trim();
        body.name = val('name');
        if (!body.name) throw fieldError('name', 'A name is required.');
        body.transport_type = f.transport_type.value;
        if (body.transport_type === 'stdio') {
          if (!editing) {
            if (!val('program')) throw fieldError('program', 'A stdio server needs a program.');
            body.command = { program: val('program'), args: f.args.value.split('\n').map((a) => a.trim()).filter(Boolean) };
          }
        } else if (!f.endpoint_url.disabled) {
          if (!val('endpoint_url')) throw fieldError('endpoint_url', 'An endpoint URL is required.');
          body.endpoint_url = val('endpoint_url');
        }
        body.description = f.description.value.trim() || null;
        body.tags = listOf(f.tags.value);
        if (isPlatform()) body.tenant_id = val('tenant_id') || null;
        body.version = val('version') || null;
        body.load_balancing = f.load_balancing.value;
        body.name_prefix = f.name_prefix.value;
        const prio = Number(val('priority') || '0');
        if (!Number.isInteger(prio)) throw fieldError('priority', 'The priority is a whole number from -1000 to 1000.');
        body.priority = prio;
        body.audit_arguments = f.audit_arguments.value;
        body.auto_discover = f.auto_discover.checked;
        if (!editing) {
          for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
          if (!body.tags.length) delete body.tags;
          const created = await api('POST', '/servers', { body });
          done(created);
          return;
        }
        // Only what changed, as a merge patch (null resets a field).
        const before = {
          name: s.name, transport_type: s.transport_type, endpoint_url: s.endpoint_url, description: s.description || null,
          tags: s.tags || [], tenant_id: s.tenant_id || null, version: s.version || null, load_balancing: s.load_balancing,
          name_prefix: s.name_prefix, priority: s.priority, audit_arguments: s.audit_arguments, auto_discover: s.auto_discover,
        };
        const patch = {};
        for (const [k, v] of Object.entries(body)) {
          if (k === 'command') continue;
          if (JSON.stringify(v) !== JSON.stringify(before[k] === undefined ? null : before[k])) patch[k] = Array.isArray(v) && !v.length ? null : v;
        }
        if (!Object.keys(patch).length) { done(s); return; }
        const headers = s.__etag ? { 'If-Match': s.__etag } : {};
        const updated = await api('PATCH', `/servers/${encodeURIComponent(s.id)}`, { body: patch, headers });
        done(updated);
      },
    });
  }

  function importDialog(after) {
    const text = h('textarea', { rows: '14', test: 'import-text', spellcheck: 'false', placeholder: 'servers:\n  - name: docs\n    endpoint_url: http://10.0.0.5:3001/mcp' });
    const prune = h('input', { type: 'checkbox', test: 'import-prune' });
    const out = h('div', { test: 'import-result' });
    const dry = h('button', { type: 'button', test: 'import-dry-run' }, 'Dry run');
    const apply = h('button', { type: 'button', class: 'primary', test: 'import-apply', disabled: true }, 'Apply');
    let checked = null;
    const key = () => `${prune.checked}\n${text.value}`;
    const invalidate = () => { if (checked !== key()) apply.disabled = true; };
    text.addEventListener('input', invalidate);
    prune.addEventListener('change', invalidate);
    const run = async (dryRun) => {
      put(out, h('p', { class: 'muted' }, dryRun ? 'Checking…' : 'Applying…'));
      dry.disabled = true; apply.disabled = true;
      try {
        const qs = `dry_run=${dryRun}${prune.checked ? '&prune=true' : ''}`;
        const summary = await api('POST', `/admin/import?${qs}`, { body: text.value, contentType: 'application/yaml' });
        put(out, importSummary(summary));
        if (dryRun) { checked = key(); apply.disabled = !((summary.changes || []).length); } else {
          checked = null;
          toast('Import applied.');
          if (after) after();
        }
      } catch (e) {
        if (e.status === 401) return;
        put(out, notice('error', describe(e), 'import-error'));
      } finally { dry.disabled = false; }
    };
    dry.addEventListener('click', () => run(true));
    apply.addEventListener('click', () => run(false));
    const file = h('input', { type: 'file', accept: '.yaml,.yml,.json,application/yaml,text/yaml', test: 'import-file' });
    file.addEventListener('change', async () => { if (file.files[0]) { text.value = await file.files[0].text(); invalidate(); } });
    openDialog({
      title: 'Import a registry (YAML)', test: 'import-dialog', wide: true,
      body: h('div', { class: 'form' },
        h('p', { class: 'muted small' }, 'Servers are matched by name. Run a dry run first: it shows what would change; then apply it.'),
        field('import_file', 'From a file', file),
        field('import_text', 'Document', text),
        field('prune', 'Also delete the servers the document does not list (prune)', prune),
        out),
      foot: [dry, apply],
    });
  }

  function importSummary(s) {
    const head = `${s.dry_run ? 'Dry run: would create' : 'Created'} ${s.created}, ${s.dry_run ? 'update' : 'updated'} ${s.updated}, ${s.dry_run ? 'delete' : 'deleted'} ${s.deleted}; ${s.unchanged} unchanged.`;
    return h('div', { test: 'import-diff', dataset: { dryRun: String(!!s.dry_run) } },
      notice(s.dry_run ? 'info' : 'ok', head, 'import-summary'),
      h('ul', { class: 'diff-list' }, (s.changes || []).map((c) => h('li', { test: 'import-change', dataset: { name: c.name, action: c.action } },
        h('strong', {}, `${c.action} `), h('span', { class: 'mono' }, c.name),
        (c.diff || []).length ? h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Field'), h('th', {}, 'From'), h('th', {}, 'To'))),
          h('tbody', {}, c.diff.map((d) => h('tr', {}, h('td', {}, d.field), h('td', {}, str(d.from)), h('td', {}, str(d.to))))))) : null))));
  }

  // ---------------------------------------------------------------- one server
  async function pageServer(main, ctx, [id]) {
    const refresh = h('button', { type: 'button', test: 'server-refresh' }, icon('refresh'), 'Refresh now');
    const edit = h('button', { type: 'button', test: 'server-edit' }, 'Edit');
    const del = h('button', { type: 'button', class: 'danger', test: 'server-delete' }, 'Delete');
    const title = h('span', { test: 'server-name' }, '…');
    const statusBadge = h('span', {});
    main.append(h('div', { class: 'crumbs' }, h('a', { href: '#/servers' }, 'Servers'), ' / '));
    const root = pageRoot(main, 'server', title, [refresh, edit, del], statusBadge);
    root.setAttribute('data-test', 'server-detail');
    const status = h('div', {});
    const info = h('div', { class: 'card' });
    const instBox = h('div', {});
    const caps = h('div', { class: 'caps', test: 'capabilities' });
    const addUrl = input({ type: 'url', test: 'instance-add-url', placeholder: 'http://10.0.0.6:3001/mcp', 'aria-label': 'New instance URL' });
    const addWeight = input({ type: 'number', test: 'instance-add-weight', value: '1', min: '1', max: '10000', 'aria-label': 'Weight' });
    const addBtn = h('button', { type: 'submit', test: 'instance-add' }, 'Add instance');
    const addForm = h('form', { class: 'toolbar', test: 'instance-form', novalidate: true },
      field('endpoint_url', 'New instance URL', addUrl), field('weight', 'Weight', addWeight), addBtn);
    root.append(status, info, h('h2', {}, 'Instances'), instBox, addForm, h('h2', {}, 'Capabilities'), caps);

    let server = null;
    let capsDigest = null;
    let tab = 'tools';
    const openItems = new Set();
    const load = async () => {
      let s; let health = null;
      try {
        const res = await GET(`/servers/${encodeURIComponent(id)}?include_tools=true&include_prompts=true&include_resources=true`, { full: true });
        s = res.data;
        s.__etag = res.headers.get('ETag');
        try { health = await GET(`/servers/${encodeURIComponent(id)}/health`); } catch (e) { if (e.status === 401) throw e; }
      } catch (e) {
        if (e.status === 401 || !ctx.alive()) return;
        put(status, e.status === 404 ? notice('warn', 'This server does not exist (any more).', 'server-missing') : errorNotice(e));
        markLoaded(root);
        return;
      }
      if (!ctx.alive()) return;
      server = s;
      status.replaceChildren();
      title.textContent = s.name;
      document.title = `${s.name} · mcpgw console`;
      put(statusBadge, badge(s.health_status, 'server-health'));
      put(info, serverInfo(s));
      const hist = {};
      if (health) for (const i of health.instances || []) hist[i.id] = i;
      keepFocus(instBox, () => put(instBox, instancesTable(s, hist, load)));
      addForm.classList.toggle('hidden', s.transport_type === 'stdio');
      const digest = JSON.stringify([s.tools, s.prompts, s.resources, s.resource_templates, s.discovery && s.discovery.status]);
      if (digest !== capsDigest) {
        capsDigest = digest;
        caps.querySelectorAll('details[open]').forEach((d) => openItems.add(d.dataset.key));
        caps.querySelectorAll('details:not([open])').forEach((d) => openItems.delete(d.dataset.key));
        keepFocus(caps, () => put(caps, ...capabilities(s, tab, (t) => { tab = t; capsDigest = null; load(); }, openItems)));
      }
      markLoaded(root);
    };
    refresh.addEventListener('click', async () => {
      refresh.disabled = true;
      try {
        await api('POST', `/servers/${encodeURIComponent(id)}/refresh`);
        toast('Discovery done.');
      } catch (e) { if (e.status !== 401) put(status, errorNotice(e)); } finally { refresh.disabled = false; }
      capsDigest = null;
      await load();
    });
    edit.addEventListener('click', async () => {
      await load();
      if (server) serverForm(server, () => { toast('Saved.'); load(); });
    });
    del.addEventListener('click', () => server && deleteServer(server, () => { location.hash = '#/servers'; }));
    addForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(addForm);
      const body = { endpoint_url: addUrl.value.trim() };
      const w = Number(addWeight.value || '1');
      if (w !== 1) body.weight = w;
      addBtn.disabled = true;
      try {
        await api('POST', `/servers/${encodeURIComponent(id)}/instances`, { body });
        addUrl.value = '';
        toast('Instance added.');
        await load();
      } catch (e) { if (e.status !== 401) showError(addForm, e); } finally { addBtn.disabled = false; }
    });
    await load();
    poll(load);
  }

  function serverInfo(s) {
    const d = s.discovery || {};
    const kv = [
      ['Endpoint', h('span', { class: 'mono', test: 'server-endpoint' }, s.endpoint_url || '—')],
      ['Transport', s.transport_type], ['Tenant', s.tenant_id || 'default'], ['Owner', s.owner || '—'],
      ['Description', s.description || '—'], ['Tags', (s.tags || []).length ? s.tags.map((t) => h('span', { class: 'tag' }, t)) : '—'],
      ['Version', s.version || '—'], ['Load balancing', s.load_balancing + (s.hash_key ? ` (${s.hash_key})` : '')],
      ['Names on /mcp', `${s.name_prefix}, priority ${s.priority}`], ['Upstream credential', (s.upstream_auth && s.upstream_auth.type) || 'none'],
      ['Audit arguments', s.audit_arguments],
      ['Last discovery', s.discovery ? [badge(d.status === 'ok' ? 'ok' : 'error', 'discovery-status'), ' ', fmtTime(d.attempted_at),
        d.server_info && d.server_info.name ? ` · ${d.server_info.name} ${d.server_info.version || ''}` : '', d.protocol_version ? ` · ${d.protocol_version}` : '',
        d.error ? h('div', { class: 'field-error' }, d.error) : null] : 'not yet'],
      ['Updated', fmtTime(s.updated_at)], ['Id', h('span', { class: 'mono small', test: 'server-id' }, s.id)],
    ];
    return h('dl', { class: 'kv' }, kv.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  function instancesTable(s, hist, reload) {
    return table('instances-table', ['Endpoint', 'Health', { label: 'Weight', num: true }, { label: 'Latency', num: true }, 'Last check', 'Recent checks', 'Proxies', ''],
      s.instances.map((i) => {
        const hi = hist[i.id] || i;
        const history = (hi.history || []).slice(0, 20).reverse();
        const rm = h('button', { type: 'button', class: 'danger', test: 'instance-remove', 'aria-label': `Remove ${i.endpoint_url}`, disabled: s.instances.length <= 1 }, 'Remove');
        rm.addEventListener('click', async () => {
          if (!(await confirmDialog('Remove this instance?', i.endpoint_url, 'Remove'))) return;
          try { await api('DELETE', `/servers/${encodeURIComponent(s.id)}/instances/${encodeURIComponent(i.id)}`); toast('Instance removed.'); reload(); } catch (e) { if (e.status !== 401) toast(describe(e), 'error'); }
        });
        const passive = (i.passive || []).map((p) => `${p.proxy_id || 'proxy'}: ${p.state || p.breaker || str(p)}`);
        return h('tr', { test: 'instance-row', dataset: { url: i.endpoint_url, status: i.health_status, key: i.id } },
          h('td', {}, h('span', { class: 'mono wrap-any' }, i.endpoint_url), i.last_error ? h('div', { class: 'field-error small' }, i.last_error) : null),
          h('td', {}, badge(i.health_status, 'instance-status')),
          h('td', { class: 'num' }, String(i.weight)),
          h('td', { class: 'num' }, i.latency_ms == null ? '—' : `${i.latency_ms} ms`),
          h('td', { title: fmtTime(i.last_check_at) }, fmtAgo(i.last_check_at), i.consecutive_failures ? h('div', { class: 'small muted' }, `${i.consecutive_failures} failure(s) in a row`) : null),
          h('td', {}, h('span', { class: 'history', test: 'health-history', 'aria-label': `${history.filter((x) => x.ok).length} of ${history.length} recent checks passed` },
            history.map((x) => h('i', { class: x.ok ? '' : 'fail', title: `${fmtTime(x.at)} · ${x.ok ? `ok, ${x.latency_ms} ms` : x.error || 'failed'}` })))),
          h('td', { class: 'small' }, passive.length ? passive.join('; ') : '—'),
          h('td', { class: 'actions' }, rm));
      }), 'This server has no instance.');
  }

  function capabilities(s, tab, setTab, openItems) {
    const kinds = [
      ['tools', 'Tools', s.tools || []], ['prompts', 'Prompts', s.prompts || []],
      ['resources', 'Resources', s.resources || []], ['resource_templates', 'Resource templates', s.resource_templates || []],
    ];
    const tabs = h('div', { class: 'tabs', role: 'tablist' }, kinds.map(([k, label, items]) => {
      const b = h('button', { type: 'button', role: 'tab', test: `tab-${k}`, 'aria-selected': String(k === tab) }, `${label} (${items.length})`);
      b.addEventListener('click', () => setTab(k));
      return b;
    }));
    const [, , items] = kinds.find(([k]) => k === tab);
    const itemName = (it) => it.name || it.uri || it.uriTemplate || '?';
    const list = h('div', { test: `${tab.replace('_', '-')}-list`, role: 'tabpanel' },
      items.length ? items.map((it) => {
        const name = itemName(it);
        const key = `${tab}:${name}`;
        const schema = it.inputSchema || it.arguments || it.outputSchema ? h('div', {},
          it.inputSchema ? [h('h3', {}, 'Input schema'), h('pre', { test: 'input-schema' }, JSON.stringify(it.inputSchema, null, 2))] : null,
          it.outputSchema ? [h('h3', {}, 'Output schema'), h('pre', {}, JSON.stringify(it.outputSchema, null, 2))] : null,
          it.arguments ? [h('h3', {}, 'Arguments'), h('pre', {}, JSON.stringify(it.arguments, null, 2))] : null) : null;
        const rest = { ...it };
        ['name', 'description', 'inputSchema', 'outputSchema', 'arguments'].forEach((k) => delete rest[k]);
        return h('details', { test: tab === 'tools' ? 'tool' : tab === 'prompts' ? 'prompt' : 'resource', dataset: { name, key }, open: openItems.has(key) },
          h('summary', {}, h('span', { class: 'name' }, name), it.description ? h('span', { class: 'desc' }, it.description) : null),
          h('div', { class: 'body' }, schema, Object.keys(rest).length ? h('pre', {}, JSON.stringify(rest, null, 2)) : null));
      }) : h('p', { class: 'muted', test: 'empty' }, s.discovery ? 'None discovered.' : 'Not discovered yet.'));
    return [tabs, list];
  }

  // ---------------------------------------------------------------- API keys
  async function rolesList() {
    if (S.roles) return S.roles;
    try { S.roles = (await GET('/roles')).items || []; } catch (e) { if (e.status === 401) throw e; S.roles = []; }
    return S.roles;
  }

  async function pageKeys(main, ctx) {
    const create = h('button', { type: 'button', class: 'primary', test: 'key-create' }, 'Create API key');
    const root = pageRoot(main, 'keys', 'API keys', [create]);
    const box = h('div', {});
    root.append(h('p', { class: 'muted small' }, 'Clients send a key as Authorization: Bearer <key>. A key is shown once, when it is created.'), box);
    const load = async () => {
      let keys;
      try { keys = await GET('/api-keys'); } catch (e) { if (e.status !== 401 && ctx.alive()) put(box, errorNotice(e)); markLoaded(root); return; }
      if (!ctx.alive()) return;
      keepFocus(box, () => put(box, table('keys-table', ['Name', 'Role', 'Tenant', 'Prefix', 'Permissions', 'Created', 'Expires', ''],
        keys.map((k) => {
          const revoke = h('button', { type: 'button', class: 'danger', test: 'key-revoke', 'aria-label': `Revoke ${k.name}` }, 'Revoke');
          revoke.addEventListener('click', async () => {
            if (!(await confirmDialog(`Revoke ${k.name}?`, `Every proxy refuses the key ${k.prefix}… within a second. This cannot be undone.`, 'Revoke'))) return;
            try { await api('DELETE', `/api-keys/${encodeURIComponent(k.id)}`); toast(`Revoked ${k.name}.`); load(); } catch (e) { if (e.status !== 401) toast(describe(e), 'error'); }
          });
          const perms = Array.isArray(k.permissions) ? k.permissions : [];
          const expired = k.expires_at && new Date(k.expires_at) < new Date();
          return h('tr', { test: 'key-row', dataset: { name: k.name, id: k.id, key: k.id } },
            h('td', { dataset: { col: 'name' } }, k.name),
            h('td', { dataset: { col: 'role' } }, k.role),
            h('td', { dataset: { col: 'tenant_id' } }, k.tenant_id),
            h('td', { class: 'mono', dataset: { col: 'prefix' } }, `${k.prefix}…`),
            h('td', { dataset: { col: 'permissions' } }, perms.length ? h('span', { class: 'cell-clip mono small', title: JSON.stringify(perms) }, perms.map((r) => r.server).join(', ')) : 'role only'),
            h('td', { dataset: { col: 'created_at' }, title: fmtTime(k.created_at) }, fmtAgo(k.created_at)),
            h('td', { dataset: { col: 'expires_at' } }, k.expires_at ? [fmtTime(k.expires_at), expired ? [' ', h('span', { class: 'badge bad' }, 'expired')] : null] : 'never'),
            h('td', { class: 'actions' }, revoke));
        }), 'No API key yet.')));
      markLoaded(root);
    };
    create.addEventListener('click', () => keyForm(load));
    await load();
  }

  async function keyForm(after) {
    const roles = await rolesList();
    const builtIn = isPlatform() ? ['user', 'server_owner', 'admin', 'platform_admin'] : ['user', 'server_owner', 'admin'];
    const dl = h('datalist', { id: 'role-options' }, [...builtIn, ...roles.map((r) => r.name)].map((r) => h('option', { value: r })));
    const f = {
      name: input({ required: true, placeholder: 'ci pipeline' }),
      role: input({ value: 'user', list: 'role-options' }),
      tenant_id: input({ placeholder: 'default' }),
      permissions: h('textarea', { rows: '4', placeholder: '[{"server": "git*", "tools": ["read_*"]}]' }),
      expires_at: input({ type: 'datetime-local' }),
    };
    formDialog({
      title: 'Create an API key', test: 'key-form', submitLabel: 'Create',
      fields: [field('name', 'Name', f.name), dl,
        h('div', { class: 'form-cols' }, field('role', 'Role', f.role, 'a built-in role or one of your custom roles'),
          isPlatform() ? field('tenant_id', 'Tenant', f.tenant_id, 'default when empty') : null),
        field('permissions', 'Permissions (optional, JSON rules)', f.permissions, 'Narrow the role: rules {server, tools?, prompts?, resources?}; empty: the role alone.'),
        field('expires_at', 'Expires (optional)', f.expires_at, 'Leave empty for a key that never expires.')],
      action: async (form) => {
        const body = { name: f.name.value.trim(), role: f.role.value.trim() || 'user' };
        if (!body.name) throw fieldError('name', 'A name is required.');
        if (isPlatform() && f.tenant_id.value.trim()) body.tenant_id = f.tenant_id.value.trim();
        const perms = parseJsonField(form, 'permissions', null);
        if (perms !== null) {
          if (!Array.isArray(perms)) throw fieldError('permissions', 'Permissions are a JSON array of rules.');
          body.permissions = perms;
        }
        const exp = rfc3339(f.expires_at.value, 'expires_at');
        if (exp) body.expires_at = exp;
        const created = await api('POST', '/api-keys', { body });
        showSecret(created);
        after();
      },
    });
  }

  function showSecret(created) {
    const code = h('code', { test: 'secret-value' }, created.key);
    const done = h('button', { type: 'button', class: 'primary', test: 'secret-done' }, 'I have stored it');
    const dlg = openDialog({
      title: `API key ${created.name}`, test: 'secret-dialog',
      body: [notice('warn', 'Copy the key now: it is shown only this once. The gateway keeps only its digest.'),
        h('div', { class: 'secret', dataset: { id: created.id } }, code, copyButton(created.key, 'secret-copy')),
        h('p', { class: 'muted small' }, `Role ${created.role}, tenant ${created.tenant_id}${created.expires_at ? `, expires ${fmtTime(created.expires_at)}` : ''}.`)],
      foot: [done],
    });
    dlg.dataset.id = created.id;
    done.addEventListener('click', () => dlg.close());
  }

  // ---------------------------------------------------------------- roles
  async function pageRoles(main, ctx) {
    const create = h('button', { type: 'button', class: 'primary', test: 'role-create' }, 'Create role');
    const root = pageRoot(main, 'roles', 'Roles', [create]);
    const box = h('div', {});
    root.append(h('p', { class: 'muted small' }, 'Built-in roles: admin, server_owner and user (every server of their tenant), platform_admin (every tenant). A custom role allows exactly its rules.'), box);
    const load = async () => {
      let roles;
      try { roles = (await GET('/roles')).items || []; } catch (e) { if (e.status !== 401 && ctx.alive()) put(box, errorNotice(e)); markLoaded(root); return; }
      if (!ctx.alive()) return;
      S.roles = roles;
      keepFocus(box, () => put(box, table('roles-table', ['Name', 'Tenant', 'Rules', 'IdP groups', 'Created', ''],
        roles.map((r) => {
          const del = h('button', { type: 'button', class: 'danger', test: 'role-delete', 'aria-label': `Delete ${r.name}` }, 'Delete');
          del.addEventListener('click', async () => {
            if (!(await confirmDialog(`Delete the role ${r.name}?`, 'Its holders lose what it allows on every proxy.'))) return;
            try { await api('DELETE', `/roles/${encodeURIComponent(r.id)}`); toast(`Deleted ${r.name}.`); load(); } catch (e) { if (e.status !== 401) toast(describe(e), 'error'); }
          });
          return h('tr', { test: 'role-row', dataset: { name: r.name, id: r.id, key: r.id } },
            h('td', { class: 'mono' }, r.name), h('td', {}, r.tenant_id),
            h('td', {}, h('details', {}, h('summary', {}, `${(r.rules || []).length} rule(s)`), h('pre', {}, JSON.stringify(r.rules, null, 2)))),
            h('td', {}, (r.idp_groups || []).map((g) => h('span', { class: 'tag' }, g))),
            h('td', { title: fmtTime(r.created_at) }, fmtAgo(r.created_at)),
            h('td', { class: 'actions' }, del));
        }), 'No custom role yet.')));
      markLoaded(root);
    };
    create.addEventListener('click', () => {
      const f = {
        name: input({ placeholder: 'analyst' }),
        tenant_id: input({ placeholder: 'default' }),
        rules: h('textarea', { rows: '7' }),
        idp_groups: input({ placeholder: 'mcp.analysts, 0b5c…' }),
      };
      f.rules.value = '[\n  {"server": "warehouse", "tools": ["query_*"], "prompts": []},\n  {"server": "docs-*"}\n]';
      formDialog({
        title: 'Create a role', test: 'role-form', submitLabel: 'Create',
        fields: [h('div', { class: 'form-cols' }, field('name', 'Name', f.name, '[a-z0-9_-], not a built-in role'), isPlatform() ? field('tenant_id', 'Tenant', f.tenant_id, 'default when empty') : null),
          field('rules', 'Rules (JSON)', f.rules, 'Each rule names servers and, on them, tools, prompts and resources (globs with *); a list left out allows every item, an empty list none.'),
          field('idp_groups', 'IdP roles or groups (optional)', f.idp_groups, 'comma-separated: signed-in users with one of them get this role')],
        action: async (form) => {
          const body = { name: f.name.value.trim(), rules: parseJsonField(form, 'rules', []), idp_groups: listOf(f.idp_groups.value) };
          if (!body.name) throw fieldError('name', 'A name is required.');
          if (!Array.isArray(body.rules)) throw fieldError('rules', 'Rules are a JSON array.');
          if (isPlatform() && f.tenant_id.value.trim()) body.tenant_id = f.tenant_id.value.trim();
          else if (!isPlatform() && P().tenant) body.tenant_id = P().tenant;
          await api('POST', '/roles', { body });
          toast(`Created the role ${body.name}.`);
          load();
        },
      });
    });
    await load();
  }

  // ---------------------------------------------------------------- rate limits
  async function pageLimits(main, ctx) {
    const create = h('button', { type: 'button', class: 'primary', test: 'limit-create' }, 'Create limit');
    const root = pageRoot(main, 'limits', 'Rate limits', [create]);
    const box = h('div', {});
    root.append(h('p', { class: 'muted small' }, 'A limit counts requests per bucket (its scope) among the requests it matches. Local limits are enforced by each proxy; global ones are shared through Redis.'), box);
    const load = async () => {
      let items;
      try { items = (await GET('/rate-limits')).items || []; } catch (e) { if (e.status !== 401 && ctx.alive()) put(box, errorNotice(e)); markLoaded(root); return; }
      if (!ctx.alive()) return;
      keepFocus(box, () => put(box, table('limits-table', ['Scope', 'Tenant', 'Server', 'Tool', { label: 'Requests', num: true }, 'Per', { label: 'Burst', num: true }, 'Global', ''],
        items.map((l) => {
          const edit = h('button', { type: 'button', test: 'limit-edit', 'aria-label': 'Edit limit' }, 'Edit');
          const del = h('button', { type: 'button', class: 'danger', test: 'limit-delete', 'aria-label': 'Delete limit' }, 'Delete');
          edit.addEventListener('click', () => limitForm(l, load));
          del.addEventListener('click', async () => {
            if (!(await confirmDialog('Delete this rate limit?', `${l.requests} per ${fmtPer(l.per_ms)} by ${l.scope}${l.server ? ` on ${l.server}` : ''}${l.tool ? `, tool ${l.tool}` : ''}.`))) return;
            try { await api('DELETE', `/rate-limits/${encodeURIComponent(l.id)}`); toast('Deleted the limit.'); load(); } catch (e) { if (e.status !== 401) toast(describe(e), 'error'); }
          });
          const c = (col, v, cls) => h('td', { dataset: { col }, class: cls || '' }, v);
          return h('tr', { test: 'limit-row', dataset: { id: l.id, key: l.id } },
            c('scope', l.scope), c('tenant', l.tenant_id), c('server', l.server || '*', 'mono'), c('tool', l.tool || '*', 'mono'),
            c('requests', String(l.requests), 'num'), c('per', fmtPer(l.per_ms)), c('burst', String(l.burst), 'num'),
            c('global', l.global ? `yes (fail ${l.fail_mode})` : 'no'),
            h('td', { class: 'actions' }, edit, ' ', del));
        }), 'No rate limit yet.')));
      markLoaded(root);
    };
    create.addEventListener('click', () => limitForm(null, load));
    await load();
  }

  // Create a limit, or "edit" one: the API has no update, so the new limit is created first and the old one
  // deleted only once the new one exists (a refused new limit leaves the old one untouched).
  function limitForm(old, after) {
    const o = old || {};
    const f = {
      scope: select([['user', 'user (each principal)'], ['tenant', 'tenant (the whole tenant)'], ['api_key', 'api_key (each key)'], ['server', 'server (each server)'], ['tool', 'tool (each tool of each server)']], o.scope || 'user'),
      match_tenant: input({ value: old ? o.tenant_id : '', placeholder: isPlatform() ? 'your tenant' : P().tenant || 'default', disabled: !isPlatform() && !!old }),
      match_server: input({ value: o.server || '', placeholder: 'any (or a glob: docs-*)' }),
      match_tool: input({ value: o.tool || '', placeholder: 'any (or a glob: search_*)' }),
      requests: input({ type: 'number', min: '1', value: String(o.requests || 100) }),
      per: input({ value: old ? fmtPer(o.per_ms) : '1m', placeholder: '1s, 1m, 1h' }),
      burst: input({ type: 'number', min: '1', value: old ? String(o.burst) : '', placeholder: 'same as requests' }),
      global: h('input', { type: 'checkbox', checked: !!o.global }),
      fail_mode: select([['', 'default (closed)'], ['closed', 'closed: refuse (503)'], ['open', 'open: each proxy on its own']], old && o.global ? o.fail_mode : ''),
    };
    formDialog({
      title: old ? 'Edit a rate limit' : 'Create a rate limit', test: 'limit-form', submitLabel: old ? 'Save' : 'Create',
      fields: [
        old ? notice('info', 'Saving replaces the limit: the new one is created first, then the old one is deleted.') : null,
        field('scope', 'Scope: what one bucket counts', f.scope),
        h('fieldset', {}, h('legend', {}, 'Requests counted (match)'),
          h('div', { class: 'form-cols' }, field('match_server', 'Server', f.match_server), field('match_tool', 'Tool (tools/call only)', f.match_tool)),
          isPlatform() ? field('match_tenant', 'Tenant', f.match_tenant) : null),
        h('div', { class: 'form-cols' }, field('requests', 'Requests', f.requests), field('per', 'Per', f.per, 'a duration: 1s, 1m, 1h')),
        h('div', { class: 'form-cols' }, field('burst', 'Burst (optional)', f.burst), field('fail_mode', 'Fail mode (global only)', f.fail_mode)),
        field('global', 'Global: shared by every proxy (needs Redis)', f.global)],
      action: async () => {
        const body = { scope: f.scope.value, match: {}, requests: Number(f.requests.value), per: f.per.value.trim() };
        for (const k of ['tenant', 'server', 'tool']) {
          const v = f[`match_${k}`].value.trim();
          if (v && !(k === 'tenant' && f.match_tenant.disabled)) body.match[k] = v;
        }
        if (old && !isPlatform()) delete body.match.tenant;
        if (old && isPlatform() && !body.match.tenant) body.match.tenant = o.tenant_id;
        if (!Number.isInteger(body.requests) || body.requests < 1) throw fieldError('requests', 'Requests is a whole number of at least 1.');
        if (!body.per) throw fieldError('per', 'A period is required, e.g. 1m.');
        if (f.burst.value.trim()) {
          body.burst = Number(f.burst.value);
          if (!Number.isInteger(body.burst) || body.burst < 1) throw fieldError('burst', 'Burst is a whole number of at least 1.');
        }
        if (f.global.checked) body.global = true;
        if (f.fail_mode.value) body.fail_mode = f.fail_mode.value;
        const created = await api('POST', '/rate-limits', { body });
        if (old) {
          try {
            await api('DELETE', `/rate-limits/${encodeURIComponent(old.id)}`);
          } catch (e) {
            after();
            if (e.status === 401) throw e;
            throw new ApiError(e.status, e.code, `The new limit was created, but the old one could not be deleted (${e.message}); delete it yourself.`);
          }
        }
        toast(old ? 'Limit updated.' : 'Limit created.');
        after(created);
      },
    });
  }

  // ---------------------------------------------------------------- audit
  const AUDIT_COLS = [['time', 'Time'], ['kind', 'Kind'], ['principal', 'Principal'], ['server', 'Server'], ['method', 'Method'], ['target', 'Target'], ['outcome', 'Outcome'], ['status', 'Status'], ['duration', 'Duration']];

  async function pageAudit(main, ctx) {
    const root = pageRoot(main, 'audit', 'Audit log');
    const f = {
      kind: select([['', 'any'], 'mcp', 'admin'], ''),
      server: input({ placeholder: 'exact name' }),
      principal: input({ placeholder: 'api-key:…, user:…, admin-token' }),
      method: input({ placeholder: 'tools/call, POST /api/v1/servers' }),
      tool: input({ placeholder: 'tool, prompt or resource' }),
      outcome: input({ placeholder: 'ok, error, forbidden, http_404…', list: 'outcomes' }),
      since: input({ placeholder: '2026-01-31T00:00:00Z' }),
      until: input({ placeholder: 'exclusive' }),
      tenant_id: input({ placeholder: 'every tenant' }),
      limit: select(['25', '50', '100', '500'], '50'),
    };
    const outcomes = h('datalist', { id: 'outcomes' }, ['ok', 'error', 'forbidden', 'unauthenticated', 'rate_limited', 'unknown_server'].map((o) => h('option', { value: o })));
    const searchBtn = h('button', { type: 'submit', class: 'primary', test: 'audit-search' }, 'Search');
    const csvBtn = h('button', { type: 'button', test: 'audit-csv' }, 'Export CSV');
    const reset = h('button', { type: 'button', test: 'audit-reset' }, 'Clear');
    const form = h('form', { class: 'toolbar', test: 'audit-filters', role: 'search', novalidate: true },
      ['kind', 'server', 'principal', 'method', 'tool', 'outcome', 'since', 'until', ...(isPlatform() ? ['tenant_id'] : []), 'limit'].map((k) => {
        const el = f[k];
        el.name = k;
        el.id = `audit-${k}`;
        el.setAttribute('data-test', `audit-filter-${k}`);
        return h('div', { class: 'field', dataset: { field: k } }, h('label', { for: el.id }, { tool: 'Tool / target', tenant_id: 'Tenant', limit: 'Page size' }[k] || k[0].toUpperCase() + k.slice(1)), el);
      }), outcomes, searchBtn, csvBtn, reset);
    const status = h('div', {});
    const results = h('div', { test: 'audit-results', dataset: { state: 'idle', gen: '0' } });
    const prev = h('button', { type: 'button', test: 'audit-first', disabled: true }, 'First page');
    const next = h('button', { type: 'button', test: 'audit-next', disabled: true }, 'Next page');
    const pageInfo = h('span', { class: 'muted small', test: 'audit-page' });
    root.append(form, status, results, h('div', { class: 'pager' }, prev, next, pageInfo));
    let cursor = null; let nextCursor = null; let pageNo = 1; let gen = 0;

    const query = (csv) => {
      const qs = new URLSearchParams();
      for (const k of ['kind', 'server', 'principal', 'method', 'tool', 'outcome', 'tenant_id']) {
        const v = f[k].value.trim();
        if (v && (k !== 'tenant_id' || isPlatform())) qs.set(k, v);
      }
      for (const k of ['since', 'until']) { const v = rfc3339(f[k].value, k); if (v) qs.set(k, v); }
      if (csv) qs.set('format', 'csv'); else qs.set('limit', f.limit.value);
      if (!csv && cursor) qs.set('cursor', cursor);
      return qs;
    };
    const run = async () => {
      clearErrors(form);
      status.replaceChildren();
      results.dataset.state = 'loading';
      let data;
      try { data = await GET(`/audit?${query(false)}`); } catch (e) {
        if (e.status === 401 || !ctx.alive()) return;
        if (e.body && e.body.field) showError(form, e); else put(status, errorNotice(e));
        results.dataset.state = 'error';
        results.dataset.gen = String(++gen);
        markLoaded(root);
        return;
      }
      if (!ctx.alive()) return;
      nextCursor = data.next_cursor || null;
      next.disabled = !nextCursor;
      prev.disabled = pageNo === 1;
      pageInfo.textContent = `page ${pageNo} · ${data.items.length} record(s)`;
      put(results, table('audit-table', [...AUDIT_COLS.map(([, l]) => l), ''], data.items.map((r) => {
        const open = h('button', { type: 'button', class: 'link', test: 'audit-detail-open' }, 'Details');
        open.addEventListener('click', () => auditDetail(r));
        const cell = (col, v, cls) => h('td', { dataset: { col }, class: cls || '' }, v);
        return h('tr', { test: 'audit-row', dataset: { id: r.id, key: r.id } },
          cell('time', fmtTime(r.time)), cell('kind', r.kind), cell('principal', h('span', { class: 'cell-clip mono small', title: r.principal }, r.principal || '—')),
          cell('server', r.server || '—'), cell('method', r.method), cell('target', h('span', { class: 'cell-clip', title: r.target || '' }, r.target || '—')),
          cell('outcome', h('span', { class: `badge ${r.outcome === 'ok' ? 'ok' : 'bad'}` }, r.outcome)), cell('status', r.status == null ? '—' : String(r.status), 'num'),
          cell('duration', r.duration_us == null ? '—' : `${(r.duration_us / 1000).toFixed(1)} ms`, 'num'),
          h('td', { class: 'actions' }, open));
      }), 'No record matches.'));
      results.dataset.state = 'loaded';
      results.dataset.gen = String(++gen);
      markLoaded(root);
    };
    const wrapRun = () => run().catch((e) => {
      if (e && e.status === 401) return;
      const fname = e && e.body && e.body.field;
      if (fname) showError(form, e); else put(status, errorNotice(e));
      results.dataset.state = 'error';
      results.dataset.gen = String(++gen);
    });
    form.addEventListener('submit', (ev) => { ev.preventDefault(); cursor = null; pageNo = 1; wrapRun(); });
    next.addEventListener('click', () => { if (nextCursor) { cursor = nextCursor; pageNo += 1; wrapRun(); } });
    prev.addEventListener('click', () => { cursor = null; pageNo = 1; wrapRun(); });
    reset.addEventListener('click', () => { form.reset(); f.limit.value = '50'; cursor = null; pageNo = 1; wrapRun(); });
    csvBtn.addEventListener('click', async () => {
      csvBtn.disabled = true;
      try {
        const res = await api('GET', `/audit?${query(true)}`, { raw: true, headers: { Accept: 'text/csv' } });
        const blob = await res.blob();
        download(`audit-${new Date().toISOString().replace(/[:.]/g, '-')}.csv`, new Blob([blob], { type: 'text/csv' }));
      } catch (e) {
        if (e.status === 401) return;
        if (e.body && e.body.field) showError(form, e); else put(status, errorNotice(e));
      } finally { csvBtn.disabled = false; }
    });
    await wrapRun();
  }

  function auditDetail(r) {
    const fields = ['time', 'id', 'kind', 'tenant_id', 'principal', 'server', 'instance', 'era', 'method', 'target', 'request_id', 'outcome', 'status', 'rpc_error_code', 'duration_us', 'bytes_in', 'bytes_out', 'client_addr', 'session', 'trace_id', 'arguments', 'proxy_id', 'before', 'after'];
    for (const k of Object.keys(r)) if (!fields.includes(k)) fields.push(k);
    openDialog({
      title: `${r.kind} · ${r.method}`, test: 'audit-detail', wide: true,
      body: h('dl', { class: 'kv detail-grid' }, fields.map((k) => {
        const v = r[k];
        const shown = v === null || v === undefined ? h('span', { class: 'muted' }, '—')
          : typeof v === 'object' ? h('pre', {}, JSON.stringify(v, null, 2)) : k === 'time' ? `${v} (${fmtTime(v)})` : String(v);
        return [h('dt', {}, k), h('dd', { test: 'audit-field', dataset: { field: k, value: str(v) } }, shown)];
      })),
    });
  }

  // ---------------------------------------------------------------- connect a client
  async function pageConnect(main, ctx) {
    const root = pageRoot(main, 'connect', 'Connect a client');
    const base = ((S.session && S.session.public_url) || '').replace(/\/+$/, '');
    const publicUrl = base || '<public-url>';
    let servers = Array.isArray(S.session && S.session.servers) ? S.session.servers.map((s) => (typeof s === 'string' ? { name: s } : s)) : null;
    if (!servers && canServers()) {
      try { servers = await GET('/servers?limit=1000'); } catch (e) { if (e.status === 401) return; servers = null; }
    }
    if (!ctx.alive()) return;
    if (!base) root.append(notice('warn', 'The gateway did not say its public URL: replace <public-url> with the address of the mcpgw proxy.', 'connect-no-url'));
    const choice = select([['', 'every server I may use, as one (/mcp)'], ...(servers || []).map((s) => [s.name, s.name])], '', { test: 'connect-server', id: 'connect-server' });
    const custom = input({ test: 'connect-server-name', placeholder: 'a server name', id: 'connect-name', 'aria-label': 'Server name' });
    const out = h('div', {});
    root.append(
      h('p', {}, 'Point an MCP client at the gateway. Clients authenticate with an API key in the Authorization header (or sign in through OAuth when the gateway runs its authorization server).'),
      h('div', { class: 'toolbar' },
        h('div', { class: 'field' }, h('label', { for: 'connect-server' }, 'Server'), choice),
        servers ? null : h('div', { class: 'field' }, h('label', { for: 'connect-name' }, 'or a server name'), custom)),
      out);
    const draw = () => {
      const name = choice.value || custom.value.trim();
      const url = name ? `${publicUrl}/mcp/${name}` : `${publicUrl}/mcp`;
      const id = name ? name.replace(/[^A-Za-z0-9_-]/g, '-') : 'mcpgw';
      const token = '<your-api-key>';
      const configs = [
        ['claude-desktop', 'Claude Desktop (claude_desktop_config.json, through mcp-remote)', JSON.stringify({ mcpServers: { [id]: { command: 'npx', args: ['-y', 'mcp-remote', url, '--header', 'Authorization:${AUTH_HEADER}'], env: { AUTH_HEADER: `Bearer ${token}` } } } }, null, 2)],
        ['claude-code', 'Claude Code', `claude mcp add --transport http ${id} ${url} --header "Authorization: Bearer ${token}"`],
        ['vscode', 'VS Code (.vscode/mcp.json)', JSON.stringify({ inputs: [{ type: 'promptString', id: 'mcpgw-key', description: 'mcpgw API key', password: true }], servers: { [id]: { type: 'http', url, headers: { Authorization: 'Bearer ${input:mcpgw-key}' } } } }, null, 2)],
        ['cursor', 'Cursor (~/.cursor/mcp.json)', JSON.stringify({ mcpServers: { [id]: { url, headers: { Authorization: `Bearer ${token}` } } } }, null, 2)],
      ];
      keepFocus(out, () => put(out, 
        h('div', { class: 'copyrow' }, h('h3', {}, 'MCP URL'), copyButton(url, 'copy-url')),
        h('pre', { test: 'connect-url' }, url),
        configs.map(([k, label, text]) => [h('div', { class: 'copyrow' }, h('h3', {}, label), copyButton(text, `copy-${k}`)), h('pre', { test: `connect-config-${k}` }, text)]),
        servers && servers.length ? [h('h2', {}, 'Servers'), table('connect-servers', ['Server', 'URL', 'Health'], servers.map((s) =>
          h('tr', { test: 'connect-row', dataset: { name: s.name } }, h('td', {}, s.name), h('td', { class: 'mono wrap-any' }, `${publicUrl}/mcp/${s.name}`), h('td', {}, s.health_status ? badge(s.health_status) : '—'))))] : null));
    };
    choice.addEventListener('change', draw);
    custom.addEventListener('input', draw);
    draw();
    markLoaded(root);
  }

  // ---------------------------------------------------------------- boot
  async function boot() {
    window.addEventListener('hashchange', route);
    const r = await loadSession();
    if (r.session) start(r.session);
    else renderSignIn({ idp: r.idp, error: r.error || r.message });
  }
  boot();
})();

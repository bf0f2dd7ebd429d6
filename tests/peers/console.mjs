// Browser driver of the web console for the end-to-end tests.
//
//   node console.mjs BASE_URL ARTIFACT_DIR
//
// Reads JSON-lines commands on stdin, {"id": n, "action": "...", "args": {...}}, and answers each with one
// JSON line on stdout: {"id": n, "ok": true, "result": ...} or {"id": n, "ok": false, "error": "...",
// "screenshot": "<path>"}. Everything else goes to stderr. One headless Chromium; `args.context` (default
// "main") selects a browser context of its own (its own cookies), so several people can be signed in.
// Every wait is on an outcome in the page, bounded (15 s unless the command gives timeout_ms).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const [BASE_RAW, ARTIFACTS = '.'] = process.argv.slice(2);
if (!BASE_RAW) {
  process.stderr.write('usage: node console.mjs BASE_URL ARTIFACT_DIR\n');
  process.exit(2);
}
const BASE = BASE_RAW.replace(/\/+$/, '');
const UI = `${BASE}/ui/`;
const TIMEOUT = 15000;
mkdirSync(ARTIFACTS, { recursive: true });
const log = (...a) => process.stderr.write(`[console.mjs] ${a.join(' ')}\n`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});

// name → {context, page, errors: [...], network: [...]}
const contexts = new Map();

// Chromium reports every non-2xx answer of a fetch as a console error ("Failed to load resource: the server
// responded with a status of 401"). The console gets expected 4xx answers (the session probe before sign-in,
// refused or invalid requests it shows), so those are kept apart from real errors.
const HTTP_4XX = /^Failed to load resource: the server responded with a status of 4\d\d\b/;

function watch(entry, page) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (HTTP_4XX.test(text)) entry.network.push(`${text} (${msg.location().url || page.url()})`);
    else entry.errors.push(`console: ${text}`);
  });
  page.on('pageerror', (err) => entry.errors.push(`pageerror: ${err.message}`));
}

async function ctxOf(name = 'main') {
  let entry = contexts.get(name);
  if (entry) return entry;
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  context.setDefaultTimeout(TIMEOUT);
  context.setDefaultNavigationTimeout(TIMEOUT);
  entry = { name, context, page: null, errors: [], network: [] };
  context.on('page', (p) => watch(entry, p));
  entry.page = await context.newPage();
  contexts.set(name, entry);
  return entry;
}

// ------------------------------------------------------------------ page helpers
const sel = (test) => `[data-test="${test}"]`;

async function signedIn(page) {
  return page.locator(sel('app-shell')).count().then((n) => n > 0);
}

// The console loaded (signed in or not), without reloading it when it already is.
async function ensureUi(page) {
  if (!page.url().startsWith(UI)) {
    await page.goto(UI);
  }
  await page.locator(`${sel('app-shell')}, ${sel('signin')}`).first().waitFor();
}

async function ensureSignedIn(page) {
  await ensureUi(page);
  if (!(await signedIn(page))) throw new Error('not signed in in this context');
}

// Goes to a console page by its hash route (no reload) and waits until its data is loaded.
async function go(page, hash, test, { fresh = true } = {}) {
  await ensureSignedIn(page);
  const before = await page.evaluate(({ hash: want, test: t }) => {
    const el = document.querySelector(`[data-test="${t}"]`);
    return { same: location.hash === want, stamp: el ? el.dataset.refreshed || '' : null };
  }, { hash, test });
  if (!before.same) {
    await page.evaluate((want) => { location.hash = want; }, hash);
  } else if (fresh) {
    // Same page already shown: re-render it so what is read below is current.
    await page.evaluate(() => window.dispatchEvent(new HashChangeEvent('hashchange')));
  }
  await page.locator(`${sel(test)}[data-loaded="true"]`).waitFor();
}

async function openServer(page, name) {
  await go(page, '#/servers', 'page-servers');
  const row = page.locator(`${sel('server-row')}[data-name="${cssq(name)}"]`);
  await row.waitFor();
  const id = await row.getAttribute('data-id');
  await page.evaluate((want) => { location.hash = want; }, `#/servers/${id}`);
  await page.locator(`${sel('server-detail')}[data-loaded="true"]`).waitFor();
  await page.locator(`${sel('server-name')}`).filter({ hasText: name }).waitFor();
  return id;
}

// A datetime-local input takes local "YYYY-MM-DDTHH:MM"; an RFC 3339 value is converted (same machine, same zone).
function localDateTime(v) {
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return v;
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

const cssq = (s) => String(s).replace(/["\\]/g, '\\$&');

async function label(page) {
  return (await page.locator(sel('principal-label')).textContent()).trim();
}

async function signOutIfNeeded(page) {
  if (await signedIn(page)) {
    await page.locator(sel('signout')).click();
    await page.locator(sel('signin-form')).waitFor();
  }
}

// Fills a form control by name inside `scope`: checkbox, select or text.
async function fill(scope, name, value) {
  const el = scope.locator(`[name="${cssq(name)}"]`).first();
  await el.waitFor();
  const kind = await el.evaluate((e) => (e.tagName === 'SELECT' ? 'select' : e.type === 'checkbox' ? 'checkbox' : 'text'));
  if (kind === 'select') await el.selectOption(String(value ?? ''));
  else if (kind === 'checkbox') await el.setChecked(!!value);
  else await el.fill(value === null || value === undefined ? '' : String(value));
}

// Submits a dialog form and waits for its outcome: the dialog closed (success) or an error shown.
async function submitForm(page, formTest) {
  const form = page.locator(sel(formTest));
  await form.locator(sel('form-submit')).click();
  await page.waitForFunction((t) => {
    const f = document.querySelector(`[data-test="${t}"]`);
    return !f || !f.isConnected || f.dataset.state === 'error' || f.dataset.state === 'done';
  }, formTest, { timeout: TIMEOUT });
  return page.evaluate((t) => {
    const f = document.querySelector(`[data-test="${t}"]`);
    if (!f || !f.isConnected || f.dataset.state === 'done') return { ok: true, field_errors: {}, message: null };
    const field_errors = {};
    f.querySelectorAll('[data-test="field-error"]').forEach((e) => { field_errors[e.dataset.field] = e.textContent; });
    const top = f.querySelector('[data-test="form-error"]');
    return { ok: false, field_errors, message: top ? top.textContent : Object.values(field_errors)[0] || null };
  }, formTest);
}

async function confirm(page) {
  await page.locator(sel('confirm-ok')).click();
  await page.locator(sel('confirm-dialog')).waitFor({ state: 'detached' });
}

function rowObjects(page, rowTest) {
  return page.locator(sel(rowTest)).evaluateAll((rows) => rows.map((r) => {
    const o = { ...r.dataset };
    delete o.test;
    delete o.key;
    r.querySelectorAll('td[data-col]').forEach((td) => { o[td.dataset.col] = td.textContent.trim(); });
    return o;
  }));
}

// ------------------------------------------------------------------ actions
const actions = {
  // A signed-in browser opening the console afresh (no cache): ms from navigation start until the overview is
  // loaded and interactive (its data shown), and the bytes transferred for it (documents, scripts, styles,
  // API calls), from the page's own Resource Timing entries.
  async load_timing(e) {
    const { page } = e;
    await ensureSignedIn(page);
    const cdp = await e.context.newCDPSession(page);
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await page.goto('about:blank'); // a new document: not a same-document hash change
    await page.goto(`${UI}#/overview`);
    await page.locator(`${sel('page-overview')}[data-loaded="true"]`).waitFor();
    const figures = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const resources = performance.getEntriesByType('resource');
      // Decoded body sizes (what was sent before any compression) plus headers' share of transferSize:
      // never less than what crossed the wire.
      const bytes = [nav, ...resources].reduce(
        (sum, r) => sum + Math.max(r.transferSize || 0, r.decodedBodySize || 0), 0);
      const slowest = resources.slice().sort((a, b) => b.duration - a.duration).slice(0, 3)
        .map((r) => `${r.name.replace(location.origin, '')} ${Math.round(r.startTime)}+${Math.round(r.duration)} ms`);
      return { interactive_ms: Math.round(performance.now()), transferred_bytes: bytes, requests: resources.length + 1,
        dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd), slowest };
    });
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: false });
    await cdp.detach();
    return figures;
  },

  // YAML import from the servers page: the dry run's changes as shown, then applied; returns both.
  async import_yaml(e, { yaml }) {
    const { page } = e;
    await go(page, '#/servers', 'page-servers');
    await page.locator(sel('server-import')).click();
    const dialog = page.locator(sel('import-dialog'));
    await dialog.locator(sel('import-text')).fill(yaml);
    await dialog.locator(sel('import-dry-run')).click();
    const outcome = dialog.locator(`${sel('import-diff')}, ${sel('import-error')}`).first();
    await outcome.waitFor();
    if (await dialog.locator(sel('import-error')).count()) {
      return { ok: false, error: (await dialog.locator(sel('import-error')).textContent()).trim() };
    }
    const changes = async () => dialog.locator(sel('import-change')).evaluateAll(
      (els) => els.map((el) => ({ name: el.dataset.name, action: el.dataset.action })));
    const dryRun = { summary: (await dialog.locator(sel('import-summary')).textContent()).trim(), changes: await changes() };
    await dialog.locator(sel('import-apply')).click();
    await dialog.locator(`${sel('import-diff')}[data-dry-run="false"]`).waitFor();
    const applied = { summary: (await dialog.locator(sel('import-summary')).textContent()).trim(), changes: await changes() };
    await page.keyboard.press('Escape');
    return { ok: true, dry_run: dryRun, applied };
  },

  // Signing in and reaching the servers page with the keyboard only: the token typed into the focused
  // field and sent with Enter, then Tab until the navigation's Servers entry has focus, and Enter.
  async keyboard(e, { token }) {
    const { page } = e;
    await page.goto(UI);
    await page.locator(`${sel('app-shell')}, ${sel('signin')}`).first().waitFor();
    await signOutIfNeeded(page);
    await page.locator(sel('signin-token')).focus();
    await page.keyboard.type(token);
    await page.keyboard.press('Enter');
    await page.locator(sel('principal-label')).waitFor();
    let tabs = 0;
    for (; tabs < 40; tabs++) {
      await page.keyboard.press('Tab');
      const focused = await page.evaluate(() => document.activeElement && document.activeElement.dataset.test);
      if (focused === 'nav-servers') break;
    }
    if (tabs === 40) throw new Error('the Servers entry never took the focus with Tab');
    const outline = await page.evaluate(() => {
      const style = getComputedStyle(document.activeElement);
      return style.outlineStyle !== 'none' || style.boxShadow !== 'none';
    });
    await page.keyboard.press('Enter');
    await page.locator(`${sel('page-servers')}[data-loaded="true"]`).waitFor();
    return { tabs: tabs + 1, focus_visible: outline };
  },

  async open(e, { path: p = '/ui/' }) {
    const res = await e.page.goto(BASE + p);
    return { status: res ? res.status() : null, url: e.page.url() };
  },

  async signin_token(e, { token }) {
    const { page } = e;
    await page.goto(UI);
    await page.locator(`${sel('app-shell')}, ${sel('signin')}`).first().waitFor();
    await signOutIfNeeded(page);
    await page.locator(sel('signin-token')).fill(token);
    await page.locator(sel('signin-submit')).click();
    await page.locator(`${sel('principal-label')}, ${sel('signin-error')}`).first().waitFor();
    if (await page.locator(sel('signin-error')).count()) {
      throw new Error(`sign-in refused: ${(await page.locator(sel('signin-error')).textContent()).trim()}`);
    }
    return label(page);
  },

  async signin_idp(e, { login }) {
    const { page } = e;
    await page.goto(UI);
    await page.locator(`${sel('app-shell')}, ${sel('signin')}`).first().waitFor();
    await signOutIfNeeded(page);
    await page.locator(sel('signin-idp')).click();
    const loginInput = page.locator('input[name=login]');
    await loginInput.waitFor();
    await loginInput.fill(login);
    await page.locator('form:has(input[name=login]) [type=submit]').first().click();
    await page.waitForURL((u) => u.href.startsWith(UI), { timeout: TIMEOUT });
    await page.locator(`${sel('principal-label')}, ${sel('signin-error')}`).first().waitFor();
    if (await page.locator(sel('signin-error')).count()) {
      throw new Error(`sign-in refused: ${(await page.locator(sel('signin-error')).textContent()).trim()}`);
    }
    return label(page);
  },

  async signout(e) {
    await ensureUi(e.page);
    await signOutIfNeeded(e.page);
    return null;
  },

  async nav_entries(e) {
    await ensureSignedIn(e.page);
    return e.page.locator(`${sel('nav')} a[data-page]`).evaluateAll((as) => as.map((a) => a.dataset.page));
  },

  async register_server(e, { name, url, transport, description, ...rest }) {
    const { page } = e;
    await go(page, '#/servers', 'page-servers');
    await page.locator(sel('server-register')).click();
    const form = page.locator(sel('server-form'));
    await form.waitFor();
    if (transport) await fill(form, 'transport_type', transport);
    await fill(form, 'name', name);
    if (transport === 'stdio') {
      if (rest.program) await fill(form, 'program', rest.program);
      if (rest.args) await fill(form, 'args', Array.isArray(rest.args) ? rest.args.join('\n') : rest.args);
    } else if (url !== undefined) {
      await fill(form, 'endpoint_url', url);
    }
    if (description !== undefined) await fill(form, 'description', description);
    for (const k of ['tags', 'tenant_id', 'version', 'load_balancing', 'name_prefix', 'priority', 'audit_arguments', 'auto_discover']) {
      if (rest[k] === undefined) continue;
      if (!['tags', 'tenant_id', 'version'].includes(k)) await form.locator(sel('server-form-advanced')).evaluate((d) => { d.open = true; });
      await fill(form, k, Array.isArray(rest[k]) ? rest[k].join(', ') : rest[k]);
    }
    const out = await submitForm(page, 'server-form');
    if (!out.ok) await page.keyboard.press('Escape');
    return out;
  },

  async servers_listed(e) {
    await go(e.page, '#/servers', 'page-servers');
    return e.page.locator(sel('server-row')).evaluateAll((rows) => rows.map((r) => r.dataset.name));
  },

  async server_tools(e, { name, expect = [], timeout_ms = TIMEOUT }) {
    const { page } = e;
    await openServer(page, name);
    await page.locator(sel('tab-tools')).click();
    await page.waitForFunction((want) => {
      const have = new Set([...document.querySelectorAll('[data-test="tool"]')].map((d) => d.dataset.name));
      return want.every((t) => have.has(t));
    }, expect, { timeout: timeout_ms });
    return page.locator(sel('tool')).evaluateAll((ds) => ds.map((d) => d.dataset.name));
  },

  async server_health(e, { name, status, timeout_ms = TIMEOUT }) {
    const { page } = e;
    await openServer(page, name);
    const marker = `r${Math.random().toString(36).slice(2)}`;
    await page.evaluate((m) => { window.__noReload = m; }, marker);
    const read = () => page.evaluate(() => ({
      server_status: (document.querySelector('[data-test="server-health"]') || {}).textContent || null,
      instances: [...document.querySelectorAll('[data-test="instance-row"]')].map((r) => ({ url: r.dataset.url, status: r.dataset.status })),
    }));
    try {
      await page.waitForFunction((want) => {
        const s = document.querySelector('[data-test="server-health"]');
        const shown = [s && s.textContent, ...[...document.querySelectorAll('[data-test="instance-row"]')].map((r) => r.dataset.status)];
        return shown.includes(want);
      }, status, { timeout: timeout_ms, polling: 250 });
    } catch (err) {
      throw new Error(`health never showed ${status} within ${timeout_ms} ms: ${JSON.stringify(await read())}`);
    }
    const still = await page.evaluate(() => window.__noReload);
    if (still !== marker) throw new Error('the page was reloaded while waiting for the health status');
    return read();
  },

  async create_key(e, { name, role, permissions, tenant_id, expires_at }) {
    const { page } = e;
    await go(page, '#/keys', 'page-keys');
    await page.locator(sel('key-create')).click();
    const form = page.locator(sel('key-form'));
    await form.waitFor();
    await fill(form, 'name', name);
    if (role !== undefined) await fill(form, 'role', role);
    if (tenant_id !== undefined) await fill(form, 'tenant_id', tenant_id);
    if (permissions !== undefined && permissions !== null) await fill(form, 'permissions', typeof permissions === 'string' ? permissions : JSON.stringify(permissions));
    if (expires_at) await fill(form, 'expires_at', localDateTime(expires_at));
    const out = await submitForm(page, 'key-form');
    if (!out.ok) {
      await page.keyboard.press('Escape');
      throw new Error(`key not created: ${out.message || JSON.stringify(out.field_errors)}`);
    }
    const dlg = page.locator(sel('secret-dialog'));
    await dlg.waitFor();
    const secret = (await dlg.locator(sel('secret-value')).textContent()).trim();
    const id = await dlg.getAttribute('data-id');
    await dlg.locator(sel('secret-done')).click();
    await dlg.waitFor({ state: 'detached' });
    return { secret, id };
  },

  async revoke_key(e, { name }) {
    const { page } = e;
    await go(page, '#/keys', 'page-keys');
    const row = page.locator(`${sel('key-row')}[data-name="${cssq(name)}"]`);
    if (!(await row.count())) throw new Error(`no key named ${name}`);
    const id = await row.first().getAttribute('data-id');
    await row.first().locator(sel('key-revoke')).click();
    await confirm(page);
    await page.locator(`${sel('key-row')}[data-id="${cssq(id)}"]`).waitFor({ state: 'detached' });
    return { id };
  },

  async keys_listed(e) {
    await go(e.page, '#/keys', 'page-keys');
    return rowObjects(e.page, 'key-row');
  },

  async create_rate_limit(e, args) {
    const { page } = e;
    await go(page, '#/limits', 'page-limits');
    const before = await page.locator(sel('limit-row')).evaluateAll((rs) => rs.map((r) => r.dataset.id));
    await page.locator(sel('limit-create')).click();
    const out = await fillLimit(page, args);
    if (!out.ok) return { ...out, id: null };
    const id = await waitNewLimit(page, before);
    return { ...out, id };
  },

  async edit_rate_limit(e, args) {
    const { page } = e;
    await go(page, '#/limits', 'page-limits');
    const rows = await rowObjects(page, 'limit-row');
    const find = args.find || args.match_row || {};
    const target = args.id ? rows.find((r) => r.id === args.id)
      : rows.find((r) => Object.entries(find).every(([k, v]) => String(r[k]) === String(v)));
    if (!target) throw new Error(`no rate limit matches ${JSON.stringify(args.id || find)}; rows: ${JSON.stringify(rows)}`);
    const before = rows.map((r) => r.id);
    await page.locator(`${sel('limit-row')}[data-id="${cssq(target.id)}"] ${sel('limit-edit')}`).click();
    const out = await fillLimit(page, args.values || {}, true);
    if (!out.ok) return { ...out, id: null, old_id: target.id };
    const id = await waitNewLimit(page, before);
    await page.locator(`${sel('limit-row')}[data-id="${cssq(target.id)}"]`).waitFor({ state: 'detached' });
    return { ...out, id, old_id: target.id };
  },

  async rate_limits_listed(e) {
    await go(e.page, '#/limits', 'page-limits');
    return rowObjects(e.page, 'limit-row');
  },

  async audit_search(e, { filters = {} }) {
    const { page } = e;
    await go(page, '#/audit', 'page-audit');
    const results = page.locator(sel('audit-results'));
    const gen = await results.getAttribute('data-gen');
    await setAuditFilters(page, filters);
    await page.locator(sel('audit-search')).click();
    await page.waitForFunction((g) => {
      const r = document.querySelector('[data-test="audit-results"]');
      return r && r.dataset.gen !== g && r.dataset.state !== 'loading';
    }, gen);
    if ((await results.getAttribute('data-state')) === 'error') {
      const msg = await page.locator(`${sel('page-audit')} .notice, ${sel('page-audit')} ${sel('field-error')}`).first().textContent().catch(() => 'error');
      throw new Error(`audit search failed: ${msg}`);
    }
    const rows = await rowObjects(page, 'audit-row');
    let detail = null;
    if (rows.length) {
      await page.locator(sel('audit-row')).first().locator(sel('audit-detail-open')).click();
      const dlg = page.locator(sel('audit-detail'));
      await dlg.waitFor();
      detail = await dlg.locator(sel('audit-field')).evaluateAll((dds) => Object.fromEntries(dds.map((d) => [d.dataset.field, d.dataset.value])));
      await page.keyboard.press('Escape');
      await dlg.waitFor({ state: 'detached' });
    }
    const next = await page.locator(sel('audit-next')).isEnabled();
    return { rows, detail, has_next_page: next };
  },

  async audit_csv(e, { filters = {} }) {
    const { page } = e;
    await go(page, '#/audit', 'page-audit');
    await setAuditFilters(page, filters);
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: TIMEOUT }),
      page.locator(sel('audit-csv')).click(),
    ]);
    const stream = await download.createReadStream();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    return Buffer.concat(chunks).toString('utf8');
  },

  async screenshots(e) {
    const { page, name } = e;
    await ensureSignedIn(page);
    const entries = await actions.nav_entries(e);
    const pages = [];
    let serverHash = null;
    if (entries.includes('servers')) {
      await go(page, '#/servers', 'page-servers');
      const id = await page.locator(sel('server-row')).first().getAttribute('data-id', { timeout: 1000 }).catch(() => null);
      if (id) serverHash = `#/servers/${id}`;
    }
    const targets = entries.map((p) => ({ page: p, hash: `#/${p}`, test: `page-${p}` }));
    if (serverHash) targets.push({ page: 'server', hash: serverHash, test: 'server-detail' });
    for (const [width, height] of [[1280, 800], [390, 844]]) {
      await page.setViewportSize({ width, height });
      for (const t of targets) {
        await go(page, t.hash, t.test);
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
        const file = path.join(ARTIFACTS, `${name}-${t.page}-${width}.png`);
        await page.screenshot({ path: file, fullPage: true });
        pages.push({ page: t.page, width, overflow, file });
      }
    }
    await page.setViewportSize({ width: 1280, height: 800 });
    return { pages, console_errors: [...e.errors] };
  },

  async cross_site_post(e, { action_url, fields = {} }) {
    const page = await e.context.newPage();
    try {
      const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
      const inputs = Object.entries(fields).map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('');
      await page.setContent(`<!doctype html><form id="f" method="post" action="${esc(action_url)}">${inputs}<button id="go" type="submit">go</button></form>`);
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.url() === action_url && r.request().method() === 'POST', { timeout: TIMEOUT }),
        page.click('#go'),
      ]);
      const body = await response.text().catch(() => '');
      return { status: response.status(), body };
    } finally {
      await page.close();
    }
  },

  async console_errors(e) {
    return [...e.errors];
  },
};

async function fillLimit(page, v, editing = false) {
  const form = page.locator(sel('limit-form'));
  await form.waitFor();
  const match = v.match || {};
  const values = {
    scope: v.scope,
    match_server: match.server ?? v.server,
    match_tool: match.tool ?? v.tool,
    match_tenant: match.tenant ?? v.tenant,
    requests: v.requests,
    per: v.per,
    burst: v.burst,
    global: v.global,
    fail_mode: v.fail_mode,
  };
  for (const [k, val] of Object.entries(values)) {
    if (val === undefined) continue;
    const present = await form.locator(`[name="${k}"]:not([disabled])`).count();
    if (!present) {
      if (k === 'match_tenant' && editing) continue;
      throw new Error(`the rate-limit form has no editable field ${k}`);
    }
    await fill(form, k, val);
  }
  const out = await submitForm(page, 'limit-form');
  if (!out.ok) await page.keyboard.press('Escape');
  return out;
}

async function waitNewLimit(page, before) {
  await page.waitForFunction((old) => [...document.querySelectorAll('[data-test="limit-row"]')].some((r) => !old.includes(r.dataset.id)), before);
  return page.locator(sel('limit-row')).evaluateAll((rs, old) => (rs.map((r) => r.dataset.id).find((id) => !old.includes(id)) || null), before);
}

const AUDIT_ALIASES = { status: 'outcome', target: 'tool', tenant: 'tenant_id' };
async function setAuditFilters(page, filters) {
  const form = page.locator(sel('audit-filters'));
  // Fields not given are cleared, so a search means exactly its filters.
  for (const k of ['kind', 'server', 'principal', 'method', 'tool', 'outcome', 'since', 'until', 'tenant_id']) {
    const el = form.locator(`[name="${k}"]`);
    if (await el.count()) await fill(form, k, '');
  }
  for (const [raw, v] of Object.entries(filters)) {
    const k = AUDIT_ALIASES[raw] || raw;
    if (!(await form.locator(`[name="${k}"]`).count())) throw new Error(`the audit page has no filter ${raw}`);
    await fill(form, k, v);
  }
}

// ------------------------------------------------------------------ the command loop
function send(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function handle(cmd) {
  const { id, action, args = {} } = cmd;
  if (action === 'quit') {
    send({ id, ok: true, result: null });
    await browser.close().catch(() => {});
    process.exit(0);
  }
  const fn = actions[action];
  if (!fn) {
    send({ id, ok: false, error: `unknown action ${action}`, screenshot: null });
    return;
  }
  const e = await ctxOf(args.context || 'main');
  try {
    const result = await fn(e, args);
    send({ id, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    let screenshot = null;
    try {
      screenshot = path.join(ARTIFACTS, `${e.name}-failure-${id}.png`);
      await e.page.screenshot({ path: screenshot, fullPage: true, timeout: 5000 });
    } catch (shotErr) {
      log(`no screenshot: ${shotErr.message}`);
      screenshot = null;
    }
    try {
      writeFileSync(path.join(ARTIFACTS, `${e.name}-failure-${id}.txt`),
        `${action} ${JSON.stringify(args)}\n${err.stack || err}\nurl: ${e.page.url()}\nerrors: ${JSON.stringify(e.errors)}\nhttp: ${JSON.stringify(e.network)}\n`);
    } catch (_) { /* best effort */ }
    send({ id, ok: false, error: String(err && err.message ? err.message : err), screenshot });
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let chain = Promise.resolve();
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    send({ id: null, ok: false, error: `not JSON: ${err.message}`, screenshot: null });
    return;
  }
  chain = chain.then(() => handle(cmd)).catch((err) => log(`unexpected: ${err.stack || err}`));
});
rl.on('close', () => {
  chain.then(() => browser.close()).then(() => process.exit(0), () => process.exit(0));
});

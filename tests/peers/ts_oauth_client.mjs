// A TS SDK v2 (@modelcontextprotocol/client 2.4.0) MCP client that logs in with the SDK's OAuth support
// (an in-memory OAuthClientProvider given to StreamableHTTPClientTransport as `authProvider`), no human.
//
// node ts_oauth_client.mjs URL --user NAME [--mode legacy|auto|2026-07-28] [--wait-expiry] ACTION...
// ACTION: tools/list (or list-tools) | call NAME [JSON_ARGS]   (run in order)
//
// The SDK discovers the authorization server itself (401 -> protected resource metadata -> AS metadata ->
// dynamic registration -> authorize with PKCE); redirectToAuthorization() drives the browser part over HTTP
// as USER (the same steps as oauth_login.py: follow 3xx, submit the first <form> with its hidden inputs,
// login=USER and decision=approve, stop at the redirect URI) and keeps the callback's parameters; the script
// then checks `state`, calls transport.finishAuth(callbackParams) and connects again with a new transport,
// as the SDK examples do. Registered metadata: client_name "mcpgw e2e ts", redirect_uris
// ["http://127.0.0.1:1/callback"], grant_types authorization_code + refresh_token, response_types code,
// token_endpoint_auth_method none, application_type native.
// --wait-expiry   after the actions, sleep until the access token has expired (expires_in + 1 s), then run
//                 them again: the SDK refreshes when the server answers 401.
// Prints ONE JSON document on stdout:
//   {"protocolVersion", "era", "results": [{"round", "action", "tools": [names]} | {"round", "action", "name",
//    "result": {"content", "structuredContent", "isError"}}...],
//    "tokens": {"access_token_issued", "refreshed", "authorizations"}, "client_id", "sessionEnded"?}
// Errors: the same document with "error": "..." on stdout and exit status 1.
import { randomBytes } from 'node:crypto';
import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';

const REDIRECT_URI = 'http://127.0.0.1:1/callback';
const MAX_HOPS = 20;
const ACTIONS = new Set(['tools/list', 'list-tools', 'call']);

function usage(message) {
  console.log(JSON.stringify({ error: `usage: ts_oauth_client.mjs URL --user NAME [--mode M] [--wait-expiry] tools/list | call NAME [JSON]...: ${message}` }));
  process.exit(2);
}

function parseArgs(argv) {
  const args = { mode: 'legacy', rest: [], waitExpiry: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--user') args.user = argv[++i];
    else if (argv[i] === '--mode') args.mode = argv[++i];
    else if (argv[i] === '--wait-expiry') args.waitExpiry = true;
    else if (args.url === undefined) args.url = argv[i];
    else args.rest.push(argv[i]);
  }
  if (!args.url) usage('missing URL');
  if (!args.user) usage('missing --user');
  args.actions = [];
  for (let i = 0; i < args.rest.length;) {
    const action = args.rest[i];
    if (action === 'tools/list' || action === 'list-tools') {
      args.actions.push({ action: 'tools/list' });
      i += 1;
    } else if (action === 'call' && args.rest[i + 1] !== undefined) {
      const name = args.rest[i + 1];
      let json = '{}';
      if (args.rest[i + 2] !== undefined && !ACTIONS.has(args.rest[i + 2])) {
        json = args.rest[i + 2];
        i += 1;
      }
      args.actions.push({ action: 'call', name, toolArgs: JSON.parse(json) });
      i += 2;
    } else usage(`unknown action ${JSON.stringify(action)}`);
  }
  if (!args.actions.length) usage('no action');
  return args;
}

// ---- the browser part -------------------------------------------------------------------------------

class CookieJar {
  #cookies = new Map(); // `${host} ${path} ${name}` -> { host, path, name, value }

  store(url, response) {
    for (const line of response.headers.getSetCookie?.() ?? []) {
      const [pair, ...attrs] = line.split(';');
      const at = pair.indexOf('=');
      if (at <= 0) continue;
      const name = pair.slice(0, at).trim();
      const value = pair.slice(at + 1).trim();
      let path = '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=').map((s) => s.trim());
        if (k.toLowerCase() === 'path' && v.startsWith('/')) path = v;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const key = `${url.host} ${path} ${name}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { host: url.host, path, name, value });
    }
  }

  header(url) {
    const matches = [...this.#cookies.values()].filter((c) => c.host === url.host
      && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)));
    return matches.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

const unescapeHtml = (text) => text.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos|#39);/gi, (_, e) => {
  const lower = e.toLowerCase();
  if (lower.startsWith('#x')) return String.fromCodePoint(parseInt(lower.slice(2), 16));
  if (lower.startsWith('#')) return String.fromCodePoint(Number(lower.slice(1)));
  return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[lower];
});

function attributes(tag) {
  const out = {};
  for (const m of tag.matchAll(/([^\s"'<>\/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g)) {
    out[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

// The first <form> of a page: { action, method, hidden: [[name, value]], names: Set }, or undefined.
function firstForm(html) {
  const open = /<form\b([^>]*)>/i.exec(html);
  if (!open) return undefined;
  const rest = html.slice(open.index + open[0].length);
  const close = /<\/form\s*>/i.exec(rest);
  const body = close ? rest.slice(0, close.index) : rest;
  const form = attributes(open[1]);
  const hidden = [];
  const names = new Set();
  for (const m of body.matchAll(/<(input|button|select|textarea)\b([^>]*)>/gi)) {
    const a = attributes(m[2]);
    if (!a.name) continue;
    names.add(a.name);
    if (m[1].toLowerCase() === 'input' && (a.type ?? 'text').toLowerCase() === 'hidden') hidden.push([a.name, a.value ?? '']);
  }
  return { action: form.action || undefined, method: (form.method || 'get').toLowerCase(), hidden, names };
}

// Runs the browser steps from authorizationUrl; returns the URLSearchParams of the redirect to redirectUri.
async function browserLogin(authorizationUrl, redirectUri, user) {
  const jar = new CookieJar();
  const trace = [];
  let method = 'GET';
  let url = new URL(authorizationUrl);
  let body;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    const headers = {};
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, headers, body, redirect: 'manual' });
    jar.store(url, response);
    trace.push(`${method} ${url.origin}${url.pathname} -> ${response.status}`);
    const fail = async (why) => {
      const text = await response.text().catch(() => '');
      throw new Error(`${why}: ${text.slice(0, 2000)} (hops: ${trace.join(' | ')})`);
    };
    if (response.status >= 300 && response.status < 400) {
      const location = response.headers.get('location');
      if (!location) await fail(`${response.status} without a Location`);
      await response.arrayBuffer().catch(() => {});
      const target = new URL(location, url);
      if (target.href.startsWith(redirectUri)) return target.searchParams;
      method = 'GET';
      url = target;
      body = undefined;
      continue;
    }
    if (response.status !== 200) await fail(`${method} ${url.href} answered ${response.status}`);
    const html = await response.text();
    const form = firstForm(html);
    if (!form) throw new Error(`the page at ${url.href} has no <form>: ${html.slice(0, 2000)} (hops: ${trace.join(' | ')})`);
    const fields = new URLSearchParams(form.hidden);
    if (form.names.has('login')) fields.append('login', user);
    if (form.names.has('decision')) fields.append('decision', 'approve');
    const action = form.action ? new URL(form.action, url) : new URL(url);
    action.hash = '';
    if (form.method === 'post') {
      method = 'POST';
      url = action;
      body = fields.toString();
    } else {
      action.search = fields.toString();
      method = 'GET';
      url = action;
      body = undefined;
    }
  }
  throw new Error(`no redirect to ${redirectUri} within ${MAX_HOPS} hops (hops: ${trace.join(' | ')})`);
}

// ---- the OAuth client provider ----------------------------------------------------------------------

class MemoryProvider {
  constructor(user) {
    this.user = user;
    this.stored = {}; // clientInformation, tokens, codeVerifier, discoveryState
    this.accessTokens = [];
    this.saves = 0;
    this.authorizations = 0;
    this.tokensSavedAt = undefined;
    this.pending = undefined; // { params, state } of the last browser login
    this.lastState = undefined;
  }

  get redirectUrl() { return REDIRECT_URI; }

  get clientMetadata() {
    return {
      client_name: 'mcpgw e2e ts',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    };
  }

  state() {
    this.lastState = randomBytes(16).toString('base64url');
    return this.lastState;
  }

  clientInformation() { return this.stored.clientInformation; }
  saveClientInformation(info) { this.stored.clientInformation = info; }
  tokens() { return this.stored.tokens; }

  saveTokens(tokens) {
    this.stored.tokens = tokens;
    this.saves += 1;
    this.tokensSavedAt = Date.now();
    if (!this.accessTokens.includes(tokens.access_token)) this.accessTokens.push(tokens.access_token);
  }

  saveCodeVerifier(verifier) { this.stored.codeVerifier = verifier; }
  codeVerifier() {
    if (!this.stored.codeVerifier) throw new Error('no code verifier saved');
    return this.stored.codeVerifier;
  }

  saveDiscoveryState(state) { this.stored.discoveryState = state; }
  discoveryState() { return this.stored.discoveryState; }

  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') delete this.stored.clientInformation;
    if (scope === 'all' || scope === 'tokens') delete this.stored.tokens;
    if (scope === 'all' || scope === 'verifier') delete this.stored.codeVerifier;
    if (scope === 'all' || scope === 'discovery') delete this.stored.discoveryState;
  }

  async redirectToAuthorization(authorizationUrl) {
    this.authorizations += 1;
    const state = authorizationUrl.searchParams.get('state') ?? undefined;
    const params = await browserLogin(authorizationUrl.href, REDIRECT_URI, this.user);
    this.pending = { params, state };
  }
}

// ---- the MCP part -----------------------------------------------------------------------------------

function negotiation(mode) {
  if (mode === 'legacy') return { mode: 'legacy' };
  if (mode === 'auto') return { mode: 'auto' };
  return { mode: { pin: mode } };
}

function describe(error) {
  const parts = [`${error?.name ?? 'Error'}: ${error?.message ?? String(error)}`];
  if (error?.code !== undefined) parts.push(`code=${error.code}`);
  if (error?.cause) parts.push(`cause: ${describe(error.cause)}`);
  return parts.join('; ');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Session {
  constructor(args, provider) {
    this.args = args;
    this.provider = provider;
  }

  // Connects; when the SDK sent the user agent to the authorization server, finishes the login and
  // connects again with a new transport.
  async connect() {
    for (let attempt = 0; attempt < 3; attempt++) {
      this.transport = new StreamableHTTPClientTransport(new URL(this.args.url), { authProvider: this.provider });
      this.client = new Client(
        { name: 'mcpgw-e2e-ts-oauth', version: '0.0.0' },
        { capabilities: {}, versionNegotiation: negotiation(this.args.mode) },
      );
      try {
        await this.client.connect(this.transport);
        return;
      } catch (error) {
        if (!(error instanceof UnauthorizedError) || !this.provider.pending) throw error;
        await this.finishAuth();
      }
    }
    throw new Error('still unauthorized after 3 logins');
  }

  async finishAuth() {
    const { params, state } = this.provider.pending;
    this.provider.pending = undefined;
    if (!params.get('code')) {
      throw new Error(`authorization failed: ${params.get('error') ?? 'no code'}: ${params.get('error_description') ?? ''}`);
    }
    if (params.get('state') !== state) throw new Error(`state mismatch: ${params.get('state')} != ${state}`);
    await this.transport.finishAuth(params);
    await this.client.close().catch(() => {});
  }

  // Runs `fn` on the client; a request the SDK could only answer with a new login is retried once after it.
  async run(fn) {
    try {
      return await fn(this.client);
    } catch (error) {
      if (!(error instanceof UnauthorizedError) || !this.provider.pending) throw error;
      await this.finishAuth();
      await this.connect();
      return fn(this.client);
    }
  }
}

async function runActions(session, actions, round, results) {
  for (const a of actions) {
    if (a.action === 'tools/list') {
      const names = [];
      let cursor;
      do {
        const page = await session.run((c) => c.listTools(cursor ? { cursor } : {}));
        names.push(...page.tools.map((t) => t.name));
        cursor = page.nextCursor;
      } while (cursor);
      results.push({ round, action: 'tools/list', tools: names });
    } else {
      const result = await session.run((c) => c.callTool({ name: a.name, arguments: a.toolArgs }));
      results.push({
        round,
        action: 'call',
        name: a.name,
        result: { content: result.content, structuredContent: result.structuredContent ?? null, isError: Boolean(result.isError) },
      });
    }
  }
}

async function main(args, provider, out) {
  const session = new Session(args, provider);
  await session.connect();
  out.protocolVersion = session.client.getNegotiatedProtocolVersion() ?? null;
  out.era = session.client.getProtocolEra() ?? null;
  await runActions(session, args.actions, 1, out.results);
  if (args.waitExpiry) {
    const expiresIn = provider.stored.tokens?.expires_in;
    if (expiresIn === undefined || provider.tokensSavedAt === undefined) throw new Error('--wait-expiry: the access token has no expires_in');
    await sleep(Math.max(0, provider.tokensSavedAt + expiresIn * 1000 + 1000 - Date.now()));
    await runActions(session, args.actions, 2, out.results);
  }
  if (session.transport.sessionId) {
    await session.transport.terminateSession();
    out.sessionEnded = true;
  }
  await session.client.close();
}

const args = parseArgs(process.argv.slice(2));
const provider = new MemoryProvider(args.user);
const out = { results: [] };
const summary = () => {
  out.tokens = {
    access_token_issued: provider.accessTokens.length,
    // every login stores one token set; any store beyond those came from a refresh
    refreshed: provider.saves > provider.authorizations,
    authorizations: provider.authorizations,
  };
  out.client_id = provider.stored.clientInformation?.client_id ?? null;
};
main(args, provider, out).then(
  () => {
    summary();
    console.log(JSON.stringify(out));
    process.exit(0);
  },
  (error) => {
    console.error(error);
    summary();
    out.error = describe(error);
    console.log(JSON.stringify(out));
    process.exit(1);
  },
);

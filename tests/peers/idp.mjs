// A real OpenID provider (npm oidc-provider) for the identity tests: discovery, JWKS, the client credentials
// grant with resource indicators (RFC 8707, RS256 JWT access tokens whose `aud` is the requested resource),
// and the authorization code flow (PKCE) with a scripted login page, for federating user login.
//
// node idp.mjs --port P [--client ID:SECRET]... [--ttl SECONDS] [--claims JSON]
//              [--login-client ID:SECRET:REDIRECT_URI]... [--users JSON] [--entra TENANT_ID] [--registration]
//
// --client        a client credentials client (client_secret_basic or _post).
// --ttl/--claims  lifetime of, and extra claims added to, every JWT access token.
// --login-client  a confidential authorization code client (client_secret_basic; refresh tokens; PKCE S256
//                 required unless --entra); the redirect URI may itself contain ':'.
// --users         {"alice": {"email", "name", "roles": [...], "groups": [...], ...}}: the accounts that can log
//                 in. The ID token and userinfo carry sub ("user-<login>"), preferred_username (the login
//                 name unless given), email, name, roles, groups and any other claim given for the user.
// Login: GET <issuer>/interaction/<uid> is an HTML page with
//   <form method="post" action="<issuer path>/interaction/<uid>/login"><input name="login">...</form>;
// posting a known login finishes the login (an unknown one gets the form again with HTTP 401). Consent is
// granted automatically (no page).
// --entra T       behaves like Microsoft Entra ID v2: issuer http://127.0.0.1:P/T/v2.0 (every endpoint under
//                 that path); discovery only at <issuer>/.well-known/openid-configuration (no RFC 8414
//                 metadata, no registration or PAR endpoint, no code_challenge_methods_supported and no
//                 authorization_response_iss_parameter_supported, and no `iss` in authorization responses,
//                 as Entra); a `resource` parameter is refused (invalid_target, AADSTS9010010/AADSTS901002);
//                 ID tokens carry sub (opaque), oid (GUID per user), tid (=T), ver "2.0", preferred_username,
//                 email, name, roles, groups; a user with more than 5 groups gets the group overage form
//                 instead (_claim_names {"groups": "src1"}, _claim_sources {"src1": {"endpoint": ...}}).
// --registration  (not with --entra) open dynamic client registration at <issuer>/reg, so MCP SDK clients can
//                 use this provider directly as the authorization server of a resource (e.g. py_server.py's
//                 auth mode): a `resource` gets a JWT access token for it (aud = resource, --ttl, scope mcp);
//                 an authorization request without `scope` is given "openid mcp".
// A fresh RSA signing key is generated at every start (restarting the provider rotates its key).
// Prints "ready <issuer>" once listening.
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

function parseArgs(argv) {
  const args = {
    port: 0, clients: [], ttl: 300, claims: {}, loginClients: [], users: {}, entra: undefined, registration: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port') args.port = Number(value);
    else if (argv[i] === '--client') args.clients.push(value);
    else if (argv[i] === '--ttl') args.ttl = Number(value);
    else if (argv[i] === '--claims') args.claims = JSON.parse(value);
    else if (argv[i] === '--login-client') args.loginClients.push(value);
    else if (argv[i] === '--users') args.users = JSON.parse(value);
    else if (argv[i] === '--entra') args.entra = value;
    else if (argv[i] === '--registration') { args.registration = true; continue; }
    else continue;
    i++;
  }
  if (!args.port) throw new Error('--port is required');
  if (args.registration && args.entra !== undefined) throw new Error('--registration and --entra exclude each other');
  return args;
}

const args = parseArgs(process.argv.slice(2));
const origin = `http://127.0.0.1:${args.port}`;
const entra = args.entra !== undefined;
const prefix = entra ? `/${args.entra}/v2.0` : '';
const issuer = `${origin}${prefix}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const sha256 = (text) => createHash('sha256').update(text).digest();
const guid = (text) => {
  const h = sha256(text).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
};
const GROUP_OVERAGE_LIMIT = 5;
const DEFAULT_SCOPE = 'openid mcp';

// accountId (= sub) -> { login, claims }
const accounts = new Map();
const byLogin = new Map();
for (const [login, given] of Object.entries(args.users)) {
  const sub = entra ? sha256(`sub:${args.entra}:${login}`).toString('base64url').slice(0, 43) : `user-${login}`;
  const claims = { preferred_username: login, ...given, sub };
  if (entra) {
    const oid = guid(`oid:${args.entra}:${login}`);
    Object.assign(claims, { oid, tid: args.entra, ver: '2.0' });
    if (Array.isArray(claims.groups) && claims.groups.length > GROUP_OVERAGE_LIMIT) {
      delete claims.groups;
      claims._claim_names = { groups: 'src1' };
      claims._claim_sources = { src1: { endpoint: `${origin}/${args.entra}/users/${oid}/getMemberObjects` } };
    }
  }
  accounts.set(sub, { login, claims });
  byLogin.set(login, sub);
}
// Every claim any user has goes under the openid scope, so it reaches the ID token whatever else is asked.
const userClaimNames = new Set(['sub', 'preferred_username', 'email', 'name', 'roles', 'groups']);
if (entra) ['oid', 'tid', 'ver'].forEach((c) => userClaimNames.add(c));
for (const { claims } of accounts.values()) {
  Object.keys(claims).filter((c) => !c.startsWith('_')).forEach((c) => userClaimNames.add(c));
}

const resourceRefused = (where) => new errors.InvalidTarget(
  where === 'token'
    ? 'AADSTS9010010: The resource parameter provided in the request doesn\'t match with the requested scopes (resource parameter not supported).'
    : 'AADSTS901002: The \'resource\' request parameter is not supported (resource parameter not supported).',
);

const provider = new Provider(issuer, {
  clients: [
    ...args.clients.map((pair) => {
      const [client_id, client_secret] = pair.split(':');
      return { client_id, client_secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] };
    }),
    ...args.loginClients.map((spec) => {
      const first = spec.indexOf(':');
      const second = spec.indexOf(':', first + 1);
      if (first < 0 || second < 0) throw new Error(`--login-client must be ID:SECRET:REDIRECT_URI, got ${spec}`);
      return {
        client_id: spec.slice(0, first),
        client_secret: spec.slice(first + 1, second),
        redirect_uris: [spec.slice(second + 1)],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      };
    }),
  ],
  jwks: { keys: [signing] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'mcp'],
  claims: {
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
    openid: [...userClaimNames],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  // Every claim of the granted scopes goes in the ID token, even when an access token is issued too.
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return { accountId: sub, claims: async () => ({ ...account.claims }) };
  },
  // Refresh tokens for every code client allowed the grant, offline_access asked or not (oidc-provider
  // drops offline_access without prompt=consent).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  pkce: { required: () => !entra },
  interactions: { url: async (_ctx, interaction) => `${prefix}/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    pushedAuthorizationRequests: { enabled: !entra },
    registration: { enabled: args.registration },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: () => {
        if (entra) throw resourceRefused('authorization');
        return {
          scope: 'mcp',
          accessTokenFormat: 'jwt',
          accessTokenTTL: args.ttl,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: () => args.claims,
});
provider.on('server_error', (_ctx, error) => console.error('idp server_error:', error));

if (entra) {
  // Entra's discovery document lacks these, and Entra sends no `iss` in authorization responses.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.code_challenge_methods_supported;
      delete ctx.body.authorization_response_iss_parameter_supported;
    }
    const location = ctx.response.get('Location');
    if (location && !location.startsWith(`${issuer}/`) && !location.startsWith(`${prefix}/`)) {
      const target = URL.parse(location);
      if (target?.searchParams.has('iss')) {
        target.searchParams.delete('iss');
        ctx.set('Location', target.href);
      }
    }
  });
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(res, uid, status, error) {
  const action = `${prefix}/interaction/${encodeURIComponent(uid)}/login`;
  const body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${escapeHtml(action)}">
<input type="text" name="login" autofocus>
<button type="submit">Sign in</button>
</form>
</body></html>
`;
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(body);
}

function plain(res, status, text) {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(`${text}\n`);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

// Consent is automatic: grant whatever the pending consent prompt says is missing.
async function autoConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (error) {
    return plain(res, 400, `interaction not found: ${error.message}`);
  }
  if (details.uid !== uid) return plain(res, 400, 'interaction mismatch');
  if (action === undefined && req.method === 'GET') {
    if (details.prompt.name === 'login') return loginPage(res, uid, 200);
    if (details.prompt.name === 'consent') return autoConsent(req, res, details);
    return plain(res, 400, `unsupported prompt ${details.prompt.name}`);
  }
  if (action === 'login' && req.method === 'POST') {
    const login = new URLSearchParams(await readBody(req)).get('login') ?? '';
    const accountId = byLogin.get(login);
    if (!accountId) return loginPage(res, uid, 401, `unknown user ${JSON.stringify(login)}`);
    return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  return plain(res, 405, 'method not allowed');
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, origin);
    let path = url.pathname;
    if (prefix) {
      if (!path.startsWith(`${prefix}/`)) return plain(res, 404, 'not found');
      path = path.slice(prefix.length);
    }
    const match = /^\/interaction\/([^/]+)(?:\/(login))?$/.exec(path);
    if (match) return await interaction(req, res, decodeURIComponent(match[1]), match[2]);
    if (entra) {
      // Entra has no RFC 8414 metadata (nor anything else oidc-provider serves beyond OIDC).
      if (path === '/.well-known/oauth-authorization-server') return plain(res, 404, 'not found');
      if (path === '/token' && req.method === 'POST') {
        const raw = await readBody(req);
        if (new URLSearchParams(raw).has('resource')) {
          const error = resourceRefused('token');
          res.writeHead(400, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
          return res.end(JSON.stringify({ error: error.message, error_description: error.error_description }));
        }
        req.body = raw; // oidc-provider parses req.body once the stream is consumed
      }
    }
    // An MCP client may authorize without `scope` (the TS SDK does when neither WWW-Authenticate nor the
    // PRM names one); oidc-provider then grants nothing, so --registration mode asks for the defaults.
    if (args.registration && path === '/auth' && !url.searchParams.has('scope') && !url.searchParams.has('request_uri')) {
      url.searchParams.set('scope', DEFAULT_SCOPE);
    }
    // Mount the provider under the issuer's path: it derives its mount path from originalUrl minus url.
    req.originalUrl = req.url;
    req.url = `${path}${url.search}`;
    return callback(req, res);
  } catch (error) {
    console.error('idp error:', error);
    if (!res.headersSent) plain(res, 500, 'internal error');
    else res.end();
  }
});
server.listen(args.port, '127.0.0.1', () => console.log(`ready ${issuer}`));

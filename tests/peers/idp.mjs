// A real OpenID provider (npm oidc-provider) for the identity tests: discovery, JWKS, and the client
// credentials grant with resource indicators (RFC 8707), issuing RS256 JWT access tokens whose `aud` is the
// requested resource.
//
// node idp.mjs --port P [--client ID:SECRET]... [--ttl SECONDS] [--claims JSON]
// A fresh RSA signing key is generated at every start (restarting the provider rotates its key). `--claims`
// adds claims to every access token (e.g. tenant, roles, groups). Prints "ready <issuer>" once listening.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

function parseArgs(argv) {
  const args = { port: 0, clients: [], ttl: 300, claims: {} };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port') args.port = Number(value);
    else if (argv[i] === '--client') args.clients.push(value);
    else if (argv[i] === '--ttl') args.ttl = Number(value);
    else if (argv[i] === '--claims') args.claims = JSON.parse(value);
    else continue;
    i++;
  }
  if (!args.port) throw new Error('--port is required');
  return args;
}

const args = parseArgs(process.argv.slice(2));
const issuer = `http://127.0.0.1:${args.port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: args.clients.map((pair) => {
    const [client_id, client_secret] = pair.split(':');
    return { client_id, client_secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] };
  }),
  jwks: { keys: [signing] },
  scopes: ['mcp'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: () => ({
        scope: 'mcp',
        accessTokenFormat: 'jwt',
        accessTokenTTL: args.ttl,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: () => args.claims,
});

provider.listen(args.port, '127.0.0.1');
console.log(`ready ${issuer}`);

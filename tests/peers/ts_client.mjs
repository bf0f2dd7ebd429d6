// A TS SDK v2 (@modelcontextprotocol/client 2.4.0) MCP client CLI for the mcpgw end-to-end tests.
//
// node ts_client.mjs URL [--mode legacy|auto|2026-07-28|sse] [--header 'Name: value']... ACTION...
// Prints ONE JSON document on stdout:
//   list-tools            {"protocolVersion", "era", "tools": [{"name", "description", "inputSchema"}...]} (all pages)
//   call NAME JSON_ARGS   {"protocolVersion", "era", "result": {"content", "structuredContent", "isError"}}
// and "sessionEnded": true when a legacy session was ended with DELETE afterwards.
// Errors: {"error": "..."} on stdout and exit status 1.
//
// --mode: legacy (the SDK default: initialize handshake), auto (server/discover first, falls back to
// initialize), a version pin such as 2026-07-28 (modern only), or sse (the deprecated HTTP+SSE transport).
import { Client, SSEClientTransport, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

function usage(message) {
  console.log(JSON.stringify({ error: `usage: ts_client.mjs URL [--mode M] list-tools | call NAME [JSON]: ${message}` }));
  process.exit(2);
}

function parseArgs(argv) {
  const args = { mode: 'legacy', rest: [], headers: {} };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--mode') args.mode = argv[++i];
    else if (argv[i] === '--header') {
      const raw = argv[++i] ?? '';
      const at = raw.indexOf(':');
      if (at <= 0) usage(`--header must be 'Name: value', got ${JSON.stringify(raw)}`);
      args.headers[raw.slice(0, at).trim()] = raw.slice(at + 1).trim();
    }
    else if (args.url === undefined) args.url = argv[i];
    else args.rest.push(argv[i]);
  }
  if (!args.url) usage('missing URL');
  const [action, name, json] = args.rest;
  if (action === 'list-tools') return { ...args, action };
  if (action === 'call' && name) return { ...args, action, name, toolArgs: JSON.parse(json ?? '{}') };
  return usage(`unknown action ${JSON.stringify(args.rest)}`);
}

function negotiation(mode) {
  if (mode === 'legacy' || mode === 'sse') return { mode: 'legacy' };
  if (mode === 'auto') return { mode: 'auto' };
  return { mode: { pin: mode } };
}

function describe(error) {
  const parts = [`${error?.name ?? 'Error'}: ${error?.message ?? String(error)}`];
  if (error?.code !== undefined) parts.push(`code=${error.code}`);
  if (error?.cause) parts.push(`cause: ${describe(error.cause)}`);
  return parts.join('; ');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const url = new URL(args.url);
  const options = { requestInit: { headers: args.headers } };
  const transport =
    args.mode === 'sse' ? new SSEClientTransport(url, options) : new StreamableHTTPClientTransport(url, options);
  const client = new Client(
    { name: 'mcpgw-e2e-ts', version: '0.0.0' },
    { capabilities: {}, versionNegotiation: negotiation(args.mode) },
  );
  await client.connect(transport);
  const out = { protocolVersion: client.getNegotiatedProtocolVersion() ?? null, era: client.getProtocolEra() ?? null };
  if (args.action === 'list-tools') {
    const tools = [];
    let cursor;
    do {
      const page = await client.listTools(cursor ? { cursor } : {});
      for (const t of page.tools) tools.push({ name: t.name, description: t.description ?? null, inputSchema: t.inputSchema });
      cursor = page.nextCursor;
    } while (cursor);
    out.tools = tools;
  } else {
    const result = await client.callTool({ name: args.name, arguments: args.toolArgs });
    out.result = { content: result.content, structuredContent: result.structuredContent ?? null, isError: Boolean(result.isError) };
  }
  if (transport instanceof StreamableHTTPClientTransport && transport.sessionId) {
    await transport.terminateSession();
    out.sessionEnded = true;
  }
  await client.close();
  return out;
}

main().then(
  (out) => {
    console.log(JSON.stringify(out));
    process.exit(0);
  },
  (error) => {
    console.error(error);
    console.log(JSON.stringify({ error: describe(error) }));
    process.exit(1);
  },
);

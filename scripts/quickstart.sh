#!/usr/bin/env bash
# Builds mcpgw and runs it locally: control plane on the local PostgreSQL, one proxy, and the reference MCP
# server (server-everything) registered as `everything`. Prints how to connect; Ctrl-C stops everything.
#
# The control plane is also the OAuth authorization server: its signing keys are sealed in the database with
# the secrets key kept in .mcpgw/secrets.key (made on the first run, mode 0600, reused after; delete it only
# together with the database).
#
# Environment: MCPGW_DATABASE_URL (default postgres://postgres@localhost/mcpgw), MCPGW_ADMIN_TOKEN (default:
# a random token, printed), MCPGW_SECRETS_KEY (default: the key in .mcpgw/secrets.key), DEMO_PORT
# (server-everything, default 3001), PROFILE (debug | release). Sign-in at a company IdP: MCPGW_OIDC_ISSUER,
# MCPGW_OIDC_CLIENT_ID, MCPGW_OIDC_CLIENT_SECRET (register <issuer>/oauth/callback there), optionally
# MCPGW_OIDC_ADMIN_ROLES; they and every other MCPGW_* variable reach the binaries as they are.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${PROFILE:-debug}"
state="$root/.mcpgw"
mkdir -p "$state"
demo_port="${DEMO_PORT:-3001}"
export MCPGW_ADMIN_TOKEN="${MCPGW_ADMIN_TOKEN:-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')}"
http_addr="${MCPGW_HTTP_ADDR:-127.0.0.1:8000}"
listen="${MCPGW_LISTEN:-127.0.0.1:8080}"
admin_addr="${MCPGW_ADMIN_ADDR:-127.0.0.1:9180}"
# Both binaries read MCPGW_PUBLIC_URL: the proxy's resource URLs and the audiences the authorization server
# issues tokens for must agree.
export MCPGW_PUBLIC_URL="${MCPGW_PUBLIC_URL:-http://$listen}"

# The secrets key: made once, kept private, reused (the signing keys already stored are sealed with it).
secrets_file="$state/secrets.key"
if [[ -z "${MCPGW_SECRETS_KEY:-}" ]]; then
  if [[ ! -s "$secrets_file" ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n' >"$secrets_file.tmp" && mv "$secrets_file.tmp" "$secrets_file")
    echo "==> Made a secrets key in $secrets_file (keep it with the database)."
  fi
  chmod 600 "$secrets_file"
  MCPGW_SECRETS_KEY="$(<"$secrets_file")"
fi
export MCPGW_SECRETS_KEY

# The authorization server's issuer and its RFC 8414 metadata URL (the well-known part goes before a path).
issuer="${MCPGW_ISSUER_URL:-http://$http_addr}"
issuer="${issuer%/}"
issuer_rest="${issuer#*://}"
issuer_host="${issuer_rest%%/*}"
issuer_path="${issuer_rest#"$issuer_host"}"
as_metadata="${issuer%%://*}://$issuer_host/.well-known/oauth-authorization-server$issuer_path"

"$root/scripts/system-deps.sh"
echo "==> Installing the demo MCP server (npm) and building mcpgw ($profile)…"
"$root/tests/peers/install.sh" npm
if [[ "$profile" == release ]]; then cargo build --release --bins; else cargo build --bins; fi
bin="$root/target/$profile"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_for() { # url what log
  for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "$2 did not become ready; see $3" >&2; exit 1
}

echo "==> Starting the control plane (REST $http_addr, database ${MCPGW_DATABASE_URL:-postgres://postgres@localhost/mcpgw})…"
"$bin/mcpgw-control-plane" serve >"$state/control-plane.log" 2>&1 &
pids+=($!)
wait_for "http://$http_addr/ready" "control plane" "$state/control-plane.log"
if ! curl -fsS --max-time 5 -o /dev/null "$as_metadata" 2>/dev/null; then
  echo "warning: the authorization server's metadata ($as_metadata) does not answer; see $state/control-plane.log" >&2
fi
if [[ -n "${MCPGW_OIDC_ISSUER:-}" ]]; then
  sign_in="users sign in at $MCPGW_OIDC_ISSUER (its redirect URI: $issuer/oauth/callback)"
else
  sign_in="no IdP configured: set MCPGW_OIDC_ISSUER, MCPGW_OIDC_CLIENT_ID and MCPGW_OIDC_CLIENT_SECRET"
fi

echo "==> Starting the proxy (MCP $listen, admin $admin_addr)…"
MCPGW_TABLE_CACHE="${MCPGW_TABLE_CACHE:-$state/proxy-table.bin}" MCPGW_AUDIT_SPILL_DIR="${MCPGW_AUDIT_SPILL_DIR:-$state/audit-spill}" \
  "$bin/mcpgw-proxy" serve >"$state/proxy.log" 2>&1 &
pids+=($!)
wait_for "http://$admin_addr/readyz" "proxy" "$state/proxy.log"

echo "==> Starting server-everything on 127.0.0.1:$demo_port…"
PORT="$demo_port" node --require "$root/tests/peers/localhost-only.cjs" \
  "$root/tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp \
  >"$state/everything.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$demo_port") 2>/dev/null && break; sleep 0.1; done

status=$(curl -sS -o "$state/register.json" -w '%{http_code}' -X POST "http://$http_addr/api/v1/servers" \
  -H "Authorization: Bearer $MCPGW_ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"name\":\"everything\",\"endpoint_url\":\"http://127.0.0.1:$demo_port/mcp\",\"transport_type\":\"streamable_http\"}")
case "$status" in
  201) echo "==> Registered server 'everything'." ;;
  409) echo "==> Server 'everything' was already registered." ;;
  *) echo "registration failed ($status): $(cat "$state/register.json")" >&2; exit 1 ;;
esac
for _ in $(seq 1 50); do curl -fsS "http://$admin_addr/routes" | grep -q '"everything"' && break; sleep 0.1; done

# The proxy lets no caller in without credentials: an API key for the commands below (shown once).
status=$(curl -sS -o "$state/api-key.json" -w '%{http_code}' -X POST "http://$http_addr/api/v1/api-keys" \
  -H "Authorization: Bearer $MCPGW_ADMIN_TOKEN" -H 'Content-Type: application/json' -d '{"name":"quickstart"}')
[[ "$status" == 201 ]] || { echo "creating an API key failed ($status): $(cat "$state/api-key.json")" >&2; exit 1; }
api_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$state/api-key.json")
rm -f "$state/api-key.json"

cat <<INFO

mcpgw is running.
  MCP endpoint (through the proxy): http://$listen/mcp/everything
  API key for MCP clients:          $api_key   (send it as "Authorization: Bearer <key>")
  Admin REST API:                   http://$http_addr/api/v1/servers   (admin token: $MCPGW_ADMIN_TOKEN)
  Web console:                      http://$http_addr/ui/   (sign in with the admin token or an API key)
  OAuth authorization server:       $as_metadata
                                    ($sign_in)
  Proxy metrics / routes:           http://$admin_addr/metrics   http://$admin_addr/routes
  Logs:                             $state/*.log

Try it:
  (cd tests/peers/node_modules/@modelcontextprotocol/inspector-cli/build && \\
     node cli.js --cli http://$listen/mcp/everything --transport http --method tools/list \\
       --header "Authorization: Bearer $api_key")
  curl -s -H "Authorization: Bearer $MCPGW_ADMIN_TOKEN" http://$http_addr/api/v1/servers | python3 -m json.tool

Ctrl-C stops everything.
INFO
wait -n "${pids[@]}"
echo "a process exited; see $state/*.log" >&2

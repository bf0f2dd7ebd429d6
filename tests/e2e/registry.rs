//! The registry API as a whole: YAML import → export round trip through the CLI (dry-run writes
//! nothing), the OpenAPI document checked by schemathesis (no 5xx), the docs page, and the SSRF guard.

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::{ADMIN_TOKEN, ControlPlane, TestDb, peers::peers_dir};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTRY: &str = "servers:
- name: alpha
  instances:
  - endpoint_url: http://127.0.0.1:1/mcp
    weight: 2
  - endpoint_url: http://127.0.0.1:2/mcp
  transport_type: streamable_http
  description: first
  tags:
  - prod
  load_balancing: least_connections
  tenant_id: acme
  version: 1.0.0
  auto_discover: false
- name: beta
  instances:
  - endpoint_url: http://127.0.0.1:3/sse
  transport_type: sse
  auto_discover: false
  health_check:
    enabled: false
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_round_trip_through_the_cli() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
    let file = mcpgw_e2e::process::log_file("registry").with_extension("yaml");
    std::fs::write(&file, REGISTRY)?;
    let path = file.to_str().context("utf-8 path")?;

    let (ok, out, err) = cp.cli(&["import", path, "--dry-run"]).await?;
    ensure!(ok, "dry run failed: {err}");
    ensure!(out.contains("+ create alpha") && out.contains("2 created") && out.contains("would be"), "{out}");
    let (_, servers) = cp.api(Method::GET, "/api/v1/servers", None).await?;
    ensure!(servers == json!([]), "the dry run wrote {servers}");

    let (ok, out, err) = cp.cli(&["import", path]).await?;
    ensure!(ok && out.contains("2 created"), "{out}{err}");
    let (ok, exported, err) = cp.cli(&["export"]).await?;
    ensure!(ok, "{err}");
    ensure!(exported == REGISTRY, "export differs from the imported file:\n{exported}");
    let (ok, out, _) = cp.cli(&["import", path]).await?;
    ensure!(ok && out.contains("0 created, 0 updated, 0 deleted, 2 unchanged"), "not idempotent: {out}");
    Ok(())
}

/// The admin CLI: servers, instances, keys, limits and the audit log through the REST API, with its
/// validation messages, and completion scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_manages_the_registry_through_the_rest_api() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
    let json_of = |what: &str, (ok, out, err): (bool, String, String)| -> Result<Value> {
        ensure!(ok, "{what} failed: {err}");
        serde_json::from_str(&out).with_context(|| format!("{what} printed {out}"))
    };

    let args = ["servers", "create", "docs", "http://127.0.0.1:3/mcp", "--tag", "team-a", "--no-discover"];
    let created = json_of("servers create", cp.cli(&args).await?)?;
    ensure!(created["name"] == "docs" && created["tags"] == json!(["team-a"]), "{created}");
    let other = ["servers", "create", "misc", "http://127.0.0.1:4/mcp", "--no-discover"];
    json_of("servers create", cp.cli(&other).await?)?;
    let listed = json_of("servers list", cp.cli(&["servers", "list", "--tag", "team-a"]).await?)?;
    ensure!(listed.as_array().map(Vec::len) == Some(1) && listed[0]["name"] == "docs", "{listed}");

    let added = cp.cli(&["instances", "add", "docs", "http://127.0.0.1:5/mcp", "--weight", "3"]).await?;
    let added = json_of("instances add", added)?;
    let docs = json_of("servers get", cp.cli(&["servers", "get", "docs"]).await?)?;
    let instances = docs["instances"].as_array().context("instances")?;
    ensure!(instances.len() == 2 && instances.iter().any(|i| i["weight"] == 3), "{docs} after {added}");
    let second = instances.iter().find(|i| i["weight"] == 3).and_then(|i| i["id"].as_str()).context("id")?;
    let (ok, out, err) = cp.cli(&["instances", "remove", "docs", second]).await?;
    ensure!(ok && out.contains("removed instance"), "{out}{err}");

    let key = json_of("keys create", cp.cli(&["keys", "create", "ci", "--role", "user"]).await?)?;
    let (id, secret) = (key["id"].as_str().context("id")?, key["key"].as_str().context("key")?);
    ensure!(secret.starts_with("mcpgw_"), "the secret is shown once, at creation: {key}");
    let keys = json_of("keys list", cp.cli(&["keys", "list"]).await?)?;
    ensure!(keys.to_string().contains(id) && !keys.to_string().contains(secret), "{keys}");
    ensure!(cp.cli(&["keys", "revoke", id]).await?.0, "keys revoke");
    let keys = json_of("keys list", cp.cli(&["keys", "list"]).await?)?;
    ensure!(!keys.to_string().contains(id), "revoked: {keys}");

    let limit = json_of(
        "limits create",
        cp.cli(&["limits", "create", "user", "100", "1m", "--server", "docs"]).await?,
    )?;
    ensure!(limit["server"] == "docs" && limit["requests"] == 100 && limit["per_ms"] == 60_000, "{limit}");
    let limit_id = limit["id"].as_str().context("limit id")?;
    ensure!(json_of("limits list", cp.cli(&["limits", "list"]).await?)?.to_string().contains(limit_id));
    ensure!(cp.cli(&["limits", "delete", limit_id]).await?.0, "limits delete");

    // The API's own validation, as any client gets it.
    let (ok, _, err) = cp.cli(&["limits", "create", "planet", "1", "1m"]).await?;
    ensure!(!ok && err.contains("400") && err.contains("scope"), "{err}");
    let (ok, _, err) = cp.cli(&["servers", "get", "nope"]).await?;
    ensure!(!ok && err.contains("no server named \"nope\""), "{err}");

    let (ok, out, err) = cp.cli(&["servers", "delete", "docs"]).await?;
    ensure!(ok && out.contains("deleted server docs"), "{out}{err}");
    let audit =
        json_of("audit", cp.cli(&["audit", "--kind", "admin", "--since", "1h", "--limit", "100"]).await?)?;
    let records = audit["items"].as_array().context("items")?.len();
    // servers create ×2, instances add/remove, keys create/revoke, limits create/delete, servers delete.
    ensure!(records >= 9, "the CLI's changes are audited like any other: {audit}");

    let (ok, script, _) = cp.cli(&["completions", "bash"]).await?;
    ensure!(ok && script.contains("mcpgw-control-plane") && script.contains("servers"), "{script}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoints_and_the_api_contract() -> Result<()> {
    let db = TestDb::new();
    // Only loopback may be reached: generated registrations must never send traffic elsewhere.
    let cp = ControlPlane::start_with(
        &db,
        ADMIN_TOKEN,
        &[
            "--ssrf-deny",
            "0.0.0.0/0,::/0",
            "--ssrf-allow",
            "loopback",
            "--health-interval",
            "1h",
            "--discovery-interval",
            "0s",
        ],
    )
    .await?;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:80/mcp",
        "http://metadata.google.internal/",
        "http://10.1.2.3/mcp",
    ] {
        let (status, body) = cp
            .api(Method::POST, "/api/v1/servers", Some(json!({"name": "meta", "endpoint_url": url})))
            .await?;
        ensure!(status == 400 && body["code"] == "endpoint_url_not_allowed", "{url}: {status} {body}");
        eprintln!("{url}: {}", body["message"]);
    }

    let (status, doc) = cp.get_text("/api/v1/openapi.json").await?;
    ensure!(status == 200, "{status}");
    let doc: Value = serde_json::from_str(&doc)?;
    ensure!(doc["openapi"] == "3.1.0" && doc["paths"]["/api/v1/servers"].is_object(), "{doc}");
    // Valid OpenAPI 3.1 by the reference validator, not only parseable.
    let spec_file = mcpgw_e2e::process::log_file("openapi").with_extension("json");
    std::fs::write(&spec_file, serde_json::to_vec(&doc)?)?;
    let check = "import sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.readers import read_from_filename\nspec, _ = read_from_filename(sys.argv[1])\nvalidate(spec)\nprint('valid')";
    let out = tokio::process::Command::new(peers_dir().join(".venv/bin/python"))
        .args(["-c", check])
        .arg(&spec_file)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, page) = cp.get_text("/docs").await?;
    ensure!(
        status == 200 && page.contains("/api/v1/openapi.json") && !page.contains("https://"),
        "the docs page loads nothing from outside"
    );

    let schemathesis = peers_dir().join(".venv/bin/schemathesis");
    ensure!(schemathesis.exists(), "{} is missing: run tests/peers/install.sh", schemathesis.display());
    let out = tokio::process::Command::new(schemathesis)
        .args(["run", &format!("{}/api/v1/openapi.json", cp.http_url()), "--url", &cp.http_url()])
        .args(["--checks", "not_a_server_error", "--max-examples", "25", "--seed", "7", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--generation-allow-x00", "true"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        // Its example database and reports go with the test's logs, not into the source tree.
        .current_dir(mcpgw_e2e::process::log_dir())
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    ensure!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cp.describe()
    );
    Ok(())
}

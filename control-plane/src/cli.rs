//! The admin CLI subcommands — `export`, `import FILE [--dry-run] [--prune]`, `servers`, `instances`,
//! `keys`, `limits`, `audit` — which call the REST API of a running control plane (`--api-url`, default
//! `http://<--http-addr>`) with `--admin-token` (the bootstrap token or an admin API key): the API's
//! validation, permissions and admin audit apply as to any other client.

use std::io::Read;

use serde_json::Value;

use crate::config::{
    AuditArgs, Config, ImportArgs, InstancesCommand, KeysCommand, LimitsCommand, ServersCommand,
};

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("cannot reach {0}: {1}")]
    Http(String, reqwest::Error),
    #[error("{0} answered {1}: {2}")]
    Refused(String, u16, String),
    #[error("{0} needs --admin-token (or MCPGW_ADMIN_TOKEN): the admin token or an admin API key")]
    NoToken(&'static str),
}

fn client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder().build().map_err(|e| CliError::Http("the API".into(), e))
}

/// `export`: prints the registry YAML.
pub async fn export(config: &Config, token: Option<&str>) -> Result<String, CliError> {
    // YAML is not JSON: `call` passes it through as the API wrote it.
    call(config, token, "export", reqwest::Method::GET, "/api/v1/admin/export", None).await
}

/// `import`: applies a YAML file and returns a human-readable report of the changes.
pub async fn import(config: &Config, token: Option<&str>, args: &ImportArgs) -> Result<String, CliError> {
    let token = token.ok_or(CliError::NoToken("import"))?;
    let mut document = String::new();
    if args.file == "-" {
        std::io::stdin().read_to_string(&mut document).map_err(|e| CliError::Read("stdin".into(), e))?;
    } else {
        document = std::fs::read_to_string(&args.file).map_err(|e| CliError::Read(args.file.clone(), e))?;
    }
    let url = format!("{}/api/v1/admin/import?dry_run={}&prune={}", config.api_url, args.dry_run, args.prune);
    let response = client()?
        .post(&url)
        .bearer_auth(token)
        .header("Content-Type", "application/yaml")
        .body(document)
        .send()
        .await
        .map_err(|e| CliError::Http(url.clone(), e))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| CliError::Http(url.clone(), e))?;
    if status != 200 {
        return Err(CliError::Refused(url, status, body));
    }
    let report: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok(render(&report))
}

/// The diff as lines: `+ create`, `~ update` with each changed field, `- delete`, then a summary.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    for change in report["changes"].as_array().into_iter().flatten() {
        let name = change["name"].as_str().unwrap_or("?");
        let sign = match change["action"].as_str() {
            Some("create") => '+',
            Some("delete") => '-',
            _ => '~',
        };
        out.push_str(&format!("{sign} {} {name}\n", change["action"].as_str().unwrap_or("?")));
        for field in change["diff"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {}: {} -> {}\n",
                field["field"].as_str().unwrap_or("?"),
                field["from"],
                field["to"]
            ));
        }
    }
    let verb = if report["dry_run"] == Value::Bool(true) { "would be" } else { "were" };
    out.push_str(&format!(
        "{} created, {} updated, {} deleted, {} unchanged ({verb} applied)\n",
        report["created"], report["updated"], report["deleted"], report["unchanged"]
    ));
    out
}

/// One call of the REST API with the admin token: the answer's body (pretty JSON when it is JSON), or why
/// it failed. `what` names the command in a missing-token error.
async fn call(
    config: &Config,
    token: Option<&str>,
    what: &'static str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<String, CliError> {
    let token = token.ok_or(CliError::NoToken(what))?;
    let url = format!("{}{path}", config.api_url);
    let mut request = client()?.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| CliError::Http(url.clone(), e))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| CliError::Http(url.clone(), e))?;
    if !(200..300).contains(&status) {
        return Err(CliError::Refused(url, status, text));
    }
    Ok(match serde_json::from_str::<Value>(&text) {
        Ok(json) => format!("{}\n", serde_json::to_string_pretty(&json).unwrap_or(text)),
        Err(_) if text.is_empty() => String::new(),
        Err(_) => text,
    })
}

/// A server's id: `server` itself when it is a UUID, else the id of the server of that name.
async fn server_id(config: &Config, token: Option<&str>, server: &str) -> Result<String, CliError> {
    if uuid::Uuid::parse_str(server).is_ok() {
        return Ok(server.to_owned());
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("name", server).finish();
    let listed =
        call(config, token, "servers", reqwest::Method::GET, &format!("/api/v1/servers?{query}"), None)
            .await?;
    let servers: Value = serde_json::from_str(&listed).unwrap_or(Value::Null);
    servers
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == server)
        .and_then(|s| s["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::Refused(
                format!("{}/api/v1/servers", config.api_url),
                404,
                format!("no server named {server:?}"),
            )
        })
}

/// A query string of the pairs that are set (`?a=1&b=2`, or nothing).
fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<String>)>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, &value);
            any = true;
        }
    }
    if any { format!("?{}", query.finish()) } else { String::new() }
}

/// `since`/`until` as the API takes them: RFC 3339 as given, or a duration back from now (`1h`, `7d`).
fn instant(raw: Option<&str>) -> Option<String> {
    raw.map(|raw| match humantime::parse_duration(raw) {
        Ok(back) => (chrono::Utc::now() - chrono::Duration::from_std(back).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        Err(_) => raw.to_owned(),
    })
}

/// `servers …`.
pub async fn servers(
    config: &Config,
    token: Option<&str>,
    command: &ServersCommand,
) -> Result<String, CliError> {
    use reqwest::Method;
    let what = "servers";
    match command {
        ServersCommand::List { tag, health } => {
            let q = query([("tags", tag.clone()), ("health_status", health.clone())]);
            call(config, token, what, Method::GET, &format!("/api/v1/servers{q}"), None).await
        }
        ServersCommand::Get { server } => {
            let id = server_id(config, token, server).await?;
            call(config, token, what, Method::GET, &format!("/api/v1/servers/{id}"), None).await
        }
        ServersCommand::Create { name, endpoint_url, transport, tags, description, no_discover } => {
            let mut body = serde_json::json!({"name": name, "endpoint_url": endpoint_url, "tags": tags,
                "auto_discover": !no_discover});
            if let Some(transport) = transport {
                body["transport_type"] = Value::from(transport.as_str());
            }
            if let Some(description) = description {
                body["description"] = Value::from(description.as_str());
            }
            call(config, token, what, Method::POST, "/api/v1/servers", Some(body)).await
        }
        ServersCommand::Delete { server } => {
            let id = server_id(config, token, server).await?;
            call(config, token, what, Method::DELETE, &format!("/api/v1/servers/{id}"), None).await?;
            Ok(format!("deleted server {server}\n"))
        }
        ServersCommand::Refresh { server } => {
            let id = server_id(config, token, server).await?;
            call(config, token, what, Method::POST, &format!("/api/v1/servers/{id}/refresh"), None).await
        }
    }
}

/// `instances …`.
pub async fn instances(
    config: &Config,
    token: Option<&str>,
    command: &InstancesCommand,
) -> Result<String, CliError> {
    use reqwest::Method;
    let what = "instances";
    match command {
        InstancesCommand::Add { server, endpoint_url, weight } => {
            let id = server_id(config, token, server).await?;
            let mut body = serde_json::json!({"endpoint_url": endpoint_url});
            if let Some(weight) = weight {
                body["weight"] = Value::from(*weight);
            }
            call(config, token, what, Method::POST, &format!("/api/v1/servers/{id}/instances"), Some(body))
                .await
        }
        InstancesCommand::Remove { server, instance_id } => {
            let id = server_id(config, token, server).await?;
            let path = format!("/api/v1/servers/{id}/instances/{instance_id}");
            call(config, token, what, Method::DELETE, &path, None).await?;
            Ok(format!("removed instance {instance_id} of {server}\n"))
        }
    }
}

/// `keys …`.
pub async fn keys(config: &Config, token: Option<&str>, command: &KeysCommand) -> Result<String, CliError> {
    use reqwest::Method;
    let what = "keys";
    match command {
        KeysCommand::List => call(config, token, what, Method::GET, "/api/v1/api-keys", None).await,
        KeysCommand::Create { name, role, tenant, expires_at } => {
            let mut body = serde_json::json!({"name": name});
            for (key, value) in [("role", role), ("tenant_id", tenant), ("expires_at", expires_at)] {
                if let Some(value) = value {
                    body[key] = Value::from(value.as_str());
                }
            }
            call(config, token, what, Method::POST, "/api/v1/api-keys", Some(body)).await
        }
        KeysCommand::Revoke { id } => {
            call(config, token, what, Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await?;
            Ok(format!("revoked key {id}\n"))
        }
    }
}

/// `limits …`.
pub async fn limits(
    config: &Config,
    token: Option<&str>,
    command: &LimitsCommand,
) -> Result<String, CliError> {
    use reqwest::Method;
    let what = "limits";
    match command {
        LimitsCommand::List => call(config, token, what, Method::GET, "/api/v1/rate-limits", None).await,
        LimitsCommand::Create { scope, requests, per, burst, tenant, server, tool, global } => {
            let matches: serde_json::Map<String, Value> =
                [("tenant", tenant), ("server", server), ("tool", tool)]
                    .into_iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Value::from(v.as_str()))))
                    .collect();
            let mut body = serde_json::json!({"scope": scope, "match": matches, "requests": requests,
                "per": per, "global": global});
            if let Some(burst) = burst {
                body["burst"] = Value::from(*burst);
            }
            call(config, token, what, Method::POST, "/api/v1/rate-limits", Some(body)).await
        }
        LimitsCommand::Delete { id } => {
            call(config, token, what, Method::DELETE, &format!("/api/v1/rate-limits/{id}"), None).await?;
            Ok(format!("deleted rate limit {id}\n"))
        }
    }
}

/// `audit`: one page of records.
pub async fn audit(config: &Config, token: Option<&str>, args: &AuditArgs) -> Result<String, CliError> {
    let q = query([
        ("since", instant(args.since.as_deref())),
        ("until", instant(args.until.as_deref())),
        ("tenant_id", args.tenant.clone()),
        ("principal", args.principal.clone()),
        ("server", args.server.clone()),
        ("tool", args.tool.clone()),
        ("method", args.method.clone()),
        ("outcome", args.outcome.clone()),
        ("kind", args.kind.clone()),
        ("limit", args.limit.map(|n| n.to_string())),
        ("cursor", args.cursor.clone()),
    ]);
    call(config, token, "audit", reqwest::Method::GET, &format!("/api/v1/audit{q}"), None).await
}

//! The admin CLI subcommands: `export` and `import FILE [--dry-run] [--prune]`, which call the REST API of
//! a running control plane (`--api-url`, default `http://<--http-addr>`) with `--admin-token` (the bootstrap
//! token or an admin API key).

use std::io::Read;

use serde_json::Value;

use crate::config::{Config, ImportArgs};

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
    let token = token.ok_or(CliError::NoToken("export"))?;
    let url = format!("{}/api/v1/admin/export", config.api_url);
    let response =
        client()?.get(&url).bearer_auth(token).send().await.map_err(|e| CliError::Http(url.clone(), e))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| CliError::Http(url.clone(), e))?;
    if status != 200 {
        return Err(CliError::Refused(url, status, body));
    }
    Ok(body)
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

//! Kubernetes service discovery against a fake API server: annotated Services in the watched namespaces
//! become servers the proxy routes to, follow their Services' changes and go with them; an
//! administrator's server is never touched, other namespaces are not read, and every change is audited.

use std::time::Duration;

use anyhow::Result;
use mcpgw_e2e::kube::{FakeKube, service};
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, poll_until, process};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "service-account-token-for-the-test";
const WAIT: Duration = Duration::from_secs(15);

async fn server(gw: &Gateway, name: &str) -> Result<Option<Value>> {
    let (status, body) = gw.cp.api(Method::GET, "/api/v1/servers", None).await?;
    anyhow::ensure!(status == 200, "{status} {body}");
    let items = body.get("items").or(Some(&body)).and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(items.into_iter().find(|s| s["name"] == name))
}

async fn whoami(url: &str) -> Result<String> {
    let mut client = McpHttp::new(url);
    client.initialize().await?;
    let result = client.call_tool("whoami", json!({})).await?;
    Ok(crate::first_text(&result).unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_services_become_servers_and_follow_their_services() -> Result<()> {
    let dir = process::log_dir().join("kube");
    std::fs::create_dir_all(&dir)?;
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n"))?;
    let api = FakeKube::start(TOKEN).await?;
    let first = PyServer::start("k8s-first", PyServerOpts::default()).await?;
    let second = PyServer::start("k8s-second", PyServerOpts::default()).await?;
    let token_arg = token.display().to_string();
    let gw = Gateway::start_with_planes(
        &[
            "--kubernetes-discovery",
            "--kubernetes-api",
            &api.url(),
            "--kubernetes-namespaces",
            "tools,web",
            "--kubernetes-token-file",
            &token_arg,
            "--kubernetes-resync",
            "1h",
        ],
        &[],
    )
    .await?;
    // An administrator's server, whose name a Service will also claim.
    gw.add_server("taken", &second.url(), "streamable_http").await?;

    let annotated = |name: &str| json!({"mcpgw.io/server": name, "mcpgw.io/path": "/mcp"});
    api.set_services(&[
        service("tools", "docs", annotated("docs"), first.port()),
        service("tools", "plain", json!({}), first.port()),
        service("web", "clash", annotated("taken"), first.port()),
        service("elsewhere", "ignored", annotated("ignored"), first.port()),
    ])
    .await?;
    gw.proxy.wait_routable("docs", WAIT).await?;
    let docs = server(&gw, "docs").await?.expect("registered");
    assert_eq!(docs["owner"], "kubernetes:tools/docs", "{docs}");
    assert_eq!(docs["description"], "Kubernetes Service tools/docs", "{docs}");
    assert_eq!(docs["instances"][0]["endpoint_url"], first.url(), "{docs}");
    assert_eq!(whoami(&gw.proxy.url("docs")).await?, "k8s-first");
    let taken = server(&gw, "taken").await?.expect("the administrator's server");
    assert_eq!(taken["instances"][0]["endpoint_url"], second.url(), "never changed by the sync: {taken}");
    assert_eq!(taken["owner"], Value::Null);
    assert!(server(&gw, "ignored").await?.is_none(), "a namespace not watched is not read");
    assert!(server(&gw, "plain").await?.is_none(), "a Service without the annotation is not registered");
    let seen = api.requests().await?;
    assert!(seen.get("/api/v1/namespaces/elsewhere/services").is_none(), "{seen}");

    // The Service now points elsewhere: the server follows.
    api.set_services(&[
        service("tools", "docs", annotated("docs"), second.port()),
        service("web", "clash", annotated("taken"), first.port()),
    ])
    .await?;
    poll_until("the server to follow its Service", WAIT, || async {
        Ok((whoami(&gw.proxy.url("docs")).await.ok().as_deref() == Some("k8s-second")).then_some(()))
    })
    .await?;

    // The Service is gone: so is the server; the administrator's stays.
    api.set_services(&[service("web", "clash", annotated("taken"), first.port())]).await?;
    poll_until("the server to go with its Service", WAIT, || async {
        Ok(server(&gw, "docs").await?.is_none().then_some(()))
    })
    .await?;
    poll_until("the proxy to stop routing it", WAIT, || async {
        Ok((!gw.proxy.is_routable("docs").await?).then_some(()))
    })
    .await?;
    assert!(server(&gw, "taken").await?.is_some());

    // Each change is audited under the sync's principal.
    let (status, audit) =
        gw.cp.api(Method::GET, "/api/v1/audit?principal=kubernetes-discovery&kind=admin", None).await?;
    assert_eq!(status, 200, "{audit}");
    let methods: Vec<(String, Option<i64>)> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["method"].as_str().unwrap_or_default().to_owned(), r["status"].as_i64()))
        .collect();
    let statuses: Vec<i64> = methods.iter().filter_map(|(_, s)| *s).collect();
    assert!(methods.iter().all(|(m, _)| m == "SYNC kubernetes"), "{methods:?}");
    for expected in [201, 200, 204] {
        assert!(statuses.contains(&expected), "created, updated and deleted are recorded: {methods:?}");
    }
    let log = gw.cp.log_text();
    assert!(log.contains("is taken by"), "the name clash is reported:\n{log}");
    Ok(())
}

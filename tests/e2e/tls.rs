//! TLS: the real MCP clients reach a proxy's MCP listener over HTTPS (test CA), the control plane serves its
//! REST API over HTTPS, a proxy reaches an https:// upstream signed by a private CA (`--upstream-ca`), and a
//! certificate replaced on disk is served to new connections by both planes without a restart while an open
//! connection keeps working.

use anyhow::Result;
use mcpgw_e2e::tls::{ca, first_certificate, fixture, served_certificate};
use mcpgw_e2e::{Gateway, McpHttp, Proxy, PyServer, PyServerOpts, poll_until, process};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_both_planes_over_https_and_a_renewed_certificate_is_served() -> Result<()> {
    // The certificate files the processes read, replaced below as a renewal would.
    let dir = process::log_dir().join("tls");
    std::fs::create_dir_all(&dir)?;
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(fixture("server-a.pem"), &crt)?;
    std::fs::copy(fixture("server-a.key"), &key)?;
    let (crt_arg, key_arg, ca_arg) =
        (crt.display().to_string(), key.display().to_string(), ca().display().to_string());
    let gw = Gateway::start_with_planes(
        &["--http-tls-cert", &crt_arg, "--http-tls-key", &key_arg, "--upstream-ca", &ca_arg],
        &["--upstream-ca", &ca_arg],
    )
    .await?;
    assert!(gw.cp.http_url().starts_with("https://"), "the harness reached the REST API over HTTPS");
    let tls_proxy = Proxy::start(&gw.cp.grpc_url(), &["--tls-cert", &crt_arg, "--tls-key", &key_arg]).await?;
    let upstream = PyServer::start("inner", PyServerOpts::default()).await?;
    gw.cp.register("inner", &upstream.url(), "streamable_http").await?;
    tls_proxy.wait_routable("inner", std::time::Duration::from_secs(10)).await?;
    let inner = format!("https://{}/mcp/inner", tls_proxy.listen_addr());

    // The official Python and TypeScript clients over HTTPS, trusting the test CA.
    let called = mcpgw_e2e::peers::py_client_env(
        &inner,
        "auto",
        &["call", "echo", r#"{"message":"over tls"}"#],
        &[("SSL_CERT_FILE", &ca_arg)],
    )
    .await?;
    assert!(called.to_string().contains("over tls"), "{called}");
    let listed = mcpgw_e2e::peers::inspector_env(
        &inner,
        "http",
        &["--method", "tools/list"],
        &[("NODE_EXTRA_CA_CERTS", &ca_arg)],
    )
    .await?;
    assert!(crate::tool_names(&listed).contains(&"echo".to_owned()), "{listed}");

    // An https:// upstream signed by the private CA: the other proxy, through the first one. The control
    // plane's discovery reaches it too (it trusts --upstream-ca besides the system's roots).
    let outer = gw.add_server("outer", &inner, "streamable_http").await?;
    let mut client = McpHttp::new(&outer);
    client.initialize().await?;
    let result = client.call_tool("echo", json!({"message": "through two proxies"})).await?;
    assert_eq!(crate::first_text(&result), Some("through two proxies"), "{result}");
    poll_until("discovery of the https upstream", std::time::Duration::from_secs(15), || async {
        let (status, body) =
            gw.cp.api(reqwest::Method::GET, "/api/v1/discovery/tools?tools=echo", None).await?;
        anyhow::ensure!(status == 200, "{status} {body}");
        Ok(body.to_string().contains("\"outer\"").then_some(()))
    })
    .await?;

    // Renewal: both listeners serve the new certificate to new connections, no restart.
    let (a, b) = (first_certificate(&fixture("server-a.pem"))?, first_certificate(&fixture("server-b.pem"))?);
    let proxy_probe =
        format!("https://{}/.well-known/oauth-protected-resource/mcp/inner", tls_proxy.listen_addr());
    let cp_probe = format!("{}/health", gw.cp.http_url());
    let kept = mcpgw_e2e::tls::client();
    assert_eq!(served_certificate(&kept, &proxy_probe).await?.1, a);
    assert_eq!(served_certificate(&mcpgw_e2e::tls::client(), &cp_probe).await?.1, a);
    std::fs::copy(fixture("server-b.key"), &key)?;
    std::fs::copy(fixture("server-b.pem"), &crt)?;
    for probe in [&proxy_probe, &cp_probe] {
        poll_until(
            "the renewed certificate on a new connection",
            std::time::Duration::from_secs(15),
            || async {
                let (status, served) = served_certificate(&mcpgw_e2e::tls::client(), probe).await?;
                anyhow::ensure!(status < 500, "{probe}: {status}");
                Ok((served == b).then_some(()))
            },
        )
        .await?;
    }
    // The connection opened before the renewal is still served (with the certificate it was opened with).
    let (status, served) = served_certificate(&kept, &proxy_probe).await?;
    assert!(status < 500, "{status}");
    assert_eq!(served, a, "the kept-alive connection was not dropped");
    // And the real client works on the renewed certificate.
    let called = mcpgw_e2e::peers::py_client_env(
        &inner,
        "auto",
        &["call", "echo", r#"{"message":"renewed"}"#],
        &[("SSL_CERT_FILE", &ca_arg)],
    )
    .await?;
    assert!(called.to_string().contains("renewed"), "{called}");
    Ok(())
}

//! Discovery against a fake MCP server of each era: every page listed and stored, exposed through
//! include_tools, the discovery queries and refresh; an unreachable server keeps its last capabilities.
//! And the SSRF guard on registration.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::fake_mcp::FakeMcp;
use crate::support::{TestApp, admin, get};

fn names(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
}

async fn register(app: &TestApp, name: &str, url: &str) -> String {
    let created =
        app.create(json!({"name": name, "endpoint_url": url, "auto_discover": false, "tags": ["t"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().expect("id").to_owned()
}

#[actix_web::test]
async fn discovery_lists_every_page_in_both_eras() {
    let app = TestApp::start().await;
    for modern in [false, true] {
        let fake = FakeMcp::start(modern, 5).await;
        let name = if modern { "modern" } else { "legacy" };
        let id = register(&app, name, &fake.url).await;
        let refreshed =
            app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        assert_eq!(names(&refreshed.body["tools"]), ["t0", "t1", "t2", "t3", "t4"], "three pages of tools");
        assert_eq!(refreshed.body["tools"][0]["inputSchema"], json!({"type": "object"}), "stored as listed");
        assert_eq!(refreshed.body["resources"].as_array().map(Vec::len), Some(3));
        assert_eq!(refreshed.body["resource_templates"][0]["uriTemplate"], "demo://tpl/{id}");
        assert_eq!(names(&refreshed.body["prompts"]), ["p0", "p1"]);
        let discovery = &refreshed.body["discovery"];
        assert_eq!(discovery["status"], "ok");
        assert_eq!(discovery["protocol_version"], if modern { "2026-07-28" } else { "2025-11-25" });
        assert!(refreshed.body["capabilities"]["tools"].is_object(), "discovered capabilities are shown");

        let uri = format!("/api/v1/servers/{id}/refresh");
        let (one, two) = futures_util::future::join(
            app.call(admin(TestRequest::post().uri(&uri))),
            app.call(admin(TestRequest::post().uri(&uri))),
        )
        .await;
        assert_eq!(
            (one.status, two.status),
            (StatusCode::OK, StatusCode::OK),
            "concurrent refreshes take turns"
        );
        let got = app.call(get(&format!("/api/v1/servers/{id}?include_tools=true"))).await;
        assert_eq!(names(&got.body["tools"]).len(), 5);
        assert!(got.body.get("prompts").is_none(), "only what was asked for");

        // Unreachable: 502, the last known capabilities stay, the failure is recorded.
        fake.set_down(true);
        let failed = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await;
        assert_eq!(
            (failed.status, failed.code()),
            (StatusCode::BAD_GATEWAY, "discovery_failed"),
            "{}",
            failed.body
        );
        let kept =
            app.call(get(&format!("/api/v1/servers/{id}?include_tools=true&include_prompts=true"))).await;
        assert_eq!(names(&kept.body["tools"]).len(), 5);
        assert_eq!(kept.body["discovery"]["status"], "error");
        assert!(
            kept.body["discovery"]["discovered_at"].is_string(),
            "when the kept capabilities were listed"
        );
        assert!(
            kept.body["discovery"]["error"].as_str().is_some_and(|e| e.contains("503")),
            "{}",
            kept.body["discovery"]
        );
    }

    let both = app.call(get("/api/v1/discovery/tools?tools=t1,t4")).await;
    assert_eq!(both.status, StatusCode::OK);
    let servers = both.body["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert_eq!(names(&servers[0]["tools"]), ["t1", "t4"]);
    let twice = app.call(get("/api/v1/discovery/tools?tools=t1,t1,t4")).await;
    assert_eq!(
        twice.body["servers"].as_array().map(Vec::len),
        Some(2),
        "a name given twice counts once: {}",
        twice.body
    );
    let many: Vec<String> = (0..51).map(|i| format!("demo://r{i}/*")).collect();
    let flood = app.call(get(&format!("/api/v1/discovery/resources?resources={}", many.join(",")))).await;
    assert_eq!(flood.status, StatusCode::BAD_REQUEST, "each pattern costs two queries: {}", flood.body);
    let none = app.call(get("/api/v1/discovery/tools?tools=t1,nope")).await;
    assert_eq!(none.body["servers"], json!([]));
    let tagged = app.call(get("/api/v1/discovery/tools?tools=t1&tags=other")).await;
    assert_eq!(tagged.body["servers"], json!([]));
    let res = app.call(get("/api/v1/discovery/resources?resources=demo://res/1,demo://tpl/*")).await;
    let first = &res.body["servers"][0]["resources"];
    assert_eq!(first.as_array().map(Vec::len), Some(2), "{}", res.body);
}

#[actix_web::test]
async fn refused_endpoints_are_rejected_with_a_clear_error() {
    let app = TestApp::start().await;
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/mcp",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://0.0.0.0:8080/mcp",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let reply = app.create(json!({"name": "meta", "endpoint_url": url})).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "endpoint_url_not_allowed"),
            "{url}: {}",
            reply.body
        );
        assert!(reply.body["message"].as_str().is_some_and(|m| m.contains("not allowed")), "{}", reply.body);
    }
    let listed = app.create(json!({"name": "multi", "instances": [{"endpoint_url": "http://127.0.0.1:1/mcp"}, {"endpoint_url": "http://169.254.169.254/"}]})).await;
    assert_eq!(listed.code(), "endpoint_url_not_allowed");
    assert!(
        listed.body["message"].as_str().is_some_and(|m| m.starts_with("instances[1]")),
        "{}",
        listed.body
    );
    let ok = app
        .create(json!({"name": "local", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false}))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "loopback stays allowed");
    let id = ok.body["id"].as_str().expect("id");
    let added = app
        .call(
            admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/instances")))
                .set_json(json!({"endpoint_url": "http://169.254.169.254/"})),
        )
        .await;
    assert_eq!(added.code(), "endpoint_url_not_allowed");
    assert_eq!(app.table().await.1.len(), 1, "nothing else written");
}

#[actix_web::test]
async fn a_list_change_triggers_rediscovery() {
    let app = TestApp::start().await;
    for modern in [false, true] {
        let fake = FakeMcp::start(modern, 2).await;
        let name = if modern { "watched-modern" } else { "watched-legacy" };
        let id = register(&app, name, &fake.url).await;
        let refreshed =
            app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        let stop = tokio_util::sync::CancellationToken::new();
        let discoverer = app.state().discoverer.clone();
        let watcher =
            actix_web::rt::spawn(mcpgw_control_plane::discovery::watch::run(discoverer, stop.clone()));
        crate::support::eventually("the watcher's stream", async || fake.streams() > 0).await;
        fake.add_tool("t-new");
        crate::support::eventually("the new tool discovered", async || {
            let got = app.call(get(&format!("/api/v1/servers/{id}?include_tools=true"))).await;
            names(&got.body["tools"]).contains(&"t-new".to_owned())
        })
        .await;
        stop.cancel();
        let _ = watcher.await;
    }
}

#[actix_web::test]
async fn a_flood_of_list_changes_costs_one_rediscovery_per_interval() {
    let app = TestApp::start().await;
    let fake = FakeMcp::start(false, 2).await;
    let id = register(&app, "chatty", &fake.url).await;
    let refreshed = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = actix_web::rt::spawn(mcpgw_control_plane::discovery::watch::run(
        app.state().discoverer.clone(),
        stop.clone(),
    ));
    crate::support::eventually("the watcher's stream", async || fake.streams() > 0).await;
    let before = fake.list_rounds();
    // 150 announcements over 1.5 s: one rediscovery after the first, the rest wait for the interval.
    let flood = std::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    for _ in 0..150 {
        tick.tick().await;
        fake.announce();
    }
    crate::support::eventually("a rediscovery", async || fake.list_rounds() > before).await;
    let rounds = fake.list_rounds() - before;
    let window = flood.elapsed();
    assert!(
        window < mcpgw_control_plane::discovery::watch::MIN_REDISCOVERY_INTERVAL,
        "the flood outlasted the interval ({window:?}); the bound below would not hold"
    );
    assert_eq!(rounds, 1, "rediscoveries during {window:?} of notifications");
    stop.cancel();
    let _ = watcher.await;
}

#[actix_web::test]
async fn a_catalog_over_the_bound_fails_discovery_without_replacing_the_last_one() {
    let app = TestApp::start().await;
    let fake = FakeMcp::start(false, 2).await;
    let id = register(&app, "huge", &fake.url).await;
    let uri = format!("/api/v1/servers/{id}/refresh");
    let first = app.call(admin(TestRequest::post().uri(&uri))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // Six tools of 1.5 MiB: pages of two (3 MiB, under the body limit each), 9 MiB in all.
    let description = "x".repeat(3 << 19);
    fake.state.tools.lock().unwrap_or_else(|p| p.into_inner()).extend(
        (0..6).map(|i| json!({"name": format!("big{i}"), "description": description, "inputSchema": {}})),
    );
    let refused = app.call(admin(TestRequest::post().uri(&uri))).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_GATEWAY, "discovery_failed"),
        "{}",
        refused.body
    );
    let kept = app.call(get(&format!("/api/v1/servers/{id}?include_tools=true"))).await;
    assert_eq!(names(&kept.body["tools"]), ["t0", "t1"], "the last good catalog stays");
    let error = kept.body["discovery"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("larger than 8 MiB"), "{}", kept.body["discovery"]);
}

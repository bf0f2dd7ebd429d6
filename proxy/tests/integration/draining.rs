//! SIGTERM under load: the proxy keeps serving through its grace period, then ends every long-lived stream
//! cleanly (clients reconnect, to another replica), lets the calls it already forwarded finish, and exits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mcpgw_proto::v1::proxy_message::Kind;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::*;

const STREAMS: usize = 100;
const LOADERS: u64 = 4;
const SLOW_CALLS: u64 = 8;
/// Long enough that the slow calls are still upstream when the grace period ends.
const SLOW: Duration = Duration::from_millis(1500);
/// `--grace-period` and `--shutdown-timeout`.
const GRACE: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(5);

fn call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {}}})
}

/// The JSON-RPC id of a request the upstream received.
fn id_of(recorded: &Recorded) -> Option<u64> {
    serde_json::from_slice::<Value>(&recorded.body).ok()?.get("id")?.as_u64()
}

/// The outcome of one client call: answered (status), or failed before any answer.
type Outcomes = Arc<Mutex<Vec<(u64, Result<u16, String>, Instant)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly_and_every_forwarded_call_is_answered() {
    let mut upstream = FakeUpstream::start().await;
    // Only the slow calls go to `beta`: its queue of slow replies is theirs.
    let mut slow_upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let (grace, deadline) = (format!("{}s", GRACE.as_secs()), format!("{}s", DEADLINE.as_secs()));
    let args =
        ["--grace-period", &grace, "--shutdown-timeout", &deadline, "--max-streams-per-principal", "1000"];
    let mut proxy = ProxyProcess::start(&cp.url(), &args).await;
    cp.push(snapshot(1, &[("alpha", &upstream.url()), ("beta", &slow_upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let url = proxy.mcp_url("alpha");

    // A session, then STREAMS server-to-client streams on it, each with one event through.
    let client = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    let resp = client.post(&url).json(&init).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let token = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let mut feeds = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let (events, rx) = mpsc::channel(4);
        upstream.reply(Reply::ForGet(Box::new(Reply::Sse(rx))));
        let resp = client
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        events.send(Some("data: {}\n\n".into())).await.unwrap();
        assert_eq!(
            within("the stream's first event", body.next()).await.unwrap().unwrap(),
            &b"data: {}\n\n"[..]
        );
        feeds.push(events);
        streams.push(body);
    }

    // A steady call load: each loader its own keep-alive connection, one call after the other, until the
    // proxy is gone.
    let outcomes: Outcomes = Arc::default();
    let mut loaders = Vec::new();
    for loader in 0..LOADERS {
        let (url, outcomes) = (url.clone(), outcomes.clone());
        loaders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut consecutive_failures = 0;
            for n in 0.. {
                let id = 1_000_000 * (loader + 1) + n;
                let outcome = match client.post(&url).json(&call(id)).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.json::<Value>().await {
                            Ok(body) if status == 200 && body["jsonrpc"] == "2.0" => Ok(status),
                            Ok(body) => Err(format!("{status}: {body}")),
                            Err(e) => Err(format!("{status}, body cut: {e}")),
                        }
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                consecutive_failures = if outcome.is_ok() { 0 } else { consecutive_failures + 1 };
                outcomes.lock().unwrap().push((id, outcome, Instant::now()));
                if consecutive_failures >= 20 {
                    return;
                }
                if consecutive_failures > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    within("calls under load", async {
        while outcomes.lock().unwrap().iter().filter(|(_, o, _)| o.is_ok()).count() < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // Calls the upstream holds across the signal.
    for _ in 0..SLOW_CALLS {
        slow_upstream.reply(Reply::Slow(SLOW));
    }
    let mut slow = Vec::new();
    for n in 0..SLOW_CALLS {
        let url = proxy.mcp_url("beta");
        slow.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(&url)
                .json(&call(n + 1))
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.map_err(|e| format!("{status}, body cut: {e}"))?;
            Ok::<_, String>((status, body))
        }));
    }
    let mut held = HashSet::new();
    within("the slow calls to reach the upstream", async {
        while held.len() < SLOW_CALLS as usize {
            held.extend(slow_upstream.drain().iter().filter_map(id_of));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let signalled = Instant::now();
    let status =
        std::process::Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status().unwrap();
    assert!(status.success());

    // The streams end cleanly (the chunked body is terminated), long before the deadline.
    for (i, mut body) in streams.into_iter().enumerate() {
        match tokio::time::timeout(GRACE + DEADLINE, body.next()).await {
            Ok(None) => {}
            other => panic!("stream {i} did not end cleanly: {other:?}"),
        }
    }
    let streams_ended = signalled.elapsed();
    assert!(streams_ended >= GRACE, "the streams lasted through the grace period: {streams_ended:?}");
    assert!(
        streams_ended < GRACE + DEADLINE / 2,
        "the streams ended at the drain, not at exit: {streams_ended:?}"
    );
    for _ in 0..STREAMS {
        let end = within("the upstream stream's end", upstream.stream_ends.recv()).await;
        assert_eq!(end, Some(StreamEnd::ClosedByProxy));
    }
    drop(feeds);

    // The calls held upstream across the signal are answered.
    for (n, task) in slow.into_iter().enumerate() {
        let answer = within("a slow call's answer", task).await.unwrap();
        let (status, body) = answer.unwrap_or_else(|e| panic!("slow call {n} failed: {e}"));
        assert_eq!((status, &body["jsonrpc"]), (200, &json!("2.0")), "{body}");
    }
    let exit = within("the proxy to exit", proxy.wait()).await;
    assert!(exit.success(), "the proxy exits 0 after draining: {exit}");
    let exited = signalled.elapsed();
    for loader in loaders {
        within("the load to stop", loader).await.unwrap();
    }

    // No call the proxy forwarded failed: those that failed never reached the upstream (their connection
    // was refused or closed before the proxy read them).
    let forwarded: HashSet<u64> = upstream.drain().iter().filter_map(id_of).collect();
    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<_> = outcomes.iter().filter(|(_, o, _)| o.is_err()).collect();
    let lost: Vec<_> = failed.iter().filter(|(id, _, _)| forwarded.contains(id)).collect();
    assert!(lost.is_empty(), "forwarded calls that failed: {lost:?}");
    let answered_after = outcomes.iter().filter(|(_, o, at)| o.is_ok() && *at > signalled).count();
    assert!(answered_after > 0, "calls are still served during the grace period");
    eprintln!(
        "{} calls, {} answered after SIGTERM, {} failed without reaching the upstream; streams ended after \
         {streams_ended:?}, the proxy exited after {exited:?}",
        outcomes.len(),
        answered_after,
        failed.len()
    );
}

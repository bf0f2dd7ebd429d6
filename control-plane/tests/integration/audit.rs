//! Audit: batches through the real `StreamAudit` stream become rows once (a batch sent again is acknowledged
//! with 0 written; a database error ends the stream with UNAVAILABLE), a batch's days get their
//! partitions, the retention drops whole expired partitions and not the current ones, `GET /api/v1/audit`
//! agrees with a model of it on random filters walked page by page, tenant administrators read their own
//! tenant only, CSV parses back to the same rows, and the ingest rate through the stream.

use std::collections::BTreeSet;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use mcpgw_control_plane::db::store::audit::{self as store, AdminRecord, AuditLog};
use mcpgw_proto::v1::{AuditAck, AuditBatch, AuditRecord};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use uuid::Uuid;

use crate::api_keys::create_key;
use crate::support::{TestApp, TestGrpc, WAIT, bearer, get};

/// xorshift64*: reproducible random records and filters without a rand crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// A record with the given keys; the rest filled in.
fn record(id: Uuid, time: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        id: id.as_bytes().to_vec(),
        time_unix_us: micros(time),
        principal: "key:k1".into(),
        tenant_id: "acme".into(),
        server: "docs".into(),
        instance: "i-1".into(),
        era: "2025-06-18".into(),
        method: "tools/call".into(),
        target: "echo".into(),
        request_id: "7".into(),
        outcome: "ok".into(),
        status: 200,
        rpc_error_code: None,
        duration_us: 1500,
        bytes_in: 120,
        bytes_out: 340,
        client_addr: "10.0.0.9:5555".into(),
        session: "s-digest".into(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        arguments: String::new(),
        proxy_id: "proxy-a".into(),
    }
}

/// One open `StreamAudit` stream.
struct AuditStream {
    tx: mpsc::Sender<AuditBatch>,
    acks: Streaming<AuditAck>,
}

impl AuditStream {
    async fn open(grpc: &TestGrpc) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut client = grpc.client().await;
        let acks = client.stream_audit(ReceiverStream::new(rx)).await.expect("the stream opens").into_inner();
        Self { tx, acks }
    }

    async fn next_ack(&mut self) -> Result<AuditAck, tonic::Status> {
        let next = tokio::time::timeout(WAIT, self.acks.message()).await.expect("an answer in time");
        next.and_then(|ack| ack.ok_or_else(|| tonic::Status::aborted("the stream ended")))
    }

    async fn send(&mut self, seq: u64, records: Vec<AuditRecord>) -> AuditAck {
        self.tx.send(AuditBatch { seq, records }).await.expect("send the batch");
        self.next_ack().await.expect("the batch is acknowledged")
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows per partition.
async fn rows_by_partition(app: &TestApp) -> Vec<(String, i64)> {
    let mut conn = app.pool.get().await.expect("connection");
    let rows: Vec<Count> = diesel::sql_query(
        "SELECT tableoid::regclass::text AS name, count(*) AS n FROM audit_log GROUP BY 1 ORDER BY 1",
    )
    .load(&mut conn)
    .await
    .expect("count rows");
    rows.into_iter().map(|c| (c.name, c.n)).collect()
}

/// The days of the existing partitions.
async fn partitions(app: &TestApp) -> BTreeSet<NaiveDate> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let mut conn = app.pool.get().await.expect("connection");
    let names: Vec<Name> = diesel::sql_query(
        "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_log'::regclass",
    )
    .load(&mut conn)
    .await
    .expect("list partitions");
    names
        .iter()
        .map(|n| {
            NaiveDate::parse_from_str(&n.name["audit_log_".len()..], "%Y%m%d").expect("a daily partition")
        })
        .collect()
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

#[actix_web::test]
async fn batches_become_rows_once_and_a_resent_batch_is_acknowledged_with_nothing_written() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut stream = AuditStream::open(&grpc).await;
    let now = Utc::now();
    let full = record(Uuid::now_v7(), now);
    let mut sparse = record(Uuid::now_v7(), now);
    for field in [&mut sparse.principal, &mut sparse.tenant_id, &mut sparse.server, &mut sparse.target] {
        field.clear();
    }
    (sparse.status, sparse.rpc_error_code, sparse.proxy_id) = (0, Some(-32602), String::new());
    sparse.outcome = "unauthenticated".into();
    let expired = record(Uuid::now_v7(), now - Duration::days(31));
    let batch = vec![full.clone(), sparse.clone(), expired];

    assert_eq!(stream.send(1, batch.clone()).await, AuditAck { seq: 1, written: 2 });
    assert_eq!(stream.send(2, batch.clone()).await, AuditAck { seq: 2, written: 0 }, "written once");
    // A batch holding a stored record and a new one: the new one is written, the stored one left as it is.
    let mut changed = full.clone();
    changed.outcome = "error".into();
    let new = record(Uuid::now_v7(), now);
    assert_eq!(stream.send(3, vec![changed, new.clone()]).await, AuditAck { seq: 3, written: 1 });
    drop(stream);
    // After a reconnect, as the proxy resends its unacknowledged batches.
    let mut again = AuditStream::open(&grpc).await;
    assert_eq!(again.send(1, batch).await, AuditAck { seq: 1, written: 0 });

    let mut conn = app.pool.get().await.expect("connection");
    let rows = store::query(&mut conn, &store::AuditFilter::default(), None, 10).await.expect("query");
    assert_eq!(rows.len(), 3, "the expired record is not written");
    let stored = |id: &[u8]| rows.iter().find(|r| r.id.as_bytes() == id).expect("stored");
    assert_eq!(stored(&new.id).outcome, "ok");
    let f = stored(&full.id);
    assert_eq!(f.outcome, "ok", "the record as it was first written");
    assert_eq!(micros(f.time), full.time_unix_us);
    assert_eq!((f.kind.as_str(), f.tenant_id.as_str(), f.principal.as_str()), ("mcp", "acme", "key:k1"));
    assert_eq!((f.server.as_deref(), f.target.as_deref(), f.status), (Some("docs"), Some("echo"), Some(200)));
    assert_eq!((f.duration_us, f.bytes_in, f.bytes_out), (Some(1500), Some(120), Some(340)));
    assert_eq!((f.proxy_id.as_deref(), f.arguments.as_deref()), (Some("proxy-a"), None));
    let s = stored(&sparse.id);
    assert_eq!((s.tenant_id.as_str(), s.principal.as_str()), ("", ""), "principal and tenant stay ''");
    assert_eq!((s.server.as_deref(), s.target.as_deref(), s.status), (None, None, None));
    assert_eq!(s.rpc_error_code, Some(-32602));
    assert!(
        s.proxy_id.as_deref().is_some_and(|p| p.starts_with("127.0.0.1:")),
        "a record without proxy_id is attributed to the peer: {:?}",
        s.proxy_id
    );

    let metrics = app.call(TestRequest::get().uri("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().expect("the text format").to_owned();
    for series in [
        "mcpgw_cp_audit_records_total{result=\"written\"}",
        "mcpgw_cp_audit_records_total{result=\"duplicate\"}",
        "mcpgw_cp_audit_records_total{result=\"expired\"}",
        "mcpgw_cp_audit_batches_total{result=\"ok\"}",
        "mcpgw_cp_audit_batches_total{result=\"error\"}",
    ] {
        let value = text.lines().find_map(|l| l.strip_prefix(series)).map(str::trim);
        let value: u64 = value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{series} in {text}"));
        if !series.contains("error") {
            assert!(value >= 1, "{series} counted");
        }
    }
}

#[actix_web::test]
async fn a_record_without_a_valid_id_ends_the_stream_and_writes_nothing() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut stream = AuditStream::open(&grpc).await;
    let mut bad = record(Uuid::now_v7(), Utc::now());
    bad.id.truncate(3);
    let good = record(Uuid::now_v7(), Utc::now());
    stream.tx.send(AuditBatch { seq: 1, records: vec![good, bad] }).await.expect("send");
    let status = stream.next_ack().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("record 1"), "{}", status.message());
    assert!(rows_by_partition(&app).await.is_empty());
}

#[actix_web::test]
async fn a_database_error_ends_the_stream_with_unavailable_and_the_batch_is_written_when_sent_again() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut conn = app.pool.get().await.expect("connection");
    let rename = async |conn: &mut diesel_async::AsyncPgConnection, from: &str, to: &str| {
        let sql = format!("ALTER TABLE {from} RENAME TO {to}");
        diesel::sql_query(sql).execute(conn).await.expect("rename");
    };
    let batch = vec![record(Uuid::now_v7(), Utc::now()), record(Uuid::now_v7(), Utc::now())];
    let mut stream = AuditStream::open(&grpc).await;
    assert_eq!(stream.send(1, batch[..1].to_vec()).await.written, 1);
    rename(&mut conn, "audit_log", "audit_log_away").await;
    stream.tx.send(AuditBatch { seq: 2, records: batch.clone() }).await.expect("send");
    let status = stream.next_ack().await.expect_err("the write fails");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(!status.message().contains("audit_log"), "no database detail: {}", status.message());

    rename(&mut conn, "audit_log_away", "audit_log").await;
    let mut again = AuditStream::open(&grpc).await;
    assert_eq!(again.send(2, batch).await, AuditAck { seq: 2, written: 1 }, "only the new record");
}

#[actix_web::test]
async fn a_batch_over_two_days_gets_both_partitions() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let (first, second) = (today() - Duration::days(5), today() - Duration::days(4));
    assert!(!partitions(&app).await.contains(&first), "not made before its first record");
    let late = record(Uuid::now_v7(), midnight(second) - Duration::microseconds(1));
    let early = record(Uuid::now_v7(), midnight(second));
    let mut stream = AuditStream::open(&grpc).await;
    assert_eq!(stream.send(1, vec![late, early]).await.written, 2);
    let name = |day: NaiveDate| store::partition_name(day);
    assert_eq!(rows_by_partition(&app).await, vec![(name(first), 1), (name(second), 1)]);
}

#[actix_web::test]
async fn retention_drops_whole_expired_partitions_and_writes_survive_a_drop_elsewhere() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    let day = |n: i64| today() - Duration::days(n);
    let old: BTreeSet<NaiveDate> = [day(40), day(31), day(30), day(3)].into();
    store::ensure_partitions(&mut conn, &old).await.expect("make old partitions");

    let audit = AuditLog::new(std::time::Duration::from_secs(30 * 86_400));
    let done = audit.maintain(&mut conn).await.expect("maintenance");
    assert_eq!(done.dropped, vec![day(40), day(31)], "whole days older than 30 days");
    assert_eq!(done.created, vec![day(1), day(0), day(-1), day(-2)], "yesterday to the day after tomorrow");
    let expected: BTreeSet<NaiveDate> = [day(30), day(3), day(1), day(0), day(-1), day(-2)].into();
    assert_eq!(partitions(&app).await, expected, "day 30 is partly within the retention: kept");
    assert_eq!(audit.maintain(&mut conn).await.expect("again"), store::Maintenance::default());

    // Another replica dropped a partition this process knew: the write makes it again.
    let at = midnight(day(3)) + Duration::hours(1);
    assert_eq!(
        audit.write_mcp(&mut conn, None, &[record(Uuid::now_v7(), at)]).await.expect("write").written,
        1
    );
    diesel::sql_query(format!("DROP TABLE {}", store::partition_name(day(3))))
        .execute(&mut conn)
        .await
        .expect("drop the partition");
    let written = audit.write_mcp(&mut conn, None, &[record(Uuid::now_v7(), at)]).await.expect("write");
    assert_eq!(written.written, 1);
}

#[actix_web::test]
async fn admin_records_are_written_with_their_partition() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    let time = midnight(today() - Duration::days(6)) + Duration::minutes(3);
    let change = AdminRecord {
        time,
        id: Uuid::now_v7(),
        tenant_id: "acme".into(),
        principal: "admin-token".into(),
        method: "POST /api/v1/servers".into(),
        target: Some("server:3f1c".into()),
        request_id: Some("req-1".into()),
        outcome: "ok".into(),
        status: Some(201),
        client_addr: Some("10.1.2.3".into()),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        before: None,
        after: Some(json!({"name": "docs"})),
    };
    store::insert_admin(&mut conn, &change).await.expect("insert");
    store::insert_admin(&mut conn, &change).await.expect("a second insert changes nothing");
    let reply = app.call(get("/api/v1/audit?kind=admin")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let items = reply.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], change.id.to_string());
    assert_eq!(items[0]["after"], json!({"name": "docs"}));
    assert_eq!(items[0]["before"], Value::Null);
    assert_eq!(items[0]["method"], "POST /api/v1/servers");
    assert_eq!(items[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        app.call(get("/api/v1/audit?kind=mcp")).await.body["items"].as_array().is_some_and(Vec::is_empty)
    );
}

/// A stored record as the model knows it.
#[derive(Debug, Clone)]
struct Model {
    time: DateTime<Utc>,
    id: Uuid,
    kind: &'static str,
    tenant: String,
    principal: String,
    server: String,
    target: String,
    method: String,
    outcome: String,
}

const TENANTS: &[&str] = &["acme", "globex", "default", ""];
const PRINCIPALS: &[&str] = &["key:k1", "key:k2", "jwt:https://idp.example#alice", "anonymous", ""];
const SERVERS: &[&str] = &["docs", "search", ""];
const TOOLS: &[&str] = &["echo", "search_web", "file:///a,b \"c\"", ""];
const METHODS: &[&str] = &["tools/call", "tools/list", "initialize", "GET"];
const OUTCOMES: &[&str] = &["ok", "error", "http_502", "forbidden", "rate_limited"];

/// A few hundred records over three days (many sharing a time, so ids decide the order), sent through the
/// stream, and a few admin changes.
async fn populate(app: &TestApp, rng: &mut Rng) -> Vec<Model> {
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut stream = AuditStream::open(&grpc).await;
    let start = Utc::now() - Duration::days(2);
    let times: Vec<DateTime<Utc>> =
        (0..90).map(|_| start + Duration::microseconds((rng.next() % 172_800_000_000) as i64)).collect();
    let mut models = Vec::new();
    let mut batch = Vec::new();
    for n in 0..360 {
        let m = Model {
            time: times[rng.below(times.len())],
            id: Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next())),
            kind: "mcp",
            tenant: rng.pick(TENANTS).into(),
            principal: rng.pick(PRINCIPALS).into(),
            server: rng.pick(SERVERS).into(),
            target: rng.pick(TOOLS).into(),
            method: rng.pick(METHODS).into(),
            outcome: rng.pick(OUTCOMES).into(),
        };
        let mut r = record(m.id, m.time);
        (r.tenant_id, r.principal, r.server) = (m.tenant.clone(), m.principal.clone(), m.server.clone());
        (r.target, r.method, r.outcome) = (m.target.clone(), m.method.clone(), m.outcome.clone());
        r.arguments = if n % 7 == 0 { "{\"q\": \"a,b\\nc\"}".into() } else { String::new() };
        batch.push(r);
        models.push(m);
        if batch.len() == 100 {
            let seq = (n / 100) as u64 + 1;
            assert_eq!(stream.send(seq, std::mem::take(&mut batch)).await.written, 100);
        }
    }
    assert_eq!(stream.send(4, batch).await.written, 60);
    let mut conn = app.pool.get().await.expect("connection");
    for n in 0..24 {
        let m = Model {
            time: times[rng.below(times.len())],
            id: Uuid::now_v7(),
            kind: "admin",
            tenant: rng.pick(TENANTS).into(),
            principal: "admin-token".into(),
            server: String::new(),
            target: format!("server:{n}"),
            method: rng.pick(&["POST /api/v1/servers", "DELETE /api/v1/servers/{id}"]).into(),
            outcome: rng.pick(&["ok", "insufficient_permissions"]).into(),
        };
        let change = AdminRecord {
            time: m.time,
            id: m.id,
            tenant_id: m.tenant.clone(),
            principal: m.principal.clone(),
            method: m.method.clone(),
            target: Some(m.target.clone()),
            request_id: None,
            outcome: m.outcome.clone(),
            status: Some(200),
            client_addr: None,
            trace_id: None,
            before: (n % 2 == 0).then(|| json!({"name": "before, \"quoted\""})),
            after: Some(json!({"name": format!("after-{n}")})),
        };
        store::insert_admin(&mut conn, &change).await.expect("admin record");
        models.push(m);
    }
    models
}

/// Query parameters, percent-encoded.
fn query(params: &[(&str, String)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Every page of `/api/v1/audit?<params>` with `token`, checking the page sizes; the ids in order.
async fn walk(app: &TestApp, token: &str, params: &[(&str, String)], limit: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        assert!(page < 1000, "the pages end");
        let mut p = params.to_vec();
        p.push(("limit", limit.to_string()));
        if let Some(c) = &cursor {
            p.push(("cursor", c.clone()));
        }
        let reply =
            app.call(bearer(TestRequest::get().uri(&format!("/api/v1/audit?{}", query(&p))), token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{params:?}: {}", reply.body);
        let items = reply.body["items"].as_array().expect("items");
        assert!(items.len() <= limit);
        ids.extend(items.iter().map(|i| i["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()).expect("id")));
        match reply.body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "only the last page is short");
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    ids
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[actix_web::test]
async fn the_query_api_agrees_with_a_model_on_random_filters() {
    let app = TestApp::start().await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let models = populate(&app, &mut rng).await;
    let times: Vec<DateTime<Utc>> = models.iter().map(|m| m.time).collect();

    for round in 0..50 {
        let mut params: Vec<(&str, String)> = Vec::new();
        type Field = fn(&Model) -> &str;
        let fields: [(&str, &[&str], Field); 7] = [
            ("tenant_id", TENANTS, |m| &m.tenant),
            ("principal", PRINCIPALS, |m| &m.principal),
            ("server", SERVERS, |m| &m.server),
            ("tool", TOOLS, |m| &m.target),
            ("method", METHODS, |m| &m.method),
            ("outcome", OUTCOMES, |m| &m.outcome),
            ("kind", &["mcp", "admin"], |m| m.kind),
        ];
        let mut checks: Vec<(Field, String)> = Vec::new();
        for (name, values, field) in fields {
            if rng.chance(25) {
                let value = if rng.chance(10) { "nobody".to_owned() } else { rng.pick(values).to_owned() };
                if name == "kind" && value == "nobody" {
                    continue;
                }
                params.push((name, value.clone()));
                checks.push((field, value));
            }
        }
        // Bounds often fall on a record's time, where inclusive and exclusive differ.
        let since = rng.chance(30).then(|| times[rng.below(times.len())]);
        let until = rng.chance(30).then(|| times[rng.below(times.len())]);
        if let Some(since) = since {
            params.push(("since", rfc3339(since)));
        }
        if let Some(until) = until {
            params.push(("until", rfc3339(until)));
        }
        let mut expected: Vec<&Model> = models
            .iter()
            .filter(|m| checks.iter().all(|(field, value)| field(m) == value))
            .filter(|m| since.is_none_or(|s| m.time >= s) && until.is_none_or(|u| m.time < u))
            .collect();
        expected.sort_by_key(|m| std::cmp::Reverse((m.time, m.id)));
        let expected: Vec<Uuid> = expected.iter().map(|m| m.id).collect();
        let limit = 1 + rng.below(if round % 5 == 0 { 400 } else { 40 });
        let got = walk(&app, crate::support::TOKEN, &params, limit).await;
        assert_eq!(got, expected, "round {round}: {params:?} limit {limit}");
    }
}

#[actix_web::test]
async fn a_tenant_administrator_reads_its_own_tenant_only() {
    let app = TestApp::start().await;
    let mut rng = Rng(42);
    let models = populate(&app, &mut rng).await;
    let created = create_key(&app, json!({"name": "acme admin", "role": "admin", "tenant_id": "acme"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let acme = created.body["key"].as_str().expect("key").to_owned();
    // Creating the keys wrote admin records of their own: the model's are compared, every one is checked.
    let mut own: Vec<&Model> = models.iter().filter(|m| m.tenant == "acme").collect();
    own.sort_by_key(|m| std::cmp::Reverse((m.time, m.id)));
    let own: Vec<Uuid> = own.iter().map(|m| m.id).collect();
    assert!(!own.is_empty());
    let known = |ids: Vec<Uuid>| -> Vec<Uuid> {
        ids.into_iter().filter(|id| models.iter().any(|m| m.id == *id)).collect()
    };

    assert_eq!(known(walk(&app, &acme, &[], 50).await), own, "its own tenant's records, without asking");
    assert_eq!(known(walk(&app, &acme, &[("tenant_id", "acme".into())], 1000).await), own);
    let all = app.call(bearer(TestRequest::get().uri("/api/v1/audit?limit=1000"), &acme)).await;
    let tenants: BTreeSet<&str> =
        all.body["items"].as_array().expect("items").iter().filter_map(|i| i["tenant_id"].as_str()).collect();
    assert_eq!(tenants, BTreeSet::from(["acme"]));
    let refused = app.call(bearer(TestRequest::get().uri("/api/v1/audit?tenant_id=globex"), &acme)).await;
    assert_eq!((refused.status, refused.code()), (StatusCode::FORBIDDEN, "insufficient_permissions"));
    let csv =
        app.call(bearer(TestRequest::get().uri("/api/v1/audit?tenant_id=globex&format=csv"), &acme)).await;
    assert_eq!(csv.status, StatusCode::FORBIDDEN);

    let globex = known(walk(&app, crate::support::TOKEN, &[("tenant_id", "globex".into())], 1000).await);
    assert!(!globex.is_empty() && globex.iter().all(|id| !own.contains(id)));
    let user = create_key(&app, json!({"name": "user", "role": "user", "tenant_id": "acme"})).await;
    let user = user.body["key"].as_str().expect("key").to_owned();
    let refused = app.call(bearer(TestRequest::get().uri("/api/v1/audit"), &user)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

/// RFC 4180: quoted fields may hold commas, doubled quotes and line breaks; records end with CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "CRLF line ends");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(row.is_empty() && field.is_empty(), "the document ends with a line end");
    rows
}

/// A JSON field as its CSV text.
fn as_csv(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[actix_web::test]
async fn csv_parses_back_to_the_rows_of_the_json_pages() {
    let app = TestApp::start().await;
    let models = populate(&app, &mut Rng(7)).await;
    let reply = app.call(get("/api/v1/audit?limit=1000")).await;
    let items = reply.body["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), models.len());

    let csv = app.call(get("/api/v1/audit?format=csv")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers.get("content-type").is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("text/csv")))
    );
    let text = csv.body.as_str().expect("CSV text");
    let rows = parse_csv(text);
    let header = rows[0].clone();
    assert_eq!(header.len(), 24);
    assert_eq!(rows.len() - 1, items.len(), "every row");
    for (row, item) in rows[1..].iter().zip(&items) {
        for (name, cell) in header.iter().zip(row) {
            let value = &item[name.as_str()];
            if matches!(name.as_str(), "before" | "after") && !cell.is_empty() {
                assert_eq!(&serde_json::from_str::<Value>(cell).expect("JSON text"), value);
            } else {
                assert_eq!(cell, &as_csv(value), "{name} of {}", item["id"]);
            }
        }
    }

    let accept = app.call(get("/api/v1/audit").insert_header(("Accept", "text/csv"))).await;
    assert_eq!(accept.body.as_str(), Some(text), "Accept: text/csv is the same document");
    let filtered = app.call(get("/api/v1/audit?format=csv&kind=admin&limit=5")).await;
    let filtered = parse_csv(filtered.body.as_str().expect("CSV"));
    assert_eq!(filtered.len(), 1 + 5, "the header and at most `limit` rows");
    assert!(filtered[1..].iter().all(|r| r[2] == "admin"));
    let cursor = reply.body["items"][9]["id"].as_str().expect("id");
    let page = app.call(get("/api/v1/audit?limit=10")).await;
    let after = page.body["next_cursor"].as_str().expect("a next page");
    let rest = app.call(get(&format!("/api/v1/audit?format=csv&cursor={after}"))).await;
    let rest = parse_csv(rest.body.as_str().expect("CSV"));
    assert_eq!(rest.len() - 1, items.len() - 10, "a cursor starts the document after it");
    assert_ne!(rest[1][1], cursor);
    assert_eq!(rest[1][1], items[10]["id"].as_str().expect("id"));
}

#[actix_web::test]
async fn csv_streams_every_row_across_chunks() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    let start = Utc::now() - Duration::hours(2);
    // 2,345 records over 3 chunks of 1,000, pairs sharing a time.
    let mut expected: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
    for chunk in (0..2345).collect::<Vec<i64>>().chunks(1000) {
        let records: Vec<AuditRecord> = chunk
            .iter()
            .map(|n| {
                let (time, id) = (start + Duration::milliseconds(n / 2), Uuid::now_v7());
                expected.push((time, id));
                record(id, time)
            })
            .collect();
        app.hub.audit().write_mcp(&mut conn, None, &records).await.expect("write");
    }
    expected.sort_by_key(|e| std::cmp::Reverse(*e));
    let ids = |reply: &crate::support::Reply| -> Vec<Uuid> {
        let rows = parse_csv(reply.body.as_str().expect("CSV"));
        assert_eq!(rows[0][1], "id", "the header first");
        rows[1..].iter().map(|r| r[1].parse().expect("an id")).collect()
    };
    let all: Vec<Uuid> = expected.iter().map(|e| e.1).collect();
    assert_eq!(ids(&app.call(get("/api/v1/audit?format=csv")).await), all);
    assert_eq!(ids(&app.call(get("/api/v1/audit?format=csv&limit=1500")).await), all[..1500]);
    let page = app.call(get("/api/v1/audit?limit=999")).await;
    let cursor = page.body["next_cursor"].as_str().expect("a next page");
    assert_eq!(ids(&app.call(get(&format!("/api/v1/audit?format=csv&cursor={cursor}"))).await), all[999..]);
}

#[actix_web::test]
async fn bad_queries_are_refused_with_invalid_query() {
    let app = TestApp::start().await;
    for bad in [
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "kind=other",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "cursor=not-a-cursor",
        "cursor=AAAA",
        "format=xml",
        "colour=blue",
        "server=a%00b",
    ] {
        let reply = app.call(get(&format!("/api/v1/audit?{bad}"))).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_query"), "{bad}");
    }
    let empty = app.call(get("/api/v1/audit")).await;
    assert_eq!(empty.body, json!({"items": [], "next_cursor": null}));
    let unauthenticated = app.call(TestRequest::get().uri("/api/v1/audit")).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
}

/// A tenant's page, newest first after a cursor, as the query API reads it: from the tenant index alone,
/// the cursor an index condition, no sort of the tenant's rows.
#[actix_web::test]
async fn a_tenants_page_newest_first_is_read_from_its_index_without_a_sort() {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        #[diesel(column_name = "QUERY PLAN")]
        line: String,
    }
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    app.hub.audit().maintain(&mut conn).await.expect("partitions");
    // Plans as for a log too large to read whole: only what an index can serve is left to choose.
    for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
        diesel::sql_query(format!("SET {setting} = off")).execute(&mut conn).await.expect("set");
    }
    let plan: Vec<Line> = diesel::sql_query(
        "EXPLAIN SELECT * FROM audit_log WHERE tenant_id = 'acme' \
         AND (time, id) < (now(), '00000000-0000-0000-0000-000000000000'::uuid) \
         ORDER BY time DESC, id DESC LIMIT 50",
    )
    .load(&mut conn)
    .await
    .expect("explain");
    let plan = plan.iter().map(|l| l.line.as_str()).collect::<Vec<_>>().join("\n");
    assert!(!plan.contains("Sort"), "{plan}");
    assert!(!plan.contains("Seq Scan") && !plan.contains("Bitmap"), "{plan}");
    assert!(plan.contains("Index Scan") && plan.contains("tenant_id"), "{plan}");
    assert!(plan.contains("ROW(\"time\", id) <"), "the cursor is an index condition: {plan}");
}

/// Records per second through `StreamAudit`: 100 batches of 1,000, sent as a proxy does (up to 16 waiting
/// for their acknowledgement), of random tenants, principals and servers at random times within the last
/// hour. The floor only catches a collapse; BENCHMARKS.md has the figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_throughput() {
    let mut rng = Rng(1);
    let start = Utc::now() - Duration::hours(1);
    ingest("records of random callers at random times", |_| {
        let time = start + Duration::microseconds((rng.next() % 3_600_000_000) as i64);
        let mut r = record(Uuid::now_v7(), time);
        r.tenant_id = rng.pick(TENANTS).into();
        r.principal = rng.pick(PRINCIPALS).into();
        r.server = rng.pick(SERVERS).into();
        r
    })
    .await;
}

/// The same as a deployment of one tenant sends them: one caller and one server, each record newer than
/// the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_throughput_in_time_order() {
    let start = Utc::now() - Duration::minutes(10);
    ingest("records of one caller in time order", |n| {
        record(Uuid::now_v7(), start + Duration::microseconds(n as i64))
    })
    .await;
}

async fn ingest(shape: &str, mut make: impl FnMut(u64) -> AuditRecord) {
    const BATCHES: u64 = 100;
    const PER_BATCH: u64 = 1000;
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let batches: Vec<AuditBatch> = (1..=BATCHES)
        .map(|seq| AuditBatch { seq, records: (0..PER_BATCH).map(|n| make(seq * PER_BATCH + n)).collect() })
        .collect();
    // Partitions in place, as the leader keeps them.
    let mut conn = app.pool.get().await.expect("connection");
    app.hub.audit().maintain(&mut conn).await.expect("partitions");
    drop(conn);

    let (tx, rx) = mpsc::channel(16);
    let mut client = grpc.client().await;
    let began = Instant::now();
    let mut acks = client.stream_audit(ReceiverStream::new(rx)).await.expect("the stream opens").into_inner();
    let sender = tokio::spawn(async move {
        for batch in batches {
            tx.send(batch).await.expect("send");
        }
        tx
    });
    let mut written = 0u64;
    for seq in 1..=BATCHES {
        let ack = acks.message().await.expect("healthy").expect("an acknowledgement");
        assert_eq!(ack.seq, seq, "in order");
        written += u64::from(ack.written);
    }
    let elapsed = began.elapsed();
    drop(sender.await);
    assert_eq!(written, BATCHES * PER_BATCH);
    let rate = written as f64 / elapsed.as_secs_f64();
    println!("audit ingest, {shape}: {written} records in {elapsed:.2?}: {rate:.0} records/s");
    assert!(rate >= 5_000.0, "{rate:.0} records/s");
}

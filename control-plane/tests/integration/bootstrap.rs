//! Database bootstrap: create-if-missing (also racing another creator), quoting, idempotent migrations.

use mcpgw_control_plane::db;

use crate::support::TestDb;

#[actix_web::test]
async fn prepare_is_idempotent() {
    let db = TestDb::unique();
    let first = db::prepare(&db.url).await.expect("first prepare");
    assert!(!first.is_empty(), "a new database gets every migration");
    let second = db::prepare(&db.url).await.expect("second prepare");
    assert!(second.is_empty(), "nothing left to apply: {second:?}");
}

#[actix_web::test]
async fn concurrent_creators_both_succeed() {
    let db = TestDb::unique();
    let (a, b) = futures_util::future::join(
        db::create_database_if_missing(&db.url),
        db::create_database_if_missing(&db.url),
    )
    .await;
    let created = [a.expect("first creator"), b.expect("second creator")];
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "exactly one created it: {created:?}");
}

#[actix_web::test]
async fn names_that_need_quoting() {
    let plain = TestDb::unique();
    let name = format!("{}_Q\"x-y", plain.url.name());
    let db = TestDb { url: plain.url.with_name(&name).expect("valid name") };
    assert_eq!(db.url.name(), name);
    db::prepare(&db.url).await.expect("create and migrate a database whose name needs quoting");
    assert!(!db::create_database_if_missing(&db.url).await.expect("exists"));
}

#[actix_web::test]
async fn concurrent_migrators_both_succeed() {
    let db = TestDb::unique();
    db::create_database_if_missing(&db.url).await.expect("create");
    let (a, b) = futures_util::future::join(db::run_migrations(&db.url), db::run_migrations(&db.url)).await;
    let (a, b) = (a.expect("first migrator"), b.expect("second migrator"));
    let embedded = db::bootstrap::embedded_versions().expect("embedded");
    assert_eq!(a.len() + b.len(), embedded.len(), "each migration is applied once: {a:?} {b:?}");
}

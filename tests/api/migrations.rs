use crate::helpers::*;

/// Columns, constraints and indexes of the public schema, as text to compare.
async fn schema(db: &TestDb) -> String {
    let pool = db.pool().await;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT format('%s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default) \
           FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' \
         UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations' \
         UNION ALL SELECT format('%s %s', conname, pg_get_constraintdef(oid)) FROM pg_constraint \
           WHERE connamespace = 'public'::regnamespace AND conrelid <> '_sqlx_migrations'::regclass \
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("schema query");
    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn migrations_up_down_up_leave_the_same_schema() {
    let db = TestDb::create(&admin_url()).await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let (code, out, err) = run_cli(&["migrate", "status"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 applied") && out.contains("pending"), "{out}");

    let (code, _, err) = run_cli(&["migrate", "up"], &env).await;
    assert_eq!(code, 0, "{err}");
    let first = schema(&db).await;
    assert!(first.contains("jobs.id uuid"), "{first}");
    let (_, out, _) = run_cli(&["migrate", "status"], &env).await;
    assert!(out.contains("0 pending"), "{out}");

    let (code, out, err) = run_cli(&["migrate", "down", "--all"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reverted"), "{out}");
    assert_eq!(schema(&db).await, "", "every migration has a down that removes what it made");

    let (code, _, err) = run_cli(&["migrate", "up"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(schema(&db).await, first);
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let db = TestDb::create(&admin_url()).await;
    let (a, b, c) = tokio::join!(Spawn::serve(&db).start(), Spawn::serve(&db).start(), Spawn::serve(&db).start());
    for app in [&a, &b, &c] {
        assert_eq!(app.get("/health/ready").await.status(), 200);
    }
    let pool = db.pool().await;
    let (rows, versions): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, versions, "each migration recorded exactly once");
}

#[tokio::test]
async fn without_auto_migrate_an_unmigrated_database_is_not_ready() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("DATABASE_AUTO_MIGRATE", "false").env("HEALTH_CACHE_MS", "0").start().await;
    let resp = app.get("/health/ready").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["notes"].to_string().contains("migrations pending"), "{body}");
    let (code, _, err) = run_cli(&["migrate", "up"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

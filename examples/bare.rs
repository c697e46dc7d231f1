//! The bare axum baseline of `bench/run.sh` (DESIGN §11): the same crates as ballast (axum,
//! tokio, sqlx) with none of its stack — no middleware, no auth, no metrics, no logs. What
//! ballast costs on top of this is what the benchmark reports as a ratio.
//!
//! Routes:
//! - `GET /json` → `{"status":"pass"}`, the body of ballast's `/health/live`;
//! - `GET /db`   → one row from Postgres through a pool (`SELECT 1` plus a bound parameter,
//!   so it is a prepared statement like ballast's queries), as JSON.
//!
//! ```text
//! cargo run --release --example bare -- [ADDR]        # default 127.0.0.1:3000 (or BARE_ADDR)
//! DATABASE_URL=postgres://... enables /db (else it answers 503)
//! BARE_DB_MAX_CONNECTIONS=10                           # pool size, like DATABASE_MAX_CONNECTIONS
//! ```
//! It prints `listening on ADDR` once bound (port 0 picks a free port).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

// The allocator of the `ballast` binary: the ratios compare the stacks, not two allocators.
ballast::use_mimalloc!();

#[derive(Clone)]
struct Bare {
    db: Option<PgPool>,
}

async fn json_route() -> Response {
    (StatusCode::OK, Json(json!({ "status": "pass" }))).into_response()
}

async fn db_route(State(bare): State<Bare>) -> Response {
    let Some(db) = &bare.db else {
        return (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_URL not set").into_response();
    };
    match sqlx::query_scalar::<_, i32>("SELECT $1::int4").bind(1).fetch_one(db).await {
        Ok(one) => (StatusCode::OK, Json(json!({ "one": one }))).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database error: {e}")).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BARE_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .map_err(|e| anyhow::anyhow!("the address must be IP:PORT: {e}"))?;
    let max: u32 = std::env::var("BARE_DB_MAX_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let db = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(PgPoolOptions::new().max_connections(max).connect(&url).await?),
        _ => None,
    };
    let app = Router::new().route("/json", get(json_route)).route("/db", get(db_route)).with_state(Bare { db });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    // ballast sets TCP_NODELAY on accepted sockets; so does the baseline, to compare like with like.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

//! What a PostgreSQL cluster is running, asked on a connection of its own (`pg_stat_activity`).

use std::time::{Duration, Instant};

use ctx_core::db::postgres::tokio_postgres::{self, NoTls};

use super::cluster::Cluster;

/// Whether a query with exactly this text is running on the server, asked on a connection
/// of its own.
pub async fn is_running(monitor: &tokio_postgres::Client, query: &str) -> bool {
    let row = monitor
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
            &[&query],
        )
        .await
        .expect("pg_stat_activity");
    row.get::<_, i64>(0) > 0
}

pub async fn monitor(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, connection) = cluster
        .config()
        .connect(NoTls)
        .await
        .expect("a monitor connection");
    tokio::spawn(connection);
    client
}

/// Polls until `query` is no longer active on the server; how long after `since` that was.
pub async fn gone_after(monitor: &tokio_postgres::Client, query: &str, since: Instant) -> Duration {
    let give_up = Instant::now() + Duration::from_secs(15);
    while is_running(monitor, query).await {
        assert!(Instant::now() < give_up, "{query} still running 15 s later");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Instant::now().saturating_duration_since(since)
}

/// Waits until `query` is active on the server (so a test cancels a query that runs).
pub async fn wait_running(monitor: &tokio_postgres::Client, query: &str) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !is_running(monitor, query).await {
        assert!(Instant::now() < give_up, "{query} never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends `requests` queries, `concurrency` at a time, each under a budget of 60–120 ms that
/// ends mid-query (`query` runs one that takes seconds), and asserts each timed out.
/// Returns the sessions the server started meanwhile: each one a reconnect.
pub async fn reconnects_for_timeouts<F, Fut, T>(
    cluster: &Cluster,
    concurrency: usize,
    requests: usize,
    query: F,
) -> usize
where
    F: Fn(ctx_core::Context) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ctx_core::db::Error>> + Send,
    T: std::fmt::Debug,
{
    let sessions_before = cluster.sessions_started();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let query = query.clone();
            tokio::spawn(async move {
                for _ in 0..requests / concurrency {
                    let budget = Duration::from_millis(60 + fastrand::u64(0..60));
                    let scope = ctx_core::Context::background().with_timeout(budget);
                    match query(scope.context().clone()).await {
                        Err(ctx_core::db::Error::Context(ctx_core::Error::DeadlineExceeded)) => {}
                        other => panic!("expected a timeout, got {other:?}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    // The server logs each session as it starts: give the log a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.sessions_started() - sessions_before
}

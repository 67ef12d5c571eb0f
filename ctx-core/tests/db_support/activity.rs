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

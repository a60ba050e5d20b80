//! The accept loop: hyper with the limits `axum::serve` does not offer. Every connection
//! must send a request head within a deadline (also between keep-alive requests), so
//! idle or slow-loris connections cannot hold descriptors forever; the number of open
//! connections is capped (past it, new ones wait in the kernel's backlog); and shutdown
//! lets requests in flight finish for a grace period, then ends what is left (open SSE
//! feeds included).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits on connections themselves.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's head, from the moment the server waits for
    /// it (a new connection, or the next request on a kept-alive one).
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Time requests in flight get to finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(30), max_connections: 1024, shutdown_grace: Duration::from_secs(10) }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>) {
    // HTTP/1 only: detecting HTTP/2 would read a connection's first bytes before any
    // timeout applies, so a silent connection could wait forever. Clients speak HTTP/1
    // to a plain-HTTP server (HTTP/2 comes with TLS, which a proxy in front terminates).
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the grace period; closing them");
    }
}

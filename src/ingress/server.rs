//! The HTTP/1 accept loop. `axum::serve` would do, except that it sets no timer, so hyper never
//! times out a request head: a client that sends its headers slowly (or never) would hold its
//! connection for ever. Here the head must arrive within a deadline, idle keep-alive connections
//! are closed after the same time, and shutdown drains in-flight requests like `axum::serve`'s
//! graceful shutdown.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting and waits for
/// every open connection to finish its in-flight request.
pub async fn serve(listener: TcpListener, router: Router, header_timeout: Duration, stop: CancellationToken) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connections = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Answers are small and written once; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Timeouts and resets end connections; nothing to report.
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.shutdown().await;
}

//! The HTTP/1 accept loop. `axum::serve` would do, except that it sets no timer, so hyper never
//! times out a request head: a client that sends its headers slowly (or never) would hold its
//! connection for ever. Here the head must arrive within a deadline, idle keep-alive connections
//! are closed after the same time, and shutdown drains in-flight requests like `axum::serve`'s
//! graceful shutdown.
//!
//! No connection can be pinned either: an answer that makes no write progress for the deadline
//! (a client that pipelines requests and never reads) ends its connection; hyper buffers at most
//! [`MAX_BUF_SIZE`] of a connection's input; at most `max_connections` are open at once (the
//! rest wait in the kernel's accept queue); and shutdown waits for open connections only for
//! the grace period, then closes them.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// hyper's read buffer per connection (its default is about 400 KiB). Request heads must fit:
/// WeCom's are well under 1 KiB; bodies are streamed and limited by `http.max_body_bytes`.
pub const MAX_BUF_SIZE: usize = 16 * 1024;

/// What bounds each connection and the listener as a whole.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request head must be in within this; also the idle keep-alive limit, and how long
    /// an answer may make no write progress.
    pub deadline: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for open connections before closing them.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting, waits up to
/// `limits.shutdown_grace` for open connections to finish their in-flight requests, and closes
/// whatever is left.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.deadline).max_buf_size(MAX_BUF_SIZE);
    let connections = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tasks = TaskTracker::new();
    let force_close = CancellationToken::new();
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
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
        let io = TokioIo::new(WriteDeadline::new(stream, limits.deadline));
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(io, service));
        let force_close = force_close.clone();
        tasks.spawn(async move {
            let _slot = slot;
            // Timeouts and resets end connections; nothing to report.
            tokio::select! {
                _ = connection => {}
                _ = force_close.cancelled() => {}
            }
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(limits.shutdown_grace, connections.shutdown()).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            grace = ?limits.shutdown_grace,
            "connections still open after the shutdown grace period; closing them"
        );
        force_close.cancel();
    }
    tasks.wait().await;
}

/// A stream whose writes fail with `TimedOut` once they have made no progress for `timeout`.
/// The deadline starts when a write is first refused (the socket's send buffer is full) and is
/// cleared by any write that goes through, so a slow but reading client is never cut off.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, stalled: None }
    }

    fn progress<T>(&mut self, poll: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no write progress"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(poll, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_that_makes_no_progress_times_out() {
        // A pipe whose reader never reads: writes stop once its buffer is full.
        let (client, _reader) = tokio::io::duplex(64);
        let mut stream = WriteDeadline::new(client, Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        let err = stream.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        use tokio::io::AsyncReadExt;
        let (client, mut reader) = tokio::io::duplex(64);
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 1024 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += reader.read(&mut buf).await.unwrap();
            }
        });
        let mut stream = WriteDeadline::new(client, Duration::from_millis(300));
        stream.write_all(&[0u8; 1024]).await.expect("progress every 100 ms keeps the write alive");
        drain.await.unwrap();
    }
}

//! A TCP proxy the test controls, for cutting the broker connection mid-stream.
//!
//! Listens on 127.0.0.1:0 and forwards every connection to the upstream address. `cut()` closes
//! every live connection and, until `restore()`, accepts new ones only to drop them at once (the
//! client sees the connection close before the AMQP handshake completes). `stall()` keeps the
//! connections open but holds back everything the upstream sends (a broker that stopped
//! answering) until `resume()`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    stalled: AtomicBool,
    live: Mutex<Vec<AbortHandle>>,
    /// Connections forwarded to the upstream (not counting the dropped ones).
    forwarded: AtomicUsize,
    /// Connections accepted and dropped while cut.
    refused: AtomicUsize,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                // Checked under the lock that `cut` drains with, so no connection slips through.
                let mut live = st.live.lock().unwrap();
                if st.cut.load(Ordering::SeqCst) {
                    st.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                live.retain(|h| !h.is_finished());
                st.forwarded.fetch_add(1, Ordering::SeqCst);
                let state = st.clone();
                let task = tokio::spawn(async move {
                    // Failing to reach the upstream looks like a dropped connection to the client.
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, state).await;
                    }
                });
                live.push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy { addr, state, accept }
    }

    /// An AMQP URL that goes through the proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Closes every live connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        let mut live = self.state.live.lock().unwrap();
        self.state.cut.store(true, Ordering::SeqCst);
        for task in live.drain(..) {
            // Aborting the copy task drops both sockets: each side sees the connection close.
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Holds back everything the upstream sends until [`Proxy::resume`]; connections stay open.
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
    }

    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

/// Copies both ways; the upstream-to-client direction waits while the proxy is stalled.
async fn forward(client: TcpStream, server: TcpStream, state: Arc<State>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            while state.stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

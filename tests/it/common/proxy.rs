//! A TCP proxy the test controls, for cutting the broker connection mid-stream.
//!
//! Listens on 127.0.0.1:0 and forwards every connection to the upstream address. `cut()` closes
//! every live connection and, until `restore()`, accepts new ones only to drop them at once (the
//! client sees the connection close before the AMQP handshake completes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    cut: AtomicBool,
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
                let Ok((mut client, _)) = listener.accept().await else { continue };
                // Checked under the lock that `cut` drains with, so no connection slips through.
                let mut live = st.live.lock().unwrap();
                if st.cut.load(Ordering::SeqCst) {
                    st.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                live.retain(|h| !h.is_finished());
                st.forwarded.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    // Failing to reach the upstream looks like a dropped connection to the client.
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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

    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
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

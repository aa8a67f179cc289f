//! A TCP relay in front of `redis-server` that holds back the first lease request (`SET … NX`) a gateway sends
//! through it until the test lets it go: the interleaving "this replica read L2, then another replica answered and
//! released its lease, then this replica took the lease" made to happen on the wire, every time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

/// How the `NX` argument of a `SET` looks in a RESP command.
const NX: &[u8] = b"$2\r\nNX\r\n";

/// The relay.
#[derive(Debug)]
pub struct LeaseHold {
    /// Where the gateway should connect (`redis://` + this).
    pub addr: SocketAddr,
    reached: Arc<Notify>,
    go: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseHold {
    /// Relays connections to the Redis at `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let (reached, go) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        let held = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (reached, go) = (reached.clone(), go.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let (cr, mut cw) = client.into_split();
                    let (mut sr, sw) = server.into_split();
                    let hold = Hold {
                        held: held.clone(),
                        reached: reached.clone(),
                        go: go.clone(),
                    };
                    tokio::spawn(hold.pipe(cr, sw));
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                }
            }
        });
        Self {
            addr,
            reached,
            go,
            task,
        }
    }

    /// The Redis URL through the relay.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Waits until the first lease request has arrived and is being held.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held lease request go on to Redis.
    pub fn release(&self) {
        self.go.add_permits(1);
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client-to-Redis direction of one connection, holding the first chunk carrying `NX` of all connections.
struct Hold {
    held: Arc<AtomicBool>,
    reached: Arc<Notify>,
    go: Arc<Semaphore>,
}

impl Hold {
    async fn pipe(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if chunk.windows(NX.len()).any(|w| w == NX) && !self.held.swap(true, Ordering::SeqCst) {
                self.reached.notify_one();
                let _permit = self.go.acquire().await;
            }
            if to.write_all(chunk).await.is_err() {
                return;
            }
        }
    }
}

//! A TCP proxy on 127.0.0.1 that can partition the network between two
//! processes while both stay alive.
//!
//! `partition()` black-holes traffic both ways the way a real network
//! partition does: nothing is delivered, nothing is reset, and connections
//! stay open. Bytes the kernel already accepted are held, not dropped, so
//! after `heal()` they arrive late, exactly like TCP retransmissions after
//! a partition (stale pings and all). New connections made during the
//! partition are accepted but carry nothing until it heals.
//! `sever()` closes every current connection (a hard reset).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running proxy. Dropping it closes the listener and every connection.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    partitioned: watch::Sender<bool>,
    severed: Arc<watch::Sender<u64>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:0` → `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (partitioned, part_rx) = watch::channel(false);
        let severed = Arc::new(watch::channel(0u64).0);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (c, t, s) = (cancel.clone(), tracker.clone(), severed.clone());
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = c.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let (c2, part, sev) = (c.clone(), part_rx.clone(), s.subscribe());
                t.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let mut sev2 = sev.clone();
                    tokio::select! {
                        _ = c2.cancelled() => {}
                        _ = sev2.changed() => {}
                        _ = pump(cr, sw, part.clone()) => {}
                        _ = pump(sr, cw, part) => {}
                    }
                    drop(sev);
                });
            }
        });
        Self {
            addr,
            partitioned,
            severed,
            cancel,
            tracker,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts black-holing traffic both ways.
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Delivers held traffic and resumes forwarding.
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }

    /// Closes every current connection.
    pub fn sever(&self) {
        self.severed.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tracker.close();
    }
}

/// Copies `from` → `to`, holding data while partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Don't even read while partitioned: the sender's window fills and
        // it sees what a black hole looks like.
        if partitioned.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Data read just as the partition began is held until it heals.
        if partitioned.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_holds_during_partition_and_delivers_after_heal() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut b = [0u8; 5];
        c.write_all(b"hello").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");

        proxy.partition();
        c.write_all(b"later").await.unwrap();
        // Nothing comes back while partitioned.
        let r = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut b)).await;
        assert!(r.is_err(), "data crossed a partition");

        proxy.heal();
        tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut b))
            .await
            .expect("held data delivered after heal")
            .unwrap();
        assert_eq!(&b, b"later");
    }

    #[tokio::test]
    async fn sever_closes_connections() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        proxy.sever();
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));
    }
}

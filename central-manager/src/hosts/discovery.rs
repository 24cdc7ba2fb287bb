//! Where the pod-hosts are: the static `--pod-host URL` list plus every
//! address `--pod-host-dns NAME:PORT` resolves to (a Kubernetes headless
//! Service has one A record per ready pod-host pod). The name is resolved
//! again every `interval`, so pod-hosts that appear or vanish (`kubectl
//! scale`) are picked up without a restart.
//!
//! A failed lookup keeps the previous DNS endpoints: a DNS outage must not
//! disconnect healthy hosts. A lookup that *succeeds* with fewer addresses
//! drops the missing ones (their hosts are then judged by the normal
//! silence rules, which keep their pods safe until the fence deadline).

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Resolves `name:port` to socket addresses. Behind a trait so tests can
/// make addresses appear and disappear.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        name_port: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system resolver (getaddrinfo through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        name_port: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host(name_port).await?.collect()) })
    }
}

/// Normalises a `--pod-host` value to a URL tonic can dial.
pub fn endpoint_url(s: &str) -> String {
    let s = s.trim();
    if s.starts_with("http://") || s.starts_with("https://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    }
}

/// The full endpoint set: static URLs plus resolved DNS addresses.
pub fn endpoint_set(static_urls: &[String], resolved: &BTreeSet<SocketAddr>) -> BTreeSet<String> {
    static_urls
        .iter()
        .map(|u| endpoint_url(u))
        .chain(resolved.iter().map(|a| format!("http://{a}")))
        .collect()
}

/// The `https://` form of an endpoint URL (`--pod-host-ca`: every
/// pod-host is dialled over TLS).
pub fn tls_url(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_owned(),
    }
}

/// Publishes the current endpoint set on a watch channel and keeps it
/// fresh.
pub struct Discovery {
    static_urls: Vec<String>,
    dns: Vec<String>,
    interval: Duration,
    resolver: Arc<dyn Resolve>,
    /// `Some`: publish `https://` URLs, except for these (the
    /// `--local-pod-host` child, which has no certificate).
    tls_except: Option<Vec<String>>,
}

impl Discovery {
    pub fn new(
        static_urls: Vec<String>,
        dns: Vec<String>,
        interval: Duration,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
        Self {
            static_urls,
            dns,
            interval,
            resolver,
            tls_except: None,
        }
    }

    /// Publishes every endpoint as `https://`, except `plaintext` ones.
    pub fn with_tls(mut self, plaintext: Vec<String>) -> Self {
        self.tls_except = Some(plaintext);
        self
    }

    fn publishable(&self, set: BTreeSet<String>) -> BTreeSet<String> {
        match &self.tls_except {
            None => set,
            Some(plain) => set
                .into_iter()
                .map(|u| if plain.contains(&u) { u } else { tls_url(&u) })
                .collect(),
        }
    }

    /// One resolution round: the new DNS address set, or `None` when every
    /// lookup failed (keep the old set).
    pub async fn resolve_once(&self) -> Option<BTreeSet<SocketAddr>> {
        let mut any_ok = self.dns.is_empty();
        let mut out = BTreeSet::new();
        for name in &self.dns {
            match self.resolver.resolve(name).await {
                Ok(addrs) => {
                    any_ok = true;
                    out.extend(addrs);
                }
                Err(e) => tracing::warn!(name = %name, error = %e, "pod-host DNS lookup failed"),
            }
        }
        any_ok.then_some(out)
    }

    /// Resolves now, then every interval until `cancel`, publishing each
    /// change of the endpoint set on the returned channel.
    pub async fn run(self, tx: watch::Sender<BTreeSet<String>>, cancel: CancellationToken) {
        let mut resolved = BTreeSet::new();
        let mut ticker = tokio::time::interval(self.interval);
        // A slow lookup must not cause a burst of catch-up lookups.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Some(r) = self.resolve_once().await {
                resolved = r;
            }
            let set = self.publishable(endpoint_set(&self.static_urls, &resolved));
            tx.send_if_modified(|cur| {
                if *cur == set {
                    false
                } else {
                    tracing::info!(endpoints = ?set, "pod-host endpoints changed");
                    *cur = set;
                    true
                }
            });
            if self.dns.is_empty() {
                // Nothing will ever change: publish once and stop.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A resolver whose answers the test changes.
    struct FakeResolver {
        answer: Mutex<io::Result<Vec<SocketAddr>>>,
    }

    impl FakeResolver {
        fn new() -> Self {
            Self {
                answer: Mutex::new(Ok(vec![])),
            }
        }

        fn set(&self, a: io::Result<Vec<SocketAddr>>) {
            *self.answer.lock().unwrap() = a;
        }
    }

    impl Resolve for FakeResolver {
        fn resolve<'a>(
            &'a self,
            _name_port: &'a str,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
            let r = match &*self.answer.lock().unwrap() {
                Ok(v) => Ok(v.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            Box::pin(async move { r })
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn urls_are_normalised_and_merged() {
        let resolved: BTreeSet<_> = [addr("10.0.0.2:50052")].into();
        let set = endpoint_set(&["127.0.0.1:1".into(), "http://h:2".into()], &resolved);
        let v: Vec<_> = set.into_iter().collect();
        assert_eq!(
            v,
            vec!["http://10.0.0.2:50052", "http://127.0.0.1:1", "http://h:2"]
        );
    }

    #[test]
    fn with_tls_every_endpoint_but_the_local_one_is_https() {
        let d = Discovery::new(
            vec![
                "h:1".into(),
                "http://127.0.0.1:9".into(),
                "https://x:3".into(),
            ],
            vec![],
            Duration::from_secs(1),
            Arc::new(FakeResolver::new()),
        )
        .with_tls(vec!["http://127.0.0.1:9".into()]);
        let resolved: BTreeSet<_> = [addr("10.0.0.2:50052")].into();
        let set = d.publishable(endpoint_set(&d.static_urls, &resolved));
        let v: Vec<_> = set.into_iter().collect();
        assert_eq!(
            v,
            vec![
                "http://127.0.0.1:9",
                "https://10.0.0.2:50052",
                "https://h:1",
                "https://x:3"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_appear_and_vanish_and_failures_keep_the_last_set() {
        let fake = Arc::new(FakeResolver::new());
        fake.set(Ok(vec![addr("10.0.0.1:50052"), addr("10.0.0.2:50052")]));
        let d = Discovery::new(
            vec![],
            vec!["pod-host:50052".into()],
            Duration::from_secs(5),
            fake.clone(),
        );
        let (tx, mut rx) = watch::channel(BTreeSet::new());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(d.run(tx, cancel.clone()));

        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().len(), 2);

        // Scale up.
        fake.set(Ok(vec![
            addr("10.0.0.1:50052"),
            addr("10.0.0.2:50052"),
            addr("10.0.0.3:50052"),
        ]));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().len(), 3);

        // DNS outage: the set is kept.
        fake.set(Err(io::Error::other("SERVFAIL")));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(!rx.has_changed().unwrap());
        assert_eq!(rx.borrow().len(), 3);

        // Scale down.
        fake.set(Ok(vec![addr("10.0.0.3:50052")]));
        rx.changed().await.unwrap();
        assert_eq!(
            rx.borrow_and_update().iter().cloned().collect::<Vec<_>>(),
            vec!["http://10.0.0.3:50052".to_string()]
        );
        cancel.cancel();
        task.await.unwrap();
    }
}

//! The elector against an in-memory lease row on tokio's paused clock: the
//! row behaves like the database's (expiry by its clock, epochs that only
//! grow), and one replica's connection to it can be cut.

use std::collections::HashSet;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::core::ports::lease::ClusterRows;
use crate::error::{Error, Result};

#[derive(Default)]
struct Row {
    holder: String,
    epoch: u64,
    expires: Option<Instant>,
}

/// The lease row; calls from replicas in `cut` hang (a lost connection).
#[derive(Default)]
struct FakeLease {
    row: Mutex<Row>,
    cut: Mutex<HashSet<String>>,
    /// Writes fail at once (a full disk), reads work.
    read_only: std::sync::atomic::AtomicBool,
}

impl FakeLease {
    async fn reach(&self, me: &str) {
        let cut = self.cut.lock().unwrap().contains(me);
        if cut {
            std::future::pending::<()>().await;
        }
    }
    fn expires(&self) -> Option<Instant> {
        self.row.lock().unwrap().expires
    }
}

impl LeaseStore for FakeLease {
    fn acquire<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            self.reach(me).await;
            if self.read_only.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::StoreUnavailable("read-only".into()));
            }
            let mut r = self.row.lock().unwrap();
            let now = Instant::now();
            if r.expires.is_none_or(|e| e <= now) || r.holder == me {
                r.holder = me.to_owned();
                r.epoch += 1;
                r.expires = Some(now + Duration::from_millis(lease_ms));
                return Ok(Some(r.epoch));
            }
            Ok(None)
        })
    }
    fn take_over<'a>(&'a self, me: &'a str, lease_ms: u64) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.reach(me).await;
            if self.read_only.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::StoreUnavailable("read-only".into()));
            }
            let mut r = self.row.lock().unwrap();
            r.holder = me.to_owned();
            r.epoch += 1;
            r.expires = Some(Instant::now() + Duration::from_millis(lease_ms));
            Ok(r.epoch)
        })
    }
    fn renew<'a>(&'a self, me: &'a str, epoch: u64, lease_ms: u64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.reach(me).await;
            let mut r = self.row.lock().unwrap();
            if r.holder == me && r.epoch == epoch {
                r.expires = Some(Instant::now() + Duration::from_millis(lease_ms));
                return Ok(true);
            }
            Ok(false)
        })
    }
    fn release<'a>(&'a self, me: &'a str, epoch: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut r = self.row.lock().unwrap();
            if r.holder == me && r.epoch == epoch {
                r.expires = Some(Instant::now());
            }
            Ok(())
        })
    }
    fn heartbeat<'a>(&'a self, me: &'a str, _: &'a str, _: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.reach(me).await;
            Ok(())
        })
    }
    fn cluster(&self, _: u64) -> BoxFuture<'_, Result<ClusterRows>> {
        Box::pin(async {
            let r = self.row.lock().unwrap();
            Ok(ClusterRows {
                lease: crate::core::ports::lease::LeaseRow {
                    replica_id: r.holder.clone(),
                    epoch: r.epoch,
                    expires_at: 0,
                    now: 0,
                },
                replicas: Vec::new(),
            })
        })
    }
}

const LEASE: Duration = Duration::from_millis(3000);

async fn replica(
    lease: &Arc<FakeLease>,
    id: &str,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> (Leadership, ElectorHandle, Fence) {
    replica_with(lease, id, tracker, stop, false).await
}

async fn replica_with(
    lease: &Arc<FakeLease>,
    id: &str,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    single: bool,
) -> (Leadership, ElectorHandle, Fence) {
    let fence = Fence::default();
    let config = ReplicaConfig {
        replica_id: id.into(),
        address: format!("http://{id}"),
        lease: LEASE,
        single,
    };
    let (l, h) = start(lease.clone(), config, fence.clone(), tracker, stop.clone()).await;
    (l, h, fence)
}

#[test]
fn timing_keeps_a_margin_inside_the_lease() {
    let t = Timing::for_lease(LEASE);
    assert_eq!(t.renew_every, Duration::from_millis(750));
    assert_eq!(t.poll_every, Duration::from_millis(500));
    assert_eq!(t.trust_for, Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn one_leads_and_a_follower_takes_over_when_it_stops_renewing() {
    let lease = Arc::new(FakeLease::default());
    let tracker = TaskTracker::new();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (a, _ha, fa) = replica(&lease, "a", &tracker, &stop_a).await;
    assert_eq!(a.leading().await, Some(1));
    assert_eq!(fa.epoch(), 1);
    let (b, _hb, fb) = replica(&lease, "b", &tracker, &stop_b).await;
    // b stays a follower for many lease periods while a renews.
    tokio::time::sleep(LEASE * 5).await;
    assert_eq!(b.role(), Role::Follower);
    assert_eq!(fb.epoch(), 0);
    assert!(a.is_leader());
    // a dies (stops renewing, without releasing): b leads within the
    // lease plus one poll, at a newer epoch.
    let died = Instant::now();
    stop_a.cancel();
    assert_eq!(b.leading().await, Some(2));
    let took = died.elapsed();
    assert!(
        took <= LEASE + LEASE / 6 + Duration::from_millis(50),
        "{took:?}"
    );
    stop_b.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_release_hands_over_at_the_next_poll() {
    let lease = Arc::new(FakeLease::default());
    let tracker = TaskTracker::new();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (a, ha, _) = replica(&lease, "a", &tracker, &stop_a).await;
    assert_eq!(a.leading().await, Some(1));
    let (b, _hb, _) = replica(&lease, "b", &tracker, &stop_b).await;
    tokio::time::sleep(LEASE).await;
    stop_a.cancel();
    ha.release().await;
    let released = Instant::now();
    assert_eq!(b.leading().await, Some(2));
    let took = released.elapsed();
    assert!(took <= LEASE / 6 + Duration::from_millis(50), "{took:?}");
    stop_b.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_steps_down_before_its_lease_ends() {
    let lease = Arc::new(FakeLease::default());
    let tracker = TaskTracker::new();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (a, _ha, fa) = replica(&lease, "a", &tracker, &stop_a).await;
    assert_eq!(a.leading().await, Some(1));
    let (b, _hb, _) = replica(&lease, "b", &tracker, &stop_b).await;
    tokio::time::sleep(LEASE).await;
    lease.cut.lock().unwrap().insert("a".into());
    // a's lease at the "database" ends at this instant at the latest.
    let expires = lease.expires().unwrap();
    let mut role = a.role.clone();
    while *role.borrow_and_update() != Role::Deposed {
        role.changed().await.unwrap();
    }
    let deposed = Instant::now();
    assert!(
        deposed < expires,
        "deposed at {deposed:?}, lease ran to {expires:?}"
    );
    assert!(fa.deposed().is_cancelled());
    // Deposed for good: even the old epoch no longer commits.
    assert!(fa.check(1).is_err());
    assert_eq!(b.leading().await, Some(2));
    assert!(Instant::now() >= expires);
    stop_a.cancel();
    stop_b.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_row_was_taken_is_deposed_at_its_next_renewal() {
    let lease = Arc::new(FakeLease::default());
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let (a, _ha, fa) = replica(&lease, "a", &tracker, &stop).await;
    assert_eq!(a.leading().await, Some(1));
    // Someone else took the row (e.g. after a pause of this process).
    {
        let mut r = lease.row.lock().unwrap();
        r.holder = "x".into();
        r.epoch = 2;
    }
    tokio::time::sleep(Timing::for_lease(LEASE).renew_every * 2).await;
    assert_eq!(a.role(), Role::Deposed);
    assert!(fa.deposed().is_cancelled());
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lone_sqlite_central_takes_the_row_at_start_and_keeps_it_without_writing() {
    let lease = Arc::new(FakeLease::default());
    let tracker = TaskTracker::new();
    let (stop_old, stop) = (CancellationToken::new(), CancellationToken::new());
    // An older process (another id) holds a live lease: the newest wins.
    let (old, _ho, _) = replica(&lease, "old", &tracker, &stop_old).await;
    assert_eq!(old.leading().await, Some(1));
    let (a, _ha, fa) = replica_with(&lease, "a", &tracker, &stop, true).await;
    assert_eq!(a.role(), Role::Leader { epoch: 2 });
    assert_eq!(fa.epoch(), 2, "its writer checks the row");
    // The older one finds the row taken at its next renewal.
    tokio::time::sleep(LEASE).await;
    assert_eq!(old.role(), Role::Deposed);
    // No renewals, no expiry: a cut-off row changes nothing.
    lease.cut.lock().unwrap().insert("a".into());
    let expires = lease.expires().unwrap();
    tokio::time::sleep(LEASE * 10).await;
    assert_eq!(a.role(), Role::Leader { epoch: 2 });
    assert_eq!(lease.expires().unwrap(), expires);
    assert!(expires > Instant::now() + Duration::from_secs(3600 * 24 * 365));
    stop.cancel();
    stop_old.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lone_sqlite_central_on_an_unwritable_database_leads_at_the_rows_epoch() {
    let lease = Arc::new(FakeLease::default());
    lease.row.lock().unwrap().epoch = 7;
    lease
        .read_only
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let (a, _ha, fa) = replica_with(&lease, "a", &tracker, &stop, true).await;
    assert_eq!(a.role(), Role::Leader { epoch: 7 });
    assert_eq!(fa.leader_epoch(), 7, "commands carry the row's epoch");
    assert_eq!(
        fa.epoch(),
        0,
        "the writer checks nothing: it does not own the row"
    );
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(a.role(), Role::Leader { epoch: 7 });
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn replicas_follow_while_the_row_cannot_be_written() {
    let lease = Arc::new(FakeLease::default());
    lease
        .read_only
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let (a, _ha, _) = replica(&lease, "a", &tracker, &stop).await;
    assert_eq!(a.role(), Role::Follower);
    lease
        .read_only
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(a.leading().await, Some(1));
    stop.cancel();
}

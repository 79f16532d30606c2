//! The transaction coordinator over a recording sink and marker writer:
//! every change is stored before it is answered, markers follow a stored
//! PrepareCommit or PrepareAbort and the completion follows the markers, a
//! coordinator that takes a partition over finishes what it finds
//! prepared, open transactions past their timeout are aborted under a
//! bumped epoch, and idle ids expire.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_coordinator::manager::{OffsetsRecord, RecordSink, SinkError};
use runnel_coordinator::transaction::{
    TxnConfig, TxnEntry, TxnMetadata, TxnPartition, TxnState, decode_record,
};
use runnel_coordinator::transactions::{MarkerWriter, TxnManager};
use runnel_proto::common::v1::ErrorCode;

/// Keeps what it is given, like the partitions of `__transaction_state`;
/// while `held` is set, writes wait (a slow leader).
struct Recorded {
    records: Mutex<Vec<(i32, OffsetsRecord)>>,
    held: tokio::sync::watch::Sender<bool>,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            records: Mutex::default(),
            held: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl RecordSink for Recorded {
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            // A write takes a while: concurrent requests interleave.
            tokio::task::yield_now().await;
            let _ = self.held.subscribe().wait_for(|held| !held).await;
            self.records
                .lock()
                .extend(records.into_iter().map(|r| (partition, r)));
            Ok(())
        })
    }
}

impl Recorded {
    /// The records of partition `q`, as a replay reads them.
    fn partition(&self, q: i32) -> Vec<OffsetsRecord> {
        self.records
            .lock()
            .iter()
            .filter(|(p, _)| *p == q)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The last stored state of `id`.
    fn last(&self, id: &str) -> Option<TxnMetadata> {
        self.records
            .lock()
            .iter()
            .rev()
            .find_map(
                |(_, (k, v))| match decode_record(k, v.as_deref()).unwrap() {
                    TxnEntry::Txn(found, m) if found == id => Some(m),
                    _ => None,
                },
            )
            .flatten()
    }
}

/// A marker written: producer id, epoch, commit, coordinator epoch, partition.
type Written = (i64, i16, bool, i32, TxnPartition);

/// Records every marker; refuses them while `down` is set (leaders unreachable).
#[derive(Default)]
struct Markers {
    written: Mutex<Vec<Written>>,
    down: AtomicBool,
}

impl MarkerWriter for Markers {
    fn write(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        partitions: Vec<TxnPartition>,
    ) -> BoxFuture<'_, Vec<(TxnPartition, ErrorCode, String)>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return partitions
                    .into_iter()
                    .map(|p| (p, ErrorCode::NotLeaderOrFollower, "down".to_owned()))
                    .collect();
            }
            let mut w = self.written.lock();
            for p in partitions {
                w.push((producer_id, producer_epoch, commit, coordinator_epoch, p));
            }
            Vec::new()
        })
    }
}

struct Setup {
    sink: Arc<Recorded>,
    markers: Arc<Markers>,
    clock: Arc<AtomicI64>,
}

const T0: i64 = 1_700_000_000_000;

impl Setup {
    fn new() -> Setup {
        Setup {
            sink: Arc::new(Recorded::default()),
            markers: Arc::new(Markers::default()),
            clock: Arc::new(AtomicI64::new(T0)),
        }
    }

    /// A coordinator serving every partition (one partition of each topic)
    /// as coordinator epoch `epoch`, after replaying what is stored.
    fn coordinator(&self, config: TxnConfig, epoch: i32) -> Arc<TxnManager> {
        let clock = Arc::clone(&self.clock);
        let m = Arc::new(TxnManager::with_clock(
            config,
            1,
            1,
            self.sink.clone(),
            self.markers.clone(),
            Box::new(move || clock.load(Ordering::SeqCst)),
        ));
        m.begin_load(0);
        m.finish_load(0, &self.sink.partition(0), epoch).unwrap();
        m
    }
}

fn tp(topic: &str, p: i32) -> TxnPartition {
    (topic.to_owned(), p)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_commit_is_stored_then_marked_then_completed() {
    let s = Setup::new();
    let c = s.coordinator(TxnConfig::default(), 3);
    let (pid, epoch) = c
        .init_producer_id("tx", 60_000, None, Some(42))
        .await
        .unwrap();
    assert_eq!((pid, epoch), (42, 0));
    assert_eq!(s.sink.last("tx").unwrap().state, TxnState::Empty);
    let added = c
        .add_partitions("tx", pid, epoch, vec![tp("a", 0), tp("b", 1)], false)
        .await
        .unwrap();
    assert!(added.iter().all(|(_, code)| *code == ErrorCode::None));
    assert_eq!(s.sink.last("tx").unwrap().state, TxnState::Ongoing);
    c.end_txn("tx", pid, epoch, true).await.unwrap();
    until("the completion", || {
        s.sink.last("tx").unwrap().state == TxnState::CompleteCommit
    })
    .await;
    let written = s.markers.written.lock().clone();
    assert_eq!(written.len(), 2);
    assert!(
        written
            .iter()
            .all(|m| m.0 == 42 && m.1 == 0 && m.2 && m.3 == 3)
    );
    // Prepare was stored before the markers went out.
    let states: Vec<TxnState> = s
        .sink
        .partition(0)
        .iter()
        .filter_map(|(k, v)| match decode_record(k, v.as_deref()).unwrap() {
            TxnEntry::Txn(_, Some(m)) => Some(m.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::CompleteCommit
        ]
    );
    let described = c.describe(&["tx".into(), "other".into()]);
    assert_eq!(
        described[0].1.as_ref().unwrap().state,
        TxnState::CompleteCommit
    );
    assert_eq!(described[1].1, Err(ErrorCode::TransactionalIdNotFound));
}

#[tokio::test]
async fn a_new_owner_finishes_a_prepared_transaction() {
    let s = Setup::new();
    s.markers.down.store(true, Ordering::SeqCst);
    let old = s.coordinator(TxnConfig::default(), 1);
    let (pid, epoch) = old
        .init_producer_id("tx", 60_000, None, Some(7))
        .await
        .unwrap();
    old.add_partitions("tx", pid, epoch, vec![tp("a", 0)], false)
        .await
        .unwrap();
    old.end_txn("tx", pid, epoch, false).await.unwrap();
    assert_eq!(s.sink.last("tx").unwrap().state, TxnState::PrepareAbort);
    // The partition moves while the leaders are unreachable.
    old.unload(0);
    s.markers.down.store(false, Ordering::SeqCst);
    let new = s.coordinator(TxnConfig::default(), 2);
    until("the new owner's completion", || {
        s.sink.last("tx").unwrap().state == TxnState::CompleteAbort
    })
    .await;
    let written = s.markers.written.lock().clone();
    assert_eq!(
        written,
        vec![(7, 0, false, 2, tp("a", 0))],
        "sent by the new owner only"
    );
    // The old owner answers nothing any more.
    assert_eq!(
        old.end_txn("tx", pid, epoch, false).await.unwrap_err().0,
        ErrorCode::NotCoordinator
    );
    assert!(
        new.end_txn("tx", pid, epoch, false).await.is_ok(),
        "a retry of the abort"
    );
}

#[tokio::test]
async fn timed_out_transactions_abort_and_fence_their_producer_and_idle_ids_expire() {
    let s = Setup::new();
    let config = TxnConfig {
        id_expiration_ms: 3_600_000,
        ..TxnConfig::default()
    };
    let c = s.coordinator(config, 1);
    let (pid, epoch) = c
        .init_producer_id("tx", 10_000, None, Some(9))
        .await
        .unwrap();
    c.add_partitions("tx", pid, epoch, vec![tp("a", 0)], false)
        .await
        .unwrap();
    s.clock.fetch_add(5_000, Ordering::SeqCst);
    assert_eq!(c.tick().await, (0, 0));
    s.clock.fetch_add(5_001, Ordering::SeqCst);
    assert_eq!(c.tick().await, (1, 0));
    until("the abort", || {
        s.sink.last("tx").unwrap().state == TxnState::CompleteAbort
    })
    .await;
    assert_eq!(
        s.markers.written.lock()[0].1,
        1,
        "aborted under the bumped epoch"
    );
    // The producer that let it time out is fenced.
    let late = c.end_txn("tx", pid, epoch, true).await.unwrap_err();
    assert_eq!(late.0, ErrorCode::ProducerFenced);
    // A day later the idle id is forgotten (a tombstone is stored).
    s.clock.fetch_add(3_600_001, Ordering::SeqCst);
    assert_eq!(c.tick().await, (0, 1));
    assert!(s.sink.last("tx").is_none());
    assert!(c.list(&[], &[], 0).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_id_never_overwrite_each_other() {
    let s = Setup::new();
    let c = s.coordinator(TxnConfig::default(), 1);
    let (pid, epoch) = c
        .init_producer_id("tx", 60_000, None, Some(5))
        .await
        .unwrap();
    let mut added = Vec::new();
    for round in 0..300 {
        let (a, b) = (tp("a", round), tp("b", round));
        // On two threads at once, as two requests of one producer can be.
        let add = |p: TxnPartition| {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.add_partitions("tx", pid, epoch, vec![p], false).await })
        };
        let (ra, rb) = (add(a.clone()), add(b.clone()));
        let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
        for (r, p) in [(ra, a), (rb, b)] {
            match r {
                Ok(_) => added.push(p),
                Err((code, _)) => assert_eq!(code, ErrorCode::ConcurrentTransactions),
            }
        }
    }
    // Every partition a producer was told is in the transaction is stored there.
    let stored = s.sink.last("tx").unwrap().partitions;
    for p in &added {
        assert!(stored.contains(p), "{p:?} was acknowledged but not stored");
    }
    assert!(added.len() >= 300, "one of each pair at least");
}

#[tokio::test]
async fn a_request_dropped_mid_write_still_finishes_its_write() {
    // A client that goes away mid-request (a killed producer) drops its
    // request; the id must not stay pending (CONCURRENT_TRANSACTIONS for
    // every later producer) and a stored PrepareCommit must still complete.
    let s = Setup::new();
    let c = s.coordinator(TxnConfig::default(), 1);
    let (pid, epoch) = c
        .init_producer_id("tx", 60_000, None, Some(7))
        .await
        .unwrap();
    s.sink.held.send_replace(true);
    let add = c.add_partitions("tx", pid, epoch, vec![tp("a", 0)], false);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), add)
            .await
            .is_err(),
        "the write is held"
    );
    s.sink.held.send_replace(false);
    until("the dropped request's write", || {
        s.sink.last("tx").unwrap().state == TxnState::Ongoing
    })
    .await;
    s.sink.held.send_replace(true);
    let end = c.end_txn("tx", pid, epoch, true);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), end)
            .await
            .is_err()
    );
    s.sink.held.send_replace(false);
    until("the dropped commit's completion", || {
        s.sink.last("tx").unwrap().state == TxnState::CompleteCommit
    })
    .await;
    assert_eq!(s.markers.written.lock().len(), 1);
    // The next producer of the id is served, not told a change is in progress.
    let (pid2, epoch2) = c
        .init_producer_id("tx", 60_000, None, Some(8))
        .await
        .unwrap();
    assert_eq!((pid2, epoch2), (7, 1));
}

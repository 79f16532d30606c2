//! Sliding windows (Kafka Streams' `SlidingWindows`, KIP-450): windows
//! of a fixed time difference that exist only where records are, so each
//! distinct set of a key's records no more than the difference apart is
//! aggregated once.
//!
//! Each record at `t` has a window ending at it, `[t - d, t]`, and one
//! starting just after it, `[t + 1, t + 1 + d]`, when a later record falls
//! in that. A record updates every such window that holds it. Records
//! before `d` fall in the window `[0, d]`, as Kafka Streams puts early
//! records. Both ends are inclusive.
//!
//! The aggregation keeps the key's recent records in a store of its own
//! (`<store>-records`, logged like any store) and recomputes each window
//! a record touches from them, so its cost per record grows with how many
//! records of the key lie within twice the difference; Kafka Streams
//! updates the windows' aggregates in place instead. The windows' results
//! are kept in `<store>` in Kafka's window-store layout (key, window start,
//! sequence number), and written with [`crate::WindowedSerde`] of size `d`
//! (a window's end is its start plus `d`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::serde::Serde;
use crate::topology::{
    ArcSerde, CHANGELOG_SUFFIX, KGroupedStream, KTable, Kept, ProcessFn, aggregate_step, cast,
    count_step, reduce_step, with,
};
use crate::window::{
    Windowed, WindowedSerde, purge_window_stores, window_store_key, window_store_time,
};

/// Windows of records at most `time_difference_ms` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    /// The largest time difference between records of one window, ms.
    pub time_difference_ms: i64,
    /// How long after a window's end it still takes late records, ms.
    pub grace_ms: i64,
}

impl SlidingWindows {
    /// Windows of records at most `difference_ms` apart, taking records up
    /// to `grace_ms` late (Kafka's `ofTimeDifferenceAndGrace`).
    pub fn of_time_difference_and_grace(difference_ms: i64, grace_ms: i64) -> SlidingWindows {
        SlidingWindows {
            time_difference_ms: difference_ms.max(1),
            grace_ms: grace_ms.max(0),
        }
    }

    /// Windows of records at most `difference_ms` apart, closed at their
    /// end (Kafka's `ofTimeDifferenceWithNoGrace`).
    pub fn of_time_difference_no_grace(difference_ms: i64) -> SlidingWindows {
        SlidingWindows::of_time_difference_and_grace(difference_ms, 0)
    }
}

impl<K, V> KGroupedStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The grouped records in sliding windows, for a windowed aggregation
    /// (Kafka's `windowedBy(SlidingWindows)`).
    pub fn windowed_by_sliding(&self, windows: SlidingWindows) -> SlidingWindowedKStream<K, V> {
        SlidingWindowedKStream {
            grouped: self.copy(),
            windows,
        }
    }
}

/// A grouped stream in sliding windows (Kafka's `TimeWindowedKStream` of
/// `SlidingWindows`).
pub struct SlidingWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SlidingWindows,
}

impl<K, V> SlidingWindowedKStream<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// How many records each key had in each window.
    pub fn count(&self, store: &str) -> KTable<Windowed<K>, i64> {
        self.fold(store, crate::serde::I64Serde, count_step)
    }

    /// Each key's values in each window combined with `combine`.
    pub fn reduce(
        &self,
        store: &str,
        combine: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, V>
    where
        V: Clone,
    {
        let serde = ArcSerde(Arc::clone(&self.grouped.value_serde));
        self.fold(store, serde, reduce_step(combine))
    }

    /// Each key's values in each window folded into an aggregate that
    /// starts as `init()`, written with `serde`.
    pub fn aggregate<A>(
        &self,
        store: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
        serde: impl Serde<A>,
    ) -> KTable<Windowed<K>, A>
    where
        A: Send + Sync + 'static,
    {
        self.fold(store, serde, aggregate_step(init, add))
    }

    /// The sliding aggregation node (see the module docs). A record whose
    /// windows have all closed (its right window ends before stream time
    /// minus the grace) is dropped and counted; closed windows it would
    /// touch are left as they are.
    fn fold<A>(
        &self,
        store: &str,
        serde: impl Serde<A>,
        step: impl Fn(&K, &V, Option<A>) -> A + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, A>
    where
        A: Send + Sync + 'static,
    {
        let g = &self.grouped;
        let parents = g.aggregation_parents(store);
        let key_serde = Arc::clone(&g.key_serde);
        let value_serde = Arc::clone(&g.value_serde);
        let SlidingWindows {
            time_difference_ms: d,
            grace_ms,
        } = self.windows;
        let serde: Arc<dyn Serde<A>> = Arc::new(serde);
        let kept = Kept {
            store: store.to_owned(),
            key_serde: Arc::new(WindowedSerde::new(ArcSerde(Arc::clone(&key_serde)), d))
                as Arc<dyn Serde<Windowed<K>>>,
            value_serde: Arc::clone(&serde),
        };
        let name = store.to_owned();
        let records = format!("{store}-records");
        g.stream.graph.borrow_mut().stores.push(records.clone());
        let slot = {
            let mut graph = g.stream.graph.borrow_mut();
            graph.slots += 1;
            graph.slots - 1
        };
        let changelog = format!("{store}{CHANGELOG_SUFFIX}");
        let records_changelog = format!("{records}{CHANGELOG_SUFFIX}");
        let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
            let changelog = ctx.topic(&changelog, true);
            let records_changelog = ctx.topic(&records_changelog, true);
            let Some(key) = key_serde.serialize_nullable(&changelog, k)? else {
                return Ok(());
            };
            let t = rec.timestamp;
            let close = ctx.stream_time.saturating_sub(grace_ms);
            if t.saturating_add(1).saturating_add(d) < close {
                *ctx.dropped_late += 1;
                return Ok(());
            }
            // Records no window that is still open may hold.
            purge_window_stores(ctx, slot, &[&records], close.saturating_sub(2 * d + 2), d)?;
            // The record joins the key's recent records.
            let value = value_serde.serialize(&records_changelog, v)?;
            let at = window_store_key(&key, t, 0);
            let next = window_store_key(&key, t.saturating_add(1), 0);
            let seq = ctx.store(&records)?.range(&at, &next)?.len() as u32;
            ctx.log(
                &records,
                &records_changelog,
                window_store_key(&key, t, seq),
                Some(value),
                t,
            )?;
            // Every record a touched window may hold: they all lie within
            // [t - d, t + d + 1].
            let lo = t.saturating_sub(d).max(0);
            let hi = t.saturating_add(d + 2);
            let mut near: Vec<(i64, V)> = Vec::new();
            for (store_key, bytes) in ctx.store(&records)?.range(
                &window_store_key(&key, lo, 0),
                &window_store_key(&key, hi, 0),
            )? {
                if let Some((time, _)) = window_store_time(&store_key, &key) {
                    near.push((time, value_serde.deserialize(&records_changelog, &bytes)?));
                }
            }
            // The windows holding the record: left windows of records from
            // t to t + d, right windows of records from t - d - 1 to t - 1;
            // and the record's own right window if a later record is in it.
            let mut touched: BTreeSet<(i64, i64)> = BTreeSet::new();
            for &(r, _) in &near {
                if (t..=t.saturating_add(d)).contains(&r) {
                    touched.insert(left_window(r, d));
                }
                if (t.saturating_sub(d + 1)..t).contains(&r) {
                    touched.insert((r + 1, r + 1 + d));
                }
                if r > t && r <= t.saturating_add(d + 1) {
                    touched.insert((t + 1, t + 1 + d));
                }
            }
            for (start, end) in touched {
                if end < close {
                    continue;
                }
                let mut agg = None;
                for (_, value) in near.iter().filter(|(r, _)| (start..=end).contains(r)) {
                    agg = Some(step(k, value, agg));
                }
                let Some(agg) = agg else {
                    continue;
                };
                let bytes = serde.serialize(&changelog, &agg)?;
                ctx.log(
                    &name,
                    &changelog,
                    window_store_key(&key, start, 0),
                    Some(bytes),
                    t,
                )?;
                let windowed = Windowed {
                    key: k.clone(),
                    start,
                    end,
                };
                out.push((0, with(rec, Arc::new(windowed), Arc::new(Some(agg)))));
            }
            Ok(())
        });
        g.aggregation(kept, parents, Some(grace_ms), None, process)
    }
}

/// The window ending at a record at `r`: `[r - d, r]`, or `[0, d]` for
/// records before `d`.
fn left_window(r: i64, d: i64) -> (i64, i64) {
    if r < d { (0, d) } else { (r - d, r) }
}

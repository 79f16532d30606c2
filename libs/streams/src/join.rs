//! Joins between two tables (Kafka Streams' `KTable#join`, `leftJoin`,
//! `outerJoin`) and between two streams within a time window
//! (`KStream#join` with `JoinWindows`).
//!
//! A table–table join is itself a table: an update on either side looks
//! the key up in the other side's store and passes on the joined value,
//! or a deletion when the join no longer holds for the key. Both tables
//! must be kept by key in stores of the same topology, so that their
//! partitions (and so the tasks holding a key) line up.

use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StreamsError;
use crate::serde::Serde;
use crate::topology::{
    CHANGELOG_SUFFIX, Ctx, KStream, KTable, LookupFn, Node, NodeId, ProcessFn, REPARTITION_SUFFIX,
    Rec, cast, round_trip, with,
};
use crate::window::{purge_window_stores, window_store_key, window_store_time};

/// Which sides a table–table join needs a value on to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableJoin {
    /// Both (`join`).
    Inner,
    /// The left (`left_join`).
    Left,
    /// Either (`outer_join`).
    Outer,
}

impl TableJoin {
    /// Whether an update on one side with the other side's value missing
    /// produces nothing (as Kafka Streams skips it): the other side is one
    /// the join needs.
    fn needs(self, other_is_left: bool) -> bool {
        match self {
            TableJoin::Inner => true,
            TableJoin::Left => other_is_left,
            TableJoin::Outer => false,
        }
    }

    /// Whether the join holds for a key with these sides present.
    fn holds(self, left: bool, right: bool) -> bool {
        match self {
            TableJoin::Inner => left && right,
            TableJoin::Left => left,
            TableJoin::Outer => left || right,
        }
    }
}

/// A joiner over the left and right sides' values, either possibly missing.
type Joiner<V, VO, VR> = dyn Fn(Option<&V>, Option<&VO>) -> VR + Send + Sync;

/// An inner join's joiner as a [`Joiner`]: inner joins call it only with
/// both sides present.
fn inner_joiner<V, VO, VR>(
    joiner: impl Fn(&V, &VO) -> VR + Send + Sync + 'static,
) -> Arc<Joiner<V, VO, VR>> {
    Arc::new(move |v, vo| match (v, vo) {
        (Some(v), Some(vo)) => joiner(v, vo),
        _ => unreachable!("an inner join joins only when both sides are present"),
    })
}

/// A left join's joiner as a [`Joiner`]: left joins call it only with the
/// left side present.
fn left_joiner<V, VO, VR>(
    joiner: impl Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
) -> Arc<Joiner<V, VO, VR>> {
    Arc::new(move |v, vo| match v {
        Some(v) => joiner(v, vo),
        None => unreachable!("a left join joins only when its left side is present"),
    })
}

impl<K, V> KTable<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The table of keys both tables hold, valued `joiner(this, other)`
    /// (Kafka's `KTable#join`). An update on either side passes on the
    /// new joined value; one that deletes a side passes on a deletion.
    /// Updates for keys the other table lacks pass on nothing.
    pub fn join<VO, VR>(
        &self,
        other: &KTable<K, VO>,
        joiner: impl Fn(&V, &VO) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_tables(other, TableJoin::Inner, inner_joiner(joiner))
    }

    /// The table of this table's keys, valued `joiner(this, other)` with
    /// `None` where the other table lacks the key (Kafka's
    /// `KTable#leftJoin`).
    pub fn left_join<VO, VR>(
        &self,
        other: &KTable<K, VO>,
        joiner: impl Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_tables(other, TableJoin::Left, left_joiner(joiner))
    }

    /// The table of the keys either table holds, valued
    /// `joiner(this, other)` with `None` for a side that lacks the key
    /// (Kafka's `KTable#outerJoin`).
    pub fn outer_join<VO, VR>(
        &self,
        other: &KTable<K, VO>,
        joiner: impl Fn(Option<&V>, Option<&VO>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_tables(other, TableJoin::Outer, Arc::new(joiner))
    }

    /// One processor per side: an update of that side looks the key up in
    /// the other side's store and passes on the joined value, a deletion
    /// when the join stops holding, or nothing when the other side the
    /// join needs is missing. The result carries the updating record's
    /// timestamp.
    fn join_tables<VO, VR>(
        &self,
        other: &KTable<K, VO>,
        kind: TableJoin,
        joiner: Arc<Joiner<V, VO, VR>>,
    ) -> KTable<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        let (this_lookup, other_lookup) = match (&self.lookup, &other.lookup) {
            (Some(a), Some(b)) if Rc::ptr_eq(&self.graph, &other.graph) => {
                (Arc::clone(a), Arc::clone(b))
            }
            (Some(_), Some(_)) => {
                return self.refuse("a table can only join a table of the same builder");
            }
            _ => {
                return self.refuse(
                    "a table–table join needs both tables kept by key (not windowed or suppressed)",
                );
            }
        };
        let left = table_side::<K, V, VO, VR>(kind, false, other_lookup, Arc::clone(&joiner));
        let right = table_side::<K, VO, V, VR>(
            kind,
            true,
            this_lookup,
            Arc::new(move |vo, v| joiner(v, vo)),
        );
        let (left, right) = {
            let mut g = self.graph.borrow_mut();
            (
                g.add(Node::Processor(left), &self.parents),
                g.add(Node::Processor(right), &other.parents),
            )
        };
        KTable {
            graph: Rc::clone(&self.graph),
            parents: vec![(left, 0), (right, 0)],
            grace: None,
            lookup: None,
            kept: None,
            types: PhantomData,
        }
    }

    /// A table that hangs off nothing, with the building mistake `why`
    /// recorded for `build` to report.
    fn refuse<VR>(&self, why: &str) -> KTable<K, VR> {
        self.graph.borrow_mut().errors.push(why.to_owned());
        KTable {
            graph: Rc::clone(&self.graph),
            parents: Vec::new(),
            grace: None,
            lookup: None,
            kept: None,
            types: PhantomData,
        }
    }
}

/// How far apart in time two records of one key may be to join, and how
/// late records may come (Kafka's `JoinWindows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    /// How much earlier than a left record a right record may be, ms.
    pub before_ms: i64,
    /// How much later than a left record a right record may be, ms.
    pub after_ms: i64,
    /// How long after a window closes its records still count, ms.
    pub grace_ms: i64,
}

impl JoinWindows {
    /// Records at most `difference_ms` apart join, taking records up to
    /// `grace_ms` late (Kafka's `ofTimeDifferenceAndGrace`).
    pub fn of_time_difference_and_grace(difference_ms: i64, grace_ms: i64) -> JoinWindows {
        let d = difference_ms.max(0);
        JoinWindows {
            before_ms: d,
            after_ms: d,
            grace_ms: grace_ms.max(0),
        }
    }

    /// Records at most `difference_ms` apart join; no late records
    /// (Kafka's `ofTimeDifferenceWithNoGrace`).
    pub fn of_time_difference_no_grace(difference_ms: i64) -> JoinWindows {
        JoinWindows::of_time_difference_and_grace(difference_ms, 0)
    }

    /// The same windows reaching `before_ms` back from a left record.
    pub fn before(self, before_ms: i64) -> JoinWindows {
        JoinWindows {
            before_ms: before_ms.max(0),
            ..self
        }
    }

    /// The same windows reaching `after_ms` forward from a left record.
    pub fn after(self, after_ms: i64) -> JoinWindows {
        JoinWindows {
            after_ms: after_ms.max(0),
            ..self
        }
    }

    /// How long a join keeps a record: the whole window and the grace.
    fn retention(&self) -> i64 {
        self.before_ms
            .saturating_add(self.after_ms)
            .saturating_add(self.grace_ms)
    }
}

/// The serdes and the store name of a stream–stream join (Kafka's
/// `StreamJoined`): the stores are `<name>-this-join-store`,
/// `<name>-other-join-store` and, for left and outer joins,
/// `<name>-outer-shared-join-store`; repartition topics, when a side's key
/// changed, `<name>-left-repartition` and `<name>-right-repartition`.
pub struct StreamJoined<K, V, VO> {
    name: String,
    key_serde: Arc<dyn Serde<K>>,
    value_serde: Arc<dyn Serde<V>>,
    other_value_serde: Arc<dyn Serde<VO>>,
}

impl<K, V, VO> StreamJoined<K, V, VO> {
    /// A join named `name`, keys and both sides' values with these serdes.
    pub fn with(
        name: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
        other_value_serde: impl Serde<VO>,
    ) -> StreamJoined<K, V, VO> {
        StreamJoined {
            name: name.to_owned(),
            key_serde: Arc::new(key_serde),
            value_serde: Arc::new(value_serde),
            other_value_serde: Arc::new(other_value_serde),
        }
    }
}

/// Which stream–stream join: which sides' records that join nothing are
/// passed on (with `None` for the other side) once their window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamJoin {
    Inner,
    Left,
    Outer,
}

/// A side of a stream–stream join, as bytes in keys of the shared store
/// of records that joined nothing yet.
const LEFT: u8 = 0;
const RIGHT: u8 = 1;

/// The processor of one side of a table–table join: an update of this
/// side (value `A`) looks the key up in the other side (`B`, through
/// `other`) and passes on the joined value, a deletion when the join stops
/// holding, or nothing when the other side is one the join needs and it
/// is missing. `join` takes (this side, other side); `other_is_left` says
/// which side the other is.
fn table_side<K, A, B, VR>(
    kind: TableJoin,
    other_is_left: bool,
    other: Arc<LookupFn<K, B>>,
    join: Arc<SideJoiner<A, B, VR>>,
) -> Arc<ProcessFn>
where
    K: Send + Sync + 'static,
    A: Send + Sync + 'static,
    B: Send + Sync + 'static,
    VR: Send + Sync + 'static,
{
    Arc::new(move |ctx, rec, out| {
        let k = cast::<K>(&rec.key)?;
        let this = cast::<Option<A>>(&rec.value)?;
        let that = other(ctx, k)?;
        if that.is_none() && kind.needs(other_is_left) {
            return Ok(());
        }
        let (left, right) = match other_is_left {
            false => (this.is_some(), that.is_some()),
            true => (that.is_some(), this.is_some()),
        };
        let joined = kind
            .holds(left, right)
            .then(|| join(this.as_ref(), that.as_ref()));
        out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(joined))));
        Ok(())
    })
}

/// A joiner over a side's value and the other side's, either possibly
/// missing, in the order (this side, other side).
type SideJoiner<A, B, VR> = dyn Fn(Option<&A>, Option<&B>) -> VR + Send + Sync;

/// One side of a stream–stream join, as its processor sees it.
struct Side<K, A, B, VR> {
    /// `LEFT` or `RIGHT`.
    side: u8,
    this_store: String,
    other_store: String,
    /// The store of records that joined nothing yet (left and outer joins).
    outer_store: Option<String>,
    /// The stores' changelog names (before the application id).
    this_changelog: String,
    other_changelog: String,
    outer_changelog: String,
    /// Whether this side's / the other side's unjoined records are passed on.
    this_outer: bool,
    other_outer: bool,
    /// How far back and forward from this side's record the other side's
    /// records join.
    back_ms: i64,
    forward_ms: i64,
    /// How far forward from the other side's records this side's join.
    other_forward_ms: i64,
    grace_ms: i64,
    retention_ms: i64,
    /// The join's slot: where the last purge of its stores stopped.
    slot: usize,
    key_serde: Arc<dyn Serde<K>>,
    this_serde: Arc<dyn Serde<A>>,
    other_serde: Arc<dyn Serde<B>>,
    join: Arc<SideJoiner<A, B, VR>>,
}

/// A key of the shared store of unjoined records: timestamp first, so
/// the records whose windows closed are one range from the start.
fn outer_key(timestamp: i64, side: u8, key: &[u8], seq: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(key.len() + 13);
    out.put_i64(timestamp);
    out.put_u8(side);
    out.put_slice(key);
    out.put_u32(seq);
    out.freeze()
}

/// [`outer_key`]'s parts: (timestamp, side, key).
fn split_outer_key(data: &[u8]) -> Option<(i64, u8, &[u8])> {
    let ts = i64::from_be_bytes(data.get(..8)?.try_into().ok()?);
    let side = *data.get(8)?;
    let key = data.get(9..data.len().checked_sub(4)?)?;
    Some((ts, side, key))
}

impl<K, A, B, VR> Side<K, A, B, VR>
where
    K: Send + Sync + 'static,
    A: Send + Sync + 'static,
    B: Send + Sync + 'static,
    VR: Send + Sync + 'static,
{
    /// The processor of this side's records.
    fn processor(self) -> Arc<ProcessFn> {
        Arc::new(move |ctx, rec, out| {
            let (k, v) = (cast::<K>(&rec.key)?, cast::<A>(&rec.value)?);
            let this_changelog = ctx.topic(&self.this_changelog, true);
            // Null keys and values join nothing, as in Kafka Streams.
            let (Some(key), Some(value)) = (
                self.key_serde.serialize_nullable(&this_changelog, k)?,
                self.this_serde.serialize_nullable(&this_changelog, v)?,
            ) else {
                return Ok(());
            };
            let t = rec.timestamp;
            // Records no window can reach any more, from both sides.
            purge_window_stores(
                ctx,
                self.slot,
                &[&self.this_store, &self.other_store],
                ctx.stream_time.saturating_sub(self.retention_ms),
                self.retention_ms,
            )?;
            self.emit_closed(ctx, rec, out)?;
            if t < ctx.stream_time.saturating_sub(self.retention_ms) {
                *ctx.dropped_late += 1;
                return Ok(());
            }
            // The other side's records within the window.
            let from = window_store_key(&key, t.saturating_sub(self.back_ms).max(0), 0);
            let to = window_store_key(&key, t.saturating_add(self.forward_ms).saturating_add(1), 0);
            let other_changelog = ctx.topic(&self.other_changelog, true);
            let mut joined = false;
            for (store_key, bytes) in ctx.store(&self.other_store)?.range(&from, &to)? {
                let Some((ot, seq)) = window_store_time(&store_key, &key) else {
                    continue;
                };
                joined = true;
                let other: B = self.other_serde.deserialize(&other_changelog, &bytes)?;
                let result = (self.join)(Some(v), Some(&other));
                out.push((0, joined_rec(rec, t.max(ot), result)));
                if self.other_outer
                    && let Some(outer) = &self.outer_store
                {
                    // The other record has joined now: it no longer waits
                    // to be passed on alone.
                    let waiting = outer_key(ot, 1 - self.side, &key, seq);
                    if ctx.store(outer)?.get(&waiting)?.is_some() {
                        let outer_changelog = ctx.topic(&self.outer_changelog, true);
                        ctx.log(outer, &outer_changelog, waiting, None, t)?;
                    }
                }
            }
            // This record, kept for the other side's records to come.
            let here = window_store_key(&key, t, 0);
            let next = window_store_key(&key, t.saturating_add(1), 0);
            let seq = ctx
                .store(&self.this_store)?
                .range(&here, &next)?
                .iter()
                .filter_map(|(k, _)| window_store_time(k, &key))
                .map(|(_, seq)| seq + 1)
                .max()
                .unwrap_or(0);
            ctx.log(
                &self.this_store,
                &this_changelog,
                window_store_key(&key, t, seq),
                Some(value.clone()),
                t,
            )?;
            if !joined
                && self.this_outer
                && let Some(outer) = &self.outer_store
            {
                if self.closed(self.side, t, ctx.stream_time) {
                    // Its window closed already: nothing can join it now.
                    let result = (self.join)(Some(v), None);
                    out.push((0, joined_rec(rec, t, result)));
                } else {
                    let outer_changelog = ctx.topic(&self.outer_changelog, true);
                    let waiting = outer_key(t, self.side, &key, seq);
                    ctx.log(outer, &outer_changelog, waiting, Some(value), t)?;
                }
            }
            Ok(())
        })
    }

    /// Whether a record of `side` at `t` can no longer join anything
    /// (its window and the grace after it are behind `stream_time`).
    fn closed(&self, side: u8, t: i64, stream_time: i64) -> bool {
        let forward = if side == self.side {
            self.forward_ms
        } else {
            self.other_forward_ms
        };
        t.saturating_add(forward).saturating_add(self.grace_ms) < stream_time
    }

    /// Passes on, each alone, the waiting unjoined records whose windows
    /// have closed, oldest first, and forgets them.
    fn emit_closed(
        &self,
        ctx: &mut Ctx<'_>,
        rec: &Rec,
        out: &mut Vec<(usize, Rec)>,
    ) -> Result<(), StreamsError> {
        let Some(outer) = &self.outer_store else {
            return Ok(());
        };
        // Keys begin with the timestamp: the records that may have closed
        // are those before this bound; `closed` decides for each side.
        let bound = ctx
            .stream_time
            .saturating_sub(self.grace_ms)
            .saturating_sub(self.forward_ms.min(self.other_forward_ms));
        if bound <= 0 {
            return Ok(());
        }
        let outer_changelog = ctx.topic(&self.outer_changelog, true);
        let waiting = ctx.store(outer)?.range(&[], &bound.to_be_bytes())?;
        for (store_key, bytes) in waiting {
            let Some((t, side, key)) = split_outer_key(&store_key) else {
                continue;
            };
            if !self.closed(side, t, ctx.stream_time) {
                continue;
            }
            let k = self.key_serde.deserialize(&outer_changelog, key)?;
            let result = if side == self.side {
                let v = self.this_serde.deserialize(&outer_changelog, &bytes)?;
                (self.join)(Some(&v), None)
            } else {
                let o = self.other_serde.deserialize(&outer_changelog, &bytes)?;
                (self.join)(None, Some(&o))
            };
            let alone = Rec {
                key: Arc::new(k),
                value: Arc::new(result),
                timestamp: t,
                headers: rec.headers.clone(),
            };
            out.push((0, alone));
            ctx.log(outer, &outer_changelog, store_key, None, rec.timestamp)?;
        }
        Ok(())
    }
}

/// Where a join side hangs off: the stream itself, or, when its key
/// changed, a repartition topic `topic` it goes through first, so that
/// records of one key meet in one task.
fn co_partitioned<K, V>(
    stream: &KStream<K, V>,
    topic: String,
    key_serde: &Arc<dyn Serde<K>>,
    value_serde: &Arc<dyn Serde<V>>,
) -> Vec<(NodeId, usize)>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    if !stream.key_changed {
        return stream.parents.clone();
    }
    round_trip(
        &stream.graph,
        &stream.parents,
        topic,
        true,
        Arc::clone(key_serde),
        Arc::clone(value_serde),
    )
}

/// The record a join passes on: `rec`'s key, `value`, at `timestamp`.
fn joined_rec<VR: Send + Sync + 'static>(rec: &Rec, timestamp: i64, value: VR) -> Rec {
    Rec {
        key: Arc::clone(&rec.key),
        value: Arc::new(value),
        timestamp,
        headers: rec.headers.clone(),
    }
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Each record joined with every record of `other` with the same key
    /// within `windows` of it, in both directions: a record joins the
    /// other side's records that came before it, and those that come
    /// after (Kafka's `KStream#join(KStream, ValueJoiner, JoinWindows,
    /// StreamJoined)`). A result carries the later timestamp of the two.
    pub fn join_stream<VO, VR>(
        &self,
        other: &KStream<K, VO>,
        joiner: impl Fn(&V, &VO) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_streams(
            other,
            StreamJoin::Inner,
            inner_joiner(joiner),
            windows,
            joined,
        )
    }

    /// As [`KStream::join_stream`], and each record of this stream that
    /// joined nothing is passed on with `None` once its window closes
    /// (Kafka's `leftJoin`, without the early unjoined results of Kafka
    /// Streams before 3.1).
    pub fn left_join_stream<VO, VR>(
        &self,
        other: &KStream<K, VO>,
        joiner: impl Fn(&V, Option<&VO>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_streams(
            other,
            StreamJoin::Left,
            left_joiner(joiner),
            windows,
            joined,
        )
    }

    /// As [`KStream::join_stream`], and each record of either stream that
    /// joined nothing is passed on with `None` for the other side once its
    /// window closes (Kafka's `outerJoin`).
    pub fn outer_join_stream<VO, VR>(
        &self,
        other: &KStream<K, VO>,
        joiner: impl Fn(Option<&V>, Option<&VO>) -> VR + Send + Sync + 'static,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        self.join_streams(other, StreamJoin::Outer, Arc::new(joiner), windows, joined)
    }

    fn join_streams<VO, VR>(
        &self,
        other: &KStream<K, VO>,
        kind: StreamJoin,
        joiner: Arc<Joiner<V, VO, VR>>,
        windows: JoinWindows,
        joined: StreamJoined<K, V, VO>,
    ) -> KStream<K, VR>
    where
        VO: Send + Sync + 'static,
        VR: Send + Sync + 'static,
    {
        if !Rc::ptr_eq(&self.graph, &other.graph) {
            self.graph
                .borrow_mut()
                .errors
                .push("a stream can only join a stream of the same builder".to_owned());
            return KStream::at(&self.graph, Vec::new(), false);
        }
        let name = &joined.name;
        let left_parents = co_partitioned(
            self,
            format!("{name}-left{REPARTITION_SUFFIX}"),
            &joined.key_serde,
            &joined.value_serde,
        );
        let right_parents = co_partitioned(
            other,
            format!("{name}-right{REPARTITION_SUFFIX}"),
            &joined.key_serde,
            &joined.other_value_serde,
        );
        let this_store = format!("{name}-this-join-store");
        let other_store = format!("{name}-other-join-store");
        let outer_store =
            (kind != StreamJoin::Inner).then(|| format!("{name}-outer-shared-join-store"));
        let slot = {
            let mut g = self.graph.borrow_mut();
            g.stores.push(this_store.clone());
            g.stores.push(other_store.clone());
            g.stores.extend(outer_store.clone());
            g.slots += 1;
            g.slots - 1
        };
        let changelog = |store: &str| format!("{store}{CHANGELOG_SUFFIX}");
        let (this_changelog, other_changelog) = (changelog(&this_store), changelog(&other_store));
        let outer_changelog = outer_store.as_deref().map(changelog).unwrap_or_default();
        let (left_outer, right_outer) = match kind {
            StreamJoin::Inner => (false, false),
            StreamJoin::Left => (true, false),
            StreamJoin::Outer => (true, true),
        };
        let left = Side {
            side: LEFT,
            this_store: this_store.clone(),
            other_store: other_store.clone(),
            outer_store: outer_store.clone(),
            this_changelog: this_changelog.clone(),
            other_changelog: other_changelog.clone(),
            outer_changelog: outer_changelog.clone(),
            this_outer: left_outer,
            other_outer: right_outer,
            back_ms: windows.before_ms,
            forward_ms: windows.after_ms,
            other_forward_ms: windows.before_ms,
            grace_ms: windows.grace_ms,
            retention_ms: windows.retention(),
            slot,
            key_serde: Arc::clone(&joined.key_serde),
            this_serde: Arc::clone(&joined.value_serde),
            other_serde: Arc::clone(&joined.other_value_serde),
            join: Arc::clone(&joiner),
        };
        let right = Side {
            side: RIGHT,
            this_store: other_store,
            other_store: this_store,
            outer_store,
            this_changelog: other_changelog,
            other_changelog: this_changelog,
            outer_changelog,
            this_outer: right_outer,
            other_outer: left_outer,
            back_ms: windows.after_ms,
            forward_ms: windows.before_ms,
            other_forward_ms: windows.after_ms,
            grace_ms: windows.grace_ms,
            retention_ms: windows.retention(),
            slot,
            key_serde: Arc::clone(&joined.key_serde),
            this_serde: Arc::clone(&joined.other_value_serde),
            other_serde: Arc::clone(&joined.value_serde),
            join: Arc::new(move |vo: Option<&VO>, v: Option<&V>| joiner(v, vo))
                as Arc<SideJoiner<VO, V, VR>>,
        };
        let (left, right) = {
            let (l, r) = (left.processor(), right.processor());
            let mut g = self.graph.borrow_mut();
            (
                g.add(Node::Processor(l), &left_parents),
                g.add(Node::Processor(r), &right_parents),
            )
        };
        KStream::at(&self.graph, vec![(left, 0), (right, 0)], false)
    }
}

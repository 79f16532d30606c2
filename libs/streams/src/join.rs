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

use crate::topology::{KTable, Node, ProcessFn, cast, with};

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

/// A table–table joiner over the two sides' current values.
type Joiner<V, VO, VR> = dyn Fn(Option<&V>, Option<&VO>) -> VR + Send + Sync;

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
        self.join_tables(
            other,
            TableJoin::Inner,
            Arc::new(move |v, vo| match (v, vo) {
                (Some(v), Some(vo)) => joiner(v, vo),
                _ => unreachable!("an inner join is only computed with both sides"),
            }),
        )
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
        self.join_tables(
            other,
            TableJoin::Left,
            Arc::new(move |v, vo| match v {
                Some(v) => joiner(v, vo),
                None => unreachable!("a left join is only computed with its left side"),
            }),
        )
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
        // An update of this (left) side.
        let left = {
            let joiner = Arc::clone(&joiner);
            let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
                let k = cast::<K>(&rec.key)?;
                let v = cast::<Option<V>>(&rec.value)?;
                let vo = other_lookup(ctx, k)?;
                if vo.is_none() && kind.needs(false) {
                    return Ok(());
                }
                let joined = kind
                    .holds(v.is_some(), vo.is_some())
                    .then(|| joiner(v.as_ref(), vo.as_ref()));
                out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(joined))));
                Ok(())
            });
            process
        };
        // An update of the other (right) side.
        let right = {
            let process: Arc<ProcessFn> = Arc::new(move |ctx, rec, out| {
                let k = cast::<K>(&rec.key)?;
                let vo = cast::<Option<VO>>(&rec.value)?;
                let v = this_lookup(ctx, k)?;
                if v.is_none() && kind.needs(true) {
                    return Ok(());
                }
                let joined = kind
                    .holds(v.is_some(), vo.is_some())
                    .then(|| joiner(v.as_ref(), vo.as_ref()));
                out.push((0, with(rec, Arc::clone(&rec.key), Arc::new(joined))));
                Ok(())
            });
            process
        };
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

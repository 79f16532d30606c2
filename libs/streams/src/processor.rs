//! The processor API (Kafka Streams' `KStream#process` with a
//! `Processor`): a step written by hand, with its own state stores and
//! punctuation, for what the DSL does not express.
//!
//! Each task runs its own instance of the processor, made by the supplier
//! when the task first needs it and initialised then (where it schedules
//! its punctuations). Punctuation calls [`Processor::punctuate`] every
//! interval of stream time (as records move it; a jump over several
//! intervals punctuates once) or of wall-clock time (checked after each
//! poll). A processor's stores are the task's, each logged to its
//! changelog like the DSL's. When a task moves, or an exactly-once
//! transaction aborts, the instance is made again: what it must keep
//! belongs in its stores.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::StreamsError;
use crate::topology::{CHANGELOG_SUFFIX, Ctx, KStream, Node, ProcessFn, PunctuateFn, Rec, cast};

/// What moves a punctuation's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunctuationType {
    /// The task's stream time: the largest timestamp it has processed.
    StreamTime,
    /// The wall clock (ms since the epoch).
    WallClockTime,
}

/// A hand-written step of a topology (Kafka's `Processor`), taking records
/// of key `K` and value `V` and passing on records of `KO` and `VO`.
pub trait Processor<K, V, KO, VO>: Send + 'static {
    /// Called once per task before the instance's first record or
    /// punctuation: schedule punctuations here.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, KO, VO>) -> Result<(), StreamsError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one record.
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, KO, VO>,
        key: &K,
        value: &V,
    ) -> Result<(), StreamsError>;

    /// Called at each scheduled punctuation of `kind`, at `timestamp`.
    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, KO, VO>,
        kind: PunctuationType,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let _ = (ctx, kind, timestamp);
        Ok(())
    }
}

/// A scheduled punctuation.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval_ms: i64,
    kind: PunctuationType,
    /// When it is due next (unset until first checked).
    next: Option<i64>,
}

/// What a processor sees of its task (Kafka's `ProcessorContext`).
pub struct ProcessorContext<'c, 'a, KO, VO> {
    ctx: &'c mut Ctx<'a>,
    out: &'c mut Vec<(usize, Rec)>,
    schedules: &'c mut Vec<Schedule>,
    /// The stores the processor was given.
    stores: &'c [String],
    timestamp: i64,
    headers: &'c [(String, Option<Bytes>)],
    types: PhantomData<fn() -> (KO, VO)>,
}

impl<KO, VO> ProcessorContext<'_, '_, KO, VO>
where
    KO: Send + Sync + 'static,
    VO: Send + Sync + 'static,
{
    /// Passes a record on, at the current record's (or punctuation's)
    /// timestamp.
    pub fn forward(&mut self, key: KO, value: VO) {
        let at = self.timestamp;
        self.forward_at(key, value, at);
    }

    /// Passes a record on at `timestamp`.
    pub fn forward_at(&mut self, key: KO, value: VO, timestamp: i64) {
        self.out.push((
            0,
            Rec {
                key: Arc::new(key),
                value: Arc::new(value),
                timestamp,
                headers: self.headers.to_vec(),
            },
        ));
    }

    /// Calls [`Processor::punctuate`] every `interval_ms` of `kind` time
    /// (Kafka's `schedule`): by stream time first at the next record, by
    /// wall-clock time first an interval from now.
    pub fn schedule(&mut self, interval_ms: i64, kind: PunctuationType) {
        self.schedules.push(Schedule {
            interval_ms: interval_ms.max(1),
            kind,
            next: None,
        });
    }

    /// The timestamp of the record being processed (or the punctuation's).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The task's stream time.
    pub fn stream_time(&self) -> i64 {
        self.ctx.stream_time
    }

    /// The value under `key` in store `store`.
    pub fn get(&mut self, store: &str, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        let store = self.own(store)?;
        self.ctx.store(&store)?.get(key)
    }

    /// Sets `key` to `value` in store `store` (`None` deletes it), logged
    /// to the store's changelog.
    pub fn put(
        &mut self,
        store: &str,
        key: Bytes,
        value: Option<Bytes>,
    ) -> Result<(), StreamsError> {
        let store = self.own(store)?;
        let changelog = self.ctx.topic(&format!("{store}{CHANGELOG_SUFFIX}"), true);
        let at = self.timestamp;
        self.ctx.log(&store, &changelog, key, value, at)
    }

    /// Every entry of store `store`, in key order.
    pub fn all(&mut self, store: &str) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let store = self.own(store)?;
        self.ctx.store(&store)?.all()
    }

    /// The entries of store `store` with keys from `from` (inclusive) to
    /// `to` (exclusive), in key order.
    pub fn range(
        &mut self,
        store: &str,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let store = self.own(store)?;
        self.ctx.store(&store)?.range(from, to)
    }

    /// `store`, if the processor was given it.
    fn own(&self, store: &str) -> Result<String, StreamsError> {
        if self.stores.iter().any(|s| s == store) {
            Ok(store.to_owned())
        } else {
            Err(StreamsError::Topology(format!(
                "the processor was not given store {store}"
            )))
        }
    }
}

/// A task's processor instance and its punctuations.
struct Instance<P> {
    processor: P,
    schedules: Vec<Schedule>,
}

impl<K, V> KStream<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Runs each record through a processor that `supplier` makes for
    /// each task, with stores `stores` (kept and logged like the DSL's
    /// stores), passing on what it forwards (Kafka's `KStream#process`).
    /// The records it forwards may have new keys: an aggregation after it
    /// repartitions first.
    pub fn process<KO, VO, P>(
        &self,
        supplier: impl Fn() -> P + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<KO, VO>
    where
        KO: Send + Sync + 'static,
        VO: Send + Sync + 'static,
        P: Processor<K, V, KO, VO>,
    {
        let stores: Arc<[String]> = stores.iter().map(|s| (*s).to_owned()).collect();
        let slot = {
            let mut g = self.graph.borrow_mut();
            g.stores.extend(stores.iter().cloned());
            g.slots += 1;
            g.slots - 1
        };
        let supplier = Arc::new(supplier);
        let process: Arc<ProcessFn> = {
            let (supplier, stores) = (Arc::clone(&supplier), Arc::clone(&stores));
            Arc::new(move |ctx, rec, out| {
                let (k, v) = (cast::<K>(&rec.key)?, cast::<V>(&rec.value)?);
                with_instance(ctx, slot, &*supplier, &stores, rec, out, |p, pc| {
                    p.process(pc, k, v)
                })
            })
        };
        let punctuate: Arc<PunctuateFn> = Arc::new(move |ctx, kind, now, out| {
            let none = Rec {
                key: Arc::new(()),
                value: Arc::new(()),
                timestamp: now,
                headers: Vec::new(),
            };
            with_instance(ctx, slot, &*supplier, &stores, &none, out, |p, pc| {
                let due: Vec<usize> = pc
                    .schedules
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.kind == kind)
                    .filter_map(|(i, s)| match s.next {
                        // Stream time: first at the first check; wall
                        // clock: an interval after it.
                        None if kind == PunctuationType::StreamTime => Some(i),
                        None => None,
                        Some(next) => (now >= next).then_some(i),
                    })
                    .collect();
                for s in pc.schedules.iter_mut().filter(|s| s.kind == kind) {
                    let next = match s.next {
                        None if kind == PunctuationType::StreamTime => now,
                        None => {
                            s.next = Some(now + s.interval_ms);
                            continue;
                        }
                        Some(next) => next,
                    };
                    if now >= next {
                        // A jump over several intervals punctuates once.
                        s.next = Some(now - (now - next) % s.interval_ms + s.interval_ms);
                    }
                }
                for _ in due {
                    p.punctuate(pc, kind, now)?;
                }
                Ok(())
            })
        });
        let id = {
            let mut g = self.graph.borrow_mut();
            let id = g.add(Node::Processor(process), &self.parents);
            g.punctuators.push((id, punctuate));
            id
        };
        KStream::at(&self.graph, vec![(id, 0)], true)
    }
}

/// Runs `f` on the task's processor instance in `slot` (made and
/// initialised first if the task has none yet), with a context over `ctx`.
fn with_instance<K, V, KO, VO, P>(
    ctx: &mut Ctx<'_>,
    slot: usize,
    supplier: &(dyn Fn() -> P + Send + Sync),
    stores: &[String],
    rec: &Rec,
    out: &mut Vec<(usize, Rec)>,
    f: impl FnOnce(&mut P, &mut ProcessorContext<'_, '_, KO, VO>) -> Result<(), StreamsError>,
) -> Result<(), StreamsError>
where
    KO: Send + Sync + 'static,
    VO: Send + Sync + 'static,
    P: Processor<K, V, KO, VO>,
{
    let (mut instance, fresh) = match ctx.slots.remove(&slot) {
        Some(any) => (
            any.downcast::<Instance<P>>().map_err(|_| {
                StreamsError::Topology(format!("state slot {slot} holds another type"))
            })?,
            false,
        ),
        None => (
            Box::new(Instance {
                processor: supplier(),
                schedules: Vec::new(),
            }),
            true,
        ),
    };
    let result = {
        let Instance {
            processor,
            schedules,
        } = &mut *instance;
        let mut pc = ProcessorContext {
            ctx: &mut *ctx,
            out: &mut *out,
            schedules,
            stores,
            timestamp: rec.timestamp,
            headers: &rec.headers,
            types: PhantomData,
        };
        let initialised = if fresh {
            processor.init(&mut pc)
        } else {
            Ok(())
        };
        initialised.and_then(|()| f(processor, &mut pc))
    };
    if fresh && result.is_err() {
        // Not kept: the next record or punctuation makes it again.
        return result;
    }
    ctx.slots.insert(slot, instance as Box<dyn Any + Send>);
    result
}

//! Client quotas, Kafka's model: limits set per user, per client id, or per
//! both (with defaults for each), kept in the metadata log, resolved with
//! Kafka's precedence, and measured over sliding windows so a client over
//! its limit is throttled (told to wait `throttle_time_ms`, and its
//! connection muted meanwhile) rather than refused.
//!
//! Four quotas, each resolved on its own: `producer_byte_rate` and
//! `consumer_byte_rate` (bytes a second, per broker), `request_percentage`
//! (time spent on the client's requests, in percent of one thread), and
//! `controller_mutation_rate` (partitions created or deleted a second, a
//! token bucket: a burst is admitted, what follows waits for tokens).
//!
//! The precedence (Kafka's): the most specific entity with the quota wins,
//! in this order: user and client id; user and default client id; user;
//! default user and client id; default user and default client id; default
//! user; client id; default client id. Everyone an entity covers shares one
//! meter: a user's quota is shared by all its client ids, a default user's
//! quota is metered per user.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Kafka's entity type of a user (the principal's name).
pub const USER: &str = "user";
/// Kafka's entity type of a client id.
pub const CLIENT_ID: &str = "client-id";

/// The quotas Kafka knows for users and client ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKey {
    /// `producer_byte_rate`: produced bytes a second.
    ProducerByteRate,
    /// `consumer_byte_rate`: fetched bytes a second.
    ConsumerByteRate,
    /// `request_percentage`: request handling time, percent of one thread.
    RequestPercentage,
    /// `controller_mutation_rate`: partitions created or deleted a second.
    ControllerMutationRate,
}

impl QuotaKey {
    /// Every quota, in Kafka's order.
    pub const ALL: [QuotaKey; 4] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
        QuotaKey::ControllerMutationRate,
    ];

    /// Kafka's config name.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
            QuotaKey::ControllerMutationRate => "controller_mutation_rate",
        }
    }

    /// The quota a config name stands for.
    pub fn parse(name: &str) -> Result<QuotaKey, QuotaError> {
        QuotaKey::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| QuotaError::UnknownKey(name.to_owned()))
    }

    /// Checks a value as Kafka does (the byte rates are whole numbers); a
    /// limit must also be positive and finite here.
    pub fn validate(self, value: f64) -> Result<(), QuotaError> {
        let invalid = |reason: &'static str| QuotaError::InvalidValue {
            key: self.name(),
            value,
            reason,
        };
        if !value.is_finite() || value <= 0.0 {
            return Err(invalid("it must be a positive number"));
        }
        let integral = matches!(
            self,
            QuotaKey::ProducerByteRate | QuotaKey::ConsumerByteRate
        );
        if integral && value.fract() != 0.0 {
            return Err(invalid("it must be a whole number of bytes"));
        }
        Ok(())
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a request to set, remove or describe quotas got wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    /// An entity without any part.
    #[error("Invalid empty client quota entity")]
    EmptyEntity,
    /// An entity or filter naming one type twice.
    #[error("Duplicate {0} entity type in the client quota entity")]
    DuplicateType(String),
    /// Neither `user` nor `client-id`.
    #[error("Unhandled client quota entity type: {0}")]
    UnknownType(String),
    /// Not one of the four quota names.
    #[error("Invalid configuration key {0}")]
    UnknownKey(String),
    /// A value the quota cannot take.
    #[error("Invalid value {value} for {key}: {reason}")]
    InvalidValue {
        /// The quota.
        key: &'static str,
        /// What was given.
        value: f64,
        /// Why it does not do.
        reason: &'static str,
    },
    /// A filter component of an unknown match type, or matching exactly
    /// without a name.
    #[error("{0}")]
    InvalidFilter(String),
}

/// One part of an entity: a name, or that type's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityName {
    /// Every user (or client id) without a quota of its own.
    Default,
    /// This one.
    Named(String),
}

impl EntityName {
    /// The name, `None` for the default (as Kafka's wire and records hold it).
    pub fn as_name(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }

    fn from_name(name: Option<&str>) -> EntityName {
        name.map_or(EntityName::Default, |n| EntityName::Named(n.to_owned()))
    }
}

/// Whom a set of quotas applies to: a user, a client id, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaEntity {
    /// The user part, if any.
    pub user: Option<EntityName>,
    /// The client id part, if any.
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// The entity of `(type, name)` parts (a `None` name is the default),
    /// checked as Kafka does.
    pub fn from_parts<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<QuotaEntity, QuotaError> {
        let mut entity = QuotaEntity::default();
        for (entity_type, name) in parts {
            *slot(&mut entity.user, &mut entity.client_id, entity_type)? =
                Some(EntityName::from_name(name));
        }
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err(QuotaError::EmptyEntity);
        }
        Ok(entity)
    }

    /// The `(type, name)` parts, user first.
    pub fn parts(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push((USER, u.as_name()));
        }
        if let Some(c) = &self.client_id {
            parts.push((CLIENT_ID, c.as_name()));
        }
        parts
    }
}

impl fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .parts()
            .into_iter()
            .map(|(t, n)| format!("{t}={}", n.unwrap_or("<default>")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The still empty place of an entity's or filter's part of `entity_type`:
/// Kafka refuses unknown types and a type named twice.
fn slot<'a, T>(
    user: &'a mut Option<T>,
    client_id: &'a mut Option<T>,
    entity_type: &str,
) -> Result<&'a mut Option<T>, QuotaError> {
    let slot = match entity_type {
        USER => user,
        CLIENT_ID => client_id,
        other => return Err(QuotaError::UnknownType(other.to_owned())),
    };
    if slot.is_some() {
        return Err(QuotaError::DuplicateType(entity_type.to_owned()));
    }
    Ok(slot)
}

/// How a filter component selects an entity's part (Kafka's match types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchType {
    /// 0: this name.
    Exact(String),
    /// 1: the default.
    Default,
    /// 2: any name, not the default.
    Specified,
}

impl MatchType {
    /// Kafka's match type code and the name it carries.
    pub fn code(&self) -> (i8, Option<&str>) {
        match self {
            MatchType::Exact(name) => (0, Some(name)),
            MatchType::Default => (1, None),
            MatchType::Specified => (2, None),
        }
    }

    /// The match type of Kafka's `code` with `name`, or why there is none.
    fn from_code(entity_type: &str, code: i8, name: Option<&str>) -> Result<Self, QuotaError> {
        match (code, name) {
            (0, Some(name)) => Ok(MatchType::Exact(name.to_owned())),
            (0, None) => Err(QuotaError::InvalidFilter(format!(
                "Request specified exact match for {entity_type} without a name"
            ))),
            (1, _) => Ok(MatchType::Default),
            (2, _) => Ok(MatchType::Specified),
            (other, _) => Err(QuotaError::InvalidFilter(format!(
                "Unexpected match type {other}"
            ))),
        }
    }
}

/// What DescribeClientQuotas selects: entities whose parts match every
/// component; with `strict`, entities with no other parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilter {
    user: Option<MatchType>,
    client_id: Option<MatchType>,
    strict: bool,
}

impl QuotaFilter {
    /// A filter of `(type, match type code, name)` components.
    pub fn new<'a>(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<QuotaFilter, QuotaError> {
        let mut filter = QuotaFilter {
            user: None,
            client_id: None,
            strict,
        };
        for (entity_type, match_type, name) in components {
            let slot = slot(&mut filter.user, &mut filter.client_id, entity_type)?;
            *slot = Some(MatchType::from_code(entity_type, match_type, name)?);
        }
        Ok(filter)
    }

    /// Whether `entity` is selected.
    pub fn matches(&self, entity: &QuotaEntity) -> bool {
        fn part(m: Option<&MatchType>, e: Option<&EntityName>, strict: bool) -> bool {
            match (m, e) {
                (None, None) => true,
                (None, Some(_)) => !strict,
                (Some(_), None) => false,
                (Some(MatchType::Exact(n)), Some(EntityName::Named(e))) => n == e,
                (Some(MatchType::Default), Some(EntityName::Default)) => true,
                (Some(MatchType::Specified), Some(EntityName::Named(_))) => true,
                _ => false,
            }
        }
        part(self.user.as_ref(), entity.user.as_ref(), self.strict)
            && part(
                self.client_id.as_ref(),
                entity.client_id.as_ref(),
                self.strict,
            )
    }
}

/// Every quota set, by entity.
#[derive(Debug, Clone, Default)]
pub struct ClientQuotas {
    entries: BTreeMap<QuotaEntity, BTreeMap<QuotaKey, f64>>,
    /// How many entities set each quota: a quota nobody set costs nothing.
    set: [usize; 4],
}

impl PartialEq for ClientQuotas {
    fn eq(&self, other: &ClientQuotas) -> bool {
        // By bits: a quota is a finite value, so this is equality.
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                a.0 == b.0
                    && a.1.len() == b.1.len()
                    && a.1
                        .iter()
                        .zip(b.1)
                        .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
            })
    }
}

impl Eq for ClientQuotas {}

/// The quota that applies to a client, and the meter it shares.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedQuota {
    /// The limit.
    pub limit: f64,
    /// Whom the meter counts: the user (when the entity has a user part)
    /// and the client id (when it has a client id part).
    pub meter: (Option<String>, Option<String>),
}

impl ClientQuotas {
    /// Sets `key` to `value` for `entity`.
    pub fn set(&mut self, entity: QuotaEntity, key: QuotaKey, value: f64) {
        if self
            .entries
            .entry(entity)
            .or_default()
            .insert(key, value)
            .is_none()
        {
            self.set[key.index()] += 1;
        }
    }

    /// Removes `key` for `entity` (nothing if it is not set).
    pub fn remove(&mut self, entity: &QuotaEntity, key: QuotaKey) {
        if let Some(values) = self.entries.get_mut(entity) {
            if values.remove(&key).is_some() {
                self.set[key.index()] -= 1;
            }
            if values.is_empty() {
                self.entries.remove(entity);
            }
        }
    }

    /// The quotas of `entity`.
    pub fn get(&self, entity: &QuotaEntity) -> Option<&BTreeMap<QuotaKey, f64>> {
        self.entries.get(entity)
    }

    /// Every entity with its quotas.
    pub fn iter(&self) -> impl Iterator<Item = (&QuotaEntity, &BTreeMap<QuotaKey, f64>)> {
        self.entries.iter()
    }

    /// Whether some entity sets `key`.
    pub fn any(&self, key: QuotaKey) -> bool {
        self.set[key.index()] > 0
    }

    /// The quota `key` that applies to `user` with `client_id`, by Kafka's
    /// precedence; `None` when no entity covers them.
    pub fn resolve(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<AppliedQuota> {
        if !self.any(key) {
            return None;
        }
        // Each level's parts: the client's own name, the default, or none.
        #[derive(Clone, Copy)]
        enum Part {
            Own,
            Default,
            Absent,
        }
        let part = |p: Part, own: &str| match p {
            Part::Own => Some(EntityName::Named(own.to_owned())),
            Part::Default => Some(EntityName::Default),
            Part::Absent => None,
        };
        use Part::{Absent, Own};
        let dflt = Part::Default;
        let order = [
            (Own, Own),
            (Own, dflt),
            (Own, Absent),
            (dflt, Own),
            (dflt, dflt),
            (dflt, Absent),
            (Absent, Own),
            (Absent, dflt),
        ];
        // Built level by level: the first that sets `key` ends the search.
        order.into_iter().find_map(|(u, c)| {
            let entity = QuotaEntity {
                user: part(u, user),
                client_id: part(c, client_id),
            };
            let limit = *self.entries.get(&entity)?.get(&key)?;
            Some(AppliedQuota {
                limit,
                meter: (
                    entity.user.map(|_| user.to_owned()),
                    entity.client_id.map(|_| client_id.to_owned()),
                ),
            })
        })
    }
}

/// How rates are measured (Kafka's `quota.window.num` and
/// `quota.window.size.seconds`): over `samples` windows of `window` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindows {
    /// Windows kept.
    pub samples: u32,
    /// Each window's span.
    pub window: Duration,
}

impl Default for QuotaWindows {
    fn default() -> Self {
        QuotaWindows {
            samples: 11,
            window: Duration::from_secs(1),
        }
    }
}

impl QuotaWindows {
    fn total(&self) -> Duration {
        self.window
            .checked_mul(self.samples.max(1))
            .unwrap_or(Duration::MAX)
    }
}

/// A rate over sliding windows (Kafka's `Rate` over a `SampledStat`).
#[derive(Debug, Default)]
struct Rate {
    /// Each window's start and what was recorded in it, oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl Rate {
    fn record(&mut self, windows: &QuotaWindows, now: Instant, value: f64) {
        self.expire(windows, now);
        match self.samples.back_mut() {
            Some((start, v)) if now.saturating_duration_since(*start) < windows.window => {
                *v += value;
            }
            _ => {
                self.samples.push_back((now, value));
                while self.samples.len() > windows.samples.max(1) as usize {
                    self.samples.pop_front();
                }
            }
        }
    }

    fn expire(&mut self, windows: &QuotaWindows, now: Instant) {
        let total = windows.total();
        while let Some((start, _)) = self.samples.front() {
            if now.saturating_duration_since(*start) >= total {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The seconds the rate is taken over (Kafka's `Rate.windowSize`):
    /// since the oldest window began, plus the whole windows missing to
    /// make all windows but the current one (so a first burst is not
    /// measured over a few milliseconds).
    fn span(&self, windows: &QuotaWindows, now: Instant) -> f64 {
        let window = windows.window.as_secs_f64().max(f64::MIN_POSITIVE);
        let elapsed = self.samples.front().map_or(0.0, |(start, _)| {
            now.saturating_duration_since(*start).as_secs_f64()
        });
        let full = (elapsed / window).floor();
        let min_full = f64::from(windows.samples.saturating_sub(1).max(1));
        if full < min_full {
            elapsed + (min_full - full) * window
        } else {
            elapsed
        }
    }

    /// Per second, and the seconds it was taken over.
    fn measure(&self, windows: &QuotaWindows, now: Instant) -> (f64, f64) {
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        let span = self.span(windows, now);
        (total / span, span)
    }
}

/// A byte rate measured over the quota windows, checked against a limit
/// that may change at any time (Kafka's replication quotas: a sensor
/// without a fixed bound).
#[derive(Debug, Default)]
pub struct RateMeter {
    windows: QuotaWindows,
    rate: Mutex<Rate>,
}

impl RateMeter {
    /// A meter over `windows`.
    pub fn new(windows: QuotaWindows) -> RateMeter {
        RateMeter {
            windows,
            rate: Mutex::new(Rate::default()),
        }
    }

    /// Counts `value` now.
    pub fn record(&self, value: f64) {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.record(&self.windows, Instant::now(), value);
    }

    /// The rate now, per second.
    pub fn rate(&self) -> f64 {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        rate.expire(&self.windows, now);
        rate.measure(&self.windows, now).0
    }

    /// Whether the rate is above `limit` a second.
    pub fn exceeds(&self, limit: f64) -> bool {
        self.rate() > limit
    }

    /// How long until the rate is back at `limit` a second with nothing
    /// more recorded (at most; windows expiring meanwhile only shorten it).
    pub fn wait_for(&self, limit: f64) -> Duration {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        rate.expire(&self.windows, now);
        let (per_sec, span) = rate.measure(&self.windows, now);
        if limit <= 0.0 || per_sec <= limit {
            return Duration::ZERO;
        }
        throttle(per_sec * span / limit - span, None)
    }
}

/// Kafka's token bucket for `controller_mutation_rate`: `limit` tokens a
/// second, up to a burst of a whole quota window's worth.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    limit: f64,
    at: Instant,
}

impl Bucket {
    fn burst(&self, windows: &QuotaWindows) -> f64 {
        self.limit * windows.total().as_secs_f64()
    }

    /// The tokens at `now`.
    fn at(&self, windows: &QuotaWindows, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.limit).min(self.burst(windows))
    }

    fn refill(&mut self, windows: &QuotaWindows, limit: f64, now: Instant) {
        self.tokens = self.at(windows, now);
        self.limit = limit;
        self.at = now;
    }
}

/// `secs` as a throttle: never negative, at most `i32::MAX` milliseconds
/// (the wire's `throttle_time_ms`), and at most `cap` when there is one.
fn throttle(secs: f64, cap: Option<Duration>) -> Duration {
    let max = Duration::from_millis(i32::MAX as u64);
    let d = if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
    };
    cap.map_or(d, |cap| d.min(cap))
}

/// A meter: who it counts, for which quota.
type MeterKey = (QuotaKey, Option<String>, Option<String>);

enum Meter {
    Rate(Rate),
    Bucket(Bucket),
}

/// The meters of every client a broker serves, and the throttle times
/// they earn. Rates idle for all their windows are dropped (nothing in
/// them counts any more), buckets once they are full again.
pub struct Throttler {
    windows: QuotaWindows,
    meters: Mutex<Meters>,
}

struct Meters {
    by_key: HashMap<MeterKey, (Meter, Instant)>,
    swept: Instant,
}

impl fmt::Debug for Throttler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttler")
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

impl Throttler {
    /// Meters measured over `windows`.
    pub fn new(windows: QuotaWindows) -> Throttler {
        Throttler {
            windows,
            meters: Mutex::new(Meters {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    fn with_meter<T>(
        &self,
        key: QuotaKey,
        quota: &AppliedQuota,
        now: Instant,
        new: impl FnOnce() -> Meter,
        f: impl FnOnce(&mut Meter) -> T,
    ) -> T {
        let mut meters = self
            .meters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let windows = self.windows;
        let total = windows.total();
        if now.saturating_duration_since(meters.swept) >= total {
            meters.by_key.retain(|_, (meter, used)| match meter {
                Meter::Rate(_) => now.saturating_duration_since(*used) < total,
                Meter::Bucket(b) => b.at(&windows, now) < b.burst(&windows),
            });
            meters.swept = now;
        }
        let (user, client) = quota.meter.clone();
        let entry = meters
            .by_key
            .entry((key, user, client))
            .or_insert_with(|| (new(), now));
        entry.1 = now;
        f(&mut entry.0)
    }

    /// Records `value` (bytes, or percent-seconds of request time) against
    /// `quota` and returns how long the client must wait for its rate to
    /// come back under the limit (zero when it is under). As in Kafka, a
    /// byte rate's wait has no bound and request time's is one window.
    pub fn record(&self, key: QuotaKey, quota: &AppliedQuota, value: f64) -> Duration {
        let now = Instant::now();
        let windows = self.windows;
        self.with_meter(
            key,
            quota,
            now,
            || Meter::Rate(Rate::default()),
            |meter| {
                let Meter::Rate(rate) = meter else {
                    return Duration::ZERO;
                };
                rate.record(&windows, now, value);
                let (measured, span) = rate.measure(&windows, now);
                if measured <= quota.limit {
                    return Duration::ZERO;
                }
                // Kafka's: how long until the average over the span is back
                // at the limit.
                let over = (measured - quota.limit) / quota.limit;
                let cap = (key == QuotaKey::RequestPercentage).then_some(windows.window);
                throttle(over * span, cap)
            },
        )
    }

    /// Takes back what [`Throttler::record`] recorded (a throttled fetch
    /// sends nothing, so it costs nothing).
    pub fn unrecord(&self, key: QuotaKey, quota: &AppliedQuota, value: f64) {
        let now = Instant::now();
        let windows = self.windows;
        self.with_meter(
            key,
            quota,
            now,
            || Meter::Rate(Rate::default()),
            |meter| {
                if let Meter::Rate(rate) = meter {
                    rate.record(&windows, now, -value);
                }
            },
        );
    }

    /// Admits a mutation of `partitions` partitions under a
    /// `controller_mutation_rate` quota (KIP-599). `strict` (Kafka's mode for
    /// new request versions): refused with the time to wait when the client
    /// has no tokens left, else admitted without a wait, even if it
    /// overdraws. Not `strict` (old request versions): always admitted, with
    /// the time to wait for the tokens it overdrew. Neither wait has a bound.
    pub fn mutate(
        &self,
        quota: &AppliedQuota,
        partitions: u32,
        strict: bool,
    ) -> Result<Duration, Duration> {
        let now = Instant::now();
        let windows = self.windows;
        self.with_meter(
            QuotaKey::ControllerMutationRate,
            quota,
            now,
            || {
                let bucket = Bucket {
                    tokens: 0.0,
                    limit: quota.limit,
                    at: now,
                };
                Meter::Bucket(Bucket {
                    tokens: bucket.burst(&windows),
                    ..bucket
                })
            },
            |meter| {
                let Meter::Bucket(bucket) = meter else {
                    return Ok(Duration::ZERO);
                };
                bucket.refill(&windows, quota.limit, now);
                let wait = |tokens: f64| throttle(-tokens / quota.limit, None);
                if strict {
                    if bucket.tokens < 0.0 {
                        return Err(wait(bucket.tokens));
                    }
                    bucket.tokens -= f64::from(partitions);
                    return Ok(Duration::ZERO);
                }
                bucket.tokens -= f64::from(partitions);
                Ok(wait(bucket.tokens))
            },
        )
    }
}

/// Request time as `request_percentage` meters it: percent-seconds of one
/// thread (100 ms of work is 10).
pub fn request_time_units(time: Duration) -> f64 {
    time.as_secs_f64() * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_meter_allows_a_first_burst_then_says_how_long_to_wait() {
        let meter = RateMeter::new(QuotaWindows::default());
        // Ten windows' worth of the limit passes at once (Kafka's windowing).
        meter.record(10_000.0);
        assert!(!meter.exceeds(1_000.0));
        assert_eq!(meter.wait_for(1_000.0), Duration::ZERO);
        meter.record(5_000.0);
        assert!(meter.exceeds(1_000.0));
        let wait = meter.wait_for(1_000.0).as_secs_f64();
        // 15,000 bytes at 1,000 a second: 15 s of span, 10 of them counted already.
        assert!((4.9..=5.0).contains(&wait), "{wait}");
        assert!(!meter.exceeds(1e9));
    }

    fn entity(user: Option<Option<&str>>, client: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(EntityName::from_name),
            client_id: client.map(EntityName::from_name),
        }
    }

    #[test]
    fn entities_are_checked_as_kafka_does() {
        assert_eq!(QuotaEntity::from_parts([]), Err(QuotaError::EmptyEntity));
        assert_eq!(
            QuotaEntity::from_parts([(USER, Some("a")), (USER, None)]),
            Err(QuotaError::DuplicateType(USER.into()))
        );
        assert_eq!(
            QuotaEntity::from_parts([("ip", Some("1.2.3.4"))]),
            Err(QuotaError::UnknownType("ip".into()))
        );
        let e = QuotaEntity::from_parts([(CLIENT_ID, None), (USER, Some("alice"))]).unwrap();
        assert_eq!(e, entity(Some(Some("alice")), Some(None)));
        assert_eq!(e.to_string(), "user=alice,client-id=<default>");
        assert_eq!(e.parts(), vec![(USER, Some("alice")), (CLIENT_ID, None)]);
    }

    #[test]
    fn values_are_checked() {
        assert!(QuotaKey::ProducerByteRate.validate(1024.0).is_ok());
        assert!(QuotaKey::ProducerByteRate.validate(10.5).is_err());
        assert!(QuotaKey::RequestPercentage.validate(12.5).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(QuotaKey::ControllerMutationRate.validate(bad).is_err());
        }
        assert_eq!(
            QuotaKey::parse("producer_byte_rate"),
            Ok(QuotaKey::ProducerByteRate)
        );
        assert!(QuotaKey::parse("connection_creation_rate").is_err());
    }

    #[test]
    fn the_most_specific_entity_wins_in_kafkas_order() {
        let k = QuotaKey::ProducerByteRate;
        let levels = [
            (entity(None, Some(None)), 8.0),
            (entity(None, Some(Some("c"))), 7.0),
            (entity(Some(None), None), 6.0),
            (entity(Some(None), Some(None)), 5.0),
            (entity(Some(None), Some(Some("c"))), 4.0),
            (entity(Some(Some("u")), None), 3.0),
            (entity(Some(Some("u")), Some(None)), 2.0),
            (entity(Some(Some("u")), Some(Some("c"))), 1.0),
        ];
        let mut q = ClientQuotas::default();
        assert_eq!(q.resolve(k, "u", "c"), None);
        // Each level added beats every one before it.
        for (e, v) in &levels {
            q.set(e.clone(), k, *v);
            assert_eq!(q.resolve(k, "u", "c").map(|a| a.limit), Some(*v));
        }
        // Others fall through to what covers them.
        assert_eq!(q.resolve(k, "other", "c").map(|a| a.limit), Some(4.0));
        assert_eq!(q.resolve(k, "u", "x").map(|a| a.limit), Some(2.0));
        // And a quota is resolved on its own.
        assert_eq!(q.resolve(QuotaKey::ConsumerByteRate, "u", "c"), None);
        // The meters: a user quota is shared by the user's client ids.
        q.remove(&levels[7].0, k);
        q.remove(&levels[6].0, k);
        let a = q.resolve(k, "u", "c").unwrap();
        assert_eq!(a.meter, (Some("u".into()), None));
        q.remove(&levels[5].0, k);
        let a = q.resolve(k, "u", "c").unwrap();
        assert_eq!(a.meter, (Some("u".into()), Some("c".into())));
        for (e, _) in &levels {
            q.remove(e, k);
        }
        assert!(!q.any(k));
        assert_eq!(q, ClientQuotas::default());
    }

    #[test]
    fn filters_match_as_kafkas() {
        let alice = entity(Some(Some("alice")), None);
        let alice_c = entity(Some(Some("alice")), Some(Some("c")));
        let default_user = entity(Some(None), None);
        let f = QuotaFilter::new([(USER, 0, Some("alice"))], false).unwrap();
        assert!(f.matches(&alice) && f.matches(&alice_c) && !f.matches(&default_user));
        let f = QuotaFilter::new([(USER, 0, Some("alice"))], true).unwrap();
        assert!(f.matches(&alice) && !f.matches(&alice_c));
        let f = QuotaFilter::new([(USER, 1, None)], false).unwrap();
        assert!(f.matches(&default_user) && !f.matches(&alice));
        let f = QuotaFilter::new([(USER, 2, None)], false).unwrap();
        assert!(f.matches(&alice) && !f.matches(&default_user));
        let all = QuotaFilter::new([], false).unwrap();
        assert!(all.matches(&alice_c));
        assert!(QuotaFilter::new([(USER, 0, None)], false).is_err());
        assert!(QuotaFilter::new([(USER, 3, None)], false).is_err());
        assert!(QuotaFilter::new([(USER, 1, None), (USER, 2, None)], false).is_err());
    }

    fn quota(limit: f64) -> AppliedQuota {
        AppliedQuota {
            limit,
            meter: (Some("u".into()), None),
        }
    }

    #[test]
    fn a_client_over_its_rate_waits_until_the_average_is_back() {
        let t = Throttler::new(QuotaWindows::default());
        let q = quota(1000.0);
        // 5,000 bytes over the minimum span of 10 s is 500/s: under.
        assert_eq!(
            t.record(QuotaKey::ProducerByteRate, &q, 5000.0),
            Duration::ZERO
        );
        // 20,000 more is 2,500/s: 1.5 times over, so 15 s (a byte rate's
        // wait has no bound, as in Kafka).
        let wait = t.record(QuotaKey::ProducerByteRate, &q, 20_000.0);
        assert!(
            wait > Duration::from_millis(14_900) && wait <= Duration::from_secs(15),
            "{wait:?}"
        );
        // Request time's wait is bounded by one window.
        let cpu = quota(1.0);
        let wait = t.record(QuotaKey::RequestPercentage, &cpu, 500.0);
        assert_eq!(wait, Duration::from_secs(1));
        // Another client id of the same user shares the meter; another
        // user does not.
        let other = quota(1000.0);
        assert!(t.record(QuotaKey::ProducerByteRate, &other, 1.0) > Duration::ZERO);
        let stranger = AppliedQuota {
            limit: 1000.0,
            meter: (Some("v".into()), None),
        };
        assert_eq!(
            t.record(QuotaKey::ProducerByteRate, &stranger, 1.0),
            Duration::ZERO
        );
        // Taking back a fetch that was not sent brings the rate down again.
        t.unrecord(QuotaKey::ProducerByteRate, &q, 20_001.0);
        assert_eq!(
            t.record(QuotaKey::ProducerByteRate, &q, 0.0),
            Duration::ZERO
        );
        // Moderately over: (12,000/10 s - 1,000)/1,000 of 10 s is 2 s.
        let t = Throttler::new(QuotaWindows::default());
        let wait = t.record(QuotaKey::ProducerByteRate, &q, 12_000.0);
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_millis(2000),
            "{wait:?}"
        );
    }

    #[test]
    fn mutations_spend_a_burst_then_wait_for_tokens() {
        let t = Throttler::new(QuotaWindows::default());
        // 2 partitions a second: a burst of 22.
        let q = quota(2.0);
        assert_eq!(t.mutate(&q, 20, true), Ok(Duration::ZERO));
        // Strict: overdrawing is admitted once, without a wait (Kafka's
        // strict quota throttles only what it refuses).
        assert_eq!(t.mutate(&q, 6, true), Ok(Duration::ZERO));
        // Then refused until the tokens are back (4 missing: about 2 s).
        let refused = t.mutate(&q, 1, true).unwrap_err();
        assert!(
            refused > Duration::from_millis(1900) && refused <= Duration::from_secs(2),
            "{refused:?}"
        );
        // Old request versions are never refused, only throttled.
        let permissive = t.mutate(&q, 1, false).unwrap();
        assert!(permissive > refused, "{permissive:?} {refused:?}");
        // A limit so small the wait would overflow a Duration: the wire's
        // largest throttle, not a panic.
        let tiny = AppliedQuota {
            limit: 1e-300,
            meter: (Some("tiny".into()), None),
        };
        assert_eq!(t.mutate(&tiny, 1_000_000, false).map(|_| ()), Ok(()));
        assert_eq!(
            t.mutate(&tiny, 1, true),
            Err(Duration::from_millis(i32::MAX as u64))
        );
    }

    #[test]
    fn request_time_is_in_percent_seconds() {
        assert_eq!(request_time_units(Duration::from_millis(100)), 10.0);
    }
}

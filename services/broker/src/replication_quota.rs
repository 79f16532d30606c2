//! Replication throttles (Kafka's replication quotas): while a reassignment
//! copies a partition to a new replica, the copying can be held to a byte
//! rate so producers and consumers keep the disks and network.
//!
//! A replica is throttled when its topic lists it in
//! `leader.replication.throttled.replicas` (on the leader's side) or
//! `follower.replication.throttled.replicas` (on the follower's side) and
//! the follower is out of sync: a replica in the ISR is never held back, so
//! acks=all produces never wait on a throttle. Each broker measures the
//! bytes of throttled replicas it sends as leader and fetches as follower
//! against its `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate` (dynamic broker configs); once a
//! rate is over its limit, throttled partitions are left out of fetch
//! answers (leader) or fetch requests (follower) until it falls back.

use std::sync::Arc;

use runnel_common::metadata::{FOLLOWER_THROTTLED_RATE, LEADER_THROTTLED_RATE};
use runnel_common::quota::{QuotaWindows, RateMeter};

use crate::metadata::MetadataCache;

/// Which end of replication a throttle holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What this broker's leaders send to followers.
    Leader,
    /// What this broker's followers fetch.
    Follower,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Leader => LEADER_THROTTLED_RATE,
            Side::Follower => FOLLOWER_THROTTLED_RATE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Side::Leader => "leader",
            Side::Follower => "follower",
        }
    }
}

/// This broker's two replication meters and the limits the metadata sets.
#[derive(Debug)]
pub struct ReplicationQuotas {
    me: i32,
    metadata: Arc<MetadataCache>,
    leader: RateMeter,
    follower: RateMeter,
}

impl ReplicationQuotas {
    /// The throttles of broker `me`, limited by `metadata`'s dynamic configs.
    pub fn new(me: i32, metadata: Arc<MetadataCache>) -> ReplicationQuotas {
        // Kafka's `replication.quota.window.num` and `.size.seconds` defaults.
        let windows = QuotaWindows::default();
        ReplicationQuotas {
            me,
            metadata,
            leader: RateMeter::new(windows),
            follower: RateMeter::new(windows),
        }
    }

    fn meter(&self, side: Side) -> &RateMeter {
        match side {
            Side::Leader => &self.leader,
            Side::Follower => &self.follower,
        }
    }

    /// The limit in bytes a second, if one is set.
    pub fn limit(&self, side: Side) -> Option<f64> {
        self.metadata.with(|image| {
            image
                .broker_config(self.me, side.key())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v as f64)
        })
    }

    /// Whether throttled replicas must wait: their bytes are over the limit.
    pub fn exceeded(&self, side: Side) -> bool {
        self.limit(side)
            .is_some_and(|limit| self.meter(side).exceeds(limit))
    }

    /// How long until throttled replicas may copy again (zero when they may
    /// now), capped at `cap`.
    pub fn wait(&self, side: Side, cap: std::time::Duration) -> std::time::Duration {
        self.limit(side).map_or(std::time::Duration::ZERO, |limit| {
            self.meter(side).wait_for(limit).min(cap)
        })
    }

    /// Counts `bytes` copied for throttled replicas.
    pub fn record(&self, side: Side, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.meter(side).record(bytes as f64);
        metrics::counter!("runnel_broker_replication_throttled_bytes_total", "side" => side.label())
            .increment(bytes as u64);
    }
}

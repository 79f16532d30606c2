//! Runnel's service-to-service gRPC APIs.
//!
//! Generated at build time from the versioned packages under `proto/` (tonic
//! for services, prost for messages). Nothing here is hand-written except the
//! module tree that mirrors the proto packages; domain types live in the
//! crates that use these messages.

#![allow(missing_docs, clippy::all)]

/// `runnel.common.v1`: error codes and details shared by every API.
pub mod common {
    /// Version 1 of the common package.
    pub mod v1 {
        tonic::include_proto!("runnel.common.v1");
    }
}

/// `runnel.metadata.v1`: the records of the cluster metadata log.
pub mod metadata {
    /// Version 1 of the metadata records.
    pub mod v1 {
        tonic::include_proto!("runnel.metadata.v1");
    }
}

/// `runnel.controller.v1`: broker lifecycle, topic admin, configs, metadata watch.
pub mod controller {
    /// Version 1 of the controller API.
    pub mod v1 {
        tonic::include_proto!("runnel.controller.v1");
    }
}

/// `runnel.broker.v1`: produce, fetch and offset lookups against brokers.
pub mod broker {
    /// Version 1 of the broker data-plane API.
    pub mod v1 {
        tonic::include_proto!("runnel.broker.v1");
    }
}

/// `runnel.coordinator.v1`: the group coordinator's API and the records of
/// the `__consumer_offsets` topic.
pub mod coordinator {
    /// Version 1 of the coordinator's records.
    pub mod v1 {
        tonic::include_proto!("runnel.coordinator.v1");
    }
}

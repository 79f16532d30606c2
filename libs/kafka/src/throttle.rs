//! Quota throttling on the wire (KIP-219): the `throttle_time_ms` a
//! response carries, and whether the client waits it out itself or the
//! broker must hold the answer back.

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ResponseKind};

/// Whether a client at `version` of `api_key` throttles itself on the
/// response's `throttle_time_ms` (KIP-219): the broker then answers at once
/// and mutes the connection; to an older client it answers late instead.
pub fn client_throttles(api_key: ApiKey, version: i16) -> bool {
    let from = match api_key {
        ApiKey::Fetch => 8,
        ApiKey::Produce | ApiKey::Metadata => 6,
        ApiKey::OffsetCommit | ApiKey::OffsetFetch => 4,
        ApiKey::JoinGroup
        | ApiKey::ListOffsets
        | ApiKey::CreateTopics
        | ApiKey::OffsetForLeaderEpoch => 3,
        ApiKey::FindCoordinator
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::SyncGroup
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::ApiVersions
        | ApiKey::DeleteTopics
        | ApiKey::DescribeConfigs => 2,
        ApiKey::DeleteRecords
        | ApiKey::InitProducerId
        | ApiKey::AddPartitionsToTxn
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn
        | ApiKey::TxnOffsetCommit
        | ApiKey::DescribeAcls
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::AlterConfigs
        | ApiKey::CreatePartitions
        | ApiKey::DeleteGroups
        | ApiKey::SaslAuthenticate => 1,
        // Every API younger than KIP-219 was born throttling itself.
        _ => 0,
    };
    version >= from
}

/// Sets `throttle_time_ms` on a response that has the field (raised, never
/// lowered: a handler's own throttle stands if it is longer).
pub fn set_throttle_time(response: &mut ResponseKind, throttle: Duration) {
    let ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    macro_rules! raise {
        ($($kind:ident),* $(,)?) => {
            match response {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms),)*
                _ => {}
            }
        };
    }
    raise!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        DeleteGroups,
        CreatePartitions,
        IncrementalAlterConfigs,
        DescribeCluster,
        DescribeProducers,
        ConsumerGroupHeartbeat,
        ConsumerGroupDescribe,
        DescribeTopicPartitions,
        DescribeTransactions,
        ListTransactions,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeClientQuotas,
        AlterClientQuotas,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        ElectLeaders,
        DescribeLogDirs,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ProduceResponse};

    #[test]
    fn old_versions_are_held_back_new_ones_throttle_themselves() {
        assert!(!client_throttles(ApiKey::Produce, 5));
        assert!(client_throttles(ApiKey::Produce, 6));
        assert!(!client_throttles(ApiKey::Fetch, 7));
        assert!(client_throttles(ApiKey::Fetch, 8));
        assert!(client_throttles(ApiKey::DescribeClientQuotas, 0));
    }

    #[test]
    fn the_longer_throttle_stands() {
        let mut r = ResponseKind::Produce(ProduceResponse::default().with_throttle_time_ms(500));
        set_throttle_time(&mut r, Duration::from_millis(200));
        let ResponseKind::Produce(p) = &r else {
            unreachable!()
        };
        assert_eq!(p.throttle_time_ms, 500);
        let mut r = ResponseKind::Fetch(FetchResponse::default());
        set_throttle_time(&mut r, Duration::from_millis(1200));
        let ResponseKind::Fetch(f) = &r else {
            unreachable!()
        };
        assert_eq!(f.throttle_time_ms, 1200);
    }
}

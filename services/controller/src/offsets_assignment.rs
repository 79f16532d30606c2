//! Sharing the partitions of `__consumer_offsets` among live group
//! coordinators.
//!
//! A partition keeps its owner while that owner's registration is live;
//! partitions of a fenced or re-registered coordinator go to the least
//! loaded live ones, and a newly arrived coordinator takes partitions from
//! the most loaded until counts differ by at most one. Every move bumps the
//! partition's owner epoch, which the new owner writes with as its producer
//! epoch (under the partition's fixed producer id), so the brokers refuse
//! the writes of a previous owner that has not yet noticed the move.

use std::collections::BTreeMap;

use runnel_common::metadata::{MetadataImage, OFFSETS_TOPIC};
use runnel_proto::metadata::v1::{OffsetsPartitionOwner, OffsetsPartitionsAssigned};

/// The owner of a partition no live coordinator can take.
pub const NO_COORDINATOR: i32 = -1;

/// The largest owner epoch a producer epoch (an `i16`) can carry; past it a
/// partition gets a fresh producer id.
const MAX_OWNER_EPOCH: i32 = i16::MAX as i32 - 1;

/// The owners that must change for the current topic and coordinators,
/// or `None` when the assignment is already right.
pub fn reassign(image: &MetadataImage) -> Option<OffsetsPartitionsAssigned> {
    let topic = image.topics.get(OFFSETS_TOPIC)?;
    let live: BTreeMap<i32, i64> = image
        .live_coordinators()
        .map(|(id, c)| (id, c.epoch))
        .collect();
    // partition -> (coordinator, epoch) in the wanted assignment.
    let mut wanted: BTreeMap<i32, (i32, i64)> = BTreeMap::new();
    let mut load: BTreeMap<i32, Vec<i32>> = live.keys().map(|&id| (id, Vec::new())).collect();
    let mut orphans = Vec::new();
    for &p in topic.partitions.keys() {
        match image.offsets_owners.get(&p) {
            Some(o) if live.get(&o.coordinator_id) == Some(&o.coordinator_epoch) => {
                wanted.insert(p, (o.coordinator_id, o.coordinator_epoch));
                load.entry(o.coordinator_id).or_default().push(p);
            }
            _ => orphans.push(p),
        }
    }
    if live.is_empty() {
        for p in orphans {
            wanted.insert(p, (NO_COORDINATOR, -1));
        }
    } else {
        for p in orphans {
            let id = least_loaded(&load);
            wanted.insert(p, (id, live[&id]));
            load.entry(id).or_default().push(p);
        }
        // Even out: a coordinator that just joined takes its share.
        loop {
            let min = least_loaded(&load);
            let max = most_loaded(&load);
            if load[&max].len() <= load[&min].len() + 1 {
                break;
            }
            let Some(p) = load.get_mut(&max).and_then(Vec::pop) else {
                break;
            };
            wanted.insert(p, (min, live[&min]));
            load.entry(min).or_default().push(p);
        }
    }
    let mut next_producer_id = image.next_producer_id;
    let mut owners = Vec::new();
    for (p, (id, epoch)) in wanted {
        let old = image.offsets_owners.get(&p);
        if old.is_some_and(|o| o.coordinator_id == id && o.coordinator_epoch == epoch) {
            continue;
        }
        let (owner_epoch, producer_id) = match old {
            Some(o) if o.owner_epoch < MAX_OWNER_EPOCH => (o.owner_epoch + 1, o.producer_id),
            _ => {
                next_producer_id += 1;
                (0, next_producer_id - 1)
            }
        };
        owners.push(OffsetsPartitionOwner {
            partition: p,
            coordinator_id: id,
            coordinator_epoch: epoch,
            owner_epoch,
            producer_id,
        });
    }
    (!owners.is_empty()).then_some(OffsetsPartitionsAssigned {
        owners,
        next_producer_id,
    })
}

fn least_loaded(load: &BTreeMap<i32, Vec<i32>>) -> i32 {
    load.iter()
        .min_by_key(|(id, ps)| (ps.len(), **id))
        .map_or(NO_COORDINATOR, |(id, _)| *id)
}

fn most_loaded(load: &BTreeMap<i32, Vec<i32>>) -> i32 {
    load.iter()
        .max_by_key(|(id, ps)| (ps.len(), std::cmp::Reverse(**id)))
        .map_or(NO_COORDINATOR, |(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::metadata::v1::{
        CoordinatorFenced, CoordinatorRegistered, MetadataRecord, PartitionCreated, TopicCreated,
        metadata_record::Record,
    };

    struct Image(MetadataImage);

    impl Image {
        fn apply(&mut self, r: Record) {
            let offset = self.0.next_offset;
            self.0
                .apply(offset, &MetadataRecord { record: Some(r) })
                .unwrap();
        }

        fn settle(&mut self) -> usize {
            match reassign(&self.0) {
                Some(a) => {
                    let moved = a.owners.len();
                    self.apply(Record::OffsetsPartitionsAssigned(a));
                    assert!(reassign(&self.0).is_none(), "one pass settles");
                    moved
                }
                None => 0,
            }
        }

        fn register(&mut self, id: i32) -> i64 {
            let epoch = self.0.next_offset;
            self.apply(Record::CoordinatorRegistered(CoordinatorRegistered {
                coordinator_id: id,
                coordinator_epoch: epoch,
                endpoints: Vec::new(),
                incarnation_id: format!("{id}-{epoch}"),
            }));
            epoch
        }

        fn fence(&mut self, id: i32) {
            let epoch = self.0.coordinators[&id].epoch;
            self.apply(Record::CoordinatorFenced(CoordinatorFenced {
                coordinator_id: id,
                coordinator_epoch: epoch,
            }));
        }

        fn counts(&self) -> BTreeMap<i32, usize> {
            let mut c = BTreeMap::new();
            for o in self.0.offsets_owners.values() {
                *c.entry(o.coordinator_id).or_default() += 1;
            }
            c
        }
    }

    fn with_topic(partitions: i32) -> Image {
        let mut i = Image(MetadataImage::default());
        let id = vec![7u8; 16];
        i.apply(Record::TopicCreated(TopicCreated {
            name: OFFSETS_TOPIC.into(),
            topic_id: id.clone().into(),
        }));
        for p in 0..partitions {
            i.apply(Record::PartitionCreated(PartitionCreated {
                topic: OFFSETS_TOPIC.into(),
                topic_id: id.clone().into(),
                partition: p,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }));
        }
        i
    }

    #[test]
    fn nothing_to_assign_without_the_topic() {
        let mut i = Image(MetadataImage::default());
        i.register(1);
        assert!(reassign(&i.0).is_none());
    }

    #[test]
    fn partitions_wait_without_coordinators_then_all_go_to_the_first() {
        let mut i = with_topic(5);
        assert_eq!(i.settle(), 5);
        assert_eq!(i.counts(), BTreeMap::from([(NO_COORDINATOR, 5)]));
        i.register(1);
        assert_eq!(i.settle(), 5);
        assert_eq!(i.counts(), BTreeMap::from([(1, 5)]));
        let pids: Vec<i64> = i.0.offsets_owners.values().map(|o| o.producer_id).collect();
        assert_eq!(pids, vec![0, 1, 2, 3, 4], "a producer id per partition");
        assert_eq!(i.0.next_producer_id, 5);
        assert!(i.0.offsets_owners.values().all(|o| o.owner_epoch == 1));
    }

    #[test]
    fn a_new_coordinator_takes_its_share_and_a_fenced_one_gives_its_partitions_away() {
        let mut i = with_topic(50);
        i.register(1);
        i.settle();
        i.register(2);
        assert_eq!(i.settle(), 25, "only the new share moves");
        assert_eq!(i.counts(), BTreeMap::from([(1, 25), (2, 25)]));
        i.register(3);
        i.settle();
        assert_eq!(i.counts(), BTreeMap::from([(1, 17), (2, 17), (3, 16)]));
        let before = i.0.offsets_owners.clone();
        i.fence(2);
        assert_eq!(
            i.settle(),
            17,
            "only the fenced coordinator's partitions move"
        );
        assert_eq!(i.counts(), BTreeMap::from([(1, 25), (3, 25)]));
        for (p, o) in &i.0.offsets_owners {
            let old = &before[p];
            assert_eq!(
                o.producer_id, old.producer_id,
                "a partition keeps its producer id"
            );
            if old.coordinator_id == 2 {
                assert_eq!(o.owner_epoch, old.owner_epoch + 1, "a move bumps the epoch");
            } else {
                assert_eq!(o, old);
            }
        }
    }

    #[test]
    fn a_restarted_coordinator_is_a_new_owner() {
        let mut i = with_topic(4);
        i.register(1);
        i.settle();
        let epochs: Vec<i32> = i.0.offsets_owners.values().map(|o| o.owner_epoch).collect();
        let new_epoch = i.register(1);
        assert_eq!(i.settle(), 4);
        for (o, old) in i.0.offsets_owners.values().zip(epochs) {
            assert_eq!((o.coordinator_id, o.coordinator_epoch), (1, new_epoch));
            assert_eq!(o.owner_epoch, old + 1);
        }
    }

    #[test]
    fn owner_epochs_past_the_producer_epoch_range_take_a_fresh_producer_id() {
        let mut i = with_topic(1);
        i.register(1);
        i.settle();
        let mut o = i.0.offsets_owners[&0];
        o.owner_epoch = MAX_OWNER_EPOCH;
        i.0.offsets_owners.insert(0, o);
        i.register(2);
        i.fence(1);
        i.settle();
        let now = &i.0.offsets_owners[&0];
        assert_eq!((now.coordinator_id, now.owner_epoch), (2, 0));
        assert_ne!(now.producer_id, o.producer_id);
    }
}

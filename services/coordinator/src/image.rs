//! The metadata image as this coordinator follows it from the controller:
//! the SCRAM credentials and ACLs its gRPC API authenticates and
//! authorizes against. Followed only when security is on.

use std::time::Duration;

use parking_lot::RwLock;
use runnel_client::Cluster;
use runnel_common::backoff::Backoff;
use runnel_common::grpc_auth::ImageSource;
use runnel_common::metadata::MetadataImage;
use runnel_common::shutdown::CancellationToken;
use runnel_proto::controller::v1 as pb;

/// The image, applied record by record from the controller's stream.
#[derive(Debug, Default)]
pub struct FollowedImage {
    image: RwLock<MetadataImage>,
}

impl ImageSource for FollowedImage {
    fn with_image<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        f(&self.image.read())
    }
}

impl FollowedImage {
    /// Offset after the last applied record.
    pub fn applied_offset(&self) -> i64 {
        self.image.read().next_offset
    }

    /// Follows the controllers' metadata log until `shutdown`, from where
    /// it got to after a failure.
    pub async fn follow(
        self: std::sync::Arc<Self>,
        cluster: std::sync::Arc<Cluster>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let followed = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.follow_once(&cluster) => r,
            };
            if let Err(e) = followed {
                tracing::warn!(error = %e, "following the metadata log failed; again soon");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn follow_once(&self, cluster: &Cluster) -> Result<(), String> {
        let (_, mut controller) = cluster.controller().await.map_err(|e| e.to_string())?;
        let mut stream = controller
            .watch(pb::WatchRequest {
                from_offset: self.applied_offset(),
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        while let Some(batch) = stream.message().await.map_err(|e| e.to_string())? {
            let mut image = self.image.write();
            for event in &batch.events {
                if event.offset < image.next_offset {
                    continue; // applied before a reconnect
                }
                let Some(record) = &event.record else {
                    continue;
                };
                if let Err(e) = image.apply(event.offset, record) {
                    // Start over from the beginning of the log.
                    *image = MetadataImage::default();
                    return Err(format!("metadata record does not apply: {e}"));
                }
            }
        }
        Err("the metadata stream ended".into())
    }
}

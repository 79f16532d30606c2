//! The APIs and versions a broker serves, and the ApiVersions answer.

use std::collections::BTreeMap;

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Which versions of which APIs are served.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    ranges: BTreeMap<i16, (i16, i16)>,
    features: Vec<Feature>,
}

/// A cluster feature (KIP-584) as ApiVersions v3+ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// Kafka's feature name (`metadata.version`, `group.version`, ...).
    pub name: &'static str,
    /// Lowest level this broker supports.
    pub min: i16,
    /// Highest level this broker supports.
    pub max: i16,
    /// The level the cluster runs at (0: not finalized, left out).
    pub finalized: i16,
}

impl Versions {
    /// Serves each `(api, min, max)`, narrowed to what the codec (and
    /// [`crate::legacy`] below it) knows.
    pub fn new(apis: &[(ApiKey, i16, i16)]) -> Versions {
        let mut ranges = BTreeMap::new();
        for (api, min, max) in apis {
            let known = api.valid_versions();
            // Some APIs go below the codec's range, written by hand.
            let oldest =
                crate::legacy::oldest_version(*api).map_or(known.min, |v| v.min(known.min));
            let (lo, hi) = ((*min).max(oldest), (*max).min(known.max));
            if lo <= hi {
                ranges.insert(*api as i16, (lo, hi));
            }
        }
        Versions {
            ranges,
            features: Vec::new(),
        }
    }

    /// Also reports `features` (supported and finalized) from ApiVersions v3.
    pub fn with_features(mut self, features: &[Feature]) -> Versions {
        self.features = features.to_vec();
        self
    }

    /// Whether `version` of `api` is served.
    pub fn supports(&self, api: ApiKey, version: i16) -> bool {
        self.ranges
            .get(&(api as i16))
            .is_some_and(|(lo, hi)| (*lo..=*hi).contains(&version))
    }

    /// The ApiVersions answer listing every served API (with `error_code`).
    pub fn response(&self, error_code: i16) -> ApiVersionsResponse {
        let mut r = ApiVersionsResponse::default();
        r.error_code = error_code;
        r.api_keys = self
            .ranges
            .iter()
            .map(|(key, (lo, hi))| {
                let mut v = ApiVersion::default();
                v.api_key = *key;
                v.min_version = *lo;
                v.max_version = *hi;
                v
            })
            .collect();
        r.supported_features = self
            .features
            .iter()
            .map(|f| {
                let mut k = SupportedFeatureKey::default();
                k.name = StrBytes::from_static_str(f.name);
                k.min_version = f.min;
                k.max_version = f.max;
                k
            })
            .collect();
        r.finalized_features = self
            .features
            .iter()
            .filter(|f| f.finalized > 0)
            .map(|f| {
                let mut k = FinalizedFeatureKey::default();
                k.name = StrBytes::from_static_str(f.name);
                k.min_version_level = f.finalized;
                k.max_version_level = f.finalized;
                k
            })
            .collect();
        // The features never change while a broker runs: one epoch for all.
        r.finalized_features_epoch = if r.finalized_features.is_empty() {
            -1
        } else {
            0
        };
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_narrowed_to_the_codec() {
        let v = Versions::new(&[(ApiKey::ApiVersions, 0, 99), (ApiKey::Metadata, 50, 60)]);
        assert!(v.supports(ApiKey::ApiVersions, 0));
        assert!(v.supports(
            ApiKey::ApiVersions,
            ApiKey::ApiVersions.valid_versions().max
        ));
        assert!(!v.supports(ApiKey::ApiVersions, 99));
        assert!(
            !v.supports(ApiKey::Metadata, 1),
            "an empty range is not served"
        );
        assert!(!v.supports(ApiKey::Produce, 9));
        assert_eq!(v.response(0).api_keys.len(), 1);
        let old = Versions::new(&[(ApiKey::Produce, 0, 13), (ApiKey::ListOffsets, 0, 10)]);
        assert!(old.supports(ApiKey::Produce, 0), "below the codec, by hand");
        assert!(
            !old.supports(ApiKey::ListOffsets, 0),
            "no hand-written ListOffsets v0"
        );
    }

    #[test]
    fn features_are_reported_and_only_levels_above_zero_finalized() {
        let v = Versions::new(&[(ApiKey::ApiVersions, 0, 4)]).with_features(&[
            Feature {
                name: "group.version",
                min: 0,
                max: 1,
                finalized: 1,
            },
            Feature {
                name: "transaction.version",
                min: 0,
                max: 0,
                finalized: 0,
            },
        ]);
        let r = v.response(0);
        assert_eq!(r.supported_features.len(), 2);
        assert_eq!(r.finalized_features.len(), 1);
        assert_eq!(r.finalized_features[0].max_version_level, 1);
        assert_eq!(r.finalized_features_epoch, 0);
    }
}

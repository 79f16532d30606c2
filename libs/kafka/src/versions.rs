//! The APIs and versions a broker serves, and the ApiVersions answer.

use std::collections::BTreeMap;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Which versions of which APIs are served.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    ranges: BTreeMap<i16, (i16, i16)>,
}

impl Versions {
    /// Serves each `(api, min, max)`, narrowed to what the codec knows.
    pub fn new(apis: &[(ApiKey, i16, i16)]) -> Versions {
        let mut ranges = BTreeMap::new();
        for (api, min, max) in apis {
            let known = api.valid_versions();
            let (lo, hi) = ((*min).max(known.min), (*max).min(known.max));
            if lo <= hi {
                ranges.insert(*api as i16, (lo, hi));
            }
        }
        Versions { ranges }
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
    }
}

//! Arbitrary bytes as a Kafka request stream: frames cut by `read_frame`
//! (with a small `socket.request.max.bytes`), each decoded with every API
//! at every version served: the codec's, and the old ones `legacy` reads
//! by hand (Produce v0–2, Fetch v0–3, OffsetCommit v0–1, CreateTopics
//! v0–1, DescribeConfigs v0).
//!
//! Properties: nothing panics, aborts or allocates past the input (the
//! codec's lengths are checked against the bytes left); a frame is never
//! larger than the limit; a request that decodes also encodes again.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runnel_kafka::frame::read_frame;
use runnel_kafka::kafka_protocol::messages::ApiKey;
use runnel_kafka::legacy;
use runnel_kafka::request::decode;
use runnel_kafka::versions::Versions;

const MAX: usize = 64 * 1024;

fn versions() -> &'static Versions {
    static ALL: OnceLock<Versions> = OnceLock::new();
    ALL.get_or_init(|| {
        let all: Vec<(ApiKey, i16, i16)> = (0..2000)
            .filter_map(|k| ApiKey::try_from(k).ok())
            .map(|k| (k, 0, i16::MAX))
            .collect();
        Versions::new(&all)
    })
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut input = data;
        loop {
            match read_frame(&mut input, MAX).await {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX);
                    if let Ok(request) = decode(frame, versions()) {
                        let mut out = bytes::BytesMut::new();
                        if legacy::handles(request.api_key, request.version) {
                            legacy::encode_request(request.version, &request.body, &mut out)
                                .expect("a decoded old request encodes again");
                        } else {
                            request
                                .body
                                .encode(&mut out, request.version)
                                .expect("a decoded request encodes again");
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
});

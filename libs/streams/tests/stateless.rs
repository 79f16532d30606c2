//! The stateless DSL against the in-memory driver: each operation's
//! semantics as Kafka Streams defines them.

use std::sync::{Arc, Mutex};

use runnel_streams::{
    I64Serde, JsonSerde, Nullable, OnDeserializationError, StreamsBuilder, StreamsConfig,
    StreamsError, StringSerde, TestDriver,
};

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn records_flow_through_filter_map_flat_map_and_peek_in_order_with_their_timestamps() {
    let b = StreamsBuilder::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    b.stream("lines", Nullable(StringSerde), StringSerde)
        .flat_map_values(|line: &String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .filter_not(|_, word| word == "the")
        .select_key(|_, word| word.clone())
        .peek(move |k, _| seen2.lock().unwrap().push(k.clone()))
        .map_values(|word| word.len() as i64)
        .to("lengths", StringSerde, I64Serde);
    let topology = b.build().unwrap();
    assert_eq!(topology.source_topics(), ["lines"]);
    assert_eq!(topology.sink_topics(), ["lengths"]);
    let mut d = TestDriver::new(topology, StreamsConfig::new("app"));
    let mut lines = d.input("lines", Nullable(StringSerde), StringSerde);
    lines.pipe(None, s("The cat sat"), 10).unwrap();
    lines.pipe(Some(s("k")), s("on THE mat"), 20).unwrap();
    let out = d.read("lengths", &StringSerde, &I64Serde).unwrap();
    assert_eq!(
        out,
        vec![
            (s("cat"), 3, 10),
            (s("sat"), 3, 10),
            (s("on"), 2, 20),
            (s("mat"), 3, 20)
        ]
    );
    assert_eq!(*seen.lock().unwrap(), ["cat", "sat", "on", "mat"]);
    assert!(
        d.read_raw("lengths").is_empty(),
        "read takes what was written"
    );
}

#[test]
fn branch_sends_each_record_to_its_first_match_and_merge_joins_streams() {
    let b = StreamsBuilder::new();
    let amounts = b.stream("amounts", StringSerde, I64Serde);
    let branches = amounts.branch(vec![
        Box::new(|_, v: &i64| *v < 0),
        Box::new(|_, v: &i64| *v < 100),
        Box::new(|_, v: &i64| *v < 1000),
    ]);
    branches[0].to("refunds", StringSerde, I64Serde);
    branches[1].to("small", StringSerde, I64Serde);
    // Large ones and refunds again, merged; anything >= 1000 matches no branch.
    branches[2]
        .merge(&branches[0])
        .map(|k, v| (format!("{k}!"), v * 10))
        .to("flagged", StringSerde, I64Serde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    let mut input = d.input("amounts", StringSerde, I64Serde);
    for (i, v) in [-5i64, 50, 500, 5000].into_iter().enumerate() {
        input.pipe(format!("a{i}"), v, i as i64).unwrap();
    }
    let read = |d: &mut TestDriver, t: &str| d.read(t, &StringSerde, &I64Serde).unwrap();
    assert_eq!(read(&mut d, "refunds"), [(s("a0"), -5, 0)]);
    assert_eq!(read(&mut d, "small"), [(s("a1"), 50, 1)]);
    assert_eq!(
        read(&mut d, "flagged"),
        [(s("a0!"), -50, 0), (s("a2!"), 5000, 2)],
        "the refund (first branch) is not also small; 5000 went nowhere"
    );
}

#[test]
fn a_record_that_does_not_deserialize_is_an_error_naming_the_topic() {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Click {
        user: String,
    }
    let b = StreamsBuilder::new();
    b.stream("clicks", StringSerde, JsonSerde::<Click>::new())
        .map_values(|c: &Click| c.user.clone())
        .to("users", StringSerde, StringSerde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.pipe_raw("clicks", Some(b"k"), Some(br#"{"user":"ann"}"#), 1)
        .unwrap();
    let e = d
        .pipe_raw("clicks", Some(b"k"), Some(b"not json"), 2)
        .unwrap_err();
    assert!(
        matches!(&e, StreamsError::Deserialize { timestamp: 2, source } if source.topic == "clicks" && source.serde == "json"),
        "{e}"
    );
    let e = d
        .pipe_raw("clicks", None, Some(br#"{"user":"bo"}"#), 3)
        .unwrap_err();
    assert!(e.to_string().contains("null where a value belongs"), "{e}");
    assert_eq!(
        d.read("users", &StringSerde, &StringSerde).unwrap(),
        [(s("k"), s("ann"), 1)],
        "nothing from the failed records"
    );
}

#[test]
fn log_and_continue_skips_and_counts_what_does_not_deserialize() {
    let b = StreamsBuilder::new();
    b.stream("n", StringSerde, I64Serde)
        .to("copy", StringSerde, I64Serde);
    let config = StreamsConfig {
        on_deserialization_error: OnDeserializationError::LogAndContinue,
        ..StreamsConfig::new("app")
    };
    let mut d = TestDriver::new(b.build().unwrap(), config);
    d.pipe_raw("n", Some(b"a"), Some(&1i64.to_be_bytes()), 1)
        .unwrap();
    d.pipe_raw("n", Some(b"b"), Some(b"three bytes?"), 2)
        .unwrap();
    d.pipe_raw("n", Some(b"c"), Some(&3i64.to_be_bytes()), 3)
        .unwrap();
    assert_eq!(
        d.read("copy", &StringSerde, &I64Serde).unwrap(),
        [(s("a"), 1, 1), (s("c"), 3, 3)]
    );
    assert_eq!(d.skipped_records(), 1);
}

#[test]
fn through_writes_the_stream_to_a_topic_and_goes_on_from_it() {
    let b = StreamsBuilder::new();
    b.stream("clicks", Nullable(StringSerde), StringSerde)
        .select_key(|_, page: &String| page.clone())
        .through("clicks-by-page", StringSerde, StringSerde)
        .map_values(|page: &String| page.len() as i64)
        .to("page-lengths", StringSerde, I64Serde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.pipe_raw("clicks", None, Some(b"/home"), 7).unwrap();
    assert_eq!(
        d.read("clicks-by-page", &StringSerde, &StringSerde)
            .unwrap(),
        [(s("/home"), s("/home"), 7)],
        "the records go through the topic, keyed as they are then"
    );
    assert_eq!(
        d.read("page-lengths", &StringSerde, &I64Serde).unwrap(),
        [(s("/home"), 5, 7)]
    );
}

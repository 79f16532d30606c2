//! Grouping and aggregations against the in-memory driver: the tables'
//! updates, the stores' changelogs and the repartition a key change needs.

use runnel_streams::{I64Serde, Nullable, StreamsBuilder, StreamsConfig, StringSerde, TestDriver};

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn word_count_repartitions_by_word_and_logs_every_update() {
    let b = StreamsBuilder::new();
    b.stream("lines", Nullable(StringSerde), StringSerde)
        .flat_map_values(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .group_by(|_, word| word.clone(), StringSerde, StringSerde)
        .count("counts")
        .to_stream()
        .to("word-counts", StringSerde, Nullable(I64Serde));
    let topology = b.build().unwrap();
    assert_eq!(topology.stores(), ["counts"]);
    let mut d = TestDriver::new(topology, StreamsConfig::new("wc"));
    let mut lines = d.input("lines", Nullable(StringSerde), StringSerde);
    lines.pipe(None, s("a b a"), 1).unwrap();
    lines.pipe(Some(s("x")), s("b"), 2).unwrap();
    assert_eq!(
        d.read("word-counts", &StringSerde, &I64Serde).unwrap(),
        [
            (s("a"), 1, 1),
            (s("b"), 1, 1),
            (s("a"), 2, 1),
            (s("b"), 2, 2)
        ]
    );
    // The internal topics carry the application id, as Kafka names them.
    let repartitioned = d
        .read("wc-counts-repartition", &StringSerde, &StringSerde)
        .unwrap();
    assert_eq!(repartitioned.len(), 4);
    assert_eq!(
        d.read("wc-counts-changelog", &StringSerde, &I64Serde)
            .unwrap(),
        [
            (s("a"), 1, 1),
            (s("b"), 1, 1),
            (s("a"), 2, 1),
            (s("b"), 2, 2)
        ],
        "every store update is in the changelog, in order"
    );
}

#[test]
fn reduce_and_aggregate_fold_each_key_and_drop_null_keys() {
    let b = StreamsBuilder::new();
    let orders = b.stream("orders", Nullable(StringSerde), I64Serde);
    let grouped = orders.group_by_key(Nullable(StringSerde), I64Serde);
    grouped.reduce("max", |a, b| *a.max(b)).to_stream().to(
        "max",
        Nullable(StringSerde),
        Nullable(I64Serde),
    );
    grouped
        .aggregate(
            "spent",
            || s("0"),
            |_, cents, total: String| (total.parse::<i64>().unwrap_or(0) + cents).to_string(),
            StringSerde,
        )
        .to_stream()
        .to("spent", Nullable(StringSerde), Nullable(StringSerde));
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("shop"));
    let mut input = d.input("orders", Nullable(StringSerde), I64Serde);
    input.pipe(Some(s("ann")), 300, 1).unwrap();
    input.pipe(None, 999, 2).unwrap();
    input.pipe(Some(s("bob")), 50, 3).unwrap();
    input.pipe(Some(s("ann")), 200, 4).unwrap();
    input.pipe(Some(s("ann")), 700, 5).unwrap();
    assert_eq!(
        d.read("max", &Nullable(StringSerde), &I64Serde).unwrap(),
        [
            (Some(s("ann")), 300, 1),
            (Some(s("bob")), 50, 3),
            (Some(s("ann")), 300, 4),
            (Some(s("ann")), 700, 5)
        ],
        "the null-keyed order is dropped"
    );
    assert_eq!(
        d.read("spent", &Nullable(StringSerde), &StringSerde)
            .unwrap(),
        [
            (Some(s("ann")), s("300"), 1),
            (Some(s("bob")), s("50"), 3),
            (Some(s("ann")), s("500"), 4),
            (Some(s("ann")), s("1200"), 5)
        ]
    );
}

#[test]
fn two_aggregations_may_not_share_a_store() {
    let b = StreamsBuilder::new();
    let grouped = b
        .stream("t", StringSerde, I64Serde)
        .group_by_key(StringSerde, I64Serde);
    grouped.count("n");
    grouped.reduce("n", |a, b| a + b);
    let e = b.build().err().expect("refused");
    assert_eq!(
        e.to_string(),
        "topology: state store n is named by two operations"
    );
}

#[test]
fn grouping_after_a_key_change_repartitions_and_after_a_value_change_does_not() {
    let b = StreamsBuilder::new();
    let input = b.stream("in", StringSerde, StringSerde);
    input
        .select_key(|_, v| v.clone())
        .filter(|_, _| true)
        .group_by_key(StringSerde, StringSerde)
        .count("by-value");
    input
        .map_values(|v: &String| v.len() as i64)
        .group_by_key(StringSerde, I64Serde)
        .count("by-key");
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.input("in", StringSerde, StringSerde)
        .pipe(s("k"), s("x"), 1)
        .unwrap();
    assert_eq!(d.read_raw("app-by-value-repartition").len(), 1);
    assert!(d.read_raw("app-by-key-repartition").is_empty());
    assert_eq!(
        d.read("app-by-value-changelog", &StringSerde, &I64Serde)
            .unwrap(),
        [(s("x"), 1, 1)]
    );
    assert_eq!(
        d.read("app-by-key-changelog", &StringSerde, &I64Serde)
            .unwrap(),
        [(s("k"), 1, 1)]
    );
}

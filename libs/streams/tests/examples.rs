//! The examples' topologies (`examples/`) against the in-memory driver:
//! what each prints and writes for a few records. The cluster tests in
//! `runnel-testkit` (`tests/streams.rs`) run word count on brokers.

// Each example is its own program with its own `mod common;`: loaded here
// side by side, the shared file is compiled once per example.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/word_count.rs"]
#[allow(dead_code)]
mod word_count;

#[path = "../examples/order_totals.rs"]
#[allow(dead_code)]
mod order_totals;

#[path = "../examples/enrich_clicks.rs"]
#[allow(dead_code)]
mod enrich_clicks;

use runnel_streams::{I64Serde, Nullable, StreamsConfig, StringSerde, TestDriver};

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn word_count_counts_each_word_of_each_line() {
    let mut d = TestDriver::new(word_count::topology(), StreamsConfig::new("word-count"));
    d.pipe_raw("lines", None, Some(b"The cat saw the dog"), 1)
        .unwrap();
    d.pipe_raw("lines", None, Some(b"the end"), 2).unwrap();
    let counts = d
        .read("word-counts", &StringSerde, &Nullable(I64Serde))
        .unwrap();
    let last = |w: &str| counts.iter().rev().find(|(k, ..)| k == w).and_then(|c| c.1);
    assert_eq!(last("the"), Some(3), "counted whatever its case");
    assert_eq!(last("cat"), Some(1));
    assert_eq!(last("end"), Some(1));
    assert_eq!(counts.len(), 7, "one update per word");
}

#[test]
fn order_totals_are_final_per_minute_and_take_orders_within_the_grace() {
    let mut d = TestDriver::new(order_totals::topology(), StreamsConfig::new("order-totals"));
    let minute = order_totals::MINUTE;
    let mut orders = d.input("orders", StringSerde, StringSerde);
    orders.pipe(s("ann"), s("12.50"), 1_000).unwrap();
    orders.pipe(s("bob"), s("3"), 2_000).unwrap();
    orders.pipe(s("ann"), s("7.25"), minute + 1_000).unwrap();
    // 20 s after the first minute ended: within the grace period.
    orders.pipe(s("ann"), s("0.25"), 50_000).unwrap();
    orders
        .pipe(s("bob"), s("not a number"), minute + 2_000)
        .unwrap();
    assert_eq!(
        d.read("order-totals", &StringSerde, &Nullable(StringSerde))
            .unwrap(),
        [],
        "nothing is final before the minute closes"
    );
    // Stream time passes the first minute's end plus the grace.
    let mut orders = d.input("orders", StringSerde, StringSerde);
    orders.pipe(s("cid"), s("1"), minute + 31_000).unwrap();
    // Too late for the first minute now: dropped.
    orders.pipe(s("ann"), s("100"), 59_000).unwrap();
    let totals: Vec<(String, Option<String>)> = d
        .read("order-totals", &StringSerde, &Nullable(StringSerde))
        .unwrap()
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(
        totals,
        [
            (s("ann@0"), Some(s("12.75"))),
            (s("bob@0"), Some(s("3.00")))
        ]
    );
    assert_eq!(d.dropped_late_records(), 1);
}

#[test]
fn clicks_carry_their_users_region_or_unknown() {
    let mut d = TestDriver::new(
        enrich_clicks::topology(),
        StreamsConfig::new("enrich-clicks"),
    );
    d.pipe_raw("users", Some(b"ann"), Some(b"eu"), 1).unwrap();
    d.pipe_raw("clicks", Some(b"ann"), Some(b"/home"), 2)
        .unwrap();
    d.pipe_raw("clicks", Some(b"cid"), Some(b"/cart"), 3)
        .unwrap();
    d.pipe_raw("users", Some(b"ann"), None, 4).unwrap();
    d.pipe_raw("clicks", Some(b"ann"), Some(b"/bye"), 5)
        .unwrap();
    let enriched: Vec<(String, String)> = d
        .read("clicks-enriched", &StringSerde, &StringSerde)
        .unwrap()
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(
        enriched,
        [
            (s("ann"), s("/home eu")),
            (s("cid"), s("/cart unknown")),
            (s("ann"), s("/bye unknown"))
        ]
    );
}

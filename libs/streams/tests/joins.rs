//! Tables from topics and stream–table joins against the in-memory driver.

use runnel_streams::{
    I64Serde, JoinWindows, Nullable, StreamJoined, StreamsBuilder, StreamsConfig, StringSerde,
    TestDriver, TimeWindows,
};

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn clicks_are_enriched_with_the_users_region_as_the_table_has_it_then() {
    let b = StreamsBuilder::new();
    let users = b.table("users", StringSerde, StringSerde, "users-store");
    let clicks = b.stream("clicks", StringSerde, StringSerde);
    clicks
        .join(&users, |page: &String, region: &String| {
            format!("{page}@{region}")
        })
        .to("enriched", StringSerde, StringSerde);
    clicks
        .left_join(&users, |page: &String, region: Option<&String>| {
            format!("{page}@{}", region.map_or("?", String::as_str))
        })
        .to("enriched-all", StringSerde, StringSerde);
    users
        .to_stream()
        .to("users-copy", StringSerde, Nullable(StringSerde));
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.pipe_raw("clicks", Some(b"ann"), Some(b"/home"), 1)
        .unwrap(); // no user yet
    d.pipe_raw("users", Some(b"ann"), Some(b"eu"), 2).unwrap();
    d.pipe_raw("clicks", Some(b"ann"), Some(b"/cart"), 3)
        .unwrap();
    d.pipe_raw("users", Some(b"ann"), Some(b"us"), 4).unwrap(); // moved
    d.pipe_raw("clicks", Some(b"ann"), Some(b"/pay"), 5)
        .unwrap();
    d.pipe_raw("users", Some(b"ann"), None, 6).unwrap(); // deleted
    d.pipe_raw("users", None, Some(b"xx"), 7).unwrap(); // null key: skipped
    d.pipe_raw("clicks", Some(b"ann"), Some(b"/bye"), 8)
        .unwrap();
    let values = |d: &mut TestDriver, t: &str| -> Vec<String> {
        d.read(t, &StringSerde, &StringSerde)
            .unwrap()
            .into_iter()
            .map(|(_, v, _)| v)
            .collect()
    };
    assert_eq!(values(&mut d, "enriched"), ["/cart@eu", "/pay@us"]);
    assert_eq!(
        values(&mut d, "enriched-all"),
        ["/home@?", "/cart@eu", "/pay@us", "/bye@?"]
    );
    assert_eq!(
        d.read("users-copy", &StringSerde, &Nullable(StringSerde))
            .unwrap(),
        [
            (s("ann"), Some(s("eu")), 2),
            (s("ann"), Some(s("us")), 4),
            (s("ann"), None, 6)
        ],
        "the table's updates, the deletion as a tombstone"
    );
    let changelog = d.read_raw("app-users-store-changelog");
    assert_eq!(changelog.len(), 3);
    assert_eq!(
        changelog[2].value, None,
        "the deletion is logged as a tombstone"
    );
}

#[test]
fn a_stream_joins_an_aggregated_table_but_not_a_windowed_one() {
    let b = StreamsBuilder::new();
    let spent = b
        .stream("orders", StringSerde, I64Serde)
        .group_by_key(StringSerde, I64Serde)
        .reduce("spent", |a, b| a + b);
    b.stream("visits", StringSerde, StringSerde)
        .join(&spent, |_, total: &i64| *total)
        .to("spent-at-visit", StringSerde, I64Serde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.input("orders", StringSerde, I64Serde)
        .pipe(s("ann"), 30, 1)
        .unwrap();
    d.input("orders", StringSerde, I64Serde)
        .pipe(s("ann"), 12, 2)
        .unwrap();
    d.input("visits", StringSerde, StringSerde)
        .pipe(s("ann"), s("/"), 3)
        .unwrap();
    assert_eq!(
        d.read("spent-at-visit", &StringSerde, &I64Serde).unwrap(),
        [(s("ann"), 42, 3)]
    );

    let b = StreamsBuilder::new();
    let per_minute = b
        .stream("orders", StringSerde, I64Serde)
        .group_by_key(StringSerde, I64Serde)
        .windowed_by(TimeWindows::of_size_no_grace(60_000))
        .count("per-minute");
    let windowed_keys = b
        .stream("w", StringSerde, StringSerde)
        .map(|k: &String, v: &String| {
            (
                runnel_streams::Windowed {
                    key: k.clone(),
                    start: 0,
                    end: 60_000,
                },
                v.clone(),
            )
        });
    windowed_keys
        .join(&per_minute, |v: &String, n: &i64| format!("{v}{n}"))
        .to(
            "x",
            runnel_streams::WindowedSerde::new(StringSerde, 60_000),
            StringSerde,
        );
    let e = b.build().err().expect("refused");
    assert!(e.to_string().contains("kept by key"), "{e}");
}

#[test]
fn table_table_joins_follow_updates_and_deletions_on_both_sides() {
    let b = StreamsBuilder::new();
    let users = b.table("users", StringSerde, StringSerde, "users-store");
    let accounts = b.table("accounts", StringSerde, StringSerde, "accounts-store");
    let show = |v: Option<&String>| v.map_or("-", String::as_str).to_owned();
    users
        .join(&accounts, |region: &String, plan: &String| {
            format!("{region}/{plan}")
        })
        .to_stream()
        .to("inner", StringSerde, Nullable(StringSerde));
    users
        .left_join(&accounts, move |region: &String, plan| {
            format!("{region}/{}", show(plan))
        })
        .to_stream()
        .to("left", StringSerde, Nullable(StringSerde));
    users
        .outer_join(&accounts, move |region, plan| {
            format!("{}/{}", show(region), show(plan))
        })
        .to_stream()
        .to("outer", StringSerde, Nullable(StringSerde));
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.pipe_raw("users", Some(b"ann"), Some(b"eu"), 1).unwrap();
    d.pipe_raw("accounts", Some(b"ann"), Some(b"pro"), 2)
        .unwrap();
    d.pipe_raw("accounts", Some(b"bob"), Some(b"free"), 3)
        .unwrap();
    d.pipe_raw("users", Some(b"ann"), None, 4).unwrap();
    d.pipe_raw("accounts", Some(b"ann"), None, 5).unwrap();
    let mut read = |t: &str| d.read(t, &StringSerde, &Nullable(StringSerde)).unwrap();
    let some = |k: &str, v: &str, t: i64| (s(k), Some(s(v)), t);
    assert_eq!(
        read("inner"),
        [some("ann", "eu/pro", 2), (s("ann"), None, 4)],
        "an inner join holds only while both sides do"
    );
    assert_eq!(
        read("left"),
        [
            some("ann", "eu/-", 1),
            some("ann", "eu/pro", 2),
            (s("ann"), None, 4)
        ],
        "a left join follows the left side; right updates without it pass nothing"
    );
    assert_eq!(
        read("outer"),
        [
            some("ann", "eu/-", 1),
            some("ann", "eu/pro", 2),
            some("bob", "-/free", 3),
            some("ann", "-/pro", 4),
            (s("ann"), None, 5)
        ]
    );
}

#[test]
fn a_table_join_needs_tables_kept_by_key() {
    let b = StreamsBuilder::new();
    let counts = b
        .stream("clicks", StringSerde, StringSerde)
        .group_by_key(StringSerde, StringSerde)
        .windowed_by(TimeWindows::of_size_no_grace(10))
        .count("clicks-per-window");
    drop(counts.join(&counts, |a: &i64, b: &i64| a + b));
    let e = b
        .build()
        .err()
        .expect("windowed tables have no lookup by key");
    assert!(e.to_string().contains("kept by key"), "{e}");
}

#[test]
fn stream_stream_joins_pair_records_within_the_window_and_pass_on_the_unjoined_once_it_closes() {
    let b = StreamsBuilder::new();
    let impressions = b.stream("impressions", StringSerde, StringSerde);
    let clicks = b.stream("clicks", StringSerde, StringSerde);
    let windows = JoinWindows::of_time_difference_no_grace(10);
    let joined = |name: &str| StreamJoined::with(name, StringSerde, StringSerde, StringSerde);
    let show = |v: Option<&String>| v.map_or("-", String::as_str).to_owned();
    impressions
        .join_stream(
            &clicks,
            |i: &String, c: &String| format!("{i}+{c}"),
            windows,
            joined("inner"),
        )
        .to("inner", StringSerde, StringSerde);
    impressions
        .left_join_stream(
            &clicks,
            move |i: &String, c| format!("{i}+{}", show(c)),
            windows,
            joined("left"),
        )
        .to("left", StringSerde, StringSerde);
    impressions
        .outer_join_stream(
            &clicks,
            move |i, c| format!("{}+{}", show(i), show(c)),
            windows,
            joined("outer"),
        )
        .to("outer", StringSerde, StringSerde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("ads"));
    d.pipe_raw("impressions", Some(b"ad1"), Some(b"imp1"), 0)
        .unwrap();
    d.pipe_raw("clicks", Some(b"ad1"), Some(b"click1"), 5)
        .unwrap(); // joins imp1, which came before
    d.pipe_raw("impressions", Some(b"ad1"), Some(b"imp2"), 8)
        .unwrap(); // joins click1, which came before
    d.pipe_raw("clicks", Some(b"ad1"), Some(b"click2"), 30)
        .unwrap(); // nothing within 10 ms
    d.pipe_raw("impressions", Some(b"ad2"), Some(b"imp3"), 31)
        .unwrap(); // another key: nothing
    d.move_task().unwrap(); // the join's records survive their task moving
    d.pipe_raw("impressions", Some(b"ad1"), Some(b"imp4"), 50)
        .unwrap(); // stream time 50: click2's and imp3's windows closed
    d.pipe_raw("impressions", Some(b"ad1"), Some(b"late"), 20)
        .unwrap(); // older than the join keeps records: dropped
    let mut read = |t: &str| d.read(t, &StringSerde, &StringSerde).unwrap();
    let r = |k: &str, v: &str, t: i64| (s(k), s(v), t);
    assert_eq!(
        read("inner"),
        [r("ad1", "imp1+click1", 5), r("ad1", "imp2+click1", 8)],
        "a result carries the later timestamp"
    );
    assert_eq!(
        read("left"),
        [
            r("ad1", "imp1+click1", 5),
            r("ad1", "imp2+click1", 8),
            r("ad2", "imp3+-", 31)
        ],
        "an impression that joined nothing comes out alone once its window closed"
    );
    assert_eq!(
        read("outer"),
        [
            r("ad1", "imp1+click1", 5),
            r("ad1", "imp2+click1", 8),
            r("ad1", "-+click2", 30),
            r("ad2", "imp3+-", 31)
        ]
    );
    assert_eq!(d.dropped_late_records(), 3, "the late record, in each join");
    let stores = d.read_raw("ads-outer-this-join-store-changelog");
    assert_eq!(
        stores[0].key.as_deref().map(<[u8]>::len),
        Some(3 + 8 + 4),
        "key, timestamp, sequence number"
    );
}

#[test]
fn stream_stream_join_keeps_records_of_one_key_and_time_apart() {
    let b = StreamsBuilder::new();
    let left = b.stream("l", StringSerde, StringSerde);
    // A key-changing step: the right side goes through a repartition topic.
    let right = b
        .stream("r", StringSerde, StringSerde)
        .select_key(|k: &String, _: &String| k.clone());
    left.join_stream(
        &right,
        |a: &String, b: &String| format!("{a}{b}"),
        JoinWindows::of_time_difference_no_grace(0),
        StreamJoined::with("j", StringSerde, StringSerde, StringSerde),
    )
    .to("out", StringSerde, StringSerde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    d.pipe_raw("l", Some(b"k"), Some(b"a"), 7).unwrap();
    d.pipe_raw("l", Some(b"k"), Some(b"b"), 7).unwrap();
    d.pipe_raw("r", Some(b"k"), Some(b"x"), 7).unwrap();
    d.pipe_raw("r", Some(b"kk"), Some(b"y"), 7).unwrap();
    let out: Vec<String> = d
        .read("out", &StringSerde, &StringSerde)
        .unwrap()
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    assert_eq!(
        out,
        ["ax", "bx"],
        "both left records at 7 kept; key kk is not k"
    );
}

#[test]
fn a_stream_joins_a_global_table_by_a_key_it_computes() {
    let b = StreamsBuilder::new();
    let regions = b.global_table("regions", StringSerde, StringSerde, "regions-store");
    // Orders keyed by order id, valued "<customer>:<amount>"; the table is
    // keyed by customer.
    let customer = |_: &String, v: &String| v.split(':').next().unwrap_or("").to_owned();
    let orders = b.stream("orders", StringSerde, StringSerde);
    orders
        .join_global(&regions, customer, |order: &String, region: &String| {
            format!("{order}@{region}")
        })
        .to("joined", StringSerde, StringSerde);
    orders
        .left_join_global(&regions, customer, |order: &String, region| {
            format!("{order}@{}", region.map_or("?", String::as_str))
        })
        .to("left-joined", StringSerde, StringSerde);
    let topology = b.build().unwrap();
    assert_eq!(
        topology.global_tables(),
        [("regions".to_owned(), "regions-store".to_owned())]
    );
    let mut d = TestDriver::new(topology, StreamsConfig::new("shop"));
    d.pipe_raw("regions", Some(b"ann"), Some(b"eu"), 1).unwrap();
    d.pipe_raw("orders", Some(b"o1"), Some(b"ann:5"), 2)
        .unwrap();
    d.pipe_raw("orders", Some(b"o2"), Some(b"bob:7"), 3)
        .unwrap();
    d.pipe_raw("regions", Some(b"ann"), None, 4).unwrap();
    d.pipe_raw("orders", Some(b"o3"), Some(b"ann:1"), 5)
        .unwrap();
    let mut read = |t: &str| d.read(t, &StringSerde, &StringSerde).unwrap();
    assert_eq!(
        read("joined"),
        [(s("o1"), s("ann:5@eu"), 2)],
        "the record keeps its own key"
    );
    assert_eq!(
        read("left-joined"),
        [
            (s("o1"), s("ann:5@eu"), 2),
            (s("o2"), s("bob:7@?"), 3),
            (s("o3"), s("ann:1@?"), 5)
        ]
    );
}

#[test]
fn a_global_store_may_not_share_a_name_with_another_store() {
    let b = StreamsBuilder::new();
    b.global_table("regions", StringSerde, StringSerde, "store");
    b.table("users", StringSerde, StringSerde, "store");
    let e = b.build().err().expect("two stores named store");
    assert!(e.to_string().contains("named by two operations"), "{e}");
}

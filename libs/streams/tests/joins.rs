//! Tables from topics and stream–table joins against the in-memory driver.

use runnel_streams::{
    I64Serde, Nullable, StreamsBuilder, StreamsConfig, StringSerde, TestDriver, TimeWindows,
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

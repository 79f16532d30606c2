//! Windowed aggregations against the in-memory driver: records land in
//! every window that holds them, late ones within the grace period still
//! count, later ones are dropped and counted.

use runnel_streams::{
    I64Serde, Nullable, SessionWindowedSerde, SessionWindows, SlidingWindows, StreamsBuilder,
    StreamsConfig, StringSerde, TestDriver, TimeWindows, Windowed, WindowedSerde,
};

const MINUTE: i64 = 60_000;

fn w(key: &str, start: i64, size: i64) -> Windowed<String> {
    Windowed {
        key: key.to_owned(),
        start,
        end: start + size,
    }
}

#[test]
fn order_totals_per_customer_per_minute_take_late_orders_within_the_grace_period() {
    let b = StreamsBuilder::new();
    b.stream("orders", StringSerde, I64Serde)
        .group_by_key(StringSerde, I64Serde)
        .windowed_by(TimeWindows::of_size_with_grace(MINUTE, 10_000))
        .reduce("totals", |a, b| a + b)
        .to_stream()
        .to(
            "totals",
            WindowedSerde::new(StringSerde, MINUTE),
            Nullable(I64Serde),
        );
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("shop"));
    let mut orders = d.input("orders", StringSerde, I64Serde);
    orders.pipe("ann".into(), 100, 1_000).unwrap();
    orders.pipe("ann".into(), 50, 59_000).unwrap();
    orders.pipe("ann".into(), 70, 61_000).unwrap(); // the next minute
    // Out of order, 9 s after the first minute ended: within the grace.
    orders.pipe("ann".into(), 5, 30_000).unwrap();
    orders.pipe("bob".into(), 1, 75_000).unwrap(); // stream time 75 s: minute 0 closes at 70 s
    orders.pipe("ann".into(), 999, 45_000).unwrap(); // too late: dropped
    let totals = d
        .read(
            "totals",
            &WindowedSerde::new(StringSerde, MINUTE),
            &I64Serde,
        )
        .unwrap();
    let updates: Vec<_> = totals.into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(
        updates,
        [
            (w("ann", 0, MINUTE), 100),
            (w("ann", 0, MINUTE), 150),
            (w("ann", MINUTE, MINUTE), 70),
            (w("ann", 0, MINUTE), 155),
            (w("bob", MINUTE, MINUTE), 1),
        ]
    );
    assert_eq!(d.dropped_late_records(), 1);
    // The store's changelog: key bytes, window start, sequence number 0.
    let changelog = d.read_raw("shop-totals-changelog");
    let first = changelog[0].key.as_ref().unwrap();
    assert_eq!(&first[..3], b"ann");
    assert_eq!(&first[3..11], &0i64.to_be_bytes());
    assert_eq!(&first[11..], &[0, 0, 0, 0]);
    assert_eq!(changelog.len(), 5);
}

#[test]
fn hopping_windows_count_a_record_in_each_window_that_holds_it() {
    let b = StreamsBuilder::new();
    b.stream("clicks", StringSerde, StringSerde)
        .group_by_key(StringSerde, StringSerde)
        .windowed_by(TimeWindows::of_size_no_grace(10).advance_by(5))
        .count("clicks-per-10ms")
        .to_stream()
        .to(
            "counts",
            WindowedSerde::new(StringSerde, 10),
            Nullable(I64Serde),
        );
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("u".into(), "a".into(), 7).unwrap();
    clicks.pipe("u".into(), "b".into(), 12).unwrap();
    let counts: Vec<_> = d
        .read("counts", &WindowedSerde::new(StringSerde, 10), &I64Serde)
        .unwrap()
        .into_iter()
        .map(|(k, v, _)| (k.start, v))
        .collect();
    // 7 is in [0,10) and [5,15); 12 in [5,15) and [10,20).
    assert_eq!(counts, [(0, 1), (5, 1), (5, 2), (10, 1)]);
}

#[test]
fn suppression_lets_out_each_windows_final_total_once_when_it_closes() {
    let b = StreamsBuilder::new();
    let totals = b
        .stream("orders", StringSerde, I64Serde)
        .group_by_key(StringSerde, I64Serde)
        .windowed_by(TimeWindows::of_size_with_grace(MINUTE, 10_000))
        .reduce("totals", |a, b| a + b);
    totals
        .suppress_until_window_closes()
        .unwrap()
        .to_stream()
        .to(
            "final",
            WindowedSerde::new(StringSerde, MINUTE),
            Nullable(I64Serde),
        );
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("shop"));
    let mut orders = d.input("orders", StringSerde, I64Serde);
    orders.pipe("ann".into(), 100, 1_000).unwrap();
    orders.pipe("ann".into(), 50, 59_000).unwrap();
    orders.pipe("ann".into(), 70, 61_000).unwrap();
    orders.pipe("ann".into(), 5, 30_000).unwrap(); // late, within the grace
    let read = |d: &mut TestDriver| -> Vec<(Windowed<String>, i64)> {
        d.read("final", &WindowedSerde::new(StringSerde, MINUTE), &I64Serde)
            .unwrap()
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect()
    };
    assert!(read(&mut d).is_empty(), "no window has closed yet");
    let mut orders = d.input("orders", StringSerde, I64Serde);
    orders.pipe("bob".into(), 1, 75_000).unwrap(); // minute 0 closes at 70 s
    assert_eq!(read(&mut d), [(w("ann", 0, MINUTE), 155)]);
    let mut orders = d.input("orders", StringSerde, I64Serde);
    orders.pipe("ann".into(), 999, 45_000).unwrap(); // dropped: nothing new
    orders.pipe("carl".into(), 3, 200_000).unwrap();
    assert_eq!(
        read(&mut d),
        [
            (w("ann", MINUTE, MINUTE), 70),
            (w("bob", MINUTE, MINUTE), 1)
        ],
        "each window once, with its final value, in window-end order"
    );
}

#[test]
fn only_a_windowed_table_can_wait_for_its_windows_to_close() {
    let b = StreamsBuilder::new();
    let windowed_keys = b
        .stream("t", StringSerde, I64Serde)
        .map(|k: &String, v: &i64| {
            (
                Windowed {
                    key: k.clone(),
                    start: 0,
                    end: 1,
                },
                *v,
            )
        })
        .group_by_key(WindowedSerde::new(StringSerde, 1), I64Serde)
        .count("c");
    assert!(windowed_keys.suppress_until_window_closes().is_err());
}

#[test]
fn a_suppressed_windows_pending_result_survives_its_task_moving() {
    let b = StreamsBuilder::new();
    b.stream("orders", StringSerde, I64Serde)
        .group_by_key(StringSerde, I64Serde)
        .windowed_by(TimeWindows::of_size_with_grace(MINUTE, 10_000))
        .reduce("totals", |a, b| a + b)
        .suppress_until_window_closes()
        .unwrap()
        .to_stream()
        .to(
            "final",
            WindowedSerde::new(StringSerde, MINUTE),
            Nullable(I64Serde),
        );
    let topology = b.build().unwrap();
    assert_eq!(
        topology.stores(),
        ["totals", "totals-suppress"],
        "the buffer is a store, logged to its changelog"
    );
    let mut d = TestDriver::new(topology, StreamsConfig::new("shop"));
    let mut orders = d.input("orders", StringSerde, I64Serde);
    orders.pipe("ann".into(), 100, 1_000).unwrap();
    orders.pipe("bob".into(), 7, 2_000).unwrap();
    orders.pipe("ann".into(), 50, 59_000).unwrap();
    // The task moves: its new owner has only the changelogs.
    d.move_task().unwrap();
    let mut orders = d.input("orders", StringSerde, I64Serde);
    orders.pipe("ann".into(), 1, 30_000).unwrap();
    orders.pipe("carl".into(), 3, 75_000).unwrap(); // minute 0 closes
    let finals: Vec<(Windowed<String>, i64)> = d
        .read("final", &WindowedSerde::new(StringSerde, MINUTE), &I64Serde)
        .unwrap()
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(
        finals,
        [(w("ann", 0, MINUTE), 151), (w("bob", 0, MINUTE), 7)],
        "the windows buffered before the move come out once, complete"
    );
    let buffered = d.read_raw("shop-totals-suppress-changelog");
    assert!(
        buffered.iter().rev().take(2).all(|r| r.value.is_none()),
        "the let-out windows are deleted from the buffer's changelog"
    );
}

#[test]
fn a_timestamp_extractor_puts_records_in_the_windows_of_their_own_time() {
    // Values are "<event time ms>:<amount>"; the records were written late,
    // all at 1,000,000 ms.
    let event_time = |_: &String, v: &String| -> i64 {
        v.split_once(':')
            .and_then(|(t, _)| t.parse().ok())
            .unwrap_or(-1)
    };
    let b = StreamsBuilder::new();
    b.stream_with_timestamps("orders", StringSerde, StringSerde, move |k, v, _| {
        event_time(k, v)
    })
    .group_by_key(StringSerde, StringSerde)
    .windowed_by(TimeWindows::of_size_no_grace(MINUTE))
    .count("per-minute")
    .to_stream()
    .to(
        "counts",
        WindowedSerde::new(StringSerde, MINUTE),
        Nullable(I64Serde),
    );
    let mut config = StreamsConfig::new("shop");
    config.on_deserialization_error = runnel_streams::OnDeserializationError::LogAndContinue;
    let mut d = TestDriver::new(b.build().unwrap(), config);
    let mut orders = d.input("orders", StringSerde, StringSerde);
    orders
        .pipe("ann".into(), "1000:5".into(), 1_000_000)
        .unwrap();
    orders
        .pipe("ann".into(), "61000:5".into(), 1_000_000)
        .unwrap();
    orders
        .pipe("ann".into(), "no time".into(), 1_000_000)
        .unwrap();
    // Stream time is the extracted 61 s: minute 0 is closed for this one.
    orders
        .pipe("ann".into(), "2000:5".into(), 1_000_000)
        .unwrap();
    let counts = d
        .read(
            "counts",
            &WindowedSerde::new(StringSerde, MINUTE),
            &I64Serde,
        )
        .unwrap();
    assert_eq!(
        counts,
        [
            (w("ann", 0, MINUTE), 1, 1_000),
            (w("ann", MINUTE, MINUTE), 1, 61_000),
        ],
        "outputs carry the extracted timestamps"
    );
    assert_eq!(d.skipped_records(), 1, "the negative timestamp is skipped");
    assert_eq!(d.dropped_late_records(), 1);
}

#[test]
fn sessions_grow_merge_and_close_by_inactivity_gap() {
    let b = StreamsBuilder::new();
    let grouped = b
        .stream("clicks", StringSerde, StringSerde)
        .group_by_key(StringSerde, StringSerde);
    let sessions =
        grouped.windowed_by_session(SessionWindows::with_inactivity_gap_and_grace(10, 20));
    sessions.count("sessions").to_stream().to(
        "counts",
        SessionWindowedSerde(StringSerde),
        Nullable(I64Serde),
    );
    sessions
        .reduce("pages", |a, b| format!("{a},{b}"))
        .to_stream()
        .to(
            "pages",
            SessionWindowedSerde(StringSerde),
            Nullable(StringSerde),
        );
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("web"));
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("ann".into(), "a".into(), 0).unwrap();
    clicks.pipe("ann".into(), "b".into(), 5).unwrap(); // within the gap: grows
    clicks.pipe("ann".into(), "c".into(), 30).unwrap(); // a new session
    clicks.pipe("ann".into(), "d".into(), 18).unwrap(); // out of order, alone
    d.move_task().unwrap(); // sessions survive their task moving
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("ann".into(), "e".into(), 24).unwrap(); // bridges 18 and 30
    clicks.pipe("bob".into(), "f".into(), 100).unwrap(); // stream time 100
    clicks.pipe("ann".into(), "g".into(), 40).unwrap(); // its session ended before 80
    let session = |start, end| Windowed {
        key: "ann".to_owned(),
        start,
        end,
    };
    let counts = d
        .read(
            "counts",
            &SessionWindowedSerde(StringSerde),
            &Nullable(I64Serde),
        )
        .unwrap();
    let counts: Vec<_> = counts.into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(
        counts,
        [
            (session(0, 0), Some(1)),
            (session(0, 0), None),
            (session(0, 5), Some(2)),
            (session(30, 30), Some(1)),
            (session(18, 18), Some(1)),
            (session(18, 18), None),
            (session(30, 30), None),
            (session(18, 30), Some(3)),
            (
                Windowed {
                    key: "bob".to_owned(),
                    start: 100,
                    end: 100
                },
                Some(1)
            ),
        ]
    );
    let pages = d
        .read(
            "pages",
            &SessionWindowedSerde(StringSerde),
            &Nullable(StringSerde),
        )
        .unwrap();
    assert_eq!(
        pages[7],
        (session(18, 30), Some("d,c,e".to_owned()), 24),
        "merged sessions reduce in key order of their ends, then the record"
    );
    assert_eq!(d.dropped_late_records(), 2, "g, in both aggregations");
    // The changelog keys: key bytes, end, start.
    let changelog = d.read_raw("web-sessions-changelog");
    let first = changelog[0].key.as_ref().unwrap();
    assert_eq!(first.len(), 3 + 16);
    let grown = changelog[2].key.as_ref().unwrap();
    assert_eq!(&grown[3..11], &5i64.to_be_bytes());
    assert_eq!(&grown[11..], &0i64.to_be_bytes());
}

#[test]
fn sliding_windows_aggregate_each_set_of_records_within_the_time_difference() {
    let b = StreamsBuilder::new();
    b.stream("clicks", StringSerde, StringSerde)
        .group_by_key(StringSerde, StringSerde)
        .windowed_by_sliding(SlidingWindows::of_time_difference_and_grace(10, 20))
        .count("sliding")
        .to_stream()
        .to(
            "counts",
            WindowedSerde::new(StringSerde, 10),
            Nullable(I64Serde),
        );
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("web"));
    let read = |d: &mut TestDriver| -> Vec<(i64, i64, Option<i64>)> {
        d.read(
            "counts",
            &WindowedSerde::new(StringSerde, 10),
            &Nullable(I64Serde),
        )
        .unwrap()
        .into_iter()
        .map(|(w, n, _)| (w.start, w.end, n))
        .collect()
    };
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("a".into(), "x".into(), 20).unwrap();
    clicks.pipe("a".into(), "x".into(), 25).unwrap();
    clicks.pipe("a".into(), "x".into(), 40).unwrap();
    assert_eq!(
        read(&mut d),
        [
            (10, 20, Some(1)),
            (15, 25, Some(2)), // the window ending at 25
            (21, 31, Some(1)), // the window just after 20
            (30, 40, Some(1)),
        ]
    );
    d.move_task().unwrap(); // the records survive their task moving
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    // Out of order, within the grace: every window holding it changes,
    // and its own right window appears.
    clicks.pipe("a".into(), "x".into(), 22).unwrap();
    assert_eq!(
        read(&mut d),
        [
            (12, 22, Some(2)),
            (15, 25, Some(3)),
            (21, 31, Some(2)),
            (23, 33, Some(1)),
        ]
    );
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("b".into(), "x".into(), 100).unwrap(); // stream time 100
    clicks.pipe("a".into(), "x".into(), 50).unwrap(); // its windows closed at 80
    assert_eq!(read(&mut d), [(90, 100, Some(1))]);
    assert_eq!(d.dropped_late_records(), 1);
}

#[test]
fn records_earlier_than_the_time_difference_fall_in_the_first_window() {
    let b = StreamsBuilder::new();
    b.stream("clicks", StringSerde, StringSerde)
        .group_by_key(StringSerde, StringSerde)
        .windowed_by_sliding(SlidingWindows::of_time_difference_no_grace(10))
        .reduce("sliding", |a, b| format!("{a}{b}"))
        .to_stream()
        .to(
            "out",
            WindowedSerde::new(StringSerde, 10),
            Nullable(StringSerde),
        );
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("web"));
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("a".into(), "x".into(), 3).unwrap();
    clicks.pipe("a".into(), "y".into(), 8).unwrap();
    let out: Vec<_> = d
        .read(
            "out",
            &WindowedSerde::new(StringSerde, 10),
            &Nullable(StringSerde),
        )
        .unwrap()
        .into_iter()
        .map(|(w, v, _)| (w.start, w.end, v))
        .collect();
    assert_eq!(
        out,
        [
            (0, 10, Some("x".to_owned())),
            (0, 10, Some("xy".to_owned())),
            (4, 14, Some("y".to_owned())), // the window just after 3
        ]
    );
}

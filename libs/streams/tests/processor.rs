//! The processor API against the in-memory driver: a hand-written step
//! with its own store, punctuated by stream time and by wall-clock time.

use bytes::Bytes;
use runnel_streams::{
    I64Serde, Processor, ProcessorContext, PunctuationType, StreamsBuilder, StreamsConfig,
    StreamsError, StringSerde, TestDriver,
};

/// Counts records per key in store `counts`; every 10 ms of stream time
/// it passes on each key's count, every second of wall-clock time the
/// total under `*`.
struct Counter;

impl Processor<String, String, String, i64> for Counter {
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, i64>,
    ) -> Result<(), StreamsError> {
        ctx.schedule(10, PunctuationType::StreamTime);
        ctx.schedule(1_000, PunctuationType::WallClockTime);
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, i64>,
        key: &String,
        _: &String,
    ) -> Result<(), StreamsError> {
        let old = ctx.get("counts", key.as_bytes())?;
        let n = old.map_or(0, |b| {
            i64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8]))
        });
        let value = Bytes::copy_from_slice(&(n + 1).to_be_bytes());
        ctx.put(
            "counts",
            Bytes::copy_from_slice(key.as_bytes()),
            Some(value),
        )
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, i64>,
        kind: PunctuationType,
        _: i64,
    ) -> Result<(), StreamsError> {
        let counts: Vec<(String, i64)> = ctx
            .all("counts")?
            .into_iter()
            .map(|(k, v)| {
                let n = i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
                (String::from_utf8_lossy(&k).into_owned(), n)
            })
            .collect();
        match kind {
            PunctuationType::StreamTime => {
                for (k, n) in counts {
                    ctx.forward(k, n);
                }
            }
            PunctuationType::WallClockTime => {
                ctx.forward("*".to_owned(), counts.iter().map(|(_, n)| n).sum());
            }
        }
        Ok(())
    }
}

#[test]
fn a_processor_keeps_a_store_and_punctuates_by_stream_and_wall_clock_time() {
    let b = StreamsBuilder::new();
    b.stream("clicks", StringSerde, StringSerde)
        .process(|| Counter, &["counts"])
        .to("counts", StringSerde, I64Serde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    let read = |d: &mut TestDriver| d.read("counts", &StringSerde, &I64Serde).unwrap();
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("a".into(), "x".into(), 1).unwrap(); // the first punctuation
    clicks.pipe("b".into(), "x".into(), 2).unwrap();
    clicks.pipe("a".into(), "x".into(), 15).unwrap(); // due at 11
    clicks.pipe("c".into(), "x".into(), 40).unwrap(); // due at 21: once, not twice
    let s = |k: &str, n: i64, t: i64| (k.to_owned(), n, t);
    assert_eq!(
        read(&mut d),
        [
            s("a", 1, 1),
            s("a", 2, 15),
            s("b", 1, 15),
            s("a", 2, 40),
            s("b", 1, 40),
            s("c", 1, 40)
        ]
    );
    d.advance_wall_clock(500).unwrap(); // the wall clock's first check
    assert!(read(&mut d).is_empty());
    d.advance_wall_clock(1_000).unwrap();
    assert_eq!(read(&mut d), [s("*", 4, 1_500)]);
    // The store is logged: a moved task finds its counts.
    d.move_task().unwrap();
    let mut clicks = d.input("clicks", StringSerde, StringSerde);
    clicks.pipe("a".into(), "x".into(), 41).unwrap();
    assert_eq!(read(&mut d), [s("a", 3, 41), s("b", 1, 41), s("c", 1, 41)]);
}

#[test]
fn a_processor_may_only_use_the_stores_it_was_given() {
    struct Sneaky;
    impl Processor<String, String, String, String> for Sneaky {
        fn process(
            &mut self,
            ctx: &mut ProcessorContext<'_, '_, String, String>,
            key: &String,
            _: &String,
        ) -> Result<(), StreamsError> {
            ctx.get("elsewhere", key.as_bytes()).map(|_| ())
        }
    }
    let b = StreamsBuilder::new();
    b.stream("in", StringSerde, StringSerde)
        .process(|| Sneaky, &["mine"])
        .to("out", StringSerde, StringSerde);
    let mut d = TestDriver::new(b.build().unwrap(), StreamsConfig::new("app"));
    let e = d
        .input("in", StringSerde, StringSerde)
        .pipe("k".into(), "v".into(), 1)
        .unwrap_err();
    assert!(e.to_string().contains("not given store elsewhere"), "{e}");
}

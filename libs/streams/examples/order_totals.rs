//! Order totals per customer per minute: orders in topic `orders` (key:
//! the customer, value: the amount as text, e.g. `12.50`) summed in
//! one-minute tumbling windows by the orders' timestamps; an order up to
//! 30 s late still counts in its minute. Each minute's final total is
//! printed and written to `order-totals` once the minute has closed (key:
//! `customer@start`, value: the total as text).
//!
//! ```sh
//! cargo run -p runnel-streams --example order_totals [-- --exactly-once]
//! printf 'ann:12.50\nbob:3\nann:7.25\n' | runnel produce orders --key-separator :
//! ```
//!
//! A minute closes when a later order (any customer's, in the same
//! partition) is more than 30 s past its end: Kafka Streams' suppression
//! follows the records' time, not the wall clock.

mod common;

use std::time::Duration;

use runnel_streams::{F64Serde, Nullable, StreamsBuilder, StringSerde, TimeWindows, Topology};

/// One minute, in ms.
pub const MINUTE: i64 = 60_000;
/// How late an order may be and still count.
pub const GRACE: Duration = Duration::from_secs(30);

/// Orders in, one final total per customer and minute out.
pub fn topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("orders", StringSerde, StringSerde)
        // An amount that is not a number is skipped, with a line saying so.
        .flat_map_values(|amount: &String| match amount.trim().parse::<f64>() {
            Ok(v) => vec![v],
            Err(_) => {
                eprintln!("skipping order amount {amount:?}: not a number");
                Vec::new()
            }
        })
        .group_by_key(StringSerde, F64Serde)
        .windowed_by(TimeWindows::of_size_with_grace(
            MINUTE,
            GRACE.as_millis() as i64,
        ))
        .reduce("totals", |a, b| a + b)
        .suppress_until_window_closes()
        .expect("a windowed table can wait for its windows to close")
        .to_stream()
        .map(|w, total| {
            let total = total.map(|t| format!("{t:.2}"));
            println!(
                "{} minute from {}: {}",
                w.key,
                w.start,
                total.as_deref().unwrap_or("-")
            );
            (format!("{}@{}", w.key, w.start), total)
        })
        .to("order-totals", StringSerde, Nullable(StringSerde));
    b.build().expect("the order totals topology is valid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = common::client();
    common::create_topics(&client, &["orders", "order-totals"]).await?;
    common::run(topology(), common::config("order-totals"), client).await
}

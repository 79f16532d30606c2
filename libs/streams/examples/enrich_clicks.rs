//! Clicks enriched with a user table: topic `users` (key: the user, value:
//! their region; a null value deletes the user) is kept as a table; each click in `clicks` (key: the user, value: the page) is
//! joined with the user's region as the table has it at that moment and
//! written to `clicks-enriched` as `page region` (`page unknown` for a
//! user the table lacks).
//!
//! ```sh
//! cargo run -p runnel-streams --example enrich_clicks [-- --exactly-once]
//! printf 'ann:eu\nbob:us\n' | runnel produce users --key-separator :
//! printf 'ann:/home\ncid:/cart\n' | runnel produce clicks --key-separator :
//! ```
//!
//! `users` and `clicks` have the same number of partitions and are keyed
//! alike, so a user's clicks and their row meet in one task (Kafka's
//! co-partitioning).

mod common;

use runnel_streams::{StreamsBuilder, StringSerde, Topology};

/// Clicks and users in, enriched clicks out.
pub fn topology() -> Topology {
    let b = StreamsBuilder::new();
    let users = b.table("users", StringSerde, StringSerde, "users");
    b.stream("clicks", StringSerde, StringSerde)
        .left_join(&users, |page: &String, region: Option<&String>| {
            format!("{page} {}", region.map_or("unknown", String::as_str))
        })
        .peek(|user, enriched| println!("{user}: {enriched}"))
        .to("clicks-enriched", StringSerde, StringSerde);
    b.build().expect("the enrichment topology is valid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = common::client();
    common::create_topics(&client, &["users", "clicks", "clicks-enriched"]).await?;
    common::run(topology(), common::config("enrich-clicks"), client).await
}

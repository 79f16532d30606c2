//! Word count: the words of the lines in topic `lines`, counted as they
//! come, each new count printed and written to `word-counts` (key: the
//! word, value: the count as an 8-byte big-endian long).
//!
//! ```sh
//! cargo run -p runnel-streams --example word_count [-- --exactly-once]
//! printf 'the cat\nthe dog\n' | runnel produce lines
//! ```

mod common;

use runnel_streams::{I64Serde, Nullable, StreamsBuilder, StringSerde, Topology};

/// Lines in, counts per word out, through a repartition topic by word and
/// a changelogged store of counts.
pub fn topology() -> Topology {
    let b = StreamsBuilder::new();
    b.stream("lines", Nullable(StringSerde), StringSerde)
        .flat_map_values(|line: &String| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), StringSerde, StringSerde)
        .count("counts")
        .to_stream()
        .peek(|word, count| {
            if let Some(count) = count {
                println!("{word}: {count}");
            }
        })
        .to("word-counts", StringSerde, Nullable(I64Serde));
    b.build().expect("the word count topology is valid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = common::client();
    common::create_topics(&client, &["lines", "word-counts"]).await?;
    common::run(topology(), common::config("word-count"), client).await
}

//! Kafka's file connectors: `FileStreamSource` tails a file line by line
//! (its offset is the byte position after the last line, so a restart
//! continues right after the last committed line) and `FileStreamSink`
//! appends every record's value to a file as a line.

use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

use super::{
    Failed, Kind, Plugin, SinkRecord, SinkTask, SourceContext, SourceRecord, SourceTask, TaskError,
};
use crate::configdef::{self, Check, Key, Props, Type};
use crate::data::Data;

/// How long a source waits at the end of the file before polling again.
const TAIL_WAIT: Duration = Duration::from_millis(100);

/// `FileStreamSource`.
pub struct FileSource;

/// `FileStreamSink`.
pub struct FileSink;

const SOURCE_KEYS: &[Key] = &[
    Key::required(
        "file",
        Type::String,
        "The file to read, line by line; it is tailed as it grows.",
    )
    .group("File"),
    Key::required("topic", Type::String, "The topic to produce each line to.").group("File"),
    Key::optional(
        "batch.size",
        Type::Int,
        "2000",
        "Most lines returned by one poll.",
    )
    .check(Check::AtLeast(1))
    .group("File"),
];

const SINK_KEYS: &[Key] = &[Key::required(
    "file",
    Type::String,
    "The file to append each record's value to, one line per record.",
)
.group("File")];

impl Plugin for FileSource {
    fn class(&self) -> &'static str {
        "org.apache.kafka.connect.file.FileStreamSourceConnector"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["FileStreamSource"]
    }
    fn kind(&self) -> Kind {
        Kind::Source
    }
    fn keys(&self) -> &'static [Key] {
        SOURCE_KEYS
    }
    fn validate(&self, props: &Props) -> Vec<(String, String)> {
        let topic = configdef::get(props, "topic", "");
        let mut out = Vec::new();
        if topic.contains(',') {
            out.push((
                "topic".into(),
                "FileStreamSource writes to a single topic".into(),
            ));
        } else if !topic.is_empty()
            && let Err(e) = runnel_common::topics::validate_topic_name(topic)
        {
            out.push(("topic".into(), e.to_string()));
        }
        out
    }
    fn source_task(&self, props: &Props) -> Result<Box<dyn SourceTask>, TaskError> {
        Ok(Box::new(FileSourceTask {
            path: PathBuf::from(configdef::get(props, "file", "")),
            topic: configdef::get(props, "topic", "").to_owned(),
            batch: configdef::get_i64(props, "batch.size", 2000).max(1) as usize,
            reader: None,
            position: 0,
            partial: Vec::new(),
        }))
    }
}

impl Plugin for FileSink {
    fn class(&self) -> &'static str {
        "org.apache.kafka.connect.file.FileStreamSinkConnector"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["FileStreamSink"]
    }
    fn kind(&self) -> Kind {
        Kind::Sink
    }
    fn keys(&self) -> &'static [Key] {
        SINK_KEYS
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        vec![props.clone(); max_tasks.max(1)]
    }
    fn sink_task(&self, props: &Props) -> Result<Box<dyn SinkTask>, TaskError> {
        Ok(Box::new(FileSinkTask {
            path: PathBuf::from(configdef::get(props, "file", "")),
            writer: None,
        }))
    }
}

struct FileSourceTask {
    path: PathBuf,
    topic: String,
    batch: usize,
    reader: Option<BufReader<File>>,
    /// Byte position after the last whole line handed out.
    position: u64,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
}

impl FileSourceTask {
    fn partition(&self) -> serde_json::Value {
        json!({"filename": self.path.display().to_string()})
    }

    async fn open(&mut self) -> Result<(), TaskError> {
        let mut file = File::open(&self.path).await.map_err(|e| {
            TaskError::Retriable(format!("cannot open {}: {e}", self.path.display()))
        })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len < self.position {
            tracing::warn!(file = %self.path.display(), position = self.position, len, "file is shorter than the committed position (truncated or replaced); reading it from the start");
            self.position = 0;
        }
        file.seek(std::io::SeekFrom::Start(self.position))
            .await
            .map_err(|e| TaskError::Fatal(format!("cannot seek {}: {e}", self.path.display())))?;
        self.reader = Some(BufReader::with_capacity(1 << 20, file));
        self.partial.clear();
        Ok(())
    }
}

impl SourceTask for FileSourceTask {
    fn start(&mut self, ctx: SourceContext) -> BoxFuture<'_, Result<(), TaskError>> {
        async move {
            if let Some(offset) = ctx.offset(&self.partition()) {
                self.position = offset.get("position").and_then(serde_json::Value::as_u64).unwrap_or(0);
            }
            tracing::info!(file = %self.path.display(), position = self.position, "file source starting");
            Ok(())
        }
        .boxed()
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, TaskError>> {
        async move {
            if self.reader.is_none()
                && let Err(e) = self.open().await
            {
                // Not there yet: a tailing source waits for it.
                tracing::debug!(error = %e, "file source waiting for its file");
                tokio::time::sleep(TAIL_WAIT * 10).await;
                return Ok(Vec::new());
            }
            let partition = self.partition();
            let mut out = Vec::new();
            let Some(reader) = self.reader.as_mut() else {
                return Ok(out);
            };
            while out.len() < self.batch {
                let n = reader
                    .read_until(b'\n', &mut self.partial)
                    .await
                    .map_err(|e| {
                        TaskError::Fatal(format!("cannot read {}: {e}", self.path.display()))
                    })?;
                if n == 0 || self.partial.last() != Some(&b'\n') {
                    break;
                }
                self.position += self.partial.len() as u64;
                let mut line = std::mem::take(&mut self.partial);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let text = String::from_utf8(line)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                out.push(SourceRecord {
                    source_partition: partition.clone(),
                    source_offset: json!({"position": self.position}),
                    topic: self.topic.clone(),
                    partition: None,
                    key: Data::null(),
                    value: Data::string(text),
                    timestamp: None,
                });
            }
            if out.is_empty() {
                tokio::time::sleep(TAIL_WAIT).await;
            }
            Ok(out)
        }
        .boxed()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        async move {
            self.reader = None;
        }
        .boxed()
    }
}

struct FileSinkTask {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl FileSinkTask {
    async fn writer(&mut self) -> Result<&mut BufWriter<File>, TaskError> {
        if self.writer.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(|e| {
                    TaskError::Fatal(format!(
                        "cannot open {} for appending: {e}",
                        self.path.display()
                    ))
                })?;
            self.writer = Some(BufWriter::with_capacity(1 << 20, file));
        }
        match self.writer.as_mut() {
            Some(w) => Ok(w),
            None => Err(TaskError::Fatal("file sink writer missing".into())),
        }
    }
}

impl SinkTask for FileSinkTask {
    fn start(&mut self) -> BoxFuture<'_, Result<(), TaskError>> {
        async move { self.writer().await.map(|_| ()) }.boxed()
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<Vec<Failed>, TaskError>> {
        async move {
            let path = self.path.display().to_string();
            let w = self.writer().await?;
            for r in &records {
                let line = r.value.value.to_text().unwrap_or_else(|| "null".into());
                w.write_all(line.as_bytes())
                    .await
                    .map_err(|e| TaskError::Fatal(format!("cannot write {path}: {e}")))?;
                w.write_all(b"\n")
                    .await
                    .map_err(|e| TaskError::Fatal(format!("cannot write {path}: {e}")))?;
            }
            // Lines show up at once (as Kafka's sink writes them); they are
            // synced before offsets are committed, in flush.
            w.flush()
                .await
                .map_err(|e| TaskError::Fatal(format!("cannot write {path}: {e}")))?;
            Ok(Vec::new())
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), TaskError>> {
        async move {
            let path = self.path.display().to_string();
            if let Some(w) = self.writer.as_mut() {
                w.flush()
                    .await
                    .map_err(|e| TaskError::Fatal(format!("cannot write {path}: {e}")))?;
                // Offsets are committed after this: the lines must be on disk first.
                w.get_ref()
                    .sync_data()
                    .await
                    .map_err(|e| TaskError::Fatal(format!("cannot sync {path}: {e}")))?;
            }
            Ok(())
        }
        .boxed()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        async move {
            if let Some(mut w) = self.writer.take() {
                let _ = w.flush().await;
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &std::path::Path) -> Box<dyn SourceTask> {
        let props: Props = [
            ("file", path.to_str().unwrap()),
            ("topic", "t"),
            ("batch.size", "2"),
        ]
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
        FileSource.source_task(&props).unwrap()
    }

    #[tokio::test]
    async fn the_source_hands_out_whole_lines_and_resumes_after_the_committed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\ntwo\r\nthree\nfou").unwrap();
        let mut task = source(&path);
        task.start(SourceContext::default()).await.unwrap();
        let first = task.poll().await.unwrap();
        assert_eq!(first.len(), 2, "batch.size caps a poll");
        assert_eq!(first[1].value, Data::string("two"));
        let second = task.poll().await.unwrap();
        assert_eq!(second.len(), 1, "a line without its newline waits");
        assert_eq!(second[0].source_offset, json!({"position": 15}));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"r\n").unwrap();
        }
        let third = task.poll().await.unwrap();
        assert_eq!(third[0].value, Data::string("four"));

        // A new task resumes after the committed line "two".
        let mut again = source(&path);
        let ctx = SourceContext {
            offsets: vec![(
                first[1].source_partition.clone(),
                first[1].source_offset.clone(),
            )],
        };
        again.start(ctx).await.unwrap();
        let resumed = again.poll().await.unwrap();
        assert_eq!(resumed[0].value, Data::string("three"));
    }
}

//! Dedicated threads for disk work, so the async runtime never blocks on it.
//!
//! Each partition is pinned to one I/O thread, which runs its appends and
//! maintenance in order. A topic's partitions go to consecutive threads (the
//! topic name's hash picks the first), so a busy topic uses them all. Every thread has a bounded
//! queue: when the disk falls behind, submitting waits, and that wait
//! reaches producers as slower acknowledgements instead of unbounded memory.

use std::hash::{Hash, Hasher};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the I/O threads have stopped")]
pub struct IoStopped;

/// A fixed pool of I/O threads with a bounded queue each.
#[derive(Debug)]
pub struct IoPool {
    queues: Vec<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    /// Starts `threads` I/O threads, each queueing up to `queue_depth` jobs.
    pub fn new(threads: usize, queue_depth: usize) -> std::io::Result<IoPool> {
        let mut queues = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, mut rx) = mpsc::channel::<Job>(queue_depth.max(1));
            let handle = std::thread::Builder::new()
                .name(format!("runnel-io-{i}"))
                .spawn(move || {
                    while let Some(job) = rx.blocking_recv() {
                        job();
                    }
                })?;
            queues.push(tx);
            handles.push(handle);
        }
        Ok(IoPool {
            queues,
            threads: handles,
        })
    }

    /// The queue of the thread that owns partition `partition` of `topic`.
    fn queue(&self, (topic, partition): &(String, i32)) -> &mpsc::Sender<Job> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        topic.hash(&mut h);
        let slot = h.finish().wrapping_add(*partition as u64) % self.queues.len() as u64;
        &self.queues[slot as usize]
    }

    /// Runs `f` on the thread that owns partition `key` and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        key: &(String, i32),
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, IoStopped> {
        self.submit(key, f).await?.await
    }

    /// Queues `f` on the thread that owns partition `key`; returns once it
    /// is queued (jobs for one partition run in the order they were
    /// queued) with a future of its result.
    pub async fn submit<R: Send + 'static>(
        &self,
        key: &(String, i32),
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<impl Future<Output = Result<R, IoStopped>> + Send + 'static, IoStopped> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.queue(key).send(job).await.map_err(|_| IoStopped)?;
        Ok(async move { rx.await.map_err(|_| IoStopped) })
    }

    /// Stops taking jobs, runs what is queued, and joins the threads.
    pub fn shutdown(self) {
        drop(self.queues);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn jobs_for_one_key_run_in_order_on_one_thread() {
        let pool = Arc::new(IoPool::new(3, 4).unwrap());
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let pool = Arc::clone(&pool);
            let seen = Arc::clone(&seen);
            // Submitted one after the other: each waits for its queue slot.
            tasks.push(
                pool.run(&("orders".to_owned(), 0), move || {
                    seen.lock()
                        .push((i, std::thread::current().name().map(str::to_owned)));
                })
                .await,
            );
        }
        assert!(tasks.iter().all(Result::is_ok));
        let seen = std::mem::take(&mut *seen.lock());
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        assert!(
            seen.windows(2).all(|w| w[0].1 == w[1].1),
            "one thread per key"
        );
        let counter = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&counter);
        assert_eq!(
            pool.run(&("x".to_owned(), 0), move || c
                .fetch_add(1, Ordering::SeqCst)
                + 41)
                .await,
            Ok(41)
        );
        Arc::into_inner(pool).unwrap().shutdown();
    }

    #[tokio::test]
    async fn a_topics_partitions_use_every_thread() {
        let pool = IoPool::new(2, 4).unwrap();
        let mut threads = std::collections::HashSet::new();
        for partition in 0..2 {
            let name = pool
                .run(&("orders".to_owned(), partition), || {
                    std::thread::current().name().map(str::to_owned)
                })
                .await
                .unwrap();
            threads.insert(name);
        }
        assert_eq!(threads.len(), 2, "{threads:?}");
        pool.shutdown();
    }
}

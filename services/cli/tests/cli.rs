//! The `runnel` binary as users and scripts run it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use runnel_client::partitioner::partition_for_key;

const RUNNEL: &str = env!("CARGO_BIN_EXE_runnel");

/// A `runnel dev` process on ephemeral ports.
struct Dev {
    child: Child,
    bootstrap: String,
    /// The broker's `/readyz` URL.
    readyz: String,
    /// The connect worker's REST URL.
    connect: String,
    stderr_path: std::path::PathBuf,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        Dev::start_with(dir, &[])
    }

    /// `runnel dev` with `extra` options after the listen addresses.
    fn start_with(dir: &Path, extra: &[&str]) -> Dev {
        let stderr_path = dir.join(format!(
            "dev-{}.err",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = dev_command(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut bootstrap = None;
        let mut readyz = None;
        let mut connect = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("runnel dev prints its addresses");
            if let Some(rest) = line.trim_start().strip_prefix("broker") {
                bootstrap = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.trim_start().strip_prefix("connect") {
                connect = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.trim_start().strip_prefix("health") {
                readyz = rest.split_whitespace().nth(1).map(str::to_owned);
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        Dev {
            child,
            bootstrap: bootstrap.expect("the broker address line"),
            readyz: readyz.expect("the health line"),
            connect: connect.expect("the connect line"),
            stderr_path,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_with(&self.bootstrap, args, stdin)
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; returns whether it exited with success, and its log.
    fn terminate(mut self) -> (bool, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = wait_exit(
            &mut self.child,
            Duration::from_secs(30),
            "runnel dev did not stop on SIGTERM",
        );
        (
            status.success(),
            std::fs::read_to_string(&self.stderr_path).unwrap(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap()
    }
}

/// Waits up to `within` for `child` to exit; past that, kills it and fails with `why`.
fn wait_exit(child: &mut Child, within: Duration, why: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `runnel dev` on ephemeral ports with its data and connectors under `dir`.
fn dev_command(dir: &Path) -> Command {
    let mut command = Command::new(RUNNEL);
    command
        .args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--broker-listen",
            "127.0.0.1:0",
            "--broker-admin-listen",
            "127.0.0.1:0",
            "--broker-kafka-listen",
            "127.0.0.1:0",
            "--controller-listen",
            "127.0.0.1:0",
            "--controller-admin-listen",
            "127.0.0.1:0",
            "--coordinator-listen",
            "127.0.0.1:0",
            "--coordinator-admin-listen",
            "127.0.0.1:0",
            "--connect-listen",
            "127.0.0.1:0",
            "--connect-admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--connectors-dir")
        .arg(dir.join("connectors"));
    command
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_with(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(RUNNEL)
        .args(args)
        .args(["--bootstrap", bootstrap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(<[u8]>::to_vec).unwrap_or_default();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The error contract: non-zero exit, one line on stderr, naming the problem.
fn fails_with(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{err:?} should mention {needle:?}"
    );
}

const N: usize = 100_000;

/// Checks consumed `key:value` lines: every key once, values intact, and
/// each partition's keys in send order.
fn check(lines: &str, n: usize) {
    let mut per_partition: HashMap<i32, Vec<usize>> = HashMap::new();
    let mut seen = vec![false; n];
    let mut count = 0;
    for line in lines.lines() {
        let (key, value) = line.split_once(':').unwrap();
        let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
        assert_eq!(value, format!("value-{i}"));
        assert!(!std::mem::replace(&mut seen[i], true), "duplicate {key}");
        per_partition
            .entry(partition_for_key(key.as_bytes(), 3))
            .or_default()
            .push(i);
        count += 1;
    }
    assert_eq!(count, n);
    for (p, keys) in per_partition {
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
}

#[test]
fn auto_created_topics_take_num_partitions_from_runnel_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(
        dir.path(),
        &["--num-partitions", "3", "--default-replication-factor", "1"],
    );
    ok(&dev.run(&["produce", "made-on-first-use"], Some(b"a\nb\n")));
    let described = ok(&dev.run(&["topics", "describe", "made-on-first-use"], None));
    assert!(described.contains("Partitions: 3"), "{described}");
    assert!(described.contains("ReplicationFactor: 1"), "{described}");
}

#[test]
fn records_survive_kill_9_and_producing_continues() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    assert_eq!(
        ok(&dev.run(&["topics", "create", "orders", "--partitions", "3"], None)),
        "created topic orders\n"
    );
    let input: String = (0..N).map(|i| format!("key-{i}:value-{i}\n")).collect();
    ok(&dev.run(
        &["produce", "orders", "--key-separator", ":", "--acks", "all"],
        Some(input.as_bytes()),
    ));
    let consume = [
        "consume",
        "orders",
        "--from-beginning",
        "--print-key",
        "--key-separator",
        ":",
        "--timeout-ms",
        "5000",
    ];
    check(&ok(&dev.run(&consume, None)), N);

    // kill -9, restart on the same data: everything acknowledged is there.
    dev.kill_9();
    let dev = Dev::start(dir.path());
    check(&ok(&dev.run(&consume, None)), N);
    let extra: String = (N..N + 10)
        .map(|i| format!("key-{i}:value-{i}\n"))
        .collect();
    ok(&dev.run(
        &["produce", "orders", "--key-separator", ":"],
        Some(extra.as_bytes()),
    ));
    check(&ok(&dev.run(&consume, None)), N + 10);
    let described = ok(&dev.run(&["topics", "describe", "orders"], None));
    let total: i64 = described
        .lines()
        .skip(3)
        .map(|l| l.split_whitespace().nth(5).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, (N + 10) as i64, "{described}");
    // --max-messages stops early; --partition/--offset reads from there.
    let out = ok(&dev.run(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "7",
        ],
        None,
    ));
    assert_eq!(out.lines().count(), 7);
    let out = ok(&dev.run(
        &[
            "consume",
            "orders",
            "--partition",
            "1",
            "--offset",
            "5",
            "--max-messages",
            "1",
            "--timeout-ms",
            "3000",
        ],
        None,
    ));
    assert_eq!(out.lines().count(), 1);
    let (clean, _) = dev.terminate();
    assert!(clean, "SIGTERM exits 0");
}

#[test]
fn sigterm_shuts_down_cleanly_and_restart_needs_no_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    ok(&dev.run(
        &[
            "topics",
            "create",
            "t",
            "--partitions",
            "2",
            "--config",
            "segment.bytes=100000",
        ],
        None,
    ));
    let input: String = (0..1000).map(|i| format!("{i}\n")).collect();
    ok(&dev.run(&["produce", "t"], Some(input.as_bytes())));
    let (clean, log) = dev.terminate();
    assert!(clean, "exit status 0 on SIGTERM");
    assert!(log.contains("broker stopped"), "{log}");
    let dev = Dev::start(dir.path());
    let out = ok(&dev.run(
        &["consume", "t", "--from-beginning", "--timeout-ms", "3000"],
        None,
    ));
    assert_eq!(out.lines().count(), 1000);
    assert!(
        !dev.log().contains("log recovered"),
        "a clean shutdown needs no recovery: {}",
        dev.log()
    );
    let described = ok(&dev.run(&["topics", "describe", "t"], None));
    assert!(
        described.contains("Configs: segment.bytes=100000"),
        "{described}"
    );
    let cluster = ok(&dev.run(&["cluster"], None));
    assert!(cluster.contains("alive"), "{cluster}");
}

#[test]
fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    fails_with(
        &dev.run(&["topics", "create", "bad name"], None),
        "only ASCII letters",
    );
    fails_with(
        &dev.run(
            &["topics", "create", "t", "--config", "retention.ms=never"],
            None,
        ),
        "retention.ms",
    );
    ok(&dev.run(&["topics", "create", "t", "--partitions", "3"], None));
    fails_with(&dev.run(&["topics", "create", "t"], None), "already exists");
    fails_with(
        &dev.run(&["topics", "alter", "t", "--partitions", "2"], None),
        "can only be added",
    );
    fails_with(
        &dev.run(
            &["topics", "config", "t", "--set", "cleanup.policy=shred"],
            None,
        ),
        "cleanup.policy",
    );
    fails_with(
        &dev.run(&["consume", "missing", "--timeout-ms", "100"], None),
        "topic missing does not exist",
    );
    fails_with(
        &dev.run(&["topics", "delete", "missing"], None),
        "does not exist",
    );
    let huge = vec![b'x'; 2 * 1024 * 1024];
    fails_with(&dev.run(&["produce", "t"], Some(&huge)), "max.request.size");
    fails_with(
        &run_with("127.0.0.1:1", &["topics", "list"], None),
        "127.0.0.1:1",
    );
    fails_with(
        &run_with("127.0.0.1:1", &["produce", "t"], Some(b"x\n")),
        "127.0.0.1:1",
    );
    // The topic is unchanged by all of that.
    let described = ok(&dev.run(&["topics", "describe", "t"], None));
    assert!(described.contains("Partitions: 3"), "{described}");
    assert!(described.contains("(all defaults)"), "{described}");
}

#[test]
fn verify_reads_back_every_acknowledged_record_and_names_what_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    ok(&dev.run(&["topics", "create", "v", "--partitions", "3"], None));
    let acked = dir.path().join("acked");
    let acked = acked.to_str().unwrap();
    let out = ok(&dev.run(
        &[
            "verify",
            "produce",
            "--topic",
            "v",
            "--rate",
            "2000",
            "--duration-secs",
            "1",
            "--acked-out",
            acked,
            "--max-failed",
            "0",
        ],
        None,
    ));
    assert!(
        out.contains("sent 2000, acknowledged 2000, failed 0"),
        "{out}"
    );
    let text = std::fs::read_to_string(acked).unwrap();
    let rows: Vec<(i32, i64, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].to_owned(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 2000);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(ids.len(), 2000, "ids are unique");
    let check = |acked: &str, extra: &[&str]| {
        let mut args = vec!["verify", "check", "--topic", "v", "--acked", acked];
        args.extend_from_slice(extra);
        dev.run(&args, None)
    };
    let out = ok(&check(acked, &[]));
    assert!(
        out.contains(
            "2000 acknowledged, 2000 read back at their offsets, 0 missing, 0 at another offset, 0 duplicates"
        ),
        "{out}"
    );

    // An acknowledged record that is not there, or not at its offset, fails the check.
    let (p, o, id) = &rows[0];
    let tampered = dir.path().join("tampered");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[0] = format!("{p} {} {id}", o + 100_000);
    lines.push("1 3 never-sent-1".to_owned());
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let out = check(tampered.to_str().unwrap(), &[]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1999 read back at their offsets, 1 missing, 1 at another offset"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing: never-sent-1 acknowledged at v-1 offset 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "moved: {id} acknowledged at v-{p} offset {}",
            o + 100_000
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 2 acknowledged records are not where they were acknowledged"),
        "{stderr}"
    );

    // A record written twice is a duplicate: counted, and fatal only when asked.
    ok(&dev.run(&["produce", "v"], Some(format!("{id}\n").as_bytes())));
    let out = ok(&check(acked, &[]));
    assert!(
        out.contains("0 missing, 0 at another offset, 1 duplicates"),
        "{out}"
    );
    fails_with(
        &check(acked, &["--fail-on-duplicates"]),
        "1 records were written more than once",
    );
}

#[test]
fn health_succeeds_only_when_the_url_answers_ok() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    assert_eq!(ok(&dev.run(&["health", &dev.readyz], None)), "");
    let missing = dev.readyz.replace("/readyz", "/nothing-here");
    fails_with(&dev.run(&["health", &missing], None), "answered 404");
    fails_with(
        &dev.run(&["health", "http://127.0.0.1:1/readyz"], None),
        "cannot reach http://127.0.0.1:1/readyz",
    );
    fails_with(
        &dev.run(&["health", "ftp://127.0.0.1/readyz"], None),
        "not an http:// or https:// URL",
    );
}

/// `runnel consume --group` and `runnel groups`: a group resumes at what it
/// committed, describe shows offsets and lag, reset-offsets is a dry run
/// unless --execute, and bad input is one clear line that changes nothing.
#[test]
fn groups_commit_describe_reset_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    ok(&dev.run(&["topics", "create", "events", "--partitions", "2"], None));
    let lines: String = (0..100).map(|i| format!("key-{i}:value-{i}\n")).collect();
    ok(&dev.run(
        &["produce", "events", "--key-separator", ":"],
        Some(lines.as_bytes()),
    ));
    let consume = |max: &str| {
        ok(&dev.run(
            &[
                "consume",
                "events",
                "--group",
                "app",
                "--from-beginning",
                "--max-messages",
                max,
                "--timeout-ms",
                "5000",
            ],
            None,
        ))
    };
    let first = consume("40");
    assert_eq!(first.lines().count(), 40);
    // The group resumes after what it printed: the rest, and nothing twice.
    let rest = consume("1000");
    assert_eq!(rest.lines().count(), 60);
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 100);

    let cluster = ok(&dev.run(&["cluster"], None));
    assert!(
        cluster
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("alive") && l.contains(" 50 ")),
        "the coordinator owns all 50 partitions of __consumer_offsets: {cluster}"
    );
    let listed = ok(&dev.run(&["groups", "list"], None));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("app ") && l.contains("Empty")),
        "{listed}"
    );
    let described = ok(&dev.run(&["groups", "describe", "app"], None));
    let lags: Vec<&str> = described
        .lines()
        .filter(|l| l.starts_with("events "))
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(lags, vec!["0", "0"], "{described}");

    // A dry run changes nothing; --execute does.
    let dry = ok(&dev.run(
        &[
            "groups",
            "reset-offsets",
            "app",
            "--topic",
            "events",
            "--to-earliest",
        ],
        None,
    ));
    assert!(dry.contains("dry run"), "{dry}");
    assert!(ok(&dev.run(&["groups", "describe", "app"], None)).contains(" 0  "));
    ok(&dev.run(
        &[
            "groups",
            "reset-offsets",
            "app",
            "--topic",
            "events:0",
            "--to-offset",
            "0",
            "--execute",
        ],
        None,
    ));
    let again = consume("1000");
    assert!(
        !again.is_empty() && again.lines().count() < 100,
        "partition 0 only: {again}"
    );

    // Bad input: one line, nothing changed.
    let before = ok(&dev.run(&["groups", "describe", "app"], None));
    fails_with(
        &dev.run(&["groups", "describe", "nobody"], None),
        "group nobody does not exist",
    );
    fails_with(
        &dev.run(&["groups", "delete", "nobody"], None),
        "group nobody does not exist",
    );
    fails_with(
        &dev.run(
            &[
                "groups",
                "reset-offsets",
                "app",
                "--topic",
                "events",
                "--to-datetime",
                "yesterday",
            ],
            None,
        ),
        "invalid --to-datetime",
    );
    fails_with(
        &dev.run(
            &[
                "groups",
                "reset-offsets",
                "app",
                "--topic",
                "events:7",
                "--to-latest",
                "--execute",
            ],
            None,
        ),
        "has no partition 7",
    );
    fails_with(
        &dev.run(
            &[
                "groups",
                "reset-offsets",
                "app",
                "--topic",
                "nope",
                "--to-latest",
                "--execute",
            ],
            None,
        ),
        "nope",
    );
    let no_target = dev.run(
        &["groups", "reset-offsets", "app", "--topic", "events"],
        None,
    );
    assert!(!no_target.status.success());
    assert_eq!(ok(&dev.run(&["groups", "describe", "app"], None)), before);

    // A group with a live member cannot be reset or deleted.
    let mut member = Command::new(RUNNEL)
        .args([
            "--bootstrap",
            &dev.bootstrap,
            "consume",
            "events",
            "--group",
            "app",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ok(&dev.run(&["groups", "describe", "app"], None)).contains("State: Stable") {
        assert!(
            std::time::Instant::now() < deadline,
            "the member never joined"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let active = ok(&dev.run(&["groups", "describe", "app"], None));
    fails_with(
        &dev.run(
            &[
                "groups",
                "reset-offsets",
                "app",
                "--topic",
                "events",
                "--to-latest",
                "--execute",
            ],
            None,
        ),
        "active member",
    );
    fails_with(
        &dev.run(&["groups", "delete", "app"], None),
        "active members",
    );
    assert_eq!(ok(&dev.run(&["groups", "describe", "app"], None)), active);
    // SIGTERM: the member commits, leaves the group, and exits 0.
    let pid = member.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(member.wait().unwrap().success());
    let left = ok(&dev.run(&["groups", "describe", "app"], None));
    assert!(left.contains("State: Empty"), "{left}");

    ok(&dev.run(&["groups", "delete", "app"], None));
    fails_with(
        &dev.run(&["groups", "describe", "app"], None),
        "does not exist",
    );
    let (clean, _) = dev.terminate();
    assert!(clean);
}

#[test]
fn connectors_from_files_and_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let connectors = dir.path().join("connectors");
    std::fs::create_dir(&connectors).unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "alpha\nbeta\ngamma\n").unwrap();
    std::fs::write(
        connectors.join("lines-in.toml"),
        format!(
            "connector.class = \"FileStreamSource\"\nfile = \"{}\"\ntopic = \"cli-lines\"\nvalue.converter = \"string\"\n",
            input.display()
        ),
    )
    .unwrap();
    let dev = Dev::start(dir.path());
    let connect = |args: &[&str]| {
        let mut all = vec!["connectors", "--connect-url", dev.connect.as_str()];
        all.extend_from_slice(args);
        dev.run(&all, None)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = dev.run(
            &[
                "consume",
                "cli-lines",
                "--from-beginning",
                "--timeout-ms",
                "1000",
            ],
            None,
        );
        if String::from_utf8_lossy(&out.stdout) == "alpha\nbeta\ngamma\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file source from the connectors dir never produced"
        );
    }
    let sink = dir.path().join("out.json");
    std::fs::write(
        &sink,
        serde_json::json!({"name": "lines-out", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "topics": "cli-lines", "file": output.to_str().unwrap(), "value.converter": "string"}})
        .to_string(),
    )
    .unwrap();
    assert!(
        ok(&connect(&["create", sink.to_str().unwrap()])).contains("Created connector lines-out")
    );
    fails_with(
        &connect(&["create", sink.to_str().unwrap()]),
        "Connector lines-out already exists",
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\nconnector.class = \"FileStreamSink\"\ntasks.max = 0\n",
    )
    .unwrap();
    let out = connect(&["create", bad.to_str().unwrap()]);
    fails_with(&out, "tasks.max");
    fails_with(&out, "topics");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&output).unwrap_or_default() != "alpha\nbeta\ngamma\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink never wrote the lines"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = ok(&connect(&["list"]));
    assert!(
        list.contains("lines-in") && list.contains("source"),
        "{list}"
    );
    assert!(
        list.contains("lines-out") && list.contains("sink"),
        "{list}"
    );
    assert!(ok(&connect(&["status", "lines-out"])).contains("RUNNING"));
    assert!(ok(&connect(&["pause", "lines-out"])).contains("Paused"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok(&connect(&["status", "lines-out"])).contains("PAUSED") {
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok(&connect(&["resume", "lines-out"])).contains("Resumed"));
    assert!(ok(&connect(&["restart", "lines-out"])).contains("Restarting"));
    assert!(ok(&connect(&["delete", "lines-out"])).contains("Deleted"));
    assert!(!ok(&connect(&["list"])).contains("lines-out"));
    fails_with(
        &connect(&["status", "lines-out"]),
        "Connector lines-out not found",
    );
    let (clean, log) = dev.terminate();
    assert!(clean, "{log}");
}

/// Runs `runnel ARGS` with its stdout read as `| head -1` reads it: one
/// line, then the pipe is closed. Returns that line, the exit status and
/// stderr.
fn into_head(bootstrap: &str, args: &[&str]) -> (String, ExitStatus, String) {
    let mut child = Command::new(RUNNEL)
        .args(args)
        .args(["--bootstrap", bootstrap])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout);
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_exit(
        &mut child,
        Duration::from_secs(60),
        &format!("runnel {args:?} still runs 60 s after its stdout was closed"),
    );
    (first, status, errors.join().unwrap())
}

/// `runnel ... | head -1`: once the reader has gone, the next write ends the
/// command quietly with status 0 (Rust ignores SIGPIPE, so without care
/// `println!` panics with "failed printing to stdout: Broken pipe").
#[test]
fn commands_end_quietly_when_their_output_pipe_closes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    // A consume without a limit runs until its reader goes away.
    let records: String = (0..20_000).map(|i| format!("{i:0>100}\n")).collect();
    ok(&dev.run(&["produce", "many"], Some(records.as_bytes())));
    let (first, status, errors) =
        into_head(&dev.bootstrap, &["consume", "many", "--from-beginning"]);
    assert_eq!(first, format!("{:0>100}\n", 0));
    assert!(status.success(), "{status}: {errors}");
    assert!(!errors.contains("panicked"), "{errors}");

    // Far more than a pipe holds (64 KiB) plus what the reader's buffer
    // took (8 KiB): describe writes after the reader has closed.
    let partitions = 1500;
    ok(&dev.run(
        &[
            "topics",
            "create",
            "wide",
            "--partitions",
            &partitions.to_string(),
        ],
        None,
    ));
    let described = ok(&dev.run(&["topics", "describe", "wide"], None));
    assert!(described.len() > 100 * 1024, "{} bytes", described.len());
    let (first, status, errors) = into_head(&dev.bootstrap, &["topics", "describe", "wide"]);
    assert!(first.starts_with("Topic: wide"), "{first}");
    assert!(status.success(), "{status}: {errors}");
    assert!(!errors.contains("panicked"), "{errors}");
    assert_eq!(errors, "", "nothing on stderr");
    drop(dev);

    // `runnel dev` itself: its last line, at shutdown, goes to a closed pipe.
    let mut child = dev_command(&dir.path().join("second"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Press Ctrl-C") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "runnel dev ended before its banner"
        );
    }
    drop(stdout);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(
        &mut child,
        Duration::from_secs(30),
        "runnel dev did not stop on SIGTERM",
    );
    let errors = errors.join().unwrap();
    assert!(status.success(), "{status}: {errors}");
    assert!(!errors.contains("panicked"), "{errors}");
}

/// A newcomer's first screen: with `RUST_LOG` unset, `runnel dev` says little
/// while it starts, and its banner (the addresses) comes last, so that no
/// log line scrolls it away.
#[test]
fn runnel_dev_prints_its_banner_last_and_on_the_first_screen() {
    let dir = tempfile::tempdir().unwrap();
    // stdout and stderr into one pipe, interleaved as a terminal shows them.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = dev_command(dir.path());
    command
        .env_remove("RUST_LOG")
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    let mut child = command.spawn().unwrap();
    // Our copies of the write end must go, or the reader never sees the end.
    drop(command);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut screen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !screen
        .last()
        .is_some_and(|l: &String| l.starts_with("Press Ctrl-C"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => screen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no banner in time; output so far:\n{}", screen.join("\n"));
            }
        }
    }
    let banner = screen
        .iter()
        .position(|l| l.starts_with("runnel dev is running"))
        .unwrap();
    let after = {
        let mut after = Vec::new();
        let quiet_until = Instant::now() + Duration::from_secs(3);
        while let Ok(line) = rx.recv_timeout(quiet_until.saturating_duration_since(Instant::now()))
        {
            after.push(line);
        }
        after
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        banner < 25,
        "the banner starts on line {} of the output:\n{}",
        banner + 1,
        screen.join("\n")
    );
    assert!(
        after.is_empty(),
        "log lines after the banner:\n{}\n(output before them:\n{})",
        after.join("\n"),
        screen.join("\n")
    );
}

#[test]
fn users_are_created_listed_and_deleted_without_the_password_leaving_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let out = dev.run(
        &["users", "create", "alice", "--password-stdin"],
        Some(b"correct horse\n"),
    );
    assert_eq!(ok(&out), "user alice created\n");
    ok(&dev.run(
        &[
            "users",
            "create",
            "bob",
            "--password",
            "battery staple",
            "--mechanism",
            "SCRAM-SHA-512",
            "--iterations",
            "8192",
        ],
        None,
    ));
    let listed = ok(&dev.run(&["users", "list"], None));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(lines[0].starts_with("USER") && lines[0].ends_with("MECHANISMS"));
    assert!(
        lines[1].starts_with("alice")
            && lines[1].ends_with("SCRAM-SHA-256(4096) SCRAM-SHA-512(4096)")
    );
    assert!(lines[2].starts_with("bob") && lines[2].ends_with("SCRAM-SHA-512(8192)"));

    fails_with(
        &dev.run(
            &[
                "users",
                "create",
                "carol",
                "--password",
                "x",
                "--iterations",
                "100",
            ],
            None,
        ),
        "iterations",
    );
    fails_with(
        &dev.run(
            &[
                "users",
                "create",
                "carol",
                "--password",
                "x",
                "--mechanism",
                "MD5",
            ],
            None,
        ),
        "unknown SCRAM mechanism",
    );
    fails_with(
        &dev.run(
            &["users", "create", "carol", "--password-stdin"],
            Some(b"\n"),
        ),
        "must not be empty",
    );
    fails_with(
        &dev.run(&["users", "delete", "nobody"], None),
        "no credentials",
    );
    fails_with(
        &dev.run(
            &["users", "delete", "bob", "--mechanism", "SCRAM-SHA-256"],
            None,
        ),
        "does not exist",
    );
    assert_eq!(
        ok(&dev.run(&["users", "delete", "alice"], None)),
        "user alice deleted\n"
    );
    let listed = ok(&dev.run(&["users", "list"], None));
    assert!(
        !listed.contains("alice") && listed.contains("bob"),
        "{listed}"
    );

    let (clean, log) = dev.terminate();
    assert!(clean);
    for secret in ["correct horse", "battery staple"] {
        assert!(!log.contains(secret), "a password in the log");
    }
    // Nor in the controller's files (its state and Raft log, with their WALs).
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path().join("data").join("controller")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("correct horse") && !text.contains("battery staple"));
        checked += usize::from(text.contains("alice") || text.contains("bob"));
    }
    assert!(checked > 0, "the users are in the controller's files");
}

#[test]
fn acls_are_added_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    let added = ok(&dev.run(
        &[
            "acls",
            "add",
            "--allow-principal",
            "User:alice",
            "--consumer",
            "--topic",
            "orders",
            "--group",
            "billing",
        ],
        None,
    ));
    assert!(added.starts_with("added 3 ACL binding(s)\n"), "{added}");
    ok(&dev.run(
        &[
            "acls",
            "add",
            "--deny-principal",
            "User:bob",
            "--operation",
            "write",
            "--topic",
            "logs-",
            "--resource-pattern-type",
            "prefixed",
        ],
        None,
    ));
    let listed = ok(&dev.run(&["acls", "list"], None));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 5, "{listed}");
    assert!(lines[0].starts_with("PRINCIPAL") && lines[0].ends_with("NAME"));
    assert!(
        listed.contains("User:bob") && listed.contains("DENY") && listed.contains("PREFIXED"),
        "{listed}"
    );
    // MATCH: what applies to one topic, whatever its pattern.
    let matching = ok(&dev.run(
        &[
            "acls",
            "list",
            "--topic",
            "logs-app",
            "--resource-pattern-type",
            "match",
        ],
        None,
    ));
    assert_eq!(matching.lines().count(), 2, "{matching}");
    fails_with(
        &dev.run(
            &[
                "acls",
                "add",
                "--allow-principal",
                "alice",
                "--operation",
                "read",
                "--topic",
                "t",
            ],
            None,
        ),
        "TYPE:NAME",
    );
    fails_with(
        &dev.run(
            &["acls", "add", "--allow-principal", "User:a", "--topic", "t"],
            None,
        ),
        "--operation",
    );
    fails_with(&dev.run(&["acls", "remove"], None), "--all");
    let removed = ok(&dev.run(&["acls", "remove", "--principal", "User:alice"], None));
    assert!(
        removed.starts_with("removed 3 ACL binding(s)\n"),
        "{removed}"
    );
    let listed = ok(&dev.run(&["acls", "list"], None));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let (clean, _) = dev.terminate();
    assert!(clean);
}

#[test]
fn quotas_are_set_described_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());
    assert_eq!(ok(&dev.run(&["quotas", "describe"], None)), "");
    let altered = ok(&dev.run(
        &[
            "quotas",
            "alter",
            "--user",
            "alice",
            "--client-id",
            "app",
            "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048,request_percentage=12.5",
        ],
        None,
    ));
    assert_eq!(
        altered,
        "updated quota configs for user-principal 'alice', client-id 'app'\n"
    );
    ok(&dev.run(
        &[
            "quotas",
            "alter",
            "--user-defaults",
            "--add-config",
            "consumer_byte_rate=4096",
        ],
        None,
    ));
    let all = ok(&dev.run(&["quotas", "describe"], None));
    assert_eq!(
        all,
        "Quota configs for the default user-principal are consumer_byte_rate=4096.0\n\
         Quota configs for user-principal 'alice', client-id 'app' are \
         producer_byte_rate=1024.0, consumer_byte_rate=2048.0, request_percentage=12.5\n"
    );
    // A named entity is that entity only, as kafka-configs.sh describes it.
    assert_eq!(
        ok(&dev.run(&["quotas", "describe", "--user", "alice"], None)),
        ""
    );
    let pair = ok(&dev.run(
        &[
            "quotas",
            "describe",
            "--user",
            "alice",
            "--client-id",
            "app",
        ],
        None,
    ));
    assert!(pair.contains("producer_byte_rate=1024.0"), "{pair}");

    ok(&dev.run(
        &[
            "quotas",
            "alter",
            "--user",
            "alice",
            "--client-id",
            "app",
            "--delete-config",
            "producer_byte_rate,request_percentage",
        ],
        None,
    ));
    let pair = ok(&dev.run(
        &[
            "quotas",
            "describe",
            "--user",
            "alice",
            "--client-id",
            "app",
        ],
        None,
    ));
    assert_eq!(
        pair,
        "Quota configs for user-principal 'alice', client-id 'app' are consumer_byte_rate=2048.0\n"
    );
    // The entity's last quota removed, the entity is gone.
    ok(&dev.run(
        &[
            "quotas",
            "alter",
            "--user",
            "alice",
            "--client-id",
            "app",
            "--delete-config",
            "consumer_byte_rate",
        ],
        None,
    ));
    let all = ok(&dev.run(&["quotas", "describe"], None));
    assert_eq!(
        all,
        "Quota configs for the default user-principal are consumer_byte_rate=4096.0\n"
    );

    fails_with(
        &dev.run(
            &[
                "quotas",
                "alter",
                "--user",
                "alice",
                "--add-config",
                "producer_rate=1024",
            ],
            None,
        ),
        "unknown quota \"producer_rate\" (known: producer_byte_rate, consumer_byte_rate",
    );
    fails_with(
        &dev.run(
            &[
                "quotas",
                "alter",
                "--client-defaults",
                "--add-config",
                "consumer_byte_rate=1.5",
            ],
            None,
        ),
        "whole number",
    );
    fails_with(
        &dev.run(
            &["quotas", "alter", "--add-config", "consumer_byte_rate=1"],
            None,
        ),
        "--user-defaults",
    );
    fails_with(
        &dev.run(&["quotas", "alter", "--user", "alice"], None),
        "--add-config",
    );
    // Nothing of the refused changes was applied.
    assert_eq!(ok(&dev.run(&["quotas", "describe"], None)), all);
    let (clean, _) = dev.terminate();
    assert!(clean);
}

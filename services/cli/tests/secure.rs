//! `runnel dev --secure` as a user meets it: the banner's settings work
//! for the `runnel` CLI and for kcat over SASL_SSL, and whoever lacks them
//! (no credentials, a wrong password, no CA, plaintext) is refused with
//! one clear line.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const RUNNEL: &str = env!("CARGO_BIN_EXE_runnel");

/// A `runnel dev --secure` on ephemeral ports, with what its banner said.
struct SecureDev {
    child: Child,
    bootstrap: String,
    kafka: String,
    ca: PathBuf,
    password: String,
}

impl Drop for SecureDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> SecureDev {
    let mut command = Command::new(RUNNEL);
    command
        .args(["dev", "--secure", "--data-dir"])
        .arg(dir.join("data"));
    for flag in [
        "--broker-listen",
        "--broker-admin-listen",
        "--broker-kafka-listen",
        "--controller-listen",
        "--controller-admin-listen",
        "--coordinator-listen",
        "--coordinator-admin-listen",
        "--connect-listen",
        "--connect-admin-listen",
    ] {
        command.args([flag, "127.0.0.1:0"]);
    }
    let mut child = command
        .arg("--connectors-dir")
        .arg(dir.join("connectors"))
        .env_remove("RUNNEL_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("dev.err")).unwrap())
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
    let field = |line: &str, prefix: &str| {
        line.trim_start()
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    let (mut bootstrap, mut kafka, mut password) = (None, None, None);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("runnel dev --secure prints its banner");
        bootstrap = bootstrap.or_else(|| field(&line, "broker"));
        kafka = kafka.or_else(|| field(&line, "kafka "));
        if let Some(rest) = line
            .trim_start()
            .strip_prefix("admin user  admin, password ")
        {
            password = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    SecureDev {
        child,
        bootstrap: bootstrap.expect("the broker line"),
        kafka: kafka.expect("the kafka line"),
        ca: dir.join("data/tls/ca.pem"),
        password: password.expect("the generated password in the banner"),
    }
}

impl SecureDev {
    /// `runnel <args>` with `env` (RUNNEL_* settings) and nothing inherited
    /// of them.
    fn runnel(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
        let mut command = Command::new(RUNNEL);
        for var in [
            "RUNNEL_USER",
            "RUNNEL_PASSWORD",
            "RUNNEL_CA_FILE",
            "RUNNEL_CERT_FILE",
        ] {
            command.env_remove(var);
        }
        let mut child = command
            .args(args)
            .args(["--bootstrap", &self.bootstrap])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn admin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let ca = self.ca.to_str().unwrap();
        self.runnel(
            args,
            &[
                ("RUNNEL_CA_FILE", ca),
                ("RUNNEL_USER", "admin"),
                ("RUNNEL_PASSWORD", &self.password),
            ],
            stdin,
        )
    }

    fn kcat(&self, password: &str, args: &[&str]) -> Output {
        Command::new("kcat")
            .args(["-b", &self.kafka])
            .args(["-X", "security.protocol=SASL_SSL"])
            // Debian's kcat links a librdkafka older than Kafka's strict
            // SCRAM nonce check: PLAIN, over TLS.
            .args(["-X", "sasl.mechanisms=PLAIN"])
            .args(["-X", "sasl.username=admin"])
            .args(["-X", &format!("sasl.password={password}")])
            .args(["-X", &format!("ssl.ca.location={}", self.ca.display())])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kcat runs (scripts/test installs it)")
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{err:?} should mention {needle:?}"
    );
}

#[test]
fn runnel_dev_secure_serves_its_banners_settings_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(dir.path());

    // The generated password is kept, for this user alone.
    let file = dir.path().join("data/tls/admin.password");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), dev.password);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.password is private");
        let mode = std::fs::metadata(dir.path().join("data/tls/broker.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "keys are private");
    }

    // The banner's CLI settings work.
    ok(&dev.admin(&["topics", "create", "orders", "--partitions", "1"], b""));
    ok(&dev.admin(&["produce", "orders"], b"one\ntwo\nthree\n"));
    let read = ok(&dev.admin(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "3",
        ],
        b"",
    ));
    assert_eq!(read, "one\ntwo\nthree\n");

    // kcat with the banner's Kafka settings reads them over SASL_SSL.
    let read = dev.kcat(
        &dev.password,
        &["-C", "-t", "orders", "-o", "beginning", "-e", "-q"],
    );
    assert_eq!(ok(&read), "one\ntwo\nthree\n");
    let refused = dev.kcat("wrong", &["-L", "-m", "5"]);
    assert!(
        !refused.status.success(),
        "kcat with a wrong password is refused"
    );

    // Without the settings: one clear line each.
    let ca = dev.ca.to_str().unwrap();
    fails_with(
        &dev.runnel(&["topics", "list"], &[("RUNNEL_CA_FILE", ca)], b""),
        "--user",
    );
    fails_with(
        &dev.runnel(
            &["topics", "list"],
            &[
                ("RUNNEL_CA_FILE", ca),
                ("RUNNEL_USER", "admin"),
                ("RUNNEL_PASSWORD", "wrong"),
            ],
            b"",
        ),
        "invalid username or password",
    );
    let plaintext = dev.runnel(
        &["topics", "list"],
        &[("RUNNEL_USER", "admin"), ("RUNNEL_PASSWORD", &dev.password)],
        b"",
    );
    fails_with(&plaintext, "give --ca-file");
}

//! `runnel users ...`: users' SCRAM credentials, as Kafka's
//! `kafka-configs.sh --entity-type users --alter --add-config SCRAM-SHA-512=[...]`.
//! The password is salted and hashed here; the cluster never sees it.

use std::io::BufRead;

use anyhow::{Context, bail};
use runnel_client::{Admin, ClientConfig, DEFAULT_ITERATIONS, ScramMechanism};

use crate::outln;

/// `runnel users` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a user, or set a new password for one.
    Create {
        /// The user name (clients authenticate as `User:<name>`).
        user: String,
        /// The password (visible to other local users in the process list:
        /// prefer --password-stdin).
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeatable (default: both).
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Delete a user's credentials.
    Delete {
        /// The user name.
        user: String,
        /// Only this mechanism's credential; repeatable (default: all of them).
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
    },
    /// List users with their mechanisms and iteration counts.
    List,
}

fn mechanisms(names: &[String]) -> anyhow::Result<Vec<ScramMechanism>> {
    if names.is_empty() {
        return Ok(ScramMechanism::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            ScramMechanism::from_name(n).with_context(|| {
                format!("unknown SCRAM mechanism {n:?} (SCRAM-SHA-256 or SCRAM-SHA-512)")
            })
        })
        .collect()
}

/// Runs a users subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::Create {
            user,
            password,
            password_stdin,
            mechanisms: names,
            iterations,
        } => {
            let password = match (password, password_stdin) {
                (Some(p), _) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("cannot read the password from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
                (None, false) => bail!("give the password with --password or --password-stdin"),
            };
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            for m in mechanisms(&names)? {
                admin
                    .upsert_scram_credential(&user, m, &password, iterations)
                    .await
                    .with_context(|| format!("cannot set the {m} credential of {user}"))?;
            }
            outln!("user {user} created")?;
        }
        Command::Delete {
            user,
            mechanisms: names,
        } => {
            let chosen = if names.is_empty() {
                let users = admin
                    .describe_scram_credentials()
                    .await
                    .context("cannot list users")?;
                let Some(found) = users.into_iter().find(|u| u.user == user) else {
                    bail!("user {user} has no credentials");
                };
                found.credentials.into_iter().map(|(m, _)| m).collect()
            } else {
                mechanisms(&names)?
            };
            for m in chosen {
                admin
                    .delete_scram_credential(&user, m)
                    .await
                    .with_context(|| format!("cannot delete the {m} credential of {user}"))?;
            }
            outln!("user {user} deleted")?;
        }
        Command::List => {
            let users = admin
                .describe_scram_credentials()
                .await
                .context("cannot list users")?;
            outln!("{:<32}  MECHANISMS", "USER")?;
            for u in users {
                let mechanisms: Vec<String> = u
                    .credentials
                    .iter()
                    .map(|(m, iterations)| format!("{m}({iterations})"))
                    .collect();
                outln!("{:<32}  {}", u.user, mechanisms.join(" "))?;
            }
        }
    }
    Ok(())
}

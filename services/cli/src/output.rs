//! What the commands print, written so that a closed pipe ends a command
//! quietly.
//!
//! Rust ignores SIGPIPE, so once the reader of our stdout has gone (`runnel
//! topics describe big | head -3`) a write fails with `BrokenPipe` instead of
//! ending the process, and `println!` panics on that failure. Commands print
//! with [`outln!`](crate::outln) instead, which hands the failure back as an
//! [`OutputError`]: `main` turns [`OutputError::Closed`] into a quiet exit 0,
//! as `cat` and Kafka's scripts end, and any other write failure into the
//! usual one-line error. (The workspace forbids `unsafe`, so resetting
//! SIGPIPE to its default is not an option.)

use std::fmt;
use std::io::{self, Write};

/// Why a command could not print.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader of stdout has gone: it has read all it wanted.
    #[error("stdout was closed")]
    Closed,
    /// Stdout refused the write for another reason (a full disk, ...).
    #[error("cannot write to stdout")]
    Write(#[source] io::Error),
}

impl From<io::Error> for OutputError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            OutputError::Closed
        } else {
            OutputError::Write(e)
        }
    }
}

/// Writes `args` and a newline to stdout.
pub fn line(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    writeln!(io::stdout().lock(), "{args}")?;
    Ok(())
}

/// Writes `args` to stdout, without a newline.
pub fn text(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    write!(io::stdout().lock(), "{args}")?;
    Ok(())
}

/// Writes `args` and a newline to stderr. A failure is ignored: stderr is
/// where failures would be reported, so there is nowhere left to say it.
pub fn error_line(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// Whether `e` is, or was caused by, stdout having been closed.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<OutputError>(), Some(OutputError::Closed)))
}

/// `println!` that returns a write failure (`Result<(), OutputError>`)
/// instead of panicking on it.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `print!` that returns a write failure (`Result<(), OutputError>`)
/// instead of panicking on it.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::text(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (a closed stderr is ignored).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::error_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_pipe_counts_as_closed() {
        let closed = anyhow::Error::from(OutputError::from(io::Error::from(
            io::ErrorKind::BrokenPipe,
        )));
        assert!(is_closed(&closed));
        assert!(is_closed(&closed.context("printing the topic")));
        let full = anyhow::Error::from(OutputError::from(io::Error::from(
            io::ErrorKind::StorageFull,
        )));
        assert!(!is_closed(&full));
        assert_eq!(
            format!("{full:#}"),
            format!(
                "cannot write to stdout: {}",
                io::Error::from(io::ErrorKind::StorageFull)
            )
        );
        // A broken pipe elsewhere (a connection to a broker) is a real error.
        assert!(!is_closed(&anyhow::Error::from(io::Error::from(
            io::ErrorKind::BrokenPipe
        ))));
    }
}

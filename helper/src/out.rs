//! Standard output for the commands that print tables and reports: a reader
//! that goes away (`kgpu-helper stats --watch 2 | head -3`) ends the command
//! quietly instead of panicking the way `println!` does on `EPIPE` (Rust
//! ignores SIGPIPE, so the write fails instead of killing the process).
//! Progress and error lines on standard error never panic either.

use std::io::{ErrorKind, Write};

/// Standard output was closed by its reader; the command stops, successfully.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Why printing failed.
#[derive(Debug, thiserror::Error)]
pub enum OutError {
    /// The reader went away.
    #[error(transparent)]
    Closed(#[from] StdoutClosed),
    /// Any other write error (a full disk behind a redirection, ...).
    #[error("write to standard output: {0}")]
    Io(std::io::Error),
}

/// Writes `s` to `w` and flushes, mapping a closed pipe to [`StdoutClosed`].
pub fn write_to(w: &mut dyn Write, s: &str) -> Result<(), OutError> {
    w.write_all(s.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => OutError::Closed(StdoutClosed),
            _ => OutError::Io(e),
        })
}

/// Writes `s` to standard output (see [`write_to`]).
pub fn print(s: &str) -> Result<(), OutError> {
    write_to(&mut std::io::stdout().lock(), s)
}

/// Writes a line to standard error; a closed stderr (`2>&1 | head`) is
/// ignored rather than a panic, as `eprintln!` would.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_its_own_error() {
        assert!(matches!(
            write_to(&mut Closed, "x\n"),
            Err(OutError::Closed(_))
        ));
        let mut v = Vec::new();
        write_to(&mut v, "abc\n").unwrap();
        assert_eq!(v, b"abc\n");
    }
}

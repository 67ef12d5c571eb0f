//! Child processes under a context: Go's `exec.CommandContext` with `Cancel` (SIGTERM) and
//! `WaitDelay` (the grace period before SIGKILL).

use std::fmt;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::{Context, Error};

/// Why [`output`] returned no normal result.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// The command could not be started or waited for.
    Io(std::io::Error),
    /// The context ended before the command did: the child got SIGTERM, then SIGKILL if it
    /// was still running after the grace period, and was reaped (no zombie is left).
    Stopped {
        /// Why the context ended.
        err: Error,
        /// Whether SIGKILL was needed (the child outlived the grace period).
        killed: bool,
        /// Everything the child wrote before it ended, and how it ended.
        output: Output,
    },
}

impl ProcessError {
    /// The context's error, if that is why the command stopped.
    pub fn context_error(&self) -> Option<Error> {
        match self {
            ProcessError::Stopped { err, .. } => Some(*err),
            ProcessError::Io(_) => None,
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Io(err) => write!(f, "running the command failed: {err}"),
            ProcessError::Stopped {
                err, killed: false, ..
            } => write!(f, "command stopped with SIGTERM: {err}"),
            ProcessError::Stopped {
                err, killed: true, ..
            } => {
                write!(
                    f,
                    "command killed after ignoring SIGTERM for the grace period: {err}"
                )
            }
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Io(err) => Some(err),
            ProcessError::Stopped { err, .. } => Some(err),
        }
    }
}

impl From<ProcessError> for std::io::Error {
    fn from(err: ProcessError) -> std::io::Error {
        match err {
            ProcessError::Io(err) => err,
            ProcessError::Stopped { err, .. } => err.into(),
        }
    }
}

/// Runs `command` to completion under `ctx`, capturing its stdout and stderr, like Go's
/// `exec.CommandContext(ctx, ...).Output()` with `Cancel` sending SIGTERM and `WaitDelay`
/// set to `grace`.
///
/// When `ctx` ends first, the child gets SIGTERM; if it has not exited `grace` later it gets
/// SIGKILL. Either way it is reaped before this returns [`ProcessError::Stopped`] with the
/// context's error and the output captured so far. Output pipes still held open by
/// grandchildren are abandoned `grace` after the child exits, so this never hangs on them.
///
/// ```
/// use std::time::Duration;
/// use ctx_core::{Context, Error, process};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let ctx = Context::background().with_timeout(Duration::from_millis(100));
/// let mut sleep = tokio::process::Command::new("sleep");
/// sleep.arg("30");
/// let err = process::output(&ctx, &mut sleep, Duration::from_secs(1)).await.unwrap_err();
/// assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
/// # }
/// ```
pub async fn output(
    ctx: &Context,
    command: &mut Command,
    grace: Duration,
) -> Result<Output, ProcessError> {
    if let Some(err) = ctx.err() {
        let output = Output {
            status: ExitStatus::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        return Err(ProcessError::Stopped {
            err,
            killed: false,
            output,
        });
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(ProcessError::Io)?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (exited_tx, exited_rx) = watch::channel(false);

    let status = async {
        let ended = stop_on_done(ctx, &mut child, grace).await;
        let _ = exited_tx.send(true);
        ended
    };
    let (ended, stdout, stderr) = tokio::join!(
        status,
        drain(stdout, exited_rx.clone(), grace),
        drain(stderr, exited_rx, grace)
    );
    let (status, stopped) = ended.map_err(ProcessError::Io)?;
    let output = Output {
        status,
        stdout,
        stderr,
    };
    match stopped {
        None => Ok(output),
        Some((err, killed)) => Err(ProcessError::Stopped {
            err,
            killed,
            output,
        }),
    }
}

type Ended = std::io::Result<(ExitStatus, Option<(Error, bool)>)>;

/// Waits for the child; if the context ends first, SIGTERM, grace, SIGKILL, and reap.
async fn stop_on_done(ctx: &Context, child: &mut Child, grace: Duration) -> Ended {
    let err = match ctx.run(child.wait()).await {
        Ok(status) => return Ok((status?, None)),
        Err(err) => err,
    };
    if let Some(pid) = child.id() {
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our unreaped child,
        // so it cannot have been recycled for another process.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => Ok((status?, Some((err, false)))),
        Err(_elapsed) => {
            child.start_kill()?;
            Ok((child.wait().await?, Some((err, true))))
        }
    }
}

/// Reads a pipe to its end, or until `grace` after the child exited.
async fn drain(
    pipe: Option<impl AsyncRead + Unpin>,
    mut exited: watch::Receiver<bool>,
    grace: Duration,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(mut pipe) = pipe else { return buf };
    let give_up = async {
        let _ = exited.wait_for(|exited| *exited).await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            read = pipe.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = &mut give_up => break,
        }
    }
    buf
}

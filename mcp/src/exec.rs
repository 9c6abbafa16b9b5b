//! Running an allowed command and collecting a bounded copy of its output.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// What a finished (or stopped) command left.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Ran {
    /// The exit code; `None` when it was killed by a signal or the timeout.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout or stderr was cut at [`MAX_OUTPUT`] bytes.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Whether the timeout stopped it.
    pub timed_out: bool,
}

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start the shell {shell}: {source}")]
    Spawn {
        shell: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the command's output: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads everything from `r`, keeping the first [`MAX_OUTPUT`] bytes.
async fn bounded(mut r: impl AsyncRead + Unpin) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, cut));
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        cut |= n > room;
    }
}

/// The shell that runs allowed commands: `HOLDPOINT_REAL_SHELL`, else
/// bash, else sh (as `holdpoint sh` does).
pub fn real_shell() -> String {
    if let Ok(s) = std::env::var("HOLDPOINT_REAL_SHELL")
        && !s.is_empty()
    {
        return s;
    }
    for s in ["/bin/bash", "/usr/bin/bash", "/bin/sh"] {
        if Path::new(s).exists() {
            return s.to_string();
        }
    }
    "/bin/sh".to_string()
}

/// Runs `line` with `shell -c` in `cwd`, stopping it after `timeout`.
/// Only call this with a command the gate allowed.
pub async fn run(line: &str, cwd: &Path, timeout: Duration) -> Result<Ran, ExecError> {
    let shell = real_shell();
    let mut child = tokio::process::Command::new(&shell)
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            shell: shell.clone(),
            source,
        })?;
    let out = child.stdout.take().map(bounded);
    let err = child.stderr.take().map(bounded);
    let reading = async {
        let o = match out {
            Some(f) => f.await?,
            None => (Vec::new(), false),
        };
        let e = match err {
            Some(f) => f.await?,
            None => (Vec::new(), false),
        };
        Ok::<_, std::io::Error>((o, e))
    };
    let waited = tokio::time::timeout(timeout, async {
        let (read, status) = tokio::join!(reading, child.wait());
        Ok::<_, std::io::Error>((read?, status?))
    })
    .await;
    match waited {
        Ok(Ok(((o, e), status))) => Ok(Ran {
            exit_code: status.code(),
            stdout: String::from_utf8_lossy(&o.0).into_owned(),
            stderr: String::from_utf8_lossy(&e.0).into_owned(),
            stdout_truncated: o.1,
            stderr_truncated: e.1,
            timed_out: false,
        }),
        Ok(Err(e)) => Err(ExecError::Io(e)),
        Err(_) => {
            let _ = child.kill().await;
            Ok(Ran {
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                timed_out: true,
            })
        }
    }
}

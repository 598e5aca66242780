//! The provider process when the kit starts it itself (`--provider-command`): its output is kept
//! (to look for the canary secret) and a restart is stop + start of the same command.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
};

use crate::Error;

/// A provider started by the kit through `sh -c`, in its own process group.
pub struct ManagedProvider {
    command: String,
    child: Option<Child>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl ManagedProvider {
    /// Starts `command` with `sh -c`; stdout and stderr are collected.
    pub fn start(command: &str) -> Result<Self, Error> {
        let mut provider = Self {
            command: command.to_owned(),
            child: None,
            output: Arc::default(),
        };
        provider.spawn()?;
        Ok(provider)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that stopping it also stops what `sh` started.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                command: self.command.clone(),
                source,
            })?;
        if let Some(out) = child.stdout.take() {
            collect(out, self.output.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, self.output.clone());
        }
        self.child = Some(child);
        Ok(())
    }

    /// Everything the provider wrote so far, on stdout and stderr, across restarts.
    pub fn output(&self) -> Vec<u8> {
        self.output
            .lock()
            .map(|o| o.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM to the process group, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            signal_group(pid, "TERM").await;
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                signal_group(pid, "KILL").await;
            }
        }
        let _ = child.kill().await;
    }

    /// Stops the provider and starts the same command again.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop(Duration::from_secs(10)).await;
        self.spawn()
    }
}

/// Signals the whole process group through the system's `kill`, which keeps this crate free of
/// unsafe code and of a libc dependency.
async fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

fn collect(mut from: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut out = into.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            out.extend_from_slice(&buf[..n]);
        }
    });
}

/// Runs a user's restart command to completion.
pub async fn run_restart_command(command: &str) -> Result<(), Error> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|source| Error::Spawn {
            command: command.to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::RestartFailed {
            command: command.to_owned(),
            status: status.to_string(),
        })
    }
}

//! Child processes for tests: output goes to a log file, and they are stopped when dropped.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::Context;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};

/// A running child process whose stdout and stderr go to `log`.
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `cmd`, sending its output to `<log_dir>/<name>.log`. The process is killed if this
    /// value is dropped without [`stop`](Self::stop).
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Error lines (klog `E`/`F` lines, lines containing "error") followed by the last `lines`
    /// lines: what a failure message needs, without the flag dump components print at start.
    pub fn log_excerpt(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with('E') || l.starts_with('F') || l.to_lowercase().contains("error")
            })
            .take(20)
            .collect();
        format!("{}\n...\n{}", errors.join("\n"), self.log_tail(lines))
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the log's tail if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} exited ({status}); log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_excerpt(15)
            ),
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("process already exited")?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)?;
        Ok(())
    }

    /// Sends SIGTERM and waits up to `grace` for the exit, then kills. Returns the exit status.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let _ = self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                tracing::warn!(name = %self.name, "did not stop within {grace:?}; killing");
                self.child.kill().await?;
                Ok(self.child.wait().await?)
            }
        }
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("{} still running after {timeout:?}", self.name))?
            .context("waiting for process")
    }
}

/// `result`, an error with an excerpt of each process's log added: what a failed test that ran
/// them needs to be understood.
pub fn with_logs<T>(result: anyhow::Result<T>, procs: &[&ManagedProcess]) -> anyhow::Result<T> {
    result.map_err(|err| {
        let logs: Vec<String> = procs
            .iter()
            .map(|p| format!("--- {} log (excerpt) ---\n{}", p.name(), p.log_excerpt(60)))
            .collect();
        err.context(logs.join("\n"))
    })
}

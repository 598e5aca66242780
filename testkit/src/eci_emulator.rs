//! Launcher for the `eci-emulator` binary (an emulator of Alibaba Cloud's ECI OpenAPI, written
//! from the cloud's documentation) and a client for its unsigned admin API under `/_emulator/`.
//!
//! The binary is found next to the test executable ([`crate::bins::workspace_bin`]), so a crate
//! whose tests use this needs `eci-emulator` as a dev-dependency.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
};

use crate::{bins::workspace_bin, ports::free_port, process::ManagedProcess};

/// The region the emulator serves.
pub const REGION: &str = "cn-hangzhou";
/// The emulator's long-term AccessKey ID.
pub const ACCESS_KEY_ID: &str = "LTAI5tEmulatorKey0001";
/// The emulator's long-term AccessKey secret (test-only).
pub const ACCESS_KEY_SECRET: &str = "EmulatorSecret0001EmulatorSecret";
/// The STS AccessKey ID the emulator accepts with [`STS_TOKEN`].
pub const STS_ACCESS_KEY_ID: &str = "STS.EmulatorStsKey";
/// The STS AccessKey secret (test-only).
pub const STS_ACCESS_KEY_SECRET: &str = "EmulatorStsSecret0001";
/// The STS security token (`x-acs-security-token`) that goes with [`STS_ACCESS_KEY_ID`].
pub const STS_TOKEN: &str = "EmulatorSecurityToken0001";
/// The only vSwitch the emulator knows (in [`ZONE_ID`]).
pub const VSWITCH_ID: &str = "vsw-emulator0001";
/// The only security group the emulator knows.
pub const SECURITY_GROUP_ID: &str = "sg-emulator0001";
/// The zone of [`VSWITCH_ID`].
pub const ZONE_ID: &str = "cn-hangzhou-h";

/// The provider-eci flags that point it at an emulator (at `endpoint`: the emulator's, or a proxy
/// in front of it) and its placement (vSwitch, security group, zone).
pub fn provider_flags(endpoint: &str) -> Vec<String> {
    [
        "--region",
        REGION,
        "--endpoint",
        endpoint,
        "--vswitch-id",
        VSWITCH_ID,
        "--security-group-id",
        SECURITY_GROUP_ID,
        "--zone-id",
        ZONE_ID,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// provider-eci's environment for [`provider_flags`]: the AccessKey pair the emulator accepts.
pub fn provider_env() -> Vec<(&'static str, String)> {
    vec![
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
        (
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            ACCESS_KEY_SECRET.to_owned(),
        ),
    ]
}

/// Behaviour knobs passed as flags.
#[derive(Clone, Debug)]
pub struct EciEmulatorOptions {
    /// Probability (0..=1) that an API call gets a `Throttling.User` error and has no effect.
    pub throttle_rate: f64,
    /// Time a new container group stays `Pending` before it runs.
    pub start_delay_ms: u64,
    /// Interval of the `heartbeat <n>` lines in a running container's log.
    pub log_heartbeat_ms: u64,
    /// Probability (0..=1) that a `CreateContainerGroup` / `DeleteContainerGroup` is applied but
    /// answered `ServiceUnavailable` (HTTP 503), as if the answer had been lost in transit.
    pub lost_answer_rate: f64,
}

impl Default for EciEmulatorOptions {
    fn default() -> Self {
        Self {
            throttle_rate: 0.0,
            start_delay_ms: 300,
            log_heartbeat_ms: 2000,
            lost_answer_rate: 0.0,
        }
    }
}

/// Setters for one knob each, so a test names only what it changes:
/// `EciEmulatorOptions::default().log_heartbeat_ms(200)`.
impl EciEmulatorOptions {
    /// Starts an emulator with these options, logging into `log_dir`.
    pub async fn start(self, log_dir: &Path) -> anyhow::Result<EciEmulator> {
        EciEmulator::start(log_dir, self).await
    }

    /// Sets [`EciEmulatorOptions::throttle_rate`].
    pub fn throttle_rate(mut self, rate: f64) -> Self {
        self.throttle_rate = rate;
        self
    }

    /// Sets [`EciEmulatorOptions::start_delay_ms`].
    pub fn start_delay_ms(mut self, ms: u64) -> Self {
        self.start_delay_ms = ms;
        self
    }

    /// Sets [`EciEmulatorOptions::log_heartbeat_ms`].
    pub fn log_heartbeat_ms(mut self, ms: u64) -> Self {
        self.log_heartbeat_ms = ms;
        self
    }

    /// Sets [`EciEmulatorOptions::lost_answer_rate`].
    pub fn lost_answer_rate(mut self, rate: f64) -> Self {
        self.lost_answer_rate = rate;
        self
    }
}

/// The emulator's counters (`GET /_emulator/stats`).
#[derive(Debug, serde::Deserialize)]
pub struct EmulatorStats {
    /// Container groups newly created (ClientToken replays excluded).
    pub created: u64,
    /// Container groups actually removed.
    pub deleted: u64,
    /// Container groups currently stored.
    pub live: u64,
    /// API calls answered with a throttling error.
    pub throttled: u64,
    /// API calls received (admin calls excluded).
    pub requests: u64,
    /// API calls rejected for signature or credential reasons.
    pub auth_failures: u64,
    /// Creates/deletes that were applied but answered `ServiceUnavailable` (lost-answer fault).
    /// Each also counts in `created` / `deleted`.
    #[serde(default)]
    pub lost_answers: u64,
    /// Authenticated API calls by action name (`x-acs-action`), whatever followed
    /// authentication: throttled calls, parameter errors and lost answers included; calls
    /// rejected before or during authentication are not.
    #[serde(default)]
    pub actions: BTreeMap<String, u64>,
}

/// A group as `GET /_emulator/groups` and `/_emulator/deletions` list it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupSummary {
    /// `ContainerGroupId`.
    pub container_group_id: String,
    /// `ContainerGroupName`.
    pub container_group_name: String,
    /// `Status`.
    pub status: String,
    /// `Tags`.
    pub tags: Vec<GroupTag>,
}

/// One tag of a [`GroupSummary`].
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupTag {
    /// `Key`.
    pub key: String,
    /// `Value`.
    pub value: String,
}

impl GroupSummary {
    /// The value of tag `key`, if the group has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// A running emulator.
pub struct EciEmulator {
    /// The server process (stopped on drop).
    pub process: ManagedProcess,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
}

impl EciEmulator {
    /// Starts the emulator on a free loopback port and waits until `/_emulator/health` answers.
    pub async fn start(log_dir: &Path, opts: EciEmulatorOptions) -> anyhow::Result<Self> {
        let bin = workspace_bin("eci-emulator")?;
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--throttle-rate",
            &opts.throttle_rate.to_string(),
            "--start-delay-ms",
            &opts.start_delay_ms.to_string(),
            "--log-heartbeat-ms",
            &opts.log_heartbeat_ms.to_string(),
            "--lost-answer-rate",
            &opts.lost_answer_rate.to_string(),
        ]);
        let mut process =
            ManagedProcess::spawn(&format!("eci-emulator-{port}"), &mut cmd, log_dir)?;
        let emulator = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            process: {
                // Poll health for up to 30 s; the binary may be cold on a loaded machine.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    process.ensure_running()?;
                    if let Ok((200, _)) = admin_call(port, "GET", "/_emulator/health", None).await {
                        break process;
                    }
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "eci-emulator did not become healthy: {}",
                            process.log_excerpt(20)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        };
        Ok(emulator)
    }

    /// The emulator's counters.
    pub async fn stats(&self) -> anyhow::Result<EmulatorStats> {
        let (status, body) = admin_call(self.port, "GET", "/_emulator/stats", None).await?;
        if status != 200 {
            bail!("GET /_emulator/stats answered {status}");
        }
        serde_json::from_slice(&body).context("parsing /_emulator/stats")
    }

    /// Changes the throttling probability at run time.
    pub async fn set_throttle_rate(&self, rate: f64) -> anyhow::Result<()> {
        let body = serde_json::json!({ "rate": rate }).to_string();
        let (status, _) = admin_call(self.port, "PUT", "/_emulator/throttle", Some(&body)).await?;
        if status != 204 {
            bail!("PUT /_emulator/throttle answered {status}");
        }
        Ok(())
    }

    /// Changes the lost-answer probability at run time (`PUT /_emulator/faults`).
    pub async fn set_lost_answer_rate(&self, rate: f64) -> anyhow::Result<()> {
        let body = serde_json::json!({ "lost_answer_rate": rate }).to_string();
        let (status, _) = admin_call(self.port, "PUT", "/_emulator/faults", Some(&body)).await?;
        if status != 204 {
            bail!("PUT /_emulator/faults answered {status}");
        }
        Ok(())
    }

    /// The container group as stored (with every request parameter as received), or `None`.
    pub async fn stored_group(
        &self,
        id_or_name: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let path = format!("/_emulator/groups/{id_or_name}");
        match admin_call(self.port, "GET", &path, None).await? {
            (200, body) => Ok(Some(
                serde_json::from_slice(&body).context("parsing the stored group")?,
            )),
            (404, _) => Ok(None),
            (status, _) => bail!("GET {path} answered {status}"),
        }
    }

    /// Every group the emulator stores now (`GET /_emulator/groups`).
    pub async fn live_groups(&self) -> anyhow::Result<Vec<GroupSummary>> {
        self.summaries("/_emulator/groups").await
    }

    /// Every group deleted so far, in order (`GET /_emulator/deletions`).
    pub async fn deletions(&self) -> anyhow::Result<Vec<GroupSummary>> {
        self.summaries("/_emulator/deletions").await
    }

    async fn summaries(&self, path: &str) -> anyhow::Result<Vec<GroupSummary>> {
        let (status, body) = admin_call(self.port, "GET", path, None).await?;
        if status != 200 {
            bail!("GET {path} answered {status}");
        }
        serde_json::from_slice(&body).with_context(|| format!("parsing {path}"))
    }

    /// Makes a running container exit now with `exit_code` (its restart policy then applies).
    pub async fn exit_container(
        &self,
        group: &str,
        container: &str,
        exit_code: i32,
    ) -> anyhow::Result<()> {
        let path = format!("/_emulator/groups/{group}/containers/{container}/exit");
        let body = serde_json::json!({ "exit_code": exit_code }).to_string();
        let (status, body) = admin_call(self.port, "POST", &path, Some(&body)).await?;
        if status != 204 {
            bail!(
                "POST {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(5)).await?;
        Ok(())
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); returns status and body.
/// A raw exchange keeps this free of client-library set-up for a loopback admin API.
async fn admin_call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("admin call timed out")??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .context("malformed status line")?;
    Ok((status, raw[split + 4..].to_vec()))
}

//! Launcher for the `aci-emulator` binary (emulators/aci): an Azure Container Instances + Azure
//! AD emulator on loopback, with its test-only admin API (`/_emulator/...`).
//!
//! The binary is found next to the test executable, so a crate whose tests use this needs
//! `aci-emulator` as a dev-dependency (cargo then builds it for `cargo test -p <crate>`).

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::process::Command;

use crate::{bins::workspace_bin, ports::free_port, process::ManagedProcess};

/// The one subscription the emulator knows (its default).
pub const SUBSCRIPTION_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The one resource group the emulator knows (its default).
pub const RESOURCE_GROUP: &str = "vk-rg";
/// Azure AD tenant of the token endpoint `{endpoint}/{TENANT_ID}/oauth2/v2.0/token`.
pub const TENANT_ID: &str = "00000000-0000-0000-0000-0000000000aa";
/// Client id accepted by the token endpoint.
pub const CLIENT_ID: &str = "vk-client";
/// Client secret accepted by the token endpoint.
pub const CLIENT_SECRET: &str = "vk-client-secret";
/// Workload-identity assertion (`client_assertion`) accepted by the token endpoint.
pub const FEDERATED_TOKEN: &str = "vk-federated-token";
/// Location of the emulated region.
pub const LOCATION: &str = "westeurope";

/// Behaviour knobs (the binary's flags).
#[derive(Clone, Debug)]
pub struct AciEmulatorOptions {
    /// Probability (0..=1) that an ARM request gets 429.
    pub throttle_rate: f64,
    /// `Retry-After` of those 429s.
    pub retry_after_secs: u64,
    /// Time a new group stays `Creating`.
    pub provisioning_delay_ms: u64,
    /// Interval of the `heartbeat <n>` log lines.
    pub log_heartbeat_ms: u64,
    /// Lifetime of issued access tokens.
    pub token_lifetime_secs: u64,
}

impl Default for AciEmulatorOptions {
    fn default() -> Self {
        Self {
            throttle_rate: 0.0,
            retry_after_secs: 1,
            provisioning_delay_ms: 300,
            log_heartbeat_ms: 2000,
            token_lifetime_secs: 3600,
        }
    }
}

/// Setters for one knob each, so a test names only what it changes:
/// `AciEmulatorOptions::default().log_heartbeat_ms(200)`.
impl AciEmulatorOptions {
    /// Starts an emulator with these options, logging into `log_dir`.
    pub async fn start(self, log_dir: &Path) -> anyhow::Result<AciEmulator> {
        AciEmulator::start(log_dir, self).await
    }

    /// Sets [`AciEmulatorOptions::throttle_rate`].
    pub fn throttle_rate(mut self, rate: f64) -> Self {
        self.throttle_rate = rate;
        self
    }

    /// Sets [`AciEmulatorOptions::retry_after_secs`].
    pub fn retry_after_secs(mut self, secs: u64) -> Self {
        self.retry_after_secs = secs;
        self
    }

    /// Sets [`AciEmulatorOptions::provisioning_delay_ms`].
    pub fn provisioning_delay_ms(mut self, ms: u64) -> Self {
        self.provisioning_delay_ms = ms;
        self
    }

    /// Sets [`AciEmulatorOptions::log_heartbeat_ms`].
    pub fn log_heartbeat_ms(mut self, ms: u64) -> Self {
        self.log_heartbeat_ms = ms;
        self
    }

    /// Sets [`AciEmulatorOptions::token_lifetime_secs`].
    pub fn token_lifetime_secs(mut self, secs: u64) -> Self {
        self.token_lifetime_secs = secs;
        self
    }
}

/// `GET /_emulator/stats`.
#[derive(Debug, serde::Deserialize)]
pub struct EmulatorStats {
    /// Groups newly created (an idempotent re-PUT does not count).
    pub created: u64,
    /// Groups actually removed.
    pub deleted: u64,
    /// Groups existing now.
    pub live: u64,
    /// ARM requests answered with 429.
    pub throttled: u64,
    /// ARM requests received.
    pub requests: u64,
    /// ARM requests rejected with 401, plus rejected credentials at the token endpoint.
    pub auth_failures: u64,
    /// Authenticated ARM requests per operation, keyed `put`, `get`, `list`, `delete`, `logs`,
    /// `exec` (all present, zeros included): a request counts once its method and path name the
    /// operation, whether it is then throttled (429), rejected (400 api-version, validation) or
    /// not found (404). 401s, other paths and methods, and stop/start/restart are not counted.
    /// Empty when talking to an emulator that predates the field.
    #[serde(default)]
    pub ops: std::collections::BTreeMap<String, u64>,
}

/// A container group's name and tags (`GET /_emulator/groups`, `/_emulator/deleted`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TaggedGroup {
    /// Group name.
    pub name: String,
    /// Its tags (none: empty).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    use serde::Deserialize;
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

/// The provider-aci flags that point it at an emulator with the client-secret identity: ARM at
/// `arm_endpoint` (the emulator's endpoint, or a proxy in front of it), Azure AD and IMDS at
/// `endpoint`. The secret is in [`provider_env`], never a flag.
pub fn provider_flags(arm_endpoint: &str, endpoint: &str) -> Vec<String> {
    [
        "--subscription-id",
        SUBSCRIPTION_ID,
        "--resource-group",
        RESOURCE_GROUP,
        "--location",
        LOCATION,
        "--arm-endpoint",
        arm_endpoint,
        "--authority-host",
        endpoint,
        "--imds-endpoint",
        endpoint,
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// provider-aci's environment for [`provider_flags`]: the client secret.
pub fn provider_env() -> Vec<(&'static str, String)> {
    vec![("AZURE_CLIENT_SECRET", CLIENT_SECRET.to_owned())]
}

/// A running aci-emulator.
pub struct AciEmulator {
    /// The server process (stopped on drop).
    pub process: ManagedProcess,
    /// `http://127.0.0.1:PORT`: ARM endpoint and AAD authority.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
}

impl AciEmulator {
    /// Starts the emulator on a free port, logging to `<log_dir>/aci-emulator-<port>.log`, and
    /// waits until `/_emulator/health` answers.
    pub async fn start(log_dir: &Path, opts: AciEmulatorOptions) -> anyhow::Result<Self> {
        let bin = workspace_bin("aci-emulator")?;
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--throttle-rate")
            .arg(opts.throttle_rate.to_string())
            .arg("--retry-after-secs")
            .arg(opts.retry_after_secs.to_string())
            .arg("--provisioning-delay-ms")
            .arg(opts.provisioning_delay_ms.to_string())
            .arg("--log-heartbeat-ms")
            .arg(opts.log_heartbeat_ms.to_string())
            .arg("--token-lifetime-secs")
            .arg(opts.token_lifetime_secs.to_string());
        let process = ManagedProcess::spawn(&format!("aci-emulator-{port}"), &mut cmd, log_dir)?;
        let mut emu = Self {
            process,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            emu.process.ensure_running()?;
            if let Ok((200, _)) = emu.request("GET", "/_emulator/health", None).await {
                return Ok(emu);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "aci-emulator did not become healthy; log:\n{}",
                    emu.process.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One plain HTTP/1.1 request to the emulator; returns status and body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .context("connecting to aci-emulator")?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let body = json.map(|v| v.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// The emulator's counters.
    pub async fn stats(&self) -> anyhow::Result<EmulatorStats> {
        let (status, body) = self.request("GET", "/_emulator/stats", None).await?;
        if status != 200 {
            bail!("GET /_emulator/stats: {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Changes the probability of 429s at run time.
    pub async fn set_throttle_rate(&self, rate: f64) -> anyhow::Result<()> {
        let (status, body) = self
            .request(
                "PUT",
                "/_emulator/throttle",
                Some(serde_json::json!({ "rate": rate })),
            )
            .await?;
        if status != 204 {
            bail!(
                "PUT /_emulator/throttle: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// The body the client PUT for group `name` (secure values included), if the group exists.
    pub async fn stored_group(&self, name: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let (status, body) = self
            .request("GET", &format!("/_emulator/groups/{name}"), None)
            .await?;
        match status {
            200 => Ok(Some(serde_json::from_slice(&body)?)),
            404 => Ok(None),
            s => bail!("GET /_emulator/groups/{name}: {s}"),
        }
    }

    /// Makes the running `container` of `group` exit with `exit_code` (the restart policy applies).
    pub async fn exit_container(
        &self,
        group: &str,
        container: &str,
        exit_code: i32,
    ) -> anyhow::Result<()> {
        let (status, body) = self
            .request(
                "POST",
                &format!("/_emulator/groups/{group}/containers/{container}/exit"),
                Some(serde_json::json!({ "exit_code": exit_code })),
            )
            .await?;
        if status != 204 {
            bail!(
                "exit {group}/{container}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Puts group `name` in the terminal `provisioning_state` (e.g. `Failed`, `Canceled`) with
    /// group-level `events` (`[{"name", "type", "message"}]`); its containers stop running.
    pub async fn fault_group(
        &self,
        name: &str,
        provisioning_state: &str,
        events: serde_json::Value,
    ) -> anyhow::Result<()> {
        let (status, body) = self
            .request(
                "POST",
                &format!("/_emulator/groups/{name}/fault"),
                Some(serde_json::json!({
                    "provisioning_state": provisioning_state,
                    "events": events,
                })),
            )
            .await?;
        if status != 204 {
            bail!("fault {name}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// Stores `raw` verbatim as a listed group named `name` (List and GET return it as is,
    /// DELETE removes it): e.g. a malformed group someone else made.
    pub async fn put_raw_group(&self, name: &str, raw: serde_json::Value) -> anyhow::Result<()> {
        let (status, body) = self
            .request("PUT", &format!("/_emulator/raw-groups/{name}"), Some(raw))
            .await?;
        if status != 204 {
            bail!(
                "raw group {name}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// The next `count` IMDS token requests answer `status` (e.g. 404 or 410) with no body.
    pub async fn set_imds_faults(&self, status: u16, count: u64) -> anyhow::Result<()> {
        let (code, body) = self
            .request(
                "PUT",
                "/_emulator/imds-faults",
                Some(serde_json::json!({ "status": status, "count": count })),
            )
            .await?;
        if code != 204 {
            bail!(
                "PUT /_emulator/imds-faults: {code} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// IMDS fault answers still to give and given so far: `(remaining, served)`.
    pub async fn imds_faults(&self) -> anyhow::Result<(u64, u64)> {
        let (code, body) = self.request("GET", "/_emulator/imds-faults", None).await?;
        if code != 200 {
            bail!("GET /_emulator/imds-faults: {code}");
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let n = |k: &str| v[k].as_u64().unwrap_or_default();
        Ok((n("remaining"), n("served")))
    }

    /// List pages of at most `page_size` groups (0: everything in one page), with `nextLink`s
    /// on `next_link_base` (`None`: the emulator itself).
    pub async fn set_paging(
        &self,
        page_size: usize,
        next_link_base: Option<&str>,
    ) -> anyhow::Result<()> {
        let (code, body) = self
            .request(
                "PUT",
                "/_emulator/paging",
                Some(serde_json::json!({
                    "page_size": page_size,
                    "next_link_base": next_link_base,
                })),
            )
            .await?;
        if code != 204 {
            bail!(
                "PUT /_emulator/paging: {code} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// The groups in the resource group now, with their tags.
    pub async fn live_groups(&self) -> anyhow::Result<Vec<TaggedGroup>> {
        self.tagged_groups("/_emulator/groups").await
    }

    /// Every group a DELETE removed so far, in order, with its tags.
    pub async fn deleted_groups(&self) -> anyhow::Result<Vec<TaggedGroup>> {
        self.tagged_groups("/_emulator/deleted").await
    }

    async fn tagged_groups(&self, path: &str) -> anyhow::Result<Vec<TaggedGroup>> {
        let (status, body) = self.request("GET", path, None).await?;
        if status != 200 {
            bail!("GET {path}: {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(5)).await?;
        Ok(())
    }
}

//! Test client: starts the emulator binary and signs requests with the crate's V3 signer
//! (whose output the unit tests pin to the documentation's published example).
#![allow(dead_code)]

use std::{process::Stdio, time::Duration};

use eci_emulator::signature::{RequestToSign, sign_request};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

pub const AK: &str = "LTAI5tEmulatorKey0001";
pub const SECRET: &str = "EmulatorSecret0001EmulatorSecret";
pub const STS_AK: &str = "STS.EmulatorStsKey";
pub const STS_SECRET: &str = "EmulatorStsSecret0001";
pub const STS_TOKEN: &str = "EmulatorSecurityToken0001";

pub struct Emu {
    _child: Child,
    pub port: u16,
}

/// How to sign and send one call.
#[derive(Clone)]
pub struct Call {
    pub ak: String,
    pub secret: String,
    pub token: Option<String>,
    pub nonce: Option<String>,
    pub date: Option<String>,
    pub version: String,
    /// Parameters in the query string (GET) instead of a form body (POST).
    pub in_query: bool,
}

impl Default for Call {
    fn default() -> Self {
        Self {
            ak: AK.into(),
            secret: SECRET.into(),
            token: None,
            nonce: None,
            date: None,
            version: "2018-08-08".into(),
            in_query: false,
        }
    }
}

pub fn now_date() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

impl Emu {
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eci-emulator"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                    let port: u16 = rest.trim().parse()?;
                    return Ok::<u16, anyhow::Error>(port);
                }
            }
            anyhow::bail!("emulator exited before listening")
        })
        .await??;
        // Keep draining the log so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            _child: child,
            port,
        })
    }

    pub async fn call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        self.call_with(&Call::default(), action, params).await
    }

    pub async fn call_with(
        &self,
        how: &Call,
        action: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter())
            .finish()
            .replace('+', "%20");
        let host = format!("127.0.0.1:{}", self.port);
        let nonce = how
            .nonce
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let date = how.date.clone().unwrap_or_else(now_date);
        let no_query: Vec<(String, String)> = Vec::new();
        let (method, query, body, ct) = if how.in_query {
            ("GET", &pairs, &b""[..], None)
        } else {
            (
                "POST",
                &no_query,
                encoded.as_bytes(),
                Some("application/x-www-form-urlencoded"),
            )
        };
        let req = RequestToSign {
            method,
            host: &host,
            query,
            body,
            content_type: ct,
            action,
            version: &how.version,
            date: &date,
            nonce: &nonce,
            security_token: how.token.as_deref(),
        };
        let headers = sign_request(&req, &how.ak, &how.secret);
        let path = if how.in_query {
            format!("/?{encoded}")
        } else {
            "/".to_owned()
        };
        let head: String = headers
            .iter()
            .filter(|(k, _)| k != "host")
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body);
        self.exchange(&bytes).await
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.exchange(raw.as_bytes()).await
    }

    async fn exchange(&self, request: &[u8]) -> anyhow::Result<(u16, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(request).await?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await??;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad response"))?;
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no status"))?
            .parse()?;
        let body = &out[split + 4..];
        let value = serde_json::from_slice(body).unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn stats(&self) -> anyhow::Result<Value> {
        Ok(self.admin("GET", "/_emulator/stats", "").await?.1)
    }

    /// Polls DescribeContainerGroups until the group has `status` (up to 10 s).
    pub async fn wait_status(&self, id: &str, status: &str) -> anyhow::Result<Value> {
        let ids = format!("[\"{id}\"]");
        for _ in 0..200 {
            let (_, v) = self
                .call(
                    "DescribeContainerGroups",
                    &[("RegionId", "cn-hangzhou"), ("ContainerGroupIds", &ids)],
                )
                .await?;
            if v["ContainerGroups"][0]["Status"] == status {
                return Ok(v["ContainerGroups"][0].clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("group {id} never reached {status}")
    }

    pub async fn create(&self, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut all = vec![("RegionId", "cn-hangzhou")];
        all.extend_from_slice(params);
        let (status, v) = self.call("CreateContainerGroup", &all).await?;
        anyhow::ensure!(status == 200, "create failed: {v}");
        Ok(v["ContainerGroupId"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }
}

//! Shared helpers for the emulator's tests: start it, get tokens, make ARM requests.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use vk_testkit::aci_emulator::{
    AciEmulator, AciEmulatorOptions, CLIENT_ID, CLIENT_SECRET, RESOURCE_GROUP, SUBSCRIPTION_ID,
    TENANT_ID,
};

pub const API: &str = "api-version=2023-05-01";

pub struct Emu {
    pub emu: AciEmulator,
    pub token: String,
    _logs: tempfile::TempDir,
}

/// A response: status, headers, body as JSON (Null when empty or not JSON).
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Emu {
    pub async fn start(opts: AciEmulatorOptions) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let emu = AciEmulator::start(logs.path(), opts).await?;
        let mut me = Self {
            emu,
            token: String::new(),
            _logs: logs,
        };
        me.token = me.client_secret_token().await?;
        Ok(me)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.emu.process.log_path()).unwrap_or_default()
    }

    pub async fn client_secret_token(&self) -> anyhow::Result<String> {
        let form = format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}\
             &scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
        );
        let r = self.token_request(&form).await?;
        anyhow::ensure!(r.status == 200, "token: {} {}", r.status, r.text);
        Ok(r.body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn token_request(&self, form: &str) -> anyhow::Result<Resp> {
        self.raw(
            "POST",
            &format!("/{TENANT_ID}/oauth2/v2.0/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            form.to_owned(),
        )
        .await
    }

    pub fn groups_path() -> String {
        format!(
            "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/\
             Microsoft.ContainerInstance/containerGroups"
        )
    }

    pub fn group_path(name: &str) -> String {
        format!("{}/{name}?{API}", Self::groups_path())
    }

    /// An authenticated ARM request.
    pub async fn arm(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Resp> {
        let auth = format!("Bearer {}", self.token);
        self.raw(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.map(Value::to_string).unwrap_or_default(),
        )
        .await
    }

    pub async fn get_group(&self, name: &str) -> anyhow::Result<Resp> {
        self.arm("GET", &Self::group_path(name), None).await
    }

    pub async fn put_group(&self, name: &str, body: &Value) -> anyhow::Result<Resp> {
        self.arm("PUT", &Self::group_path(name), Some(body)).await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> anyhow::Result<Resp> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.emu.port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.emu.port));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
            text,
        })
    }

    /// Polls GET until `pred` holds on the body (10 s at most).
    pub async fn wait_group(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = self.get_group(name).await?;
            if r.status == 200 && pred(&r.body) {
                return Ok(r.body);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last: {} {}",
                r.status,
                r.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    }
}

/// A minimal valid group with the given containers (name, command) and restart policy.
pub fn simple_group(policy: &str, containers: &[(&str, &[&str])]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, cmd)| {
            serde_json::json!({
                "name": name,
                "properties": {
                    "image": "busybox:1.36",
                    "command": cmd,
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}},
                }
            })
        })
        .collect();
    serde_json::json!({
        "location": "westeurope",
        "properties": {
            "osType": "Linux",
            "restartPolicy": policy,
            "containers": containers,
        }
    })
}

pub fn container<'a>(group: &'a Value, name: &str) -> &'a Value {
    group["properties"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn current_state<'a>(group: &'a Value, name: &str) -> &'a Value {
    &container(group, name)["properties"]["instanceView"]["currentState"]
}

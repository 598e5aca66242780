//! A real `moto_server` (AWS emulator, from the project venv) for the Fargate provider's tests,
//! set up the way ECS on Fargate needs it.
//!
//! moto quirks this works around: tasks advance one state per DescribeTasks call unless the
//! `ecs::task` transition is set to manual (so tasks stay RUNNING until stopped); awsvpc subnets
//! must exist in moto's EC2 with a VPC that has DNS hostnames enabled; RunTask ignores
//! `clientToken` (the provider checks `startedBy` itself). A task's ENI gets a random
//! `privateIPv4Address` in 10.0.0.0/8, not one of its subnet's: compare pod IPs with the task's.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::{bins::cache_dir, ports::free_port, process::ManagedProcess};

/// Region every test uses.
pub const REGION: &str = "us-east-1";

/// A running moto server with an ECS cluster, a subnet, a security group and a log group.
pub struct Moto {
    /// The server process (stopped on drop).
    pub process: ManagedProcess,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
    /// A subnet in a VPC with DNS hostnames enabled.
    pub subnet: String,
    /// A security group in that VPC.
    pub security_group: String,
}

/// The venv's Python (with boto3, which moto brings).
fn python() -> std::path::PathBuf {
    cache_dir().join("venv/bin/python")
}

/// Set-up script: manual task transitions, network, cluster, log group. Prints "subnet sg".
const SETUP: &str = r#"
import json, sys, time, urllib.request
import boto3
url = sys.argv[1]; cluster = sys.argv[2]; group = sys.argv[3]
for _ in range(100):
    try:
        urllib.request.urlopen(url + "/moto-api/", timeout=1); break
    except Exception:
        time.sleep(0.1)
req = urllib.request.Request(url + "/moto-api/state-manager/set-transition", method="POST",
    data=json.dumps({"model_name": "ecs::task",
                     "transition": {"progression": "manual", "times": 1000000000}}).encode())
urllib.request.urlopen(req)
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
          aws_secret_access_key="testing")
ec2 = boto3.client("ec2", **kw)
vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="vk", Description="vk", VpcId=vpc)["GroupId"]
boto3.client("ecs", **kw).create_cluster(clusterName=cluster)
boto3.client("logs", **kw).create_log_group(logGroupName=group)
print(subnet, sg)
"#;

impl Moto {
    /// Starts moto on a free port and creates `cluster` and the log group `log_group`.
    pub async fn start(log_dir: &Path, cluster: &str, log_group: &str) -> anyhow::Result<Self> {
        let moto = cache_dir().join("venv/bin/moto_server");
        if !moto.exists() {
            bail!("{} is missing: run scripts/setup.sh", moto.display());
        }
        let port = free_port()?;
        let mut cmd = Command::new(&moto);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut process = ManagedProcess::spawn(&format!("moto-{port}"), &mut cmd, log_dir)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let out = Command::new(python())
            .args(["-c", SETUP, &endpoint, cluster, log_group])
            .output()
            .await
            .context("running the moto set-up script")?;
        process.ensure_running()?;
        if !out.status.success() {
            bail!(
                "moto set-up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        let (Some(subnet), Some(sg)) = (parts.next(), parts.next()) else {
            bail!("moto set-up printed {text:?}");
        };
        Ok(Self {
            subnet: subnet.to_owned(),
            security_group: sg.to_owned(),
            process,
            endpoint,
            port,
        })
    }

    /// Environment for an AWS SDK client (the provider) talking to `endpoint` (moto or a proxy).
    pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", endpoint.into()),
            // Keep the SDK away from ~/.aws and the EC2 metadata service.
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(5)).await?;
        Ok(())
    }
}

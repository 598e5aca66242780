//! `kubectl logs -f` semantics against the ECI emulator: following polls DescribeContainerLog and
//! sends each line once, in order (heartbeats arrive without gaps or repeats); tail and
//! timestamps options hold.

mod support;

use std::time::Duration;

use anyhow::ensure;
use futures::StreamExt;
use podprovider_proto::v1::{
    CreatePodRequest, GetContainerLogsRequest, PodPhase, pod_provider_client::PodProviderClient,
};
use support::*;
use vk_testkit::{eci_emulator::EciEmulatorOptions, provider_calls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_sends_every_line_once_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default().log_heartbeat_ms(200);
    let (_emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
        c.create_pod(CreatePodRequest {
            pod: Some(pod("web", "uid-log")),
        })
        .await?;
        let web = pod("web", "uid-log").pod_ref;
        provider_calls::status_until(&c, &web, "pod Running", |s| {
            s.phase == PodPhase::Running as i32
        })
        .await?;
        let req = |follow: bool, tail: Option<i64>, timestamps: bool| GetContainerLogsRequest {
            pod_ref: pod("web", "uid-log").pod_ref,
            container: "web".into(),
            follow,
            tail_lines: tail,
            timestamps,
            ..Default::default()
        };
        let mut stream = c
            .get_container_logs(req(true, None, false))
            .await?
            .into_inner();
        let mut text = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(4), async {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.data));
            }
        })
        .await;
        drop(stream);
        ensure!(
            text.starts_with("Emulated container web started from image nginx:1.25\n"),
            "{text}"
        );
        let beats: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("heartbeat "))
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        ensure!(beats.len() >= 10, "too few heartbeats followed: {text}");
        ensure!(
            beats.windows(2).all(|w| w[1] == w[0] + 1),
            "heartbeats repeated or missing: {beats:?}"
        );

        let mut tail = c
            .get_container_logs(req(false, Some(2), true))
            .await?
            .into_inner();
        let mut text = String::new();
        while let Some(chunk) = tail.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?.data));
        }
        let lines: Vec<&str> = text.lines().collect();
        ensure!(lines.len() == 2, "{text}");
        ensure!(
            lines.iter().all(|l| l
                .split(' ')
                .next()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T'))),
            "no timestamps: {text}"
        );
        Ok(())
    }
    .await;
    result.map_err(|e| {
        e.context(format!(
            "--- provider log ---\n{}",
            provider.log_excerpt(40)
        ))
    })
}

//! GetStats from DescribeMultiContainerGroupMetric, against the ECI emulator through the real
//! provider: running pods get the emulator's figures (10 % of each container's vCPU, a quarter of
//! its memory), pods not running get none, and a pod filter is honoured.

mod support;

use anyhow::{Context, ensure};
use podprovider_proto::v1::{
    CreatePodRequest, GetStatsRequest, PodPhase, pod_provider_client::PodProviderClient,
};
use support::*;
use vk_testkit::{eci_emulator::EciEmulatorOptions, provider_calls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pods_report_the_metrics_of_their_groups() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default();
    let (emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let c = PodProviderClient::connect(format!("http://{addr}")).await?;
        // 25 pods: two DescribeMultiContainerGroupMetric calls (20 ids each at most).
        let n = 25;
        for i in 0..n {
            c.clone()
                .create_pod(CreatePodRequest {
                    pod: Some(pod(&format!("s{i}"), &format!("uid-s{i}"))),
                })
                .await?;
        }
        for i in 0..n {
            let pod_ref = pod(&format!("s{i}"), &format!("uid-s{i}")).pod_ref;
            provider_calls::status_until(&c, &pod_ref, "pod Running", |s| {
                s.phase == PodPhase::Running as i32
            })
            .await?;
        }
        // One more pod, put back to Scheduling: Pending, so no figures.
        let waiting = c
            .clone()
            .create_pod(CreatePodRequest {
                pod: Some(pod("waiting", "uid-waiting")),
            })
            .await?
            .into_inner()
            .status
            .context("no status")?
            .cloud_id;
        set_group_state(&emu, &waiting, "Scheduling", "", "").await?;
        let waiting_ref = pod("waiting", "uid-waiting").pod_ref;
        let what = "waiting pod Pending after Scheduling";
        provider_calls::status_until(&c, &waiting_ref, what, |s| {
            let waits = s.container_statuses.first().is_some_and(|c| {
                matches!(
                    c.state.as_ref().and_then(|s| s.state.as_ref()),
                    Some(podprovider_proto::v1::container_state::State::Waiting(_))
                )
            });
            s.phase == PodPhase::Pending as i32 && waits
        })
        .await?;
        let stats = provider_calls::stats(&c, NODE).await?;
        ensure!(stats.len() == n, "{} pods with figures", stats.len());
        ensure!(
            !stats
                .iter()
                .any(|s| s.pod_ref.as_ref().is_some_and(|r| r.uid == "uid-waiting")),
            "a pending pod has figures"
        );
        for s in &stats {
            // The pod asks 250m and 512 MiB: 10 % and a quarter of them.
            let cpu = s.cpu.as_ref().context("cpu")?;
            ensure!(cpu.usage_nano_cores == Some(25_000_000), "{s:?}");
            let mem = s.memory.as_ref().context("memory")?;
            ensure!(mem.working_set_bytes == Some(128 << 20), "{s:?}");
            ensure!(s.time.is_some(), "{s:?}");
            ensure!(
                s.containers.len() == 1 && s.containers[0].name == "web",
                "{s:?}"
            );
        }
        // A filter by pod.
        let one = c
            .clone()
            .get_stats(GetStatsRequest {
                node_name: NODE.into(),
                pods: vec![pod("s3", "uid-s3").pod_ref.context("ref")?],
            })
            .await?
            .into_inner()
            .pods;
        ensure!(
            one.len() == 1 && one[0].pod_ref.as_ref().is_some_and(|r| r.uid == "uid-s3"),
            "{one:?}"
        );
        let calls = emu
            .stats()
            .await?
            .actions
            .get("DescribeMultiContainerGroupMetric")
            .copied()
            .unwrap_or(0);
        ensure!(calls == 3, "{calls} metric calls");
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

//! What one reconcile does, decided from the pod and the provider view alone: no I/O, so the whole
//! table is unit-tested below (kube-runtime's `should_…` style). [`super::reconcile`] carries the
//! decision out.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use podprovider_proto::v1 as pb;

use super::view::Known;
use crate::status;

/// The step one reconcile takes.
#[derive(Debug)]
pub(super) enum Step<'a> {
    /// The provider's first snapshot has not arrived: deciding now could re-create pods that
    /// already run.
    WaitForProvider,
    /// The pod is being deleted.
    Delete(Deletion<'a>),
    /// Succeeded or Failed: nothing is left to do.
    Finished,
    /// The provider does not run a pod it ran before.
    Lost,
    /// The provider has never been asked for this pod.
    Create,
    /// `activeDeadlineSeconds` ran out.
    DeadlineExceeded,
    /// Running in the provider: mirror its status and follow spec changes; come back when
    /// `deadline` runs out, if the pod has one.
    Follow {
        known: &'a Known,
        deadline: Option<Duration>,
    },
}

/// How far a deletion has got.
#[derive(Debug)]
pub(super) enum Deletion<'a> {
    /// The provider runs it and has not been asked to stop it.
    StopInProvider,
    /// Asked to stop; the provider's status is mirrored until it reports the pod gone.
    AwaitProvider { status: Option<&'a pb::PodStatus> },
    /// The provider is done with it (or never had it): remove the API object.
    RemoveObject,
}

impl Step<'_> {
    /// A short name for logs.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Step::WaitForProvider => "wait for provider",
            Step::Delete(Deletion::StopInProvider) => "stop in provider",
            Step::Delete(Deletion::AwaitProvider { .. }) => "await provider stop",
            Step::Delete(Deletion::RemoveObject) => "remove object",
            Step::Finished => "finished",
            Step::Lost => "lost",
            Step::Create => "create",
            Step::DeadlineExceeded => "deadline exceeded",
            Step::Follow { .. } => "follow",
        }
    }
}

/// The step for `pod`, given whether the provider view has had its first snapshot (`synced`) and
/// what it knows of the pod, at time `now`. Deletion comes first: a terminal pod being deleted
/// still needs its object removed.
pub(super) fn decide<'a>(
    pod: &Pod,
    synced: bool,
    known: Option<&'a Known>,
    now: Timestamp,
) -> Step<'a> {
    if !synced {
        return Step::WaitForProvider;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Step::Delete(match known {
            Some(k) if !k.gone && !k.delete_requested => Deletion::StopInProvider,
            Some(k) if !k.gone => Deletion::AwaitProvider {
                status: k.status.as_ref(),
            },
            _ => Deletion::RemoveObject,
        });
    }
    if status::is_terminal(pod.status.as_ref().and_then(|s| s.phase.as_deref())) {
        return Step::Finished;
    }
    match known {
        None if was_started(pod) => Step::Lost,
        None => Step::Create,
        Some(k) => match deadline_left(pod, now) {
            // Past its deadline a pod fails for that, also once the provider, asked to stop it,
            // reports it gone: the next reconcile may still see the store's Running copy.
            Some(d) if d.is_zero() => Step::DeadlineExceeded,
            _ if k.gone => Step::Lost,
            deadline => Step::Follow { known: k, deadline },
        },
    }
}

/// Whether the pod was running in the provider before (so a provider that does not know it lost it,
/// rather than never having been asked).
fn was_started(pod: &Pod) -> bool {
    let s = pod.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        || s.and_then(|s| s.pod_ip.as_ref()).is_some()
}

/// Time left at `now` before `spec.activeDeadlineSeconds` runs out, counted from
/// `status.startTime` as the kubelet counts it; `None` without a deadline or a start time.
fn deadline_left(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let limit = pod.spec.as_ref()?.active_deadline_seconds?;
    let started = pod.status.as_ref()?.start_time.as_ref()?.0;
    let limit = Duration::from_secs(u64::try_from(limit).unwrap_or(0));
    let elapsed = Duration::try_from(now.duration_since(started)).unwrap_or_default();
    Some(limit.saturating_sub(elapsed))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{PodSpec, PodStatus},
        apimachinery::pkg::apis::meta::v1::Time,
    };

    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn ago(secs: i64) -> Time {
        Time(now() - jiff_secs(secs))
    }

    fn jiff_secs(secs: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_secs(secs)
    }

    /// A pod described by the columns of the tables below.
    fn pod(deleting: bool, phase: Option<&str>, ip: bool, deadline: Option<(i64, i64)>) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                active_deadline_seconds: deadline.map(|(limit, _)| limit),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                pod_ip: ip.then(|| "10.0.0.7".to_owned()),
                start_time: deadline.map(|(_, started)| ago(started)),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        if deleting {
            pod.metadata.deletion_timestamp = Some(ago(1));
        }
        pod
    }

    fn known(gone: bool, delete_requested: bool) -> Known {
        Known {
            gone,
            delete_requested,
            status: Some(pb::PodStatus::default()),
            ..Known::default()
        }
    }

    #[test]
    fn nothing_is_decided_before_the_provider_snapshot() {
        for p in [
            pod(false, None, false, None),
            pod(true, Some("Running"), true, None),
        ] {
            let k = known(false, false);
            assert_eq!(decide(&p, false, None, now()).label(), "wait for provider");
            assert_eq!(
                decide(&p, false, Some(&k), now()).label(),
                "wait for provider"
            );
        }
    }

    #[test]
    fn a_deleted_pod_is_stopped_then_awaited_then_removed() {
        // (phase, provider view) -> step
        let cases: [(Option<&str>, Option<Known>, &str); 6] = [
            (
                Some("Running"),
                Some(known(false, false)),
                "stop in provider",
            ),
            (
                Some("Running"),
                Some(known(false, true)),
                "await provider stop",
            ),
            (Some("Running"), Some(known(true, true)), "remove object"),
            (Some("Running"), Some(known(true, false)), "remove object"),
            (Some("Pending"), None, "remove object"),
            // Deletion comes before the phase: a finished pod is removed from the provider too.
            (
                Some("Succeeded"),
                Some(known(false, false)),
                "stop in provider",
            ),
        ];
        for (phase, k, want) in cases {
            let p = pod(true, phase, true, None);
            let got = decide(&p, true, k.as_ref(), now());
            assert_eq!(got.label(), want, "{phase:?} {k:?}");
        }
    }

    #[test]
    fn the_provider_status_is_mirrored_while_a_stop_is_awaited() {
        let k = Known {
            status: Some(pb::PodStatus {
                phase: pb::PodPhase::Running as i32,
                ..pb::PodStatus::default()
            }),
            delete_requested: true,
            ..Known::default()
        };
        let p = pod(true, Some("Running"), true, None);
        match decide(&p, true, Some(&k), now()) {
            Step::Delete(Deletion::AwaitProvider { status: Some(s) }) => {
                assert_eq!(s.phase, pb::PodPhase::Running as i32)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finished_pods_are_left_alone() {
        for phase in ["Succeeded", "Failed"] {
            for k in [None, Some(known(false, false)), Some(known(true, false))] {
                let p = pod(false, Some(phase), true, Some((1, 100)));
                assert_eq!(decide(&p, true, k.as_ref(), now()).label(), "finished");
            }
        }
    }

    #[test]
    fn pods_the_provider_does_not_know_are_created_unless_they_ran_before() {
        // (phase, has pod IP) -> step
        let cases = [
            (None, false, "create"),
            (Some("Pending"), false, "create"),
            (Some("Unknown"), false, "create"),
            (Some("Running"), false, "lost"),
            (Some("Running"), true, "lost"),
            // A pod IP means the provider started it.
            (Some("Pending"), true, "lost"),
        ];
        for (phase, ip, want) in cases {
            let p = pod(false, phase, ip, None);
            assert_eq!(
                decide(&p, true, None, now()).label(),
                want,
                "{phase:?} ip={ip}"
            );
        }
    }

    #[test]
    fn a_pod_the_provider_reported_gone_is_lost() {
        let p = pod(false, Some("Running"), true, None);
        let k = known(true, false);
        assert_eq!(decide(&p, true, Some(&k), now()).label(), "lost");
    }

    #[test]
    fn a_pod_past_its_deadline_fails_for_it_even_once_gone() {
        let p = pod(false, Some("Running"), true, Some((5, 6)));
        for k in [known(true, true), known(true, false), known(false, true)] {
            let step = decide(&p, true, Some(&k), now());
            assert_eq!(step.label(), "deadline exceeded", "{k:?}");
        }
    }

    #[test]
    fn a_running_pod_is_followed_until_its_deadline() {
        let k = known(false, false);
        // (activeDeadlineSeconds, started seconds ago) -> step, time left
        let cases = [
            (None, "follow", None),
            (Some((60, 10)), "follow", Some(Duration::from_secs(50))),
            (Some((60, 60)), "deadline exceeded", None),
            (Some((60, 600)), "deadline exceeded", None),
            (Some((0, 0)), "deadline exceeded", None),
        ];
        for (deadline, want, left) in cases {
            let p = pod(false, Some("Running"), true, deadline);
            let step = decide(&p, true, Some(&k), now());
            assert_eq!(step.label(), want, "{deadline:?}");
            if let Step::Follow { deadline: got, .. } = step {
                assert_eq!(got, left, "{deadline:?}");
            }
        }
    }

    #[test]
    fn a_deadline_without_a_start_time_is_not_counted() {
        let k = known(false, false);
        let mut p = pod(false, Some("Pending"), false, Some((1, 100)));
        if let Some(s) = p.status.as_mut() {
            s.start_time = None;
        }
        match decide(&p, true, Some(&k), now()) {
            Step::Follow { deadline, .. } => assert_eq!(deadline, None),
            other => panic!("{other:?}"),
        }
    }
}

//! The soak's checker: pure functions over the final state (API server pods, cloud workloads,
//! the phase history the watch recorded, resident sets), so synthetic states can prove it fails.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// What a pod the driver made should look like after settling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Running and ready (restartPolicy Always, never deleted).
    Running,
    /// Succeeded (restartPolicy Never, its container exited 0).
    Succeeded,
    /// Deleted: no pod of that name, no workload of its UIDs.
    Gone,
}

/// A pod as the API server lists it after settling.
#[derive(Clone, Debug, Serialize)]
pub struct PodState {
    /// `namespace/name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.nodeName` ("" when unscheduled).
    pub node: String,
    /// `status.phase` ("" when unset).
    pub phase: String,
    /// Every container ready (the `Ready` condition is `True`).
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// The Deployment it belongs to (its `soak-deployment` label), if any.
    pub deployment: Option<String>,
}

/// A workload the cloud holds now, read from the emulator's or moto's own state (not through a
/// provider, which could hide what it lost track of).
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// `eci`, `aci` or `fargate`.
    pub cloud: String,
    /// Group name or id, task ARN.
    pub id: String,
    /// Its `vk-pod-uid` tag.
    pub pod_uid: Option<String>,
    /// Its `vk-node` tag.
    pub node: Option<String>,
}

/// One phase the watch saw for a pod, in order.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseSeen {
    /// `namespace/name`.
    pub name: String,
    /// `status.phase` ("" when unset).
    pub phase: String,
}

/// A process's resident set at the baseline and after settling.
#[derive(Clone, Debug, Serialize)]
pub struct RssSample {
    /// e.g. `node-shim-vk-soak-eci`, `provider-aci`.
    pub process: String,
    /// KiB at the baseline (end of the quiet warm-up, first incarnation).
    pub baseline_kib: u64,
    /// KiB after settling (whatever incarnation runs then).
    pub final_kib: u64,
}

/// Everything the checker reads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FinalState {
    /// Pods in the soak's namespace.
    pub pods: Vec<PodState>,
    /// Cloud workloads of the soak's nodes.
    pub workloads: Vec<Workload>,
    /// What each pod the driver made directly (not through a Deployment) should be, by
    /// `namespace/name` (a re-created name has the expectation of its last life).
    pub expected: BTreeMap<String, Expected>,
    /// Deployments: `namespace/name` → (node it is pinned to, `spec.replicas`).
    pub deployments: BTreeMap<String, (String, i32)>,
    /// The phases the watch saw, by pod UID.
    pub history: BTreeMap<String, Vec<PhaseSeen>>,
    /// Resident sets of shims and providers.
    pub rss: Vec<RssSample>,
    /// Every workload the clouds ever created, removed ones included (read once, after
    /// settling): a pod UID with two of them was duplicated, even if a clean-up removed one.
    pub created: Vec<Workload>,
}

/// Allowed resident-set growth: 20 % of the baseline, plus 4 MiB so a small process's allocator
/// noise is not a leak.
pub const RSS_GROWTH: f64 = 0.20;
/// See [`RSS_GROWTH`].
pub const RSS_SLACK_KIB: u64 = 4 * 1024;

/// What the checker found; every list empty means the soak passed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Findings {
    /// Workloads with no existing pod (or no pod tag at all).
    pub leaked: Vec<String>,
    /// Running pods with more than one workload now, and pod UIDs that ever had more than one
    /// (a create repeated after a lost answer, a restart or a hang must find the first).
    pub duplicated: Vec<String>,
    /// Phase regressions (Running→Pending, a terminal phase → anything else).
    pub regressions: Vec<String>,
    /// Pods not in the state their spec implies (missing, wrong phase, unexpected, a Running pod
    /// without workload, a Deployment with the wrong number of Running pods).
    pub unmet: Vec<String>,
    /// Pods still Terminating after settling.
    pub stuck_terminating: Vec<String>,
    /// Processes whose resident set grew past the bound.
    pub rss_growth: Vec<String>,
}

impl Findings {
    /// Nothing found.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
            && self.duplicated.is_empty()
            && self.regressions.is_empty()
            && self.unmet.is_empty()
            && self.stuck_terminating.is_empty()
            && self.rss_growth.is_empty()
    }

    /// The counts, by finding.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("leaked", self.leaked.len()),
            ("duplicated", self.duplicated.len()),
            ("regressions", self.regressions.len()),
            ("unmet", self.unmet.len()),
            ("stuck_terminating", self.stuck_terminating.len()),
            ("rss_growth", self.rss_growth.len()),
        ])
    }
}

fn terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

/// Whether going from `from` to `to` is a regression a kubelet must never report.
pub fn is_regression(from: &str, to: &str) -> bool {
    // An unset phase in an event (a status the watch saw before any was written) says nothing.
    if to.is_empty() || from == to {
        return false;
    }
    (from == "Running" && to == "Pending") || terminal(from)
}

/// Checks `state`.
pub fn check(state: &FinalState) -> Findings {
    let mut f = Findings::default();
    let live_uids: BTreeSet<&str> = state.pods.iter().map(|p| p.uid.as_str()).collect();

    let mut by_uid: BTreeMap<&str, Vec<&Workload>> = BTreeMap::new();
    for w in &state.workloads {
        match w.pod_uid.as_deref() {
            Some(uid) if live_uids.contains(uid) => by_uid.entry(uid).or_default().push(w),
            Some(uid) => f.leaked.push(format!(
                "{} {} (pod uid {uid}, node {}): no pod has this uid",
                w.cloud,
                w.id,
                w.node.as_deref().unwrap_or("?")
            )),
            None => f
                .leaked
                .push(format!("{} {}: no vk-pod-uid tag", w.cloud, w.id)),
        }
    }

    for p in &state.pods {
        let workloads = by_uid.get(p.uid.as_str()).map_or(0, Vec::len);
        if p.phase == "Running" && workloads > 1 {
            let ids: Vec<&str> = by_uid[p.uid.as_str()]
                .iter()
                .map(|w| w.id.as_str())
                .collect();
            f.duplicated.push(format!(
                "{} (uid {}) has {workloads} workloads: {ids:?}",
                p.name, p.uid
            ));
        }
        if p.terminating {
            f.stuck_terminating
                .push(format!("{} (uid {}, phase {})", p.name, p.uid, p.phase));
            continue;
        }
        if p.phase == "Running" && workloads == 0 {
            f.unmet
                .push(format!("{} is Running without a cloud workload", p.name));
        }
        if let Some(d) = &p.deployment {
            if !state.deployments.contains_key(d) {
                f.unmet
                    .push(format!("{} belongs to unknown deployment {d}", p.name));
            }
            continue;
        }
        match state.expected.get(&p.name) {
            None => f.unmet.push(format!("{} was not made by the soak", p.name)),
            Some(Expected::Gone) => f.unmet.push(format!(
                "{} should be gone; it is {} on {}",
                p.name, p.phase, p.node
            )),
            Some(Expected::Running) if !(p.phase == "Running" && p.ready) => f.unmet.push(format!(
                "{} should be Running and ready; it is {} (ready {})",
                p.name, p.phase, p.ready
            )),
            Some(Expected::Succeeded) if p.phase != "Succeeded" => f
                .unmet
                .push(format!("{} should be Succeeded; it is {}", p.name, p.phase)),
            Some(_) => {}
        }
    }
    let present: BTreeSet<&str> = state.pods.iter().map(|p| p.name.as_str()).collect();
    for (name, e) in &state.expected {
        if *e != Expected::Gone && !present.contains(name.as_str()) {
            f.unmet
                .push(format!("{name} should be {e:?}; it is missing"));
        }
    }
    for (d, (node, replicas)) in &state.deployments {
        let mine: Vec<&PodState> = state
            .pods
            .iter()
            .filter(|p| p.deployment.as_deref() == Some(d.as_str()))
            .collect();
        let ready = mine
            .iter()
            .filter(|p| p.phase == "Running" && p.ready && !p.terminating && &p.node == node)
            .count();
        if i32::try_from(ready).ok() != Some(*replicas) || mine.len() != ready {
            let states: Vec<String> = mine
                .iter()
                .map(|p| format!("{} {} ready={} on {}", p.name, p.phase, p.ready, p.node))
                .collect();
            f.unmet.push(format!(
                "deployment {d}: {replicas} replicas wanted, {ready} Running and ready on {node}: {states:?}"
            ));
        }
    }

    let mut ever: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for w in &state.created {
        if let Some(uid) = w.pod_uid.as_deref() {
            ever.entry(uid).or_default().insert(w.id.as_str());
        }
    }
    for (uid, ids) in ever.iter().filter(|(_, ids)| ids.len() > 1) {
        let name = state
            .pods
            .iter()
            .find(|p| p.uid == *uid)
            .map(|p| p.name.as_str())
            .or_else(|| {
                state
                    .history
                    .get(*uid)
                    .and_then(|h| h.first())
                    .map(|s| s.name.as_str())
            })
            .unwrap_or("?");
        f.duplicated.push(format!(
            "{name} (uid {uid}) got {} workloads over its life: {ids:?}",
            ids.len()
        ));
    }

    for (uid, seen) in &state.history {
        // An unset phase (an event before any status was written) says nothing: compare each
        // known phase with the last known one.
        let known: Vec<&PhaseSeen> = seen.iter().filter(|s| !s.phase.is_empty()).collect();
        for pair in known.windows(2) {
            if is_regression(&pair[0].phase, &pair[1].phase) {
                f.regressions.push(format!(
                    "{} (uid {uid}): {} → {}",
                    pair[1].name, pair[0].phase, pair[1].phase
                ));
            }
        }
    }

    for s in &state.rss {
        let bound = (s.baseline_kib as f64 * (1.0 + RSS_GROWTH)) as u64 + RSS_SLACK_KIB;
        if s.final_kib > bound {
            f.rss_growth.push(format!(
                "{}: {} KiB after settling, {} KiB at the baseline (bound {bound} KiB)",
                s.process, s.final_kib, s.baseline_kib
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, phase: &str) -> PodState {
        PodState {
            name: format!("soak/{name}"),
            uid: uid.into(),
            node: "n1".into(),
            phase: phase.into(),
            ready: phase == "Running",
            terminating: false,
            deployment: None,
        }
    }

    fn workload(id: &str, uid: &str) -> Workload {
        Workload {
            cloud: "aci".into(),
            id: id.into(),
            pod_uid: Some(uid.into()),
            node: Some("n1".into()),
        }
    }

    fn seen(name: &str, phases: &[&str]) -> Vec<PhaseSeen> {
        phases
            .iter()
            .map(|p| PhaseSeen {
                name: format!("soak/{name}"),
                phase: (*p).into(),
            })
            .collect()
    }

    /// A consistent state: two pods, one workload each, a clean history.
    fn clean() -> FinalState {
        FinalState {
            pods: vec![pod("a", "u-a", "Running"), pod("b", "u-b", "Succeeded")],
            workloads: vec![workload("g-a", "u-a"), workload("g-b", "u-b")],
            expected: BTreeMap::from([
                ("soak/a".into(), Expected::Running),
                ("soak/b".into(), Expected::Succeeded),
                ("soak/c".into(), Expected::Gone),
            ]),
            deployments: BTreeMap::new(),
            history: BTreeMap::from([
                ("u-a".into(), seen("a", &["Pending", "Running"])),
                (
                    "u-b".into(),
                    seen("b", &["Pending", "Running", "Succeeded"]),
                ),
            ]),
            rss: vec![RssSample {
                process: "provider-aci".into(),
                baseline_kib: 20_000,
                final_kib: 23_000,
            }],
            // b's workload is gone from the cloud's current list but was created: still one.
            created: vec![
                workload("g-a", "u-a"),
                workload("g-b", "u-b"),
                workload("g-gone", "u-gone"),
            ],
        }
    }

    #[test]
    fn a_consistent_state_passes() {
        let f = check(&clean());
        assert!(f.is_clean(), "{f:?}");
    }

    #[test]
    fn a_leaked_workload_is_reported() {
        let mut s = clean();
        s.workloads.push(workload("g-c", "u-c"));
        s.workloads.push(Workload {
            pod_uid: None,
            ..workload("g-x", "")
        });
        let f = check(&s);
        assert_eq!(f.leaked.len(), 2, "{f:?}");
        assert!(f.leaked[0].contains("g-c"), "{f:?}");
        assert!(!f.is_clean());
    }

    #[test]
    fn a_duplicate_is_reported() {
        let mut s = clean();
        s.workloads.push(workload("g-a2", "u-a"));
        let f = check(&s);
        assert_eq!(f.duplicated.len(), 1, "{f:?}");
        assert!(f.duplicated[0].contains("g-a2"), "{f:?}");
        assert!(f.leaked.is_empty(), "{f:?}");
    }

    #[test]
    fn a_duplicate_removed_before_the_check_is_reported() {
        let mut s = clean();
        // A second group for a deleted pod's UID, cleaned up since: not in `workloads`.
        s.created.push(workload("g-gone-2", "u-gone"));
        s.history
            .insert("u-gone".into(), seen("gone", &["Pending", "Running"]));
        // Listing a workload twice (now and in the created list) is still one.
        s.created.push(workload("g-a", "u-a"));
        let f = check(&s);
        assert_eq!(f.duplicated.len(), 1, "{f:?}");
        assert!(f.duplicated[0].contains("soak/gone"), "{f:?}");
        assert!(f.duplicated[0].contains("g-gone-2"), "{f:?}");
        assert!(f.leaked.is_empty() && f.unmet.is_empty(), "{f:?}");
    }

    #[test]
    fn phase_regressions_are_reported() {
        let mut s = clean();
        s.history.insert(
            "u-a".into(),
            seen("a", &["Pending", "Running", "Pending", "Running"]),
        );
        s.history.insert(
            "u-b".into(),
            seen("b", &["Running", "Succeeded", "Running"]),
        );
        let f = check(&s);
        assert_eq!(f.regressions.len(), 2, "{f:?}");
        assert!(f.regressions[0].contains("Running → Pending"), "{f:?}");
        assert!(f.regressions[1].contains("Succeeded → Running"), "{f:?}");
    }

    #[test]
    fn unmet_expectations_and_stuck_pods_are_reported() {
        let mut s = clean();
        // a should run but is Pending; c should be gone but exists; d is expected but missing.
        s.pods[0].phase = "Pending".into();
        s.pods[0].ready = false;
        s.pods.push(pod("c", "u-c", "Running"));
        s.workloads.push(workload("g-c", "u-c"));
        s.expected.insert("soak/d".into(), Expected::Running);
        let mut stuck = pod("e", "u-e", "Running");
        stuck.terminating = true;
        s.pods.push(stuck);
        s.workloads.push(workload("g-e", "u-e"));
        s.expected.insert("soak/e".into(), Expected::Gone);
        let f = check(&s);
        assert_eq!(f.unmet.len(), 3, "{f:?}");
        assert_eq!(f.stuck_terminating.len(), 1, "{f:?}");
    }

    #[test]
    fn a_deployment_short_of_replicas_and_rss_growth_are_reported() {
        let mut s = clean();
        s.deployments.insert("soak/web".into(), ("n1".into(), 2));
        let mut p = pod("web-1", "u-w1", "Running");
        p.deployment = Some("soak/web".into());
        s.pods.push(p);
        s.workloads.push(workload("g-w1", "u-w1"));
        s.rss[0].final_kib = 40_000;
        let f = check(&s);
        assert_eq!(f.unmet.len(), 1, "{f:?}");
        assert!(f.unmet[0].contains("2 replicas wanted, 1"), "{f:?}");
        assert_eq!(f.rss_growth.len(), 1, "{f:?}");
    }
}

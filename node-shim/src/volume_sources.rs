//! Live volume contents. The ConfigMaps that running pods mount (see
//! [`crate::resolve::live_sources`]) are watched one object at a time, as the kubelet's
//! watch-based manager does (a `metadata.name` field selector, metadata only). Secrets are read
//! with `get` every `--secret-sync-period` instead, as the kubelet's TTL-cache manager does: a
//! watch would need the right to list Secrets, which RBAC cannot narrow to one object. When an
//! object's `resourceVersion` differs from the one a pod was resolved with, the pod is marked
//! stale and its reconcile is triggered; reconcile re-resolves it and sends UpdatePod
//! (`pods::follow_spec`). One watch or poll serves every pod that mounts the object; it stops with
//! the last of them.

use parking_lot::Mutex;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::resolve::{Kind, SourceRef};

/// What a pod was resolved with: `Some(version)` (`None` inside: the object did not exist), or
/// `None` for a pod adopted after a restart, whose baseline is the first version the watch sees.
type Seen = Option<Option<String>>;

struct Tracked {
    pod: ObjectRef<Pod>,
    sources: HashMap<SourceRef, Seen>,
    stale: bool,
}

struct Watch {
    pods: HashSet<String>,
    /// The version the watch last saw (`None` inside: absent); `None` until its first list.
    current: Option<Option<String>>,
    task: AbortHandle,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Tracked>,
    watches: HashMap<SourceRef, Watch>,
}

/// The watches and which pods follow which object.
#[derive(Clone)]
pub struct VolumeSources {
    client: Client,
    secret_period: Duration,
    trigger: mpsc::UnboundedSender<ObjectRef<Pod>>,
    state: Arc<Mutex<State>>,
}

impl VolumeSources {
    /// Tracking that reconciles changed pods by sending them on `trigger`.
    pub fn new(
        client: Client,
        secret_period: Duration,
        trigger: mpsc::UnboundedSender<ObjectRef<Pod>>,
    ) -> Self {
        Self {
            client,
            secret_period,
            trigger,
            state: Arc::default(),
        }
    }

    /// `pod` (by UID) now runs with the contents of `sources` at the versions in `versions` (what
    /// resolution read); replaces what was tracked for it and clears its staleness.
    pub fn track(
        &self,
        uid: &str,
        pod: ObjectRef<Pod>,
        sources: Vec<SourceRef>,
        versions: &HashMap<SourceRef, Option<String>>,
    ) {
        let seen = sources
            .into_iter()
            .map(|s| {
                let v = versions.get(&s).cloned();
                (s, v)
            })
            .collect();
        self.replace(uid, pod, seen);
    }

    /// `pod` was adopted after a restart: what the provider has is taken to be the current
    /// version of each source (the first one its watch sees).
    pub fn adopt(&self, uid: &str, pod: ObjectRef<Pod>, sources: Vec<SourceRef>) {
        let seen = sources.into_iter().map(|s| (s, None)).collect();
        self.replace(uid, pod, seen);
    }

    /// Whether `uid` is tracked at all.
    pub fn is_tracked(&self, uid: &str) -> bool {
        self.state.lock().pods.contains_key(uid)
    }

    /// Whether a source of `uid` changed since it was resolved.
    pub fn is_stale(&self, uid: &str) -> bool {
        self.state.lock().pods.get(uid).is_some_and(|t| t.stale)
    }

    /// Stops following `uid` (deleted or finished).
    pub fn untrack(&self, uid: &str) {
        let mut state = self.state.lock();
        if let Some(t) = state.pods.remove(uid) {
            for source in t.sources.keys() {
                release(&mut state, source, uid);
            }
        }
    }

    fn replace(&self, uid: &str, pod: ObjectRef<Pod>, sources: HashMap<SourceRef, Seen>) {
        let mut state = self.state.lock();
        let old = state.pods.remove(uid);
        for source in old.iter().flat_map(|t| t.sources.keys()) {
            if !sources.contains_key(source) {
                release(&mut state, source, uid);
            }
        }
        if sources.is_empty() {
            return;
        }
        let mut tracked = Tracked {
            pod,
            sources,
            stale: false,
        };
        for (source, seen) in &mut tracked.sources {
            let watch = match state.watches.get_mut(source) {
                Some(w) => w,
                None => {
                    let task = self.spawn_watch(source.clone());
                    state.watches.entry(source.clone()).or_insert(Watch {
                        pods: HashSet::new(),
                        current: None,
                        task,
                    })
                }
            };
            watch.pods.insert(uid.to_owned());
            if let Some(current) = &watch.current {
                tracked.stale |= settle(seen, current);
            }
        }
        let stale = tracked.stale;
        let pod = tracked.pod.clone();
        state.pods.insert(uid.to_owned(), tracked);
        drop(state);
        if stale {
            let _ = self.trigger.send(pod);
        }
    }

    /// The watch of `source` saw `version`: pods resolved with another version become stale.
    fn observe(&self, source: &SourceRef, version: Option<String>) {
        let mut stale = Vec::new();
        {
            let mut state = self.state.lock();
            let State { pods, watches } = &mut *state;
            let Some(watch) = watches.get_mut(source) else {
                return;
            };
            watch.current = Some(version.clone());
            for uid in &watch.pods {
                let Some(t) = pods.get_mut(uid) else { continue };
                let Some(seen) = t.sources.get_mut(source) else {
                    continue;
                };
                if settle(seen, &version) && !t.stale {
                    t.stale = true;
                    stale.push(t.pod.clone());
                }
            }
        }
        for pod in stale {
            tracing::info!(
                pod = %pod,
                source = %format!("{} {}/{}", source.kind.label(), source.namespace, source.name),
                "a mounted source changed; updating the pod"
            );
            let _ = self.trigger.send(pod);
        }
    }

    fn spawn_watch(&self, source: SourceRef) -> AbortHandle {
        let this = self.clone();
        let client = self.client.clone();
        let task = async move {
            match source.kind {
                Kind::ConfigMap => {
                    let api: Api<PartialObjectMeta<ConfigMap>> =
                        Api::namespaced(client, &source.namespace);
                    let events = watcher(api, by_name(&source)).default_backoff();
                    follow(events.boxed(), &source, &this).await;
                }
                Kind::Secret => {
                    let api: Api<Secret> = Api::namespaced(client, &source.namespace);
                    poll(api, &source, &this).await;
                }
            }
        };
        tokio::spawn(task).abort_handle()
    }
}

/// Compares what a pod saw with `current`; a pod without a baseline takes it. True when stale.
fn settle(seen: &mut Seen, current: &Option<String>) -> bool {
    match seen {
        None => {
            *seen = Some(current.clone());
            false
        }
        Some(v) => v != current,
    }
}

fn release(state: &mut State, source: &SourceRef, uid: &str) {
    let empty = state.watches.get_mut(source).is_some_and(|w| {
        w.pods.remove(uid);
        w.pods.is_empty()
    });
    if empty && let Some(w) = state.watches.remove(source) {
        w.task.abort();
    }
}

/// One object, by name: what the Node authorizer lets a node list and watch.
fn by_name(source: &SourceRef) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={}", source.name))
}

/// Follows the metadata watch of one object, reporting its version after every list and change.
async fn follow<K>(
    mut stream: BoxStream<'_, watcher::Result<watcher::Event<PartialObjectMeta<K>>>>,
    source: &SourceRef,
    sources: &VolumeSources,
) {
    // During a (re)list: whether the object was among the listed ones.
    let mut listed: Option<Option<String>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = Some(None),
            Ok(watcher::Event::InitApply(o)) => listed = Some(o.metadata.resource_version),
            Ok(watcher::Event::InitDone) => sources.observe(source, listed.take().flatten()),
            Ok(watcher::Event::Apply(o)) => sources.observe(source, o.metadata.resource_version),
            Ok(watcher::Event::Delete(_)) => sources.observe(source, None),
            Err(err) => tracing::warn!(
                %err,
                source = %format!("{} {}/{}", source.kind.label(), source.namespace, source.name),
                "watching a mounted source failed; retrying"
            ),
        }
    }
}

/// Reads one Secret's metadata every period, reporting its version.
async fn poll(api: Api<Secret>, source: &SourceRef, sources: &VolumeSources) {
    let mut tick = tokio::time::interval(sources.secret_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match api.get_metadata_opt(&source.name).await {
            Ok(found) => sources.observe(source, found.and_then(|m| m.metadata.resource_version)),
            Err(err) => tracing::warn!(
                %err,
                source = %format!("Secret {}/{}", source.namespace, source.name),
                "reading a mounted Secret failed; retrying"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_stale_only_when_the_version_differs() {
        let mut seen: Seen = Some(Some("5".into()));
        assert!(!settle(&mut seen, &Some("5".into())));
        assert!(settle(&mut seen, &Some("6".into())));
        assert!(settle(&mut seen, &None), "a deleted source is a change");
        let mut missing: Seen = Some(None);
        assert!(
            settle(&mut missing, &Some("1".into())),
            "an optional source that appears"
        );
        let mut adopted: Seen = None;
        assert!(
            !settle(&mut adopted, &Some("9".into())),
            "the first version is the baseline"
        );
        assert!(settle(&mut adopted, &Some("10".into())));
    }
}

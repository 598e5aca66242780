//! A watch on the soak's pods for the whole run, recording every phase the API server reported
//! for each pod UID. kube-runtime's watcher re-lists after the watch breaks (an API server or etcd
//! restart), so the history continues across restarts; re-lists are counted.

use parking_lot::Mutex;
use std::{collections::BTreeMap, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use super::check::PhaseSeen;

/// What the watch saw.
#[derive(Debug, Default)]
pub struct History {
    /// Phases by pod UID, consecutive repeats folded.
    pub phases: BTreeMap<String, Vec<PhaseSeen>>,
    /// Times the watch (re)started with a full list.
    pub lists: usize,
    /// Errors the watch stream reported (then retried with backoff).
    pub errors: usize,
}

/// A running watch; stops when dropped.
pub struct Recorder {
    /// The history so far.
    pub history: Arc<Mutex<History>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(h: &Mutex<History>, pod: &Pod) {
    let (Some(uid), Some(name)) = (pod.metadata.uid.clone(), pod.metadata.name.clone()) else {
        return;
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let mut h = h.lock();
    let seen = h.phases.entry(uid).or_default();
    if seen.last().is_some_and(|s| s.phase == phase) {
        return;
    }
    seen.push(PhaseSeen {
        name: format!("{ns}/{name}"),
        phase,
    });
}

impl Recorder {
    /// Starts watching the pods of `namespace`.
    pub fn start(client: Client, namespace: &str) -> Self {
        let history = Arc::new(Mutex::new(History::default()));
        let shared = history.clone();
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => shared.lock().lists += 1,
                    Ok(
                        watcher::Event::Apply(p)
                        | watcher::Event::InitApply(p)
                        | watcher::Event::Delete(p),
                    ) => record(&shared, &p),
                    Ok(watcher::Event::InitDone) => {}
                    Err(err) => {
                        tracing::debug!("soak pod watch: {err}");
                        shared.lock().errors += 1;
                    }
                }
            }
        });
        Self { history, task }
    }

    /// A copy of the phases seen so far.
    pub fn phases(&self) -> BTreeMap<String, Vec<PhaseSeen>> {
        self.history.lock().phases.clone()
    }

    /// (lists, errors) so far.
    pub fn counts(&self) -> (usize, usize) {
        let h = self.history.lock();
        (h.lists, h.errors)
    }
}

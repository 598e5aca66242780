//! One create or delete per pod UID at a time.
//!
//! The shim retries a create whose answer it did not get in time, and may delete a pod whose
//! create is still under way; both reach the provider while the first call runs. Holding a
//! [`UidGuard`] around each create and delete makes the second call wait for the first's outcome,
//! so a retried create finds the pod already made and a delete never runs before the create it
//! should undo (which would leave a cloud resource behind). The guard is released on drop, also
//! when tonic drops a handler whose client went away.

use parking_lot::Mutex;
use std::collections::HashSet;

use tokio::sync::Notify;

/// The UIDs with a create or delete under way.
#[derive(Debug, Default)]
pub struct UidLocks {
    busy: Mutex<HashSet<String>>,
    released: Notify,
}

/// Holds a UID until dropped.
#[derive(Debug)]
#[must_use = "the UID is released when the guard is dropped"]
pub struct UidGuard<'a> {
    locks: &'a UidLocks,
    uid: String,
}

impl UidLocks {
    /// Waits until no other call holds `uid`, then holds it.
    pub async fn acquire(&self, uid: &str) -> UidGuard<'_> {
        loop {
            // Registered before the check, so a release between the check and the wait is seen.
            let released = self.released.notified();
            if self.busy.lock().insert(uid.to_owned()) {
                return UidGuard {
                    locks: self,
                    uid: uid.to_owned(),
                };
            }
            released.await;
        }
    }

    /// Whether a call holds `uid` now.
    pub fn is_held(&self, uid: &str) -> bool {
        self.busy.lock().contains(uid)
    }
}

impl Drop for UidGuard<'_> {
    fn drop(&mut self) {
        self.locks.busy.lock().remove(&self.uid);
        self.locks.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_second_call_for_a_uid_waits_for_the_first() {
        let locks = Arc::new(UidLocks::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = locks.acquire("u").await;
        let waiter = {
            let (locks, order) = (locks.clone(), order.clone());
            tokio::spawn(async move {
                let _g = locks.acquire("u").await;
                order.lock().push("second");
            })
        };
        // Another UID is not held up.
        drop(locks.acquire("other").await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(locks.is_held("u"));
        order.lock().push("first");
        drop(first);
        waiter.await.ok();
        assert_eq!(*order.lock(), vec!["first", "second"]);
        assert!(!locks.is_held("u"));
    }

    #[tokio::test]
    async fn a_dropped_call_releases_its_uid() {
        let locks = Arc::new(UidLocks::default());
        let entered = Arc::new(AtomicUsize::new(0));
        let task = {
            let (locks, entered) = (locks.clone(), entered.clone());
            tokio::spawn(async move {
                let _g = locks.acquire("u").await;
                entered.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            })
        };
        while entered.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // tonic drops a handler whose client went away; the UID must not stay held.
        task.abort();
        let _ = task.await;
        let got = tokio::time::timeout(Duration::from_secs(5), locks.acquire("u")).await;
        assert!(got.is_ok(), "the aborted call kept the UID");
    }
}

//! State the reader, the writer and the stream handles share: the table of
//! open streams, the session-wide receive budget, and the GOAWAY and shutdown
//! signals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Config;
use super::stream::{Chunk, StreamState};
use crate::frame::StreamId;

pub(super) struct Entry {
    pub(super) state: Arc<StreamState>,
    /// `None` once the peer finished sending.
    pub(super) inbound: Option<mpsc::UnboundedSender<Chunk>>,
}

pub(super) struct Shared {
    pub(super) config: Config,
    streams: Mutex<HashMap<StreamId, Entry>>,
    /// Bounds buffered received bytes over all streams; one permit per byte.
    pub(super) recv_budget: Arc<Semaphore>,
    /// GOAWAY sent or received.
    pub(super) going_away: AtomicBool,
    pub(super) goaway_sent: AtomicBool,
    /// Highest stream id we accepted (for our GOAWAY).
    pub(super) last_accepted: AtomicU32,
    /// Stops the reader and makes the writer drain and shut down.
    pub(super) shutdown: CancellationToken,
    /// Fired on GOAWAY either way: stop handing out new streams.
    pub(super) no_new_streams: CancellationToken,
}

impl Shared {
    /// A session with no streams yet; `config` must already be sanitized.
    pub(super) fn new(config: Config) -> Shared {
        Shared {
            recv_budget: Arc::new(Semaphore::new(config.session_receive_buffer)),
            config,
            streams: Mutex::new(HashMap::new()),
            going_away: AtomicBool::new(false),
            goaway_sent: AtomicBool::new(false),
            last_accepted: AtomicU32::new(0),
            shutdown: CancellationToken::new(),
            no_new_streams: CancellationToken::new(),
        }
    }

    pub(super) fn streams(&self) -> MutexGuard<'_, HashMap<StreamId, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent in
        // a way that matters more than losing the connection, so recover.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session once GOAWAY has been exchanged and no stream is open.
    pub(super) fn maybe_finish(&self) {
        if self.going_away.load(Ordering::Acquire) && self.streams().is_empty() {
            debug!("SPDY session: going away and no open streams, shutting down");
            self.shutdown.cancel();
        }
    }

    pub(super) fn begin_going_away(&self) {
        self.going_away.store(true, Ordering::Release);
        self.no_new_streams.cancel();
    }

    /// The peer finished sending on `id` (FIN).
    pub(super) fn remote_finished(&self, id: StreamId) {
        {
            let mut streams = self.streams();
            let Some(entry) = streams.get_mut(&id) else {
                return;
            };
            entry.inbound = None;
            entry.state.remote_fin.store(true, Ordering::Release);
            if entry.state.local_fin.load(Ordering::Acquire) || entry.state.is_reset() {
                streams.remove(&id);
            }
        }
        self.maybe_finish();
    }

    /// Our FIN for `id` was written.
    pub(super) fn local_finished(&self, id: StreamId) {
        {
            let mut streams = self.streams();
            if streams
                .get(&id)
                .is_some_and(|e| e.state.remote_fin.load(Ordering::Acquire))
            {
                streams.remove(&id);
            }
        }
        self.maybe_finish();
    }

    pub(super) fn remove(&self, id: StreamId) -> Option<Entry> {
        let entry = self.streams().remove(&id);
        self.maybe_finish();
        entry
    }
}

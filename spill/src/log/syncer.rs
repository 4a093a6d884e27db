//! The thread that bounds the loss window of [`FsyncPolicy::Interval`](crate::FsyncPolicy::Interval)
//! when writes stop: every `every` it runs a tick (the log writes the batch still in memory and
//! fsyncs, if anything is unsynced), so nothing waits longer than `every`. The tick holds the log
//! weakly, so the thread never keeps a log open; dropping the [`Syncer`] (with the last handle of
//! the log) stops and joins it, so the log is closed, and its directory unlocked, when that drop
//! returns.

use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::state::lock;

/// A running interval thread; stopped and joined on drop.
pub(super) struct Syncer {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    /// Starts a thread that calls `tick` every `every` until the syncer is dropped or `tick`
    /// returns `false` (the log is gone or closed).
    pub(super) fn start(
        every: Duration,
        mut tick: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weir-spill-sync".into())
            .spawn(move || {
                // `recv_timeout` returns `Disconnected` once the syncer is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if !tick() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(lock(&self.stop).take());
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

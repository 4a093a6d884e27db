//! The handle to a running pipeline: observe it, stop it, await its result.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::describe::Diagram;
use crate::error::PipelineError;
use crate::export;
use crate::inventory::Inventory;
use crate::observe::{self, PipelineSnapshot, Readiness};
use crate::running::{self, Running};
use crate::wiring::{BuildFn, Closer, ReadinessCheck, Settings};

/// A running pipeline. Await it (`(&mut handle).await` keeps it usable) for the result.
///
/// Dropping the handle of a pipeline that still runs **aborts** it: every item it holds is counted
/// as cancelled (a warning says how many), nothing vanishes with a task nobody watches. Call
/// [`detach`](PipelineHandle::detach) to let it run on without a handle.
#[must_use = "dropping the handle aborts the pipeline: keep it to observe, drain or await it"]
pub struct PipelineHandle {
    running: Arc<Running>,
    join: JoinHandle<Result<(), PipelineError>>,
    result: Option<Result<(), PipelineError>>,
    detached: bool,
}

impl std::fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineHandle")
            .field("pipeline", &self.running.name)
            .field("live", &self.live())
            .finish()
    }
}

/// Starts a pipeline's stages on `runtime` and returns its handle.
pub(crate) fn start(
    name: String,
    nodes: Arc<Vec<crate::graph::Node>>,
    builds: Vec<Option<BuildFn>>,
    closers: Vec<Closer>,
    checks: Vec<ReadinessCheck>,
    settings: Settings,
    runtime: &Handle,
) -> PipelineHandle {
    let (running, join) = running::launch(name, nodes, builds, closers, checks, settings, runtime);
    observe::sample(&running);
    runtime.spawn(sample_while_live(running.clone()));
    PipelineHandle {
        running,
        join,
        result: None,
        detached: false,
    }
}

/// Takes a reading every quarter of the rate window while the pipeline runs, so that "recent"
/// means the last window whoever asks and however often, and exports it through the `metrics`
/// facade (logging readiness transitions); a last export once the pipeline has stopped.
async fn sample_while_live(running: Arc<Running>) {
    let period = (running.settings.rate_window / 4).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks.tick().await;
    loop {
        let live = running.is_live();
        ticks.tick().await;
        let snapshot = observe::snapshot(&running);
        let readiness = observe::readiness(&running, &snapshot);
        export::log_transition(&running, &readiness);
        export::record(&snapshot, &readiness);
        if !live {
            log_books(&running, &snapshot);
            break;
        }
    }
}

/// The pipeline's books once it has stopped (a tick after its supervisor ended, so its stages
/// have settled): info, or a warning when they do not balance.
fn log_books(running: &Running, snapshot: &PipelineSnapshot) {
    let ledger = snapshot.ledger();
    if ledger.balances() {
        tracing::info!(pipeline = %running.name, %ledger, "pipeline stopped; its books balance");
    } else {
        tracing::warn!(
            pipeline = %running.name,
            %ledger,
            "pipeline stopped with items unaccounted for"
        );
    }
}

impl PipelineHandle {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.running.name
    }

    /// Whether the pipeline's tasks are running (cheap: one atomic load).
    pub fn live(&self) -> bool {
        self.running.is_live()
    }

    /// A snapshot of every stage and edge: items and rates per stage with its
    /// [ledger](crate::Ledger); depth, capacity, in / out rates, demand, rejects and drops by
    /// reason, oldest-item age and lag per buffer.
    pub fn snapshot(&self) -> PipelineSnapshot {
        observe::snapshot(&self.running)
    }

    /// Whether the pipeline keeps up: not ready when it is not running, when an ingress rejected
    /// items (full, timed out) within the recent window, or when a buffer's backlog (a spill's
    /// records on disk included) would take longer than the recovery budget to drain at its
    /// recent drain rate (or does not drain at all). Every reason is given.
    pub fn ready(&self) -> Readiness {
        let snapshot = self.snapshot();
        observe::readiness(&self.running, &snapshot)
    }

    /// A picture of the graph with the live depth / capacity of every buffered edge.
    pub fn describe(&self) -> Diagram {
        let snapshot = self.snapshot();
        Diagram::new(&self.running.name, &self.running.nodes, Some(&snapshot))
    }

    /// The inventory of the running pipeline (the same as before it started).
    pub fn inventory(&self) -> Inventory {
        Inventory::new(&self.running.name, &self.running.nodes)
    }

    /// Records every counter now through the `metrics` facade (the pipeline also does so every
    /// quarter of its rate window while it runs). See the [names table](crate::export).
    pub fn export_metrics(&self) {
        let snapshot = self.snapshot();
        let readiness = observe::readiness(&self.running, &snapshot);
        export::record(&snapshot, &readiness);
    }

    /// Stops taking input and finishes the work in flight: closes every ingress (pushes from now
    /// on are refused with [`PushError::Closed`](weir_runtime::ingress::PushError::Closed), the
    /// item handed back), lets every stage and sink finish what was accepted, and resolves with
    /// the pipeline's result. If that takes longer than `deadline`, aborts (see
    /// [`abort`](Self::abort)) and returns [`PipelineError::DrainTimedOut`] once the abort has
    /// settled (no sink's code running and every stage's task ended, as for `abort`).
    pub async fn drain(&mut self, deadline: Duration) -> Result<(), PipelineError> {
        self.running.close_ingresses();
        match tokio::time::timeout(deadline, &mut *self).await {
            Ok(result) => result,
            Err(_) => {
                self.abort();
                let _ = (&mut *self).await;
                let timed_out = PipelineError::DrainTimedOut {
                    pipeline: self.running.name.clone(),
                    deadline,
                };
                self.result = Some(Err(timed_out.clone()));
                Err(timed_out)
            }
        }
    }

    /// Cancels everything now: ingresses close, every stage is cancelled, and the result is
    /// [`PipelineError::Aborted`]. Nothing goes uncounted: items queued are counted as
    /// `cancelled`, futures in flight in async stages and sinks as `cancelled_in_flight`, records
    /// spilled to disk stay there (held) for the next run. Delivery is at most once for what was
    /// cancelled in memory (it is gone), at least once for what is on disk.
    pub fn abort(&self) {
        self.running.abort();
    }

    /// A handle that can [`abort`](PipelineAbort::abort) the pipeline from elsewhere: a second
    /// Ctrl-C while [`drain`](PipelineHandle::drain) holds the handle, a supervisor task.
    pub fn abort_handle(&self) -> PipelineAbort {
        PipelineAbort {
            running: self.running.clone(),
        }
    }

    /// Lets the pipeline run on without a handle: it completes when its sources end and its
    /// ingresses close (all their handles dropped), and logs its outcome. Its runtime must outlive
    /// it: a runtime that shuts down drops whatever is in flight.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if self.detached || self.result.is_some() || !self.running.is_live() {
            return;
        }
        tracing::warn!(
            pipeline = %self.running.name,
            "the handle of a running pipeline was dropped: the pipeline is aborted, and its books \
             are logged once it has stopped (keep the handle, await it, or call detach() to let \
             it run on)"
        );
        self.running.abort();
    }
}

/// Aborts a running pipeline; see [`PipelineHandle::abort_handle`].
#[derive(Clone)]
pub struct PipelineAbort {
    running: Arc<Running>,
}

impl std::fmt::Debug for PipelineAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineAbort")
            .field("pipeline", &self.running.name)
            .finish()
    }
}

impl PipelineAbort {
    /// As [`PipelineHandle::abort`].
    pub fn abort(&self) {
        self.running.abort();
    }
}

impl Future for PipelineHandle {
    type Output = Result<(), PipelineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = &self.result {
            return Poll::Ready(result.clone());
        }
        let result = match Pin::new(&mut self.join).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(join_error)) => Err(PipelineError::Lost {
                pipeline: self.running.name.clone(),
                reason: join_error.to_string(),
            }),
        };
        self.result = Some(result.clone());
        Poll::Ready(result)
    }
}

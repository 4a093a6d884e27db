//! A running pipeline: what its handle and its supervisor share, and its lifecycle.
//!
//! Invariants:
//! - sinks subscribe in tasks of their own (a synchronous source then runs in that task, never
//!   inside `start`), each inside its stage's span and ledger scope;
//! - the supervisor turns the sinks' outcomes into the pipeline's result, naming the stage the
//!   first error came from (see [`tap`](crate::tap));
//! - `abort` closes every ingress and cancels every sink's subscription (cancel travels upstream
//!   through every stage; whatever a stage holds is counted as cancelled by its accounts); the
//!   result is [`PipelineError::Aborted`], once no sink's code runs;
//! - a pipeline resolves (completed, failed or aborted) once every stage's tasks have ended, so its
//!   books are final then ([`SETTLE_BOUND`] at most).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use weir_runtime::Error;

use crate::error::PipelineError;
use crate::graph::Node;
use crate::rates::Monitor;
use crate::tap::{Failures, SinkSlot};
use crate::wiring::{
    self, BufferProbe, BuildFn, Closer, ReadinessCheck, Settings, SpillProbe, StageCounters,
};

/// What observing a running pipeline reads: the counters of every stage, buffer and spill log.
#[derive(Debug)]
pub(crate) struct Probes {
    pub(crate) stages: Vec<StageCounters>,
    pub(crate) buffers: Vec<BufferProbe>,
    pub(crate) spills: Vec<SpillProbe>,
}

/// What the handle and the supervisor share.
pub(crate) struct Running {
    pub(crate) name: String,
    pub(crate) nodes: Arc<Vec<Node>>,
    pub(crate) probes: Probes,
    pub(crate) settings: Settings,
    /// Outside inputs of readiness.
    pub(crate) checks: Vec<ReadinessCheck>,
    pub(crate) monitor: Mutex<Monitor>,
    /// Readiness at the last export (transitions are logged).
    pub(crate) was_ready: AtomicBool,
    lifecycle: Lifecycle,
}

/// How the pipeline is stopped.
struct Lifecycle {
    closers: Vec<Closer>,
    sinks: Vec<Arc<Mutex<SinkSlot>>>,
    failures: Arc<Failures>,
    running: AtomicBool,
    aborting: AtomicBool,
    abort: Notify,
}

impl Running {
    pub(crate) fn is_live(&self) -> bool {
        self.lifecycle.running.load(Ordering::Acquire)
    }

    pub(crate) fn close_ingresses(&self) {
        for close in &self.lifecycle.closers {
            close();
        }
    }

    /// Stops everything now: ingresses closed, every sink's subscription cancelled.
    fn stop(&self) {
        self.close_ingresses();
        for slot in &self.lifecycle.sinks {
            if let Some(subscription) = SinkSlot::stop(slot) {
                subscription.cancel();
            }
        }
    }

    /// Stops everything; the result is [`PipelineError::Aborted`] (once).
    pub(crate) fn abort(&self) {
        if !self.lifecycle.aborting.swap(true, Ordering::AcqRel) {
            self.stop();
            self.lifecycle.abort.notify_one();
        }
    }

    fn failed(&self, sink: usize, error: Error) -> PipelineError {
        let (stage, error) = self.lifecycle.failures.first().unwrap_or((sink, error));
        PipelineError::Failed {
            pipeline: self.name.clone(),
            stage: self.nodes[stage].name.clone(),
            error,
        }
    }
}

/// Wires the stages (the authors' stage closures run now, each in its stage's ledger scope) and
/// starts one task per sink and the supervisor on `runtime`.
pub(crate) fn launch(
    name: String,
    nodes: Arc<Vec<Node>>,
    mut builds: Vec<Option<BuildFn>>,
    closers: Vec<Closer>,
    checks: Vec<ReadinessCheck>,
    settings: Settings,
    runtime: &Handle,
) -> (Arc<Running>, JoinHandle<Result<(), PipelineError>>) {
    let _entered = runtime.enter();
    let span = tracing::info_span!("pipeline", pipeline = %name);
    let mut wired = wiring::wire(&name, &nodes, &mut builds, &span);
    let build_failure = wired.build_failure.take();
    let running = Arc::new(Running {
        name,
        nodes,
        probes: Probes {
            stages: wired.stages,
            buffers: wired.buffers,
            spills: wired.spills,
        },
        settings,
        checks,
        monitor: Mutex::new(Monitor::new(settings.rate_window)),
        was_ready: AtomicBool::new(true),
        lifecycle: Lifecycle {
            closers,
            sinks: wired.sinks.iter().map(|sink| sink.slot.clone()).collect(),
            failures: wired.failures,
            running: AtomicBool::new(true),
            aborting: AtomicBool::new(false),
            abort: Notify::new(),
        },
    });
    tracing::info!(parent: &span, stages = running.nodes.len(), "pipeline started");
    let tasks = wired
        .sinks
        .into_iter()
        .map(|sink| {
            let run = running.clone();
            let stage = running.probes.stages[sink.node].span.clone();
            let scope = running.probes.stages[sink.node].scope.clone();
            let join = runtime.spawn(tracing::Instrument::instrument(
                async move {
                    if run.lifecycle.aborting.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    // In the sink's ledger scope: the tasks its operators start when they
                    // subscribe (an async sink's calls) are the sink stage's.
                    scope.enter(|| (sink.subscribe)());
                    sink.outcome.await
                },
                stage,
            ));
            (sink.node, join)
        })
        .collect();
    let join = runtime.spawn(tracing::Instrument::instrument(
        supervise(running.clone(), tasks, build_failure),
        span,
    ));
    (running, join)
}

/// The longest a pipeline waits for its stages' tasks to end before it resolves anyway (a task
/// stuck in user code that never returns to the scheduler; logged with the stages still running).
const SETTLE_BOUND: Duration = Duration::from_secs(5);

/// Waits until the sinks' tasks still running (`sinks`: an async sink's futures live there) and
/// every stage's tasks have ended (cancel reaches them as they next run), so the books are final
/// when the pipeline resolves: what they held is counted by then.
async fn settle<F: Future>(running: &Running, mut sinks: FuturesUnordered<F>) {
    let stages = &running.probes.stages;
    let all = async {
        while sinks.next().await.is_some() {}
        futures::future::join_all(stages.iter().map(|stage| stage.scope.settled())).await;
    };
    if tokio::time::timeout(SETTLE_BOUND, all).await.is_err() {
        let busy: Vec<&str> = stages
            .iter()
            .zip(running.nodes.iter())
            .filter(|(stage, _)| stage.scope.tasks() > 0)
            .map(|(_, node)| node.name.as_str())
            .collect();
        tracing::warn!(
            ?busy,
            "resolving the pipeline with stages still running tasks after {SETTLE_BOUND:?}: their books may still change"
        );
    }
}

/// Awaits the sinks' tasks (or the abort) and resolves with the pipeline's result; a stage whose
/// build code panicked (`build_failure`) is the result at once.
async fn supervise(
    running: Arc<Running>,
    sinks: Vec<(usize, JoinHandle<Result<(), Error>>)>,
    build_failure: Option<(usize, Error)>,
) -> Result<(), PipelineError> {
    let mut pending: FuturesUnordered<_> = sinks
        .into_iter()
        .map(|(node, join)| async move { (node, join.await) })
        .collect();
    let build_failed = build_failure.is_some();
    let outcome = if let Some((node, error)) = build_failure {
        Err(running.failed(node, error))
    } else {
        loop {
            tokio::select! {
                biased;
                () = running.lifecycle.abort.notified() => {
                    break Err(PipelineError::Aborted { pipeline: running.name.clone() });
                }
                next = pending.next() => match next {
                    None => break Ok(()),
                    Some((_, Ok(Ok(())))) => {}
                    Some((node, Ok(Err(error)))) => break Err(running.failed(node, error)),
                    Some((node, Err(join_error))) => {
                        break Err(running.failed(node, Error::msg(join_error)));
                    }
                },
            }
        }
    };
    if outcome.is_err() {
        running.stop();
        // Resolve only once no sink's code runs: a call under way when the abort came finishes
        // (and is counted) first; the next item sees the halt.
        for slot in &running.lifecycle.sinks {
            SinkSlot::in_call(slot).idle().await;
        }
    }
    // Completed, failed or aborted: the books are final once every stage's tasks have let go
    // (a boundary before a `take` still counts what it held after its sink completed). After a
    // build failure nothing ran: stages built before the failing one hold nothing.
    if !build_failed {
        settle(&running, pending).await;
    }
    match &outcome {
        Ok(()) => tracing::info!("pipeline completed"),
        Err(error) => match error.stage() {
            Some(stage) => tracing::warn!(stage, %error, "pipeline failed"),
            None => tracing::warn!(%error, "pipeline stopped"),
        },
    }
    running.lifecycle.running.store(false, Ordering::Release);
    outcome
}

//! The ingresses of the builder: where the outside world pushes in (in memory, spilling to disk,
//! or durable before the push returns).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_runtime::Publisher;
use weir_runtime::ingress::{self, IngressConfig, IngressHandle, Overflow, SpillFull};
use weir_runtime::ledger;
use weir_runtime::metrics::BufferMetrics;
use weir_spill::{SpillMetrics, SpillQueue, Tail};

use super::{PipelineBuilder, Port, spill_memory};
use crate::graph::{self, ItemType, StageKind};
use crate::inventory::BufferKind;
use crate::wiring::{Closer, Wiring};

impl PipelineBuilder {
    /// Adds an ingress: a bounded queue that callers push into through the returned
    /// [`IngressHandle`], with an explicit [`Overflow`] policy. Items pushed before the pipeline
    /// starts wait in the queue. The ingress closes when [`drain`](crate::PipelineHandle::drain)
    /// is called, or when every clone of the handle is dropped (the pipeline does not keep it
    /// open: a pipeline whose producers are all gone completes).
    pub fn ingress<T: Send + 'static>(
        &mut self,
        name: &str,
        capacity: usize,
        overflow: Overflow,
    ) -> (IngressHandle<T>, Port<T>) {
        // A zero capacity is reported by `build`; meanwhile the handle needs a queue.
        let config = IngressConfig::new(name, capacity.max(1), overflow)
            .expect("a capacity of at least 1 is accepted");
        let (handle, publisher) = ingress::bounded::<T>(config);
        let closer = handle.closer();
        let port = self.add_ingress(
            name,
            capacity,
            graph::overflow_label(&overflow),
            Box::new(move || closer.close()),
            publisher.metrics(),
            publisher,
            None,
        );
        (handle, port)
    }

    /// Adds an ingress that spills to disk instead of shedding: items beyond the queue's memory
    /// part go to `store`'s log and come back in FIFO order as the pipeline catches up (see
    /// [`weir_runtime::ingress::spilling`]); when the disk budget is full too, `when_full`
    /// decides. Open the store first (`SpillQueue::open(dir, config, memory_capacity)`): that is
    /// where a bad directory fails. The stage's snapshot carries the spill counters;
    /// [`drain`](crate::PipelineHandle::drain) delivers what was spilled before completing,
    /// [`abort`](crate::PipelineHandle::abort) leaves it on disk for the next run.
    pub fn ingress_spilling<T>(
        &mut self,
        name: &str,
        store: SpillQueue<T>,
        when_full: SpillFull,
    ) -> (IngressHandle<T>, Port<T>)
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let capacity = store.capacity();
        let spill = store.metrics();
        let memory = spill_memory(&store, 0);
        let detail = match when_full {
            SpillFull::Block { timeout } => format!("spill, block {timeout:?} when full"),
            SpillFull::Reject { .. } => "spill, reject when full".to_owned(),
        };
        let (handle, publisher) = match ingress::spilling(name, store, when_full) {
            Ok(pair) => pair,
            Err(_) => {
                // Only a zero memory capacity is refused; `build` reports it.
                let config = IngressConfig::new(name, 1, Overflow::DropNewest)
                    .expect("a capacity of 1 is accepted");
                ingress::bounded::<T>(config)
            }
        };
        let closer = handle.closer();
        let port = self.add_ingress(
            name,
            capacity,
            detail,
            Box::new(move || closer.close()),
            publisher.metrics(),
            publisher,
            Some(spill),
        );
        self.nodes[port.node].spill = Some(memory);
        (handle, port)
    }

    /// Adds an ingress durable on disk: every push returns once its item is fsynced (see
    /// [`weir_spill::durable`]), and the consumer acknowledges items with the [`Acker`]
    /// (`weir_spill::Acker`) once it has finished with them. Records an earlier run left
    /// unacknowledged come out first. The stage's queue is the log: its depth (pushed, not yet
    /// handed out), refusals (`full` beyond the backlog bound) and rates count toward readiness,
    /// and the snapshot carries the log's counters. [`drain`](crate::PipelineHandle::drain)
    /// closes it (pushes are refused) and delivers what was pushed;
    /// [`abort`](crate::PipelineHandle::abort) leaves it on disk for the next run.
    ///
    /// [`Acker`]: weir_spill::Acker
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use std::time::Duration;
    /// use weir_dsl::Pipeline;
    /// use weir_spill::{SpillConfig, durable};
    /// let dir = tempfile::tempdir().unwrap();
    /// let (orders, tail, acker) = durable::<u64>("orders", dir.path(), SpillConfig::new(), 100).unwrap();
    /// let mut p = Pipeline::builder("shop");
    /// let accepted = p.ingress_durable("orders", tail);
    /// p.sink("db", &accepted, move |_| acker.ack(1).map(|_| ()));
    /// let mut running = p.build().unwrap().start().unwrap();
    /// orders.push(&7).await.unwrap(); // on disk: safe to answer "accepted"
    /// running.drain(Duration::from_secs(5)).await.unwrap();
    /// assert_eq!(orders.backlog(), 0);
    /// # }
    /// ```
    pub fn ingress_durable<T>(&mut self, name: &str, tail: Tail<T>) -> Port<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let handle = tail.handle().clone();
        let capacity = handle.max_backlog().min(usize::MAX as u64) as usize;
        let detail = format!("durable, at most {capacity} unacknowledged");
        let spill = handle.metrics();
        let queue = handle.queue_metrics();
        self.add_ingress(
            name,
            capacity,
            detail,
            Box::new(move || handle.close()),
            queue,
            tail,
            Some(spill),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn add_ingress<T: Send + 'static>(
        &mut self,
        name: &str,
        capacity: usize,
        detail: String,
        closer: Closer,
        metrics: Arc<BufferMetrics>,
        publisher: impl Publisher<T>,
        spill: Option<Arc<SpillMetrics>>,
    ) -> Port<T> {
        self.closers.push(closer);
        let mut node = Self::node(name, StageKind::Ingress, ItemType::of::<T>());
        node.capacity = Some(capacity);
        node.detail = Some(detail);
        let me = self.nodes.len();
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                // Made when the builder was: registered with the stage's ledger here.
                ledger::register(metrics.clone());
                w.offered(me, metrics.clone());
                w.own_buffer(me, BufferKind::Ingress, metrics);
                if let Some(spill) = spill {
                    w.spill(me, spill);
                }
                w.output(me, 0, publisher);
            }),
        );
        self.port(me)
    }
}

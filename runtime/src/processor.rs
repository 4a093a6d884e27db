//! Processors made from operator chains.
//!
//! Operators are publishers generic over their upstream (`source.map(f)`), which is what makes chains
//! fuse. To use an operator where a [`Processor`](crate::Processor) is needed (a graph node with its
//! own input, the TCK's identity-processor verification), put a [`relay`] in front of it: the relay's
//! subscriber end is the processor's input, and the operator chain built on the relay's publisher end
//! is its output.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use weir_runtime::{Publisher, processor, sink, source};
//! // Any chain works; here the identity, to keep the example to the runtime crate.
//! let (input, output) = processor::from_chain(|relay: processor::RelayPublisher<u32>| relay);
//! source::from_iter([1, 2, 3]).subscribe(input);
//! assert_eq!(sink::collect(output).await.unwrap(), vec![1, 2, 3]);
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

/// Builds a processor from an operator chain: `build` receives the relay's publisher end and returns
/// the chain's output. The result's first element subscribes to the upstream.
pub fn from_chain<In, Out, P>(
    build: impl FnOnce(RelayPublisher<In>) -> P,
) -> (RelaySubscriber<In>, P)
where
    In: Send + 'static,
    P: Publisher<Out>,
{
    let (input, relay) = relay();
    (input, build(relay))
}

/// A pass-through pair: what the subscriber end receives, the publisher end's subscriber gets, in
/// whichever order the two ends are subscribed. After the hand-over the subscriber end owns the
/// downstream directly: no lock per item.
pub fn relay<T: Send + 'static>() -> (RelaySubscriber<T>, RelayPublisher<T>) {
    let shared = Arc::new(Mutex::new(Handover {
        downstream: None,
        subscription: None,
        terminal: None,
        attached: false,
    }));
    (
        RelaySubscriber {
            shared: shared.clone(),
            downstream: None,
            subscribed: false,
        },
        RelayPublisher { shared },
    )
}

/// What the two ends exchange until the downstream is owned by the subscriber end.
struct Handover<T> {
    /// The downstream, waiting for the upstream's `on_subscribe`.
    downstream: Option<Box<dyn Subscriber<T>>>,
    /// The upstream's subscription, waiting for a downstream.
    subscription: Option<Subscription>,
    /// A terminal signal that arrived before any downstream.
    terminal: Option<Result<(), Error>>,
    /// Whether a downstream has subscribed (the publisher end serves one).
    attached: bool,
}

/// The input end of a [`relay`].
pub struct RelaySubscriber<T> {
    shared: Arc<Mutex<Handover<T>>>,
    /// The downstream once handed over.
    downstream: Option<Box<dyn Subscriber<T>>>,
    subscribed: bool,
}

impl<T> fmt::Debug for RelaySubscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySubscriber")
            .field("attached", &self.downstream.is_some())
            .finish()
    }
}

impl<T: Send + 'static> RelaySubscriber<T> {
    /// The downstream, taking it over from the hand-over slot if it has arrived.
    #[inline]
    fn downstream(&mut self) -> Option<&mut Box<dyn Subscriber<T>>> {
        if self.downstream.is_none() {
            self.downstream = self.shared.lock().unwrap().downstream.take();
        }
        self.downstream.as_mut()
    }

    fn terminate(&mut self, result: Result<(), Error>) {
        if self.downstream.is_none() {
            let mut handover = self.shared.lock().unwrap();
            match handover.downstream.take() {
                Some(downstream) => self.downstream = Some(downstream),
                None => {
                    // No downstream yet: it gets the signal when it subscribes.
                    handover.terminal = Some(result);
                    return;
                }
            }
        }
        if let Some(mut downstream) = self.downstream.take() {
            match result {
                Ok(()) => downstream.on_complete(),
                Err(error) => downstream.on_error(error),
            }
        }
    }
}

impl<T: Send + 'static> Subscriber<T> for RelaySubscriber<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.subscribed {
            subscription.cancel(); // rule 2.5
            return;
        }
        self.subscribed = true;
        let mut handover = self.shared.lock().unwrap();
        match handover.downstream.take() {
            Some(downstream) => {
                drop(handover);
                self.downstream
                    .insert(downstream)
                    .on_subscribe(subscription);
            }
            None => handover.subscription = Some(subscription),
        }
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        if let Some(downstream) = self.downstream() {
            downstream.on_next(item);
        }
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        match self.downstream() {
            Some(downstream) => downstream.try_on_next(item),
            None => true,
        }
    }

    fn on_error(&mut self, error: Error) {
        self.terminate(Err(error));
    }

    fn on_complete(&mut self) {
        self.terminate(Ok(()));
    }

    fn on_flush(&mut self) {
        if let Some(downstream) = self.downstream() {
            downstream.on_flush();
        }
    }
}

/// The output end of a [`relay`]. `Clone`, but it serves one subscriber: a second one gets
/// [`ErrorKind::AlreadySubscribed`].
pub struct RelayPublisher<T> {
    shared: Arc<Mutex<Handover<T>>>,
}

impl<T> Clone for RelayPublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for RelayPublisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelayPublisher")
    }
}

impl<T: Send + 'static> Publisher<T> for RelayPublisher<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let mut handover = self.shared.lock().unwrap();
        if handover.attached {
            drop(handover);
            reject(subscriber, Error::new(ErrorKind::AlreadySubscribed));
            return;
        }
        handover.attached = true;
        let mut downstream: Box<dyn Subscriber<T>> = Box::new(subscriber);
        let Some(upstream) = handover.subscription.take() else {
            // The upstream comes later: the subscriber end hands the downstream its subscription.
            handover.downstream = Some(downstream);
            return;
        };
        drop(handover);
        // The upstream is already there. Call on_subscribe without the lock (the downstream may
        // request at once, and a synchronous upstream would emit into the subscriber end, which
        // takes the lock), but hold its requests back until the downstream is handed over.
        let deferred = Arc::new(Deferred {
            upstream,
            state: Mutex::new(DeferredState::Holding {
                requested: Vec::new(),
                cancelled: false,
            }),
        });
        downstream.on_subscribe(Subscription::new(deferred.clone()));
        let terminal = {
            let mut handover = self.shared.lock().unwrap();
            match handover.terminal.take() {
                Some(terminal) => Some((terminal, downstream)),
                None => {
                    handover.downstream = Some(downstream);
                    None
                }
            }
        };
        match terminal {
            Some((Ok(()), mut downstream)) => downstream.on_complete(),
            Some((Err(error), mut downstream)) => downstream.on_error(error),
            None => deferred.release(),
        }
    }
}

/// The subscription a late downstream gets: it holds requests back until the downstream has been
/// handed over to the subscriber end, then passes everything straight through.
struct Deferred {
    upstream: Subscription,
    state: Mutex<DeferredState>,
}

enum DeferredState {
    Holding {
        requested: Vec<u64>,
        cancelled: bool,
    },
    Through,
}

impl Deferred {
    fn release(&self) {
        let held = std::mem::replace(&mut *self.state.lock().unwrap(), DeferredState::Through);
        if let DeferredState::Holding {
            requested,
            cancelled,
        } = held
        {
            for n in requested {
                self.upstream.request(n);
            }
            if cancelled {
                self.upstream.cancel();
            }
        }
    }
}

impl crate::RawSubscription for Deferred {
    fn request(&self, n: u64) {
        if let DeferredState::Holding { requested, .. } = &mut *self.state.lock().unwrap() {
            requested.push(n); // kept as calls, so request(0) still reaches the upstream as such
            return;
        }
        self.upstream.request(n);
    }

    fn cancel(&self) {
        if let DeferredState::Holding { cancelled, .. } = &mut *self.state.lock().unwrap() {
            *cancelled = true;
            return;
        }
        self.upstream.cancel();
    }
}

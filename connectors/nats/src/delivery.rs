//! Items that carry their acknowledgement: [`Delivery`] and its [`Ack`].
//!
//! A JetStream message must be acknowledged once the pipeline is done with it, or the broker
//! delivers it again after the consumer's ack wait (at-least-once). So every item the source emits
//! is a `Delivery<T>`: the payload plus the handle that settles it. The handle travels with the
//! payload through operators ([`Delivery::map`] transforms the payload and keeps the handle),
//! batches merge their members' handles ([`Delivery::batch`]: one decision settles them all), and
//! whoever finishes with the item decides:
//!
//! - [`ack`](Delivery::ack): done, never deliver again (a sink does it once its write is confirmed);
//! - [`nak`](Delivery::nak): failed, deliver again (now or after a delay);
//! - [`term`](Delivery::term): never deliver again, not processed (a poison message);
//! - [`filtered`](Delivery::filtered): dropped on purpose by a filter: acknowledged, counted apart.
//!
//! A handle dropped without a decision (an item lost in a cancelled stage, a filter that forgot to
//! decide) is never acknowledged by accident: it is counted as abandoned and nak'ed, so the broker
//! delivers the message again at once. Every decision is counted per message in the source's
//! [`SourceMetrics`].
//!
//! Decisions are synchronous (they fit `on_next` and `filter_map` closures): they queue a small
//! message for the source's acker task, which sends them in order. The queue cannot grow past the
//! number of messages in the pipeline, since every entry is the settlement of one delivered
//! message, and deliveries are bounded by the pipeline's demand.
//!
//! ```
//! use weir_nats::delivery::Delivery;
//! let order = Delivery::detached("42"); // a delivery without a broker, as in tests
//! let parsed = order.map(|text| text.parse::<u32>().unwrap());
//! assert_eq!(*parsed.value(), 42);
//! parsed.ack();
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Subject;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::SourceMetrics;

/// How a message is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Ack,
    Filtered,
    Nak(Option<Duration>),
    Term,
    Progress,
    Abandoned,
}

impl Decision {
    /// The body of the acknowledgement message (JetStream's ack protocol).
    pub(crate) fn payload(self) -> Bytes {
        match self {
            Decision::Ack | Decision::Filtered => Bytes::from_static(b"+ACK"),
            Decision::Nak(None) | Decision::Abandoned => Bytes::from_static(b"-NAK"),
            Decision::Nak(Some(delay)) => {
                Bytes::from(format!("-NAK {{\"delay\":{}}}", delay.as_nanos()))
            }
            Decision::Term => Bytes::from_static(b"+TERM"),
            Decision::Progress => Bytes::from_static(b"+WPI"),
        }
    }
}

/// The source's side of acknowledgements: the queue to its acker task and the counters.
#[derive(Debug)]
pub(crate) struct Acker {
    queue: mpsc::UnboundedSender<(Subject, Decision)>,
    metrics: Arc<SourceMetrics>,
}

impl Acker {
    pub(crate) fn new(
        queue: mpsc::UnboundedSender<(Subject, Decision)>,
        metrics: Arc<SourceMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self { queue, metrics })
    }

    pub(crate) fn send(&self, reply: Subject, decision: Decision) {
        let m = &self.metrics;
        let counter = match decision {
            Decision::Ack => &m.acked,
            Decision::Filtered => &m.filtered,
            Decision::Nak(_) => &m.naked,
            Decision::Term => &m.termed,
            Decision::Abandoned => &m.abandoned,
            Decision::Progress => &m.progress,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.queue.send((reply, decision)).is_err() {
            // The source's acker task is gone (its runtime shut down): the broker redelivers
            // the message after the ack wait.
            m.ack_send_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Acker {
    /// Nak's a message that is not handed downstream (no demand for it, or the subscriber left);
    /// the caller counts it.
    pub(crate) fn release(&self, reply: Subject) {
        if self.queue.send((reply, Decision::Nak(None))).is_err() {
            self.metrics.ack_send_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Target {
    /// Already settled, or never tied to a broker.
    None,
    /// One delivered message: its ack subject and the source that delivered it.
    One(Subject, Arc<Acker>),
    /// The members of a batch.
    Many(Vec<Ack>),
}

/// The settlement handle of one delivered message (or of a batch of them). See the
/// [module documentation](self) for what each decision means; dropping it undecided nak's.
pub struct Ack {
    target: Target,
}

impl Ack {
    pub(crate) fn new(reply: Subject, acker: Arc<Acker>) -> Self {
        Self {
            target: Target::One(reply, acker),
        }
    }

    /// A handle with nothing to settle (items that did not come from a broker).
    pub fn detached() -> Self {
        Self {
            target: Target::None,
        }
    }

    /// How many broker messages this handle settles.
    pub fn messages(&self) -> usize {
        match &self.target {
            Target::None => 0,
            Target::One(..) => 1,
            Target::Many(members) => members.iter().map(Ack::messages).sum(),
        }
    }

    /// Where the message came from (`None` for a batch or a detached handle).
    pub fn info(&self) -> Option<DeliveryInfo<'_>> {
        match &self.target {
            Target::One(reply, _) => DeliveryInfo::parse(reply),
            _ => None,
        }
    }

    fn decide(&mut self, decision: Decision) {
        match std::mem::replace(&mut self.target, Target::None) {
            Target::None => {}
            Target::One(reply, acker) => acker.send(reply, decision),
            Target::Many(members) => {
                for mut member in members {
                    member.decide(decision);
                }
            }
        }
    }

    /// Processed: the broker will not deliver it again.
    pub fn ack(mut self) {
        self.decide(Decision::Ack);
    }

    /// Dropped on purpose by a filter: acknowledged like [`ack`](Self::ack), counted as filtered.
    pub fn filtered(mut self) {
        self.decide(Decision::Filtered);
    }

    /// Failed: the broker delivers it again, after `delay` if given (or at once).
    pub fn nak(mut self, delay: Option<Duration>) {
        self.decide(Decision::Nak(delay));
    }

    /// Never deliver it again, though it was not processed (a message that cannot be handled).
    pub fn term(mut self) {
        self.decide(Decision::Term);
    }

    /// Still working on it: restarts the ack wait (a long-running step). Not a decision.
    pub fn progress(&self) {
        match &self.target {
            Target::None => {}
            Target::One(reply, acker) => acker.send(reply.clone(), Decision::Progress),
            Target::Many(members) => members.iter().for_each(Ack::progress),
        }
    }
}

impl Drop for Ack {
    /// Undecided: counted as abandoned and nak'ed, so the message is delivered again at once.
    fn drop(&mut self) {
        self.decide(Decision::Abandoned);
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::None => f.write_str("Ack(settled)"),
            Target::One(reply, _) => write!(f, "Ack({reply})"),
            Target::Many(members) => write!(f, "Ack({} messages)", members.len()),
        }
    }
}

/// What the broker says about a delivered message (parsed from its ack subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryInfo<'a> {
    /// The stream it is stored in.
    pub stream: &'a str,
    /// The consumer that delivered it.
    pub consumer: &'a str,
    /// Its sequence number in the stream: the same for every delivery of this message.
    pub stream_sequence: u64,
    /// The consumer's delivery sequence number.
    pub consumer_sequence: u64,
    /// How many times it was delivered (1 the first time).
    pub delivered: u64,
    /// Messages left for the consumer when this one was delivered.
    pub pending: u64,
}

impl<'a> DeliveryInfo<'a> {
    /// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`
    /// (and the longer form with a domain and an account hash after `$JS.ACK`).
    fn parse(reply: &'a str) -> Option<Self> {
        let tokens: Vec<&str> = reply.split('.').collect();
        if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        let at = if tokens.len() == 9 { 2 } else { 4 };
        let number = |k: usize| tokens.get(at + k)?.parse::<u64>().ok();
        Some(Self {
            stream: tokens.get(at)?,
            consumer: tokens.get(at + 1)?,
            delivered: number(2)?,
            stream_sequence: number(3)?,
            consumer_sequence: number(4)?,
            pending: number(6)?,
        })
    }
}

/// A payload with the handle that settles it with the broker. See the [module documentation](self).
pub struct Delivery<T> {
    value: T,
    ack: Ack,
}

impl<T> Delivery<T> {
    pub(crate) fn new(value: T, ack: Ack) -> Self {
        Self { value, ack }
    }

    /// A delivery that settles nothing (items from elsewhere fed to a sink that takes deliveries).
    pub fn detached(value: T) -> Self {
        Self::new(value, Ack::detached())
    }

    /// The payload.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The payload, to change in place.
    pub fn value_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// Where the message came from (`None` for a batch or a detached delivery).
    pub fn info(&self) -> Option<DeliveryInfo<'_>> {
        self.ack.info()
    }

    /// Transforms the payload; the settlement handle stays with it.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Delivery<U> {
        let (value, ack) = self.into_parts();
        Delivery::new(f(value), ack)
    }

    /// The payload and its handle, to settle after using the payload.
    pub fn into_parts(self) -> (T, Ack) {
        (self.value, self.ack)
    }

    /// Acknowledges (see [`Ack::ack`]).
    pub fn ack(self) {
        self.ack.ack();
    }

    /// Acknowledges as filtered out (see [`Ack::filtered`]).
    pub fn filtered(self) {
        self.ack.filtered();
    }

    /// Asks for redelivery (see [`Ack::nak`]).
    pub fn nak(self, delay: Option<Duration>) {
        self.ack.nak(delay);
    }

    /// Stops redelivery without processing (see [`Ack::term`]).
    pub fn term(self) {
        self.ack.term();
    }

    /// One delivery of all `members`' payloads whose handle settles every member: what a
    /// `batch` or `chunks` stage's output becomes.
    ///
    /// ```
    /// use weir_nats::delivery::Delivery;
    /// let batch = Delivery::batch(vec![Delivery::detached(1), Delivery::detached(2)]);
    /// assert_eq!(batch.value(), &vec![1, 2]);
    /// batch.ack(); // settles both
    /// ```
    pub fn batch(members: Vec<Delivery<T>>) -> Delivery<Vec<T>> {
        let mut values = Vec::with_capacity(members.len());
        let mut acks = Vec::with_capacity(members.len());
        for member in members {
            let (value, ack) = member.into_parts();
            values.push(value);
            if !matches!(ack.target, Target::None) {
                acks.push(ack);
            }
        }
        Delivery::new(
            values,
            Ack {
                target: Target::Many(acks),
            },
        )
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("value", &self.value)
            .field("ack", &self.ack)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_ack_subject_forms() {
        let short =
            DeliveryInfo::parse("$JS.ACK.orders.workers.2.100.7.1790230470084404000.42").unwrap();
        assert_eq!(
            (short.stream, short.consumer, short.delivered),
            ("orders", "workers", 2)
        );
        assert_eq!(
            (
                short.stream_sequence,
                short.consumer_sequence,
                short.pending
            ),
            (100, 7, 42)
        );
        let long =
            DeliveryInfo::parse("$JS.ACK.hub.ACCHASH.orders.workers.1.5.3.1790230470084404000.0.x")
                .unwrap();
        assert_eq!(
            (long.stream, long.stream_sequence, long.pending),
            ("orders", 5, 0)
        );
        assert!(DeliveryInfo::parse("_INBOX.abc").is_none());
    }

    #[tokio::test]
    async fn decisions_are_counted_once_and_drop_naks() {
        let metrics = Arc::new(SourceMetrics::new("test"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acker = Acker::new(tx, metrics.clone());
        let delivery = |n: u64| {
            let reply = Subject::from(format!("$JS.ACK.s.c.1.{n}.{n}.0.0"));
            Delivery::new(n, Ack::new(reply, acker.clone()))
        };
        delivery(1).ack();
        delivery(2).filtered();
        delivery(3).nak(Some(Duration::from_millis(5)));
        delivery(4).term();
        drop(delivery(5));
        Delivery::batch(vec![delivery(6), delivery(7), Delivery::detached(8)]).ack();
        let snapshot = metrics.snapshot();
        assert_eq!(
            (
                snapshot.acked,
                snapshot.filtered,
                snapshot.naked,
                snapshot.termed
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(snapshot.abandoned, 1);
        let mut sent = Vec::new();
        while let Ok((reply, decision)) = rx.try_recv() {
            sent.push((
                DeliveryInfo::parse(&reply).unwrap().stream_sequence,
                decision.payload(),
            ));
        }
        assert_eq!(
            sent,
            vec![
                (1, Bytes::from_static(b"+ACK")),
                (2, Bytes::from_static(b"+ACK")),
                (3, Bytes::from("-NAK {\"delay\":5000000}")),
                (4, Bytes::from_static(b"+TERM")),
                (5, Bytes::from_static(b"-NAK")),
                (6, Bytes::from_static(b"+ACK")),
                (7, Bytes::from_static(b"+ACK")),
            ]
        );
    }
}

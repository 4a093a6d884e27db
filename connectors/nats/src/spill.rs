//! [`JetStreamSpillStore`]: the runtime's [`SpillStore`] backed by a JetStream stream, so an
//! ingress overflows to the broker instead of a local disk.
//!
//! The ingress calls a spill store synchronously, under its own lock, so the store never waits
//! on the network there. It keeps four parts, all counted by [`SpillStore::len`] and handed out
//! in FIFO order:
//!
//! 1. **memory**: up to `memory_capacity` items, the oldest ones (once anything is spilled, new
//!    items follow it to the broker until the broker part is empty, which keeps the order);
//! 2. **staged**: spilled items, encoded (postcard), waiting for the writer task; bounded with
//!    the rest of the durable part by `max_records`, beyond which a push is refused as full;
//! 3. **in the broker**: the writer publishes staged items in messages of up to
//!    `records_per_message` records, one message at a time (a retry reuses the message id, so the
//!    stream's duplicate window stores it once and the order stays that of the pushes);
//! 4. **read ahead**: the reader task fetches stored messages through a durable consumer while
//!    fewer than `records_per_message` records wait, decoded on take. A message is acknowledged
//!    (and removed: the stream is a work queue) once all its records were taken.
//!
//! When nothing is in the broker or on its way, staged items are taken directly. Items in memory
//! and staged (not yet confirmed by the broker) are lost if the process ends. When the queue over
//! the store ends, the items in memory are lost with it and counted so ([`SpillStore::in_memory`]);
//! staged ones are still published by the writer, held for the next run (once the writer has given
//! up on the broker, they count with the memory part, and are taken directly while nothing older
//! is in the broker). [`SpillSync::flushed`]
//! waits until everything spilled is stored. Messages left from an earlier run come out first;
//! records taken but not yet acknowledged when a process dies come again (at-least-once). Until a
//! message left from an earlier run is read back, it counts as one item in [`SpillStore::len`];
//! their age ([`SpillStore::oldest_age`]) is that of the oldest message in the stream.
//!
//! The reader fills the read-ahead in the background: it calls the function given to
//! [`JetStreamSpillStore::on_available`] (or, behind a queue or an ingress, the queue's wake given
//! through [`SpillStore::set_wake`]) when records arrive, so whoever owns the store looks at it
//! again and emits them if there is demand.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, Subject};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use weir_runtime::Error;
use weir_runtime::queue::{SpillStore, StoreRefusal};

use crate::NatsError;

const RUN_HEADER: &str = "Weir-Spill-Run";
const RECORDS_HEADER: &str = "Weir-Spill-Records";

/// Settings of a [`JetStreamSpillStore`].
#[derive(Debug, Clone)]
pub struct SpillStoreConfig {
    name: String,
    memory_capacity: usize,
    max_records: u64,
    records_per_message: usize,
    replicas: usize,
    give_up_after: Duration,
}

impl SpillStoreConfig {
    /// A store named `name`: its stream is `WEIR_SPILL_<name>` (subject `weir.spill.<name>`,
    /// consumer `reader`), created if missing. `memory_capacity` items stay in memory (at least
    /// 1). Defaults: up to 1,000,000 records in the broker, 256 per message, one replica, writes
    /// retried for 60 s before the store fails.
    pub fn new(name: &str, memory_capacity: usize) -> Self {
        Self {
            name: name.to_owned(),
            memory_capacity,
            max_records: 1_000_000,
            records_per_message: 256,
            replicas: 1,
            give_up_after: Duration::from_secs(60),
        }
    }

    /// The most records spilled at once (staged, stored, read ahead): the store's budget.
    pub fn max_records(mut self, records: u64) -> Self {
        self.max_records = records;
        self
    }

    /// Records packed into one broker message (at least 1).
    pub fn records_per_message(mut self, records: usize) -> Self {
        self.records_per_message = records.max(1);
        self
    }

    /// Replicas of the stream (3 on a cluster keeps spilled items through a lost server).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How long the writer retries a message before the store fails.
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = limit;
        self
    }

    fn stream(&self) -> String {
        format!("WEIR_SPILL_{}", self.name)
    }

    fn subject(&self) -> String {
        format!("weir.spill.{}", self.name)
    }
}

/// A record read back, and the message it came in.
struct Record {
    bytes: Bytes,
    message: u64,
}

/// A message read back whose records are not all taken yet.
struct Unsettled {
    id: u64,
    remaining: usize,
    reply: Option<Subject>,
}

/// The durable part, shared by the store (under the ingress's lock) and its two tasks.
#[derive(Default)]
struct Durable {
    staged: VecDeque<Bytes>,
    /// Records in the message the writer is publishing.
    writing: u64,
    /// Records stored in the broker by this run and not yet read back. Signed: the reader may
    /// read a message back before the writer saw its confirmation (then it is briefly negative
    /// while `writing` still counts the same records, and the sum stays right).
    in_broker: i64,
    /// Messages from an earlier run not yet read back.
    leftover: u64,
    /// Messages of this run read back while an earlier run's are still to come (given back by a
    /// reader that closed, they return late): held until those are read, so order is kept. Their
    /// records still count in `in_broker`.
    parked: VecDeque<(Option<Subject>, Vec<Bytes>)>,
    read_ahead: VecDeque<Record>,
    unsettled: VecDeque<Unsettled>,
    /// Ack subjects of messages whose records were all taken.
    to_ack: Vec<Subject>,
    next_message: u64,
    failure: Option<Error>,
    closed: bool,
}

impl Durable {
    /// Queues the records of one message read back for taking.
    fn read_back(&mut self, reply: Option<Subject>, records: Vec<Bytes>) {
        self.next_message += 1;
        let id = self.next_message;
        self.unsettled.push_back(Unsettled {
            id,
            remaining: records.len(),
            reply,
        });
        self.read_ahead.extend(
            records
                .into_iter()
                .map(|bytes| Record { bytes, message: id }),
        );
    }

    /// One of the messages an earlier run left came back (or turned out corrupt): once the last
    /// has, this run's messages parked behind them follow.
    fn leftover_done(&mut self) {
        self.leftover = self.leftover.saturating_sub(1);
        if self.leftover == 0 {
            while let Some((reply, records)) = self.parked.pop_front() {
                self.in_broker -= records.len() as i64;
                self.read_back(reply, records);
            }
        }
    }

    /// Records in the durable part (an earlier run's unread message counts as one).
    fn len(&self) -> u64 {
        let signed = self.writing as i64 + self.in_broker;
        self.staged.len() as u64
            + u64::try_from(signed).unwrap_or(0)
            + self.leftover
            + self.read_ahead.len() as u64
    }
}

struct Shared {
    durable: Mutex<Durable>,
    wake_writer: Notify,
    wake_reader: Notify,
    stored: Notify,
    available: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    spilled: AtomicU64,
    messages_written: AtomicU64,
    retries: AtomicU64,
}

impl Shared {
    fn notify_available(&self) {
        let available = self.available.lock().unwrap().clone();
        if let Some(available) = available {
            available();
        }
    }
}

/// A [`SpillStore`] in a JetStream stream; see the [module documentation](self).
pub struct JetStreamSpillStore<T> {
    memory: VecDeque<T>,
    capacity: usize,
    max_records: u64,
    shared: Arc<Shared>,
    /// How old the oldest message an earlier run left was at open (the stream's first message
    /// time), and when that was: the age of the records waiting from then.
    left_since: Option<(Duration, Instant)>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for JetStreamSpillStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let durable = self.shared.durable.lock().unwrap();
        f.debug_struct("JetStreamSpillStore")
            .field("memory", &self.memory.len())
            .field("staged", &durable.staged.len())
            .field("writing", &durable.writing)
            .field("in_broker", &durable.in_broker)
            .field("leftover", &durable.leftover)
            .field("read_ahead", &durable.read_ahead.len())
            .finish()
    }
}

/// Waits for a [`JetStreamSpillStore`]'s spilled items to be stored in the broker.
#[derive(Clone)]
pub struct SpillSync(Arc<Shared>);

impl fmt::Debug for SpillSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpillSync")
    }
}

impl SpillSync {
    /// Resolves once nothing spilled is waiting to be written (or the store failed).
    pub async fn flushed(&self) -> Result<(), Error> {
        loop {
            let stored = self.0.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            {
                let durable = self.0.durable.lock().unwrap();
                if let Some(error) = &durable.failure {
                    return Err(error.clone());
                }
                if durable.staged.is_empty() && durable.writing == 0 {
                    return Ok(());
                }
            }
            stored.await;
        }
    }

    /// Records spilled (sent to the durable part) so far.
    pub fn spilled(&self) -> u64 {
        self.0.spilled.load(Ordering::Relaxed)
    }

    /// Broker messages written so far, and publish attempts repeated.
    pub fn writes(&self) -> (u64, u64) {
        (
            self.0.messages_written.load(Ordering::Relaxed),
            self.0.retries.load(Ordering::Relaxed),
        )
    }
}

impl<T> JetStreamSpillStore<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens the store: creates its stream (a file-backed work queue) and consumer if missing and
    /// starts its writer and reader tasks (call it within a tokio runtime). Messages left by an
    /// earlier run are handed out first.
    pub async fn open(
        jetstream: &jetstream::Context,
        config: SpillStoreConfig,
    ) -> Result<Self, NatsError> {
        if config.memory_capacity == 0 {
            return Err(NatsError::broker(
                format!("open spill store `{}`", config.name),
                std::io::Error::other("a spill store needs a memory capacity of at least 1"),
            ));
        }
        let stream_name = config.stream();
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: stream_name.clone(),
                subjects: vec![config.subject()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|error| NatsError::broker(format!("create stream `{stream_name}`"), error))?;
        let reader: PullConsumer = stream
            .get_or_create_consumer(
                "reader",
                consumer::pull::Config {
                    durable_name: Some("reader".to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| {
                NatsError::broker(format!("create the reader of `{stream_name}`"), error)
            })?;
        let info = reader.get_info().await.map_err(|error| {
            NatsError::broker(format!("read the reader of `{stream_name}`"), error)
        })?;
        let leftover = info.num_pending + info.num_ack_pending as u64;
        // In a work queue every message still in the stream is an earlier run's: the first is
        // the oldest.
        let state = &stream.cached_info().state;
        let left_since = (leftover > 0 && state.messages > 0)
            .then(|| async_nats::datetime::now() - state.first_timestamp)
            .and_then(|age| Duration::try_from(age).ok())
            .map(|age| (age, Instant::now()));
        let client = jetstream.client();
        let run: Arc<str> = client.new_inbox().replace("_INBOX.", "").into();
        let shared = Arc::new(Shared {
            durable: Mutex::new(Durable {
                leftover,
                ..Durable::default()
            }),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
            stored: Notify::new(),
            available: Mutex::new(None),
            spilled: AtomicU64::new(0),
            messages_written: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        });
        tokio::spawn(write(
            jetstream.clone(),
            Subject::from(config.subject()),
            run.clone(),
            config.clone(),
            shared.clone(),
        ));
        tokio::spawn(read(client, reader, run, shared.clone()));
        shared.wake_reader.notify_one();
        Ok(Self {
            memory: VecDeque::with_capacity(config.memory_capacity.min(4096)),
            capacity: config.memory_capacity,
            max_records: config.max_records,
            shared,
            left_since,
            _items: PhantomData,
        })
    }

    /// A handle to wait until what was spilled is stored, and to read the write counters.
    pub fn sync(&self) -> SpillSync {
        SpillSync(self.shared.clone())
    }

    /// Sets what to call when records read back from the broker become available to take (an
    /// ingress wakes its emitter there).
    pub fn on_available(&mut self, available: impl Fn() + Send + Sync + 'static) {
        *self.shared.available.lock().unwrap() = Some(Arc::new(available));
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, Error> {
        postcard::from_bytes(bytes).map_err(|source| {
            Error::failed(NatsError::Codec {
                action: "decode a record of the spill store".to_owned(),
                source,
            })
        })
    }
}

impl<T> Drop for JetStreamSpillStore<T> {
    fn drop(&mut self) {
        self.shared.durable.lock().unwrap().closed = true;
        self.shared.wake_writer.notify_one();
        self.shared.wake_reader.notify_one();
    }
}

impl<T> SpillStore<T> for JetStreamSpillStore<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn set_wake(&mut self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.on_available(move || wake());
    }

    fn memory_capacity(&self) -> usize {
        self.capacity
    }

    /// The age of the oldest message an earlier run left in the stream (its time in the
    /// stream), while any of them is still to be read back.
    fn oldest_age(&self) -> Option<Duration> {
        if self.shared.durable.lock().unwrap().leftover == 0 {
            return None;
        }
        self.left_since
            .map(|(age, at)| age.saturating_add(at.elapsed()))
    }

    fn push(&mut self, item: T) -> Result<bool, (T, StoreRefusal)> {
        let mut durable = self.shared.durable.lock().unwrap();
        if let Some(error) = &durable.failure {
            return Err((item, StoreRefusal::Failed(error.clone())));
        }
        let spilling = durable.len() > 0;
        if !spilling && self.memory.len() < self.capacity {
            self.memory.push_back(item);
            return Ok(false);
        }
        if durable.len() >= self.max_records {
            return Err((item, StoreRefusal::Full));
        }
        let record = match postcard::to_stdvec(&item) {
            Ok(record) => record,
            Err(source) => {
                let error = NatsError::Codec {
                    action: "encode an item for the spill store".to_owned(),
                    source,
                };
                return Err((item, StoreRefusal::Failed(Error::failed(error))));
            }
        };
        durable.staged.push_back(Bytes::from(record));
        drop(durable);
        self.shared.spilled.fetch_add(1, Ordering::Relaxed);
        self.shared.wake_writer.notify_one();
        Ok(true)
    }

    fn take_into(&mut self, max: usize, out: &mut VecDeque<T>) -> Result<usize, Error> {
        let mut taken = 0;
        while taken < max {
            let Some(item) = self.memory.pop_front() else {
                break;
            };
            out.push_back(item);
            taken += 1;
        }
        if taken == max {
            return Ok(taken);
        }
        let mut durable = self.shared.durable.lock().unwrap();
        let mut settled = false;
        while taken < max {
            if let Some(record) = durable.read_ahead.pop_front() {
                let item = self.decode(&record.bytes)?;
                out.push_back(item);
                taken += 1;
                let front = durable
                    .unsettled
                    .front_mut()
                    .filter(|message| message.id == record.message)
                    .expect("records come out in the order of their messages");
                front.remaining -= 1;
                if front.remaining == 0 {
                    let message = durable.unsettled.pop_front().expect("just seen");
                    durable.to_ack.extend(message.reply);
                    settled = true;
                }
            } else if durable.writing == 0 && durable.in_broker == 0 && durable.leftover == 0 {
                // Nothing older is on its way through the broker: staged items go out directly.
                // Decoded before it leaves: one that does not decode stays, counted.
                let Some(record) = durable.staged.front() else {
                    break;
                };
                out.push_back(self.decode(record)?);
                durable.staged.pop_front();
                taken += 1;
            } else {
                break;
            }
        }
        let refill = durable.read_ahead.len() < durable.staged.len().max(1);
        drop(durable);
        if settled || refill {
            self.shared.wake_reader.notify_one();
        }
        Ok(taken)
    }

    fn len(&self) -> u64 {
        self.memory.len() as u64 + self.shared.durable.lock().unwrap().len()
    }

    /// The memory part, and the staged items once the writer has given up: until then they are
    /// still published by the writer after the queue ends (held: the next run finds them), lost
    /// only if the process ends first.
    fn in_memory(&self) -> usize {
        let durable = self.shared.durable.lock().unwrap();
        let staged = if durable.failure.is_some() {
            durable.staged.len()
        } else {
            0
        };
        self.memory.len() + staged
    }

    fn flush(&mut self) -> Result<(), Error> {
        // The writer publishes as soon as it can; waking it is all a non-blocking flush can do
        // (`SpillSync::flushed` waits for it).
        self.shared.wake_writer.notify_one();
        match &self.shared.durable.lock().unwrap().failure {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// Frames records as `u32` little-endian length + bytes.
fn frame(records: &[Bytes]) -> Bytes {
    let mut payload = BytesMut::with_capacity(records.iter().map(|r| r.len() + 4).sum());
    for record in records {
        payload.put_u32_le(record.len() as u32);
        payload.put_slice(record);
    }
    payload.freeze()
}

fn unframe(payload: &Bytes) -> Option<Vec<Bytes>> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let len = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        records.push(
            payload.slice(
                at + 4
                    ..at.checked_add(4 + len)
                        .filter(|&end| end <= payload.len())?,
            ),
        );
        at += 4 + len;
    }
    Some(records)
}

/// The writer task: publishes staged records in order, a message at a time.
async fn write(
    jetstream: jetstream::Context,
    subject: Subject,
    run: Arc<str>,
    config: SpillStoreConfig,
    shared: Arc<Shared>,
) {
    let mut sequence = 0u64;
    loop {
        let records: Vec<Bytes> = {
            let mut durable = shared.durable.lock().unwrap();
            if durable.staged.is_empty() && durable.closed {
                // Everything is stored: a `flushed` still waiting (the store is gone) hears it.
                drop(durable);
                shared.stored.notify_waiters();
                return;
            }
            let n = durable.staged.len().min(config.records_per_message);
            durable.writing = n as u64;
            durable.staged.drain(..n).collect()
        };
        if records.is_empty() {
            shared.stored.notify_waiters();
            shared.wake_writer.notified().await;
            continue;
        }
        sequence += 1;
        let mut headers = HeaderMap::new();
        headers.insert(RUN_HEADER, run.as_ref());
        headers.insert(RECORDS_HEADER, records.len().to_string().as_str());
        let payload = frame(&records);
        let id = format!("{run}-{sequence}");
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(&id);
            let attempt = async {
                jetstream
                    .send_publish(subject.clone(), publish)
                    .await?
                    .await
            };
            match attempt.await {
                Ok(_) => break,
                Err(error) if started.elapsed() < config.give_up_after => {
                    tracing::debug!(%error, "spill write failed, retrying");
                    shared.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    let error =
                        NatsError::broker(format!("write to spill store `{}`", config.name), error);
                    let mut durable = shared.durable.lock().unwrap();
                    // The message's records go back in front of the staged ones: still the
                    // store's, in order, to be taken directly (or counted lost with the memory
                    // part if the queue ends), not dropped with this task.
                    for record in records.into_iter().rev() {
                        durable.staged.push_front(record);
                    }
                    durable.writing = 0;
                    durable.failure = Some(error.in_stage(&config.name));
                    drop(durable);
                    shared.stored.notify_waiters();
                    return;
                }
            }
        }
        {
            let mut durable = shared.durable.lock().unwrap();
            durable.writing = 0;
            durable.in_broker += records.len() as i64;
        }
        shared.messages_written.fetch_add(1, Ordering::Relaxed);
        shared.wake_reader.notify_one();
    }
}

/// The reader task: keeps records read ahead while the broker holds some, and acknowledges
/// messages whose records were all taken.
async fn read(client: Client, reader: PullConsumer, run: Arc<str>, shared: Arc<Shared>) {
    loop {
        let (to_ack, want, closed) = {
            let mut durable = shared.durable.lock().unwrap();
            let to_ack = std::mem::take(&mut durable.to_ack);
            let in_broker = durable.in_broker > 0 || durable.leftover > 0;
            (
                to_ack,
                in_broker && durable.read_ahead.len() < 256,
                durable.closed,
            )
        };
        for reply in to_ack {
            if let Err(error) = client.publish(reply, Bytes::from_static(b"+ACK")).await {
                tracing::debug!(%error, "could not acknowledge a spill message");
            }
        }
        if closed {
            // Give back at once every message read and not settled, so the next reader of the
            // stream gets them now, in order, rather than after the ack wait.
            let unsettled: Vec<Subject> = {
                let mut durable = shared.durable.lock().unwrap();
                durable.read_ahead.clear();
                let parked = std::mem::take(&mut durable.parked);
                let unsettled = std::mem::take(&mut durable.unsettled);
                unsettled
                    .into_iter()
                    .filter_map(|message| message.reply)
                    .chain(parked.into_iter().filter_map(|(reply, _)| reply))
                    .collect()
            };
            for reply in unsettled {
                let _ = client.publish(reply, Bytes::from_static(b"-NAK")).await;
            }
            return;
        }
        if !want {
            shared.wake_reader.notified().await;
            continue;
        }
        let batch = reader
            .batch()
            .max_messages(4)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::debug!(%error, "spill read failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut arrived = false;
        while let Some(Ok(message)) = batch.next().await {
            let message = message.message;
            if shared.durable.lock().unwrap().closed {
                // The store is gone: give the message back at once for the next reader.
                if let Some(reply) = message.reply {
                    let _ = client.publish(reply, Bytes::from_static(b"-NAK")).await;
                }
                continue;
            }
            let ours = message
                .headers
                .as_ref()
                .and_then(|h| h.get(RUN_HEADER))
                .is_some_and(|r| r.as_str() == run.as_ref());
            let Some(records) = unframe(&message.payload) else {
                tracing::warn!(subject = %message.subject, "a spill message is corrupt; terminating it");
                if let Some(reply) = message.reply {
                    let _ = client.publish(reply, Bytes::from_static(b"+TERM")).await;
                }
                if !ours {
                    // An earlier run's message, counted as one item: it will not come back (the
                    // queue counts it as corrupt), and this run's parked messages need not wait.
                    shared.durable.lock().unwrap().leftover_done();
                    arrived = true;
                }
                continue;
            };
            let mut durable = shared.durable.lock().unwrap();
            if ours && durable.leftover > 0 {
                // Newer than what an earlier run left, which is still to come back: wait for it.
                durable.parked.push_back((message.reply, records));
                continue;
            }
            if ours {
                durable.in_broker -= records.len() as i64;
                durable.read_back(message.reply, records);
            } else {
                durable.read_back(message.reply, records);
                durable.leftover_done();
            }
            arrived = true;
        }
        if arrived {
            shared.notify_available();
        }
    }
}

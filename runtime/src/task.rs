//! The subscription state of publishers that emit from a task (or poll function) of their own
//! (stream sources, boundary outlets, merges): [`TaskSubscription`] (from `weir_lockfree`, where its
//! loom model lives) behind a [`Subscription`](crate::Subscription).
//!
//! ```
//! use std::sync::Arc;
//! use std::task::{Context, Waker};
//! use weir_runtime::kit::{Next, TaskSubscription};
//! use weir_runtime::Subscription;
//! let state = Arc::new(TaskSubscription::default());
//! let subscription = Subscription::new(state.clone());
//! let mut cx = Context::from_waker(Waker::noop());
//! assert_eq!(state.poll_next(&mut cx), Next::Wait);
//! subscription.request(3);
//! assert_eq!(state.poll_next(&mut cx), Next::Emit(3));
//! ```

pub use weir_lockfree::{Next, TaskSubscription};

use crate::RawSubscription;

impl RawSubscription for TaskSubscription {
    fn request(&self, n: u64) {
        TaskSubscription::request(self, n);
    }

    fn cancel(&self) {
        TaskSubscription::cancel(self);
    }
}

//! The error every stream fails with: a typed [`ErrorKind`] plus the name of the stage it came from.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a stream failed. `Clone`, so fan-out can hand the same error to every subscriber.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A subscriber called `request(0)` (Reactive Streams rule 3.9).
    #[error("request(0) is not allowed: demand must be positive (rule 3.9)")]
    RequestZero,
    /// A publisher that serves one subscriber was subscribed to a second time (rule 1.9 / 1.11).
    #[error("this publisher serves one subscriber and already has one")]
    AlreadySubscribed,
    /// An upstream emitted more items than were requested (rule 1.1).
    #[error("upstream emitted more items than were requested (rule 1.1)")]
    DemandExceeded,
    /// A stage that spawns tokio tasks was started outside a tokio runtime.
    #[error("no tokio runtime: start this stage from within a runtime or give it a handle")]
    NoRuntime,
    /// A user closure panicked; the payload's message is kept.
    #[error("panicked: {0}")]
    Panicked(Arc<str>),
    /// Nothing arrived within the allowed time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// An error raised by user code or an I/O source.
    #[error(transparent)]
    Failed(Arc<dyn std::error::Error + Send + Sync>),
    /// An error described by a message.
    #[error("{0}")]
    Message(Arc<str>),
}

/// A stream failure: what went wrong and, when known, which stage it came from.
///
/// ```
/// use weir_runtime::{Error, ErrorKind};
/// let error = Error::msg("connection reset").in_stage("orders");
/// assert_eq!(error.to_string(), "stage `orders`: connection reset");
/// assert!(matches!(error.kind(), ErrorKind::Message(_)));
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    stage: Option<Arc<str>>,
    kind: ErrorKind,
}

impl Error {
    /// An error of `kind` with no stage yet.
    pub fn new(kind: ErrorKind) -> Self {
        Self { stage: None, kind }
    }

    /// An error from a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Message(message.to_string().into()))
    }

    /// Wraps a user or I/O error.
    pub fn failed(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorKind::Failed(Arc::new(source)))
    }

    /// Wraps a boxed error (what `?` on a `Box<dyn Error>` or a `String` gives), keeping it as the
    /// [`source`](std::error::Error::source).
    pub fn from_boxed(source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Self::new(ErrorKind::Failed(Arc::from(source)))
    }

    /// An error for a caught panic, keeping the payload's message when it is a string.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        Self::new(ErrorKind::Panicked(Self::panic_message(payload).into()))
    }

    /// The message of a caught panic's payload (`catch_unwind`'s `Err`), when it is a string.
    ///
    /// ```
    /// let payload = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
    /// assert_eq!(weir_runtime::Error::panic_message(payload.as_ref()), "boom 1");
    /// ```
    pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned())
    }

    /// Names the stage, unless a stage closer to the cause already did.
    pub fn in_stage(mut self, stage: impl Into<Arc<str>>) -> Self {
        if self.stage.is_none() {
            self.stage = Some(stage.into());
        }
        self
    }

    /// The stage the error came from, if known.
    pub fn stage(&self) -> Option<&str> {
        self.stage.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stage {
            Some(stage) => write!(f, "stage `{stage}`: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Failed(source) => Some(source.as_ref()),
            _ => None,
        }
    }
}

//! Why a running pipeline did not complete.

use std::time::Duration;

use weir_runtime::Error;

/// Why a running pipeline did not complete.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage failed; `stage` is where the error came from.
    #[error("pipeline `{pipeline}`: stage `{stage}` failed: {}", describe_cause(.stage, .error))]
    Failed {
        /// The pipeline.
        pipeline: String,
        /// The stage the error came from.
        stage: String,
        /// The error, as the stage's operator raised it.
        #[source]
        error: Error,
    },
    /// [`PipelineHandle::abort`](crate::PipelineHandle::abort) stopped it.
    #[error("pipeline `{pipeline}` was aborted")]
    Aborted {
        /// The pipeline.
        pipeline: String,
    },
    /// [`PipelineHandle::drain`](crate::PipelineHandle::drain) ran out of time, and the pipeline
    /// was aborted.
    #[error("pipeline `{pipeline}` did not drain within {deadline:?} and was aborted")]
    DrainTimedOut {
        /// The pipeline.
        pipeline: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// `start` was called outside a tokio runtime.
    #[error("pipeline `{pipeline}`: no tokio runtime (start it within one, or use start_on)")]
    NoRuntime {
        /// The pipeline.
        pipeline: String,
    },
    /// The supervising task ended abnormally (it panicked or its runtime shut down).
    #[error("pipeline `{pipeline}`: the supervising task ended abnormally: {reason}")]
    Lost {
        /// The pipeline.
        pipeline: String,
        /// What tokio reported.
        reason: String,
    },
}

impl PipelineError {
    /// The stage that failed, if a stage did.
    pub fn stage(&self) -> Option<&str> {
        match self {
            PipelineError::Failed { stage, .. } => Some(stage),
            _ => None,
        }
    }
}

/// The error's message, with the operator that raised it when that is not the stage itself.
fn describe_cause(stage: &str, error: &Error) -> String {
    match error.stage() {
        Some(operator) if operator != stage => format!("{} (in `{operator}`)", error.kind()),
        _ => error.kind().to_string(),
    }
}

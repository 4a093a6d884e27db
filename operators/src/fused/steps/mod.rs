//! The per-item operators, each a small [`StepFn`](super::StepFn).

mod dedupe;
mod map;
mod take;
mod try_map;

pub use dedupe::{Dedupe, DedupeStep};
pub use map::{
    Filter, FilterMap, FilterMapStep, FilterStep, Inspect, InspectStep, Map, MapStep, Scan,
    ScanStep,
};
pub use take::{Skip, SkipStep, Take, TakeStep, TakeWhile, TakeWhileStep};
pub use try_map::{TryMap, TryMapStep};

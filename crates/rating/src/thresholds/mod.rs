//! Spend and usage thresholds: a limit per subscription and billing period
//! that emits `ThresholdCrossed` on `rating-events` the moment rating sees the
//! period's value reach it (see docs/architecture.md, "Rating: thresholds").
//!
//! * [`store`] — `rating.thresholds` and `rating.threshold_crossings`;
//! * [`api`] — `SetThreshold`, `ListThresholds`, `DeleteThreshold`;
//! * [`ThresholdEvaluator`] — called by the usage consumer after each
//!   committed batch: it prices the periods the batch touched for the
//!   customers that have thresholds, and records each crossing once (a
//!   unique key per threshold and period) together with its outbox message.

pub mod api;
mod evaluate;
pub mod store;

pub use evaluate::ThresholdEvaluator;

//! Settings shared by the benchmarks: short runs, so the whole suite fits in ~2 minutes on 2 cores.

use std::time::Duration;

use criterion::Criterion;

/// 500 ms warm-up, 2 s measurement, 30 samples.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

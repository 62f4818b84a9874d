//! Progress of long operations (`tally events send`, `tally load …`) on
//! stderr: one line redrawn in place (`\r`) at most five times a second, e.g.
//!
//! ```text
//! sent 120,000 events (accepted 119,800, duplicates 150, rejected 50) · 41,000/s · 12%
//! ```
//!
//! Only when stderr is a terminal: scripts and tests see nothing but the
//! command's own final summary.

use std::io::{IsTerminal as _, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The shortest time between two redraws.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// What has been done so far, as shown on the line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The verb of the line: `sent`, `published`.
    pub verb: &'static str,
    /// Events done so far (the rate is computed from it).
    pub done: u64,
    /// Outcomes in parentheses; those at zero are left out.
    pub parts: Vec<(&'static str, u64)>,
    /// `(done, total)` in any unit (events, bytes) when the total is known.
    pub fraction: Option<(u64, u64)>,
}

/// Lets at most one redraw through per interval.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// A throttle letting one redraw through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether a redraw is due at `now` (the first one always is); if so, it
    /// counts as done.
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// The progress line of a long operation; silent unless stderr is a terminal.
pub struct Progress {
    out: Option<Box<dyn Write + Send>>,
    throttle: Throttle,
    started: Instant,
    /// Characters on screen, to blank them when clearing.
    drawn_width: usize,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Progress")
            .field("enabled", &self.out.is_some())
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// Draws on stderr if it is a terminal, else does nothing.
    pub fn on_stderr() -> Self {
        let out: Option<Box<dyn Write + Send>> = if std::io::stderr().is_terminal() {
            Some(Box::new(std::io::stderr()))
        } else {
            None
        };
        Self {
            out,
            throttle: Throttle::new(REDRAW_INTERVAL),
            started: Instant::now(),
            drawn_width: 0,
        }
    }

    /// Redraws the line if a redraw is due; `snapshot` is only built then.
    pub fn tick(&mut self, snapshot: impl FnOnce() -> Snapshot) {
        if self.out.is_none() || !self.throttle.due(Instant::now()) {
            return;
        }
        let line = format_line(&snapshot(), self.started.elapsed());
        let width = line.chars().count();
        let padding = " ".repeat(self.drawn_width.saturating_sub(width));
        self.drawn_width = width;
        if let Some(out) = &mut self.out {
            // A terminal that went away is no reason to stop the work.
            let _ = write!(out, "\r{line}{padding}");
            let _ = out.flush();
        }
    }

    /// Blanks the line, before printing something else or at the end (the
    /// next `tick` draws it again).
    pub fn clear(&mut self) {
        if self.drawn_width == 0 {
            return;
        }
        if let Some(out) = &mut self.out {
            let _ = write!(out, "\r{}\r", " ".repeat(self.drawn_width));
            let _ = out.flush();
        }
        self.drawn_width = 0;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A progress line redrawn by a background task, for work spread over tasks
/// that share atomic counters (`tally load ingest`'s workers).
#[derive(Debug)]
pub struct Ticker {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    /// Redraws `snapshot()` every [`REDRAW_INTERVAL`] until [`Ticker::finish`];
    /// spawns nothing when stderr is not a terminal.
    pub fn spawn(snapshot: impl Fn() -> Snapshot + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Progress::on_stderr();
        let task = progress.out.is_some().then(|| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    progress.tick(&snapshot);
                    tokio::time::sleep(REDRAW_INTERVAL).await;
                }
                progress.clear();
            })
        });
        Self { stop, task }
    }

    /// Stops redrawing and blanks the line.
    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // On an early return (`?`) the task stops at its next wake-up.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `sent 120,000 events (accepted 119,800, duplicates 150) · 41,000/s · 12%`.
pub fn format_line(snapshot: &Snapshot, elapsed: Duration) -> String {
    let mut line = format!("{} {} events", snapshot.verb, thousands(snapshot.done));
    let parts: Vec<String> = snapshot
        .parts
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(label, count)| format!("{label} {}", thousands(*count)))
        .collect();
    if !parts.is_empty() {
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        let rate = (snapshot.done as f64 / seconds).round() as u64;
        line.push_str(&format!(" · {}/s", thousands(rate)));
    }
    if let Some((done, total)) = snapshot.fraction
        && total > 0
    {
        let percent = (done.min(total) as f64 * 100.0 / total as f64).floor() as u64;
        line.push_str(&format!(" · {percent}%"));
    }
    line
}

/// `1234567` as `1,234,567`.
pub fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// The `quantile` (0–1) of `latencies` in milliseconds, nearest-rank
/// (sorts them); 0 when there are none. For the load reports.
pub(crate) fn percentile(latencies: &mut [Duration], quantile: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort();
    let index = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        for (number, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (120_000, "120,000"),
            (1_234_567, "1,234,567"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(thousands(number), text);
        }
    }

    #[test]
    fn the_line_shows_counts_rate_and_percent() {
        let snapshot = Snapshot {
            verb: "sent",
            done: 120_000,
            parts: vec![
                ("accepted", 119_800),
                ("duplicates", 150),
                ("conflicts", 0),
                ("rejected", 50),
            ],
            fraction: Some((30, 100)),
        };
        assert_eq!(
            format_line(&snapshot, Duration::from_secs(3)),
            "sent 120,000 events (accepted 119,800, duplicates 150, rejected 50) · 40,000/s · 30%"
        );
    }

    #[test]
    fn unknown_totals_and_zero_time_are_left_out() {
        let snapshot = Snapshot {
            verb: "published",
            done: 5,
            parts: vec![("accepted", 0)],
            fraction: None,
        };
        assert_eq!(format_line(&snapshot, Duration::ZERO), "published 5 events");
        let empty_file = Snapshot {
            fraction: Some((0, 0)),
            ..snapshot
        };
        assert_eq!(
            format_line(&empty_file, Duration::from_secs(1)),
            "published 5 events · 5/s"
        );
    }

    #[test]
    fn percent_never_passes_100() {
        let snapshot = Snapshot {
            verb: "sent",
            done: 10,
            parts: vec![],
            fraction: Some((2_000, 1_000)),
        };
        assert!(format_line(&snapshot, Duration::from_secs(1)).ends_with(" · 100%"));
    }

    #[test]
    fn redraws_at_most_once_per_interval() {
        let start = Instant::now();
        let mut throttle = Throttle::new(REDRAW_INTERVAL);
        let at = |millis| start + Duration::from_millis(millis);
        let drawn: Vec<u64> = [0, 50, 199, 200, 210, 399, 450, 1_000, 1_001]
            .into_iter()
            .filter(|millis| throttle.due(at(*millis)))
            .collect();
        assert_eq!(drawn, [0, 200, 450, 1_000]);
    }

    #[test]
    fn at_most_five_redraws_a_second_however_often_it_is_asked() {
        let start = Instant::now();
        let mut throttle = Throttle::new(REDRAW_INTERVAL);
        let drawn = (0..10_000)
            .filter(|micros| throttle.due(start + Duration::from_micros(micros * 100)))
            .count();
        assert_eq!(drawn, 5); // one second, asked every 100 µs
    }

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Screen(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_shorter_line_blanks_the_rest_of_the_longer_one_and_clear_blanks_all() {
        let screen = Screen::default();
        let mut progress = Progress {
            out: Some(Box::new(screen.clone())),
            throttle: Throttle::new(Duration::ZERO),
            started: Instant::now(),
            drawn_width: 0,
        };
        let snapshot = |done| Snapshot {
            verb: "sent",
            done,
            parts: vec![("accepted", done)],
            fraction: None,
        };
        progress.tick(|| snapshot(1_000));
        progress.tick(|| snapshot(9));
        progress.clear();
        progress.clear(); // nothing drawn: nothing written
        let text = String::from_utf8(screen.0.lock().unwrap().clone()).unwrap();
        let frames: Vec<&str> = text.split('\r').skip(1).collect();
        assert_eq!(frames.len(), 4, "{text:?}");
        assert!(frames[0].starts_with("sent 1,000 events (accepted 1,000)"));
        assert!(frames[1].starts_with("sent 9 events (accepted 9)"));
        assert_eq!(frames[1].chars().count(), frames[0].chars().count());
        // The padding is blank already: clearing blanks the text of the last line.
        assert!(frames[2].trim().is_empty());
        assert_eq!(frames[2].len(), frames[1].trim_end().chars().count());
        assert_eq!(frames[3], "");
    }

    #[test]
    fn a_progress_not_on_a_terminal_never_builds_its_line() {
        let mut progress = Progress {
            out: None,
            throttle: Throttle::new(REDRAW_INTERVAL),
            started: Instant::now(),
            drawn_width: 0,
        };
        progress.tick(|| panic!("built a line nobody sees"));
        progress.clear();
    }
}

//! What `grpc.health.v1` answers: liveness under the empty name, readiness
//! under each service's own name.
//!
//! - **Liveness** (`""`): SERVING while the server serves and every
//!   background task it watches (consumers, relays, schedulers) is running;
//!   NOT_SERVING once it is shutting down or when one of those tasks has
//!   ended — a stopped consumer never comes back, a restart does. It never
//!   looks at the database, so a PostgreSQL outage does not make Kubernetes
//!   restart every pod.
//! - **Readiness** (`tally.ingest.v1.IngestService`, …, and the clock
//!   service): SERVING only when PostgreSQL answers within
//!   [`Readiness::with_database`]'s timeout, its migrations are at least the
//!   version this binary embeds (none failed), and the background tasks of
//!   the service that owns the name are running. Checked every
//!   [`Readiness::with_interval`] (and once before the server accepts a
//!   call), so a pod leaves its Service while the database is away and comes
//!   back without a restart when it returns.
//!
//! A server without checks (the services' own test harnesses) reports every
//! name SERVING until shutdown, as before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::shutdown::Shutdown;

/// How often readiness is checked by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// How long PostgreSQL gets to answer a readiness check by default.
pub const DEFAULT_DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The checks behind readiness and liveness (see the module documentation).
#[derive(Debug)]
pub struct Readiness {
    database: Option<DatabaseCheck>,
    interval: Duration,
    /// Background tasks, each with the service names it serves.
    watched: Vec<Watched>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            database: None,
            interval: DEFAULT_INTERVAL,
            watched: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct DatabaseCheck {
    pool: PgPool,
    expected_version: i64,
    timeout: Duration,
}

#[derive(Debug)]
struct Watched {
    services: Vec<&'static str>,
    tasks: Vec<JoinHandle<()>>,
}

/// One evaluation: whether the process is live, and why each service is
/// not ready (absent when it is).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    live: bool,
    not_ready: BTreeMap<&'static str, String>,
}

impl Readiness {
    /// Readiness also needs `pool` to answer and its migrations to be at the
    /// version of [`crate::db::MIGRATOR`] (or later: during a rolling
    /// upgrade the old pods keep serving a migrated database).
    pub fn with_database(mut self, pool: PgPool, timeout: Duration) -> Self {
        let expected_version = crate::db::MIGRATOR
            .iter()
            .map(|migration| migration.version)
            .max()
            .unwrap_or(0);
        self.database = Some(DatabaseCheck {
            pool,
            expected_version,
            timeout,
        });
        self
    }

    /// Checks every `interval` instead of [`DEFAULT_INTERVAL`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Watches `tasks`, run for `services`: when one ends, those services
    /// are not ready and the process is not live.
    pub(crate) fn watch(&mut self, services: Vec<&'static str>, tasks: Vec<JoinHandle<()>>) {
        if !tasks.is_empty() {
            self.watched.push(Watched { services, tasks });
        }
    }

    /// Takes over the checks and tasks of `other` (its database check, when
    /// it has one; the shorter interval).
    pub(crate) fn merge(&mut self, other: Readiness) {
        self.database = other.database.or(self.database.take());
        self.interval = self.interval.min(other.interval);
        self.watched.extend(other.watched);
    }

    fn has_checks(&self) -> bool {
        self.database.is_some() || !self.watched.is_empty()
    }

    async fn evaluate(&self, names: &[&'static str]) -> Verdict {
        let mut not_ready = BTreeMap::new();
        let mut live = true;
        for watched in &self.watched {
            if watched.tasks.iter().any(JoinHandle::is_finished) {
                live = false;
                for name in &watched.services {
                    not_ready.insert(*name, "a background task has stopped".to_owned());
                }
            }
        }
        if let Some(database) = &self.database
            && let Err(reason) = database.check().await
        {
            for name in names {
                not_ready.entry(*name).or_insert_with(|| reason.clone());
            }
        }
        Verdict { live, not_ready }
    }

    /// Reports a first verdict on `reporter` for `names` (and `""`), then,
    /// when there is anything to check, keeps it current until `shutdown`.
    /// The returned [`HealthStop`] reports everything NOT_SERVING for good;
    /// the [`BackgroundTasks`] hands the watched tasks back to be awaited.
    pub(crate) async fn report(
        self,
        reporter: HealthReporter,
        names: Vec<&'static str>,
        shutdown: Shutdown,
    ) -> (HealthStop, BackgroundTasks) {
        let reporting = Arc::new(Reporting {
            reporter,
            stopped: tokio::sync::Mutex::new(false),
        });
        let first = self.evaluate(&names).await;
        reporting.publish(&names, &first).await;
        log_change(None, &first);
        let stop = HealthStop {
            reporting: Arc::clone(&reporting),
            names: names.clone(),
        };
        if !self.has_checks() {
            return (stop, BackgroundTasks { monitor: None });
        }
        let monitor = tokio::spawn(async move {
            let mut last = first;
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep(self.interval) => {}
                }
                let verdict = self.evaluate(&names).await;
                if verdict != last {
                    reporting.publish(&names, &verdict).await;
                    log_change(Some(&last), &verdict);
                    last = verdict;
                }
            }
            // The tasks go back to the server, which awaits them.
            self.watched
                .into_iter()
                .flat_map(|watched| watched.tasks)
                .collect()
        });
        (
            stop,
            BackgroundTasks {
                monitor: Some(monitor),
            },
        )
    }
}

/// The services' background tasks (consumers, relays, schedulers), held by
/// the readiness monitor while the server runs.
#[derive(Debug)]
pub(crate) struct BackgroundTasks {
    /// Ends after shutdown, returning the tasks; `None` without tasks to watch.
    monitor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl BackgroundTasks {
    /// Waits for every task to end (each stops on shutdown, finishing the
    /// message or round in hand), at most `grace`; what is still running
    /// then is aborted, and its unacked messages are redelivered elsewhere.
    pub(crate) async fn wait(self, grace: Duration) {
        let Some(monitor) = self.monitor else {
            return;
        };
        let Ok(tasks) = monitor.await else {
            return;
        };
        let count = tasks.len();
        let aborts: Vec<tokio::task::AbortHandle> =
            tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(grace, futures::future::join_all(tasks))
            .await
            .is_ok()
        {
            tracing::info!(count, "background tasks stopped");
        } else {
            let running = aborts.iter().filter(|task| !task.is_finished()).count();
            tracing::warn!(
                running,
                grace_seconds = grace.as_secs(),
                "background tasks still running after the grace period; stopping them"
            );
            for task in aborts {
                task.abort();
            }
        }
    }
}

/// Reports every name NOT_SERVING when the server stops.
pub(crate) struct HealthStop {
    reporting: Arc<Reporting>,
    names: Vec<&'static str>,
}

impl HealthStop {
    /// Everything NOT_SERVING from now on (checks still running are ignored).
    pub(crate) async fn stop(&self) {
        self.reporting.stop(&self.names).await;
    }
}

impl DatabaseCheck {
    /// Why the database does not let the service work, if it does not.
    async fn check(&self) -> Result<(), String> {
        let query = sqlx::query_as::<_, (Option<i64>, i64)>(
            "SELECT max(version) FILTER (WHERE success), count(*) FILTER (WHERE NOT success) \
             FROM _sqlx_migrations",
        )
        .fetch_one(&self.pool);
        let (applied, failed) = match tokio::time::timeout(self.timeout, query).await {
            Err(_) => {
                return Err(format!(
                    "PostgreSQL did not answer within {} ms",
                    self.timeout.as_millis()
                ));
            }
            Ok(Err(sqlx::Error::Database(error))) if error.code().as_deref() == Some("42P01") => {
                return Err("no migrations were applied; run `tally migrate`".to_owned());
            }
            Ok(Err(error)) => return Err(format!("PostgreSQL is unreachable: {error}")),
            Ok(Ok(row)) => row,
        };
        let applied = applied.unwrap_or(0);
        if failed > 0 {
            return Err(format!("{failed} migration(s) failed; run `tally migrate`"));
        }
        if applied < self.expected_version {
            return Err(format!(
                "migrations are at {applied}, this binary needs {}; run `tally migrate`",
                self.expected_version
            ));
        }
        Ok(())
    }
}

/// The reporter, and whether shutdown has taken it over (after which no
/// check may report SERVING again).
struct Reporting {
    reporter: HealthReporter,
    stopped: tokio::sync::Mutex<bool>,
}

impl Reporting {
    async fn publish(&self, names: &[&'static str], verdict: &Verdict) {
        let stopped = self.stopped.lock().await;
        if *stopped {
            return;
        }
        for name in names {
            let status = if verdict.not_ready.contains_key(name) {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            self.reporter.set_service_status(*name, status).await;
        }
        let live = if verdict.live {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", live).await;
    }

    async fn stop(&self, names: &[&'static str]) {
        let mut stopped = self.stopped.lock().await;
        *stopped = true;
        for name in names {
            self.reporter
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

fn log_change(before: Option<&Verdict>, now: &Verdict) {
    if before.is_some_and(|before| before.live) && !now.live {
        tracing::error!("a background task has stopped: not live (a restart is needed)");
    }
    let reasons: Vec<&String> = now.not_ready.values().collect();
    let was_ready = before.is_none_or(|before| before.not_ready.is_empty());
    match (was_ready, reasons.first()) {
        (true, Some(reason)) => {
            tracing::warn!(%reason, services = ?now.not_ready.keys().collect::<Vec<_>>(), "not ready");
        }
        (false, None) => tracing::info!("ready again"),
        (false, Some(reason)) => {
            tracing::warn!(%reason, services = ?now.not_ready.keys().collect::<Vec<_>>(), "still not ready");
        }
        (true, None) => {}
    }
}

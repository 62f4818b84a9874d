//! A private PostgreSQL cluster started from the installed server binaries.
//!
//! `tally dev` keeps one under a local directory between runs; the test
//! harness starts a throwaway one per test binary. PostgreSQL refuses to run as
//! root, so when we are root every server command runs as the `postgres` OS
//! user (`runuser -u postgres --`) and the directory is handed to that user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why the cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    /// No server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in PG_BIN_DIR, /usr/lib/postgresql/*/bin or PATH. \
         Install them (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@15`), \
         set PG_BIN_DIR to their directory, or set DATABASE_URL to an existing server"
    )]
    BinariesMissing,
    /// The data directory was made by another major version.
    #[error(
        "the data directory {data_dir} belongs to PostgreSQL {found}, but the installed server is {installed}: \
         move it away (or delete it to start afresh) or point PG_BIN_DIR at PostgreSQL {found}"
    )]
    VersionMismatch {
        /// The data directory.
        data_dir: PathBuf,
        /// Its `PG_VERSION`.
        found: String,
        /// The binaries' major version.
        installed: String,
    },
    /// The port is taken.
    #[error("port {port} on 127.0.0.1 is already in use: choose another port")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// A command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr, or the spawn error.
        detail: String,
    },
}

/// How the cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on (a developer's data survives a crash of the laptop).
    Durable,
    /// fsync, synchronous commit and full-page writes off: tests only.
    Throwaway,
}

/// A running (or startable) cluster under `root` (`root/data`, `root/postgres.log`, socket in `root`).
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    root: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

impl LocalPostgres {
    /// Finds the server binaries (PG_BIN_DIR, then the newest /usr/lib/postgresql/*/bin, then PATH).
    pub fn find_binaries() -> Result<PathBuf, LocalPostgresError> {
        if let Ok(dir) = std::env::var("PG_BIN_DIR") {
            let dir = PathBuf::from(dir);
            return if dir.join("initdb").is_file() {
                Ok(dir)
            } else {
                Err(LocalPostgresError::BinariesMissing)
            };
        }
        let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        debian.sort_by_key(|bin| major_version_of_path(bin));
        if let Some(newest) = debian.pop() {
            return Ok(newest);
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
            .ok_or(LocalPostgresError::BinariesMissing)
    }

    /// Describes a cluster under `root` listening on `port` (nothing is started yet).
    pub fn new(root: &Path, port: u16) -> Result<Self, LocalPostgresError> {
        Ok(Self {
            bin_dir: Self::find_binaries()?,
            root: root.to_path_buf(),
            port,
            run_as_postgres: running_as_root(),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` (user `postgres`, trust authentication on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates the cluster if needed and starts it; returns once it accepts connections.
    pub fn start(&self, durability: Durability) -> Result<(), LocalPostgresError> {
        if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            return Err(LocalPostgresError::PortInUse { port: self.port });
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|error| self.io_error("create the directory", &error))?;
        if self.run_as_postgres {
            self.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&self.root),
                false,
            )?;
        }
        let data_dir = self.data_dir();
        let installed = self.installed_major_version()?;
        match std::fs::read_to_string(data_dir.join("PG_VERSION")) {
            Ok(found) if found.trim() != installed => {
                return Err(LocalPostgresError::VersionMismatch {
                    data_dir,
                    found: found.trim().to_owned(),
                    installed,
                });
            }
            Ok(_) => {}
            Err(_) => {
                let mut initdb = self.server_command("initdb");
                initdb.arg("-D").arg(&data_dir).args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]);
                if durability == Durability::Throwaway {
                    initdb.arg("--no-sync");
                }
                self.run(&mut initdb, true)?;
            }
        }
        if self.is_running() {
            // Left behind by a run that crashed: stop it so we own the port and the data.
            self.stop(false)?;
        }
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.root.display()
        );
        if durability == Durability::Throwaway {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&data_dir)
            .arg("-l")
            .arg(self.root.join("postgres.log"))
            .args(["-w", "-o", &options, "start"]);
        self.run(&mut pg_ctl, true)?;
        Ok(())
    }

    /// Stops the server; `immediate` skips the shutdown checkpoint (throwaway clusters).
    pub fn stop(&self, immediate: bool) -> Result<(), LocalPostgresError> {
        let mode = if immediate { "immediate" } else { "fast" };
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "stop"]);
        self.run(&mut pg_ctl, true).map(|_| ())
    }

    /// Whether a server is running on this data directory.
    pub fn is_running(&self) -> bool {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir()).arg("status");
        pg_ctl.output().is_ok_and(|output| output.status.success())
    }

    /// The shell command that stops this cluster, for watchdog processes.
    pub fn stop_command_line(&self) -> String {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let command = format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            self.data_dir().display()
        );
        if self.run_as_postgres {
            format!("runuser -u postgres -- {command}")
        } else {
            command
        }
    }

    fn installed_major_version(&self) -> Result<String, LocalPostgresError> {
        let output = self.run(
            Command::new(self.bin_dir.join("pg_ctl")).arg("--version"),
            false,
        )?;
        // "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" → "15"
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text.split_whitespace().nth(2).unwrap_or_default();
        Ok(version.split('.').next().unwrap_or_default().to_owned())
    }

    fn server_command(&self, program: &str) -> Command {
        let binary = self.bin_dir.join(program);
        if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn run(
        &self,
        command: &mut Command,
        log_tail_on_error: bool,
    ) -> Result<Output, LocalPostgresError> {
        let line = format!("{command:?}");
        let output = command
            .output()
            .map_err(|error| LocalPostgresError::Command {
                command: line.clone(),
                detail: error.to_string(),
            })?;
        if output.status.success() {
            return Ok(output);
        }
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if log_tail_on_error
            && let Ok(log) = std::fs::read_to_string(self.root.join("postgres.log"))
        {
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            detail.push_str("\npostgres.log (last lines):\n");
            detail.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        Err(LocalPostgresError::Command {
            command: line,
            detail,
        })
    }

    fn io_error(&self, action: &str, error: &std::io::Error) -> LocalPostgresError {
        LocalPostgresError::Command {
            command: format!("{action} {}", self.root.display()),
            detail: error.to_string(),
        }
    }
}

fn major_version_of_path(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .and_then(|name| name.parse().ok())
        .unwrap_or(0)
}

fn running_as_root() -> bool {
    // Reading our own uid without libc: the `Uid:` line of /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (the OS picks; a tiny race remains until the server binds it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

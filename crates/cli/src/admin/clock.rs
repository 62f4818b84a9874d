//! `tally clock show|advance|set`: reads and moves the manual clock of one or
//! several running services (`tally.clock.v1.ClockService`, `admin` scope).
//!
//! With several `--address` values (services run as separate processes) the
//! clocks are moved to one instant: `advance` reads every clock and sets each
//! to the latest of them plus the duration, so processes that had drifted
//! apart end up together; `set` sets each to the instant.

use clap::{Args, Subcommand};
use tally_proto::clock::clock_service_client::ClockServiceClient;
use tally_proto::clock::{
    AdvanceTimeRequest, ClockMode, GetTimeRequest, GetTimeResponse, SetTimeRequest,
};

use super::table::Table;
use super::{Call as _, Output, connect, format_time, parse_time, print_json, usage};

/// `tally clock …`.
#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// Prints each service's current time and clock mode.
    Show(ClockTargets),
    /// Moves manual clocks forward by a duration: `90s`, `15m`, `36h`, `30d`, `2w`, `1d12h`.
    Advance {
        /// How far; units s, m, h, d, w (a month is not fixed: use `set`).
        duration: String,
        #[command(flatten)]
        targets: ClockTargets,
    },
    /// Moves manual clocks to an RFC 3339 instant (never backwards).
    Set {
        /// The instant, e.g. 2026-12-01T00:00:00Z.
        time: String,
        #[command(flatten)]
        targets: ClockTargets,
    },
}

/// The services whose clocks to read or move.
#[derive(Debug, Args)]
pub struct ClockTargets {
    /// A service's gRPC address; repeat it (or separate with commas) for
    /// services running as separate processes.
    #[arg(
        long = "address",
        env = "TALLY_ADDRESS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    addresses: Vec<String>,
    /// API key with the `admin` scope.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    api_key: String,
    /// A PEM CA certificate to trust for `https://` addresses besides the
    /// system's roots (a private CA).
    #[arg(long, env = "TALLY_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Runs `tally clock`.
pub async fn run(command: ClockCommand) -> anyhow::Result<()> {
    match command {
        ClockCommand::Show(targets) => {
            let mut times = Vec::new();
            for (address, mut client) in clients(&targets).await? {
                let time = client
                    .get_time(GetTimeRequest {})
                    .await
                    .answer(&format!("GetTime on {address}"))?;
                times.push((address, time));
            }
            print_times(targets.output, &times)
        }
        ClockCommand::Advance { duration, targets } => {
            let duration = parse_duration(&duration)?;
            let mut clients = clients(&targets).await?;
            let mut times = Vec::new();
            if let [(address, client)] = clients.as_mut_slice() {
                let answer = client
                    .advance_time(AdvanceTimeRequest {
                        duration: Some(duration),
                    })
                    .await
                    .answer(&format!("AdvanceTime on {address}"))?;
                times.push((address.clone(), manual(answer.now)));
                return print_times(targets.output, &times);
            }
            let latest = read_all(&mut clients)
                .await?
                .into_iter()
                .reduce(|latest, now| if later(&now, &latest) { now } else { latest })
                .unwrap_or_default();
            let mut target = latest;
            target.seconds += duration.seconds;
            set_all(&mut clients, target, targets.output).await
        }
        ClockCommand::Set { time, targets } => {
            let time = parse_time("the instant", &time)?;
            let mut clients = clients(&targets).await?;
            if clients.len() > 1 {
                // Refuse before moving any clock, so the processes stay together.
                let times = read_all(&mut clients).await?;
                for ((address, _), now) in clients.iter().zip(times) {
                    if later(&now, &time) {
                        return Err(anyhow::anyhow!(
                            "the clock of {address} is already at {}, after the instant: clocks never go back; nothing was moved",
                            format_time(Some(&now))
                        ));
                    }
                }
            }
            set_all(&mut clients, time, targets.output).await
        }
    }
}

type Client = ClockServiceClient<super::Authenticated>;

/// Every clock's current time, or an error naming a service on the wall clock
/// (checked before anything moves, so several processes are moved all or none).
async fn read_all(clients: &mut [(String, Client)]) -> anyhow::Result<Vec<prost_types::Timestamp>> {
    let mut times = Vec::new();
    for (address, client) in clients {
        let time = client
            .get_time(GetTimeRequest {})
            .await
            .answer(&format!("GetTime on {address}"))?;
        anyhow::ensure!(
            time.mode == ClockMode::Manual as i32,
            "{address} runs on the wall clock, which cannot be moved (start it with --manual-clock or clock.mode = \"manual\"); nothing was moved"
        );
        times.push(time.now.unwrap_or_default());
    }
    Ok(times)
}

async fn clients(targets: &ClockTargets) -> anyhow::Result<Vec<(String, Client)>> {
    let mut clients = Vec::new();
    for address in &targets.addresses {
        let channel = connect(address, &targets.api_key, targets.ca_file.as_deref()).await?;
        clients.push((address.clone(), ClockServiceClient::new(channel)));
    }
    Ok(clients)
}

async fn set_all(
    clients: &mut [(String, Client)],
    time: prost_types::Timestamp,
    output: Output,
) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for (address, client) in clients {
        let answer = client
            .set_time(SetTimeRequest { time: Some(time) })
            .await
            .answer(&format!("SetTime on {address}"))?;
        times.push((address.clone(), manual(answer.now)));
    }
    print_times(output, &times)
}

fn manual(now: Option<prost_types::Timestamp>) -> GetTimeResponse {
    GetTimeResponse {
        now,
        mode: ClockMode::Manual as i32,
    }
}

fn later(left: &prost_types::Timestamp, right: &prost_types::Timestamp) -> bool {
    (left.seconds, left.nanos) > (right.seconds, right.nanos)
}

fn print_times(output: Output, times: &[(String, GetTimeResponse)]) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let mut items = Vec::new();
            for (address, time) in times {
                let mut value = super::json::to_value(time, "tally.clock.v1.GetTimeResponse")?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("address".into(), address.clone().into());
                }
                items.push(value);
            }
            print_json(&serde_json::Value::Array(items))
        }
        Output::Table => {
            let mut table = Table::new(&["address", "now", "mode"]);
            for (address, time) in times {
                let mode = match ClockMode::try_from(time.mode) {
                    Ok(ClockMode::Manual) => "manual",
                    Ok(ClockMode::Wall) => "wall",
                    _ => "unknown",
                };
                table.row(vec![
                    address.clone(),
                    format_time(time.now.as_ref()),
                    mode.to_owned(),
                ]);
            }
            table.print();
            Ok(())
        }
    }
}

/// `1d12h`, `90s`, `2w`: a sum of whole numbers with units s, m, h, d, w.
pub fn parse_duration(text: &str) -> anyhow::Result<prost_types::Duration> {
    let invalid = || {
        usage(format!(
            "`{text}` is not a duration: write whole numbers with units s, m, h, d or w, e.g. 90s, 36h, 30d, 1d12h"
        ))
    };
    let mut seconds: i64 = 0;
    let mut digits = String::new();
    for character in text.trim().chars() {
        if character.is_ascii_digit() {
            digits.push(character);
            continue;
        }
        let unit: i64 = match character {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid()),
        };
        let amount: i64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        seconds = amount
            .checked_mul(unit)
            .and_then(|part| seconds.checked_add(part))
            .ok_or_else(invalid)?;
    }
    if !digits.is_empty() || seconds == 0 {
        return Err(invalid());
    }
    Ok(prost_types::Duration { seconds, nanos: 0 })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations_add_up_their_parts() {
        assert_eq!(parse_duration("90s").unwrap().seconds, 90);
        assert_eq!(parse_duration("1d12h").unwrap().seconds, 129_600);
        assert_eq!(parse_duration("2w").unwrap().seconds, 1_209_600);
        assert_eq!(parse_duration("15m").unwrap().seconds, 900);
        for bad in ["", "0s", "12", "1y", "h", "-1d", "1.5h"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(
                error.downcast_ref::<super::super::UsageError>().is_some(),
                "{bad}"
            );
        }
    }
}

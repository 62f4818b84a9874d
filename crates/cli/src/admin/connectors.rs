//! `tally connectors …`: the connectors service (`ConnectorService`) — which
//! customers' usage goes to Orb, and what became of each forwarded event.

use clap::{Subcommand, ValueEnum};
use tally_proto::connectors::connector_service_client::ConnectorServiceClient;
use tally_proto::connectors::{
    ForwardedEvent, ForwardingState, GetForwardingStatsRequest, ListForwardedEventsRequest,
    MapOrbCustomerRequest,
};

use super::table::Table;
use super::{
    Authenticated, Call as _, Target, all_pages, connect, format_time, print_many, print_one, short,
};

/// `tally connectors …`.
#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Orb: usage forwarding (needs ORB_API_KEY on the connectors service).
    Orb {
        #[command(subcommand)]
        command: OrbCommand,
    },
}

/// `tally connectors orb …`.
#[derive(Debug, Subcommand)]
pub enum OrbCommand {
    /// Sends a customer's usage to an Orb customer from now on (needs `write`).
    Map {
        /// The Tally customer, `cus_…`.
        #[arg(long)]
        customer: String,
        /// The Orb customer's external_customer_id.
        #[arg(long)]
        external_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Forwarded events, oldest first: forwarded, rejected (with Orb's reason) or not mapped.
    Events {
        /// Only this customer (`cus_…`).
        #[arg(long)]
        customer: Option<String>,
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[command(flatten)]
        target: Target,
    },
    /// Counts of forwarded, rejected and unmapped events, and mapped customers.
    Stats {
        /// Only this customer (`cus_…`).
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// A forwarding state on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Orb ingested it.
    Forwarded,
    /// Orb refused it.
    Rejected,
    /// Its customer has no Orb mapping.
    NotMapped,
}

impl StateArg {
    fn wire(self) -> ForwardingState {
        match self {
            StateArg::Forwarded => ForwardingState::Forwarded,
            StateArg::Rejected => ForwardingState::Rejected,
            StateArg::NotMapped => ForwardingState::NotMapped,
        }
    }
}

async fn client(target: &Target) -> anyhow::Result<ConnectorServiceClient<Authenticated>> {
    Ok(ConnectorServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// Runs `tally connectors`.
pub async fn run(command: ConnectorsCommand) -> anyhow::Result<()> {
    let ConnectorsCommand::Orb { command } = command;
    match command {
        OrbCommand::Map {
            customer,
            external_id,
            target,
        } => {
            let response = client(&target)
                .await?
                .map_orb_customer(MapOrbCustomerRequest {
                    customer_id: customer,
                    external_customer_id: external_id,
                })
                .await
                .answer("MapOrbCustomer")?;
            print_one(
                target.output,
                &response,
                "tally.connectors.v1.MapOrbCustomerResponse",
                |response| {
                    let mapping = response.mapping.clone().unwrap_or_default();
                    #[allow(clippy::print_stdout)]
                    {
                        println!(
                            "{} → Orb external customer {} ({})",
                            mapping.customer_id,
                            mapping.external_customer_id,
                            if response.changed {
                                "mapped"
                            } else {
                                "already mapped"
                            }
                        );
                    }
                },
            )
        }
        OrbCommand::Events {
            customer,
            state,
            target,
        } => {
            let mut connection = client(&target).await?;
            let customer_id = customer.unwrap_or_default();
            let state = state.map_or(ForwardingState::Unspecified, StateArg::wire);
            let events = all_pages(async |page_token| {
                let page = connection
                    .list_forwarded_events(ListForwardedEventsRequest {
                        customer_id: customer_id.clone(),
                        state: state.into(),
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .answer("ListForwardedEvents")?;
                Ok((page.events, page.next_page_token))
            })
            .await?;
            print_many(
                target.output,
                &events,
                "tally.connectors.v1.ForwardedEvent",
                print_events,
            )
        }
        OrbCommand::Stats { customer, target } => {
            let response = client(&target)
                .await?
                .get_forwarding_stats(GetForwardingStatsRequest {
                    customer_id: customer.unwrap_or_default(),
                })
                .await
                .answer("GetForwardingStats")?;
            print_one(
                target.output,
                &response,
                "tally.connectors.v1.GetForwardingStatsResponse",
                |stats| {
                    let table = Table::fields(&[
                        ("forwarded", stats.forwarded.to_string()),
                        ("rejected", stats.rejected.to_string()),
                        ("not mapped", stats.not_mapped.to_string()),
                        ("mapped customers", stats.mapped_customers.to_string()),
                        (
                            "last forwarded",
                            format_time(stats.last_forwarded_at.as_ref()),
                        ),
                    ]);
                    #[allow(clippy::print_stdout)]
                    {
                        print!("{}", table.render());
                    }
                },
            )
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_events(events: &[ForwardedEvent]) {
    if events.is_empty() {
        println!("no forwarded events");
        return;
    }
    let mut table = Table::new(&[
        "customer",
        "event",
        "state",
        "orb customer",
        "attempts",
        "event time",
        "forwarded",
        "reason",
    ]);
    for event in events {
        table.row(vec![
            event.customer_id.clone(),
            event.event_id.clone(),
            short(event.state().as_str_name(), "FORWARDING_STATE_"),
            event.external_customer_id.clone(),
            event.attempts.to_string(),
            format_time(event.event_time.as_ref()),
            format_time(event.forwarded_at.as_ref()),
            event.reason.clone(),
        ]);
    }
    print!("{}", table.render());
}

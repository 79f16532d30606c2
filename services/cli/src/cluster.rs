//! `runnel cluster` and `runnel controllers add|remove`

use clap::Subcommand;
use runnel_client::{Admin, ClientConfig};

use crate::outln;

/// Prints the controllers, the brokers and the group coordinators with their liveness.
pub async fn run(client: ClientConfig) -> anyhow::Result<()> {
    let c = Admin::new(client).describe_cluster().await?;
    outln!("Cluster: {}", c.cluster_id)?;
    outln!(
        "Controller: {} at {} (metadata log end offset {})",
        c.controller_id,
        c.controller_addr,
        c.metadata_end_offset
    )?;
    outln!(
        "{:>10}  {:<22}  {:<8}  {:<6}  RaftIndex  (term {}, committed metadata offset {})",
        "Controller",
        "Address",
        "Role",
        "Voter",
        c.controller_term,
        c.metadata_end_offset - 1
    )?;
    for k in &c.controllers {
        let role = if k.active { "active" } else { "follower" };
        let voter = if k.voter { "yes" } else { "no" };
        let index = if k.matched_index < 0 {
            "-".to_owned()
        } else {
            k.matched_index.to_string()
        };
        outln!(
            "{:>10}  {:<22}  {:<8}  {:<6}  {index}",
            k.id,
            k.addr,
            role,
            voter
        )?;
    }
    outln!(
        "{:>6}  {:<22}  {:<8}  {:<7}  LastHeartbeat",
        "Broker",
        "Address",
        "Rack",
        "State"
    )?;
    for b in &c.brokers {
        let state = if b.fenced { "fenced" } else { "alive" };
        let age = heartbeat_age(b.last_heartbeat_age_ms);
        let rack = if b.rack.is_empty() { "-" } else { &b.rack };
        outln!(
            "{:>6}  {:<22}  {:<8}  {:<7}  {age}",
            b.id,
            b.addr,
            rack,
            state
        )?;
    }
    if !c.coordinators.is_empty() {
        outln!(
            "{:>11}  {:<22}  {:<7}  {:<10}  LastHeartbeat",
            "Coordinator",
            "Address",
            "State",
            "Partitions"
        )?;
    }
    for k in &c.coordinators {
        let state = if k.fenced { "fenced" } else { "alive" };
        outln!(
            "{:>11}  {:<22}  {:<7}  {:<10}  {}",
            k.id,
            k.addr,
            state,
            k.offsets_partitions,
            heartbeat_age(k.last_heartbeat_age_ms)
        )?;
    }
    Ok(())
}

fn heartbeat_age(ms: i64) -> String {
    if ms < 0 {
        "-".to_owned()
    } else {
        format!("{ms} ms ago")
    }
}

/// `runnel controllers`: change the controller quorum at runtime.
#[derive(Debug, Subcommand)]
pub enum ControllersCommand {
    /// Add a controller (started with `quorum_join = true`) to the quorum:
    /// it catches up as a learner, then votes.
    Add {
        /// Its id (`node_id`).
        id: i32,
        /// Its gRPC address as the other controllers reach it, host:port.
        address: String,
    },
    /// Remove a controller from the quorum (stop it afterwards).
    Remove {
        /// Its id.
        id: i32,
    },
}

/// Runs a `runnel controllers` command.
pub async fn controllers(client: ClientConfig, cmd: ControllersCommand) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        ControllersCommand::Add { id, address } => {
            admin.add_controller(id, &address).await?;
            outln!("Controller {id} at {address} is a voter of the quorum.")?;
        }
        ControllersCommand::Remove { id } => {
            admin.remove_controller(id).await?;
            outln!("Controller {id} left the quorum.")?;
        }
    }
    Ok(())
}

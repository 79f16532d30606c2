//! `runnel cluster`

use runnel_client::{Admin, ClientConfig};

/// Prints the controller, the brokers and the group coordinators with their liveness.
pub async fn run(client: ClientConfig) -> anyhow::Result<()> {
    let c = Admin::new(client).describe_cluster().await?;
    println!("Cluster: {}", c.cluster_id);
    println!(
        "Controller: {} at {} (metadata log at offset {})",
        c.controller_id, c.controller_addr, c.metadata_end_offset
    );
    println!(
        "{:>6}  {:<22}  {:<8}  {:<7}  LastHeartbeat",
        "Broker", "Address", "Rack", "State"
    );
    for b in &c.brokers {
        let state = if b.fenced { "fenced" } else { "alive" };
        let age = heartbeat_age(b.last_heartbeat_age_ms);
        let rack = if b.rack.is_empty() { "-" } else { &b.rack };
        println!(
            "{:>6}  {:<22}  {:<8}  {:<7}  {age}",
            b.id, b.addr, rack, state
        );
    }
    if !c.coordinators.is_empty() {
        println!(
            "{:>11}  {:<22}  {:<7}  {:<10}  LastHeartbeat",
            "Coordinator", "Address", "State", "Partitions"
        );
    }
    for k in &c.coordinators {
        let state = if k.fenced { "fenced" } else { "alive" };
        println!(
            "{:>11}  {:<22}  {:<7}  {:<10}  {}",
            k.id,
            k.addr,
            state,
            k.offsets_partitions,
            heartbeat_age(k.last_heartbeat_age_ms)
        );
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

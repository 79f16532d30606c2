//! `runnel cluster`

use runnel_client::{Admin, ClientConfig};

/// Prints the controller and the brokers with their liveness.
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
        let age = if b.last_heartbeat_age_ms < 0 {
            "-".to_owned()
        } else {
            format!("{} ms ago", b.last_heartbeat_age_ms)
        };
        let rack = if b.rack.is_empty() { "-" } else { &b.rack };
        println!(
            "{:>6}  {:<22}  {:<8}  {:<7}  {age}",
            b.id, b.addr, rack, state
        );
    }
    Ok(())
}
